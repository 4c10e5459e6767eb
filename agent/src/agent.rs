//! The agent's main loop: connect, serve leases, keep tasks running through a lost
//! connection, reconnect, drain and stop.

use std::fmt;
use std::future::{Future, pending};
use std::time::Duration;

use drover_proto::v1::{AgentMessage, CoordinatorMessage, Hello, Lease, coordinator_message};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until};
use tonic::Streaming;
use tonic::transport::Endpoint;

use crate::backoff::{Backoff, Jitter};
use crate::config::AgentConfig;
use crate::connection::{self, AttemptError, Connection, Opened};
use crate::contain::Containment;
use crate::error::AgentError;
use crate::executor::{ExecContext, KILL_GRACE, PIPE_DRAIN_LIMIT, TaskEvent, TaskResult, TaskSet};
use crate::outbox::OUTPUT_LIMIT;
use crate::session::{LeaseDecision, Session};
use crate::shutdown::{Shutdown, ShutdownRequest};
use crate::workspace;
use drover_scheduler::duration::format_duration;

const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The longest single connection attempt (TCP connect, Hello, Welcome).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that held this long resets the backoff; a flapping one does not.
const STABLE_CONNECTION: Duration = Duration::from_secs(5);
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
const MIN_HEARTBEAT: Duration = Duration::from_millis(50);
const HEARTBEAT_JITTER: f64 = 0.1;
/// The interval a coordinator asked for (0: it did not say).
fn heartbeat_interval(ms: u64) -> Duration {
    match ms {
        0 => DEFAULT_HEARTBEAT,
        ms => Duration::from_millis(ms).max(MIN_HEARTBEAT),
    }
}

/// How long a clean exit waits to hand over the last messages and see the stream closed.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the agent stopped without an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentExit {
    /// The coordinator sent `Stop` (the CI run is over, or the agent is not wanted).
    Stopped { reason: String },
    /// A shutdown request drained the agent: every running task finished.
    Drained,
    /// The drain timeout passed with tasks still running; they were killed (the coordinator
    /// requeues them).
    DrainTimedOut { killed_tasks: usize },
    /// A second shutdown request: running tasks were killed at once.
    Killed { killed_tasks: usize },
}

impl AgentExit {
    /// The process exit code for the CLI: 0 for a stop or a drain, 1 when tasks were killed
    /// by a second shutdown request.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Stopped { .. } | Self::Drained | Self::DrainTimedOut { .. } => 0,
            Self::Killed { .. } => 1,
        }
    }
}

impl fmt::Display for AgentExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stopped { reason } => write!(f, "stopped by the coordinator: {reason}"),
            Self::Drained => f.write_str("drained: every running task finished"),
            Self::DrainTimedOut { killed_tasks } => {
                write!(f, "drain timed out: killed {killed_tasks} running task(s)")
            }
            Self::Killed { killed_tasks } => {
                write!(
                    f,
                    "shut down at once: killed {killed_tasks} running task(s)"
                )
            }
        }
    }
}

/// Runs the agent until the coordinator stops it, a shutdown request drains or kills it, or
/// the coordinator stays unreachable for `config.connect_timeout`. Every task process is
/// killed with its group when this returns, whatever the reason.
pub async fn run(config: AgentConfig, shutdown: Shutdown) -> Result<AgentExit, AgentError> {
    config.validate()?;
    let (url, endpoint) = connection::endpoint(&config.coordinator, &config.tls)?;
    let bearer = drover_proto::Bearer::new(config.token.as_deref())
        .map_err(|e| AgentError::InvalidConfig(format!("--token: {e}")))?;
    Agent::new(config, url, endpoint, bearer, shutdown)
        .run()
        .await
}

struct Agent {
    config: AgentConfig,
    url: String,
    endpoint: Endpoint,
    bearer: drover_proto::Bearer,
    shutdown: Shutdown,
    session: Session,
    tasks: TaskSet,
    jitter: Jitter,
    /// When draining or stopping stops waiting for running tasks.
    deadline: Option<Instant>,
    /// How often to heartbeat: the Welcome's interval, or the coordinator's latest Settings.
    heartbeat_interval: Duration,
}

/// The outcome of waiting for something while the agent goes on working.
enum Waited<T> {
    Done(T),
    Exit(AgentExit),
}

/// How a connection ended.
enum Served {
    Exit(AgentExit),
    Lost(String),
}

