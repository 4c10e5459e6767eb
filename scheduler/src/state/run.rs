//! One CI run: its tasks, submissions and ready queues.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::ready::{Class, ReadyQueues};
use super::types::{AgentId, LeaseId, RunSpec, TaskStatus, TaskSummary};
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
    pub phase: Phase,
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
    pub reason: String,
    pub agent: String,
    pub exit_code: Option<i32>,
    pub duration: Duration,
}

impl TaskState {
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
    pub tasks: Vec<TaskState>,
    pub index: HashMap<String, usize>,
    pub submissions: Vec<Submission>,
    pub ready: ReadyQueues,
    pub ready_count: usize,
    pub terminal: usize,
    pub failed: usize,
    pub complete_requested: bool,
    /// Set after the first failure of a run that stops on failure.
    pub stopping: Option<String>,
    /// `Some(success)` once the run has ended.
    pub done: Option<bool>,
    /// Classes already reported as waiting for an agent.
    pub waiting_reported: HashSet<Class>,
}

impl Run {
    pub fn new(id: String, spec: RunSpec) -> Run {
        Run {
            id,
            spec,
            tasks: Vec::new(),
            index: HashMap::new(),
            submissions: Vec::new(),
            ready: ReadyQueues::default(),
            ready_count: 0,
            terminal: 0,
            failed: 0,
            complete_requested: false,
            stopping: None,
            done: None,
            waiting_reported: HashSet::new(),
        }
    }

    pub fn is_active(&self) -> bool {
        self.done.is_none()
    }
}
