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
    /// How many tasks the agent runs at once.
    #[arg(long, env = "DROVER_AGENT_SLOTS", default_value_t = 1)]
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
