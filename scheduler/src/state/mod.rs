//! The scheduling state machine. One owner feeds it [`Event`]s through
//! [`Scheduler::handle`], each with the current time, and carries out the [`Action`]s of the
//! [`Outcome`] (send a welcome, a lease, a cancel or a stop; close a stream; record a run
//! event). [`Scheduler::next_deadline`] says when the owner must next send [`Event::Tick`].
//!
//! The state lives in modules that own their data and keep their own counts: agents
//! ([`agents`], with their deadlines), leases ([`leases`]), runs ([`runs`], [`run`]) and ready
//! queues ([`ready`]). The files named after what happens (`connect`, `attempt`, `settle`,
//! `submit`, `assign`, `deadlines`) hold the decisions that span them.

mod agent;
mod agents;
mod assign;
mod attempt;
mod bins;
mod connect;
mod deadlines;
mod event;
mod free;
mod leases;
mod ready;
mod restore;
#[cfg(test)]
mod retention_tests;
mod run;
mod runs;
mod settle;
mod submit;
#[cfg(test)]
mod test_api;
#[cfg(test)]
mod tests;
mod types;
mod views;

use std::time::Duration;

pub use event::{Event, Outcome, Reply, RunRef, RunRequest};
pub use restore::{AgentRecord, Counters, LeaseRecord, Replay, Restore, Restored, TaskRecord};
pub use types::*;
pub use views::{AgentView, Gauges, Progress, RunSummary, RunView, TemplateGauges};

use agent::{Agent, Presence};
use agents::Agents;
use leases::{Lease, Leases};
use ready::{Class, Entry, Key};
use run::{Phase, Run, Submission, TaskState};
use runs::Runs;

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

/// Timing and retry settings. [`Config::default`] holds the defaults the coordinator and the
/// CLI flags use.
#[derive(Clone, Debug)]
pub struct Config {
    /// How often agents heartbeat while the fleet is small (the shortest interval).
    pub heartbeat_interval: Duration,
    /// Heartbeats per second the coordinator aims to stay under: with more agents than
    /// this rate times the interval, the interval stretches (up to two fifths of the lease
    /// timeout, so that one lost heartbeat never costs a lease). 0: never stretch.
    pub max_heartbeat_rate: u32,
    /// A lease whose agent has not been heard from for this long is revoked.
    pub lease_timeout: Duration,
    /// How long a disconnected agent may take to come back before its leases are revoked.
    pub reconnect_grace: Duration,
    /// A task whose agent is lost this many times fails.
    pub max_lost_attempts: u32,
    /// A re-run pipeline's run (attempt 2 or later) with ready tasks that no agent has served
    /// for this long fails with the rerun guard's words: its agents were not re-run.
    pub rerun_grace: Duration,
    pub policy: Policy,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            heartbeat_interval: Duration::from_secs(1),
            max_heartbeat_rate: 1000,
            lease_timeout: Duration::from_secs(10),
            reconnect_grace: Duration::from_secs(10),
            max_lost_attempts: 3,
            rerun_grace: Duration::from_secs(120),
            policy: Policy::CriticalPath,
        }
    }
}

/// Why a lease is being taken back.
enum Revoke {
    /// The agent was lost: counts against the task's attempts.
    Lost(String),
    /// The agent handed it back (drain, restart): the task simply runs again.
    Returned(String),
}

/// How long after a change the scheduler looks for ready tasks that no agent may run.
const WAITING_CHECK: Duration = Duration::from_millis(100);

/// The scheduler: runs, agents, leases.
pub struct Scheduler {
    config: Config,
    runs: Runs,
    agents: Agents,
    leases: Leases,
    estimates: Estimates,
    /// Orders tasks that become ready (ties of rank go to the older).
    next_seq: u64,
    /// What the event being handled has led to so far.
    actions: Vec<Action>,
    /// Set while a batch is taken in: nothing is handed out until its end.
    assignment_deferred: bool,
    /// When to look for ready tasks that no connected agent may run.
    waiting_check: Option<Duration>,
    /// Runs of re-run pipelines to look at (see [`Config::rerun_grace`]), by when.
    rerun_checks: std::collections::BTreeSet<(Duration, usize)>,
}

