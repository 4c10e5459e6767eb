//! The agent's one error type: every way `run` can fail, worded for the person reading it.

use std::time::Duration;

use drover_scheduler::duration::format_duration;

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The coordinator address cannot be used.
    #[error("invalid coordinator address {url:?}: {reason}")]
    InvalidCoordinatorUrl { url: String, reason: String },

    /// A setting is unusable (empty name, zero slots, missing working directory).
    #[error("invalid agent configuration: {0}")]
    InvalidConfig(String),

    /// No connection could be made for the whole connect timeout.
    #[error(
        "could not reach the coordinator at {url} for {} (last error: {last_error}); \
         check that it is running and that the address points at its gRPC port",
        format_duration(*.waited)
    )]
    CoordinatorUnreachable {
        url: String,
        waited: Duration,
        last_error: String,
    },

    /// The coordinator answered, but refused this agent (bad token, unknown CI execution,
    /// incompatible version, not a Drover coordinator...). Retrying would not help.
    #[error("the coordinator at {url} refused this agent ({code}): {message}")]
    Rejected {
        url: String,
        code: String,
        message: String,
    },

    /// The coordinator sent something this agent does not understand.
    #[error(
        "protocol error with the coordinator at {url}: {message} \
         (agent version {}; are the agent and coordinator versions compatible?)",
        env!("CARGO_PKG_VERSION")
    )]
    Protocol { url: String, message: String },
}

/// An error and its sources on one line: `transport error: tcp connect error: Connection
/// refused (os error 111)`.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_message_says_where_and_how_long() {
        let err = AgentError::CoordinatorUnreachable {
            url: "http://coordinator:50051".into(),
            waited: Duration::from_secs(120),
            last_error: "connection refused".into(),
        };
        let text = err.to_string();
        assert!(text.contains("http://coordinator:50051"), "{text}");
        assert!(text.contains("for 2m"), "{text}");
        assert!(text.contains("connection refused"), "{text}");
    }

    #[test]
    fn error_chain_joins_sources() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = std::io::Error::other(ChainError(inner));
        assert_eq!(error_chain(&outer), "outer: refused");
    }

    #[derive(Debug)]
    struct ChainError(std::io::Error);
    impl std::fmt::Display for ChainError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("outer")
        }
    }
    impl std::error::Error for ChainError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
