//! `drover exec --graph FILE`: submit a task graph to the current run and follow it.

use std::path::PathBuf;

use clap::Args;
use drover_proto::v1 as pb;
use drover_scheduler::graph::parse_graph_file;
use pb::run_service_client::RunServiceClient;

use super::run::RunRefArgs;
use crate::client::channel;
use crate::error::CliError;
use crate::follow::{Follow, follow};

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[command(flatten)]
    pub run: RunRefArgs,
    /// The task graph: Drover YAML or JSON, or Nx's `--graph=stdout` JSON.
    #[arg(long)]
    pub graph: PathBuf,
    /// Print every task's output as it comes (default: only the output of failed tasks).
    #[arg(long)]
    pub stream_output: bool,
}

pub async fn run(args: ExecArgs) -> Result<u8, CliError> {
    let shown = args.graph.display().to_string();
    let text = std::fs::read_to_string(&args.graph)
        .map_err(|e| CliError::Usage(format!("cannot read {shown}: {e}")))?;
    let file = parse_graph_file(&shown, &text).map_err(|e| CliError::Input(e.to_string()))?;
    let tasks: Vec<pb::Task> = file
        .graph
        .tasks
        .iter()
        .map(drover_coordinator::task_to_proto)
        .collect();
    let total = tasks.len();
    let (run_id, ci_execution_id) = args.run.resolve()?;
    let channel = channel(&args.run.coordinator.url)?;
    let mut client = RunServiceClient::new(channel.clone());
    let request = pb::SubmitGraphRequest {
        run_id,
        tasks,
        label: format!("exec --graph {shown}"),
        ci_execution_id,
    };
    let submitted = client
        .submit_graph(request)
        .await
        .map_err(|s| CliError::rpc("submitting the graph", s))?
        .into_inner();
    eprintln!(
        "drover: submitted {total} tasks to run {} (submission {})",
        submitted.run_id, submitted.submission_id
    );
    let outcome = follow(
        channel,
        Follow {
            run_id: submitted.run_id,
            submission: submitted.submission_id,
            total,
            stream_output: args.stream_output,
        },
    )
    .await?;
    Ok(if outcome.success { 0 } else { 1 })
}
