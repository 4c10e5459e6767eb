//! Learned durations drive priority, and survive a coordinator restart.

use std::time::Duration;

use drover_tests::{Fleet, read_record, recorded, text};

#[test]
fn durations_learned_before_a_restart_decide_what_runs_first_after_it() {
    let mut fleet = Fleet::start("estimates");
    let record = fleet.dir.join("record.txt");
    // Listed (and so queued) first, but the shorter of the two.
    let graph = format!(
        "tasks:\n  - {{ id: \"fast:build\", command: '{}' }}\n  - {{ id: \"slow:build\", command: '{}' }}\n",
        recorded(&record, 0.1, "true"),
        recorded(&record, 1.0, "true"),
    );
    fleet.dir.write("tasks.yaml", &graph);
    fleet.agent("only", "linux", 1, None);

    let first_starter = |fleet: &Fleet, exec: &str| -> String {
        let _ = std::fs::remove_file(&record);
        let out = fleet
            .drover(&["start-ci-run", "--ci-execution-id", exec])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let out = fleet.run(&["exec", "--graph", "tasks.yaml"]);
        assert!(
            out.status.success(),
            "{}\n{}",
            text(&out.stdout),
            fleet.logs()
        );
        read_record(&record)
            .into_iter()
            .find(|l| l.event == "start")
            .expect("a task started")
            .task
    };
    // Nothing known yet: equal estimates, so the one queued first starts first.
    assert_eq!(first_starter(&fleet, "before"), "fast:build");

    // A graceful stop writes the history; a new coordinator on the same data dir reads it.
    let coordinator = fleet.coordinator.as_mut().expect("running");
    coordinator.signal("TERM");
    let status = coordinator.wait_for_exit(Duration::from_secs(10));
    assert_eq!(
        status.map(|s| s.success()),
        Some(true),
        "{}",
        fleet.coordinator_log()
    );
    let history = std::fs::read_to_string(fleet.dir.join("data/durations.json"))
        .expect("durations.json written");
    assert!(
        history.contains("slow:build") && history.contains("fast:build"),
        "{history}"
    );
    fleet.restart_coordinator();

    // The daemon agent reconnects by itself; with history, the longer task goes first.
    assert_eq!(
        first_starter(&fleet, "after"),
        "slow:build",
        "{}",
        fleet.logs()
    );
}
