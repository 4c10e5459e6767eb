//! The one owner of scheduling state. gRPC handlers send it [`Command`]s through a channel; it
//! feeds them to the scheduler with the current time, then carries out the scheduler's actions:
//! leases, cancels and stops go to agent streams, run events go to the run logs and watchers.

mod retention;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use drover_proto::v1 as pb;
use drover_scheduler::TaskSpec;
use drover_scheduler::rules::RuleSet;
use drover_scheduler::state::{
    Action, AgentId, Config, Held, Hello, LeaseId, RunSpec, Scheduler, TaskResult,
};
use pb::coordinator_message::Msg as Out;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use crate::convert::{event_to_proto, lease_to_proto, summary_to_proto};
use crate::error::CoordError;
use crate::persist::Store;
use crate::runlog::{Filter, RunLog, WATCHER_QUEUE};
use crate::store::DurationStore;

pub use retention::Retention;
use retention::unix_ms;

pub type AgentTx = mpsc::Sender<Result<pb::CoordinatorMessage, Status>>;
pub type WatchRx = mpsc::Receiver<Result<pb::RunEvent, Status>>;
type Reply<T> = oneshot::Sender<Result<T, CoordError>>;

/// Which run a main-job request is about.
#[derive(Clone, Debug)]
pub enum RunRef {
    Id(String),
    Execution(String),
}

impl RunRef {
    pub fn from_fields(run_id: String, ci_execution_id: String) -> Result<RunRef, CoordError> {
        match (run_id.is_empty(), ci_execution_id.is_empty()) {
            (false, _) => Ok(RunRef::Id(run_id)),
            (true, false) => Ok(RunRef::Execution(ci_execution_id)),
            (true, true) => Err(CoordError::InvalidArgument(
                "name the run: `run_id` or `ci_execution_id`".into(),
            )),
        }
    }
}

pub enum Command {
    StartRun {
        spec: RunSpec,
        /// Kept so the run can be rebuilt after a restart.
        request: Box<pb::StartRunRequest>,
        reply: Reply<(String, bool)>,
    },
    Submit {
        run: RunRef,
        tasks: Vec<TaskSpec>,
        reply: Reply<(String, u64, u32)>,
    },
    Watch {
        run: RunRef,
        filter: Filter,
        from_seq: u64,
        reply: Reply<WatchRx>,
    },
    Complete {
        run: RunRef,
        reply: Reply<()>,
    },
    Hello {
        hello: Hello,
        conn: u64,
        tx: AgentTx,
        reply: Reply<AgentId>,
    },
    FromAgent {
        agent: AgentId,
        conn: u64,
        msg: pb::agent_message::Msg,
    },
    AgentGone {
        agent: AgentId,
        conn: u64,
    },
    ListAgents {
        reply: oneshot::Sender<Vec<pb::AgentInfo>>,
    },
    ListRuns {
        reply: oneshot::Sender<Vec<pb::RunInfo>>,
    },
    GetRun {
        run: RunRef,
        reply: Reply<pb::GetRunResponse>,
    },
    Metrics {
        reply: oneshot::Sender<String>,
    },
}

/// A cheap, cloneable way to talk to the actor.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
}

impl Handle {
    pub async fn send(&self, cmd: Command) -> Result<(), CoordError> {
        self.tx
            .send(cmd)
            .await
            .map_err(|_| CoordError::ShuttingDown)
    }

    /// Sends a command built around a reply channel and waits for the answer.
    pub async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, CoordError> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply)).await?;
        rx.await.map_err(|_| CoordError::ShuttingDown)?
    }

    /// Like [`ask`](Self::ask) for commands that cannot fail.
    pub async fn query<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, CoordError> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply)).await?;
        rx.await.map_err(|_| CoordError::ShuttingDown)
    }
}

struct AgentConn {
    conn: u64,
    tx: AgentTx,
}

