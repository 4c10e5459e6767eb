//! The scheduling state machine. One owner calls it; every call takes `now`, mutates state, and
//! queues [`Action`]s that the owner drains with [`Scheduler::take_actions`] and carries out
//! (send a lease, cancel, stop an agent, record a run event).

mod agent;
mod ready;
mod run;
#[cfg(test)]
mod tests;
mod types;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

pub use types::*;

use agent::{Agent, Group};
use ready::{Class, Entry};
use run::{Phase, Run, Submission, TaskState};

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

/// A snapshot of a run for operators and the main job.
#[derive(Clone, Debug)]
pub struct RunView {
    pub id: String,
    pub ci_execution_id: String,
    pub state: &'static str,
    pub progress: Progress,
    pub tasks: Vec<TaskSummary>,
}

/// The scheduler: runs, agents, leases.
pub struct Scheduler {
    config: Config,
    runs: Vec<Run>,
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
}

impl Scheduler {
    pub fn new(config: Config) -> Self {
        Scheduler {
            config,
            runs: Vec::new(),
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

    // ------------------------------------------------------------------ runs

    /// Opens a run, or returns the open run of the same CI execution and attempt.
    /// The bool is true when the run already existed.
    pub fn start_run(
        &mut self,
        now: Duration,
        run_id: String,
        spec: RunSpec,
    ) -> Result<(String, bool), SchedError> {
        if let Some(&i) = self.by_execution.get(&spec.ci_execution_id) {
            let run = &self.runs[i];
            if run.spec.attempt == spec.attempt && run.is_active() {
                return Ok((run.id.clone(), true));
            }
        }
        let index = self.runs.len();
        self.run_index.insert(run_id.clone(), index);
        self.by_execution
            .insert(spec.ci_execution_id.clone(), index);
        self.runs.push(Run::new(run_id.clone(), spec));
        self.assign(now);
        Ok((run_id, false))
    }

    /// The newest run of a CI execution.
    pub fn run_for_execution(&self, ci_execution_id: &str) -> Option<&str> {
        self.by_execution
            .get(ci_execution_id)
            .map(|&i| self.runs[i].id.as_str())
    }

    fn run_index(&self, run_id: &str) -> Result<usize, SchedError> {
        self.run_index
            .get(run_id)
            .copied()
            .ok_or_else(|| SchedError::UnknownRun(run_id.to_string()))
    }

    /// Adds a task graph to a run. Tasks may depend on tasks of earlier submissions; a task id
    /// that an earlier submission holds already is shared, not run twice.
    pub fn submit(
        &mut self,
        now: Duration,
        run_id: &str,
        tasks: Vec<TaskSpec>,
    ) -> Result<u64, SchedError> {
        let r = self.run_index(run_id)?;
        if !self.runs[r].is_active() {
            return Err(SchedError::RunEnded(run_id.to_string()));
        }
        let run = &self.runs[r];
        // Tasks the run holds already are shared; the rest form the new graph.
        let (existing, fresh): (Vec<TaskSpec>, Vec<TaskSpec>) = tasks
            .into_iter()
            .partition(|t| run.index.contains_key(&t.id));
        if existing.is_empty() && fresh.is_empty() {
            return Err(GraphError::Empty.into());
        }
        let graph = if fresh.is_empty() {
            None
        } else {
            Some(TaskGraph::with_known(fresh, |id| {
                run.index.contains_key(id)
            })?)
        };
        let submission = run.submissions.len() as u64 + 1;
        let mut members: Vec<usize> = existing.iter().map(|t| run.index[&t.id]).collect();

        let ranks = graph.as_ref().map(|g| self.ranks(g)).unwrap_or_default();
        let run = &mut self.runs[r];
        for &i in &members {
            run.tasks[i].submissions.push(submission);
        }
        if let Some(graph) = graph {
            let base = run.tasks.len();
            for (k, spec) in graph.tasks.into_iter().enumerate() {
                let class = run.spec.rules.rule_for(
                    &spec.project,
                    &spec.target,
                    spec.configuration.as_deref(),
                );
                run.index.insert(spec.id.clone(), base + k);
                run.tasks.push(TaskState {
                    dependents: graph.dependents[k].iter().map(|&d| base + d).collect(),
                    unmet: graph.deps[k].len(),
                    phase: Phase::Blocked,
                    submissions: vec![submission],
                    class,
                    rank: ranks[k],
                    attempts: 0,
                    failures: 0,
                    lost: 0,
                    avoid: Vec::new(),
                    reason: String::new(),
                    agent: String::new(),
                    exit_code: None,
                    duration: Duration::ZERO,
                    spec,
                });
                members.push(base + k);
            }
            // Edges to tasks of earlier submissions.
            for i in base..run.tasks.len() {
                let outside: Vec<usize> = run.tasks[i]
                    .spec
                    .depends_on
                    .iter()
                    .map(|d| run.index[d])
                    .filter(|&j| j < base)
                    .collect();
                for j in outside {
                    match run.tasks[j].phase {
                        Phase::Done(TaskStatus::Succeeded) => {}
                        Phase::Done(_) => run.tasks[i].unmet += 1, // skipped below
                        _ => {
                            run.tasks[i].unmet += 1;
                            run.tasks[j].dependents.push(i);
                        }
                    }
                }
            }
        }
        let remaining = members
            .iter()
            .filter(|&&i| !run.tasks[i].status().is_terminal())
            .count();
        run.submissions.push(Submission {
            id: submission,
            tasks: members.clone(),
            remaining,
            done: false,
        });

        // Tasks whose dependency already failed are skipped; the rest become ready in turn.
        let base_new: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&i| run.tasks[i].phase == Phase::Blocked)
            .collect();
        for i in base_new {
            let failed_dep = self.runs[r].tasks[i]
                .spec
                .depends_on
                .iter()
                .map(|d| self.runs[r].index[d])
                .find(|&j| {
                    matches!(
                        self.runs[r].tasks[j].phase,
                        Phase::Done(TaskStatus::Failed | TaskStatus::Skipped)
                    )
                });
            if let Some(j) = failed_dep {
                if self.runs[r].tasks[i].phase == Phase::Blocked {
                    let root = self.runs[r].tasks[j].spec.id.clone();
                    self.skip(r, i, format!("dependency `{root}` did not succeed"));
                }
            } else if self.runs[r].tasks[i].unmet == 0 && self.runs[r].stopping.is_none() {
                self.make_ready(r, i);
            } else if let Some(reason) = self.runs[r].stopping.clone() {
                self.skip(r, i, reason);
            }
        }
        self.check_submissions(r);
        self.maybe_finish_run(r);
        self.assign(now);
        Ok(submission)
    }

    /// Critical-path ranks (or the policy's stand-in) for a new graph, in milliseconds.
    fn ranks(&self, graph: &TaskGraph) -> Vec<u64> {
        let n = graph.tasks.len();
        match self.config.policy {
            Policy::Fifo => vec![0; n],
            Policy::Random { seed } => (0..n as u64)
                .map(|i| splitmix64(seed ^ (self.next_seq + i)))
                .collect(),
            Policy::CriticalPath => {
                let order = graph.topological_order();
                let mut rank = vec![0u64; n];
                for &i in order.iter().rev() {
                    let own = self.estimates.estimate(&graph.tasks[i]).as_millis() as u64;
                    let tail = graph.dependents[i]
                        .iter()
                        .map(|&d| rank[d])
                        .max()
                        .unwrap_or(0);
                    rank[i] = own.max(1) + tail;
                }
                rank
            }
        }
    }

    /// Marks the run complete: it ends when every submitted task has ended.
    pub fn complete_run(&mut self, now: Duration, run_id: &str) -> Result<(), SchedError> {
        let r = self.run_index(run_id)?;
        self.runs[r].complete_requested = true;
        self.maybe_finish_run(r);
        self.assign(now);
        Ok(())
    }

    // ------------------------------------------------------------------ agents

    /// An agent opened its stream. Returns its id; a reconnect of the same agent process (same
    /// name and instance id) keeps its id and the leases it still holds.
    pub fn agent_connected(&mut self, now: Duration, hello: Hello) -> Result<AgentId, SchedError> {
        if hello.name.trim().is_empty() {
            return Err(SchedError::BadAgent {
                name: hello.name,
                message: "the agent name is empty".into(),
            });
        }
        if hello.launch_template.trim().is_empty() {
            return Err(SchedError::BadAgent {
                name: hello.name,
                message: "the launch template is empty".into(),
            });
        }
        if hello.slots == 0 {
            return Err(SchedError::BadAgent {
                name: hello.name,
                message: "slots must be at least 1".into(),
            });
        }
        let key = (hello.name.clone(), hello.instance_id.clone());
        let id = if let Some(&id) = self.identities.get(&key) {
            self.reattach(now, id, &hello);
            id
        } else {
            // The same name with another instance id: that process is gone; hand its work back.
            let stale: Vec<AgentId> = self
                .agents
                .values()
                .filter(|a| a.name == hello.name && !a.connected)
                .map(|a| a.id)
                .collect();
            for old in stale {
                let reason = format!("agent `{}` restarted", hello.name);
                self.revoke_all(old, &Revoke::Returned(reason));
                self.forget_agent(old);
            }
            let id = AgentId(self.next_agent);
            self.next_agent += 1;
            self.identities.insert(key, id);
            self.agents.insert(
                id,
                Agent {
                    id,
                    name: hello.name.clone(),
                    instance_id: hello.instance_id.clone(),
                    template: hello.launch_template.clone(),
                    slots: hello.slots,
                    ci_execution_id: hello.ci_execution_id.clone().filter(|e| !e.is_empty()),
                    connected: true,
                    draining: false,
                    stopped: false,
                    last_seen: now,
                    disconnected_at: None,
                    leases: Vec::new(),
                    non_cacheable: 0,
                    groups: HashMap::new(),
                },
            );
            for held in &hello.held {
                self.actions.push(Action::Cancel {
                    agent: id,
                    lease: held.lease,
                    reason: "the coordinator does not know this lease".into(),
                });
            }
            id
        };
        // A CI agent whose run is over stops at once.
        if let Some(exec) = self.agents[&id].ci_execution_id.clone()
            && let Some(&r) = self.by_execution.get(&exec)
            && let Some(success) = self.runs[r].done
        {
            self.stop_agent(id, run_over_reason(&self.runs[r].id, success));
        }
        for run in &mut self.runs {
            run.waiting_reported.clear();
        }
        self.assign(now);
        Ok(id)
    }

    fn reattach(&mut self, now: Duration, id: AgentId, hello: &Hello) {
        let Some(agent) = self.agents.get_mut(&id) else {
            return;
        };
        agent.connected = true;
        agent.disconnected_at = None;
        agent.last_seen = now;
        agent.draining = false;
        agent.slots = hello.slots;
        let ours = agent.leases.clone();
        let name = agent.name.clone();
        for held in &hello.held {
            let valid = self
                .leases
                .get(&held.lease)
                .is_some_and(|l| l.agent == id && l.token == held.token);
            if !valid {
                self.actions.push(Action::Cancel {
                    agent: id,
                    lease: held.lease,
                    reason: "the lease was revoked while the agent was away".into(),
                });
            }
        }
        for lease in ours {
            if !hello.held.iter().any(|h| h.lease == lease) {
                self.revoke(
                    lease,
                    &Revoke::Lost(format!("agent `{name}` reconnected without the task")),
                );
            }
        }
    }

    /// The agent's stream closed. Its leases wait for it to come back, up to the grace period;
    /// a draining agent hands its leases back at once.
    pub fn agent_disconnected(&mut self, now: Duration, agent: AgentId) {
        let Some(a) = self.agents.get_mut(&agent) else {
            return;
        };
        a.connected = false;
        a.disconnected_at = Some(now);
        if a.draining || a.stopped {
            let reason = format!("agent `{}` shut down", a.name);
            self.revoke_all(agent, &Revoke::Returned(reason));
        }
        self.assign(now);
    }

    /// The agent takes no new leases; running ones finish.
    pub fn agent_draining(&mut self, now: Duration, agent: AgentId) {
        if let Some(a) = self.agents.get_mut(&agent) {
            a.draining = true;
            a.last_seen = now;
        }
    }

    /// A heartbeat: the agent is alive and holds these leases.
    pub fn heartbeat(&mut self, now: Duration, agent: AgentId, held: &[Held]) {
        let Some(a) = self.agents.get_mut(&agent) else {
            return;
        };
        a.last_seen = now;
        let ours = a.leases.clone();
        let name = a.name.clone();
        for h in held {
            let valid = self
                .leases
                .get(&h.lease)
                .is_some_and(|l| l.agent == agent && l.token == h.token);
            if !valid {
                self.actions.push(Action::Cancel {
                    agent,
                    lease: h.lease,
                    reason: "the lease is no longer active".into(),
                });
            }
        }
        // A lease the agent should have had for a while but does not report was lost on the way.
        let patience = self.config.heartbeat_interval * 2;
        for lease in ours {
            let lost = !held.iter().any(|h| h.lease == lease)
                && self
                    .leases
                    .get(&lease)
                    .is_some_and(|l| now.saturating_sub(l.granted_at) > patience);
            if lost {
                self.revoke(
                    lease,
                    &Revoke::Returned(format!("agent `{name}` never received the lease")),
                );
            }
        }
        self.assign(now);
    }

    /// Checks lease and reconnect deadlines and reports tasks that wait for an agent type.
    /// Call it periodically (the coordinator does every 100 ms).
    pub fn tick(&mut self, now: Duration) {
        let mut silent = Vec::new();
        let mut gone = Vec::new();
        for a in self.agents.values() {
            if a.connected && now.saturating_sub(a.last_seen) > self.config.lease_timeout {
                silent.push(a.id);
            } else if let Some(since) = a.disconnected_at
                && now.saturating_sub(since) > self.config.reconnect_grace
            {
                gone.push(a.id);
            }
        }
        for id in silent {
            let name = self.agents[&id].name.clone();
            let reason = format!(
                "agent `{name}` sent no heartbeat for {}",
                format_duration(self.config.lease_timeout)
            );
            self.revoke_all(id, &Revoke::Lost(reason));
            if let Some(a) = self.agents.get_mut(&id) {
                a.connected = false;
                a.disconnected_at = Some(now);
            }
        }
        for id in gone {
            let name = self.agents[&id].name.clone();
            let reason = format!(
                "agent `{name}` disconnected and did not come back within {}",
                format_duration(self.config.reconnect_grace)
            );
            self.revoke_all(id, &Revoke::Lost(reason));
            self.forget_agent(id);
        }
        self.report_waiting();
        self.assign(now);
    }

    /// The earliest time at which [`tick`](Self::tick) has something to do, if any.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.agents
            .values()
            .map(|a| match a.disconnected_at {
                Some(since) => since + self.config.reconnect_grace,
                None => a.last_seen + self.config.lease_timeout,
            })
            .min()
    }

