//! `drover exec --graph FILE`: submit a task graph to the current run and follow it.

use std::path::PathBuf;

use clap::Args;
use drover_scheduler::graph::parse_graph_file;

use super::run::RunRefArgs;
use crate::client::connect;
use crate::error::CliError;
use crate::follow::{Submit, submit_and_follow};

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
    let (run_id, ci_execution_id) = args.run.resolve()?;
    let total = file.graph.tasks.len();
    let submit = Submit {
        run_id,
        ci_execution_id,
        tasks: &file.graph.tasks,
        label: format!("exec --graph {shown}"),
        stream_output: args.stream_output,
    };
    let (_, outcome) = submit_and_follow(connect(&args.run.coordinator)?, submit, |s| {
        eprintln!(
            "drover: submitted {total} tasks to run {} (submission {})",
            s.run_id, s.submission_id
        );
    })
    .await?;
    Ok(if outcome.success { 0 } else { 1 })
}
