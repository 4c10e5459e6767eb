//! The scheduler's one entry: [`Event`]s in, an [`Outcome`] out.

use std::collections::BTreeMap;
use std::time::Duration;

use super::types::TaskResult;
use super::types::{Action, AgentId, Held, Hello, LeaseId, OutputStream, RunSpec, SchedError};
use crate::fleet::FleetSpec;
use crate::rules::RuleSet;
use crate::task::TaskSpec;

/// Something that happened, in the scheduler's own terms. The owner turns protocol messages,
/// main-job requests and the passing of time into events, feeds them to
/// [`Scheduler::handle`](super::Scheduler::handle) with the current time, and carries out the
/// [`Action`]s of the [`Outcome`].
#[derive(Clone, Debug)]
pub enum Event {
    /// An agent opened its stream and said who it is.
    Hello(Hello),
    /// The agent is alive and holds these leases.
    Heartbeat { agent: AgentId, held: Vec<Held> },
    /// The agent started the task of a lease.
    Started {
        agent: AgentId,
        lease: LeaseId,
        token: u64,
    },
    /// Output of a lease's task.
    Output {
        agent: AgentId,
        lease: LeaseId,
        token: u64,
        stream: OutputStream,
        data: Vec<u8>,
    },
    /// One attempt of a task ended.
    Finished {
        agent: AgentId,
        lease: LeaseId,
        token: u64,
        result: TaskResult,
    },
    /// The agent takes no new leases; running ones finish.
    Draining { agent: AgentId },
    /// The agent's stream closed.
    Disconnected { agent: AgentId },
    /// The main job opens a run (`drover start-ci-run`) with settings checked by
    /// [`RunSpec::from_request`]. `unix_ms` is the wall clock, which names the run.
    StartRun { spec: RunSpec, unix_ms: u64 },
    /// A task graph for a run.
    Submit { run: RunRef, tasks: Vec<TaskSpec> },
    /// No more submissions: the run ends when its last task does.
    Complete { run: RunRef },
    /// An operator drains an agent: it takes no new leases, running tasks finish, nothing
    /// is charged.
    Drain { agent: AgentId },
    /// An operator cancels a run: running tasks are cancelled, queued ones skipped, and the
    /// run ends failed, "cancelled by BY".
    Cancel { run: RunRef, by: String },
    /// Forget a run that ended (run retention).
    Forget { run_id: String },
    /// Time passed: deadlines that are due fire (see
    /// [`Scheduler::next_deadline`](super::Scheduler::next_deadline)).
    Tick,
}

/// The direct answer to an event; everything else the event caused is in the actions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Nothing to answer.
    Done,
    /// The agent of a `Hello`, known by this id from now on.
    Agent(AgentId),
    RunStarted {
        run_id: String,
        /// The CI execution had an open run of the same attempt already.
        existing: bool,
    },
    Submitted {
        run_id: String,
        submission: u64,
        tasks: u32,
    },
    Completed {
        run_id: String,
    },
}

/// What an event led to: the answer to whoever sent it, and what the owner must do, in order.
#[derive(Debug)]
pub struct Outcome {
    pub reply: Result<Reply, SchedError>,
    pub actions: Vec<Action>,
}

/// Which run a main-job request is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunRef {
    Id(String),
    /// The newest run of this CI execution.
    Execution(String),
}

impl RunRef {
    /// From a request's two fields: the run id wins; one of them must be set.
    pub fn from_fields(run_id: String, ci_execution_id: String) -> Result<RunRef, SchedError> {
        match (run_id.is_empty(), ci_execution_id.is_empty()) {
            (false, _) => Ok(RunRef::Id(run_id)),
            (true, false) => Ok(RunRef::Execution(ci_execution_id)),
            (true, true) => Err(SchedError::InvalidRun(
                "name the run: `run_id` or `ci_execution_id`".into(),
            )),
        }
    }
}

/// A run as the main job asks for it, before it is checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunRequest {
    pub ci_execution_id: String,
    pub execution_env: String,
    pub attempt: u32,
    /// `manual`, or the fleet the pipeline starts ("2 linux-medium:2, 1 linux-large:4").
    pub distribute_on: String,
    /// The assignment rules file as written (empty: no rules) and its name for messages.
    pub rules_text: String,
    pub rules_path: String,
    pub stop_agents_after: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub retries: u32,
    pub stop_on_failure: bool,
    pub default_timeout: Option<Duration>,
    /// Set by the coordinator from the caller's token, never by the caller.
    pub cache_namespace: Option<String>,
    pub started_by: String,
    /// The CI pipeline's W3C trace context, for the owner's tracing (the scheduler ignores it).
    pub traceparent: String,
    pub repository: String,
    pub commit: String,
}

impl RunSpec {
    /// Checks a request and builds the run's settings; an invalid rules file is refused with
    /// every error in it, and with a fleet named up front every agent type the rules name
    /// must be in it.
    pub fn from_request(req: &RunRequest) -> Result<RunSpec, SchedError> {
        if req.ci_execution_id.trim().is_empty() {
            return Err(SchedError::InvalidRun("`ci_execution_id` is empty".into()));
        }
        // `manual`, a file of Nx's changesets (not checked here), or a fleet SPEC that must
        // read as one.
        let fleet = match req.distribute_on.trim() {
            "" | "manual" => None,
            file if file.ends_with(".yaml") || file.ends_with(".yml") => None,
            spec => Some(
                FleetSpec::parse(spec)
                    .map_err(|e| SchedError::InvalidRun(format!("--distribute-on: {e}")))?,
            ),
        };
        let rules = if req.rules_text.trim().is_empty() {
            RuleSet::default()
        } else {
            let path = match req.rules_path.as_str() {
                "" => "assignment-rules.yaml",
                path => path,
            };
            let rules = RuleSet::parse(path, &req.rules_text)?;
            if let Some(fleet) = fleet.as_ref() {
                let known: Vec<&str> = fleet.groups.iter().map(|g| g.template.as_str()).collect();
                rules.check_agent_types(&known)?;
            }
            rules
        };
        Ok(RunSpec {
            ci_execution_id: req.ci_execution_id.clone(),
            execution_env: req.execution_env.clone(),
            attempt: req.attempt,
            rules,
            stop_agents_after: req.stop_agents_after.clone(),
            env: req.env.clone(),
            retries: req.retries,
            stop_on_failure: req.stop_on_failure,
            default_timeout: req.default_timeout,
            cache_namespace: req.cache_namespace.clone(),
            started_by: req.started_by.clone(),
            repository: req.repository.clone(),
            commit: req.commit.clone(),
        })
    }
}
