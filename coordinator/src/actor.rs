//! The one owner of scheduling state. Services send it [`Command`]s holding scheduler events;
//! it feeds them to the scheduler with the current time, journals what the outcome changed
//! (the store, the run logs, the metrics) and seals a batch for the commit thread. The
//! scheduling loop runs on a thread of its own ([`Actor::spawn`]) and never waits for the disk.
//!
//! What waits for the disk is what someone could rely on: replies to requests and the
//! `Stop` that ends a CI agent go out after the commit thread has written their batch, and
//! watchers get events once it is durable. Leases, welcomes and cancels go to agents at
//! once: a lease lost in a crash costs a re-run of its task, never a result. (Its agent
//! reports it on reconnecting and is told to drop it; the results an agent sent stay
//! unconfirmed until heartbeats follow them, and are sent again. Lease ids and fencing tokens
//! skip ahead on a restart, see [`open`], so one sent before a crash is never issued again.)

mod conns;
mod handle;
mod open;
mod retention;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use drover_proto::v1 as pb;
use drover_scheduler::state::{Action, Event, MessageKind, Reply, RunEvent, Scheduler};
use tokio::sync::mpsc;

use crate::auth::{Auth, LeaseAccess};
use crate::convert;
use crate::error::CoordError;
use crate::metrics::Metrics;
use crate::otel::RunTracer;
use crate::persist::Store;
use crate::runlog::{RunLog, WATCHER_QUEUE};
use crate::store::DurationStore;

pub use conns::AgentTx;
use conns::Conns;
use handle::ReplyTx;
pub use handle::{Command, EarlierOutput, Handle, View, Watch};
pub use retention::Retention;
pub use retention::unix_ms;

pub struct Actor {
    /// Task output, on disk and bounded (see [`crate::logstore`]).
    task_logs: crate::logstore::Logs,
    sched: Scheduler,
    epoch: Instant,
    rx: mpsc::Receiver<Command>,
    store: Store,
    durations: DurationStore,
    logs: HashMap<String, RunLog>,
    conns: Conns,
    metrics: Arc<Metrics>,
    /// What the scheduler decided for agents, sent once it is stored.
    outbox: Vec<Action>,
    /// Answers to requests, sent once what they changed is stored.
    replies: Vec<(ReplyTx, Result<Reply, CoordError>)>,
    /// Writes sealed batches and carries them out.
    writer: writer::Writer,
    /// The number of the next batch handed to the writer.
    next_job: u64,
    /// Results taken in by this batch, acknowledged to their agents once it is stored.
    acks: Vec<(drover_scheduler::state::AgentId, String, u64)>,
    /// Runs whose logs recorded events in this batch.
    recorded: Vec<String>,
    /// Per batch not yet durable: how far each run's log may be published once it is.
    unpublished: VecDeque<(u64, Vec<(String, usize)>)>,
    retention: Retention,
    /// Issues each lease's credential and voids it when the lease ends.
    auth: Arc<Auth>,
    /// The remote cache's URL as tasks reach it.
    cache_url: String,
    /// Traces of runs, when an OTLP endpoint is configured.
    tracer: Option<RunTracer>,
    /// The coordinator's launch templates, for daemon agents (in their Welcome).
    launch_templates: String,
}

/// Commands handled before one commit at most (group commit).
const MAX_BATCH: usize = 512;

