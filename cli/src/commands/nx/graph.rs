//! Nx's task graph as the main job sees it: asking Nx for it, reading its flags, and turning it
//! into the tasks the agents run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use drover_scheduler::TaskSpec;
use drover_scheduler::graph::parse_graph_file;
use serde_json::Value;

use super::env::forwarded_nx_env;
use super::overrides::{split_overrides, task_overrides};
use super::replay::replay_invocations;
use super::{NxArgs, exit_code};
use crate::error::CliError;

/// Asks the workspace's Nx for the task graph of the command: the graph, or Nx's exit code
/// when Nx failed (its output is shown).
pub(super) async fn ask_nx(nx: &[String], args: &NxArgs) -> Result<Result<Value, u8>, CliError> {
    // Without the overrides: Nx 21 reads `--graph` after `--` as one of them.
    let (nx_args, _) = split_overrides(&args.nx_args);
    let shown = format!("{} {} --graph=stdout", args.nx, nx_args.join(" "));
    eprintln!("drover: asking Nx for the task graph: {shown}");
    let output = tokio::process::Command::new(&nx[0])
        .args(&nx[1..])
        .args(nx_args)
        .arg("--graph=stdout")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| CliError::Io(format!("cannot run `{}`: {e}", args.nx)))?;
    if !output.status.success() {
        eprint!("{}", String::from_utf8_lossy(&output.stdout));
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
        eprintln!("drover: `{shown}` failed ({})", output.status);
        return Ok(Err(exit_code(output.status)));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let graph = extract_json(&stdout).ok_or_else(|| {
        CliError::Io(format!(
            "`{shown}` printed no task graph:\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    })?;
    Ok(Ok(graph))
}

/// The tasks the agents run for an Nx graph, with the per-agent parallelism they got.
pub(super) struct Prepared {
    pub tasks: Vec<TaskSpec>,
    pub parallel: u32,
    pub continuous: usize,
}

/// Turns Nx's graph into tasks: the command's configuration on every task that has it, the
/// command's parallelism, the forwarded `NX_*` environment, the configured Nx invocation, and
/// (unless `--no-restore-dependency-outputs`) a cache-hit run of the task's dependencies first.
pub(super) fn prepare(args: &NxArgs, mut graph: Value) -> Result<Prepared, CliError> {
    let (nx_args, _) = split_overrides(&args.nx_args);
    if let Some(configuration) = flag_value(nx_args, "--configuration", Some("-c")) {
        apply_configuration(&mut graph, &configuration);
    }
    let continuous = count_continuous(&graph);
    let nx_json = find_nx_json();
    let parallel = parallelism(nx_args, nx_json.as_deref());
    let file = parse_graph_file("nx graph", &graph.to_string())
        .map_err(|e| CliError::Input(e.to_string()))?;
    let mut env = forwarded_nx_env();
    if nx_major(nx_json.as_deref()) == Some(21) && std::env::var_os("NX_DISABLE_DB").is_none() {
        // Nx 21's task database (SQLite in .nx/workspace-data) fails with "database is
        // locked" when two Nx processes of one checkout finish at once, as an agent's slots
        // do; Nx 21 can do without it (its cache then works from files alone). Nx 22 on
        // dropped the switch, and waits for the lock.
        env.insert("NX_DISABLE_DB".into(), "true".into());
    }
    let restore: BTreeMap<String, RestoreHow> = if args.no_restore_dependency_outputs {
        BTreeMap::new()
    } else {
        restore_plan(&file.graph)
            .into_iter()
            .map(|(id, plan)| (id, restore_how(&args.nx, &plan, &args.nx_args)))
            .collect()
    };
    let tasks = file
        .graph
        .tasks
        .into_iter()
        .map(|mut t| {
            let from_nx = t.command.starts_with("npx nx ") && !t.project.is_empty();
            if let Some(rest) = t.command.strip_prefix("npx nx ") {
                t.command = format!("{} {rest}", args.nx);
            }
            let overrides = task_overrides(&args.nx_args, &t);
            if !overrides.is_empty() {
                let words: Vec<String> = overrides.iter().map(|w| shell_word(w)).collect();
                t.command = format!("{} -- {}", t.command, words.join(" "));
            }
            // What a warm Nx worker on the agent runs instead of the command (the same
            // thing, without an Nx start-up); the command stays for agents without one.
            let mut worker = from_nx.then(|| {
                serde_json::json!({
                    "project": t.project,
                    "target": t.target,
                    "configuration": t.configuration,
                    "overrides": overrides,
                    "restore": false,
                })
            });
            match restore.get(&t.id) {
                Some(RestoreHow::InTheTaskRun {
                    message,
                    worker_note,
                    configuration,
                }) => {
                    // One Nx start-up: Nx takes the dependencies from the cache, then the task.
                    // A task without the command's configuration passes it on to them.
                    let with = match configuration {
                        Some(c) if t.configuration.is_none() => {
                            format!(" {}", shell_word(&format!("--configuration={c}")))
                        }
                        _ => String::new(),
                    };
                    let command = t.command.replace(" --excludeTaskDependencies", &with);
                    t.command = format!("echo {} && {command}", shell_word(message));
                    if let Some(w) = worker.as_mut() {
                        w["restore"] = true.into();
                        w["configuration"] =
                            t.configuration.clone().or(configuration.clone()).into();
                        w["note"] = worker_note.clone().into();
                    }
                }
                Some(RestoreHow::Steps(steps)) => {
                    t.command = format!("{steps} && {}", t.command);
                    worker = None;
                }
                None => {}
            }
            if let Some(w) = worker {
                t.env.insert(NX_TASK_VAR.into(), w.to_string());
            }
            t.parallelism = t.parallelism.or(Some(parallel));
            for (k, v) in &env {
                t.env.entry(k.clone()).or_insert_with(|| v.clone());
            }
            t
        })
        .collect();
    Ok(Prepared {
        tasks,
        parallel,
        continuous,
    })
}

/// The JSON object in Nx's output (anything Nx or npm printed around it is ignored).
pub(super) fn extract_json(text: &str) -> Option<Value> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    serde_json::from_str(text.get(start..=end)?).ok()
}

/// The value of a flag in Nx's arguments: `--name=V`, `--name V`, `-c V`, `-c=V`; a bare flag
/// gives `"true"`.
pub(super) fn flag_value(args: &[String], long: &str, short: Option<&str>) -> Option<String> {
    let mut found = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let names = std::iter::once(long).chain(short);
        for name in names {
            if let Some(v) = a.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
                found = Some(v.to_string());
            } else if a == name {
                found = match args.get(i + 1) {
                    Some(next) if !next.starts_with('-') => {
                        i += 1;
                        Some(next.clone())
                    }
                    _ => Some("true".to_string()),
                };
            }
        }
        i += 1;
    }
    found
}

/// Per-agent parallelism: `--parallel` of the command, then nx.json's `parallel`, then 1.
/// `--parallel` alone (or `true`) means nx.json's value or Nx's default of 3, `false` means 1.
pub(super) fn parallelism(args: &[String], nx_json: Option<&Path>) -> u32 {
    let from_nx_json = nx_json
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|v| match v.get("parallel") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        })
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0);
    match flag_value(args, "--parallel", None).as_deref() {
        Some("false") => 1,
        Some("true") | Some("") => from_nx_json.unwrap_or(3),
        Some(n) => n
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .or(from_nx_json)
            .unwrap_or(1),
        None => from_nx_json.unwrap_or(1),
    }
}