    fn forget_agent(&mut self, id: AgentId) {
        if let Some(a) = self.agents.remove(&id) {
            self.identities.remove(&(a.name, a.instance_id));
        }
    }

    fn stop_agent(&mut self, id: AgentId, reason: String) {
        if let Some(a) = self.agents.get_mut(&id)
            && !a.stopped
        {
            a.stopped = true;
            if a.connected {
                self.actions.push(Action::Stop { agent: id, reason });
            }
        }
    }

    // ------------------------------------------------------------------ task progress

    fn check_lease(&self, agent: AgentId, lease: LeaseId, token: u64) -> Result<&Lease, Refused> {
        let l = self
            .leases
            .get(&lease)
            .ok_or(Refused::UnknownLease(lease))?;
        if l.token != token {
            return Err(Refused::WrongToken {
                lease,
                expected: l.token,
                got: token,
            });
        }
        if l.agent != agent {
            return Err(Refused::WrongAgent { lease });
        }
        Ok(l)
    }

    /// The agent started the task of a lease.
    pub fn task_started(
        &mut self,
        now: Duration,
        agent: AgentId,
        lease: LeaseId,
        token: u64,
    ) -> Result<(), Refused> {
        self.check_lease(agent, lease, token)?;
        if let Some(l) = self.leases.get_mut(&lease) {
            l.started = true;
        }
        if let Some(a) = self.agents.get_mut(&agent) {
            a.last_seen = now;
        }
        Ok(())
    }

