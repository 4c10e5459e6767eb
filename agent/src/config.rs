//! What an agent is told when it starts.

use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::error::AgentError;

/// Everything `run` needs; the CLI fills it from flags and environment.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The coordinator's gRPC address, e.g. `http://127.0.0.1:50051` (`http://` is assumed
    /// when no scheme is given).
    pub coordinator: String,
    /// A name a person recognises in logs and the UI (the host or pod name).
    pub name: String,
    /// Unique per agent process: a reconnect with the same name and instance id is the same
    /// agent. [`AgentConfig::new_instance_id`] makes one.
    pub instance_id: String,
    /// The agent type advertised to the scheduler (assignment rules match on it).
    pub launch_template: String,
    /// How many tasks may run at once.
    pub slots: u32,
    /// Set for CI agents: serve only this CI execution's run and exit when it ends.
    pub ci_execution_id: Option<String>,
    /// Where tasks run (the agent's checkout of the repository).
    pub workdir: PathBuf,
    /// How long running tasks may take to finish after the first shutdown signal.
    pub drain_timeout: Duration,
    /// Give up when the coordinator cannot be reached for this long (at start or after a
    /// lost connection); reconnects retry with backoff and jitter until then.
    pub connect_timeout: Duration,
    /// The bearer token the agent connects with (a token with the `agent` scope). Never passed
    /// to tasks.
    pub token: Option<String>,
    /// The CA to trust for `https://` and, for mutual TLS, the agent's certificate.
    pub tls: drover_proto::ClientTls,
    /// A CI agent's run attempt (0 for daemons): an agent of another attempt than its run's
    /// is refused (the pipeline was re-run only in part).
    pub attempt: u32,
    /// A daemon agent's workspaces (`--workspaces-dir`): each run's tasks run in the run's
    /// repository at its commit, after the launch template's init steps.
    pub workspaces: Option<crate::WorkspacesConfig>,
}

impl AgentConfig {
    /// The drain timeout the CLI uses when none is given.
    pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10 * 60);
    /// The connect timeout the CLI uses when none is given.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2 * 60);

    /// A fresh instance id from the process id, the clock and a per-process random key,
    /// e.g. `3f2a-18c2d5e1f0a3b2c4-9e1d2c3b`.
    pub fn new_instance_id() -> String {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let pid = std::process::id();
        let mix = RandomState::new().hash_one((pid, nanos)) as u32;
        format!("{pid:x}-{:x}-{mix:08x}", nanos as u64)
    }

    /// Checks what can be checked before connecting, with messages that name the setting.
    pub(crate) fn validate(&self) -> Result<(), AgentError> {
        let invalid = |message: String| Err(AgentError::InvalidConfig(message));
        if self.name.trim().is_empty() {
            return invalid("the agent name is empty; pass --name or set DROVER_AGENT_NAME".into());
        }
        if self.instance_id.trim().is_empty() {
            return invalid("the instance id is empty".into());
        }
        if self.launch_template.trim().is_empty() {
            return invalid(
                "the launch template is empty; pass --launch-template or set DROVER_AGENT_LAUNCH_TEMPLATE (or NX_AGENT_LAUNCH_TEMPLATE)"
                    .into(),
            );
        }
        if self.slots == 0 {
            return invalid("slots must be at least 1".into());
        }
        if !self.workdir.is_dir() {
            return invalid(format!(
                "the working directory {} does not exist or is not a directory",
                self.workdir.display()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn config() -> AgentConfig {
        AgentConfig {
            coordinator: "http://127.0.0.1:1".into(),
            name: "agent-1".into(),
            instance_id: AgentConfig::new_instance_id(),
            launch_template: "linux-medium".into(),
            slots: 2,
            ci_execution_id: None,
            workdir: std::env::temp_dir(),
            drain_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            token: None,
            tls: drover_proto::ClientTls::default(),
            attempt: 0,
            workspaces: None,
        }
    }

    #[test]
    fn instance_ids_differ() {
        let a = AgentConfig::new_instance_id();
        let b = AgentConfig::new_instance_id();
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("{:x}-", std::process::id())));
    }

    #[test]
    fn validation_names_the_bad_setting() {
        assert!(config().validate().is_ok());
        let err = AgentConfig {
            slots: 0,
            ..config()
        }
        .validate()
        .unwrap_err();
        assert!(
            err.to_string().contains("slots must be at least 1"),
            "{err}"
        );
        let err = AgentConfig {
            workdir: "/no/such/dir".into(),
            ..config()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("/no/such/dir"), "{err}");
    }
}
