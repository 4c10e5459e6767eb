//! The coordinator's errors, mapped to gRPC statuses in one place.

use drover_scheduler::state::SchedError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CoordError {
    #[error(transparent)]
    Sched(#[from] SchedError),
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
    #[error(
        "store {path} is damaged: {reason}. It was left as it is. To start afresh (the runs in it are lost), move it away: `mv {path} {path}.damaged`; to keep them, put back a backup of the data dir"
    )]
    StoreDamaged { path: String, reason: String },
    #[error(
        "the coordinator cannot store anything right now ({0}); nothing new is accepted until it can. Try again"
    )]
    StoreUnavailable(String),
    #[error("cache: {0}")]
    Cache(#[from] crate::cache::CacheError),
    #[error("{0}")]
    Auth(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot set up gRPC reflection: {0}")]
    Reflection(String),
    #[error("the HTTP server on {addr} failed: {source}")]
    Http {
        addr: String,
        source: std::io::Error,
    },
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl From<CoordError> for tonic::Status {
    fn from(e: CoordError) -> Self {
        use tonic::Status;
        let msg = e.to_string();
        match e {
            CoordError::Sched(s) => match s {
                SchedError::UnknownRun(_) | SchedError::NoRunForExecution(_) => {
                    Status::not_found(msg)
                }
                SchedError::RunEnded(_) | SchedError::RunActive(_) | SchedError::Rerun => {
                    Status::failed_precondition(msg)
                }
                SchedError::UnknownAgent(_) => Status::not_found(msg),
                SchedError::Graph(_)
                | SchedError::Rules(_)
                | SchedError::InvalidRun(_)
                | SchedError::BadAgent { .. } => Status::invalid_argument(msg),
            },
            CoordError::ShuttingDown | CoordError::StoreUnavailable(_) => Status::unavailable(msg),
            CoordError::Bind { .. }
            | CoordError::DataDir { .. }
            | CoordError::Store { .. }
            | CoordError::StoreDamaged { .. }
            | CoordError::Cache(_)
            | CoordError::Auth(_)
            | CoordError::Tls(_)
            | CoordError::Reflection(_)
            | CoordError::Http { .. }
            | CoordError::Transport(_) => Status::internal(msg),
        }
    }
}
