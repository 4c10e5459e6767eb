//! Assignment rules through the CLI and on a live run: `rules check`, `rules explain`, and a
//! task that no connected agent may run is reported on the main job while it waits.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use drover_tests::{Fleet, Scratch, drover_bin, text};

fn reference(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scheduler/tests/rules")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn drover(dir: &Scratch, args: &[&str]) -> std::process::Output {
    std::process::Command::new(drover_bin())
        .args(args)
        .current_dir(&dir.path)
        .output()
        .unwrap()
}

#[test]
fn rules_check_accepts_the_valid_reference_example_and_lists_every_error_of_the_invalid_one() {
    let dir = Scratch::new("rules-check");
    dir.write("valid.yaml", &reference("valid-example.yaml"));
    dir.write("invalid.yaml", &reference("invalid-example.yaml"));
    let out = drover(&dir, &["rules", "check", "valid.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let out = drover(&dir, &["rules", "check", "invalid.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.iter().all(|l| l.starts_with("invalid.yaml:")),
        "every error names the file:\n{err}"
    );
    assert!(lines.contains(&"invalid.yaml:9:5: rule 1: at least one of `projects`, `targets`, `configurations` is required"), "{err}");
    assert!(
        lines.contains(&"invalid.yaml:16:5: rule 2: `run-on` is missing"),
        "{err}"
    );
    assert!(lines.iter().any(|l| l.starts_with("invalid.yaml:27:16: rule 3: agent type `linux-extra-large-js`")), "{err}");

    // With the fleet given, a type no agent has is an error.
    dir.write(
        "rules.yaml",
        "assignment-rules:\n  - targets: [e2e]\n    run-on:\n      - agent: linux-xl\n",
    );
    let out = drover(
        &dir,
        &[
            "rules",
            "check",
            "rules.yaml",
            "--agents",
            "3 linux-medium:2, 1 linux-large:4",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim(),
        "rules.yaml:4:16: rule 1: agent type `linux-xl` is not among the agent types (linux-medium, linux-large)"
    );
    let out = drover(
        &dir,
        &["rules", "check", "rules.yaml", "--agents", "2 linux-xl:2"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn rules_explain_json_names_the_rule_each_task_gets() {
    let dir = Scratch::new("rules-explain");
    dir.write("rules.yaml", &reference("precedence-example.yaml"));
    dir.write(
        "graph.yaml",
        "tasks:\n  - { id: app1:build:production, command: x }\n  - { id: app1:build, command: x }\n  - { id: lib:lint, command: x }\n",
    );
    let out = drover(
        &dir,
        &[
            "rules",
            "explain",
            "--rules",
            "rules.yaml",
            "--graph",
            "graph.yaml",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = serde_json::json!([
        {"task": "app1:build:production", "rule": 0, "run_on": [{"agent": "linux-medium-js", "parallelism": 5}]},
        {"task": "app1:build", "rule": 1, "run_on": [{"agent": "linux-large-js", "parallelism": 3}]},
        {"task": "lib:lint", "rule": null, "run_on": []}
    ]);
    assert_eq!(got, want);
    let out = drover(
        &dir,
        &[
            "rules",
            "explain",
            "--rules",
            "rules.yaml",
            "--graph",
            "graph.yaml",
        ],
    );
    let plain = text(&out.stdout);
    assert!(plain.contains("more specific than rule 2"), "{plain}");
    assert!(plain.contains("any agent type"), "{plain}");
}

#[test]
fn a_task_no_connected_agent_may_run_is_reported_while_it_waits_then_runs_when_one_comes() {
    let mut fleet = Fleet::start("rules-waiting");
    fleet.dir.write(
        "rules.yaml",
        "assignment-rules:\n  - targets: [e2e]\n    run-on:\n      - agent: linux-large\n",
    );
    fleet.dir.write(
        "tasks.yaml",
        "tasks:\n  - { id: app:build, command: 'echo $DROVER_LAUNCH_TEMPLATE' }\n  - { id: app:e2e, command: 'test $DROVER_LAUNCH_TEMPLATE = linux-large', dependsOn: [app:build] }\n",
    );
    fleet.agent("medium", "linux-medium", 2, Some("exec-w"));
    let out = fleet
        .drover(&["start-ci-run", "--assignment-rules", "rules.yaml"])
        .env("DROVER_CI_EXECUTION_ID", "exec-w")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut exec = fleet
        .drover(&["exec", "--graph", "tasks.yaml"])
        .env("DROVER_CI_EXECUTION_ID", "exec-w")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(exec.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let waiting = loop {
        let line = lines
            .next()
            .expect("exec ended before reporting the wait")
            .unwrap();
        seen.push(line.clone());
        if line.starts_with("waiting:") {
            break line;
        }
    };
    assert!(
        waiting.contains("app:e2e") && waiting.contains("linux-large"),
        "{waiting}"
    );
    fleet.agent("large", "linux-large", 1, Some("exec-w"));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = exec.wait().unwrap();
    assert!(status.success(), "{seen:?}\n{rest:?}\n{}", fleet.logs());
    assert!(
        rest.iter().any(|l| l.contains("ok app:e2e on large")),
        "{rest:?}"
    );
    let _ = fleet
        .agent_proc("large")
        .wait_for_exit(Duration::from_millis(1));
}
