//! The simulator: runs a task graph through the very [`Scheduler`] the coordinator owns, under a
//! virtual clock, with simulated agents that take each task's true duration.
//!
//! The scheduler is driven exactly as the coordinator drives it: a run is opened, the agents of
//! a fleet connect, the graph is submitted, and every [`Action::Lease`] starts a task at `now`
//! whose result comes back, through [`Scheduler::task_finished`], at `now + true duration`.
//! The true durations never reach the scheduler any other way: it ranks tasks with what the
//! coordinator would know (the graph's `estimate` hints and learned history).

pub mod bench;
mod bound;
pub mod datasets;
pub mod decision;
pub mod render;
pub mod rng;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

use crate::estimate::Estimates;
use crate::fleet::FleetSpec;
use crate::rules::RuleSet;
use crate::state::{
    Action, AgentId, Config, Event, Hello, LeaseId, Policy, Reply, RunEvent, RunRef, RunSpec,
    SchedError, Scheduler, TaskResult, TaskStatus,
};
use crate::task::TaskSpec;

pub use bound::lower_bound;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Setup<'a> {
    pub tasks: &'a [TaskSpec],
    /// True durations. A task missing here takes its `estimate` hint, else the default estimate.
    pub durations: &'a HashMap<String, Duration>,
    pub rules: &'a RuleSet,
    pub fleet: &'a FleetSpec,
    pub policy: Policy,
    /// History the scheduler starts with (what a coordinator would have learned); empty if none.
    pub estimates: Option<Estimates>,
    /// Workspaces: an agent that does not hold the run's repository yet pays this on its
    /// first task (cloning, init steps); the fleet's last `warm_agents` agents hold it already.
    pub cold_start: Option<ColdStart>,
}

/// What preparing a workspace costs, and how many agents have one already.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ColdStart {
    pub penalty: Duration,
    pub warm_agents: usize,
}

/// One task on one slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub task: String,
    pub agent: String,
    pub template: String,
    /// Slot of the agent, from 0; for drawing the timeline.
    #[serde(skip)]
    pub slot: u32,
    #[serde(serialize_with = "as_ms")]
    pub start_ms: Duration,
    #[serde(serialize_with = "as_ms")]
    pub end_ms: Duration,
}

fn as_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// A simulated agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimAgent {
    pub name: String,
    pub template: String,
    pub slots: u32,
}

/// The outcome of one simulation.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub policy: String,
    pub makespan: Duration,
    pub lower_bound: Duration,
    /// Busy slot time over (slots × makespan).
    pub utilization: f64,
    pub agents: Vec<SimAgent>,
    /// In start order.
    pub schedule: Vec<Placement>,
    /// First tasks on agents that had to prepare the workspace (with `cold_start`).
    pub cold_starts: usize,
}

/// Why a simulation could not finish.
#[derive(Debug, Error)]
pub enum SimError {
    #[error(transparent)]
    Scheduler(#[from] SchedError),
    #[error("task `{task}` may run on no agent type of the fleet ({templates}); {why}")]
    NoEligibleAgent {
        task: String,
        templates: String,
        why: String,
    },
    #[error("the simulation is stuck with {left} task(s) not done: {reason}")]
    Stuck { left: usize, reason: String },
    #[error("the fleet has no agents")]
    NoAgents,
}

/// The name a policy goes by on the command line and in reports.
pub fn policy_name(policy: Policy) -> &'static str {
    match policy {
        Policy::CriticalPath => "critical-path",
        Policy::Fifo => "fifo",
        Policy::Random { .. } => "random",
        Policy::Binning => "binning",
    }
}

/// Reads a policy name (`critical-path`, `fifo`, `binning`, `random`); `random` uses `seed`.
pub fn parse_policy(name: &str, seed: u64) -> Option<Policy> {
    Some(match name {
        "critical-path" | "cp" => Policy::CriticalPath,
        "fifo" => Policy::Fifo,
        "binning" => Policy::Binning,
        "random" => Policy::Random { seed },
        _ => return None,
    })
}

/// The agents of a fleet, named `TEMPLATE-N` (N from 1 within each template).
pub fn fleet_agents(fleet: &FleetSpec) -> Vec<SimAgent> {
    let mut counts: HashMap<&str, u32> = HashMap::new();
    let mut agents = Vec::new();
    for g in &fleet.groups {
        for _ in 0..g.count {
            let n = counts.entry(g.template.as_str()).or_default();
            *n += 1;
            agents.push(SimAgent {
                name: format!("{}-{n}", g.template),
                template: g.template.clone(),
                slots: g.slots,
            });
        }
    }
    agents
}

