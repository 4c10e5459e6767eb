//! `drover`: distributed task execution for CI. One binary for the coordinator, the agents,
//! the CI main job and operators.
#![forbid(unsafe_code)]

/// `println!` that ignores a closed stdout (`drover rules explain | head`) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod ci_env;
mod ci_log;
mod client;
mod commands;
mod error;
mod follow;
mod human;
mod signals;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::{
    agent, bench, cache, ci_workflow, coordinator, demo, exec, loadtest, nx, rules, run, simulate,
    status, token,
};
use error::CliError;

#[derive(Parser, Debug)]
#[command(
    name = "drover",
    version,
    about = "Self-hosted distributed task execution for CI"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the coordinator: keeps runs and task graphs, leases tasks to agents.
    Coordinator(Box<coordinator::CoordinatorArgs>),
    /// Run an agent: pull task leases from the coordinator and run them.
    #[command(alias = "start-agent")]
    Agent(agent::AgentArgs),
    /// Main job: open a CI run (once per pipeline) and remember it for later commands.
    StartCiRun(run::StartArgs),
    /// Main job: submit a task graph to the run and follow it to the end.
    Exec(exec::ExecArgs),
    /// Main job: run an Nx command on the agents, then replay it here from the remote cache,
    /// e.g. `drover nx -- affected -t lint,test,build --parallel=2`.
    Nx(nx::NxArgs),
    /// The coordinator's remote cache: `stats`, `prune`.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Main job: the run has no more work; its CI agents exit when the last task ends.
    #[command(alias = "stop-all-agents")]
    CompleteCiRun(run::RunRefArgs),
    /// Check assignment rules, or explain which rule each task gets.
    #[command(subcommand)]
    Rules(rules::RulesCommand),
    /// A coordinator, three agents and a sample graph in one process.
    Demo(demo::DemoArgs),
    /// How long would this graph take on this fleet? The coordinator's scheduler under a
    /// virtual clock, with simulated agents.
    Simulate(simulate::SimulateArgs),
    /// Benchmarks: `schedule` (policies on public DAG sets), `decision` (one scheduling decision).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Load-test a coordinator on this machine: simulated agents over real gRPC streams, a run
    /// of no-op tasks; tasks/s, ready-to-lease latency, the coordinator's CPU and memory.
    Loadtest(loadtest::LoadtestArgs),
    /// A run and its tasks: status, agent, duration, reason.
    Status(status::StatusArgs),
    /// A task's output; `--follow` keeps printing while it runs.
    Logs(status::LogsArgs),
    /// (Run by daemon agents inside a task's process) prepare a run's workspace, then run the task.
    #[command(hide = true)]
    PrepareWorkspace(agent::PrepareArgs),
    /// Tokens for the coordinator's --auth-file: `new`.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Write a CI pipeline (main job and agent jobs) that runs on Drover
    CiWorkflow(ci_workflow::CiWorkflowArgs),
}

fn main() -> ExitCode {
    // One TLS implementation for every client and server in the process.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let quiet = !matches!(cli.command, Command::Coordinator(_) | Command::Agent(_));
    init_tracing(if quiet { "warn" } else { "info" });
    // An agent (and a client) waits on I/O and child processes: one thread does that with
    // no wake-ups across threads; the coordinator and the load generator use every core.
    let mut builder = match &cli.command {
        Command::Coordinator(_) | Command::Loadtest(_) | Command::Demo(_) => {
            tokio::runtime::Builder::new_multi_thread()
        }
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("drover: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{}", prefixed(&e));
            ExitCode::from(e.exit_code())
        }
    }
}

/// `drover: ` before the message, except for file errors, which start with their place.
fn prefixed(e: &CliError) -> String {
    match e {
        CliError::Input(text) => text.clone(),
        other => format!("drover: {other}"),
    }
}

async fn dispatch(command: Command) -> Result<u8, CliError> {
    match command {
        Command::Coordinator(args) => coordinator::run(*args).await,
        Command::Agent(args) => agent::run(args).await,
        Command::StartCiRun(args) => run::start(args).await,
        Command::Exec(args) => exec::run(args).await,
        Command::Nx(args) => nx::run(args).await,
        Command::Cache(cmd) => cache::run(cmd).await,
        Command::CompleteCiRun(args) => run::complete(args).await,
        Command::Rules(cmd) => rules::run(cmd),
        Command::Demo(args) => demo::run(args).await,
        Command::Simulate(args) => simulate::run(args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Token(cmd) => token::run(cmd),
        Command::PrepareWorkspace(args) => agent::prepare(args),
        Command::CiWorkflow(args) => ci_workflow::run(args),
        Command::Loadtest(args) => loadtest::run(args).await,
        Command::Status(args) => status::status(args).await,
        Command::Logs(args) => status::logs(args).await,
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DROVER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

#[cfg(test)]
mod cli_tests {
    /// clap's own checks of every command's flags (duplicate names, bad defaults), which
    /// otherwise only run when a command is used.
    #[test]
    fn every_command_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
