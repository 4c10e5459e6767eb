//! The scheduling state machine. One owner calls it; every call takes `now`, mutates state, and
//! queues [`Action`]s that the owner drains with [`Scheduler::take_actions`] and carries out
//! (send a lease, cancel, stop an agent, record a run event).

mod agent;
mod agents;
mod assign;
mod bins;
mod lifecycle;
mod ready;
mod restore;
mod retention;
#[cfg(test)]
mod retention_tests;
mod run;
mod runs;
mod slots;
#[cfg(test)]
mod tests;
mod types;
mod views;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

pub use restore::{AgentRecord, Counters, LeaseRecord, Replay, Restore, Restored, TaskRecord};
pub use types::*;

use agent::{Agent, Group};
use ready::{Class, Entry, Key};
use run::{Phase, Run, Submission, TaskState};
use slots::Runs;

use crate::duration::format_duration;
use crate::estimate::Estimates;
use crate::graph::{GraphError, TaskGraph};
use crate::task::TaskSpec;

/// How ready tasks are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Policy {
    /// Longest estimated path to the end of the graph first.
    #[default]
    CriticalPath,
    /// First ready, first run (Turborepo, moon, Buck2).
    Fifo,
    /// A seeded random order.
    Random { seed: u64 },
    /// A baseline, not for production: agents split statically between targets in
    /// proportion to their estimated work; a task runs only on its target's agents, first
    /// ready first.
    Binning,
}

/// Timing and retry settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub heartbeat_interval: Duration,
    /// A lease whose agent has not been heard from for this long is revoked.
    pub lease_timeout: Duration,
    /// How long a disconnected agent may take to come back before its leases are revoked.
    pub reconnect_grace: Duration,
    /// A task whose agent is lost this many times fails.
    pub max_lost_attempts: u32,
    pub policy: Policy,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            heartbeat_interval: Duration::from_secs(1),
            lease_timeout: Duration::from_secs(10),
            reconnect_grace: Duration::from_secs(10),
            max_lost_attempts: 3,
            policy: Policy::CriticalPath,
        }
    }
}

/// Granted lease, as the scheduler tracks it.
#[derive(Debug)]
struct Lease {
    token: u64,
    agent: AgentId,
    run: usize,
    task: usize,
    granted_at: Duration,
    started: bool,
    group: Group,
    cache: bool,
}

/// Why a lease is being taken back.
enum Revoke {
    /// The agent was lost: counts against the task's attempts.
    Lost(String),
    /// The agent handed it back (drain, restart): the task simply runs again.
    Returned(String),
}

/// Progress of a run or submission.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub total: usize,
    pub queued: usize,
    pub running: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// A snapshot of an agent for operators.
#[derive(Clone, Debug)]
pub struct AgentView {
    pub id: AgentId,
    pub name: String,
    pub template: String,
    pub slots: u32,
    pub ci_execution_id: Option<String>,
    pub connected: bool,
    pub draining: bool,
    pub running: Vec<String>,
}

/// A run's state and counts, without its tasks: for listings and metrics.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub id: String,
    pub ci_execution_id: String,
    pub state: &'static str,
    pub progress: Progress,
}

/// A snapshot of a run, with every task, for operators and the main job.
#[derive(Clone, Debug)]
pub struct RunView {
    pub id: String,
    pub ci_execution_id: String,
    pub state: &'static str,
    pub progress: Progress,
    pub tasks: Vec<TaskSummary>,
}

impl RunView {
    pub fn summary(&self) -> RunSummary {
        RunSummary {
            id: self.id.clone(),
            ci_execution_id: self.ci_execution_id.clone(),
            state: self.state,
            progress: self.progress,
        }
    }
}

/// The scheduler: runs, agents, leases.
pub struct Scheduler {
    config: Config,
    /// Runs by index; a forgotten run leaves a tombstone so indices never shift.
    runs: Runs,
    run_index: HashMap<String, usize>,
    /// The newest run of each CI execution id.
    by_execution: HashMap<String, usize>,
    agents: BTreeMap<AgentId, Agent>,
    identities: HashMap<(String, String), AgentId>,
    leases: HashMap<LeaseId, Lease>,
    estimates: Estimates,
    next_agent: u64,
    next_lease: u64,
    next_token: u64,
    next_seq: u64,
    /// Round-robin cursor over runs, so runs that share agents take turns.
    next_run_turn: usize,
    ready_total: usize,
    actions: Vec<Action>,
    /// Agents that may have a free slot (a superset, cleaned as assignment meets them).
    free_agents: BTreeSet<AgentId>,
    /// `agents.len()` when `free_agents` was last complete.
    free_agents_seen: usize,
    /// Set by `defer_assignment`: events are taken in, nothing is handed out yet.
    assignment_deferred: bool,
}

impl Scheduler {
    pub fn new(config: Config) -> Self {
        Scheduler {
            config,
            runs: Runs::default(),
            run_index: HashMap::new(),
            by_execution: HashMap::new(),
            agents: BTreeMap::new(),
            identities: HashMap::new(),
            leases: HashMap::new(),
            estimates: Estimates::default(),
            next_agent: 1,
            next_lease: 1,
            next_token: 1,
            next_seq: 0,
            next_run_turn: 0,
            ready_total: 0,
            actions: Vec::new(),
            free_agents: BTreeSet::new(),
            free_agents_seen: 0,
            assignment_deferred: false,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn estimates(&self) -> &Estimates {
        &self.estimates
    }

    pub fn set_estimates(&mut self, estimates: Estimates) {
        self.estimates = estimates;
    }

    /// The actions queued by the calls so far, oldest first.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }
}