impl Agent {
    fn new(
        config: AgentConfig,
        url: String,
        endpoint: Endpoint,
        bearer: drover_proto::Bearer,
        shutdown: Shutdown,
    ) -> Self {
        let containment = Containment::detect();
        tracing::info!("{}", containment.describe());
        let tasks = TaskSet::new(ExecContext {
            workdir: config.workdir.clone(),
            agent_name: config.name.clone(),
            launch_template: config.launch_template.clone(),
            kill_grace: KILL_GRACE,
            pipe_drain_limit: PIPE_DRAIN_LIMIT,
            workspaces: config.workspaces.clone(),
            containment,
            nx_worker: crate::nx_worker::enabled_by_env(),
        });
        Self {
            session: Session::new(config.slots, OUTPUT_LIMIT),
            jitter: Jitter::new(&config.instance_id),
            config,
            url,
            endpoint,
            bearer,
            shutdown,
            tasks,
            deadline: None,
            heartbeat_interval: DEFAULT_HEARTBEAT,
        }
    }

    async fn run(mut self) -> Result<AgentExit, AgentError> {
        let mut backoff = Backoff::new(BACKOFF_INITIAL, BACKOFF_MAX, self.jitter.clone());
        let mut disconnected_since = Instant::now();
        let mut last_error = String::from("no connection attempt finished");
        loop {
            let Some(remaining) = self
                .config
                .connect_timeout
                .checked_sub(disconnected_since.elapsed())
            else {
                return Err(self.unreachable(disconnected_since, last_error));
            };
            let attempt_timeout = remaining.min(ATTEMPT_TIMEOUT);
            let attempt = tokio::time::timeout(
                attempt_timeout,
                connection::open(
                    self.endpoint.clone(),
                    self.url.clone(),
                    self.hello(),
                    self.bearer.clone(),
                ),
            );
            let failure = match self.while_disconnected(attempt).await {
                Waited::Exit(exit) => return Ok(exit),
                Waited::Done(Ok(Ok(Opened::Welcome(connection)))) => {
                    let connected_at = Instant::now();
                    match self.serve(*connection).await? {
                        Served::Exit(exit) => return Ok(exit),
                        Served::Lost(reason) => {
                            self.session.connection_lost();
                            if connected_at.elapsed() >= STABLE_CONNECTION {
                                backoff.reset();
                            }
                            disconnected_since = Instant::now();
                            format!("lost the connection: {reason}")
                        }
                    }
                }
                Waited::Done(Ok(Ok(Opened::Stopped(reason)))) => {
                    tracing::info!(reason, "the coordinator answered Hello with Stop");
                    self.stop(reason);
                    if let Some(exit) = self.exit_now(false) {
                        return Ok(exit);
                    }
                    // Tasks still run: wait for them (up to the drain timeout) and keep
                    // trying to hand over their results, without hammering the coordinator.
                    "the coordinator answered Hello with Stop".to_owned()
                }
                Waited::Done(Ok(Err(AttemptError::Fatal(error)))) => return Err(error),
                Waited::Done(Ok(Err(AttemptError::Transient(reason)))) => reason,
                Waited::Done(Err(_elapsed)) => {
                    format!("no answer within {}", format_duration(attempt_timeout))
                }
            };
            let delay = backoff.next_delay();
            tracing::warn!(
                url = self.url,
                error = failure,
                running = self.session.running(),
                "no connection to the coordinator; retrying in {}",
                format_duration(delay)
            );
            last_error = failure;
            if let Waited::Exit(exit) = self.while_disconnected(sleep(delay)).await {
                return Ok(exit);
            }
        }
    }

    fn unreachable(&self, since: Instant, last_error: String) -> AgentError {
        AgentError::CoordinatorUnreachable {
            url: self.url.clone(),
            waited: since.elapsed(),
            last_error,
        }
    }

