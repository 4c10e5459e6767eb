//! The service edge: protocol messages to scheduler values and back, in one place. Handlers
//! call these and hold no other knowledge of either side.

use std::time::Duration;

use drover_proto::v1 as pb;
use drover_scheduler::TaskSpec;
use drover_scheduler::state::{
    Action, AgentId, AgentView, Event, Held, Hello, LeaseGrant, OutputStream, RunEvent, RunRequest,
    RunSummary, RunView, TaskResult, TaskStatus, TaskSummary, Welcome,
};
use pb::coordinator_message::Msg as Out;

/// A message from an agent that cannot be an event: the first message must be `Hello`, a
/// lease id must be a number.
#[derive(Debug, thiserror::Error)]
pub enum BadMessage {
    #[error("a second Hello on one stream")]
    SecondHello,
    #[error("malformed lease id `{0}`")]
    LeaseId(String),
}

pub fn hello(h: pb::Hello) -> Hello {
    Hello {
        held: held(&h.held_leases),
        name: h.name,
        instance_id: h.instance_id,
        launch_template: h.launch_template,
        slots: h.slots,
        ci_execution_id: (!h.ci_execution_id.is_empty()).then_some(h.ci_execution_id),
        version: h.version,
        attempt: h.attempt,
        repositories: h.repositories,
    }
}

/// The leases an agent says it holds; one with a malformed id is left out (the agent is
/// then told to drop whatever it runs under it by the heartbeat check).
pub fn held(leases: &[pb::HeldLease]) -> Vec<Held> {
    leases
        .iter()
        .filter_map(|l| {
            Some(Held {
                lease: l.lease_id.parse().ok()?,
                token: l.fencing_token,
            })
        })
        .collect()
}

/// An agent's message (after its `Hello`) as a scheduler event.
pub fn agent_event(agent: AgentId, msg: pb::agent_message::Msg) -> Result<Event, BadMessage> {
    use pb::agent_message::Msg;
    let lease = |id: &str| id.parse().map_err(|_| BadMessage::LeaseId(id.to_string()));
    Ok(match msg {
        Msg::Hello(_) => return Err(BadMessage::SecondHello),
        Msg::Heartbeat(hb) => Event::Heartbeat {
            agent,
            held: held(&hb.held_leases),
        },
        Msg::Started(s) => Event::Started {
            agent,
            lease: lease(&s.lease_id)?,
            token: s.fencing_token,
        },
        Msg::Output(o) => Event::Output {
            agent,
            lease: lease(&o.lease_id)?,
            token: o.fencing_token,
            stream: match pb::OutputStream::try_from(o.stream) {
                Ok(pb::OutputStream::Stderr) => OutputStream::Stderr,
                _ => OutputStream::Stdout,
            },
            data: o.data,
        },
        Msg::Finished(f) => Event::Finished {
            agent,
            lease: lease(&f.lease_id)?,
            token: f.fencing_token,
            result: TaskResult {
                exit_code: f.exit_code,
                duration: Duration::from_millis(f.duration_ms),
                error: (!f.error.is_empty()).then_some(f.error),
            },
        },
        Msg::Draining(_) => Event::Draining { agent },
    })
}

/// What an action tells an agent, if it tells one anything.
pub fn to_agent(action: Action) -> Option<(AgentId, Out)> {
    Some(match action {
        Action::Welcome { agent, welcome } => (agent, Out::Welcome(welcome_to_proto(welcome))),
        Action::Lease { agent, grant } => (agent, Out::Lease(lease_to_proto(grant))),
        Action::Cancel {
            agent,
            lease,
            reason,
        } => (
            agent,
            Out::Cancel(pb::Cancel {
                lease_id: lease.to_string(),
                reason,
            }),
        ),
        Action::Stop { agent, reason } => (agent, Out::Stop(pb::Stop { reason })),
        Action::Heartbeat { agent, interval } => (
            agent,
            Out::Settings(pb::Settings {
                heartbeat_interval_ms: interval.as_millis() as u64,
            }),
        ),
        Action::Close { .. }
        | Action::Released { .. }
        | Action::Refused { .. }
        | Action::Run { .. } => return None,
    })
}

fn welcome_to_proto(w: Welcome) -> pb::Welcome {
    pb::Welcome {
        agent_id: w.agent.to_string(),
        heartbeat_interval_ms: w.heartbeat_interval.as_millis() as u64,
        lease_timeout_ms: w.lease_timeout.as_millis() as u64,
        launch_templates: String::new(),
        acks_results: true,
    }
}

