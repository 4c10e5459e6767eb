//! `drover agent` (alias `start-agent`): pull task leases and run them.

use std::path::PathBuf;

use clap::Args;
use drover_agent::{AgentConfig, AgentExit, Shutdown};

use super::CoordinatorUrl;
use crate::ci_env;
use crate::error::CliError;
use crate::human::Human;

#[derive(Args, Debug)]
pub struct AgentArgs {
    #[command(flatten)]
    pub coordinator: CoordinatorUrl,
    /// The agent type assignment rules refer to.
    #[arg(long, env = "DROVER_AGENT_LAUNCH_TEMPLATE")]
    pub launch_template: Option<String>,
    /// How many tasks the agent runs at once (1 to 1024).
    #[arg(long, env = "DROVER_AGENT_SLOTS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(drover_scheduler::fleet::MAX_SLOTS)))]
    pub slots: u32,
    /// The agent's name in logs and summaries (default: the host name and process id).
    #[arg(long, env = "DROVER_AGENT_NAME")]
    pub name: Option<String>,
    /// Where tasks run (the agent's checkout).
    #[arg(long, env = "DROVER_AGENT_WORKDIR", default_value = ".")]
    pub workdir: PathBuf,
    /// Serve every run (a long-lived agent on a self-hosted runner) instead of the CI execution
    /// named by the environment.
    #[arg(long, env = "DROVER_AGENT_DAEMON")]
    pub daemon: bool,
    /// How long a drained agent (SIGTERM) lets running tasks finish.
    #[arg(long, env = "DROVER_DRAIN_TIMEOUT", default_value_t = Human(AgentConfig::DEFAULT_DRAIN_TIMEOUT))]
    pub drain_timeout: Human,
    /// Give up when the coordinator cannot be reached for this long.
    #[arg(long, env = "DROVER_CONNECT_TIMEOUT", default_value_t = Human(AgentConfig::DEFAULT_CONNECT_TIMEOUT))]
    pub connect_timeout: Human,
    /// Daemon agents: keep a workspace per repository here; each run's tasks run in its
    /// repository at its commit, after the launch template's init steps.
    #[arg(long, env = "DROVER_WORKSPACES_DIR", requires = "daemon")]
    pub workspaces_dir: Option<PathBuf>,
    /// Paths `git clean` keeps in a workspace between runs.
    #[arg(
        long,
        env = "DROVER_WORKSPACE_KEEP",
        value_delimiter = ',',
        default_value = "node_modules"
    )]
    pub keep: Vec<String>,
    /// Launch templates (Nx's .nx/workflows format) for repositories that have none (before
    /// the coordinator's).
    #[arg(long, env = "DROVER_LAUNCH_TEMPLATES")]
    pub launch_templates: Option<PathBuf>,
}

/// `drover prepare-workspace` (run by daemon agents inside a task's process, not by people):
/// prepares the run's workspace, then becomes the task.
#[derive(Args, Debug)]
pub struct PrepareArgs {
    #[arg(long)]
    pub workspaces: PathBuf,
    #[arg(long)]
    pub repository: String,
    #[arg(long)]
    pub commit: String,
    #[arg(long)]
    pub run: String,
    #[arg(long)]
    pub tree: u32,
    #[arg(long)]
    pub launch_template: String,
    #[arg(long)]
    pub fallback_templates: Vec<PathBuf>,
    #[arg(long)]
    pub keep: Vec<String>,
    /// The task's command.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Prepares the workspace and turns into the task (same process, same group); on failure
/// prints why and exits 1, which fails the task with that output.
pub fn prepare(args: PrepareArgs) -> Result<u8, CliError> {
    use std::os::unix::process::CommandExt;
    let prepare = drover_agent::Prepare {
        workspaces: args.workspaces,
        repository: args.repository,
        commit: args.commit,
        run: args.run,
        tree: args.tree,
        launch_template: args.launch_template,
        fallbacks: args.fallback_templates,
        keep: args.keep,
    };
    match prepare.run() {
        Ok(ready) => {
            let (program, rest) = args.command.split_first().expect("clap requires a command");
            let error = std::process::Command::new(program)
                .args(rest)
                .current_dir(&ready.dir)
                .envs(&ready.env)
                .exec();
            Err(CliError::Io(format!(
                "cannot start the task in {}: {error}",
                ready.dir.display()
            )))
        }
        Err(why) => {
            eprintln!("drover: {why}");
            Ok(1)
        }
    }
}

pub async fn run(args: AgentArgs) -> Result<u8, CliError> {
    let launch_template = args
        .launch_template
        .or_else(|| std::env::var("NX_AGENT_LAUNCH_TEMPLATE").ok())
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| {
            CliError::Usage(
                "the agent needs a launch template: --launch-template, DROVER_AGENT_LAUNCH_TEMPLATE or NX_AGENT_LAUNCH_TEMPLATE".into(),
            )
        })?;
    let name = args
        .name
        .or_else(|| std::env::var("NX_AGENT_NAME").ok())
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(default_name);
    if args.slots == 0 {
        return Err(CliError::Usage("--slots must be at least 1".into()));
    }
    let ci_execution_id = if args.daemon {
        None
    } else {
        ci_env::execution_id_from_env().map(|(id, _)| id)
    };
    let config = AgentConfig {
        coordinator: args.coordinator.url.clone(),
        name,
        instance_id: AgentConfig::new_instance_id(),
        launch_template,
        slots: args.slots,
        ci_execution_id,
        workdir: args.workdir,
        workspaces: match (&args.workspaces_dir, args.daemon) {
            (Some(dir), true) => Some(drover_agent::WorkspacesConfig {
                dir: dir.clone(),
                keep: args.keep.clone(),
                launch_templates: args.launch_templates.clone(),
                exe: std::env::current_exe()
                    .map_err(|e| CliError::Io(format!("cannot find the drover binary: {e}")))?,
            }),
            _ => None,
        },
        drain_timeout: args.drain_timeout.0,
        connect_timeout: args.connect_timeout.0,
        attempt: if args.daemon {
            0
        } else {
            ci_env::attempt_from_env()
        },
        token: args.coordinator.token.clone(),
        tls: args.coordinator.tls(),
    };
    let shutdown = Shutdown::from_signals()
        .map_err(|e| CliError::Io(format!("cannot listen for signals: {e}")))?;
    let exit = drover_agent::run(config, shutdown).await?;
    match &exit {
        AgentExit::Stopped { reason } => tracing::info!(%reason, "agent stopped"),
        other => tracing::info!(exit = %other, "agent exited"),
    }
    // 0 when stopped or drained; non-zero when a second signal killed running tasks.
    Ok(u8::try_from(exit.exit_code()).unwrap_or(1))
}

fn default_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "agent".into());
    format!("{host}-{}", std::process::id())
}