    fn hello(&self) -> Hello {
        Hello {
            name: self.config.name.clone(),
            instance_id: self.config.instance_id.clone(),
            launch_template: self.config.launch_template.clone(),
            slots: self.config.slots,
            ci_execution_id: self.config.ci_execution_id.clone().unwrap_or_default(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            held_leases: self.session.held_for_hello(),
            attempt: self.config.attempt,
            repositories: self
                .config
                .workspaces
                .as_ref()
                .map(|w| workspace::repositories(&w.dir))
                .unwrap_or_default(),
        }
    }

    /// Waits for `fut` while running tasks go on: their output is buffered, shutdown
    /// requests are honoured.
    async fn while_disconnected<F: Future>(&mut self, fut: F) -> Waited<F::Output> {
        let mut fut = std::pin::pin!(fut);
        loop {
            if let Some(exit) = self.exit_now(false) {
                return Waited::Exit(exit);
            }
            tokio::select! {
                output = &mut fut => return Waited::Done(output),
                request = self.shutdown.recv() => {
                    if let Some(exit) = self.on_shutdown(request, false) {
                        return Waited::Exit(exit);
                    }
                }
                () = until(self.deadline) => return Waited::Exit(self.on_deadline()),
                event = self.tasks.next_event() => self.on_task_event(event),
            }
        }
    }

    /// Serves one connection until it is lost or the agent exits.
    async fn serve(&mut self, connection: Connection) -> Result<Served, AgentError> {
        let Connection {
            tx,
            mut inbound,
            welcome,
        } = connection;
        // The coordinator's launch templates serve repositories that have none of their own.
        if let Some(ws) = &self.config.workspaces {
            let path = workspace::coordinator_templates_path(&ws.dir);
            let _ = std::fs::create_dir_all(&ws.dir);
            if let Err(e) = std::fs::write(&path, &welcome.launch_templates) {
                tracing::warn!(path = %path.display(), error = %e, "cannot keep the coordinator's launch templates");
            }
        }
        let interval = heartbeat_interval(welcome.heartbeat_interval_ms);
        self.heartbeat_interval = interval;
        tracing::info!(
            url = self.url,
            agent_id = welcome.agent_id,
            heartbeat = %format_duration(interval),
            running = self.session.running(),
            undelivered_results = self.session.undelivered(),
            "connected to the coordinator"
        );
        self.session.connected(welcome.acks_results);
        let mut heartbeat = std::pin::pin!(sleep(self.jitter.spread(interval, HEARTBEAT_JITTER)));
        // (Each heartbeat is spread by up to a tenth either way, so a fleet that connected
        // at once does not heartbeat in step.)
        let exit = loop {
            if let Some(exit) = self.exit_now(true) {
                break exit;
            }
            tokio::select! {
                request = self.shutdown.recv() => {
                    if let Some(exit) = self.on_shutdown(request, true) {
                        // Killed: no goodbye, the coordinator sees the stream drop.
                        return Ok(Served::Exit(exit));
                    }
                }
                () = until(self.deadline) => break self.on_deadline(),
                event = self.tasks.next_event() => self.on_task_event(event),
                message = inbound.message() => match message {
                    Ok(Some(message)) => self.on_message(message),
                    Ok(None) => return Ok(Served::Lost("the coordinator closed the stream".into())),
                    Err(status) => match connection::classify(&self.url, &status) {
                        AttemptError::Fatal(error) => return Err(error),
                        AttemptError::Transient(reason) => return Ok(Served::Lost(reason)),
                    },
                },
                () = &mut heartbeat => {
                    self.session.heartbeat_due();
                    let next = Instant::now() + self.jitter.spread(self.heartbeat_interval, HEARTBEAT_JITTER);
                    heartbeat.as_mut().reset(next);
                }
                permit = tx.reserve(), if self.session.has_message() => match permit {
                    Ok(permit) => {
                        if let Some(message) = self.session.next_message() {
                            permit.send(message);
                        }
                    }
                    Err(_) => return Ok(Served::Lost("the stream to the coordinator closed".into())),
                },
            }
        };
        self.close(tx, inbound).await;
        Ok(Served::Exit(exit))
    }

    /// A clean goodbye: hand over what is queued, end our side of the stream, and give the
    /// coordinator a moment to read it and end its side.
    async fn close(
        &mut self,
        tx: mpsc::Sender<AgentMessage>,
        mut inbound: Streaming<CoordinatorMessage>,
    ) {
        let session = &mut self.session;
        let goodbye = async move {
            while let Some(message) = session.next_message() {
                if tx.send(message).await.is_err() {
                    return;
                }
            }
            drop(tx);
            while let Ok(Some(_ignored)) = inbound.message().await {}
        };
        if tokio::time::timeout(CLOSE_TIMEOUT, goodbye).await.is_err() {
            tracing::debug!(
                "the coordinator did not close the stream within {}",
                format_duration(CLOSE_TIMEOUT)
            );
        }
    }

    fn on_message(&mut self, message: CoordinatorMessage) {
        match message.msg {
            Some(coordinator_message::Msg::Lease(lease)) => self.on_lease(lease),
            Some(coordinator_message::Msg::Cancel(cancel)) => {
                let held = self.session.cancel(&cancel.lease_id);
                let killed = self.tasks.cancel(&cancel.lease_id);
                tracing::info!(
                    lease_id = cancel.lease_id,
                    reason = cancel.reason,
                    held,
                    killed,
                    "lease cancelled"
                );
            }
            Some(coordinator_message::Msg::Stop(stop)) => {
                tracing::info!(
                    reason = stop.reason,
                    running = self.session.running(),
                    "the coordinator asked this agent to stop"
                );
                self.stop(stop.reason);
            }
            Some(coordinator_message::Msg::Welcome(_)) => {
                tracing::warn!("ignoring a second Welcome on the same stream");
            }
            Some(coordinator_message::Msg::Ack(ack)) => {
                self.session.acknowledged(&ack.lease_id, ack.fencing_token);
            }
            Some(coordinator_message::Msg::Settings(settings)) => {
                let interval = heartbeat_interval(settings.heartbeat_interval_ms);
                if interval != self.heartbeat_interval {
                    tracing::debug!(heartbeat = %format_duration(interval), "new heartbeat interval");
                    self.heartbeat_interval = interval;
                }
            }
            None => tracing::warn!(
                "ignoring a message this agent does not understand (is the coordinator newer?)"
            ),
        }
    }

    fn on_lease(&mut self, lease: Lease) {
        let (lease_id, task_id) = (lease.lease_id.clone(), lease.task_id.clone());
        match self.session.on_lease(lease) {
            LeaseDecision::Run(spec) => {
                tracing::info!(
                    lease_id,
                    task_id,
                    attempt = spec.attempt,
                    command = spec.command,
                    "starting task"
                );
                let token = spec.token;
                match self.tasks.start(spec) {
                    Ok(()) => self.session.task_started(&lease_id, token),
                    Err(error) => {
                        tracing::warn!(lease_id, task_id, %error, "could not start task");
                        let error = format!("spawn failed: {error}");
                        self.session
                            .task_finished(TaskResult::not_run(&lease_id, token, error));
                    }
                }
            }
            LeaseDecision::Refused(reason) => {
                tracing::warn!(lease_id, task_id, reason, "refused a lease")
            }
            LeaseDecision::Duplicate => tracing::warn!(
                lease_id,
                task_id,
                "ignoring a lease this agent already holds"
            ),
        }
    }

    fn on_task_event(&mut self, event: TaskEvent) {
        match event {
            TaskEvent::Output {
                lease_id,
                token,
                stream,
                data,
            } => {
                self.session.task_output(&lease_id, token, stream, data);
            }
            TaskEvent::Finished(result) => {
                tracing::info!(
                    lease_id = result.lease_id,
                    exit_code = result.exit_code,
                    duration = %format_duration(result.duration),
                    error = result.error,
                    "task finished"
                );
                self.session.task_finished(result);
            }
        }
    }

    fn on_shutdown(&mut self, request: ShutdownRequest, connected: bool) -> Option<AgentExit> {
        match request {
            ShutdownRequest::Drain => {
                tracing::info!(
                    running = self.session.running(),
                    "draining: taking no new leases, waiting up to {} for running tasks",
                    format_duration(self.config.drain_timeout)
                );
                self.session.drain(connected);
                self.extend_deadline();
                None
            }
            ShutdownRequest::Kill => {
                let killed_tasks = self.tasks.kill_all();
                tracing::warn!(killed_tasks, "shutting down at once: killed running tasks");
                Some(AgentExit::Killed { killed_tasks })
            }
        }
    }

    fn stop(&mut self, reason: String) {
        self.session.stop(reason);
        self.extend_deadline();
    }

    /// Draining and stopping wait at most the drain timeout for running tasks.
    fn extend_deadline(&mut self) {
        let deadline = Instant::now() + self.config.drain_timeout;
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
    }

    /// The drain timeout passed: kill what still runs.
    fn on_deadline(&mut self) -> AgentExit {
        let killed_tasks = self.tasks.kill_all();
        let undelivered = self.session.undelivered();
        tracing::warn!(
            killed_tasks,
            undelivered_results = undelivered,
            "tasks still running after {}; killed them",
            format_duration(self.config.drain_timeout)
        );
        match self.session.stop_reason() {
            Some(reason) => AgentExit::Stopped {
                reason: reason.to_owned(),
            },
            None if killed_tasks > 0 => AgentExit::DrainTimedOut { killed_tasks },
            None => AgentExit::Drained,
        }
    }

    /// Whether the agent is done: stopped or draining, nothing running, and (for a drain
    /// while disconnected) no result left to deliver.
    fn exit_now(&self, connected: bool) -> Option<AgentExit> {
        if self.session.running() > 0 {
            return None;
        }
        if let Some(reason) = self.session.stop_reason() {
            return Some(AgentExit::Stopped {
                reason: reason.to_owned(),
            });
        }
        // Every result acknowledged (stored), or with an older coordinator handed to the
        // stream.
        let delivered = if self.session.acks() {
            self.session.undelivered() == 0
        } else {
            connected || self.session.undelivered() == 0
        };
        (self.session.is_draining() && delivered).then_some(AgentExit::Drained)
    }
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => pending().await,
    }
}

#[cfg(test)]
mod tests;
