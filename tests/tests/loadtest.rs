//! `drover loadtest` against a real coordinator process: 50 simulated agents over real gRPC
//! streams, a run of 5,000 no-op tasks in 50 chains. Every task is leased once and finished
//! once, and the run succeeds. (Figures are not asserted: benchmarks live in the README.)

use drover_tests::{Fleet, FleetConfig, text};

fn loadtest(fleet: &Fleet, args: &[&str]) -> serde_json::Value {
    let url = fleet.url();
    let mut all = vec![
        "loadtest",
        "--coordinator",
        url.as_str(),
        "--json",
        "--timeout",
        "120s",
    ];
    all.extend_from_slice(args);
    let out = fleet.run(&all);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "loadtest failed:\n{stdout}\n{}\n{}",
        text(&out.stderr),
        fleet.logs()
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn every_task_is_leased_and_finished_exactly_once() {
    let fleet = Fleet::start("loadtest");
    for shape in ["chains", "nx"] {
        let report = loadtest(
            &fleet,
            &[
                "--agents",
                "50",
                "--slots",
                "4",
                "--tasks",
                "5000",
                "--graph-shape",
                shape,
            ],
        );
        for field in ["leased", "finished", "succeeded"] {
            assert_eq!(report[field], 5000, "{shape}: {field}: {report}");
        }
        assert_eq!(report["leased_twice"], 0, "{shape}: {report}");
        assert!(
            report["tasks_per_second"].as_f64().unwrap_or(0.0) > 0.0,
            "{report}"
        );
        // The coordinator runs on this machine: its CPU and memory were read.
        assert!(report["coordinator_rss_mib"].as_f64().is_some(), "{report}");
    }
}

#[test]
fn agents_connect_and_idle_and_the_coordinator_is_measured() {
    let fleet = Fleet::with_config("loadtest-idle", FleetConfig::default());
    let report = loadtest(&fleet, &["--agents", "200", "--tasks", "0", "--idle", "2s"]);
    assert_eq!(report["agents"], 200, "{report}");
    assert!(
        report["coordinator_cpu_cores"].as_f64().is_some(),
        "{report}"
    );
}

#[test]
fn it_refuses_a_coordinator_that_is_not_on_this_machine() {
    let fleet = Fleet::start("loadtest-remote");
    let out = fleet.run(&["loadtest", "--coordinator", "http://10.1.2.3:50051"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("loopback"),
        "{}",
        text(&out.stderr)
    );
}