    /// Output of a lease's task: where it belongs (run id, task id, attempt, submissions).
    pub fn output_target(
        &self,
        agent: AgentId,
        lease: LeaseId,
        token: u64,
    ) -> Result<(String, String, u32, Vec<u64>), Refused> {
        let l = self.check_lease(agent, lease, token)?;
        let run = &self.runs[l.run];
        let t = &run.tasks[l.task];
        Ok((
            run.id.clone(),
            t.spec.id.clone(),
            t.attempts,
            t.submissions.clone(),
        ))
    }

    /// One attempt of a task ended. A result under a lease that is no longer active is refused.
    pub fn task_finished(
        &mut self,
        now: Duration,
        agent: AgentId,
        lease_id: LeaseId,
        token: u64,
        result: TaskResult,
    ) -> Result<(), Refused> {
        self.check_lease(agent, lease_id, token)?;
        let lease = self.release(lease_id);
        if let Some(a) = self.agents.get_mut(&agent) {
            a.last_seen = now;
        }
        let agent_name = self
            .agents
            .get(&agent)
            .map(|a| a.name.clone())
            .unwrap_or_default();
        let (r, i) = (lease.run, lease.task);
        {
            let t = &mut self.runs[r].tasks[i];
            t.agent = agent_name.clone();
            t.exit_code = Some(result.exit_code);
            t.duration = result.duration;
        }
        if result.succeeded() {
            let spec = self.runs[r].tasks[i].spec.clone();
            self.estimates.record(&spec, result.duration);
            self.finish(r, i, TaskStatus::Succeeded, String::new());
        } else {
            let reason = result
                .error
                .clone()
                .unwrap_or_else(|| format!("exit code {}", result.exit_code));
            let run = &mut self.runs[r];
            let t = &mut run.tasks[i];
            t.failures += 1;
            let retry = run.stopping.is_none() && t.failures <= run.spec.retries;
            if retry {
                t.avoid.push(agent);
                t.reason = reason.clone();
                let event = RunEvent::TaskFinished(TaskFinished {
                    task: t.spec.id.clone(),
                    submissions: t.submissions.clone(),
                    status: TaskStatus::Failed,
                    exit_code: Some(result.exit_code),
                    reason,
                    agent: agent_name,
                    duration: result.duration,
                    attempt: t.attempts,
                    flaky: false,
                    retrying: true,
                });
                let run_id = run.id.clone();
                self.actions.push(Action::Run { run_id, event });
                self.make_ready(r, i);
            } else {
                self.finish(r, i, TaskStatus::Failed, reason);
            }
        }
        self.check_submissions(r);
        self.maybe_finish_run(r);
        self.assign(now);
        Ok(())
    }

