//! `drover nx -- <nx arguments>`: distribute an Nx command over the run's agents, then replay
//! it on the main job against the remote cache so outputs and terminal output land here.
//!
//! 1. Ask the workspace's Nx for the task graph (`nx <args> --graph=stdout`).
//! 2. Submit it: each agent runs `nx run <task id> --excludeTaskDependencies` in its own
//!    checkout, with the coordinator's remote cache, and Nx there uploads what it built.
//! 3. Follow the run (a failed task's output shows as soon as it fails; Nx never uploads a
//!    failure), then print the output of the non-cacheable tasks, which no cache can replay.
//! 4. Replay: the same Nx command when every task succeeded and is cacheable (all hits, the
//!    exit code is Nx's); otherwise `nx run-many` over exactly the succeeded cacheable tasks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use drover_proto::v1 as pb;
use drover_scheduler::TaskSpec;
use drover_scheduler::graph::parse_graph_file;
use pb::run_service_client::RunServiceClient;
use serde_json::Value;

use super::run::RunRefArgs;
use crate::client::channel;
use crate::error::CliError;
use crate::follow::{Follow, follow};

#[derive(Args, Debug)]
pub struct NxArgs {
    #[command(flatten)]
    pub run: RunRefArgs,
    /// How to invoke Nx, here and on the agents (e.g. `yarn nx`, `pnpm exec nx`).
    #[arg(long = "nx", env = "DROVER_NX_COMMAND", default_value = "npx nx")]
    pub nx: String,
    /// The remote cache for the replay (default: NX_SELF_HOSTED_REMOTE_CACHE_SERVER, else
    /// DROVER_CACHE_URL). Agents get theirs from the coordinator.
    #[arg(long)]
    pub cache_server: Option<String>,
    /// Token for the replay; a read-only one is enough (default:
    /// NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN, else DROVER_CACHE_READ_TOKEN, else
    /// DROVER_CACHE_TOKEN).
    #[arg(long, hide_env_values = true)]
    pub cache_token: Option<String>,
    /// Do not replay on the main job: outputs stay on the agents (and in the cache).
    #[arg(long)]
    pub no_replay: bool,
    /// Print every task's output as it comes (default: only failed tasks' output).
    #[arg(long)]
    pub stream_output: bool,
    /// Agents restore a task's dependencies' outputs from the remote cache before running it
    /// (`nx run <task id>` without `--excludeTaskDependencies`), as Nx Cloud's agents do. Only
    /// for tasks whose dependencies are all cacheable, so nothing runs twice.
    #[arg(long, env = "DROVER_NX_RESTORE_DEPENDENCY_OUTPUTS")]
    pub restore_dependency_outputs: bool,
    /// The Nx command, e.g. `affected -t lint,test,build --parallel=2`.
    #[arg(last = true, required = true, num_args = 1.., allow_hyphen_values = true)]
    pub nx_args: Vec<String>,
}

/// `NX_*` variables that stay on the main job: paths of this checkout, the daemon, the
/// agent's own identity and cache (the coordinator gives agents theirs), and what Nx sets for
/// the task it runs.
const NOT_FORWARDED: &[&str] = &[
    "NX_CACHE_DIRECTORY",
    "NX_WORKSPACE_ROOT",
    "NX_WORKSPACE_ROOT_PATH",
    "NX_WORKSPACE_DATA_DIRECTORY",
    "NX_PROJECT_GRAPH_CACHE_DIRECTORY",
    "NX_DAEMON",
    "NX_DAEMON_SOCKET_DIR",
    "NX_SOCKET_DIR",
    "NX_SELF_HOSTED_REMOTE_CACHE_SERVER",
    "NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN",
    "NX_AGENT_NAME",
    "NX_AGENT_LAUNCH_TEMPLATE",
    "NX_CI_EXECUTION_ID",
    "NX_CI_EXECUTION_ENV",
    "NX_TERMINAL_OUTPUT_PATH",
    "NX_STREAM_OUTPUT",
    "NX_PREFIX_OUTPUT",
    "NX_TUI",
    "NX_CLI_SET",
    "NX_LOAD_DOT_ENV_FILES",
    "NX_INVOKED_BY_RUNNER",
    "NX_FORKED_TASK_EXECUTOR",
];

