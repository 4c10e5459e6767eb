//! The web UI in a real browser (Debian's Chromium, driven by playwright-core from
//! `tests/ui/check-ui.mjs`) against a real coordinator during a real run: the pages load,
//! the timeline holds every task on the agent that ran it, a running task's log grows, and
//! the screenshots are kept under `target/ui-screenshots/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use drover_proto::v1::run_event::Event;
use drover_tests::{Fleet, FleetConfig, eventually, text, which};

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ui")
}

#[test]
fn the_ui_shows_a_live_run_in_a_real_browser() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "Chromium is needed: `apt-get install chromium` (.ci/run installs it)"
    );
    assert!(
        ui_dir().join("node_modules/playwright-core").is_dir() && which("node").is_some(),
        "playwright-core is needed: `npm ci` in tests/ui (.ci/run does it)"
    );
    let mut fleet = Fleet::with_config(
        "ui",
        FleetConfig {
            auth: true,
            ..FleetConfig::default()
        },
    );
    let reader = fleet.tokens.as_ref().expect("tokens").reader.clone();
    fleet.agent("a1", "linux", 2, None);
    fleet.agent("a2", "linux", 2, None);
    let graph = "tasks:
  - { id: 'lib:build', command: 'echo building lib; sleep 1' }
  - { id: 'lib:lint', command: 'echo linting; sleep 1' }
  - { id: 'api:build', command: 'echo api; sleep 2', dependsOn: ['lib:build'] }
  - { id: 'web:build', command: 'echo web; sleep 2', dependsOn: ['lib:build'] }
  - { id: 'api:test', command: 'echo tests; sleep 1', dependsOn: ['api:build'] }
  - { id: 'web:test', command: 'echo tests; sleep 1', dependsOn: ['web:build'] }
  - { id: 'app:e2e', command: 'for i in $(seq 1 40); do echo \"e2e step $i\"; sleep 0.4; done', dependsOn: ['api:build', 'web:build'] }
";
    fleet.dir.write("ui.yaml", graph);
    let start = fleet
        .drover(&["start-ci-run"])
        .env("DROVER_CI_EXECUTION_ID", "ui-1")
        .output()
        .expect("start");
    assert!(start.status.success(), "{}", text(&start.stderr));
    let run_id = text(&start.stdout).trim().to_string();
    let mut exec = fleet
        .drover(&["exec", "--graph", "ui.yaml"])
        .env("DROVER_CI_EXECUTION_ID", "ui-1")
        .stdout(Stdio::null())
        .spawn()
        .expect("exec");
    // The browser comes while the e2e suite runs.
    eventually(Duration::from_secs(30), "app:e2e to start", || {
        fleet
            .events(&run_id, Duration::from_millis(200))
            .iter()
            .any(|e| matches!(&e.event, Some(Event::TaskStarted(s)) if s.task_id == "app:e2e"))
            .then_some(())
    });
    // Nothing more comes: the run ends when its last task does.
    let complete = fleet
        .drover(&["complete-ci-run"])
        .env("DROVER_CI_EXECUTION_ID", "ui-1")
        .output()
        .expect("complete");
    assert!(complete.status.success(), "{}", text(&complete.stderr));
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots");
    let out = std::process::Command::new("node")
        .arg(ui_dir().join("check-ui.mjs"))
        .args(["--base", &format!("http://{}", fleet.http)])
        .args([
            "--run",
            &run_id,
            "--running-task",
            "app:e2e",
            "--agents",
            "a1,a2",
        ])
        .args(["--token", &reader])
        .arg("--out")
        .arg(&out_dir)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run check-ui.mjs");
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "the browser check failed:\n{stdout}\n{}\n{}",
        text(&out.stderr),
        fleet.logs()
    );
    let steps: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let step = |name: &str| {
        steps
            .iter()
            .find(|s| s["step"] == name)
            .unwrap_or_else(|| panic!("no `{name}` step in:\n{stdout}"))
    };
    for name in [
        "login", "runs", "run", "task-log", "agents", "run-done", "problems",
    ] {
        assert_eq!(step(name)["ok"], true, "{name}: {stdout}");
    }
    assert_eq!(step("task-log")["log_grew"], true, "{stdout}");

    // Every task the run ran has a bar in the lane of the agent that ran it.
    exec.wait().expect("exec ends");
    let ran_on: HashMap<(String, u64), String> = fleet
        .events(&run_id, Duration::from_millis(300))
        .into_iter()
        .filter_map(|e| match e.event {
            Some(Event::TaskStarted(s)) => Some(((s.task_id, u64::from(s.attempt)), s.agent)),
            _ => None,
        })
        .collect();
    let bars = step("run")["bars"].as_array().cloned().unwrap_or_default();
    for ((task, attempt), agent) in &ran_on {
        let shown = bars.iter().any(|b| {
            b["task"] == task.as_str()
                && b["agent"] == agent.as_str()
                && b["attempt"].as_u64().is_none_or(|a| a == *attempt)
        });
        // Tasks that had not started when the browser looked are checked on the final page.
        let started_late = !bars.iter().any(|b| b["task"] == task.as_str());
        assert!(
            shown || started_late,
            "{task} (attempt {attempt}) is not in {agent}'s lane: {bars:?}"
        );
    }
    assert!(
        bars.iter().any(|b| b["task"] == "app:e2e"),
        "the running task has a bar: {bars:?}"
    );
    for shot in [
        "runs.png",
        "run-live.png",
        "task-log.png",
        "agents.png",
        "run-done.png",
    ] {
        assert!(out_dir.join(shot).is_file(), "screenshot {shot} was kept");
    }
}
