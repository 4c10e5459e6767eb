//! The commit thread: writes what the scheduling thread sealed, then carries out what waited
//! for it (replies, stops), in the order the batches were made.
//!
//! The scheduling thread never waits for the disk: it seals a batch (rows encoded), hands it
//! here with what must not go out before it is stored, and takes the next commands. A client
//! gets its answer only after the transaction that holds it is flushed; watchers get their
//! events when the scheduling thread hears that the batch is durable (see
//! [`Writer::durable`]). Batches that queue up
//! while the disk is busy go out in one transaction (one flush for all of them), and when
//! [`DEPTH`] of them wait the scheduling thread waits too, so memory stays bounded however
//! slow the disk.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use drover_proto::v1 as pb;
use drover_scheduler::state::{AgentId, Reply};
use tokio::sync::watch;

use super::AgentTx;
use super::handle::ReplyTx;
use crate::error::CoordError;
use crate::metrics::Metrics;
use crate::persist::Sealed;

/// Batches that may wait for the disk before the scheduling thread waits as well.
const DEPTH: usize = 8;
/// How long a commit waits for more batches to share its flush. Nothing on the scheduling
/// path waits for it (leases go at once); replies and watchers hear this much later at most,
/// and a coordinator running few tasks at a time flushes a few hundred times a second instead
/// of once per task.
const LINGER: Duration = Duration::from_millis(2);

/// One batch of the scheduling thread: its rows, then what waits for them.
pub(super) struct Job {
    pub seq: u64,
    pub sealed: Option<Sealed>,
    pub messages: Vec<(AgentId, AgentTx, pb::CoordinatorMessage)>,
    pub replies: Vec<(ReplyTx, Result<Reply, CoordError>)>,
}

pub(super) struct Writer {
    tx: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    durable: watch::Receiver<u64>,
}

impl Writer {
    pub fn start(metrics: Arc<Metrics>) -> Writer {
        let (tx, rx) = sync_channel(DEPTH);
        let (durable_tx, durable) = watch::channel(0);
        let thread = std::thread::Builder::new()
            .name("drover-commit".into())
            .spawn(move || run(rx, metrics, durable_tx))
            .expect("the commit thread starts");
        Writer {
            tx: Some(tx),
            thread: Some(thread),
            durable,
        }
    }

    /// Hands a batch over; waits only when [`DEPTH`] batches are waiting for the disk.
    pub fn submit(&self, job: Job) {
        if let Some(tx) = &self.tx {
            // The thread ends only when the sender is dropped: sending cannot fail before.
            let _ = tx.send(job);
        }
    }

    /// The number of the last batch that is on disk and carried out.
    pub fn durable(&mut self) -> &mut watch::Receiver<u64> {
        &mut self.durable
    }

    /// Writes and carries out every batch handed over, then stops the thread.
    pub fn finish(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Queues a message on an agent's stream.
pub(super) fn deliver(agent: AgentId, tx: &AgentTx, msg: pb::CoordinatorMessage) {
    if let Err(e) = tx.try_send(Box::new(msg)) {
        // A full queue means the agent is not reading; heartbeats heal lost leases.
        tracing::warn!(%agent, error = %e, "could not queue a message for the agent");
    }
}

fn run(rx: Receiver<Job>, metrics: Arc<Metrics>, durable: watch::Sender<u64>) {
    while let Ok(first) = rx.recv() {
        // Whatever comes within the linger (or queued up while the last flush ran) goes into
        // this transaction.
        let until = Instant::now() + LINGER;
        let mut jobs = vec![first];
        while jobs.len() < DEPTH * 4 {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let sealed: Vec<Sealed> = jobs.iter_mut().filter_map(|j| j.sealed.take()).collect();
        if !sealed.is_empty() {
            let started = Instant::now();
            let result = Sealed::write_all(sealed);
            metrics.store_commit(started.elapsed());
            metrics.set_store_writable(result.is_ok());
            if let Err(e) = result {
                tracing::error!(error = %e, "could not store the latest changes; a restart now would lose them");
            }
        }
        let mut last = 0;
        for job in jobs {
            last = job.seq;
            for (agent, tx, msg) in job.messages {
                deliver(agent, &tx, msg);
            }
            for (reply, result) in job.replies {
                let _ = reply.send(result);
            }
        }
        let _ = durable.send(last);
    }
}
