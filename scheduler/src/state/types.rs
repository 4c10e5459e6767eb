//! The values that go in and out of the scheduler.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::graph::GraphError;
use crate::rules::{RuleErrors, RuleSet};

/// An agent as the scheduler knows it; stable across reconnects of the same agent process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AgentId(pub u64);

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "agent-{}", self.0)
    }
}

/// A lease: the right of one agent to run one attempt of one task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LeaseId(pub u64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for LeaseId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(LeaseId)
    }
}

/// What an agent says when it connects.
#[derive(Clone, Debug, Default)]
pub struct Hello {
    pub name: String,
    pub instance_id: String,
    pub launch_template: String,
    pub slots: u32,
    /// CI agents serve only the run of this CI execution and are stopped when it ends.
    pub ci_execution_id: Option<String>,
    /// Leases the agent still holds (after a reconnect).
    pub held: Vec<Held>,
    /// The agent's version, for operators.
    pub version: String,
    /// A CI agent's run attempt (0: not known); one of another attempt than its run's is
    /// refused (see [`RERUN_MESSAGE`]).
    pub attempt: u32,
    /// Repositories the agent holds a workspace of.
    pub repositories: Vec<String>,
}

/// What a CI agent, and the main job, of a pipeline that was re-run only in part are told.
pub const RERUN_MESSAGE: &str = "You reran only failed jobs, but CI requires rerunning all jobs. Rerun all jobs in the pipeline to prevent this error.";

/// A lease an agent reports holding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub lease: LeaseId,
    pub token: u64,
}

/// How a run is set up (`drover start-ci-run`).
#[derive(Clone, Debug, Default)]
pub struct RunSpec {
    pub ci_execution_id: String,
    pub execution_env: String,
    pub attempt: u32,
    pub rules: RuleSet,
    /// When every task of these targets has ended (and nothing else is left), the run is done.
    pub stop_agents_after: Vec<String>,
    /// Forwarded to every task of the run.
    pub env: BTreeMap<String, String>,
    /// Times a failed task is tried again (on another agent where one exists).
    pub retries: u32,
    /// After the first failure no new task starts and the run ends failed.
    pub stop_on_failure: bool,
    /// Timeout for tasks that give none.
    pub default_timeout: Option<Duration>,
    /// The cache namespace the run's tasks write to (`None`: the trusted default one).
    pub cache_namespace: Option<String>,
    /// Who started the run (the token's name), for operators and audit.
    pub started_by: String,
    /// The repository and commit the run builds (empty: the agents' own checkouts).
    pub repository: String,
    pub commit: String,
}

/// A lease as sent to an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    pub lease: LeaseId,
    pub token: u64,
    pub run_id: String,
    pub task_id: String,
    pub command: String,
    pub env: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The run's repository and commit.
    pub repository: String,
    pub commit: String,
}

/// How one attempt ended, as the agent reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskResult {
    pub exit_code: i32,
    pub duration: Duration,
    /// Why there is no exit code of the task's own ("timed out after 10s").
    pub error: Option<String>,
}

impl TaskResult {
    pub fn success(duration: Duration) -> Self {
        TaskResult {
            exit_code: 0,
            duration,
            error: None,
        }
    }

    pub fn exit(code: i32, duration: Duration) -> Self {
        TaskResult {
            exit_code: code,
            duration,
            error: None,
        }
    }

    pub fn succeeded(&self) -> bool {
        self.exit_code == 0 && self.error.is_none()
    }
}

/// Where a task stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Skipped,
}

impl TaskStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Succeeded | TaskStatus::Failed | TaskStatus::Skipped
        )
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Skipped => "skipped",
        })
    }
}

/// A task's final (or current) state, for summaries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskSummary {
    pub task: String,
    pub status: TaskStatus,
    pub reason: String,
    pub agent: String,
    pub duration: Duration,
    pub attempts: u32,
    pub flaky: bool,
}

/// One attempt of a task ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskFinished {
    pub task: String,
    /// The task's target (`build`, `test`, ...), for per-target figures.
    pub target: String,
    pub submissions: Vec<u64>,
    pub status: TaskStatus,
    pub exit_code: Option<i32>,
    pub reason: String,
    pub agent: String,
    pub duration: Duration,
    pub attempt: u32,
    pub flaky: bool,
    /// The attempt failed and the task will run again.
    pub retrying: bool,
}

/// Something the main job should hear about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunEvent {
    TaskStarted {
        task: String,
        submissions: Vec<u64>,
        agent: String,
        template: String,
        attempt: u32,
    },
    TaskFinished(TaskFinished),
    /// Output of a running attempt, as the agent sent it.
    TaskOutput {
        task: String,
        submissions: Vec<u64>,
        attempt: u32,
        stream: OutputStream,
        data: Vec<u8>,
    },
    /// A lease was taken back (agent lost, drained); the task is queued again.
    TaskRequeued {
        task: String,
        submissions: Vec<u64>,
        reason: String,
        attempt: u32,
    },
    /// Ready tasks that no connected agent may run.
    Waiting {
        submissions: Vec<u64>,
        tasks: Vec<String>,
        reason: String,
    },
    SubmissionDone {
        submission: u64,
        success: bool,
        tasks: Vec<TaskSummary>,
    },
    RunDone {
        success: bool,
        reason: String,
    },
}