pub fn run_request(req: pb::StartRunRequest) -> RunRequest {
    RunRequest {
        ci_execution_id: req.ci_execution_id,
        execution_env: req.execution_env,
        attempt: req.attempt,
        distribute_on: req.distribute_on,
        rules_text: req.assignment_rules,
        rules_path: req.assignment_rules_path,
        stop_agents_after: req.stop_agents_after,
        env: req.env.into_iter().collect(),
        retries: req.retries,
        stop_on_failure: req.stop_agents_on_failure,
        default_timeout: (req.default_timeout_ms > 0)
            .then(|| Duration::from_millis(req.default_timeout_ms)),
        cache_namespace: (!req.cache_namespace.is_empty()).then_some(req.cache_namespace),
        started_by: req.started_by,
        traceparent: req.traceparent,
        repository: req.repository,
        commit: req.commit,
    }
}

/// The request as the store keeps it (the protocol's encoding).
pub fn run_request_to_proto(req: &RunRequest) -> pb::StartRunRequest {
    pb::StartRunRequest {
        ci_execution_id: req.ci_execution_id.clone(),
        execution_env: req.execution_env.clone(),
        attempt: req.attempt,
        distribute_on: req.distribute_on.clone(),
        assignment_rules: req.rules_text.clone(),
        assignment_rules_path: req.rules_path.clone(),
        stop_agents_after: req.stop_agents_after.clone(),
        env: req.env.clone().into_iter().collect(),
        retries: req.retries,
        stop_agents_on_failure: req.stop_on_failure,
        default_timeout_ms: req.default_timeout.map_or(0, |d| d.as_millis() as u64),
        cache_namespace: req.cache_namespace.clone().unwrap_or_default(),
        started_by: req.started_by.clone(),
        traceparent: req.traceparent.clone(),
        repository: req.repository.clone(),
        commit: req.commit.clone(),
    }
}

/// A submitted task. Fields left empty are filled from the id (see
/// [`TaskSpec::fill_from_id`]).
pub fn task_from_proto(t: pb::Task) -> TaskSpec {
    let nonempty = |s: String| (!s.is_empty()).then_some(s);
    let mut spec = TaskSpec {
        project: t.project,
        target: t.target,
        configuration: nonempty(t.configuration),
        command: t.command,
        depends_on: t.depends_on,
        cache: t.cache.unwrap_or(true),
        outputs: t.outputs,
        env: t.env.into_iter().collect(),
        timeout: (t.timeout_ms > 0).then(|| Duration::from_millis(t.timeout_ms)),
        estimate: (t.estimate_ms > 0).then(|| Duration::from_millis(t.estimate_ms)),
        parallelism: (t.parallelism > 0).then_some(t.parallelism),
        id: t.id,
    };
    spec.fill_from_id();
    spec
}

pub fn task_to_proto(t: &TaskSpec) -> pb::Task {
    pb::Task {
        id: t.id.clone(),
        command: t.command.clone(),
        depends_on: t.depends_on.clone(),
        cache: Some(t.cache),
        outputs: t.outputs.clone(),
        env: t.env.clone().into_iter().collect(),
        timeout_ms: t.timeout.map_or(0, |d| d.as_millis() as u64),
        estimate_ms: t.estimate.map_or(0, |d| d.as_millis() as u64),
        parallelism: t.parallelism.unwrap_or(0),
        project: t.project.clone(),
        target: t.target.clone(),
        configuration: t.configuration.clone().unwrap_or_default(),
    }
}

pub fn status_to_proto(s: TaskStatus) -> pb::TaskStatus {
    match s {
        TaskStatus::Queued => pb::TaskStatus::Queued,
        TaskStatus::Running => pb::TaskStatus::Running,
        TaskStatus::Succeeded => pb::TaskStatus::Succeeded,
        TaskStatus::Failed => pb::TaskStatus::Failed,
        TaskStatus::Skipped => pb::TaskStatus::Skipped,
    }
}

pub fn summary_to_proto(t: &TaskSummary) -> pb::TaskSummary {
    pb::TaskSummary {
        task_id: t.task.clone(),
        status: status_to_proto(t.status) as i32,
        reason: t.reason.clone(),
        agent: t.agent.clone(),
        duration_ms: t.duration.as_millis() as u64,
        attempts: t.attempts,
        flaky: t.flaky,
    }
}