    /// Removes a lease and frees its agent's capacity.
    fn release(&mut self, lease_id: LeaseId) -> Lease {
        let lease = self
            .leases
            .remove(&lease_id)
            .expect("caller checked the lease");
        if let Some(a) = self.agents.get_mut(&lease.agent) {
            a.leases.retain(|&l| l != lease_id);
            if !lease.cache {
                a.non_cacheable = a.non_cacheable.saturating_sub(1);
            }
            if let Some(n) = a.groups.get_mut(&lease.group) {
                *n = n.saturating_sub(1);
            }
        }
        lease
    }

    fn revoke_all(&mut self, agent: AgentId, why: &Revoke) {
        let leases = self
            .agents
            .get(&agent)
            .map(|a| a.leases.clone())
            .unwrap_or_default();
        for lease in leases {
            self.revoke(lease, why);
        }
    }

    /// Takes a lease back and queues its task again (or fails it after too many lost agents).
    fn revoke(&mut self, lease_id: LeaseId, why: &Revoke) {
        if !self.leases.contains_key(&lease_id) {
            return;
        }
        let lease = self.release(lease_id);
        let (reason, counted) = match why {
            Revoke::Lost(r) => (r.clone(), true),
            Revoke::Returned(r) => (r.clone(), false),
        };
        if self.agents.get(&lease.agent).is_some_and(|a| a.connected) {
            self.actions.push(Action::Cancel {
                agent: lease.agent,
                lease: lease_id,
                reason: reason.clone(),
            });
        }
        let (r, i) = (lease.run, lease.task);
        let max_lost = self.config.max_lost_attempts;
        let t = &mut self.runs[r].tasks[i];
        if counted {
            t.lost += 1;
            t.avoid.push(lease.agent);
        } else {
            // A handed-back attempt does not count.
            t.attempts = t.attempts.saturating_sub(1);
        }
        if counted && t.lost >= max_lost {
            let reason = format!("agent lost {} times (last: {reason})", t.lost);
            self.finish(r, i, TaskStatus::Failed, reason);
            self.check_submissions(r);
            self.maybe_finish_run(r);
        } else if let Some(stop) = self.runs[r].stopping.clone() {
            self.finish(r, i, TaskStatus::Skipped, stop);
            self.check_submissions(r);
            self.maybe_finish_run(r);
        } else {
            let t = &self.runs[r].tasks[i];
            let event = RunEvent::TaskRequeued {
                task: t.spec.id.clone(),
                submissions: t.submissions.clone(),
                reason,
                attempt: t.attempts,
            };
            let run_id = self.runs[r].id.clone();
            self.actions.push(Action::Run { run_id, event });
            self.make_ready(r, i);
        }
    }