/// The true duration of each task: `durations`, else its hint, else the default estimate.
pub fn true_durations(tasks: &[TaskSpec], durations: &HashMap<String, Duration>) -> Vec<Duration> {
    let default = Estimates::default().default;
    tasks
        .iter()
        .map(|t| {
            durations
                .get(&t.id)
                .copied()
                .or(t.estimate)
                .unwrap_or(default)
        })
        .collect()
}

/// A task's end: when, lease order (ties), agent, lease, fencing token.
type Completion = (Duration, u64, AgentId, LeaseId, u64);

/// Runs the graph on the fleet to the end.
pub fn simulate(setup: &Setup) -> Result<Outcome, SimError> {
    let agents = fleet_agents(setup.fleet);
    if agents.is_empty() {
        return Err(SimError::NoAgents);
    }
    check_eligibility(setup)?;
    let truth = true_durations(setup.tasks, setup.durations);
    let truth: HashMap<&str, Duration> = setup
        .tasks
        .iter()
        .zip(&truth)
        .map(|(t, d)| (t.id.as_str(), *d))
        .collect();

    // No timing rule may fire: nothing heartbeats in a simulation.
    let forever = Duration::from_secs(100 * 365 * 24 * 3600);
    let mut sched = Scheduler::new(Config {
        lease_timeout: forever,
        reconnect_grace: forever,
        policy: setup.policy,
        ..Config::default()
    });
    if let Some(est) = &setup.estimates {
        sched.set_estimates(est.clone());
    }
    let zero = Duration::ZERO;
    let repository = if setup.cold_start.is_some() {
        "simulated-repository"
    } else {
        ""
    };
    let spec = RunSpec {
        ci_execution_id: "simulation".into(),
        rules: setup.rules.clone(),
        repository: repository.into(),
        ..RunSpec::default()
    };
    let cold = setup.cold_start.unwrap_or_default();
    // The fleet's last `warm_agents` agents hold the repository already.
    let first_warm = agents.len().saturating_sub(cold.warm_agents);
    let mut warm: Vec<bool> = (0..agents.len()).map(|k| k >= first_warm).collect();
    let mut cold_starts = 0;
    let mut actions = Vec::new();
    let send = |sched: &mut Scheduler, actions: &mut Vec<Action>, event: Event| {
        let outcome = sched.handle(zero, event);
        actions.extend(outcome.actions);
        outcome.reply
    };
    let run_id = match send(
        &mut sched,
        &mut actions,
        Event::StartRun { spec, unix_ms: 0 },
    )? {
        Reply::RunStarted { run_id, .. } => run_id,
        other => unreachable!("a new run answered {other:?}"),
    };
    let mut by_id: HashMap<AgentId, usize> = HashMap::new();
    for (k, a) in agents.iter().enumerate() {
        let repositories = if setup.cold_start.is_some() && warm[k] {
            vec![repository.to_string()]
        } else {
            Vec::new()
        };
        let hello = Hello {
            repositories,
            name: a.name.clone(),
            instance_id: "sim".into(),
            launch_template: a.template.clone(),
            slots: a.slots,
            ci_execution_id: None,
            held: Vec::new(),
            ..Hello::default()
        };
        if let Reply::Agent(id) = send(&mut sched, &mut actions, Event::Hello(hello))? {
            by_id.insert(id, k);
        }
    }
    let run = RunRef::Id(run_id);
    let tasks = setup.tasks.to_vec();
    send(
        &mut sched,
        &mut actions,
        Event::Submit {
            run: run.clone(),
            tasks,
        },
    )?;
    send(&mut sched, &mut actions, Event::Complete { run })?;

    // Completions in time order; ties in lease order.
    let mut pending: BinaryHeap<Reverse<Completion>> = BinaryHeap::new();
    let mut busy: Vec<Vec<bool>> = agents
        .iter()
        .map(|a| vec![false; a.slots as usize])
        .collect();
    let mut open: HashMap<LeaseId, usize> = HashMap::new();
    let mut schedule: Vec<Placement> = Vec::new();
    let mut waiting = String::new();
    let mut now = zero;
    let mut done = false;
    let mut failed: Option<String> = None;
    loop {
        for action in std::mem::take(&mut actions) {
            match action {
                Action::Lease { agent, grant } => {
                    let k = by_id[&agent];
                    let slot = busy[k].iter().position(|b| !b).unwrap_or(0);
                    busy[k][slot] = true;
                    let mut took = truth.get(grant.task_id.as_str()).copied().unwrap_or(zero);
                    if setup.cold_start.is_some() && !warm[k] {
                        warm[k] = true;
                        cold_starts += 1;
                        took += cold.penalty;
                    }
                    pending.push(Reverse((
                        now + took,
                        grant.lease.0,
                        agent,
                        grant.lease,
                        grant.token,
                    )));
                    open.insert(grant.lease, schedule.len());
                    schedule.push(Placement {
                        task: grant.task_id,
                        agent: agents[k].name.clone(),
                        template: agents[k].template.clone(),
                        slot: slot as u32,
                        start_ms: now,
                        end_ms: now + took,
                    });
                }
                Action::Run { event, .. } => match event {
                    RunEvent::RunDone { .. } => done = true,
                    RunEvent::Waiting { reason, tasks, .. } => {
                        waiting = format!("{} ({})", reason, tasks.join(", "));
                    }
                    RunEvent::TaskFinished(f) if f.status != TaskStatus::Succeeded => {
                        failed.get_or_insert(format!("task `{}`: {}", f.task, f.reason));
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        if done {
            break;
        }
        let Some(Reverse((at, ..))) = pending.peek().copied() else {
            let left = setup.tasks.len() - schedule.len();
            let reason = failed.or(Some(waiting).filter(|w| !w.is_empty()));
            return Err(SimError::Stuck {
                left,
                reason: reason.unwrap_or_else(|| "no agent takes the ready tasks".into()),
            });
        };
        now = at;
        // Every task that ends at this instant ends before any free slot chooses.
        let mut ended = Vec::new();
        while let Some(Reverse((t, _, agent, lease, token))) = pending.peek().copied() {
            if t != now {
                break;
            }
            pending.pop();
            let placed = open.remove(&lease).expect("a lease the simulator started");
            let p = &schedule[placed];
            busy[by_id[&agent]][p.slot as usize] = false;
            let took = p.end_ms - p.start_ms;
            ended.push(Event::Finished {
                agent,
                lease,
                token,
                result: TaskResult::success(took),
            });
        }
        let (_, more) = sched.handle_batch(now, ended);
        debug_assert!(
            !more.iter().any(|a| matches!(a, Action::Refused { .. })),
            "the simulator reports only leases it holds"
        );
        actions = more;
    }
    let makespan = schedule.iter().map(|p| p.end_ms).max().unwrap_or(zero);
    let slots: u64 = agents.iter().map(|a| u64::from(a.slots)).sum();
    let busy_ms: f64 = schedule
        .iter()
        .map(|p| (p.end_ms - p.start_ms).as_secs_f64())
        .sum();
    let utilization = if makespan.is_zero() {
        0.0
    } else {
        busy_ms / (slots as f64 * makespan.as_secs_f64())
    };
    Ok(Outcome {
        policy: policy_name(setup.policy).to_string(),
        makespan,
        lower_bound: lower_bound(setup.tasks, setup.durations, setup.rules, setup.fleet),
        utilization,
        agents,
        schedule,
        cold_starts,
    })
}

/// A task that no agent type of the fleet may run is an error up front, not a hang.
fn check_eligibility(setup: &Setup) -> Result<(), SimError> {
    let templates = setup.fleet.templates();
    for t in setup.tasks {
        let rule = setup
            .rules
            .rule_for(&t.project, &t.target, t.configuration.as_deref());
        if !templates.iter().any(|tpl| setup.rules.allows(rule, tpl)) {
            let why = match rule {
                Some(r) => format!(
                    "assignment rule {} of {} sends it to {}",
                    r + 1,
                    setup.rules.path,
                    setup.rules.rules[r]
                        .run_on
                        .iter()
                        .map(|o| o.agent.as_str())
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
                None => "no rule matches it".into(),
            };
            return Err(SimError::NoEligibleAgent {
                task: t.id.clone(),
                templates: templates.join(", "),
                why,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