/// The major version of the workspace's own Nx (`node_modules/nx` beside `nx.json`).
fn nx_major(nx_json: Option<&Path>) -> Option<u32> {
    let package = nx_json?.parent()?.join("node_modules/nx/package.json");
    let text = std::fs::read_to_string(package).ok()?;
    let value: Value = serde_json::from_str(&text).ok()?;
    value
        .get("version")?
        .as_str()?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// nx.json of the workspace this command runs in (here or above).
pub(super) fn find_nx_json() -> Option<PathBuf> {
    let mut dir = std::env::current_dir().ok()?;
    loop {
        let candidate = dir.join("nx.json");
        if candidate.is_file() {
            return Some(candidate);
        }
        if !dir.pop() {
            return None;
        }
    }
}

/// Nx's `--graph` output leaves out the `--configuration` of the command; the run itself uses
/// it for every task whose target has that configuration. Renames those tasks
/// (`app:build` -> `app:build:production`) everywhere in the graph.
pub(super) fn apply_configuration(graph: &mut Value, configuration: &str) {
    let nodes = graph.get("graph").and_then(|g| g.get("nodes")).cloned();
    let has_configuration = |project: &str, target: &str| {
        nodes
            .as_ref()
            .and_then(|n| n.get(project))
            .and_then(|p| p.get("data"))
            .and_then(|d| d.get("targets"))
            .and_then(|t| t.get(target))
            .and_then(|t| t.get("configurations"))
            .and_then(|c| c.as_object())
            .is_some_and(|c| c.contains_key(configuration))
    };
    let Some(tasks) = graph
        .get_mut("tasks")
        .and_then(|t| t.get_mut("tasks"))
        .and_then(|t| t.as_object_mut())
    else {
        return;
    };
    let mut renamed: HashMap<String, String> = HashMap::new();
    let old = std::mem::take(tasks);
    for (id, mut task) in old {
        let project = task["target"]["project"].as_str().unwrap_or("").to_string();
        let target = task["target"]["target"].as_str().unwrap_or("").to_string();
        let id = if !project.is_empty() && has_configuration(&project, &target) {
            let new_id = format!("{project}:{target}:{configuration}");
            task["id"] = Value::String(new_id.clone());
            task["target"]["configuration"] = Value::String(configuration.to_string());
            renamed.insert(id, new_id.clone());
            new_id
        } else {
            id
        };
        tasks.insert(id, task);
    }
    let rename = |id: &str| renamed.get(id).cloned().unwrap_or_else(|| id.to_string());
    for key in ["dependencies", "continuousDependencies"] {
        let Some(map) = graph
            .get_mut("tasks")
            .and_then(|t| t.get_mut(key))
            .and_then(|m| m.as_object_mut())
        else {
            continue;
        };
        let old = std::mem::take(map);
        for (id, deps) in old {
            let mut deps = deps;
            if let Value::Array(list) = &mut deps {
                for edge in list.iter_mut() {
                    if let Some(dep) = drover_scheduler::graph::nx_edge_id_mut(edge) {
                        *dep = rename(dep);
                    }
                }
            }
            map.insert(rename(&id), deps);
        }
    }
    if let Some(Value::Array(roots)) = graph.get_mut("tasks").and_then(|t| t.get_mut("roots")) {
        for r in roots.iter_mut() {
            if let Value::String(s) = r {
                *s = rename(s);
            }
        }
    }
}

pub(super) fn count_continuous(graph: &Value) -> usize {
    graph
        .get("tasks")
        .and_then(|t| t.get("tasks"))
        .and_then(|t| t.as_object())
        .map_or(0, |tasks| {
            tasks
                .values()
                .filter(|t| t.get("continuous").and_then(|c| c.as_bool()) == Some(true))
                .count()
        })
}

/// What an agent restores before a task: the outputs of its dependencies, transitive ones
/// included, from the remote cache; those of non-cacheable dependencies cannot be.
pub(super) struct Restore<'a> {
    pub cached: Vec<&'a TaskSpec>,
    pub not_cacheable: Vec<&'a TaskSpec>,
}