/// Whether an `NX_*` variable of the main job goes to the agents' tasks.
pub fn forwards_nx_var(name: &str) -> bool {
    name.starts_with("NX_") && !name.starts_with("NX_TASK_") && !NOT_FORWARDED.contains(&name)
}

/// The main job's `NX_*` variables that every task gets.
pub fn forwarded_nx_env() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| forwards_nx_var(k))
        .collect()
}

pub async fn run(args: NxArgs) -> Result<u8, CliError> {
    let nx = split_command(&args.nx)?;
    if args
        .nx_args
        .iter()
        .any(|a| a == "--graph" || a.starts_with("--graph="))
    {
        return Err(CliError::Usage(
            "drover nx asks Nx for the graph itself: leave out --graph".into(),
        ));
    }
    let cache = replay_cache(&args)?;
    let (run_id, ci_execution_id) = args.run.resolve()?;
    if let Some((server, token)) = &cache {
        check_cache(server, token).await?;
    }

    // 1. The task graph, as Nx sees it here.
    let shown = format!("{} {} --graph=stdout", args.nx, args.nx_args.join(" "));
    eprintln!("drover: asking Nx for the task graph: {shown}");
    let output = tokio::process::Command::new(&nx[0])
        .args(&nx[1..])
        .args(&args.nx_args)
        .arg("--graph=stdout")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| CliError::Io(format!("cannot run `{}`: {e}", args.nx)))?;
    if !output.status.success() {
        eprint!("{}", String::from_utf8_lossy(&output.stdout));
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
        eprintln!("drover: `{shown}` failed ({})", output.status);
        return Ok(exit_code(output.status));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut graph = extract_json(&stdout).ok_or_else(|| {
        CliError::Io(format!(
            "`{shown}` printed no task graph:\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    })?;
    if let Some(configuration) = flag_value(&args.nx_args, "--configuration", Some("-c")) {
        apply_configuration(&mut graph, &configuration);
    }
    let continuous = count_continuous(&graph);
    let parallel = parallelism(&args.nx_args, find_nx_json().as_deref());
    let file = parse_graph_file("nx graph", &graph.to_string())
        .map_err(|e| CliError::Input(e.to_string()))?;
    let env = forwarded_nx_env();
    // With --restore-dependency-outputs: `nx run-many` over exactly the task's dependencies
    // (all cache hits) before the task itself.
    let restore: BTreeMap<String, String> = if args.restore_dependency_outputs {
        restorable_tasks(&file.graph)
            .into_iter()
            .map(|(id, deps)| {
                let steps: Vec<String> = replay_invocations(deps.into_iter())
                    .into_iter()
                    .map(|words| {
                        let words: Vec<String> = words.iter().map(|w| shell_word(w)).collect();
                        format!("{} {}", args.nx, words.join(" "))
                    })
                    .collect();
                (id, steps.join(" && "))
            })
            .collect()
    } else {
        BTreeMap::new()
    };
    let tasks: Vec<TaskSpec> = file
        .graph
        .tasks
        .into_iter()
        .map(|mut t| {
            if let Some(rest) = t.command.strip_prefix("npx nx ") {
                t.command = format!("{} {rest}", args.nx);
            }
            if let Some(steps) = restore.get(&t.id) {
                t.command = format!("{steps} && {}", t.command);
            }
            t.parallelism = t.parallelism.or(Some(parallel));
            for (k, v) in &env {
                t.env.entry(k.clone()).or_insert_with(|| v.clone());
            }
            t
        })
        .collect();
    if tasks.is_empty() {
        eprintln!("drover: Nx has no tasks to run");
        return Ok(0);
    }

    // 2. Submit and follow.
    let total = tasks.len();
    let channel = channel(&args.run.coordinator.url)?;
    let mut client = RunServiceClient::new(channel.clone());
    let submitted = client
        .submit_graph(pb::SubmitGraphRequest {
            run_id,
            tasks: tasks
                .iter()
                .map(drover_coordinator::task_to_proto)
                .collect(),
            label: format!("nx {}", args.nx_args.join(" ")),
            ci_execution_id,
        })
        .await
        .map_err(|s| CliError::rpc("submitting the Nx task graph", s))?
        .into_inner();
    eprintln!(
        "drover: submitted {total} Nx tasks to run {} (submission {}), at most {parallel} at once per agent where no rule says otherwise{}",
        submitted.run_id,
        submitted.submission_id,
        if continuous > 0 {
            format!("; {continuous} continuous task(s) run beside the tasks that need them")
        } else {
            String::new()
        }
    );
    let outcome = follow(
        channel.clone(),
        Follow {
            run_id: submitted.run_id.clone(),
            submission: submitted.submission_id,
            total,
            stream_output: args.stream_output,
        },
    )
    .await?;
    let succeeded: BTreeSet<&str> = outcome
        .tasks
        .iter()
        .filter(|t| t.status == pb::TaskStatus::Succeeded as i32)
        .map(|t| t.task_id.as_str())
        .collect();

    // 3. What no cache can replay: the output of non-cacheable tasks.
    let uncached: Vec<&TaskSpec> = tasks
        .iter()
        .filter(|t| !t.cache && succeeded.contains(t.id.as_str()))
        .collect();
    if !uncached.is_empty() && !args.stream_output {
        print_outputs(
            channel,
            &submitted.run_id,
            submitted.submission_id,
            &uncached,
            &outcome.tasks,
        )
        .await;
    }

    // 4. The replay.
    let distributed_code = if outcome.success { 0 } else { 1 };
    if args.no_replay {
        return Ok(distributed_code);
    }
    let all_replayable = outcome.success && tasks.iter().all(|t| t.cache);
    let invocations: Vec<Vec<String>> = if all_replayable {
        vec![args.nx_args.clone()]
    } else {
        replay_invocations(
            tasks
                .iter()
                .filter(|t| t.cache && succeeded.contains(t.id.as_str())),
        )
    };
    let mut replay_code = 0;
    for nx_args in invocations {
        let line = format!("{} {}", args.nx, nx_args.join(" "));
        eprintln!("drover: replaying on the main job from the remote cache: {line}");
        let mut cmd = tokio::process::Command::new(&nx[0]);
        cmd.args(&nx[1..])
            .args(&nx_args)
            .stdin(std::process::Stdio::null());
        if let Some((server, token)) = &cache {
            cmd.env("NX_SELF_HOSTED_REMOTE_CACHE_SERVER", server)
                .env("NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN", token);
        }
        let status = cmd
            .status()
            .await
            .map_err(|e| CliError::Io(format!("cannot run `{line}`: {e}")))?;
        if !status.success() && replay_code == 0 {
            replay_code = exit_code(status);
        }
    }
    Ok(if distributed_code != 0 {
        distributed_code
    } else {
        replay_code
    })
}

/// The cache the replay reads from, from the flags or the environment. Without one Nx would
/// run every task again here, so that is an error unless the replay is off.
fn replay_cache(args: &NxArgs) -> Result<Option<(String, String)>, CliError> {
    let env = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
    };
    let server = args
        .cache_server
        .clone()
        .or_else(|| env(&["NX_SELF_HOSTED_REMOTE_CACHE_SERVER", "DROVER_CACHE_URL"]));
    let token = args.cache_token.clone().or_else(|| {
        env(&[
            "NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN",
            "DROVER_CACHE_READ_TOKEN",
            "DROVER_CACHE_TOKEN",
        ])
    });
    match (server, token) {
        (Some(s), Some(t)) => Ok(Some((s.trim_end_matches('/').to_string(), t))),
        _ if args.no_replay => Ok(None),
        (None, _) => Err(CliError::Usage(
            "drover nx replays the Nx command from the coordinator's remote cache: set NX_SELF_HOSTED_REMOTE_CACHE_SERVER (the coordinator's HTTP address) or pass --cache-server, or pass --no-replay".into(),
        )),
        (Some(_), None) => Err(CliError::Usage(
            "no token for the remote cache: set NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN (a read-only token is enough) or pass --cache-token, or pass --no-replay".into(),
        )),
    }
}

/// For each task whose dependencies are all (transitively) cacheable: those dependencies.
/// Nx on the agent can take every one of them from the remote cache, outputs included,
/// instead of running it again.
fn restorable_tasks(graph: &drover_scheduler::TaskGraph) -> BTreeMap<String, Vec<&TaskSpec>> {
    let mut out = BTreeMap::new();
    for (i, task) in graph.tasks.iter().enumerate() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<usize> = graph.deps[i].clone();
        while let Some(d) = stack.pop() {
            if seen.insert(d) {
                stack.extend(graph.deps[d].iter().copied());
            }
        }
        if !seen.is_empty() && seen.iter().all(|&d| graph.tasks[d].cache) {
            out.insert(
                task.id.clone(),
                seen.iter().map(|&d| &graph.tasks[d]).collect(),
            );
        }
    }
    out
}

/// A word for `sh -c`, quoted where it needs to be.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:=,@+%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Fails before anything runs when the replay could not read the cache: the agents' work
/// would not come back, and Nx would quietly run everything again here.
async fn check_cache(server: &str, token: &str) -> Result<(), CliError> {
    let url = format!("{server}/drover/cache/stats");
    let response = reqwest::Client::new()
        .get(&url)
        .bearer_auth(token)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| CliError::Io(format!("cannot reach the remote cache at {server}: {e}")))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    match status.as_u16() {
        401 => Err(CliError::Usage(format!(
            "the remote cache at {server} refused the token (401: {}); check NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN",
            body.trim()
        ))),
        503 => Err(CliError::Usage(format!("{server}: {}", body.trim()))),
        // Another Nx cache server (no Drover endpoints) is fine too.
        _ => Ok(()),
    }
}

fn split_command(text: &str) -> Result<Vec<String>, CliError> {
    let words: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    if words.is_empty() {
        return Err(CliError::Usage("--nx is empty: try `npx nx`".into()));
    }
    Ok(words)
}

fn exit_code(status: std::process::ExitStatus) -> u8 {
    match status.code() {
        Some(0) => 0,
        Some(c) => u8::try_from(c).unwrap_or(1).max(1),
        None => 1,
    }
}

/// The JSON object in Nx's output (anything Nx or npm printed around it is ignored).
fn extract_json(text: &str) -> Option<Value> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    serde_json::from_str(text.get(start..=end)?).ok()
}

