//! The coordinator's errors, mapped to gRPC statuses in one place.

use drover_scheduler::state::SchedError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CoordError {
    #[error(transparent)]
    Sched(#[from] SchedError),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("no run for CI execution `{0}`; start one with `drover start-ci-run`")]
    NoRunForExecution(String),
    #[error("the coordinator is shutting down")]
    ShuttingDown,
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot use data dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("store {path}: {message}")]
    Store { path: String, message: String },
    #[error("server error: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl From<CoordError> for tonic::Status {
    fn from(e: CoordError) -> Self {
        let msg = e.to_string();
        match e {
            CoordError::Sched(SchedError::UnknownRun(_)) | CoordError::NoRunForExecution(_) => {
                tonic::Status::not_found(msg)
            }
            CoordError::Sched(SchedError::RunEnded(_) | SchedError::RunActive(_)) => {
                tonic::Status::failed_precondition(msg)
            }
            CoordError::Sched(_) | CoordError::InvalidArgument(_) => {
                tonic::Status::invalid_argument(msg)
            }
            CoordError::ShuttingDown => tonic::Status::unavailable(msg),
            CoordError::Bind { .. }
            | CoordError::DataDir { .. }
            | CoordError::Store { .. }
            | CoordError::Transport(_) => tonic::Status::internal(msg),
        }
    }
}