pub fn lease_to_proto(g: LeaseGrant) -> pb::Lease {
    pb::Lease {
        lease_id: g.lease.to_string(),
        fencing_token: g.token,
        run_id: g.run_id,
        task_id: g.task_id,
        command: g.command,
        env: g.env.into_iter().collect(),
        timeout_ms: g.timeout.map_or(0, |d| d.as_millis() as u64),
        attempt: g.attempt,
        repository: g.repository,
        commit: g.commit,
    }
}

pub fn run_info(v: &RunSummary) -> pb::RunInfo {
    pb::RunInfo {
        run_id: v.id.clone(),
        ci_execution_id: v.ci_execution_id.clone(),
        state: v.state.to_string(),
        total: v.progress.total as u32,
        done: v.progress.succeeded as u32,
        failed: v.progress.failed as u32,
        skipped: v.progress.skipped as u32,
        running: v.progress.running as u32,
        started_by: v.started_by.clone(),
        cache_namespace: v.cache_namespace.clone().unwrap_or_default(),
        opened_at_ms: v.opened_unix_ms,
    }
}

pub fn get_run(view: &RunView) -> pb::GetRunResponse {
    pb::GetRunResponse {
        run: Some(run_info(&view.summary())),
        tasks: view.tasks.iter().map(summary_to_proto).collect(),
    }
}

/// An agent for operators; `now` is the scheduler's clock, to say how long ago it was heard.
pub fn agent_info(a: AgentView, now: Duration) -> pb::AgentInfo {
    pb::AgentInfo {
        last_heartbeat_ms_ago: now.saturating_sub(a.last_seen).as_millis() as u64,
        version: a.version,
        agent_id: a.id.to_string(),
        name: a.name,
        launch_template: a.template,
        slots: a.slots,
        ci_execution_id: a.ci_execution_id.unwrap_or_default(),
        connected: a.connected,
        draining: a.draining,
        running_tasks: a.running,
    }
}

/// The protocol event and the submissions it belongs to (empty: the whole run).
pub fn event_to_proto(e: RunEvent) -> (pb::run_event::Event, Vec<u64>) {
    use pb::run_event::Event;
    match e {
        RunEvent::TaskStarted {
            task,
            submissions,
            agent,
            template,
            attempt,
        } => (
            Event::TaskStarted(pb::TaskStartedEvent {
                task_id: task,
                agent,
                launch_template: template,
                attempt,
            }),
            submissions,
        ),
        RunEvent::TaskOutput {
            task,
            submissions,
            attempt,
            stream,
            data,
        } => (
            Event::TaskOutput(pb::TaskOutputEvent {
                task_id: task,
                stream: match stream {
                    OutputStream::Stdout => pb::OutputStream::Stdout,
                    OutputStream::Stderr => pb::OutputStream::Stderr,
                } as i32,
                data,
                attempt,
            }),
            submissions,
        ),
        RunEvent::TaskFinished(f) => (
            Event::TaskFinished(pb::TaskFinishedEvent {
                task_id: f.task,
                status: status_to_proto(f.status) as i32,
                exit_code: f.exit_code.unwrap_or(-1),
                reason: f.reason,
                agent: f.agent,
                duration_ms: f.duration.as_millis() as u64,
                attempt: f.attempt,
                flaky: f.flaky,
                retrying: f.retrying,
            }),
            f.submissions,
        ),
        RunEvent::TaskRequeued {
            task,
            submissions,
            reason,
            attempt,
        } => (
            Event::TaskRequeued(pb::TaskRequeuedEvent {
                task_id: task,
                reason,
                attempt,
            }),
            submissions,
        ),
        RunEvent::Waiting {
            submissions,
            tasks,
            reason,
        } => (
            Event::Waiting(pb::WaitingEvent {
                task_ids: tasks,
                reason,
            }),
            submissions,
        ),
        RunEvent::SubmissionDone {
            submission,
            success,
            tasks,
        } => (
            Event::SubmissionDone(pb::SubmissionDoneEvent {
                success,
                tasks: tasks.iter().map(summary_to_proto).collect(),
            }),
            vec![submission],
        ),
        RunEvent::RunDone { success, reason } => (
            Event::RunDone(pb::RunDoneEvent { success, reason }),
            Vec::new(),
        ),
    }
}
