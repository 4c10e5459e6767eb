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
            output_at < failed_at,
            "the output comes before its failure:\n{stdout}"
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
