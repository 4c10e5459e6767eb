//! Task graph files: Drover's native YAML or JSON, and Nx's task graph JSON
//! (`nx <command> --graph=stdout`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::nx::{is_nx_graph, nx_tasks};
use super::{GraphError, TaskGraph};
use crate::duration::deserialize_opt_duration;
use crate::task::TaskSpec;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NativeFile {
    tasks: Vec<NativeTask>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NativeTask {
    id: Spanned<String>,
    command: String,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    cache: Option<bool>,
    #[serde(default)]
    outputs: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    estimate: Option<Duration>,
    #[serde(default)]
    parallelism: Option<u32>,
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    configuration: Option<String>,
}

/// A parsed graph file: the tasks, validated, and where each task was defined.
#[derive(Debug)]
pub struct GraphFile {
    pub graph: TaskGraph,
    /// `(line, column)` of each task's id, where the format gives one.
    pub positions: Vec<Option<(u32, u32)>>,
}

/// Parses and validates a graph file. `path` names the file in error messages.
pub fn parse_graph_file(path: &str, text: &str) -> Result<GraphFile, GraphError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| GraphError::Syntax {
                path: path.to_string(),
                line: e.line() as u32,
                column: e.column() as u32,
                message: e.to_string(),
            })?;
        if is_nx_graph(&value) {
            let tasks = nx_tasks(path, &value)?;
            let positions = vec![None; tasks.len()];
            let graph = TaskGraph::new(tasks)?;
            return Ok(GraphFile { graph, positions });
        }
    }
    parse_native(path, text)
}

fn parse_native(path: &str, text: &str) -> Result<GraphFile, GraphError> {
    let file: NativeFile = serde_saphyr::from_str_with_options(text, yaml_options(text.len()))
        .map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line() as u32, l.column() as u32))
                .unwrap_or((1, 1));
            GraphError::Syntax {
                path: path.to_string(),
                line,
                column,
                message: one_line(&e),
            }
        })?;
    let mut positions = Vec::with_capacity(file.tasks.len());
    let mut tasks = Vec::with_capacity(file.tasks.len());
    for t in file.tasks {
        positions.push(Some((
            t.id.referenced.line() as u32,
            t.id.referenced.column() as u32,
        )));
        let mut task = TaskSpec {
            project: t.project.unwrap_or_default(),
            target: t.target.unwrap_or_default(),
            configuration: t.configuration,
            command: t.command,
            depends_on: t.depends_on,
            cache: t.cache.unwrap_or(true),
            outputs: t.outputs,
            env: t.env,
            timeout: t.timeout,
            estimate: t.estimate,
            parallelism: t.parallelism,
            id: t.id.value,
        };
        task.fill_from_id();
        tasks.push(task);
    }
    let ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
    let place_of = |task: &str| -> String {
        ids.iter()
            .position(|id| id == task)
            .and_then(|i| positions[i])
            .map(|(l, c)| format!("{path}:{l}:{c}: "))
            .unwrap_or_else(|| format!("{path}: "))
    };
    let located = |e: GraphError| -> GraphError {
        match e {
            GraphError::DuplicateId { task, .. } => {
                // Name the second definition: that is the one to remove or rename.
                let second = ids.iter().enumerate().filter(|(_, id)| **id == task).nth(1);
                let place = second
                    .and_then(|(i, _)| positions[i])
                    .map(|(l, c)| format!("{path}:{l}:{c}: "))
                    .unwrap_or_else(|| format!("{path}: "));
                GraphError::DuplicateId { place, task }
            }
            GraphError::UnknownDependency {
                task, dependency, ..
            } => GraphError::UnknownDependency {
                place: place_of(&task),
                task,
                dependency,
            },
            GraphError::SelfDependency { task, .. } => GraphError::SelfDependency {
                place: place_of(&task),
                task,
            },
            GraphError::EmptyCommand { task, .. } => GraphError::EmptyCommand {
                place: place_of(&task),
                task,
            },
            GraphError::EmptyId { .. } => GraphError::EmptyId {
                place: format!("{path}: "),
            },
            GraphError::ControlCharacter { task, .. } => GraphError::ControlCharacter {
                place: place_of(&task),
                task,
            },
            GraphError::ZeroParallelism { task, .. } => GraphError::ZeroParallelism {
                place: place_of(&task),
                task,
            },
            GraphError::Empty => GraphError::File {
                path: path.to_string(),
                message: "the graph has no tasks".into(),
            },
            other => other,
        }
    };
    let graph = TaskGraph::new(tasks).map_err(located)?;
    Ok(GraphFile { graph, positions })
}

/// The first line of a YAML error, without the rendered source snippet.
/// The YAML parser's budget, sized by the file: a graph of a million tasks has some twelve
/// million parser events, far past the parser's defaults for configuration files. Without
/// anchors and aliases a document has at most about two events and nodes a byte; what an
/// alias bomb would multiply (aliases, anchors, replayed events) keeps the default limits.
fn yaml_options(bytes: usize) -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    let by_size = bytes.saturating_mul(2);
    budget.max_events = budget.max_events.max(by_size);
    budget.max_nodes = budget.max_nodes.max(by_size);
    budget.max_total_scalar_bytes = budget.max_total_scalar_bytes.max(bytes);
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

