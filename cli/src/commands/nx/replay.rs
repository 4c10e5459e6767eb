//! Bringing the agents' work back to the main job: the remote cache the replay reads, the
//! `nx run-many` invocations that replay exactly the succeeded tasks, and the output of the
//! tasks no cache can replay.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use drover_proto::v1 as pb;
use drover_scheduler::TaskSpec;
use pb::run_service_client::RunServiceClient;

use super::overrides::task_overrides;
use super::{NxArgs, exit_code};
use crate::error::CliError;

/// The cache the replay reads from: the flags, else the environment, else what the coordinator
/// says (its cache URL and a read-only credential for the run). `None` with `--no-replay`.
pub(super) async fn replay_cache(
    args: &NxArgs,
    channel: crate::client::Conn,
    run_id: &str,
    ci_execution_id: &str,
) -> Result<Option<(String, String)>, CliError> {
    if args.no_replay {
        return Ok(None);
    }
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
    if let (Some(s), Some(t)) = (&server, &token) {
        return Ok(Some((s.trim_end_matches('/').to_string(), t.clone())));
    }
    let access = RunServiceClient::new(channel)
        .get_cache_access(pb::GetCacheAccessRequest {
            run_id: run_id.to_string(),
            ci_execution_id: ci_execution_id.to_string(),
        })
        .await
        .map_err(|s| CliError::rpc("asking the coordinator for its remote cache", s))?
        .into_inner();
    // A URL given here wins (the main job may reach the coordinator another way than agents).
    let server = server.unwrap_or(access.url);
    let token = token.unwrap_or(access.read_token);
    Ok(Some((server.trim_end_matches('/').to_string(), token)))
}

/// Fails before anything runs when the replay could not read the cache: the agents' work
/// would not come back, and Nx would quietly run everything again here.
pub(super) async fn check_cache(server: &str, token: &str) -> Result<(), CliError> {
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

/// `nx run-many` invocations that run exactly `tasks` and nothing else: one per
/// configuration, overrides and set of projects, with every target those projects share. Each
/// task gets the overrides it had on its agent (see [`task_overrides`]), so its hash is the same.
pub(super) fn replay_invocations<'a>(
    tasks: impl Iterator<Item = &'a TaskSpec>,
    nx_args: &[String],
) -> Vec<Vec<String>> {
    // (configuration, overrides, target) -> projects
    type Key = (Option<String>, Vec<String>);
    let mut by_target: BTreeMap<(Key, String), BTreeSet<String>> = BTreeMap::new();
    for t in tasks {
        let overrides = task_overrides(nx_args, t).to_vec();
        by_target
            .entry(((t.configuration.clone(), overrides), t.target.clone()))
            .or_default()
            .insert(t.project.clone());
    }
    // (configuration, overrides, projects) -> targets
    let mut groups: BTreeMap<(Key, Vec<String>), Vec<String>> = BTreeMap::new();
    for ((key, target), projects) in by_target {
        groups
            .entry((key, projects.into_iter().collect()))
            .or_default()
            .push(target);
    }
    groups
        .into_iter()
        .map(|(((configuration, overrides), projects), targets)| {
            let mut args = vec![
                "run-many".to_string(),
                format!("--targets={}", targets.join(",")),
                format!("--projects={}", projects.join(",")),
            ];
            if let Some(c) = configuration {
                args.push(format!("--configuration={c}"));
            }
            args.push("--excludeTaskDependencies".to_string());
            if !overrides.is_empty() {
                args.push("--".to_string());
                args.extend(overrides);
            }
            args
        })
        .collect()
}

/// Prints the agents' output of tasks no cache can replay, under a header per task.
pub(super) async fn print_outputs(
    channel: crate::client::Conn,
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
    // Each task's output from its log on the coordinator (the attempt that counted).
    let mut client = RunServiceClient::new(channel);
    let mut output: HashMap<String, Vec<u8>> = HashMap::new();
    for (task, attempt) in &wanted {
        let log = crate::follow::task_log(&mut client, run_id, task, *attempt).await;
        output.insert(task.to_string(), log);
    }
    let _ = submission;
    use std::io::Write as _;
    let mut out = std::io::stdout();
    let ci = crate::ci_log::CiLog::from_env();
    for t in tasks {
        let agent = summaries
            .iter()
            .find(|s| s.task_id == t.id)
            .map_or("", |s| s.agent.as_str());
        let title = format!(
            "{} (not cacheable: its output as it ran on {})",
            t.id,
            crate::follow::printable(agent)
        );
        let empty = Vec::new();
        let _ = ci.write(
            &mut out,
            &crate::ci_log::TaskBlock {
                task: &t.id,
                title: &title,
                body: output.get(&t.id).unwrap_or(&empty),
                failure: None,
                section: crate::ci_log::next_section(),
                now_unix: crate::ci_log::now_unix(),
            },
        );
    }
    let _ = out.flush();
}

/// Replays on the main job from the remote cache: the same Nx command when every task
/// succeeded and is cacheable (all hits; the exit code is Nx's), else `nx run-many` over exactly
/// the succeeded cacheable tasks. Returns the first failing exit code, or 0.
pub(super) async fn replay(
    args: &NxArgs,
    nx: &[String],
    cache: Option<&(String, String)>,
    tasks: &[TaskSpec],
    succeeded: &BTreeSet<&str>,
    all_succeeded: bool,
) -> Result<u8, CliError> {
    let invocations: Vec<Vec<String>> = if all_succeeded && tasks.iter().all(|t| t.cache) {
        vec![args.nx_args.clone()]
    } else {
        replay_invocations(
            tasks
                .iter()
                .filter(|t| t.cache && succeeded.contains(t.id.as_str())),
            &args.nx_args,
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
        if let Some((server, token)) = cache {
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
    Ok(replay_code)
}