pub struct Actor {
    sched: Scheduler,
    epoch: Instant,
    logs: HashMap<String, RunLog>,
    agents: HashMap<AgentId, AgentConn>,
    rx: mpsc::Receiver<Command>,
    durations: DurationStore,
    store: Store,
    /// What the scheduler decided for agents, sent once it is stored.
    outbox: Vec<Action>,
    /// Results that arrived under a lease no longer active (revoked or unknown).
    results_refused: u64,
    retention: Retention,
    /// Runs forgotten by run retention since the process started.
    runs_forgotten: u64,
    next_run: u64,
    tasks_finished: HashMap<&'static str, u64>,
    lease_env: Vec<(String, String)>,
}

/// How often deadlines are checked.
const TICK: Duration = Duration::from_millis(100);
/// Commands handled before one commit at most (group commit).
const MAX_BATCH: usize = 512;

impl Actor {
    pub fn new(
        config: Config,
        data_dir: PathBuf,
        retention: Retention,
    ) -> Result<(Actor, Handle), CoordError> {
        let (tx, rx) = mpsc::channel(1024);
        let (store, loaded) = Store::open(
            &data_dir,
            |req| run_spec(req).map_err(|e| e.to_string()),
            retention.cutoff(SystemTime::now()),
        )?;
        if !loaded.forgotten.is_empty() {
            tracing::info!(
                runs = loaded.forgotten.len(),
                "deleted runs that ended longer ago than the run retention"
            );
        }
        let mut durations = DurationStore::open(data_dir)?;
        let mut sched = Scheduler::new(config);
        sched.set_estimates(durations.load());
        for problem in &loaded.problems {
            tracing::warn!(%problem, "store: a record could not be read");
        }
        let epoch = Instant::now();
        let restored = sched.restore(epoch.elapsed(), loaded.restore);
        for problem in &restored.skipped {
            tracing::warn!(%problem, "restore: left out");
        }
        if restored.runs > 0 {
            tracing::info!(
                runs = restored.runs,
                ended_tasks = restored.tasks_ended,
                leases = restored.leases,
                "restored from the store; leases wait for their agents to reconnect"
            );
        }
        let mut logs: HashMap<String, RunLog> = loaded
            .logs
            .into_iter()
            .map(|(run, events)| (run, RunLog::restore(events)))
            .collect();
        for run in sched.run_summaries() {
            logs.entry(run.id).or_default();
        }
        let mut actor = Actor {
            sched,
            epoch,
            logs,
            agents: HashMap::new(),
            rx,
            durations,
            store,
            outbox: Vec::new(),
            results_refused: 0,
            retention,
            runs_forgotten: loaded.forgotten.len() as u64,
            next_run: loaded.next_run,
            tasks_finished: HashMap::new(),
            lease_env: Vec::new(),
        };
        actor.note_end_times();
        Ok((actor, Handle { tx }))
    }

