//! How a person (or a test) tells the agent to stop: the first request drains, the second
//! kills.

use std::future::pending;
use std::sync::Arc;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

/// What the agent is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShutdownRequest {
    /// Take no new leases, let running tasks finish (up to the drain timeout), then exit.
    Drain,
    /// Kill every running task now and exit.
    Kill,
}

/// The stream of shutdown requests `run` listens to. Requests only escalate: after `Drain`
/// comes `Kill`, after `Kill` nothing.
pub struct Shutdown {
    source: Source,
    level: Option<ShutdownRequest>,
}

enum Source {
    Signals { term: Signal, int: Signal },
    Handle(watch::Receiver<Option<ShutdownRequest>>),
    Never,
}

impl Shutdown {
    /// Listens for SIGTERM and SIGINT: the first one drains, the second one kills.
    /// Must be called inside a tokio runtime.
    pub fn from_signals() -> std::io::Result<Self> {
        Ok(Self::from_source(Source::Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        }))
    }

    /// A shutdown driven by the returned handle (tests, embedding). Dropping every handle
    /// never shuts the agent down.
    pub fn manual() -> (Self, ShutdownHandle) {
        let (tx, rx) = watch::channel(None);
        (
            Self::from_source(Source::Handle(rx)),
            ShutdownHandle { tx: Arc::new(tx) },
        )
    }

    /// A shutdown that never comes: the agent runs until it is stopped or fails.
    pub fn never() -> Self {
        Self::from_source(Source::Never)
    }

    fn from_source(source: Source) -> Self {
        Self {
            source,
            level: None,
        }
    }

    /// Waits for the next escalation. Cancel-safe.
    pub(crate) async fn recv(&mut self) -> ShutdownRequest {
        loop {
            let requested = match &mut self.source {
                Source::Signals { term, int } => {
                    let name = tokio::select! {
                        Some(()) = term.recv() => "SIGTERM",
                        Some(()) = int.recv() => "SIGINT",
                        else => pending().await,
                    };
                    let next = match self.level {
                        None => ShutdownRequest::Drain,
                        Some(_) => ShutdownRequest::Kill,
                    };
                    tracing::info!(signal = name, request = ?next, "shutdown signal received");
                    Some(next)
                }
                Source::Handle(rx) => {
                    if rx.changed().await.is_err() {
                        pending::<()>().await;
                    }
                    *rx.borrow_and_update()
                }
                Source::Never => pending().await,
            };
            if requested > self.level {
                self.level = requested;
                if let Some(request) = requested {
                    return request;
                }
            }
        }
    }
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match self.source {
            Source::Signals { .. } => "signals",
            Source::Handle(_) => "handle",
            Source::Never => "never",
        };
        f.debug_struct("Shutdown")
            .field("source", &source)
            .field("level", &self.level)
            .finish()
    }
}

/// Feeds a [`Shutdown`] made by [`Shutdown::manual`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    tx: Arc<watch::Sender<Option<ShutdownRequest>>>,
}

impl ShutdownHandle {
    /// Like a first SIGTERM: stop taking leases and let running tasks finish.
    pub fn drain(&self) {
        self.escalate(ShutdownRequest::Drain);
    }

    /// Like a second SIGTERM: kill running tasks and exit now.
    pub fn kill(&self) {
        self.escalate(ShutdownRequest::Kill);
    }

    fn escalate(&self, request: ShutdownRequest) {
        self.tx.send_if_modified(|level| {
            let raise = *level < Some(request);
            if raise {
                *level = Some(request);
            }
            raise
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn handle_escalates_once_per_level() {
        let (mut shutdown, handle) = Shutdown::manual();
        handle.drain();
        handle.drain();
        assert_eq!(shutdown.recv().await, ShutdownRequest::Drain);
        let quiet = tokio::time::timeout(Duration::from_millis(20), shutdown.recv()).await;
        assert!(quiet.is_err(), "a second drain is not a new request");
        handle.kill();
        assert_eq!(shutdown.recv().await, ShutdownRequest::Kill);
    }

    #[tokio::test]
    async fn kill_before_anything_skips_drain() {
        let (mut shutdown, handle) = Shutdown::manual();
        handle.kill();
        handle.drain();
        assert_eq!(shutdown.recv().await, ShutdownRequest::Kill);
    }

    #[tokio::test]
    async fn dropped_handles_never_shut_down() {
        let (mut shutdown, handle) = Shutdown::manual();
        drop(handle);
        let quiet = tokio::time::timeout(Duration::from_millis(20), shutdown.recv()).await;
        assert!(quiet.is_err());
    }
}

#[cfg(test)]
mod signal_tests {
    use nix::sys::signal::{Signal, raise};

    use super::*;

    #[tokio::test]
    async fn first_signal_drains_second_kills() {
        // Once tokio's handlers are installed they stay for the life of the test process, so
        // raising the signals below cannot kill it.
        let mut shutdown = Shutdown::from_signals().expect("install signal handlers");
        raise(Signal::SIGTERM).expect("raise SIGTERM");
        assert_eq!(shutdown.recv().await, ShutdownRequest::Drain);
        raise(Signal::SIGINT).expect("raise SIGINT");
        assert_eq!(shutdown.recv().await, ShutdownRequest::Kill);
    }
}
