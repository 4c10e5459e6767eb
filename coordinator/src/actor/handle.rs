//! How services talk to the actor: [`Command`]s through a [`Handle`].

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use drover_proto::v1 as pb;
use drover_scheduler::TaskSpec;
use drover_scheduler::state::{
    AgentId, Event, Hello, Reply, RunRef, RunRequest, RunSpec, Scheduler,
};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use super::AgentTx;
use crate::error::CoordError;
use crate::runlog::{Filter, RunLog};

pub type WatchRx = mpsc::Receiver<Result<pb::RunEvent, Status>>;

/// A new watcher: its queue, and, when it streams output from the start, the output its
/// tasks printed before it came, to be sent ahead of the queue.
pub struct Watch {
    pub run: String,
    pub rx: WatchRx,
    pub earlier: Vec<EarlierOutput>,
}

/// Output of one attempt printed before a watcher came.
pub struct EarlierOutput {
    pub task: String,
    pub attempt: u32,
    /// A running attempt: its log's first chunk, read when the watcher came (its later output
    /// reaches the watcher live, so the replay stops at that chunk's `size`). A finished
    /// attempt: `None`, its whole log.
    pub first: Option<oneshot::Receiver<crate::logstore::Chunk>>,
}
pub type ReplyTx = oneshot::Sender<Result<Reply, CoordError>>;

/// What services ask of the actor.
pub enum Command {
    /// `drover start-ci-run`: the request as sent (it is stored) and its checked settings.
    StartRun {
        request: Box<RunRequest>,
        spec: Box<RunSpec>,
        reply: ReplyTx,
    },
    Submit {
        run: RunRef,
        tasks: Vec<TaskSpec>,
        /// The tasks as the store keeps them ([`crate::persist::encode_tasks`]).
        stored: Vec<u8>,
        reply: ReplyTx,
    },
    Complete {
        run: RunRef,
        reply: ReplyTx,
    },
    /// An operator's cancel: `by` is the token's name.
    Cancel {
        run: RunRef,
        by: String,
        reply: ReplyTx,
    },
    /// An operator's drain of an agent.
    Drain {
        agent: AgentId,
        reply: ReplyTx,
    },
    /// An agent's stream opened with this Hello; `tx` carries messages to it.
    Connect {
        hello: Hello,
        conn: u64,
        tx: AgentTx,
        reply: ReplyTx,
    },
    /// A message on an agent's stream, as an event.
    FromAgent {
        agent: AgentId,
        conn: u64,
        event: Event,
    },
    /// An agent's stream closed.
    Gone {
        agent: AgentId,
        conn: u64,
    },
    Watch {
        run: RunRef,
        filter: Filter,
        from_seq: u64,
        reply: oneshot::Sender<Result<Watch, CoordError>>,
    },
    /// A read of the scheduler's state (views for operators, gauges for metrics), with the
    /// scheduler's clock.
    Read(Read),
}

/// What a read sees inside the actor: the scheduler, the run logs and the scheduler's clock.
pub struct View<'a> {
    pub sched: &'a Scheduler,
    pub logs: &'a HashMap<String, RunLog>,
    pub now: Duration,
}

/// A send that waits for room in the actor's queue, boxed ([`Handle::send_lean`]).
type Wait<'a> = Pin<Box<dyn Future<Output = Result<(), CoordError>> + Send + 'a>>;

/// A read of the actor's state.
pub type Read = Box<dyn FnOnce(&View<'_>) + Send>;

/// A cheap, cloneable way to talk to the actor.
#[derive(Clone)]
pub struct Handle {
    pub(super) tx: mpsc::Sender<Command>,
    /// Task output, read without the actor.
    pub(super) logs: crate::logstore::Logs,
}

impl Handle {
    /// The task logs (output is written by the actor, read by anyone).
    pub fn logs(&self) -> &crate::logstore::Logs {
        &self.logs
    }

    pub async fn send(&self, cmd: Command) -> Result<(), CoordError> {
        self.tx
            .send(cmd)
            .await
            .map_err(|_| CoordError::ShuttingDown)
    }

    /// [`send`](Self::send) for a long-lived task that sends often and waits in between: the
    /// command goes into the queue at once when there is room (the call, not the await, puts
    /// it there), and only a wait for room (a full queue) is boxed. The caller's future then
    /// holds no command in its own state: an idle agent's reader task is 0.9 KiB, not 1.8.
    pub fn send_lean(&self, cmd: Command) -> impl Future<Output = Result<(), CoordError>> + '_ {
        let wait: Option<Wait<'_>> = match self.tx.try_send(cmd) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(cmd)) => Some(Box::pin(self.send(cmd))),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Some(Box::pin(std::future::ready(Err(CoordError::ShuttingDown))))
            }
        };
        async move {
            match wait {
                None => Ok(()),
                Some(wait) => wait.await,
            }
        }
    }

    /// Sends a command built around a reply channel and waits for the answer.
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, CoordError>>) -> Command,
    ) -> Result<T, CoordError> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply)).await?;
        rx.await.map_err(|_| CoordError::ShuttingDown)?
    }

    /// Reads the scheduler's state inside the actor.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&View<'_>) -> T + Send + 'static,
    ) -> Result<T, CoordError> {
        let (reply, rx) = oneshot::channel();
        let read = move |v: &View<'_>| {
            let _ = reply.send(f(v));
        };
        self.send(Command::Read(Box::new(read))).await?;
        rx.await.map_err(|_| CoordError::ShuttingDown)
    }
}