/// The restore of every task that has dependencies.
pub(super) fn restore_plan(graph: &drover_scheduler::TaskGraph) -> BTreeMap<String, Restore<'_>> {
    let mut out = BTreeMap::new();
    for (i, task) in graph.tasks.iter().enumerate() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<usize> = graph.deps[i].clone();
        while let Some(d) = stack.pop() {
            if seen.insert(d) {
                stack.extend(graph.deps[d].iter().copied());
            }
        }
        if seen.is_empty() {
            continue;
        }
        let (cached, not_cacheable) = seen.iter().map(|&d| &graph.tasks[d]).partition(|t| t.cache);
        out.insert(
            task.id.clone(),
            Restore {
                cached,
                not_cacheable,
            },
        );
    }
    out
}

/// How a task's dependencies' outputs are restored on its agent.
pub(super) enum RestoreHow {
    /// Every dependency is cacheable and runs as it did on its own agent: the task runs as
    /// `nx run <task id>` with its dependencies (all cache hits), one Nx start-up for both.
    /// `message` is what the task's log says of it (`worker_note` where a warm Nx worker
    /// restores them); `configuration` the command's.
    InTheTaskRun {
        message: String,
        worker_note: String,
        configuration: Option<String>,
    },
    /// Steps before the task (see [`restore_steps`]).
    Steps(String),
}

