//! The CLI's errors and their exit codes.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CliError {
    /// Bad flags: exit 2.
    #[error("{0}")]
    Usage(String),
    /// Errors in an input file, each already naming its place (`FILE:LINE:COL: ...`): exit 2,
    /// printed as they are.
    #[error("{0}")]
    Input(String),
    /// The coordinator said no.
    #[error("{context}: {message}")]
    Rpc { context: String, message: String },
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Agent(#[from] drover_agent::AgentError),
    #[error(transparent)]
    Coordinator(#[from] drover_coordinator::CoordError),
}

impl CliError {
    pub fn rpc(context: impl Into<String>, status: tonic::Status) -> CliError {
        let message = if status.code() == tonic::Code::Unavailable {
            format!("the coordinator is not reachable ({})", status.message())
        } else {
            status.message().to_string()
        };
        CliError::Rpc {
            context: context.into(),
            message,
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Input(_) => 2,
            _ => 1,
        }
    }
}
