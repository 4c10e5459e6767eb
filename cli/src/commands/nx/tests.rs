//! Unit tests of `drover nx`.

use super::env::*;
use super::graph::*;
use super::replay::*;
use drover_scheduler::TaskSpec;
use serde_json::Value;

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn flags_in_every_spelling() {
    let a = args(&["affected", "-t", "build", "--parallel=2", "-c", "ci"]);
    assert_eq!(flag_value(&a, "--parallel", None).as_deref(), Some("2"));
    assert_eq!(
        flag_value(&a, "--configuration", Some("-c")).as_deref(),
        Some("ci")
    );
    let a = args(&["run-many", "--parallel", "4", "--configuration=production"]);
    assert_eq!(flag_value(&a, "--parallel", None).as_deref(), Some("4"));
    assert_eq!(
        flag_value(&a, "--configuration", Some("-c")).as_deref(),
        Some("production")
    );
    let a = args(&["run-many", "--parallel", "--verbose"]);
    assert_eq!(flag_value(&a, "--parallel", None).as_deref(), Some("true"));
    assert_eq!(flag_value(&a, "--configuration", Some("-c")), None);
}

#[test]
fn parallelism_comes_from_the_command_then_nx_json_then_one() {
    let dir = std::env::temp_dir().join(format!("drover-nx-par-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let nx_json = dir.join("nx.json");
    std::fs::write(&nx_json, r#"{"parallel": 5}"#).unwrap();
    assert_eq!(
        parallelism(&args(&["run-many", "--parallel=2"]), Some(&nx_json)),
        2
    );
    assert_eq!(parallelism(&args(&["run-many"]), Some(&nx_json)), 5);
    assert_eq!(
        parallelism(&args(&["run-many", "--parallel"]), Some(&nx_json)),
        5
    );
    assert_eq!(parallelism(&args(&["run-many", "--parallel"]), None), 3);
    assert_eq!(
        parallelism(&args(&["run-many", "--parallel=false"]), None),
        1
    );
    assert_eq!(parallelism(&args(&["run-many"]), None), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_command_configuration_renames_tasks_whose_target_has_it() {
    let mut g: Value = serde_json::from_str(
        r#"{"graph": {"nodes": {
            "app": {"data": {"targets": {"build": {"configurations": {"production": {}}}, "test": {"configurations": {}}}}},
            "lib": {"data": {"targets": {"build": {"configurations": {"production": {}}}}}}
        }}, "tasks": {
            "roots": ["lib:build"],
            "tasks": {
                "app:build": {"id": "app:build", "target": {"project": "app", "target": "build"}},
                "app:test": {"id": "app:test", "target": {"project": "app", "target": "test"}},
                "lib:build": {"id": "lib:build", "target": {"project": "lib", "target": "build"}}
            },
            "dependencies": {"app:build": ["lib:build"], "app:test": ["app:build"], "lib:build": []},
            "continuousDependencies": {}
        }}"#,
    )
    .unwrap();
    apply_configuration(&mut g, "production");
    let tasks = g["tasks"]["tasks"].as_object().unwrap();
    let mut ids: Vec<&String> = tasks.keys().collect();
    ids.sort();
    assert_eq!(
        ids,
        ["app:build:production", "app:test", "lib:build:production"]
    );
    assert_eq!(
        g["tasks"]["dependencies"]["app:build:production"][0],
        "lib:build:production"
    );
    assert_eq!(
        g["tasks"]["dependencies"]["app:test"][0],
        "app:build:production"
    );
    assert_eq!(g["tasks"]["roots"][0], "lib:build:production");
    assert_eq!(
        tasks["app:build:production"]["target"]["configuration"],
        "production"
    );
}

#[test]
fn replay_runs_exactly_the_given_tasks() {
    let t = |id: &str| TaskSpec::new(id, "x");
    let tasks = [
        t("a:build:production"),
        t("b:build:production"),
        t("a:test"),
        t("b:test"),
        t("a:lint"),
        t("b:lint"),
        t("c:lint"),
    ];
    let got = replay_invocations(tasks.iter(), &[]);
    assert_eq!(
        got,
        vec![
            args(&[
                "run-many",
                "--targets=test",
                "--projects=a,b",
                "--excludeTaskDependencies"
            ]),
            args(&[
                "run-many",
                "--targets=lint",
                "--projects=a,b,c",
                "--excludeTaskDependencies"
            ]),
            args(&[
                "run-many",
                "--targets=build",
                "--projects=a,b",
                "--configuration=production",
                "--excludeTaskDependencies"
            ]),
        ]
    );
    // The overrides go to the tasks the command named, as they did on the agents.
    let nx_args = args(&["run-many", "-t", "test", "lint", "--", "--coverage"]);
    let got = replay_invocations(tasks[..4].iter(), &nx_args);
    assert_eq!(
        got,
        vec![
            args(&[
                "run-many",
                "--targets=test",
                "--projects=a,b",
                "--excludeTaskDependencies",
                "--",
                "--coverage"
            ]),
            args(&[
                "run-many",
                "--targets=build",
                "--projects=a,b",
                "--configuration=production",
                "--excludeTaskDependencies"
            ]),
        ]
    );
}

#[test]
fn dependency_outputs_are_restored_transitively_and_the_log_names_what_cannot_be() {
    let mut gen_ = TaskSpec::new("lib:gen", "x");
    gen_.cache = false;
    let mut lib_build = TaskSpec::new("lib:build", "x");
    lib_build.depends_on = vec!["lib:gen".into()];
    let util = TaskSpec::new("util:build", "x");
    let mut app = TaskSpec::new("app:build", "x");
    app.depends_on = vec!["util:build".into()];
    let mut e2e = TaskSpec::new("app:e2e", "x");
    e2e.cache = false;
    e2e.depends_on = vec!["app:build".into()];
    let mut web = TaskSpec::new("web:build", "x");
    web.depends_on = vec!["lib:build".into(), "util:build".into()];
    let graph =
        drover_scheduler::TaskGraph::new(vec![gen_, lib_build, util, app, e2e, web]).unwrap();
    let plan = restore_plan(&graph);
    let got: Vec<(&str, Vec<&str>, Vec<&str>)> = plan
        .iter()
        .map(|(id, r)| {
            let mut cached: Vec<&str> = r.cached.iter().map(|d| d.id.as_str()).collect();
            cached.sort();
            let not: Vec<&str> = r.not_cacheable.iter().map(|d| d.id.as_str()).collect();
            (id.as_str(), cached, not)
        })
        .collect();
    assert_eq!(
        got,
        [
            ("app:build", vec!["util:build"], vec![]),
            ("app:e2e", vec!["app:build", "util:build"], vec![]),
            ("lib:build", vec![], vec!["lib:gen"]),
            (
                "web:build",
                vec!["lib:build", "util:build"],
                vec!["lib:gen"]
            ),
        ]
    );
    let steps = restore_steps("npx nx", &plan["web:build"], &[]);
    assert!(
        steps.starts_with("echo 'drover: not restored (not cacheable"),
        "{steps}"
    );
    assert!(steps.contains("lib:gen"), "{steps}");
    assert!(
        steps.ends_with(
            "npx nx run-many --targets=build --projects=lib,util --excludeTaskDependencies"
        ),
        "{steps}"
    );
    assert_eq!(
        restore_steps("npx nx", &plan["lib:build"], &[]),
        "echo 'drover: not restored (not cacheable, so it is not in the remote cache; it ran on its own agent and is not run again here): lib:gen'"
    );
    // All cacheable: one Nx run takes the dependencies from the cache, then the task.
    match restore_how("npx nx", &plan["app:e2e"], &[]) {
        RestoreHow::InTheTaskRun {
            message,
            worker_note,
            configuration,
        } => {
            assert_eq!(
                worker_note,
                "drover: restoring the outputs of app:build, util:build from the remote cache, then running the task"
            );
            assert_eq!(
                shell_word(&message),
                "'drover: Nx restores the outputs of app:build, util:build from the remote cache, then runs the task (a dependency missing from the cache, e.g. its upload was refused, runs again here: see Nx'\\''s summary)'"
            );
            assert_eq!(configuration, None);
        }
        RestoreHow::Steps(s) => panic!("{s}"),
    }
    assert!(matches!(
        restore_how("npx nx", &plan["web:build"], &[]),
        RestoreHow::Steps(_)
    ));
    // The command's configuration goes along (Nx gives it to the dependencies that have it).
    assert!(matches!(
        restore_how("npx nx", &plan["app:e2e"], &args(&["run-many", "-t", "e2e", "-c", "ci"])),
        RestoreHow::InTheTaskRun { configuration: Some(c), .. } if c == "ci"
    ));
    // A dependency that got overrides on its agent is restored with them, in its own step.
    let nx_args = args(&["run-many", "-t", "build", "-t", "e2e", "--", "--prod"]);
    assert!(matches!(
        restore_how("npx nx", &plan["app:e2e"], &nx_args),
        RestoreHow::Steps(_)
    ));
    assert_eq!(shell_word("@scope/lib:build"), "@scope/lib:build");
    assert_eq!(shell_word("a b'c"), "'a b'\\''c'");
}

#[test]
fn nx_variables_that_would_break_agents_stay_home() {
    assert!(forwards_nx_var("NX_BASE"));
    assert!(forwards_nx_var("NX_VERBOSE_LOGGING"));
    assert!(forwards_nx_var("NX_NO_CLOUD"));
    assert!(!forwards_nx_var("NX_CACHE_DIRECTORY"));
    assert!(!forwards_nx_var("NX_DAEMON"));
    assert!(!forwards_nx_var("NX_WORKSPACE_ROOT"));
    assert!(!forwards_nx_var("NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN"));
    assert!(!forwards_nx_var("NX_TASK_TARGET_PROJECT"));
    assert!(!forwards_nx_var("PATH"));
}

/// Nx 24's object edges are renamed too, and a target with a colon keeps its name: the replay
/// and the restore steps never pass its tail as a configuration.
#[test]
fn nx_24_graph_with_a_colon_target_and_the_command_configuration() {
    let mut g: Value = serde_json::from_str(include_str!(
        "../../../../tests/fixtures/nx-graphs/nx24.json"
    ))
    .unwrap();
    apply_configuration(&mut g, "production");
    assert_eq!(
        g["tasks"]["dependencies"]["b:test:lib"][0]["id"],
        "b:build:production"
    );
    let file = drover_scheduler::graph::parse_graph_file("nx", &g.to_string()).unwrap();
    let lib = &file.graph.tasks[file.graph.index["b:test:lib"]];
    assert_eq!(lib.depends_on, ["b:build:production"]);
    assert_eq!(lib.configuration, None);
    let libs: Vec<&TaskSpec> = file
        .graph
        .tasks
        .iter()
        .filter(|t| t.target == "test:lib")
        .collect();
    assert_eq!(
        replay_invocations(libs.into_iter(), &[]),
        [args(&[
            "run-many",
            "--targets=test:lib",
            "--projects=a,b",
            "--excludeTaskDependencies"
        ])]
    );
}