impl Actor {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Runs the scheduling loop on a thread of its own (with its own single-threaded
    /// runtime, for its timers), so that it never waits behind the connections' tasks.
    /// Resolves when the loop has ended and everything it handed out is on disk.
    pub fn spawn(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> impl std::future::Future<Output = ()> {
        let (done_tx, done) = tokio::sync::oneshot::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("drover-scheduler".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(self.run(shutdown)),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the scheduling thread's runtime")
                    }
                }
                let _ = done_tx.send(());
            });
        if let Err(e) = &spawned {
            tracing::error!(error = %e, "cannot start the scheduling thread");
        }
        async move {
            let _ = done.await;
        }
    }

    /// Runs until every [`Handle`] is dropped or `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        // The first sweep comes at once: runs that passed the retention while the coordinator
        // was down go now.
        let mut sweep = tokio::time::interval(self.retention.sweep_interval);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let far = Duration::from_secs(365 * 24 * 3600);
        tokio::pin!(shutdown);
        loop {
            let wake = self.epoch + self.sched.next_deadline().unwrap_or(self.now() + far);
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => {
                        self.on(cmd);
                        // Group commit: what queued up meanwhile goes into the same batch.
                        for _ in 0..MAX_BATCH {
                            let Ok(cmd) = self.rx.try_recv() else { break };
                            self.on(cmd);
                        }
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(wake.into()) => {
                    let _ = self.apply(Event::Tick);
                }
                _ = sweep.tick() => self.sweep_ended_runs(),
                changed = self.writer.durable().changed() => {
                    if changed.is_ok() {
                        let durable = *self.writer.durable().borrow_and_update();
                        self.publish(durable);
                    }
                    continue;
                }
                _ = &mut shutdown => break,
            }
            self.commit();
        }
        self.commit();
        self.writer.finish();
        self.publish(u64::MAX);
        self.durations.save(self.sched.estimates());
        if let Some(t) = &self.tracer {
            t.shutdown();
        }
    }

    fn on(&mut self, cmd: Command) {
        // While the store cannot write, nothing new is taken in from main jobs and operators:
        // it could not be acknowledged. (Agents go on: their results wait, unacknowledged.)
        let cmd = match cmd {
            Command::StartRun { reply, .. }
            | Command::Submit { reply, .. }
            | Command::Complete { reply, .. }
            | Command::Cancel { reply, .. }
                if !self.writer.writable() =>
            {
                let _ = reply.send(Err(CoordError::StoreUnavailable(
                    "its store cannot write; see the coordinator's log".into(),
                )));
                return;
            }
            cmd => cmd,
        };
        match cmd {
            Command::StartRun {
                request,
                spec,
                reply,
            } => {
                let unix_ms = unix_ms(SystemTime::now());
                let spec = *spec;
                let result = self.apply(Event::StartRun { spec, unix_ms });
                if let Ok(Reply::RunStarted {
                    run_id,
                    existing: false,
                }) = &result
                {
                    self.logs.entry(run_id.clone()).or_default();
                    if let Some(t) = &mut self.tracer {
                        let at = SystemTime::now();
                        t.run_started(run_id, &request.ci_execution_id, &request.traceparent, at);
                    }
                    let request = convert::run_request_to_proto(&request);
                    self.store.run_started(run_id, &request, unix_ms);
                }
                self.replies.push((reply, result));
            }
            Command::Submit {
                run,
                tasks,
                stored,
                reply,
            } => {
                // Versioned before the tasks that taking it in leases, which sort after it.
                let version = self.store.submission_version();
                let result = self.apply(Event::Submit { run, tasks });
                if let Ok(Reply::Submitted {
                    run_id, submission, ..
                }) = &result
                {
                    self.store.submitted(run_id, *submission, &stored, version);
                    if let Some(t) = &mut self.tracer {
                        t.submitted(run_id, SystemTime::now());
                    }
                }
                self.replies.push((reply, result));
            }
            Command::Complete { run, reply } => {
                let result = self.apply(Event::Complete { run });
                if let Ok(Reply::Completed { run_id }) = &result {
                    self.store.completed(run_id);
                }
                self.replies.push((reply, result));
            }
            Command::Cancel { run, by, reply } => {
                let result = self.apply(Event::Cancel { run, by });
                if let Ok(Reply::Completed { run_id }) = &result {
                    self.store.completed(run_id);
                }
                self.replies.push((reply, result));
            }
            Command::Drain { agent, reply } => {
                let result = self.apply(Event::Drain { agent });
                self.replies.push((reply, result));
            }
            Command::Connect {
                hello,
                conn,
                tx,
                reply,
            } => {
                let name = hello.name.clone();
                let result = self.apply(Event::Hello(hello));
                if let Ok(Reply::Agent(id)) = &result {
                    self.conns.open(*id, conn, tx);
                    if let Some(record) = self.sched.agent_record(*id) {
                        self.store.agent(&record);
                    }
                    tracing::info!(agent = %name.escape_debug(), id = %id, "agent connected");
                    let same = self.sched.connected_named(&name);
                    if same > 1 {
                        tracing::warn!(
                            agent = %name.escape_debug(),
                            connected = same,
                            "agents on different machines are connected under one name: give each its own --name, or their logs, results and the UI mix them up"
                        );
                    }
                }
                self.replies.push((reply, result));
            }
            Command::FromAgent { agent, conn, event } => {
                // Refusals of agent messages are actions, not errors: nothing to answer. A
                // result is acknowledged once the batch that took it in is stored, whatever
                // became of it (a repeat, or under a lease that ended, is acknowledged too:
                // the agent need not send it again).
                if self.conns.is_current(agent, conn) {
                    if let Event::Finished { lease, token, .. } = &event {
                        self.acks.push((agent, lease.to_string(), *token));
                    }
                    let _ = self.apply(event);
                }
            }
            Command::Gone { agent, conn } => {
                if self.conns.is_current(agent, conn) {
                    self.conns.close(agent);
                    tracing::info!(%agent, "agent stream closed");
                    let _ = self.apply(Event::Disconnected { agent });
                }
            }
            Command::Watch {
                run,
                filter,
                from_seq,
                reply,
            } => {
                let result = self.sched.resolve(&run).map_err(CoordError::from);
                let result = result.map(|id| {
                    let (tx, rx) = mpsc::channel(WATCHER_QUEUE);
                    let log = self.logs.entry(id.clone()).or_default();
                    // A watcher streaming output from the start gets what was printed before
                    // it came; the reads are asked now, so that they and the live output
                    // after them neither overlap nor leave a gap.
                    let earlier = if filter.all_output && from_seq <= 1 {
                        log.started(filter)
                            .into_iter()
                            .map(|(task, attempt, finished)| EarlierOutput {
                                first: (!finished).then(|| {
                                    self.task_logs.read_now(
                                        &id,
                                        &task,
                                        Some(attempt),
                                        0,
                                        crate::logstore::MAX_READ,
                                    )
                                }),
                                task,
                                attempt,
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    log.watch(filter, from_seq, tx);
                    handle::Watch {
                        run: id,
                        rx,
                        earlier,
                    }
                });
                let _ = reply.send(result);
            }
            Command::Read(read) => read(&handle::View {
                sched: &self.sched,
                logs: &self.logs,
                now: self.now(),
            }),
        }
    }

    /// One event through the scheduler; its actions are journaled.
    fn apply(&mut self, event: Event) -> Result<Reply, CoordError> {
        let outcome = self.sched.handle(self.now(), event);
        self.journal(outcome.actions);
        outcome.reply.map_err(CoordError::from)
    }

    /// Notes what the actions change: task records and events for the store, events numbered
    /// into their run logs, counters; messages for agents wait in the outbox for the commit.
    fn journal(&mut self, actions: Vec<Action>) {
        self.store.note(&actions);
        for action in actions {
            self.metrics.observe(&action);
            match action {
                Action::Run {
                    run_id,
                    event:
                        RunEvent::TaskOutput {
                            task,
                            submissions,
                            attempt,
                            stream,
                            data,
                        },
                } => {
                    // Output goes to the task's log on disk, and live to the watchers that
                    // stream it; it is not a numbered event of the run.
                    let log = self.logs.entry(run_id.clone()).or_default();
                    if log.streams_output() {
                        let live = RunEvent::TaskOutput {
                            task: task.clone(),
                            submissions,
                            attempt,
                            stream,
                            data: data.clone(),
                        };
                        let (event, submissions) = convert::event_to_proto(live);
                        let event = pb::RunEvent {
                            event: Some(event),
                            at_ms: unix_ms(SystemTime::now()),
                            ..Default::default()
                        };
                        log.live(event, &submissions);
                    }
                    self.task_logs.append(&run_id, &task, attempt, data);
                }
                Action::Run { run_id, event } => {
                    if matches!(event, RunEvent::RunDone { .. }) {
                        self.store.run_ended(&run_id, unix_ms(SystemTime::now()));
                    }
                    if let Some(t) = &mut self.tracer {
                        t.event(&run_id, &event, SystemTime::now());
                    }
                    let (event, submissions) = convert::event_to_proto(event);
                    let event = pb::RunEvent {
                        event: Some(event),
                        at_ms: unix_ms(SystemTime::now()),
                        ..Default::default()
                    };
                    let log = self.logs.entry(run_id.clone()).or_default();
                    let event = log.record(event, submissions.clone());
                    if self.recorded.last() != Some(&run_id) {
                        self.recorded.push(run_id.clone());
                    }
                    self.store.event(&run_id, event, &submissions);
                }
                Action::Released { lease, .. } => self.auth.leases.revoke(lease),
                Action::Refused {
                    agent,
                    message,
                    refused,
                } => match message {
                    MessageKind::Result => tracing::warn!(%agent, %refused, "result refused"),
                    _ => tracing::debug!(%agent, %message, %refused, "message refused"),
                },
                other => self.outbox.push(other),
            }
        }
    }

    /// Seals what changed and hands it to the commit thread with what waits for it (the
    /// replies and stops of this batch, and once it is durable the events it recorded);
    /// sends the other messages to agents now.
    fn commit(&mut self) {
        let sealed = self.store.seal(&self.sched);
        let mut messages = Vec::new();
        let mut now = Vec::new();
        for action in std::mem::take(&mut self.outbox) {
            match action {
                Action::Close { agent, reason } => {
                    // Messages already handed over still go; the stream ends after them.
                    tracing::info!(%agent, %reason, "closing the agent's stream");
                    self.conns.close(agent);
                }
                Action::Stop { agent, ref reason } => {
                    // A stopped CI agent exits: the results it reported must be stored first.
                    tracing::info!(%agent, %reason, "stopping agent");
                    self.message(action, &mut messages);
                }
                other => self.message(other, &mut now),
            }
        }
        for (agent, tx, msg) in now {
            writer::deliver(agent, &tx, msg);
        }
        for (agent, lease_id, fencing_token) in std::mem::take(&mut self.acks) {
            if let Some(tx) = self.conns.sender(agent) {
                let ack = pb::coordinator_message::Msg::Ack(pb::Ack {
                    lease_id,
                    fencing_token,
                });
                messages.push((agent, tx, pb::CoordinatorMessage { msg: Some(ack) }));
            }
        }
        let replies = std::mem::take(&mut self.replies);
        let mut recorded = std::mem::take(&mut self.recorded);
        recorded.sort_unstable();
        recorded.dedup();
        let marks: Vec<(String, usize)> = recorded
            .into_iter()
            .filter_map(|id| {
                let upto = self.logs.get(&id)?.recorded();
                Some((id, upto))
            })
            .collect();
        if sealed.is_some() || !messages.is_empty() || !replies.is_empty() || !marks.is_empty() {
            let seq = self.next_job;
            self.next_job += 1;
            if !marks.is_empty() {
                self.unpublished.push_back((seq, marks));
            }
            self.writer.submit(writer::Job {
                seq,
                sealed,
                messages,
                replies,
            });
        }
        let now = self.now();
        self.durations.save_if_due(self.sched.estimates(), now);
    }

    /// Sends watchers the events of every batch up to `durable` (the commit thread's count).
    fn publish(&mut self, durable: u64) {
        while let Some((seq, _)) = self.unpublished.front() {
            if *seq > durable {
                break;
            }
            let (_, marks) = self.unpublished.pop_front().expect("just seen");
            for (run_id, upto) in marks {
                if let Some(log) = self.logs.get_mut(&run_id) {
                    log.publish_to(upto);
                }
            }
        }
    }

    /// The agent's message for an action, with its stream, for the commit thread to send.
    fn message(
        &self,
        action: Action,
        out: &mut Vec<(
            drover_scheduler::state::AgentId,
            AgentTx,
            pb::CoordinatorMessage,
        )>,
    ) {
        if let Some((agent, mut msg)) = convert::to_agent(action) {
            let Some(tx) = self.conns.sender(agent) else {
                return;
            };
            match &mut msg {
                pb::coordinator_message::Msg::Lease(lease) => self.lease_env(lease),
                pb::coordinator_message::Msg::Welcome(w) => {
                    w.launch_templates.clone_from(&self.launch_templates);
                }
                _ => {}
            }
            out.push((agent, tx, pb::CoordinatorMessage { msg: Some(msg) }));
        }
    }

    /// What every lease carries over the run's and the task's variables: the remote cache and
    /// a credential minted for this lease (never a long-lived token), which writes the cache
    /// in the run's namespace until the lease ends.
    fn lease_env(&self, lease: &mut pb::Lease) {
        let Ok(id) = lease.lease_id.parse() else {
            return;
        };
        let access = LeaseAccess {
            lease: id,
            run_id: lease.run_id.clone(),
            cache_namespace: self
                .sched
                .cache_namespace(&lease.run_id)
                .map(str::to_string),
        };
        let credential = self.auth.leases.issue(lease.fencing_token, access);
        let env = [
            ("NX_SELF_HOSTED_REMOTE_CACHE_SERVER", self.cache_url.clone()),
            (
                "NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN",
                credential.clone(),
            ),
            ("DROVER_LEASE_CREDENTIAL", credential),
        ];
        lease
            .env
            .extend(env.into_iter().map(|(k, v)| (k.to_string(), v)));
    }
}
