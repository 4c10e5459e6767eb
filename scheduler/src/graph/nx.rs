//! Nx's task graph JSON (`nx <command> --graph=stdout`, Nx 21 to 24) turned into task specs.
//!
//! What the majors print, as far as Drover reads it:
//! - `tasks.tasks`: id -> `{id, target: {project, target, configuration?}, outputs, cache,
//!   parallelism, continuous, ...}`. The target object is the truth about a task's project,
//!   target and configuration: a target may contain colons (`test:lib`), so the id is split
//!   only when a task has no target object.
//! - `tasks.dependencies` and `tasks.continuousDependencies`: id -> edges. Nx 21 to 23 print an
//!   edge as the dependency's id, Nx 24 as `{id, waitFor?: "started"|"ready", inputs?: false}`.
//!   `waitFor` and `inputs` only concern continuous dependencies (when the dependent may start,
//!   whether the dependency's inputs enter the dependent's hash); Nx on the agent applies them,
//!   since a task that needs a continuous task runs with Nx starting it beside it.
//!
//! Unknown fields anywhere are ignored, so a newer Nx that adds some still parses.

use serde_json::Value;

use super::GraphError;
use crate::task::{TaskSpec, shell_word, split_task_id};

/// The command an agent runs for a task of an Nx graph.
pub const NX_RUN_COMMAND: &str = "npx nx run {id} --excludeTaskDependencies";

/// The command for a task that needs continuous tasks (`serve` for an `e2e`): Nx starts them
/// next to it on the same agent, and stops them after.
pub const NX_RUN_WITH_CONTINUOUS_COMMAND: &str = "npx nx run {id}";

/// One edge of Nx's task graph, in either shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NxEdge {
    /// The id of the task depended on.
    pub id: String,
    /// Nx 24: what the dependent waits for on a continuous dependency (`started`, `ready`).
    pub wait_for: Option<String>,
    /// Nx 24: `false` when a continuous dependency's inputs stay out of the dependent's hash.
    pub inputs: bool,
}

impl NxEdge {
    /// Reads an edge: a string (Nx 21 to 23) or an object with an `id` (Nx 24).
    pub fn from_json(value: &Value) -> Option<NxEdge> {
        match value {
            Value::String(id) => Some(NxEdge {
                id: id.clone(),
                wait_for: None,
                inputs: true,
            }),
            Value::Object(edge) => Some(NxEdge {
                id: edge.get("id")?.as_str()?.to_string(),
                wait_for: edge
                    .get("waitFor")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                inputs: edge.get("inputs").and_then(Value::as_bool).unwrap_or(true),
            }),
            _ => None,
        }
    }
}

/// The id an edge points at, in either shape: for code that rewrites a graph in place.
pub fn nx_edge_id_mut(value: &mut Value) -> Option<&mut String> {
    match value {
        Value::String(id) => Some(id),
        Value::Object(edge) => match edge.get_mut("id") {
            Some(Value::String(id)) => Some(id),
            _ => None,
        },
        _ => None,
    }
}

pub(super) fn is_nx_graph(value: &Value) -> bool {
    value
        .get("tasks")
        .and_then(|t| t.get("tasks"))
        .is_some_and(Value::is_object)
}

/// The edges of task `id` in `map` (`tasks.dependencies` or `tasks.continuousDependencies`).
fn edges(
    map: Option<&serde_json::Map<String, Value>>,
    key: &str,
    id: &str,
    bad: &dyn Fn(String) -> GraphError,
) -> Result<Vec<NxEdge>, GraphError> {
    match map.and_then(|d| d.get(id)) {
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| {
                NxEdge::from_json(v).ok_or_else(|| {
                    bad(format!(
                        "task `{id}`: an edge in `tasks.{key}` is neither a task id nor an object with an `id`: {v}"
                    ))
                })
            })
            .collect(),
        Some(Value::Null) | None => Ok(Vec::new()),
        Some(_) => Err(bad(format!(
            "task `{id}`: its `tasks.{key}` entry is not a list"
        ))),
    }
}