    /// Variables every lease carries, over the run's and the task's (the remote cache's URL
    /// and token).
    pub fn with_lease_env(mut self, env: impl IntoIterator<Item = (String, String)>) -> Self {
        self.lease_env = env.into_iter().collect();
        self
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Runs until every [`Handle`] is dropped or `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first sweep comes at once: runs that passed the retention while the coordinator
        // was down go now.
        let mut sweep = tokio::time::interval(self.retention.sweep_interval);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => {
                        self.handle(cmd);
                        self.collect();
                        // Group commit: what queued up meanwhile goes into the same transaction.
                        for _ in 0..MAX_BATCH {
                            let Ok(cmd) = self.rx.try_recv() else { break };
                            self.handle(cmd);
                            self.collect();
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    let now = self.now();
                    self.sched.tick(now);
                    self.collect();
                    self.durations.save_if_due(self.sched.estimates(), now);
                }
                _ = sweep.tick() => self.sweep_ended_runs(),
                _ = &mut shutdown => break,
            }
            self.commit();
            self.carry_out();
        }
        self.collect();
        self.commit();
        self.durations.save(self.sched.estimates());
    }

    /// Takes the scheduler's decisions: run events are numbered into their logs now, messages
    /// for agents wait in the outbox until the commit.
    fn collect(&mut self) {
        let actions = self.sched.take_actions();
        self.store.note(&actions);
        for action in actions {
            match action {
                Action::Run { run_id, event } => {
                    match &event {
                        drover_scheduler::RunEvent::TaskFinished(f) if !f.retrying => {
                            *self
                                .tasks_finished
                                .entry(status_label(f.status))
                                .or_default() += 1;
                        }
                        drover_scheduler::RunEvent::RunDone { .. } => {
                            self.store.run_ended(&run_id, unix_ms(SystemTime::now()));
                        }
                        _ => {}
                    }
                    let (event, submissions) = event_to_proto(event);
                    let event = pb::RunEvent {
                        event: Some(event),
                        ..Default::default()
                    };
                    self.record(run_id, event, submissions);
                }
                other => self.outbox.push(other),
            }
        }
    }

    /// Numbers an event into its run's log and notes it for the store.
    fn record(&mut self, run_id: String, event: pb::RunEvent, submissions: Vec<u64>) {
        let log = self.logs.entry(run_id.clone()).or_default();
        let event = log.record(event, submissions.clone());
        self.store.event(&run_id, event, &submissions);
    }

    /// Writes what changed in one transaction, before anyone hears of it.
    fn commit(&mut self) {
        if !self.store.is_dirty() {
            return;
        }
        let (store, sched) = (&mut self.store, &self.sched);
        if let Err(e) = blocking(|| store.commit(sched)) {
            tracing::error!(error = %e, "could not store the latest changes; a restart now would lose them");
        }
    }

    fn handle(&mut self, cmd: Command) {
        let now = self.now();
        match cmd {
            Command::StartRun {
                spec,
                request,
                reply,
            } => {
                let id = self.new_run_id();
                let result = self
                    .sched
                    .start_run(now, id, spec)
                    .map_err(CoordError::from);
                if let Ok((id, existing)) = &result {
                    self.logs.entry(id.clone()).or_default();
                    if !existing {
                        self.store.run_started(id, &request, self.next_run);
                    }
                }
                let _ = reply.send(result);
            }
            Command::Submit { run, tasks, reply } => {
                let result = self.resolve(&run).and_then(|id| {
                    let count = tasks.len() as u32;
                    let stored = tasks.clone();
                    let submission = self.sched.submit(now, &id, tasks)?;
                    self.store.submitted(&id, submission, &stored);
                    Ok((id, submission, count))
                });
                let _ = reply.send(result);
            }
            Command::Watch {
                run,
                filter,
                from_seq,
                reply,
            } => {
                let result = self.resolve(&run).map(|id| {
                    let (tx, rx) = mpsc::channel(WATCHER_QUEUE);
                    self.logs.entry(id).or_default().watch(filter, from_seq, tx);
                    rx
                });
                let _ = reply.send(result);
            }
            Command::Complete { run, reply } => {
                let result = self.resolve(&run).and_then(|id| {
                    self.sched.complete_run(now, &id)?;
                    self.store.completed(&id);
                    Ok(())
                });
                let _ = reply.send(result);
            }
            Command::Hello {
                hello,
                conn,
                tx,
                reply,
            } => {
                let name = hello.name.clone();
                match self.sched.agent_connected(now, hello) {
                    Ok(id) => {
                        let welcome = pb::CoordinatorMessage {
                            msg: Some(Out::Welcome(pb::Welcome {
                                agent_id: id.to_string(),
                                heartbeat_interval_ms: self
                                    .sched
                                    .config()
                                    .heartbeat_interval
                                    .as_millis()
                                    as u64,
                                lease_timeout_ms: self.sched.config().lease_timeout.as_millis()
                                    as u64,
                            })),
                        };
                        // Welcome goes first: the scheduler's actions for this agent follow it.
                        let _ = tx.try_send(Ok(welcome));
                        self.agents.insert(id, AgentConn { conn, tx });
                        if let Some(record) = self.sched.agent_record(id) {
                            self.store.agent(&record);
                        }
                        tracing::info!(agent = %name, %id, "agent connected");
                        let _ = reply.send(Ok(id));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::FromAgent { agent, conn, msg } => {
                if self.agents.get(&agent).is_some_and(|c| c.conn == conn) {
                    self.on_agent_message(now, agent, msg);
                    if self.sched.agent_record(agent).is_none() {
                        // Given up on (silent past the grace period) while its stream stayed
                        // open: close the stream, so the agent reconnects and is known again.
                        self.agents.remove(&agent);
                        tracing::info!(%agent, "closing the stream of an agent given up on");
                    }
                }
            }
            Command::AgentGone { agent, conn } => {
                if self.agents.get(&agent).is_some_and(|c| c.conn == conn) {
                    self.agents.remove(&agent);
                    self.sched.agent_disconnected(now, agent);
                    tracing::info!(%agent, "agent stream closed");
                }
            }
            Command::ListAgents { reply } => {
                let agents = self
                    .sched
                    .agent_views()
                    .into_iter()
                    .map(|a| pb::AgentInfo {
                        agent_id: a.id.to_string(),
                        name: a.name,
                        launch_template: a.template,
                        slots: a.slots,
                        ci_execution_id: a.ci_execution_id.unwrap_or_default(),
                        connected: a.connected,
                        draining: a.draining,
                        running_tasks: a.running,
                    })
                    .collect();
                let _ = reply.send(agents);
            }
            Command::ListRuns { reply } => {
                let runs = self.sched.run_summaries().iter().map(run_info).collect();
                let _ = reply.send(runs);
            }
            Command::GetRun { run, reply } => {
                let result = self.resolve(&run).and_then(|id| {
                    let view = self
                        .sched
                        .run_view(&id)
                        .ok_or(drover_scheduler::state::SchedError::UnknownRun(id))?;
                    Ok(pb::GetRunResponse {
                        run: Some(run_info(&view.summary())),
                        tasks: view.tasks.iter().map(summary_to_proto).collect(),
                    })
                });
                let _ = reply.send(result);
            }
            Command::Metrics { reply } => {
                let _ = reply.send(self.metrics());
            }
        }
    }

    fn on_agent_message(&mut self, now: Duration, agent: AgentId, msg: pb::agent_message::Msg) {
        use pb::agent_message::Msg;
        match msg {
            Msg::Hello(_) => tracing::warn!(%agent, "second Hello on one stream ignored"),
            Msg::Heartbeat(hb) => {
                let held: Vec<Held> = hb
                    .held_leases
                    .iter()
                    .filter_map(|h| {
                        Some(Held {
                            lease: h.lease_id.parse().ok()?,
                            token: h.fencing_token,
                        })
                    })
                    .collect();
                self.sched.heartbeat(now, agent, &held);
            }
            Msg::Started(s) => {
                if let Some(lease) = self.lease_id(agent, &s.lease_id)
                    && let Err(refused) =
                        self.sched.task_started(now, agent, lease, s.fencing_token)
                {
                    self.refuse(agent, lease, &refused.to_string());
                }
            }
            Msg::Output(o) => {
                let Some(lease) = self.lease_id(agent, &o.lease_id) else {
                    return;
                };
                match self.sched.output_target(agent, lease, o.fencing_token) {
                    Ok((run_id, task_id, attempt, submissions)) => {
                        let event = pb::RunEvent {
                            event: Some(pb::run_event::Event::TaskOutput(pb::TaskOutputEvent {
                                task_id,
                                stream: o.stream,
                                data: o.data,
                                attempt,
                            })),
                            ..Default::default()
                        };
                        self.record(run_id, event, submissions);
                    }
                    Err(refused) => self.refuse(agent, lease, &refused.to_string()),
                }
            }
            Msg::Finished(f) => {
                let Some(lease) = self.lease_id(agent, &f.lease_id) else {
                    return;
                };
                let result = TaskResult {
                    exit_code: f.exit_code,
                    duration: Duration::from_millis(f.duration_ms),
                    error: (!f.error.is_empty()).then_some(f.error),
                };
                if let Err(refused) =
                    self.sched
                        .task_finished(now, agent, lease, f.fencing_token, result)
                {
                    self.results_refused += 1;
                    tracing::warn!(%agent, %lease, %refused, "result refused");
                    self.refuse(agent, lease, &refused.to_string());
                }
            }
            Msg::Draining(_) => {
                tracing::info!(%agent, "agent draining");
                self.sched.agent_draining(now, agent);
            }
        }
    }

    fn lease_id(&self, agent: AgentId, text: &str) -> Option<LeaseId> {
        let id = text.parse().ok();
        if id.is_none() {
            tracing::warn!(%agent, lease = text, "malformed lease id from agent");
        }
        id
    }

    /// Tells an agent to drop a lease the coordinator no longer honours.
    fn refuse(&mut self, agent: AgentId, lease: LeaseId, reason: &str) {
        self.send_to(
            agent,
            Out::Cancel(pb::Cancel {
                lease_id: lease.to_string(),
                reason: reason.to_string(),
            }),
        );
    }

    fn send_to(&mut self, agent: AgentId, msg: Out) {
        if let Some(c) = self.agents.get(&agent)
            && let Err(e) = c.tx.try_send(Ok(pb::CoordinatorMessage { msg: Some(msg) }))
        {
            // A full queue means the agent is not reading; heartbeats heal lost leases.
            tracing::warn!(%agent, error = %e, "could not queue a message for the agent");
        }
    }

    /// Carries out what the scheduler decided, now that it is stored: messages to agents, and
    /// the new events of every run log to its watchers.
    fn carry_out(&mut self) {
        for log in self.logs.values_mut() {
            log.publish();
        }
        for action in std::mem::take(&mut self.outbox) {
            match action {
                Action::Lease { agent, grant } => {
                    let mut lease = lease_to_proto(grant);
                    lease.env.extend(self.lease_env.iter().cloned());
                    self.send_to(agent, Out::Lease(lease))
                }
                Action::Cancel {
                    agent,
                    lease,
                    reason,
                } => self.send_to(
                    agent,
                    Out::Cancel(pb::Cancel {
                        lease_id: lease.to_string(),
                        reason,
                    }),
                ),
                Action::Stop { agent, reason } => {
                    tracing::info!(%agent, %reason, "stopping agent");
                    self.send_to(agent, Out::Stop(pb::Stop { reason }));
                }
                Action::Run { .. } => {} // recorded by `collect`
            }
        }
    }

    /// The id of a run the scheduler knows (a forgotten run is unknown).
    fn resolve(&self, run: &RunRef) -> Result<String, CoordError> {
        match run {
            RunRef::Id(id) if self.sched.has_run(id) => Ok(id.clone()),
            RunRef::Id(id) => {
                Err(drover_scheduler::state::SchedError::UnknownRun(id.clone()).into())
            }
            RunRef::Execution(exec) => self
                .sched
                .run_for_execution(exec)
                .map(str::to_string)
                .ok_or_else(|| CoordError::NoRunForExecution(exec.clone())),
        }
    }

    fn new_run_id(&mut self) -> String {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let id = format!("run-{secs:x}-{}", self.next_run);
        self.next_run += 1;
        id
    }

    fn metrics(&self) -> String {
        let agents = self.sched.agent_views();
        let runs = self.sched.run_summaries();
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, value: usize| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            ));
        };
        gauge(
            "drover_agents_connected",
            "Agents with an open stream.",
            agents.iter().filter(|a| a.connected).count(),
        );
        gauge(
            "drover_agent_slots",
            "Slots of connected agents.",
            agents
                .iter()
                .filter(|a| a.connected)
                .map(|a| a.slots as usize)
                .sum(),
        );
        gauge(
            "drover_tasks_running",
            "Tasks running on agents.",
            agents.iter().map(|a| a.running.len()).sum(),
        );
        gauge(
            "drover_runs_active",
            "Runs that have not ended.",
            runs.iter()
                .filter(|r| r.state == "running" || r.state == "stopping")
                .count(),
        );
        gauge(
            "drover_tasks_queued",
            "Tasks waiting for dependencies or a slot.",
            runs.iter().map(|r| r.progress.queued).sum(),
        );
        out.push_str("# HELP drover_tasks_finished_total Tasks that reached a final state.\n# TYPE drover_tasks_finished_total counter\n");
        for status in ["succeeded", "failed", "skipped"] {
            let n = self.tasks_finished.get(status).copied().unwrap_or(0);
            out.push_str(&format!(
                "drover_tasks_finished_total{{status=\"{status}\"}} {n}\n"
            ));
        }
        out.push_str(&format!(
            "# HELP drover_results_refused_total Results refused because their lease was revoked or unknown.\n# TYPE drover_results_refused_total counter\ndrover_results_refused_total {}\n",
            self.results_refused
        ));
        out.push_str(&format!(
            "# HELP drover_runs_forgotten_total Ended runs forgotten because they ended longer ago than the run retention.\n# TYPE drover_runs_forgotten_total counter\ndrover_runs_forgotten_total {}\n",
            self.runs_forgotten
        ));
        out
    }
}

/// Runs a blocking write (a disk flush) without stalling the runtime's other tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

fn status_label(s: drover_scheduler::TaskStatus) -> &'static str {
    match s {
        drover_scheduler::TaskStatus::Succeeded => "succeeded",
        drover_scheduler::TaskStatus::Failed => "failed",
        _ => "skipped",
    }
}

fn run_info(v: &drover_scheduler::state::RunSummary) -> pb::RunInfo {
    pb::RunInfo {
        run_id: v.id.clone(),
        ci_execution_id: v.ci_execution_id.clone(),
        state: v.state.to_string(),
        total: v.progress.total as u32,
        done: v.progress.succeeded as u32,
        failed: v.progress.failed as u32,
        skipped: v.progress.skipped as u32,
        running: v.progress.running as u32,
    }
}

/// Builds a run's spec from the main job's request; an invalid rules file is refused with
/// every error in it.
pub fn run_spec(req: pb::StartRunRequest) -> Result<RunSpec, CoordError> {
    if req.ci_execution_id.trim().is_empty() {
        return Err(CoordError::InvalidArgument(
            "`ci_execution_id` is empty".into(),
        ));
    }
    let rules = if req.assignment_rules.trim().is_empty() {
        RuleSet::default()
    } else {
        let path = if req.assignment_rules_path.is_empty() {
            "assignment-rules.yaml"
        } else {
            &req.assignment_rules_path
        };
        let rules = RuleSet::parse(path, &req.assignment_rules)
            .map_err(|e| CoordError::InvalidArgument(e.to_string()))?;
        // With a fleet named up front (`--distribute-on "2 linux-medium, 1 linux-large"`),
        // every agent type the rules name must be in it.
        let named_fleet = !matches!(req.distribute_on.trim(), "" | "manual");
        if named_fleet
            && let Ok(fleet) = drover_scheduler::fleet::FleetSpec::parse(&req.distribute_on)
        {
            let known: Vec<&str> = fleet.groups.iter().map(|g| g.template.as_str()).collect();
            rules
                .check_agent_types(&known)
                .map_err(|e| CoordError::InvalidArgument(e.to_string()))?;
        }
        rules
    };
    Ok(RunSpec {
        ci_execution_id: req.ci_execution_id,
        execution_env: req.execution_env,
        attempt: req.attempt,
        rules,
        stop_agents_after: req.stop_agents_after,
        env: req.env.into_iter().collect(),
        retries: req.retries,
        stop_on_failure: req.stop_agents_on_failure,
        default_timeout: (req.default_timeout_ms > 0)
            .then(|| Duration::from_millis(req.default_timeout_ms)),
    })
}
