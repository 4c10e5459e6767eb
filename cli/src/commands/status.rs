//! `drover status [RUN]` and `drover logs TASK [--follow]`: what the web UI shows, in a
//! terminal.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use drover_proto::v1 as pb;
use drover_scheduler::duration::format_duration;
use pb::run_service_client::RunServiceClient;

use super::run::RunRefArgs;
use crate::client::connect;
use crate::error::CliError;

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub run: RunRefArgs,
    /// The run (default: the CI execution's, or the one `start-ci-run` remembered).
    #[arg(value_name = "RUN", id = "run_positional")]
    pub run_id: Option<String>,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    #[command(flatten)]
    pub run: RunRefArgs,
    /// The task, e.g. `app:build`.
    pub task: String,
    /// Keep printing while the task runs, until it ends.
    #[arg(long, short)]
    pub follow: bool,
}

/// `(run_id, ci_execution_id)` of the run a command is about: named, else the CI
/// execution's newest, else the one `start-ci-run` remembered.
fn which_run(run: &RunRefArgs, named: Option<String>) -> Result<(String, String), CliError> {
    match named {
        Some(id) => Ok((id, String::new())),
        None => run.resolve(),
    }
}

pub async fn status(args: StatusArgs) -> Result<u8, CliError> {
    let mut client = RunServiceClient::new(connect(&args.run.coordinator)?);
    let (run_id, ci_execution_id) = which_run(&args.run, args.run_id.clone())?;
    let run = client
        .get_run(pb::GetRunRequest {
            run_id,
            ci_execution_id,
        })
        .await
        .map_err(|s| CliError::rpc("reading the run", s))?
        .into_inner();
    let info = run.run.unwrap_or_default();
    out!(
        "run {} ({}): {}; {} tasks: {} ok, {} failed, {} skipped, {} running",
        info.run_id,
        info.ci_execution_id,
        info.state,
        info.total,
        info.done,
        info.failed,
        info.skipped,
        info.running
    );
    let width = run.tasks.iter().map(|t| t.task_id.len()).max().unwrap_or(4);
    for t in &run.tasks {
        let status = pb::TaskStatus::try_from(t.status)
            .map(|s| {
                s.as_str_name()
                    .trim_start_matches("TASK_STATUS_")
                    .to_lowercase()
            })
            .unwrap_or_default();
        let took = if t.duration_ms > 0 {
            format_duration(Duration::from_millis(t.duration_ms))
        } else {
            String::new()
        };
        out!(
            "  {:width$}  {:9}  {:12}  {:>7}  {}",
            t.task_id,
            status,
            t.agent,
            took,
            t.reason
        );
    }
    Ok(match info.state.as_str() {
        "failed" => 1,
        _ => 0,
    })
}

pub async fn logs(args: LogsArgs) -> Result<u8, CliError> {
    let mut client = RunServiceClient::new(connect(&args.run.coordinator)?);
    let (run_id, ci_execution_id) = which_run(&args.run, None)?;
    let mut from = 0;
    let mut stdout = std::io::stdout();
    loop {
        let log = client
            .get_task_log(pb::GetTaskLogRequest {
                run_id: run_id.clone(),
                task_id: args.task.clone(),
                from,
                ci_execution_id: ci_execution_id.clone(),
                attempt: 0,
            })
            .await
            .map_err(|s| CliError::rpc("reading the task's log", s))?
            .into_inner();
        let _ = stdout.write_all(&log.data);
        let _ = stdout.flush();
        from = log.next.max(from);
        if log.next < log.size && !log.data.is_empty() {
            continue; // more to read now
        }
        let ended = matches!(
            pb::TaskStatus::try_from(log.status),
            Ok(pb::TaskStatus::Succeeded | pb::TaskStatus::Failed | pb::TaskStatus::Skipped)
        );
        if !args.follow || ended {
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
