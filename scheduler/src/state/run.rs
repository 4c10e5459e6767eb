//! One CI run: its tasks, submissions and ready queues. A task moves between phases only
//! through [`Run::mark_ready`], [`Run::take_ready`] and [`Run::end`], which keep the ready
//! count, the count of ended tasks and every submission's remaining count in step.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::ready::{Class, Entry, ReadyQueues};
use super::types::{AgentId, LeaseId, RunSpec, RunState, SkipReason, TaskStatus, TaskSummary};
use crate::task::TaskSpec;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for dependencies.
    Blocked,
    Ready,
    Leased(LeaseId),
    Done(TaskStatus),
}

#[derive(Debug)]
pub(crate) struct TaskState {
    pub spec: TaskSpec,
    pub dependents: Vec<usize>,
    pub unmet: usize,
    phase: Phase,
    pub submissions: Vec<u64>,
    pub class: Class,
    pub rank: u64,
    /// Leases granted so far.
    pub attempts: u32,
    /// Attempts that ended in failure.
    pub failures: u32,
    /// Leases taken back because the agent was lost.
    pub lost: u32,
    /// Agents a retry should avoid where another may run it.
    pub avoid: Vec<AgentId>,
    /// Why it failed or was skipped, in words.
    pub reason: String,
    /// Why it was skipped, when it was.
    pub skipped: Option<SkipReason>,
    pub agent: String,
    pub exit_code: Option<i32>,
    pub duration: Duration,
}

impl TaskState {
    pub fn new(spec: TaskSpec, submission: u64, class: Class, rank: u64) -> TaskState {
        TaskState {
            spec,
            dependents: Vec::new(),
            unmet: 0,
            phase: Phase::Blocked,
            submissions: vec![submission],
            class,
            rank,
            attempts: 0,
            failures: 0,
            lost: 0,
            avoid: Vec::new(),
            reason: String::new(),
            skipped: None,
            agent: String::new(),
            exit_code: None,
            duration: Duration::ZERO,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn status(&self) -> TaskStatus {
        match self.phase {
            Phase::Blocked | Phase::Ready => TaskStatus::Queued,
            Phase::Leased(_) => TaskStatus::Running,
            Phase::Done(s) => s,
        }
    }

    pub fn summary(&self) -> TaskSummary {
        TaskSummary {
            task: self.spec.id.clone(),
            status: self.status(),
            reason: self.reason.clone(),
            agent: self.agent.clone(),
            duration: self.duration,
            attempts: self.attempts,
            flaky: self.status() == TaskStatus::Succeeded && self.failures > 0,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Submission {
    pub id: u64,
    pub tasks: Vec<usize>,
    /// Tasks of this submission that have not ended.
    pub remaining: usize,
    pub done: bool,
}

#[derive(Debug)]
pub(crate) struct Run {
    pub id: String,
    pub spec: RunSpec,
    /// When it was opened, by the wall clock (milliseconds since the Unix epoch).
    pub opened_unix_ms: u64,
    pub tasks: Vec<TaskState>,
    pub index: HashMap<String, usize>,
    pub submissions: Vec<Submission>,
    pub ready: ReadyQueues,
    ready_count: usize,
    terminal: usize,
    failed: usize,
    pub complete_requested: bool,
    /// Set after the first failure of a run that stops on failure: the task that failed.
    pub stopping_after: Option<String>,
    /// `Some(success)` once the run has ended.
    pub ended: Option<bool>,
    /// Why it was stopped from outside (cancelled by an operator, a pipeline re-run only in
    /// part), if it was.
    pub aborted: Option<String>,
    /// Some task of it was ever leased (an agent served it).
    pub leased_any: bool,
    /// Classes already reported as waiting for an agent.
    pub waiting_reported: HashSet<Class>,
}

impl Run {
    pub fn new(id: String, spec: RunSpec, opened_unix_ms: u64) -> Run {
        Run {
            id,
            spec,
            opened_unix_ms,
            tasks: Vec::new(),
            index: HashMap::new(),
            submissions: Vec::new(),
            ready: ReadyQueues::default(),
            ready_count: 0,
            terminal: 0,
            failed: 0,
            complete_requested: false,
            stopping_after: None,
            ended: None,
            aborted: None,
            leased_any: false,
            waiting_reported: HashSet::new(),
        }
    }

    pub fn is_active(&self) -> bool {
        self.ended.is_none()
    }

    pub fn state(&self) -> RunState {
        match self.ended {
            None if self.stopping_after.is_some() => RunState::Stopping,
            None => RunState::Running,
            Some(true) => RunState::Succeeded,
            Some(false) => RunState::Failed,
        }
    }

    /// Why tasks that have not started are skipped, once the run stops after a failure.
    pub fn stopping(&self) -> Option<SkipReason> {
        self.stopping_after
            .clone()
            .map(|failed| SkipReason::RunStopping { failed })
    }

    pub fn ready_count(&self) -> usize {
        self.ready_count
    }

    pub fn failed(&self) -> usize {
        self.failed
    }

    /// Every task has ended.
    pub fn all_ended(&self) -> bool {
        self.terminal == self.tasks.len()
    }

    /// Queues a task (blocked, or back from a failed or lost attempt) for a free slot.
    pub fn mark_ready(&mut self, i: usize, seq: u64) {
        let t = &mut self.tasks[i];
        assert!(
            matches!(t.phase, Phase::Blocked | Phase::Leased(_)),
            "task {} made ready from {:?}",
            t.spec.id,
            t.phase
        );
        t.phase = Phase::Ready;
        let entry = Entry {
            rank: t.rank,
            seq,
            task: i,
        };
        let class = t.class;
        self.ready.push(class, entry);
        self.ready_count += 1;
    }

    /// A ready task was leased.
    pub fn take_ready(&mut self, i: usize, lease: LeaseId) {
        let t = &mut self.tasks[i];
        assert_eq!(
            t.phase,
            Phase::Ready,
            "task {} leased while not ready",
            t.spec.id
        );
        t.phase = Phase::Leased(lease);
        self.ready_count -= 1;
    }

    /// The task reached a final state. Returns whether it was ready (queued for a slot).
    pub fn end(&mut self, i: usize, status: TaskStatus) -> bool {
        assert!(status.is_terminal(), "{status} is not a final status");
        let t = &mut self.tasks[i];
        assert!(!t.status().is_terminal(), "task {} ended twice", t.spec.id);
        let was_ready = t.phase == Phase::Ready;
        t.phase = Phase::Done(status);
        if was_ready {
            self.ready_count -= 1;
        }
        self.terminal += 1;
        if status == TaskStatus::Failed {
            self.failed += 1;
        }
        for &s in &self.tasks[i].submissions {
            if let Some(sub) = self.submissions.iter_mut().find(|x| x.id == s) {
                sub.remaining -= 1;
            }
        }
        was_ready
    }
}
