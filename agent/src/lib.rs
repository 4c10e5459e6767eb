//! Drover's agent: holds one stream to the coordinator, runs leased tasks in the local
//! checkout, streams their output and reports their results.
//!
//! ```no_run
//! # async fn example() -> Result<(), drover_agent::AgentError> {
//! use drover_agent::{AgentConfig, Shutdown};
//! let config = AgentConfig {
//!     coordinator: "http://127.0.0.1:50051".into(),
//!     name: "agent-1".into(),
//!     instance_id: AgentConfig::new_instance_id(),
//!     launch_template: "linux-medium".into(),
//!     slots: 4,
//!     ci_execution_id: None,
//!     workdir: ".".into(),
//!     drain_timeout: AgentConfig::DEFAULT_DRAIN_TIMEOUT,
//!     connect_timeout: AgentConfig::DEFAULT_CONNECT_TIMEOUT,
//!     token: None,
//!     tls: Default::default(),
//!     attempt: 0,
//!     workspaces: None,
//! };
//! let shutdown = Shutdown::from_signals().expect("signal handlers");
//! let exit = drover_agent::run(config, shutdown).await?;
//! std::process::exit(exit.exit_code());
//! # }
//! ```
#![forbid(unsafe_code)]

mod agent;
mod backoff;
mod config;
mod connection;
mod contain;
mod error;
mod executor;
#[cfg(test)]
mod fake_coordinator;
mod nx_worker;
mod outbox;
mod session;
mod shutdown;
mod workspace;

pub use agent::{AgentExit, run};
pub use config::AgentConfig;
pub use error::AgentError;
pub use workspace::{Prepare, Prepared, WorkspacesConfig};

/// Whether an environment variable holds one of the long-lived credentials that never reach a
/// task (`DROVER_TOKEN`, the cache's tokens...).
pub fn is_credential(name: &str) -> bool {
    executor::AGENT_SECRETS.contains(&name)
}
pub use shutdown::{Shutdown, ShutdownHandle, ShutdownRequest};