/// The value of a flag in Nx's arguments: `--name=V`, `--name V`, `-c V`, `-c=V`; a bare flag
/// gives `"true"`.
fn flag_value(args: &[String], long: &str, short: Option<&str>) -> Option<String> {
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
fn parallelism(args: &[String], nx_json: Option<&Path>) -> u32 {
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

/// nx.json of the workspace this command runs in (here or above).
fn find_nx_json() -> Option<PathBuf> {
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
fn apply_configuration(graph: &mut Value, configuration: &str) {
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
            let deps = match deps {
                Value::Array(list) => Value::Array(
                    list.into_iter()
                        .map(|d| match d {
                            Value::String(s) => Value::String(rename(&s)),
                            other => other,
                        })
                        .collect(),
                ),
                other => other,
            };
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

fn count_continuous(graph: &Value) -> usize {
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

/// `nx run-many` invocations that run exactly `tasks` and nothing else: one per
/// configuration and set of projects, with every target those projects share.
fn replay_invocations<'a>(tasks: impl Iterator<Item = &'a TaskSpec>) -> Vec<Vec<String>> {
    // (configuration, target) -> projects
    let mut by_target: BTreeMap<(Option<String>, String), BTreeSet<String>> = BTreeMap::new();
    for t in tasks {
        by_target
            .entry((t.configuration.clone(), t.target.clone()))
            .or_default()
            .insert(t.project.clone());
    }
    // (configuration, projects) -> targets
    let mut groups: BTreeMap<(Option<String>, Vec<String>), Vec<String>> = BTreeMap::new();
    for ((configuration, target), projects) in by_target {
        groups
            .entry((configuration, projects.into_iter().collect()))
            .or_default()
            .push(target);
    }
    groups
        .into_iter()
        .map(|((configuration, projects), targets)| {
            let mut args = vec![
                "run-many".to_string(),
                format!("--targets={}", targets.join(",")),
                format!("--projects={}", projects.join(",")),
            ];
            if let Some(c) = configuration {
                args.push(format!("--configuration={c}"));
            }
            args.push("--excludeTaskDependencies".to_string());
            args
        })
        .collect()
}

/// Prints the agents' output of tasks no cache can replay, under a header per task.
async fn print_outputs(
    channel: tonic::transport::Channel,
    run_id: &str,
    submission: u64,
    tasks: &[&TaskSpec],
    summaries: &[pb::TaskSummary],
) {
    let wanted: HashMap<&str, u32> = tasks
        .iter()
        .map(|t| {
            let attempt = summaries
                .iter()
                .find(|s| s.task_id == t.id)
                .map_or(0, |s| s.attempts);
            (t.id.as_str(), attempt)
        })
        .collect();
    let mut client = RunServiceClient::new(channel);
    let request = pb::WatchRunRequest {
        run_id: run_id.to_string(),
        submission_id: submission,
        from_seq: 1,
        all_output: true,
        ci_execution_id: String::new(),
    };
    let mut output: HashMap<String, Vec<u8>> = HashMap::new();
    let collect = async {
        let mut stream = client.watch_run(request).await?.into_inner();
        while let Some(event) = stream.message().await? {
            match event.event {
                Some(pb::run_event::Event::TaskOutput(o)) => {
                    if let Some(&attempt) = wanted.get(o.task_id.as_str())
                        && (attempt == 0 || o.attempt == attempt)
                    {
                        output.entry(o.task_id).or_default().extend(o.data);
                    }
                }
                Some(pb::run_event::Event::SubmissionDone(_)) => break,
                _ => {}
            }
        }
        Ok::<(), tonic::Status>(())
    };
    match tokio::time::timeout(Duration::from_secs(30), collect).await {
        Ok(Ok(())) => {}
        Ok(Err(status)) => {
            eprintln!(
                "drover: could not fetch the output of non-cacheable tasks: {}",
                status.message()
            );
        }
        Err(_) => eprintln!("drover: gave up fetching the output of non-cacheable tasks"),
    }
    use std::io::Write as _;
    let mut out = std::io::stdout();
    for t in tasks {
        let agent = summaries
            .iter()
            .find(|s| s.task_id == t.id)
            .map_or("", |s| s.agent.as_str());
        let _ = writeln!(
            out,
            "\n> {} (not cacheable: its output as it ran on {agent})\n",
            t.id
        );
        if let Some(bytes) = output.get(&t.id) {
            let _ = out.write_all(bytes);
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let got = replay_invocations(tasks.iter());
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
    }

    #[test]
    fn dependency_outputs_are_restored_only_where_every_dependency_is_cacheable() {
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
        let got: Vec<(String, Vec<&str>)> = restorable_tasks(&graph)
            .into_iter()
            .map(|(id, deps)| (id, deps.iter().map(|d| d.id.as_str()).collect()))
            .collect();
        assert_eq!(
            got,
            [
                ("app:build".to_string(), vec!["util:build"]),
                ("app:e2e".to_string(), vec!["util:build", "app:build"]),
            ]
        );
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
}