impl Scheduler {
    pub fn new(config: Config) -> Self {
        Scheduler {
            config,
            runs: Runs::default(),
            agents: Agents::new(),
            leases: Leases::default(),
            estimates: Estimates::default(),
            next_seq: 0,
            actions: Vec::new(),
            assignment_deferred: false,
            waiting_check: None,
            rerun_checks: Default::default(),
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

    /// Takes in one event at `now` and says what to do about it.
    pub fn handle(&mut self, now: Duration, event: Event) -> Outcome {
        debug_assert!(
            self.actions.is_empty(),
            "actions left from an earlier event"
        );
        let reply = self.apply(now, event);
        Outcome {
            reply,
            actions: std::mem::take(&mut self.actions),
        }
    }

    /// Takes in events that happen at the same instant (several tasks ending at once): all of
    /// them before any free slot chooses. Returns a reply per event and the actions of all.
    pub fn handle_batch(
        &mut self,
        now: Duration,
        events: impl IntoIterator<Item = Event>,
    ) -> (Vec<Result<Reply, SchedError>>, Vec<Action>) {
        debug_assert!(
            self.actions.is_empty(),
            "actions left from an earlier event"
        );
        self.assignment_deferred = true;
        let replies = events.into_iter().map(|e| self.apply(now, e)).collect();
        self.assignment_deferred = false;
        self.assign(now);
        (replies, std::mem::take(&mut self.actions))
    }

    /// When the owner must next send [`Event::Tick`], if ever: the earliest lease timeout,
    /// reconnect grace or waiting check. A tick before it does nothing.
    pub fn next_deadline(&self) -> Option<Duration> {
        [
            self.agents.next_deadline(),
            self.waiting_check,
            self.rerun_checks.first().map(|&(at, _)| at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn apply(&mut self, now: Duration, event: Event) -> Result<Reply, SchedError> {
        // A tick re-arms the waiting check itself, only when a deadline fired.
        let rearm = !matches!(event, Event::Tick);
        let reply = match event {
            Event::Hello(hello) => self.on_hello(now, hello).map(Reply::Agent),
            Event::Heartbeat { agent, held } => {
                if !self.on_heartbeat(now, agent, &held) {
                    return Ok(Reply::Done);
                }
                Ok(Reply::Done)
            }
            Event::Started {
                agent,
                lease,
                token,
            } => {
                self.on_started(now, agent, lease, token);
                return Ok(Reply::Done);
            }
            Event::Output {
                agent,
                lease,
                token,
                stream,
                data,
            } => {
                self.on_output(agent, lease, token, stream, data);
                return Ok(Reply::Done);
            }
            Event::Finished {
                agent,
                lease,
                token,
                result,
            } => {
                self.on_finished(now, agent, lease, token, result);
                Ok(Reply::Done)
            }
            Event::Draining { agent } => {
                self.on_draining(now, agent);
                return Ok(Reply::Done);
            }
            Event::Disconnected { agent } => {
                self.on_disconnected(now, agent);
                Ok(Reply::Done)
            }
            Event::StartRun { spec, unix_ms } => self.on_start_run(now, spec, unix_ms),
            Event::Submit { run, tasks } => self.on_submit(run, tasks),
            Event::Complete { run } => self.on_complete(run),
            Event::Drain { agent } => {
                self.on_drain(agent);
                return Ok(Reply::Done);
            }
            Event::Cancel { run, by } => self.on_cancel(run, by),
            Event::Forget { run_id } => self.on_forget(&run_id).map(|()| Reply::Done),
            Event::Tick => {
                self.on_tick(now);
                Ok(Reply::Done)
            }
        };
        if rearm {
            self.arm_waiting_check(now);
        }
        self.assign(now);
        reply
    }

    /// Ready tasks may now wait for an agent type no agent has: look soon.
    fn arm_waiting_check(&mut self, now: Duration) {
        if self.runs.ready_total() > 0 && self.waiting_check.is_none() {
            self.waiting_check = Some(now + WAITING_CHECK);
        }
    }
}