    fn make_ready(&mut self, r: usize, i: usize) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let run = &mut self.runs[r];
        let t = &mut run.tasks[i];
        t.phase = Phase::Ready;
        let entry = Entry {
            rank: t.rank,
            seq,
            task: i,
        };
        let class = t.class;
        run.ready.push(class, entry);
        run.ready_count += 1;
        self.ready_total += 1;
    }

    /// A task reached a final state: tell the main job and settle its dependents.
    fn finish(&mut self, r: usize, i: usize, status: TaskStatus, reason: String) {
        let run = &mut self.runs[r];
        let t = &mut run.tasks[i];
        debug_assert!(!t.status().is_terminal(), "task {} ended twice", t.spec.id);
        if t.phase == Phase::Ready {
            run.ready_count -= 1;
            self.ready_total -= 1;
        }
        t.phase = Phase::Done(status);
        t.reason = reason.clone();
        run.terminal += 1;
        if status == TaskStatus::Failed {
            run.failed += 1;
        }
        for &s in &t.submissions {
            if let Some(sub) = run.submissions.iter_mut().find(|x| x.id == s) {
                sub.remaining -= 1;
            }
        }
        let event = RunEvent::TaskFinished(TaskFinished {
            task: t.spec.id.clone(),
            submissions: t.submissions.clone(),
            status,
            exit_code: t.exit_code,
            reason,
            agent: t.agent.clone(),
            duration: t.duration,
            attempt: t.attempts,
            flaky: status == TaskStatus::Succeeded && t.failures > 0,
            retrying: false,
        });
        let run_id = run.id.clone();
        self.actions.push(Action::Run { run_id, event });

        let dependents = self.runs[r].tasks[i].dependents.clone();
        let id = self.runs[r].tasks[i].spec.id.clone();
        match status {
            TaskStatus::Succeeded => {
                for d in dependents {
                    let dt = &mut self.runs[r].tasks[d];
                    dt.unmet -= 1;
                    if dt.unmet == 0 && dt.phase == Phase::Blocked {
                        match self.runs[r].stopping.clone() {
                            Some(stop) => self.skip(r, d, stop),
                            None => self.make_ready(r, d),
                        }
                    }
                }
            }
            TaskStatus::Failed | TaskStatus::Skipped => {
                let why = if status == TaskStatus::Failed {
                    format!("dependency `{id}` failed")
                } else {
                    reason_root(&self.runs[r].tasks[i].reason)
                        .unwrap_or_else(|| format!("dependency `{id}` was skipped"))
                };
                for d in dependents {
                    if self.runs[r].tasks[d].phase == Phase::Blocked {
                        self.skip(r, d, why.clone());
                    }
                }
                if status == TaskStatus::Failed
                    && self.runs[r].spec.stop_on_failure
                    && self.runs[r].stopping.is_none()
                {
                    self.stop_run_after_failure(r, &id);
                }
            }
            TaskStatus::Queued | TaskStatus::Running => unreachable!("not a final status"),
        }
    }

    fn skip(&mut self, r: usize, i: usize, reason: String) {
        self.finish(r, i, TaskStatus::Skipped, reason);
    }

    /// `--stop-agents-on-failure`: nothing new starts; running tasks finish.
    fn stop_run_after_failure(&mut self, r: usize, failed: &str) {
        let reason = format!("not started: the run stops after the failure of `{failed}`");
        self.runs[r].stopping = Some(reason.clone());
        let waiting: Vec<usize> = (0..self.runs[r].tasks.len())
            .filter(|&i| matches!(self.runs[r].tasks[i].phase, Phase::Blocked | Phase::Ready))
            .collect();
        for i in waiting {
            if !self.runs[r].tasks[i].status().is_terminal() {
                self.skip(r, i, reason.clone());
            }
        }
    }

    fn check_submissions(&mut self, r: usize) {
        let run = &mut self.runs[r];
        for s in &mut run.submissions {
            if s.done || s.remaining > 0 {
                continue;
            }
            s.done = true;
            let tasks: Vec<TaskSummary> = s.tasks.iter().map(|&i| run.tasks[i].summary()).collect();
            let success = tasks.iter().all(|t| t.status == TaskStatus::Succeeded);
            let event = RunEvent::SubmissionDone {
                submission: s.id,
                success,
                tasks,
            };
            self.actions.push(Action::Run {
                run_id: run.id.clone(),
                event,
            });
        }
    }

    /// Ends the run when it is complete: every task ended and the main job said so (or the
    /// `stop-agents-after` targets are done, or the run stopped after a failure).
    fn maybe_finish_run(&mut self, r: usize) {
        let run = &self.runs[r];
        if run.done.is_some() || run.terminal < run.tasks.len() {
            return;
        }
        let stop_targets_done = !run.spec.stop_agents_after.is_empty()
            && run
                .spec
                .stop_agents_after
                .iter()
                .all(|target| run.tasks.iter().any(|t| &t.spec.target == target));
        if !(run.complete_requested || stop_targets_done || run.stopping.is_some()) {
            return;
        }
        let success = run.failed == 0 && run.stopping.is_none();
        let reason = if let Some(stop) = &run.stopping {
            stop.clone()
        } else if run.failed > 0 {
            format!("{} task(s) failed", run.failed)
        } else if run.complete_requested {
            "the main job completed the run".to_string()
        } else {
            format!(
                "the stop-agents-after targets ({}) are done",
                run.spec.stop_agents_after.join(", ")
            )
        };
        let run_id = run.id.clone();
        let exec = run.spec.ci_execution_id.clone();
        self.runs[r].done = Some(success);
        self.actions.push(Action::Run {
            run_id: run_id.clone(),
            event: RunEvent::RunDone { success, reason },
        });
        if self.by_execution.get(&exec) == Some(&r) {
            let ci_agents: Vec<AgentId> = self
                .agents
                .values()
                .filter(|a| a.ci_execution_id.as_deref() == Some(exec.as_str()))
                .map(|a| a.id)
                .collect();
            for id in ci_agents {
                self.stop_agent(id, run_over_reason(&run_id, success));
            }
        }
    }

    // ------------------------------------------------------------------ assignment

    /// Hands ready tasks to free slots until nothing more fits.
    fn assign(&mut self, now: Duration) {
        if self.ready_total == 0 {
            return;
        }
        let hungry: Vec<AgentId> = self
            .agents
            .values()
            .filter(|a| a.can_take())
            .map(|a| a.id)
            .collect();
        for id in hungry {
            while self.ready_total > 0 && self.agents[&id].can_take() {
                let Some((r, i)) = self.pick(id) else { break };
                self.grant(now, id, r, i);
            }
        }
    }

    /// The best ready task for one free slot of `agent`: runs take turns; within a run, the
    /// highest-ranked task of any class the agent may run that fits its capacity.
    fn pick(&mut self, agent_id: AgentId) -> Option<(usize, usize)> {
        let n = self.runs.len();
        for k in 0..n {
            let r = (self.next_run_turn + k) % n;
            if self.runs[r].ready_count == 0
                || self.runs[r].stopping.is_some()
                || !serves(&self.by_execution, &self.agents[&agent_id], r)
            {
                continue;
            }
            if let Some(i) = self.pick_in_run(agent_id, r) {
                self.next_run_turn = (r + 1) % n;
                return Some((r, i));
            }
        }
        None
    }

    fn pick_in_run(&mut self, agent_id: AgentId, r: usize) -> Option<usize> {
        let agent = &self.agents[&agent_id];
        let run = &self.runs[r];
        let classes: Vec<Class> = run
            .ready
            .classes
            .iter()
            .filter(|(class, heap)| {
                !heap.is_empty() && run.spec.rules.allows(**class, &agent.template)
            })
            .map(|(class, _)| *class)
            .collect();
        let mut best: Option<(Class, Entry)> = None;
        for class in classes {
            if let Some(entry) = self.best_fit(agent_id, r, class)
                && best.is_none_or(|(_, b)| entry > b)
            {
                best = Some((class, entry));
            }
        }
        let (class, entry) = best?;
        // Remove the chosen entry from its heap (it is at or near the top).
        let heap = self.runs[r].ready.classes.get_mut(&class)?;
        let mut held_back = Vec::new();
        while let Some(top) = heap.pop() {
            if top == entry {
                break;
            }
            held_back.push(top);
        }
        heap.extend(held_back);
        Some(entry.task)
    }

    /// The highest-ranked entry of one class that fits the agent now; drops stale entries.
    fn best_fit(&mut self, agent_id: AgentId, r: usize, class: Class) -> Option<Entry> {
        const LOOK_DEEPER: usize = 32;
        let agent = &self.agents[&agent_id];
        let run = &mut self.runs[r];
        let heap = run.ready.classes.get_mut(&class)?;
        let mut held_back = Vec::new();
        let mut found = None;
        while let Some(top) = heap.pop() {
            let t = &run.tasks[top.task];
            if t.phase != Phase::Ready {
                continue; // stale
            }
            held_back.push(top);
            // A retry prefers an agent it has not failed on, when one has a free slot now.
            let avoid = t.avoid.contains(&agent_id)
                && self.agents.values().any(|a| {
                    a.id != agent_id
                        && a.can_take()
                        && !t.avoid.contains(&a.id)
                        && serves(&self.by_execution, a, r)
                        && run.spec.rules.allows(t.class, &a.template)
                });
            if !avoid && fits(agent, r, t, &run.spec.rules) {
                found = Some(top);
                break;
            }
            if held_back.len() >= LOOK_DEEPER {
                break;
            }
        }
        heap.extend(held_back);
        found
    }

    fn grant(&mut self, now: Duration, agent_id: AgentId, r: usize, i: usize) {
        let lease_id = LeaseId(self.next_lease);
        self.next_lease += 1;
        let token = self.next_token;
        self.next_token += 1;
        let agent = self
            .agents
            .get_mut(&agent_id)
            .expect("picked for a known agent");
        let run = &mut self.runs[r];
        let t = &mut run.tasks[i];
        t.phase = Phase::Leased(lease_id);
        t.attempts += 1;
        t.agent = agent.name.clone();
        run.ready_count -= 1;
        self.ready_total -= 1;
        run.waiting_reported.remove(&t.class);
        let group = (r, t.class);
        agent.leases.push(lease_id);
        *agent.groups.entry(group).or_insert(0) += 1;
        if !t.spec.cache {
            agent.non_cacheable += 1;
        }
        self.leases.insert(
            lease_id,
            Lease {
                token,
                agent: agent_id,
                run: r,
                task: i,
                granted_at: now,
                started: false,
                group,
                cache: t.spec.cache,
            },
        );
        let mut env = run.spec.env.clone();
        env.extend(t.spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let grant = LeaseGrant {
            lease: lease_id,
            token,
            run_id: run.id.clone(),
            task_id: t.spec.id.clone(),
            command: t.spec.command.clone(),
            env,
            timeout: t.spec.timeout.or(run.spec.default_timeout),
            attempt: t.attempts,
        };
        let event = RunEvent::TaskStarted {
            task: t.spec.id.clone(),
            submissions: t.submissions.clone(),
            agent: agent.name.clone(),
            template: agent.template.clone(),
            attempt: t.attempts,
        };
        self.actions.push(Action::Lease {
            agent: agent_id,
            grant,
        });
        self.actions.push(Action::Run {
            run_id: run.id.clone(),
            event,
        });
    }

    /// Reports, once per class, ready tasks that no connected agent may run.
    fn report_waiting(&mut self) {
        for r in 0..self.runs.len() {
            if self.runs[r].ready_count == 0 || !self.runs[r].is_active() {
                continue;
            }
            let classes: Vec<Class> = self.runs[r]
                .ready
                .classes
                .iter()
                .filter(|(c, h)| !h.is_empty() && !self.runs[r].waiting_reported.contains(c))
                .map(|(c, _)| *c)
                .collect();
            for class in classes {
                let run = &self.runs[r];
                let rules = &run.spec.rules;
                let served = self.agents.values().any(|a| {
                    a.connected
                        && !a.draining
                        && !a.stopped
                        && serves(&self.by_execution, a, r)
                        && rules.allows(class, &a.template)
                });
                if served {
                    continue;
                }
                let tasks: Vec<String> = run
                    .ready
                    .classes
                    .get(&class)
                    .map(|h| {
                        let mut ids: Vec<String> = h
                            .iter()
                            .filter(|e| run.tasks[e.task].phase == Phase::Ready)
                            .map(|e| run.tasks[e.task].spec.id.clone())
                            .collect();
                        ids.sort();
                        ids.dedup();
                        ids
                    })
                    .unwrap_or_default();
                if tasks.is_empty() {
                    continue;
                }
                let reason = match class {
                    Some(rule) => {
                        let types: Vec<String> = rules.rules[rule]
                            .run_on
                            .iter()
                            .map(|o| o.agent.clone())
                            .collect();
                        format!(
                            "waiting for an agent of type {} (assignment rule {} of {}); none is connected",
                            types.join(" or "),
                            rule + 1,
                            rules.path
                        )
                    }
                    None => "waiting for an agent; none is connected".to_string(),
                };
                let submissions = {
                    let mut s: Vec<u64> = tasks
                        .iter()
                        .flat_map(|id| run.tasks[run.index[id]].submissions.iter().copied())
                        .collect();
                    s.sort_unstable();
                    s.dedup();
                    s
                };
                let run_id = run.id.clone();
                self.runs[r].waiting_reported.insert(class);
                self.actions.push(Action::Run {
                    run_id,
                    event: RunEvent::Waiting {
                        submissions,
                        tasks,
                        reason,
                    },
                });
            }
        }
    }

    // ------------------------------------------------------------------ views

    pub fn progress(&self, run_id: &str, submission: Option<u64>) -> Option<Progress> {
        let run = &self.runs[*self.run_index.get(run_id)?];
        let members: Box<dyn Iterator<Item = &TaskState>> = match submission {
            Some(s) => Box::new(
                run.submissions
                    .iter()
                    .find(|x| x.id == s)?
                    .tasks
                    .iter()
                    .map(|&i| &run.tasks[i]),
            ),
            None => Box::new(run.tasks.iter()),
        };
        let mut p = Progress::default();
        for t in members {
            p.total += 1;
            match t.status() {
                TaskStatus::Queued => p.queued += 1,
                TaskStatus::Running => p.running += 1,
                TaskStatus::Succeeded => p.succeeded += 1,
                TaskStatus::Failed => p.failed += 1,
                TaskStatus::Skipped => p.skipped += 1,
            }
        }
        Some(p)
    }

    pub fn run_view(&self, run_id: &str) -> Option<RunView> {
        let run = &self.runs[*self.run_index.get(run_id)?];
        Some(RunView {
            id: run.id.clone(),
            ci_execution_id: run.spec.ci_execution_id.clone(),
            state: match run.done {
                None if run.stopping.is_some() => "stopping",
                None => "running",
                Some(true) => "succeeded",
                Some(false) => "failed",
            },
            progress: self.progress(run_id, None)?,
            tasks: run.tasks.iter().map(TaskState::summary).collect(),
        })
    }

    pub fn run_views(&self) -> Vec<RunView> {
        self.runs
            .iter()
            .filter_map(|r| self.run_view(&r.id))
            .collect()
    }

    pub fn agent_views(&self) -> Vec<AgentView> {
        self.agents
            .values()
            .map(|a| AgentView {
                id: a.id,
                name: a.name.clone(),
                template: a.template.clone(),
                slots: a.slots,
                ci_execution_id: a.ci_execution_id.clone(),
                connected: a.connected,
                draining: a.draining,
                running: a
                    .leases
                    .iter()
                    .filter_map(|l| self.leases.get(l))
                    .map(|l| self.runs[l.run].tasks[l.task].spec.id.clone())
                    .collect(),
            })
            .collect()
    }

    /// Whether a lease's agent has confirmed it started the task.
    pub fn lease_started(&self, lease: LeaseId) -> Option<bool> {
        self.leases.get(&lease).map(|l| l.started)
    }
}