fn one_line(e: &serde_saphyr::Error) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or("invalid YAML").trim();
    match line.split_once("budget breached: ") {
        // The parser's own words name a Rust value; say what the limit is for.
        Some((_, what)) => format!(
            "the file is past a limit of the YAML parser ({what}); graph files may use at most \
             50,000 aliases and anchors, which stops alias bombs, and events in proportion to \
             their size (see Limits in the README)"
        ),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A graph of `n` tasks in chains of 100, as YAML.
    fn chains(n: usize) -> String {
        let mut text = String::from("tasks:\n");
        for i in 0..n {
            let (c, k) = (i / 100, i % 100);
            text.push_str(&format!("  - id: c{c}:t{k}\n    command: \"true\"\n"));
            if k > 0 {
                text.push_str(&format!("    dependsOn: [c{c}:t{}]\n", k - 1));
            }
        }
        text
    }

    #[test]
    fn a_large_yaml_graph_is_within_the_parser_budget() {
        // The parser's default budget refused graphs from about 16,000 tasks on.
        let f = parse_graph_file("big.yaml", &chains(40_000)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.graph.tasks.len(), 40_000);
        assert_eq!(f.graph.tasks[39_999].depends_on, ["c399:t98"]);
    }

    #[test]
    fn an_alias_bomb_is_still_refused() {
        // One anchored kilobyte, repeated through 60,000 aliases: 60 MB from a file of 300 KB.
        let mut text = format!(
            "tasks:\n  - id: x:y\n    command: &big \"{}\"\n    dependsOn: [",
            "x".repeat(1000)
        );
        text.push_str(&vec!["*big"; 60_000].join(", "));
        text.push_str("]\n");
        let error = parse_graph_file("bomb.yaml", &text).expect_err("refused");
        let message = error.to_string();
        assert!(message.starts_with("bomb.yaml:"), "{message}");
        assert!(message.contains("alias"), "{message}");
    }

    #[test]
    fn parses_native_yaml() {
        let text = "tasks:\n  - id: lib1:build\n    command: ./build.sh lib1\n    dependsOn: [lib0:build]\n    cache: false\n    outputs: [dist/lib1]\n    env: { NODE_ENV: production }\n    timeout: 10m\n    estimate: 30s\n  - id: lib0:build\n    command: ./build.sh lib0\n";
        let f = parse_graph_file("g.yaml", text).unwrap();
        let t = &f.graph.tasks[0];
        assert_eq!(t.id, "lib1:build");
        assert!(!t.cache);
        assert_eq!(t.timeout, Some(Duration::from_secs(600)));
        assert_eq!(t.estimate, Some(Duration::from_secs(30)));
        assert_eq!(t.env["NODE_ENV"], "production");
        assert_eq!((t.project.as_str(), t.target.as_str()), ("lib1", "build"));
        assert_eq!(f.graph.deps[0], vec![1]);
        assert_eq!(f.positions[1], Some((10, 9)));
    }

    #[test]
    fn a_target_with_a_colon_is_written_with_explicit_fields() {
        let text = "tasks:\n  - id: app:test:lib\n    project: app\n    target: test:lib\n    command: ./test.sh lib\n  - id: app:build:ci\n    command: ./build.sh\n";
        let f = parse_graph_file("g.yaml", text).unwrap();
        let t = &f.graph.tasks[0];
        assert_eq!(
            (
                t.project.as_str(),
                t.target.as_str(),
                t.configuration.as_deref()
            ),
            ("app", "test:lib", None)
        );
        let t = &f.graph.tasks[1];
        assert_eq!(
            (
                t.project.as_str(),
                t.target.as_str(),
                t.configuration.as_deref()
            ),
            ("app", "build", Some("ci"))
        );
    }

    #[test]
    fn a_control_character_in_an_id_is_refused_with_its_place_and_shown_escaped() {
        let text = "{\"tasks\": [{\"id\": \"a\\u001b[31m\", \"command\": \"true\"}]}";
        let e = parse_graph_file("g.json", text).unwrap_err().to_string();
        assert!(e.starts_with("g.json"), "{e}");
        assert!(
            e.contains("control character") && e.contains("\\u{1b}"),
            "{e}"
        );
        assert!(!e.contains('\u{1b}'), "{e:?}");
    }

    #[test]
    fn an_nx_task_id_never_becomes_shell_syntax() {
        let text = r#"{"graph": {"nodes": {}}, "tasks": {"roots": [], "tasks": {"a;touch pwned:build": {"id": "a;touch pwned:build", "target": {"project": "a;touch pwned", "target": "build"}, "outputs": [], "cache": true}}, "dependencies": {"a;touch pwned:build": []}}}"#;
        let f = parse_graph_file("nx", text).unwrap();
        assert_eq!(
            f.graph.tasks[0].command,
            "npx nx run 'a;touch pwned:build' --excludeTaskDependencies"
        );
    }

    #[test]
    fn parses_native_json() {
        let text = r#"{"tasks": [{"id": "a", "command": "true"}, {"id": "b", "command": "true", "dependsOn": ["a"], "timeout": 1500}]}"#;
        let f = parse_graph_file("g.json", text).unwrap();
        assert_eq!(f.graph.tasks[1].timeout, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn errors_name_file_line_and_task() {
        let e = parse_graph_file(
            "g.yaml",
            "tasks:\n  - id: a\n    command: x\n    dependsOn: [b]\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "g.yaml:2:9: task `a` depends on unknown task `b`"
        );
        let e = parse_graph_file(
            "g.yaml",
            "tasks:\n  - id: a\n    command: x\n  - id: a\n    command: y\n",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "g.yaml:4:9: task `a` is defined twice");
        let e = parse_graph_file("g.yaml", "tasks:\n  - id: a\n    comand: x\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("g.yaml:3:"), "{msg}");
        assert!(msg.contains("comand"), "{msg}");
        let e = parse_graph_file(
            "g.yaml",
            "tasks:\n  - id: a\n    command: x\n    timeout: soon\n",
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("g.yaml:4:"), "{e}");
        let e = parse_graph_file("g.json", "{\"tasks\": [}").unwrap_err();
        assert!(e.to_string().starts_with("g.json:1:"), "{e}");
        let e = parse_graph_file(
            "g.yaml",
            "tasks:\n  - id: a\n    command: x\n  - id: b\n    command: y\n    parallelism: 0\n",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("g.yaml:4:9: task `b` has `parallelism: 0`"),
            "{e}"
        );
    }

    #[test]
    fn parses_nx_task_graph_json() {
        let text = r#"{"graph": {}, "tasks": {"tasks": {
            "app:build:production": {"id": "app:build:production", "target": {"project": "app", "target": "build", "configuration": "production"}, "outputs": ["dist/app"]},
            "lib:build": {"id": "lib:build", "target": {"project": "lib", "target": "build"}, "cache": false}
        }, "dependencies": {"app:build:production": ["lib:build"], "lib:build": []}}}"#;
        let f = parse_graph_file("nx.json", text).unwrap();
        let app = &f.graph.tasks[f.graph.index["app:build:production"]];
        assert_eq!(
            app.command,
            "npx nx run app:build:production --excludeTaskDependencies"
        );
        assert_eq!(app.configuration.as_deref(), Some("production"));
        assert_eq!(app.depends_on, ["lib:build"]);
        assert!(!f.graph.tasks[f.graph.index["lib:build"]].cache);
    }

    /// What `nx run-many -t build e2e --graph=stdout` prints with Nx 22 (trimmed): an e2e
    /// target that must run alone and needs a continuous `serve`.
    #[test]
    fn nx_continuous_tasks_stay_with_their_dependents_and_parallelism_false_is_one() {
        let text = r#"{"graph": {"nodes": {}}, "tasks": {
            "roots": ["a:build", "web:serve"],
            "tasks": {
              "web:build": {"id": "web:build", "target": {"project": "web", "target": "build"}, "projectRoot": "apps/web", "overrides": {}, "outputs": ["dist/web"], "cache": true, "parallelism": true, "continuous": false},
              "web:e2e": {"id": "web:e2e", "target": {"project": "web", "target": "e2e"}, "projectRoot": "apps/web", "overrides": {}, "outputs": [], "cache": false, "parallelism": false, "continuous": false},
              "a:build": {"id": "a:build", "target": {"project": "a", "target": "build"}, "projectRoot": "libs/a", "overrides": {"__overrides_unparsed__": []}, "outputs": ["dist/a"], "cache": true, "parallelism": true, "continuous": false},
              "web:serve": {"id": "web:serve", "target": {"project": "web", "target": "serve"}, "projectRoot": "apps/web", "overrides": {}, "outputs": [], "cache": false, "parallelism": true, "continuous": true}
            },
            "dependencies": {"web:build": ["a:build"], "web:e2e": ["web:build"], "a:build": [], "web:serve": []},
            "continuousDependencies": {"web:build": [], "web:e2e": ["web:serve"], "a:build": [], "web:serve": []}
          }, "taskPlans": {}}"#;
        let f = parse_graph_file("nx", text).unwrap();
        let ids: Vec<&str> = f.graph.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids.len(), 3, "{ids:?}");
        assert!(!ids.contains(&"web:serve"));
        let e2e = &f.graph.tasks[f.graph.index["web:e2e"]];
        assert_eq!(e2e.command, "npx nx run web:e2e");
        assert_eq!(e2e.parallelism, Some(1));
        assert!(!e2e.cache);
        let build = &f.graph.tasks[f.graph.index["web:build"]];
        assert_eq!(
            build.command,
            "npx nx run web:build --excludeTaskDependencies"
        );
        assert_eq!(build.parallelism, None);
        assert_eq!(build.outputs, ["dist/web"]);
    }
}