/// Converts Nx's task graph into task specs whose command runs the one task through Nx on
/// the agent.
///
/// `cache: false` makes a task non-cacheable, `parallelism: false` (a task that must not share
/// its machine) becomes a per-agent parallelism of 1, and continuous tasks (`continuous: true`,
/// e.g. `serve`) never end, so they are not distributed: a task that needs them
/// (`continuousDependencies`) runs without `--excludeTaskDependencies`, and Nx starts them
/// beside it on its agent.
pub(super) fn nx_tasks(path: &str, value: &Value) -> Result<Vec<TaskSpec>, GraphError> {
    let bad = |message: String| GraphError::File {
        path: path.to_string(),
        message,
    };
    let graph = &value["tasks"];
    let tasks = graph["tasks"]
        .as_object()
        .ok_or_else(|| bad("`tasks.tasks` is not an object".into()))?;
    let deps = graph.get("dependencies").and_then(Value::as_object);
    let continuous_deps = graph
        .get("continuousDependencies")
        .and_then(Value::as_object);
    let is_continuous = |task: &Value| {
        task.get("continuous")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let mut out = Vec::with_capacity(tasks.len());
    for (id, task) in tasks {
        if is_continuous(task) {
            continue;
        }
        // Continuous tasks are not distributed, so they are nobody's dependency here (Nx 21+
        // lists them under `continuousDependencies`; older graphs had them here).
        let depends_on: Vec<String> = edges(deps, "dependencies", id, &bad)?
            .into_iter()
            .map(|e| e.id)
            .filter(|d| !tasks.get(d).is_some_and(is_continuous))
            .collect();
        let needs_continuous =
            !edges(continuous_deps, "continuousDependencies", id, &bad)?.is_empty();
        let command = if needs_continuous {
            NX_RUN_WITH_CONTINUOUS_COMMAND
        } else {
            NX_RUN_COMMAND
        };
        let outputs = task
            .get("outputs")
            .and_then(Value::as_array)
            .map(|o| {
                o.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let (project, target, configuration) = project_target_configuration(id, task);
        out.push(TaskSpec {
            id: id.clone(),
            command: command.replace("{id}", &shell_word(id)),
            depends_on,
            cache: task.get("cache").and_then(Value::as_bool).unwrap_or(true),
            parallelism: match task.get("parallelism").and_then(Value::as_bool) {
                Some(false) => Some(1),
                _ => None,
            },
            outputs,
            project,
            target,
            configuration,
            ..TaskSpec::default()
        });
    }
    Ok(out)
}

/// From the task's target object when it has one (a target may contain colons), else from
/// the id.
fn project_target_configuration(id: &str, task: &Value) -> (String, String, Option<String>) {
    let field = |name: &str| {
        task.get("target")
            .and_then(|t| t.get(name))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    match (field("project"), field("target")) {
        (Some(project), Some(target)) => (project, target, field("configuration")),
        _ => {
            let (p, t, c) = split_task_id(id);
            (p.to_string(), t.to_string(), c.map(str::to_string))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_graph_file;
    use super::*;

    /// `nx run-many -t build test:lib e2e --graph=stdout` as each major printed it for the
    /// workspace of `tests/fixtures/nx-graphs/generate.sh`.
    const CAPTURED: &[(&str, &str)] = &[
        (
            "21.6.11",
            include_str!("../../../tests/fixtures/nx-graphs/nx21.json"),
        ),
        (
            "22.6.1",
            include_str!("../../../tests/fixtures/nx-graphs/nx22.json"),
        ),
        (
            "23.3.2",
            include_str!("../../../tests/fixtures/nx-graphs/nx23.json"),
        ),
        (
            "24.0.7",
            include_str!("../../../tests/fixtures/nx-graphs/nx24.json"),
        ),
    ];

    #[test]
    fn every_major_from_21_to_24_parses_the_same() {
        for (version, text) in CAPTURED {
            let f = parse_graph_file(version, text).unwrap_or_else(|e| panic!("{version}: {e}"));
            let g = &f.graph;
            let mut ids: Vec<&str> = g.tasks.iter().map(|t| t.id.as_str()).collect();
            ids.sort();
            assert_eq!(
                ids,
                [
                    "a:build",
                    "a:test:lib",
                    "b:build",
                    "b:test:lib",
                    "web:build",
                    "web:e2e"
                ],
                "{version}: the continuous web:serve is not distributed"
            );
            let task = |id: &str| &g.tasks[g.index[id]];
            let lib = task("b:test:lib");
            assert_eq!(
                (
                    lib.project.as_str(),
                    lib.target.as_str(),
                    lib.configuration.as_deref()
                ),
                ("b", "test:lib", None),
                "{version}: the target has a colon, there is no configuration"
            );
            assert_eq!(lib.depends_on, ["b:build"], "{version}");
            assert_eq!(
                lib.command, "npx nx run b:test:lib --excludeTaskDependencies",
                "{version}"
            );
            assert_eq!(task("b:build").depends_on, ["a:build"], "{version}");
            assert_eq!(task("b:build").outputs, ["dist/b"], "{version}");
            let e2e = task("web:e2e");
            assert_eq!(e2e.depends_on, ["web:build"], "{version}");
            assert_eq!(
                e2e.command, "npx nx run web:e2e",
                "{version}: Nx starts the continuous serve beside it"
            );
            assert!(!e2e.cache, "{version}");
            assert_eq!(e2e.parallelism, Some(1), "{version}");
        }
    }

    #[test]
    fn nx_24_edges_carry_wait_for_and_inputs() {
        let v: Value = serde_json::from_str(CAPTURED[3].1).unwrap();
        let edge = NxEdge::from_json(&v["tasks"]["continuousDependencies"]["web:e2e"][0]).unwrap();
        assert_eq!(
            edge,
            NxEdge {
                id: "web:serve".into(),
                wait_for: Some("ready".into()),
                inputs: false
            }
        );
        let plain = NxEdge::from_json(&v["tasks"]["dependencies"]["web:e2e"][0]).unwrap();
        assert_eq!(
            (plain.id.as_str(), plain.wait_for, plain.inputs),
            ("web:build", None, true)
        );
    }

    #[test]
    fn unknown_fields_are_tolerated_and_a_bad_edge_is_named() {
        let text = r#"{"graph": {"nodes": {}}, "future": 1, "tasks": {"tasks": {
            "a:build": {"id": "a:build", "target": {"project": "a", "target": "build", "new": 1}, "shiny": true},
            "b:build": {"id": "b:build", "target": {"project": "b", "target": "build"}}
          }, "dependencies": {"b:build": [{"id": "a:build", "waitFor": "started", "priority": 3}]},
          "somethingElse": {}}}"#;
        let f = parse_graph_file("nx", text).unwrap();
        assert_eq!(
            f.graph.tasks[f.graph.index["b:build"]].depends_on,
            ["a:build"]
        );

        let text = r#"{"tasks": {"tasks": {"b:build": {"id": "b:build"}}, "dependencies": {"b:build": [{"task": "a:build"}]}}}"#;
        let e = parse_graph_file("nx", text).unwrap_err().to_string();
        assert!(
            e.contains("task `b:build`") && e.contains("tasks.dependencies"),
            "{e}"
        );
    }

    #[test]
    fn the_target_object_wins_over_the_id_and_the_id_is_split_only_without_one() {
        let text = r#"{"tasks": {"tasks": {
            "app:test:lib:ci": {"id": "app:test:lib:ci", "target": {"project": "app", "target": "test:lib", "configuration": "ci"}},
            "app:build:production": {"id": "app:build:production"}
        }}}"#;
        let f = parse_graph_file("nx", text).unwrap();
        let t = &f.graph.tasks[f.graph.index["app:test:lib:ci"]];
        assert_eq!(
            (
                t.project.as_str(),
                t.target.as_str(),
                t.configuration.as_deref()
            ),
            ("app", "test:lib", Some("ci"))
        );
        let t = &f.graph.tasks[f.graph.index["app:build:production"]];
        assert_eq!(
            (
                t.project.as_str(),
                t.target.as_str(),
                t.configuration.as_deref()
            ),
            ("app", "build", Some("production"))
        );
    }
}
