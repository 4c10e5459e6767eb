//! Protocol messages to scheduler values and back.

use std::time::Duration;

use drover_proto::v1 as pb;
use drover_scheduler::TaskSpec;
use drover_scheduler::state::{LeaseGrant, RunEvent, TaskStatus, TaskSummary};
use drover_scheduler::task::split_task_id;

pub fn task_from_proto(t: pb::Task) -> TaskSpec {
    let (project, target, configuration) = split_task_id(&t.id);
    let nonempty = |s: String| (!s.is_empty()).then_some(s);
    TaskSpec {
        project: nonempty(t.project).unwrap_or_else(|| project.to_string()),
        target: nonempty(t.target).unwrap_or_else(|| target.to_string()),
        configuration: nonempty(t.configuration).or_else(|| configuration.map(str::to_string)),
        command: t.command,
        depends_on: t.depends_on,
        cache: t.cache.unwrap_or(true),
        outputs: t.outputs,
        env: t.env.into_iter().collect(),
        timeout: (t.timeout_ms > 0).then(|| Duration::from_millis(t.timeout_ms)),
        estimate: (t.estimate_ms > 0).then(|| Duration::from_millis(t.estimate_ms)),
        parallelism: (t.parallelism > 0).then_some(t.parallelism),
        id: t.id,
    }
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
