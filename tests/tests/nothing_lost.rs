//! Nothing lost, with real processes: every failure's output reaches the main job however
//! close together tasks fail, and a task that prints without end costs the coordinator a
//! bounded log on disk, not memory or store.

use std::time::Duration;

use drover_tests::{Fleet, FleetConfig, text};

/// Runs `drover exec` on a graph in a fresh run of `exec`; returns its stdout.
fn exec(fleet: &Fleet, exec: &str, graph: &str) -> (bool, String) {
    fleet.dir.write("tasks.yaml", graph);
    let out = fleet
        .drover(&["start-ci-run"])
        .env("DROVER_CI_EXECUTION_ID", exec)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = fleet
        .drover(&["exec", "--graph", "tasks.yaml"])
        .env("DROVER_CI_EXECUTION_ID", exec)
        .output()
        .unwrap();
    let _ = fleet
        .drover(&["complete-ci-run"])
        .env("DROVER_CI_EXECUTION_ID", exec)
        .output();
    (out.status.success(), text(&out.stdout))
}

#[test]
fn every_failure_prints_its_output_however_close_together_they_fail() {
    let mut fleet = Fleet::start("failures");
    fleet.agent("a1", "linux", 4, Some("fail-1"));
    // Four tasks fail within about 50 ms of each other, one more times out; all print first.
    let fail = |name: &str, delay: &str| {
        format!(
            r#"  - {{ id: "{name}:test", command: 'echo "output of {name}"; sleep {delay}; exit 3' }}"#
        )
    };
    let graph = format!(
        "tasks:\n{}\n{}\n{}\n{}\n  - {{ id: \"slow:test\", command: 'echo \"output of slow\"; sleep 30', timeout: 1s }}\n",
        fail("a", "0.50"),
        fail("b", "0.52"),
        fail("c", "0.55"),
        fail("d", "0.55"),
    );
    let (ok, stdout) = exec(&fleet, "fail-1", &graph);
    assert!(!ok, "{stdout}");
    for name in ["a", "b", "c", "d", "slow"] {
        let printed = stdout.matches(&format!("output of {name}")).count();
        assert_eq!(
            printed,
            1,
            "output of {name} printed {printed} times:\n{stdout}\n{}",
            fleet.logs()
        );
        let failed = format!("FAILED {name}:test");
        let (output_at, failed_at) = (
            stdout.find(&format!("output of {name}")).unwrap(),
            stdout
                .find(&failed)
                .unwrap_or_else(|| panic!("no `{failed}`:\n{stdout}")),
        );
        assert!(
            failed_at < output_at,
            "the output comes after its FAILED line, under a header naming the task:\n{stdout}"
        );
        assert!(
            stdout.contains(&format!("----- {name}:test failed on ")),
            "{stdout}"
        );
    }
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<f64>()
        .unwrap()
        / 1024.0
}

