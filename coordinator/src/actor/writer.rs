//! The commit thread: writes what the scheduling thread sealed, then carries out what waited
//! for it (replies, stops, result acknowledgements), in the order the batches were made.
//!
//! The scheduling thread never waits for the disk: it seals a batch (rows encoded), hands it
//! here with what must not go out before it is stored, and takes the next commands. A client
//! gets its answer, and an agent the acknowledgement of a result, only after the transaction
//! that holds it is flushed; watchers get their events when the scheduling thread hears that
//! the batch is durable (see [`Writer::durable`]). Batches that queue up while the disk is
//! busy go out in one transaction (one flush for all of them).
//!
//! When a write fails (a full disk, an I/O error) nothing of it is acknowledged: the batches
//! wait here and are written again every second (redb's file opened afresh), while
//! [`Writer::writable`] is false so that the scheduling thread accepts nothing new, and
//! `/readyz` says not ready. When a write succeeds again, everything that waited goes out.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use drover_proto::v1 as pb;
use drover_scheduler::state::{AgentId, Reply};
use redb::Database;
use tokio::sync::watch;

use super::AgentTx;
use super::handle::ReplyTx;
use crate::error::CoordError;
use crate::metrics::Metrics;
use crate::persist::Sealed;

/// Batches merged into one transaction at most.
const MAX_MERGED: usize = 256;
/// How long a commit waits for more batches to share its flush. Nothing on the scheduling
/// path waits for it (leases go at once); replies and watchers hear this much later at most,
/// and a coordinator running few tasks at a time flushes a few hundred times a second instead
/// of once per task.
const LINGER: Duration = Duration::from_millis(2);
/// How often a failing store is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// One batch of the scheduling thread: its rows, then what waits for them.
pub(super) struct Job {
    pub seq: u64,
    pub sealed: Option<Sealed>,
    pub messages: Vec<(AgentId, AgentTx, pb::CoordinatorMessage)>,
    pub replies: Vec<(ReplyTx, Result<Reply, CoordError>)>,
}

pub(super) struct Writer {
    tx: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    durable: watch::Receiver<u64>,
    /// False while the store cannot write: the scheduling thread accepts nothing new.
    writable: Arc<AtomicBool>,
}

impl Writer {
    /// Starts the commit thread, which owns the store's file from now on.
    pub fn start(db: Database, path: PathBuf, metrics: Arc<Metrics>) -> Writer {
        let (tx, rx) = channel();
        let (durable_tx, durable) = watch::channel(0);
        let writable = Arc::new(AtomicBool::new(true));
        let thread = {
            let writable = writable.clone();
            std::thread::Builder::new()
                .name("drover-commit".into())
                .spawn(move || {
                    Thread {
                        db: Some(db),
                        path,
                        metrics,
                        durable: durable_tx,
                        writable,
                    }
                    .run(rx)
                })
                .expect("the commit thread starts")
        };
        Writer {
            tx: Some(tx),
            thread: Some(thread),
            durable,
            writable,
        }
    }

    /// Hands a batch over.
    pub fn submit(&self, job: Job) {
        if let Some(tx) = &self.tx {
            // The thread ends only when the sender is dropped: sending cannot fail before.
            let _ = tx.send(job);
        }
    }

    /// Whether the store takes writes (false from a failed write until one succeeds).
    pub fn writable(&self) -> bool {
        self.writable.load(Ordering::Relaxed)
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

struct Thread {
    /// `None` after an I/O error until the file opens again.
    db: Option<Database>,
    path: PathBuf,
    metrics: Arc<Metrics>,
    durable: watch::Sender<u64>,
    writable: Arc<AtomicBool>,
}

impl Thread {
    fn run(mut self, rx: Receiver<Job>) {
        let mut pending: Vec<Job> = Vec::new();
        let mut failing: Option<String> = None;
        let mut open = true;
        while open || !pending.is_empty() {
            if pending.is_empty() {
                match rx.recv() {
                    Ok(job) => pending.push(job),
                    Err(_) => break,
                }
            }
            // Whatever comes within the linger (or, while the store fails, until the next
            // try) goes into this transaction.
            let wait = if failing.is_some() { RETRY } else { LINGER };
            let until = Instant::now() + wait;
            while open && pending.len() < MAX_MERGED {
                let left = until.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(job) => pending.push(job),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => open = false,
                }
            }
            match self.write(&pending) {
                Ok(()) => {
                    if failing.take().is_some() {
                        tracing::info!(path = %self.path.display(), "the store writes again; carrying on");
                    }
                    self.writable.store(true, Ordering::Relaxed);
                    self.metrics.set_store_writable(true);
                    self.carry_out(std::mem::take(&mut pending));
                }
                Err(e) => {
                    let e = e.to_string();
                    if failing.is_none() {
                        tracing::error!(
                            path = %self.path.display(),
                            error = %e,
                            "the store cannot write: nothing new is acknowledged until it can (trying again every second; /readyz says not ready)"
                        );
                    }
                    failing = Some(e);
                    self.writable.store(false, Ordering::Relaxed);
                    self.metrics.set_store_writable(false);
                    if !open {
                        tracing::error!(
                            batches = pending.len(),
                            "stopping with changes the store could not write: they were not acknowledged"
                        );
                        return;
                    }
                    // redb must open its file again after an I/O error.
                    self.db = None;
                    match Database::create(&self.path) {
                        Ok(db) => self.db = Some(db),
                        Err(e) => tracing::debug!(error = %e, "the store does not open yet"),
                    }
                }
            }
        }
    }

    fn write(&self, jobs: &[Job]) -> Result<(), String> {
        let sealed: Vec<&Sealed> = jobs.iter().filter_map(|j| j.sealed.as_ref()).collect();
        if sealed.is_empty() {
            return Ok(());
        }
        let Some(db) = &self.db else {
            return Err("the store file is not open".into());
        };
        let started = Instant::now();
        let result = Sealed::write_all(db, sealed);
        self.metrics.store_commit(started.elapsed());
        result.map_err(|e| e.to_string())
    }

    fn carry_out(&self, jobs: Vec<Job>) {
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
        let _ = self.durable.send(last);
    }
}