/// Whether a ready task fits on the agent now: slots, the rule's (or task's) parallelism, and
/// one non-cacheable task at a time.
fn fits(agent: &Agent, r: usize, t: &TaskState, rules: &crate::rules::RuleSet) -> bool {
    if agent.running() >= agent.slots {
        return false;
    }
    if !t.spec.cache && agent.non_cacheable > 0 {
        return false;
    }
    let cap = t
        .class
        .and_then(|rule| rules.parallelism(rule, &agent.template))
        .or(t.spec.parallelism);
    !cap.is_some_and(|cap| agent.in_group((r, t.class)) >= cap)
}

/// Runs an agent serves: CI agents the newest run of their execution, others every run.
fn serves(by_execution: &HashMap<String, usize>, agent: &Agent, r: usize) -> bool {
    match &agent.ci_execution_id {
        Some(exec) => by_execution.get(exec) == Some(&r),
        None => true,
    }
}

fn run_over_reason(run_id: &str, success: bool) -> String {
    format!(
        "run {run_id} {}",
        if success {
            "completed"
        } else {
            "ended with failures"
        }
    )
}

/// For a task skipped because of another, the root cause to repeat to its own dependents.
fn reason_root(reason: &str) -> Option<String> {
    reason
        .starts_with("dependency ")
        .then(|| reason.to_string())
}

/// A small, good 64-bit mixer for seeded orders.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