pub(super) fn restore_how(nx: &str, plan: &Restore<'_>, nx_args: &[String]) -> RestoreHow {
    // `nx run <task id>` runs the dependencies as they ran on their agents when none got
    // overrides; the command's `--configuration` goes along (Nx gives it to each dependency
    // whose target has it, as in the command's own graph).
    let (words, _) = split_overrides(nx_args);
    let configuration = flag_value(words, "--configuration", Some("-c"));
    let same_as_on_their_agents = plan
        .cached
        .iter()
        .all(|d| task_overrides(nx_args, d).is_empty());
    if plan.not_cacheable.is_empty() && same_as_on_their_agents {
        let mut ids: Vec<&str> = plan.cached.iter().map(|t| t.id.as_str()).collect();
        ids.sort_unstable();
        let message = format!(
            "drover: Nx restores the outputs of {} from the remote cache, then runs the task (a dependency missing from the cache, e.g. its upload was refused, runs again here: see Nx's summary)",
            ids.join(", ")
        );
        let worker_note = format!(
            "drover: restoring the outputs of {} from the remote cache, then running the task",
            ids.join(", ")
        );
        RestoreHow::InTheTaskRun {
            message,
            worker_note,
            configuration,
        }
    } else {
        RestoreHow::Steps(restore_steps(nx, plan, nx_args))
    }
}

/// The shell steps before a task that restore its dependencies' outputs, saying in the task's
/// log what is restored and what cannot be (a non-cacheable dependency ran elsewhere and is
/// not run again here).
pub(super) fn restore_steps(nx: &str, plan: &Restore<'_>, nx_args: &[String]) -> String {
    let mut steps = Vec::new();
    let ids = |tasks: &[&TaskSpec]| {
        tasks
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !plan.not_cacheable.is_empty() {
        let message = format!(
            "drover: not restored (not cacheable, so it is not in the remote cache; it ran on its own agent and is not run again here): {}",
            ids(&plan.not_cacheable)
        );
        steps.push(format!("echo {}", shell_word(&message)));
    }
    if !plan.cached.is_empty() {
        let message = format!(
            "drover: restoring the outputs of {} from the remote cache (a dependency missing from the cache, e.g. its upload was refused, runs again here: see Nx's summary)",
            ids(&plan.cached)
        );
        steps.push(format!("echo {}", shell_word(&message)));
        for words in replay_invocations(plan.cached.iter().copied(), nx_args) {
            let words: Vec<String> = words.iter().map(|w| shell_word(w)).collect();
            steps.push(format!("{nx} {}", words.join(" ")));
        }
    }
    steps.join(" && ")
}

pub(crate) use drover_scheduler::shell_word;

/// The variable that tells an agent's warm Nx worker what to run for a task (the agent's
/// `nx_worker` module reads it): project, target, configuration, overrides, and whether to
/// restore the dependencies' outputs first.
pub(crate) const NX_TASK_VAR: &str = "DROVER_NX_TASK";
