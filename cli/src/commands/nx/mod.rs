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

use std::collections::BTreeSet;

use clap::Args;
use drover_proto::v1 as pb;
use drover_scheduler::TaskSpec;

use super::run::RunRefArgs;
use crate::client::connect;
use crate::error::CliError;
use crate::follow::{Submit, submit_and_follow};

mod env;
mod graph;
mod overrides;
mod replay;
#[cfg(test)]
mod tests;

pub use env::forwarded_nx_env;
pub(crate) use graph::shell_word;

#[derive(Args, Debug)]
pub struct NxArgs {
    #[command(flatten)]
    pub run: RunRefArgs,
    /// How to invoke Nx, here and on the agents (e.g. `yarn nx`, `pnpm exec nx`). Default:
    /// `node_modules/.bin/nx` when the workspace has it (no npx start-up per task), else
    /// `npx nx`.
    #[arg(long = "nx", env = "DROVER_NX_COMMAND", default_value = "")]
    pub nx: String,
    /// The remote cache for the replay (default: NX_SELF_HOSTED_REMOTE_CACHE_SERVER, else
    /// DROVER_CACHE_URL, else the URL the coordinator gives agents). Agents get theirs from
    /// the coordinator.
    #[arg(long)]
    pub cache_server: Option<String>,
    /// Token for the replay; a read-only one is enough (default:
    /// NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN, else DROVER_CACHE_READ_TOKEN, else
    /// DROVER_CACHE_TOKEN, else a read-only credential for the run from the coordinator).
    #[arg(long, hide_env_values = true)]
    pub cache_token: Option<String>,
    /// Do not replay on the main job: outputs stay on the agents (and in the cache).
    #[arg(long)]
    pub no_replay: bool,
    /// Print every task's output as it comes (default: only failed tasks' output).
    #[arg(long)]
    pub stream_output: bool,
    /// Do not restore a task's dependencies' outputs on its agent first. By default an agent
    /// runs `nx run-many --targets=... --projects=... --excludeTaskDependencies` over the
    /// task's cacheable dependencies, transitive ones included (all cache hits: their outputs
    /// come from the remote cache, whichever agent built them), then the task.
    #[arg(long, env = "DROVER_NX_NO_RESTORE_DEPENDENCY_OUTPUTS")]
    pub no_restore_dependency_outputs: bool,
    /// The default since dependency outputs are restored unless told otherwise; kept so older
    /// pipelines still parse.
    #[arg(long, hide = true)]
    pub restore_dependency_outputs: bool,
    /// The Nx command, e.g. `affected -t lint,test,build --parallel=2`.
    #[arg(last = true, required = true, num_args = 1.., allow_hyphen_values = true)]
    pub nx_args: Vec<String>,
}

pub async fn run(mut args: NxArgs) -> Result<u8, CliError> {
    if args.nx.trim().is_empty() {
        args.nx = default_nx_command(std::path::Path::new(".")).to_string();
    }
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
    let (run_id, ci_execution_id) = args.run.resolve()?;
    let channel = connect(&args.run.coordinator)?;
    let cache = replay::replay_cache(&args, channel.clone(), &run_id, &ci_execution_id).await?;
    if let Some((server, token)) = &cache {
        replay::check_cache(server, token).await?;
    }

    // 1. The task graph, as Nx sees it here, turned into the tasks the agents run.
    let graph = match graph::ask_nx(&nx, &args).await? {
        Ok(graph) => graph,
        Err(nx_exit_code) => return Ok(nx_exit_code),
    };
    let prepared = graph::prepare(&args, graph)?;
    if prepared.tasks.is_empty() {
        eprintln!("drover: Nx has no tasks to run");
        return Ok(0);
    }

    // 2. Submit and follow.
    let total = prepared.tasks.len();
    let submit = Submit {
        run_id,
        ci_execution_id,
        tasks: &prepared.tasks,
        label: format!("nx {}", args.nx_args.join(" ")),
        stream_output: args.stream_output,
    };
    let (submitted, outcome) = submit_and_follow(channel.clone(), submit, |s| {
        eprintln!(
            "drover: submitted {total} Nx tasks to run {} (submission {}); per agent at most {} at once (or its slots, if fewer) where no assignment rule gives a parallelism{}",
            s.run_id,
            s.submission_id,
            prepared.parallel,
            if prepared.continuous > 0 {
                format!(
                    "; {} continuous task(s) run beside the tasks that need them",
                    prepared.continuous
                )
            } else {
                String::new()
            }
        );
    })
    .await?;
    let succeeded: BTreeSet<&str> = outcome
        .tasks
        .iter()
        .filter(|t| t.status == pb::TaskStatus::Succeeded as i32)
        .map(|t| t.task_id.as_str())
        .collect();

    // 3. What no cache can replay: the output of non-cacheable tasks.
    let uncached: Vec<&TaskSpec> = prepared
        .tasks
        .iter()
        .filter(|t| !t.cache && succeeded.contains(t.id.as_str()))
        .collect();
    if !uncached.is_empty() && !args.stream_output {
        replay::print_outputs(
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
    let replay_code = replay::replay(
        &args,
        &nx,
        cache.as_ref(),
        &prepared.tasks,
        &succeeded,
        outcome.success,
    )
    .await?;
    Ok(if distributed_code != 0 {
        distributed_code
    } else {
        replay_code
    })
}

/// The workspace's own Nx binary when it has one (npx costs a Node start-up of its own on
/// every task), else `npx nx`.
pub(super) fn default_nx_command(workspace: &std::path::Path) -> &'static str {
    if workspace.join("node_modules/.bin/nx").is_file() {
        "node_modules/.bin/nx"
    } else {
        "npx nx"
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