#[test]
fn a_task_that_prints_200_mb_keeps_a_bounded_log_and_the_coordinator_stays_small() {
    let mut fleet = Fleet::with_config(
        "loud",
        FleetConfig {
            coordinator_args: vec!["--task-log-limit".into(), "2MiB".into()],
            ..FleetConfig::default()
        },
    );
    fleet.agent("a1", "linux", 1, Some("loud-1"));
    let pid = fleet.coordinator.as_ref().expect("running").pid();
    std::thread::sleep(Duration::from_millis(300));
    let baseline = rss_mib(pid);
    // 200 MB of numbered lines, then a last line.
    let graph = "tasks:\n  - { id: \"loud:build\", command: 'seq 1 25000000 | head -c 200000000; echo; echo the end' }\n";
    let (ok, stdout) = exec(&fleet, "loud-1", graph);
    assert!(ok, "{stdout}\n{}", fleet.logs());
    let grown = rss_mib(pid) - baseline;
    assert!(grown < 100.0, "the coordinator grew by {grown:.0} MiB");

    let log = fleet.run(&["logs", "loud:build"]);
    let log = text(&log.stdout);
    assert!(
        log.starts_with("1\n2\n3\n"),
        "the head is kept: {}",
        &log[..100.min(log.len())]
    );
    assert!(log.trim_end().ends_with("the end"), "the tail is kept");
    assert!(log.contains("bytes of output cut here"), "the cut is said");
    assert!(log.len() < 2 * 1024 * 1024 + 1024, "{} bytes", log.len());
    // Neither the store nor the logs hold the 200 MB.
    let store = std::fs::metadata(fleet.dir.join("data/drover.redb"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(store < 20 * 1024 * 1024, "the store is {store} bytes");
}

/// A tmpfs of a few MiB mounted for the test (root only), unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(label: &str, mib: u32) -> Option<SmallDisk> {
        let uid = std::process::Command::new("id").arg("-u").output().ok()?;
        if text(&uid.stdout).trim() != "0" {
            eprintln!("skipped: mounting a small tmpfs for a full disk needs root");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("drover-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("skipped: cannot mount a tmpfs here");
            return None;
        }
        Some(SmallDisk(dir))
    }

    /// Fills the disk: a file as large as the room left.
    fn fill(&self) {
        let _ = std::process::Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", self.0.join("filler").display()))
            .stderr(std::process::Stdio::null())
            .status();
    }

    fn free(&self) {
        let _ = std::fs::remove_file(self.0.join("filler"));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn http_status(fleet: &Fleet, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(fleet.http).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_full_disk_stops_acknowledging_and_nothing_is_lost_when_space_returns() {
    let Some(disk) = SmallDisk::mount("full", 24) else {
        return;
    };
    let mut fleet = Fleet::with_config(
        "full-disk",
        FleetConfig {
            data_dir: Some(disk.0.join("data")),
            ..FleetConfig::default()
        },
    );
    let record = fleet.dir.join("record.txt");
    fleet.agent("a1", "linux", 2, Some("full-1"));
    let gate = fleet.dir.join("gate");
    let graph = format!(
        "tasks:\n  - {{ id: \"app:build\", command: 'while [ ! -e {gate} ]; do sleep 0.05; done; echo run >> {record}' }}\n",
        gate = gate.display(),
        record = record.display()
    );
    fleet.dir.write("tasks.yaml", &graph);
    let run = |args: &[&str]| {
        fleet
            .drover(args)
            .env("DROVER_CI_EXECUTION_ID", "full-1")
            .output()
            .unwrap()
    };
    assert!(run(&["start-ci-run"]).status.success());
    let exec = fleet
        .drover(&["exec", "--graph", "tasks.yaml"])
        .env("DROVER_CI_EXECUTION_ID", "full-1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drover_tests::eventually(Duration::from_secs(20), "the task starts", || {
        text(&fleet.run(&["status"]).stdout)
            .contains("running")
            .then_some(())
    });
    // The disk fills up; the task ends: its result cannot be stored.
    disk.fill();
    std::fs::write(&gate, "").unwrap();
    drover_tests::eventually(Duration::from_secs(20), "/readyz says not ready", || {
        (http_status(&fleet, "/readyz") == 503).then_some(())
    });
    assert!(
        fleet.coordinator_log().contains("the store cannot write"),
        "{}",
        fleet.logs()
    );
    // Nothing new is accepted, and it says why; reads go on.
    let refused = fleet
        .drover(&["start-ci-run"])
        .env("DROVER_CI_EXECUTION_ID", "full-2")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("cannot store anything right now"),
        "{}",
        text(&refused.stderr)
    );
    assert!(fleet.run(&["status"]).status.success(), "reads are served");

    // Space returns: everything that waited is stored and carried out.
    disk.free();
    let out = exec.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        fleet.logs()
    );
    assert!(
        text(&out.stdout).contains("Summary: 1 succeeded"),
        "{}",
        text(&out.stdout)
    );
    drover_tests::eventually(Duration::from_secs(10), "ready again", || {
        (http_status(&fleet, "/readyz") == 200).then_some(())
    });
    assert!(fleet.coordinator_log().contains("the store writes again"));

    // A restart loses nothing acknowledged, and runs nothing that finished again.
    fleet.restart_coordinator();
    let status = text(&fleet.run(&["status"]).stdout);
    assert!(status.contains("succeeded"), "{status}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        std::fs::read_to_string(&record).unwrap().lines().count(),
        1,
        "ran once"
    );
}

/// `drover coordinator` on a data dir: its exit status and stderr when it exits within
/// `patience`, else `None` (it serves).
fn coordinator_on(data: &std::path::Path, patience: Duration) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(drover_tests::drover_bin())
        .args([
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + patience;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (status.code(), text(&out.stderr));
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            return (None, "still running: it did not refuse the store".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_empty_truncated_or_damaged_store_is_refused_and_left_as_it_was() {
    // A store with a run in it.
    let mut fleet = Fleet::start("damaged");
    fleet.agent("a1", "linux", 2, Some("dmg-1"));
    let graph: String = std::iter::once("tasks:\n".to_string())
        .chain((0..300).map(|i| format!("  - {{ id: \"p{i}:build\", command: 'echo {i}' }}\n")))
        .collect();
    let (ok, stdout) = exec(&fleet, "dmg-1", &graph);
    assert!(ok, "{stdout}");
    fleet.coordinator.as_ref().unwrap().signal("TERM");
    fleet
        .coordinator
        .as_mut()
        .unwrap()
        .wait_for_exit(Duration::from_secs(10));
    let store = fleet.dir.join("data/drover.redb");
    let good = std::fs::read(&store).unwrap();
    assert!(good.len() > 64 * 1024, "{} bytes", good.len());

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("damaged", {
            // Garbage over the page that holds a task's record, in the file's middle.
            let mut bad = good.clone();
            let needle = b"p150:build";
            let at = bad
                .windows(needle.len())
                .position(|w| w == needle)
                .expect("a task record in the store");
            let page = at / 4096 * 4096;
            for (k, b) in bad[page..page + 4096].iter_mut().enumerate() {
                *b = (k as u8).wrapping_mul(151).wrapping_add(7);
            }
            bad
        }),
    ];
    for (what, bytes) in cases {
        let dir = fleet.dir.join(format!("data-{what}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("drover.redb"), &bytes).unwrap();
        let (code, stderr) = coordinator_on(&dir, Duration::from_secs(20));
        assert_eq!(code, Some(1), "{what}: {stderr}");
        assert!(
            stderr.contains("drover.redb") && stderr.contains("is damaged"),
            "{what}: {stderr}"
        );
        assert!(
            stderr.contains("mv "),
            "{what}: says how to start afresh: {stderr}"
        );
        assert_eq!(
            std::fs::read(dir.join("drover.redb")).unwrap(),
            bytes,
            "{what}: left as it was"
        );
    }
    // The good one still opens.
    let (code, stderr) = {
        let dir = fleet.dir.join("data-good");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("drover.redb"), &good).unwrap();
        coordinator_on(&dir, Duration::from_secs(3))
    };
    assert_eq!(code, None, "the good store is served: {stderr}");
}

#[test]
fn the_http_port_closes_silent_and_idle_connections_and_refuses_a_large_upload_at_once() {
    use std::io::{Read, Write};
    let fleet = Fleet::with_config(
        "http-limits",
        FleetConfig {
            coordinator_args: vec![
                "--http-header-timeout".into(),
                "1s".into(),
                "--cache-max-entry-size".into(),
                "1MiB".into(),
            ],
            ..FleetConfig::default()
        },
    );
    let connect = || {
        let s = std::net::TcpStream::connect(fleet.http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    let started = std::time::Instant::now();
    // 200 connections that say nothing, one that sent half its headers, one idle after a request.
    let mut silent: Vec<_> = (0..200).map(|_| connect()).collect();
    let mut half = connect();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut idle = connect();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = [0u8; 512];
    assert!(idle.read(&mut answer).unwrap() > 0);
    for s in silent.iter_mut().chain([&mut half, &mut idle]) {
        let mut buf = [0u8; 512];
        // Closed: a read ends (0 bytes, or a reset) well before the 10 s read timeout.
        let _ = s.read(&mut buf);
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    // The port still serves.
    assert!(!fleet.http_get("/healthz").trim().is_empty());

    // A declared upload over the limit is refused before its body is sent.
    let mut up = connect();
    write!(
        up,
        "PUT /v1/cache/abc HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n"
    )
    .unwrap();
    let mut buf = [0u8; 1024];
    let n = up.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
}

#[test]
fn a_graph_larger_than_one_message_goes_in_pieces_and_the_task_limit_is_named() {
    use drover_proto::v1 as pb;
    use pb::run_service_client::RunServiceClient;
    let fleet = Fleet::with_config(
        "big-graph",
        FleetConfig {
            coordinator_args: vec!["--max-graph-tasks".into(), "12000".into()],
            ..FleetConfig::default()
        },
    );
    let out = fleet
        .drover(&["start-ci-run"])
        .env("DROVER_CI_EXECUTION_ID", "big")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // 12,000 tasks of about 430 bytes each: some 5 MB, past gRPC's 4 MiB for one message.
    let task = |i: usize| pb::Task {
        id: format!("p{i}:build"),
        command: format!("true # {}", "x".repeat(400)),
        depends_on: if i.is_multiple_of(100) {
            vec![]
        } else {
            vec![format!("p{}:build", i - 1)]
        },
        ..Default::default()
    };
    let piece = |tasks: Vec<pb::Task>, first: bool| pb::SubmitGraphRequest {
        ci_execution_id: if first { "big".into() } else { String::new() },
        tasks,
        ..Default::default()
    };
    let pieces = |n: usize| -> Vec<pb::SubmitGraphRequest> {
        let tasks: Vec<pb::Task> = (0..n).map(task).collect();
        tasks
            .chunks(2_000)
            .enumerate()
            .map(|(k, c)| piece(c.to_vec(), k == 0))
            .collect()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client =
            RunServiceClient::new(fleet.connect(None).await).max_decoding_message_size(64 << 20);
        // In one message it is too large, and the answer says so.
        let whole = piece((0..12_000).map(task).collect(), true);
        let status = client.submit_graph(whole).await.expect_err("too large");
        assert!(
            status.message().contains("4194304") || status.message().contains("too large"),
            "{status:?}"
        );
        // Over the coordinator's limit: refused with the limit and its flag named.
        let status = client
            .submit_graph_stream(tokio_stream::iter(pieces(12_001)))
            .await
            .expect_err("over the limit");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains("12000") && status.message().contains("--max-graph-tasks"),
            "{status:?}"
        );
        // In pieces it goes in, whole, as one submission.
        let submitted = client
            .submit_graph_stream(tokio_stream::iter(pieces(12_000)))
            .await
            .expect("submitted in pieces")
            .into_inner();
        assert_eq!((submitted.task_count, submitted.submission_id), (12_000, 1));
        let run = client
            .get_run(pb::GetRunRequest {
                ci_execution_id: "big".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(run.tasks.len(), 12_000);
    });
}

/// A main job's output stream can start after its tasks do (`drover exec --stream-output`
/// watches once its graph is in): what a task printed before the watcher came reaches it
/// first, then the rest live, each byte once, a line cut between the two made whole.
#[test]
fn a_watcher_streaming_output_gets_what_tasks_printed_before_it_came_once() {
    use drover_proto::v1::{
        WatchRunRequest, run_event::Event, run_service_client::RunServiceClient,
    };
    use std::collections::BTreeMap;

    let mut fleet = Fleet::start("late-watch");
    fleet.agent("a1", "linux", 2, Some("late-1"));
    let gate = fleet.dir.join("gate");
    let printed = fleet.dir.join("printed");
    let graph = format!(
        "tasks:\n  - {{ id: 'before:build', command: 'echo done before' }}\n  - {{ id: 'slow:build', command: 'printf \"early\\nhalf-\"; touch {p}; while [ ! -e {g} ]; do sleep 0.02; done; printf \"way\\nlate\\n\"' }}\n",
        p = printed.display(),
        g = gate.display(),
    );
    fleet.dir.write("tasks.yaml", &graph);
    let out = fleet
        .drover(&["start-ci-run"])
        .env("DROVER_CI_EXECUTION_ID", "late-1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut main = fleet
        .drover(&["exec", "--graph", "tasks.yaml"])
        .env("DROVER_CI_EXECUTION_ID", "late-1")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    drover_tests::eventually(
        Duration::from_secs(20),
        "the slow task's first output",
        || printed.exists().then_some(()),
    );
    let conn = fleet.connect(fleet.main_token());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let output = rt.block_on(async {
        let mut client = RunServiceClient::new(conn.await);
        let mut stream = client
            .watch_run(WatchRunRequest {
                ci_execution_id: "late-1".into(),
                from_seq: 1,
                all_output: true,
                ..Default::default()
            })
            .await
            .expect("watch")
            .into_inner();
        let mut output: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut gated = false;
        loop {
            let event = tokio::time::timeout(Duration::from_secs(20), stream.message())
                .await
                .expect("an event within 20 s")
                .expect("the stream")
                .expect("open until the submission ends");
            match event.event {
                Some(Event::TaskOutput(o)) => {
                    output.entry(o.task_id).or_default().extend(o.data);
                }
                Some(Event::SubmissionDone(_)) => return output,
                _ => {}
            }
            if !gated
                && output
                    .get("slow:build")
                    .is_some_and(|o| o.ends_with(b"half-"))
            {
                std::fs::write(&gate, "").unwrap();
                gated = true;
            }
        }
    });
    assert!(main.wait().unwrap().success());
    let texts: BTreeMap<&str, String> = output.iter().map(|(t, o)| (t.as_str(), text(o))).collect();
    assert_eq!(
        texts,
        BTreeMap::from([
            ("before:build", "done before\n".to_string()),
            ("slow:build", "early\nhalf-way\nlate\n".to_string()),
        ]),
        "{}",
        fleet.logs()
    );
}