/// What the owner of the scheduler must do after an event, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Greet an agent that connected; it goes before anything else for that agent.
    Welcome { agent: AgentId, welcome: Welcome },
    /// Send this lease to the agent.
    Lease { agent: AgentId, grant: LeaseGrant },
    /// Tell the agent to kill the task of a lease it must no longer run.
    Cancel {
        agent: AgentId,
        lease: LeaseId,
        reason: String,
    },
    /// Tell the agent to exit: its run is over.
    Stop { agent: AgentId, reason: String },
    /// Tell a connected agent to heartbeat at a new interval (the fleet grew or shrank).
    Heartbeat { agent: AgentId, interval: Duration },
    /// A lease ended (finished, revoked, handed back): whatever was issued for it (a task's
    /// credential) is void from now on.
    Released { agent: AgentId, lease: LeaseId },
    /// Close the agent's stream: the scheduler gave up on it (or never knew it), so it must
    /// connect again and say who it is.
    Close { agent: AgentId, reason: String },
    /// A message from an agent was refused (for logs and metrics); a `Cancel` of the lease
    /// goes with it.
    Refused {
        agent: AgentId,
        message: MessageKind,
        refused: Refused,
    },
    /// Record and forward an event of a run.
    Run { run_id: String, event: RunEvent },
}

/// What an agent says when its stream opens, as the scheduler answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Welcome {
    pub agent: AgentId,
    pub heartbeat_interval: Duration,
    pub lease_timeout: Duration,
}

/// Which kind of agent message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    Started,
    Output,
    Result,
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MessageKind::Started => "started",
            MessageKind::Output => "output",
            MessageKind::Result => "result",
        })
    }
}

/// Which of a task's output streams a chunk came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OutputStream {
    #[default]
    Stdout,
    Stderr,
}

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunState {
    Running,
    /// A task failed under `--stop-agents-on-failure`: nothing new starts.
    Stopping,
    Succeeded,
    Failed,
}

impl RunState {
    pub fn is_active(self) -> bool {
        matches!(self, RunState::Running | RunState::Stopping)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Stopping => "stopping",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for RunState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Why a task was skipped instead of run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// A dependency failed.
    DependencyFailed { dependency: String },
    /// At submission: a dependency from an earlier submission had failed or been skipped.
    DependencyNotSucceeded { dependency: String },
    /// A dependency was skipped for a reason of its own.
    DependencySkipped { dependency: String },
    /// `--stop-agents-on-failure`: the run stops after this task failed.
    RunStopping { failed: String },
    /// The run was stopped from outside: "cancelled by NAME", or the rerun guard's words.
    Aborted(String),
    /// Said before a coordinator restart.
    Recorded(String),
}

impl SkipReason {
    /// What the task's own dependents are told: the root cause when it is a dependency's,
    /// else that this task (`id`) was skipped.
    pub fn for_dependents(&self, id: &str) -> SkipReason {
        match self {
            SkipReason::DependencyFailed { .. }
            | SkipReason::DependencyNotSucceeded { .. }
            | SkipReason::DependencySkipped { .. } => self.clone(),
            SkipReason::RunStopping { .. } | SkipReason::Aborted(_) | SkipReason::Recorded(_) => {
                SkipReason::DependencySkipped {
                    dependency: id.to_string(),
                }
            }
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::DependencyFailed { dependency } => {
                write!(f, "dependency `{dependency}` failed")
            }
            SkipReason::DependencyNotSucceeded { dependency } => {
                write!(f, "dependency `{dependency}` did not succeed")
            }
            SkipReason::DependencySkipped { dependency } => {
                write!(f, "dependency `{dependency}` was skipped")
            }
            SkipReason::RunStopping { failed } => {
                write!(
                    f,
                    "not started: the run stops after the failure of `{failed}`"
                )
            }
            SkipReason::Aborted(why) => f.write_str(why),
            SkipReason::Recorded(text) => f.write_str(text),
        }
    }
}

/// A message from an agent that does not belong to an active lease of that agent.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Refused {
    #[error("lease {0} is not active (it was revoked or has finished)")]
    UnknownLease(LeaseId),
    #[error("lease {lease} has fencing token {expected}, not {got}")]
    WrongToken {
        lease: LeaseId,
        expected: u64,
        got: u64,
    },
    #[error("lease {lease} belongs to another agent")]
    WrongAgent { lease: LeaseId },
}

/// Requests the scheduler turns down.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SchedError {
    #[error("no run `{0}`")]
    UnknownRun(String),
    #[error("run `{0}` has already ended")]
    RunEnded(String),
    #[error("run `{0}` has not ended; only a run that ended can be forgotten")]
    RunActive(String),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("{0}")]
    Rules(#[from] RuleErrors),
    #[error("no run for CI execution `{0}`; start one with `drover start-ci-run`")]
    NoRunForExecution(String),
    #[error("{0}")]
    InvalidRun(String),
    #[error("{0} is not connected")]
    UnknownAgent(AgentId),
    /// A CI agent of another attempt than its run's.
    #[error("{}", RERUN_MESSAGE)]
    Rerun,
    #[error("agent `{}`: {message}", name.escape_debug())]
    BadAgent { name: String, message: String },
}
