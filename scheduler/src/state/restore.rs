//! What must outlive the coordinator process, and how a new scheduler takes it back.
//!
//! The owner records, as things change, a [`TaskRecord`] per task it heard about (from the
//! scheduler's actions), the runs it opened, the graphs it submitted, the agents that
//! connected and the id [`Counters`]. After a restart it hands them back in the order they
//! happened as a list of [`Replay`] steps. [`Scheduler::restore`] rebuilds the graphs through
//! the ordinary submission path, ends tasks in the order they ended, and gives every lease that
//! was running back to its agent, which is then *away*: it has the reconnect grace period to
//! come back and report the lease, as after any lost connection. Nothing a restore does is
//! told to anyone: its actions are dropped (the owner kept the events it already sent).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::*;

/// One task as it stands, enough to restore it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub status: TaskStatus,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub duration_ms: u64,
    /// Leases granted so far.
    pub attempts: u32,
    /// Attempts that ended in failure.
    pub failures: u32,
    /// Leases taken back because the agent was lost.
    pub lost: u32,
    /// Agents a retry should avoid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub avoid: Vec<AgentId>,
    /// The lease the task runs under, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseRecord>,
}

/// A running lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub lease: LeaseId,
    pub token: u64,
    pub agent: AgentId,
    pub started: bool,
}

/// Who an agent is, enough to recognise it when it reconnects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: AgentId,
    pub name: String,
    pub instance_id: String,
    pub template: String,
    pub slots: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci_execution_id: Option<String>,
}

/// The next ids the scheduler hands out. Restoring them keeps a lease id or fencing token
/// from ever being issued twice, so a result under a lease from before the restart cannot
/// pass for one from after it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub next_agent: u64,
    pub next_lease: u64,
    pub next_token: u64,
    /// The number in the next run id.
    #[serde(default)]
    pub next_run: u64,
}

/// One thing that happened, replayed in the order it happened.
#[derive(Clone, Debug)]
pub enum Replay {
    StartRun {
        run_id: String,
        spec: RunSpec,
        /// When it was opened, by the wall clock (0: not known).
        unix_ms: u64,
    },
    Submit {
        run_id: String,
        tasks: Vec<TaskSpec>,
    },
    /// A task's last record. Records of ended tasks come in the order the tasks ended; a
    /// running or queued task's record may come anywhere after its submission.
    Task {
        run_id: String,
        task_id: String,
        record: TaskRecord,
    },
    Complete {
        run_id: String,
    },
}

/// Everything [`Scheduler::restore`] takes.
#[derive(Clone, Debug, Default)]
pub struct Restore {
    pub steps: Vec<Replay>,
    pub agents: Vec<AgentRecord>,
    pub counters: Counters,
}

/// What a restore brought back, and what it could not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub runs: usize,
    pub tasks_ended: usize,
    /// Leases given back to agents that now have the grace period to reconnect.
    pub leases: usize,
    /// Steps that did not fit the rest (the task is then simply queued again).
    pub skipped: Vec<String>,
}

impl Scheduler {
    /// The record of one task as it stands now.
    pub fn task_record(&self, run_id: &str, task_id: &str) -> Option<TaskRecord> {
        let run = &self.runs[self.runs.find(run_id).ok()?];
        let t = &run.tasks[*run.index.get(task_id)?];
        let lease = match t.phase() {
            Phase::Leased(id) => self.leases.get(id).map(|l| LeaseRecord {
                lease: id,
                token: l.token,
                agent: l.agent,
                started: l.started,
            }),
            _ => None,
        };
        Some(TaskRecord {
            status: t.status(),
            reason: t.reason.clone(),
            agent: t.agent.clone(),
            exit_code: t.exit_code,
            duration_ms: t.duration.as_millis() as u64,
            attempts: t.attempts,
            failures: t.failures,
            lost: t.lost,
            avoid: t.avoid.clone(),
            lease,
        })
    }

    /// Who a known agent is.
    /// How many agents with this name have a stream open (more than one: two machines were
    /// given the same `--name`).
    pub fn connected_named(&self, name: &str) -> usize {
        self.agents
            .named(name)
            .iter()
            .filter(|&&id| self.agents.get(id).is_some_and(|a| a.has_stream()))
            .count()
    }

    pub fn agent_record(&self, id: AgentId) -> Option<AgentRecord> {
        self.agents.get(id).map(|a| AgentRecord {
            id,
            name: a.name.clone(),
            instance_id: a.instance_id.clone(),
            template: a.template.clone(),
            slots: a.slots,
            ci_execution_id: a.ci_execution_id.clone(),
        })
    }

    pub fn counters(&self) -> Counters {
        let (next_lease, next_token) = self.leases.counters();
        Counters {
            next_agent: self.agents.next_id(),
            next_lease,
            next_token,
            next_run: self.runs.next_run(),
        }
    }

    /// Takes back what an earlier scheduler recorded. Call it on a new scheduler, before any
    /// agent connects. Leases come back held by their agents, which count as disconnected at
    /// `now`: one that does not reconnect within the grace period loses them as usual.
    pub fn restore(&mut self, now: Duration, restore: Restore) -> Restored {
        let mut report = Restored::default();
        // Stopping after a failure is applied once at the end: replayed one step at a time it
        // would skip tasks that were running when the failure came and ended later.
        let mut stops_on_failure: HashSet<usize> = HashSet::new();
        let mut first_failure: HashMap<usize, String> = HashMap::new();
        let mut running: Vec<(usize, usize, LeaseRecord)> = Vec::new();
        let agents: HashMap<AgentId, AgentRecord> =
            restore.agents.into_iter().map(|a| (a.id, a)).collect();

        for step in restore.steps {
            match step {
                Replay::StartRun {
                    run_id,
                    mut spec,
                    unix_ms,
                } => {
                    if self.runs.contains(&run_id) {
                        report
                            .skipped
                            .push(format!("run {run_id} was opened twice"));
                        continue;
                    }
                    let stops = spec.stop_on_failure;
                    spec.stop_on_failure = false;
                    let r = self.runs.open(Run::new(run_id, spec, unix_ms));
                    if stops {
                        stops_on_failure.insert(r);
                    }
                    report.runs += 1;
                }
                Replay::Submit { run_id, tasks } => {
                    let submitted = self
                        .runs
                        .find(&run_id)
                        .and_then(|r| self.submit_to(r, tasks));
                    if let Err(e) = submitted {
                        report
                            .skipped
                            .push(format!("a submission to run {run_id}: {e}"));
                    }
                }
                Replay::Complete { run_id } => {
                    if let Ok(r) = self.runs.find(&run_id) {
                        self.runs[r].complete_requested = true;
                        self.maybe_finish_run(r);
                    }
                }
                Replay::Task {
                    run_id,
                    task_id,
                    record,
                } => {
                    let found = self.runs.find(&run_id).ok().and_then(|r| {
                        let i = *self.runs[r].index.get(&task_id)?;
                        Some((r, i))
                    });
                    let Some((r, i)) = found else {
                        report
                            .skipped
                            .push(format!("task {task_id} of run {run_id} is unknown"));
                        continue;
                    };
                    let t = &mut self.runs[r].tasks[i];
                    t.attempts = record.attempts;
                    t.failures = record.failures;
                    t.lost = record.lost;
                    t.avoid = record.avoid.clone();
                    t.agent = record.agent.clone();
                    t.exit_code = record.exit_code;
                    t.duration = Duration::from_millis(record.duration_ms);
                    if !record.status.is_terminal() {
                        if let Some(lease) = record.lease {
                            running.retain(|&(rr, ii, _)| (rr, ii) != (r, i));
                            running.push((r, i, lease));
                        }
                        continue;
                    }
                    running.retain(|&(rr, ii, _)| (rr, ii) != (r, i));
                    if record.status == TaskStatus::Failed {
                        first_failure.entry(r).or_insert_with(|| task_id.clone());
                    }
                    if t.status().is_terminal() {
                        // Ended already through its dependencies; keep what was said about it.
                        if record.status == TaskStatus::Skipped {
                            t.skipped = Some(SkipReason::Recorded(record.reason.clone()));
                        }
                        t.reason = record.reason;
                    } else {
                        if record.status == TaskStatus::Skipped {
                            self.skip(r, i, SkipReason::Recorded(record.reason));
                        } else {
                            self.finish(r, i, record.status, record.reason);
                        }
                        report.tasks_ended += 1;
                    }
                    self.check_submissions(r);
                    self.maybe_finish_run(r);
                }
            }
        }

        // Agents that held leases come back as away.
        for &(_, _, lease) in &running {
            if self.agents.contains(lease.agent) {
                continue;
            }
            let Some(a) = agents.get(&lease.agent) else {
                continue;
            };
            self.agents
                .insert(Agent::new(a.clone(), Presence::Away { since: now }, now));
            self.schedule_agent(a.id);
        }
        for (r, i, lease) in running {
            let t = &self.runs[r].tasks[i];
            let task = t.spec.id.clone();
            if t.phase() != Phase::Ready || !self.agents.contains(lease.agent) {
                report.skipped.push(format!(
                    "lease {} of task {task} (its task is not ready or its agent is unknown)",
                    lease.lease
                ));
                continue;
            }
            let (attempts, agent) = (t.attempts, t.agent.clone());
            // The ordinary placement, under the lease's own id and token.
            self.leases.regrant(
                lease.lease,
                Lease {
                    token: lease.token,
                    agent: lease.agent,
                    run: r,
                    task: i,
                    granted_at: now,
                    started: lease.started,
                    group: (r, t.class),
                    cache: t.spec.cache,
                },
            );
            self.place(lease.agent, r, i, lease.lease, lease.token);
            let t = &mut self.runs[r].tasks[i];
            t.attempts = attempts;
            t.agent = agent;
            report.leases += 1;
        }
        let counters = restore.counters;
        self.agents.set_next_id(counters.next_agent);
        self.leases
            .set_counters(counters.next_lease, counters.next_token);
        self.runs.set_next_run(counters.next_run);

        for r in stops_on_failure {
            self.runs[r].spec.stop_on_failure = true;
            if let Some(failed) = first_failure.get(&r)
                && self.runs[r].stopping_after.is_none()
                && self.runs[r].ended.is_none()
            {
                self.stop_run_after_failure(r, failed);
                self.check_submissions(r);
                self.maybe_finish_run(r);
            }
        }
        // Everything above was said before the restart.
        self.actions.clear();
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn t(id: &str, deps: &[&str]) -> TaskSpec {
        TaskSpec::new(id, format!("run {id}")).depends_on(deps.iter().copied())
    }

    fn hello(name: &str, held: Vec<Held>) -> Hello {
        Hello {
            name: name.into(),
            instance_id: format!("{name}-1"),
            launch_template: "linux".into(),
            slots: 1,
            ci_execution_id: None,
            held,
            ..Hello::default()
        }
    }

    fn leases(s: &mut Scheduler) -> Vec<(AgentId, LeaseGrant)> {
        s.take_actions()
            .into_iter()
            .filter_map(|a| match a {
                Action::Lease { agent, grant } => Some((agent, grant)),
                _ => None,
            })
            .collect()
    }

    fn config() -> Config {
        Config {
            lease_timeout: ms(3000),
            reconnect_grace: ms(2000),
            ..Config::default()
        }
    }

    /// What an owner would have recorded, in order: the run, its graph, every task's record
    /// (ended ones first, in `ended` order), the agents and the counters.
    fn recorded(
        s: &Scheduler,
        run: &str,
        spec: RunSpec,
        graph: &[TaskSpec],
        ended: &[&str],
    ) -> Restore {
        let mut steps = vec![
            Replay::StartRun {
                run_id: run.into(),
                spec,
                unix_ms: 0,
            },
            Replay::Submit {
                run_id: run.into(),
                tasks: graph.to_vec(),
            },
        ];
        let mut order: Vec<&str> = ended.to_vec();
        order.extend(
            graph
                .iter()
                .map(|t| t.id.as_str())
                .filter(|id| !ended.contains(id)),
        );
        for id in order {
            steps.push(Replay::Task {
                run_id: run.into(),
                task_id: id.into(),
                record: s.task_record(run, id).unwrap(),
            });
        }
        let agents = s
            .agent_views()
            .iter()
            .filter_map(|a| s.agent_record(a.id))
            .collect();
        Restore {
            steps,
            agents,
            counters: s.counters(),
        }
    }

    fn spec() -> RunSpec {
        RunSpec {
            ci_execution_id: "exec".into(),
            ..RunSpec::default()
        }
    }

    /// a -> b -> c; a succeeded on agent one, b runs on agent one, then the coordinator dies.
    fn before_the_crash() -> (Scheduler, Restore, LeaseGrant) {
        let mut s = Scheduler::new(config());
        let graph = vec![t("a", &[]), t("b", &["a"]), t("c", &["b"])];
        s.start_run(ms(0), "run-1".into(), spec()).unwrap();
        s.submit(ms(0), "run-1", graph.clone()).unwrap();
        let one = s.agent_connected(ms(0), hello("one", vec![])).unwrap();
        let a = leases(&mut s).remove(0).1;
        s.task_finished(ms(100), one, a.lease, a.token, TaskResult::success(ms(100)))
            .unwrap();
        let b = leases(&mut s).remove(0).1;
        assert_eq!(b.task_id, "b");
        let restore = recorded(&s, "run-1", spec(), &graph, &["a"]);
        (s, restore, b)
    }

    #[test]
    fn an_agent_that_reconnects_after_a_restart_keeps_its_lease_and_ended_tasks_stay_ended() {
        let (_, restore, b) = before_the_crash();
        let mut s = Scheduler::new(config());
        let report = s.restore(ms(0), restore);
        assert_eq!(
            (report.runs, report.tasks_ended, report.leases),
            (1, 1, 1),
            "{report:?}"
        );
        assert!(report.skipped.is_empty(), "{report:?}");
        assert!(s.take_actions().is_empty(), "a restore says nothing");
        let view = s.run_view("run-1").unwrap();
        assert_eq!(view.progress.succeeded, 1);
        assert_eq!(view.progress.running, 1);

        let held = vec![Held {
            lease: b.lease,
            token: b.token,
        }];
        let one = s.agent_connected(ms(1500), hello("one", held)).unwrap();
        let actions = s.take_actions();
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Cancel { .. })),
            "{actions:?}"
        );
        s.task_finished(
            ms(1600),
            one,
            b.lease,
            b.token,
            TaskResult::success(ms(1000)),
        )
        .unwrap();
        let c = leases(&mut s).remove(0).1;
        assert_eq!(c.task_id, "c");
        assert!(
            c.lease > b.lease && c.token > b.token,
            "ids are never reused"
        );
        s.task_finished(ms(1700), one, c.lease, c.token, TaskResult::success(ms(10)))
            .unwrap();
        s.complete_run(ms(1700), "run-1").unwrap();
        let view = s.run_view("run-1").unwrap();
        assert_eq!(view.state, "succeeded");
        assert!(view.tasks.iter().all(|t| t.attempts == 1), "{view:?}");
    }

    #[test]
    fn a_lease_whose_agent_does_not_come_back_after_a_restart_is_requeued_after_the_grace() {
        let (_, restore, b) = before_the_crash();
        let mut s = Scheduler::new(config());
        s.restore(ms(0), restore);
        s.tick(ms(1900));
        assert!(s.take_actions().is_empty(), "still within the grace period");
        let two = s.agent_connected(ms(1950), {
            let mut h = hello("two", vec![]);
            h.instance_id = "two-1".into();
            h
        });
        let two = two.unwrap();
        assert!(leases(&mut s).is_empty(), "b still belongs to agent one");
        s.tick(ms(2001));
        let actions = s.take_actions();
        let requeued = actions.iter().any(|a| {
            matches!(a, Action::Run { event: RunEvent::TaskRequeued { task, reason, .. }, .. }
                if task == "b" && reason.contains("did not come back"))
        });
        assert!(requeued, "{actions:?}");
        let again = actions
            .iter()
            .find_map(|a| match a {
                Action::Lease { agent, grant } => Some((*agent, grant.clone())),
                _ => None,
            })
            .expect("b leased again");
        assert_eq!(again.0, two);
        assert_eq!(again.1.attempt, 2);
        // Agent one's late result is refused.
        assert!(s.agent_connected(ms(2100), hello("one", vec![])).is_ok());
        let one = s
            .agent_views()
            .into_iter()
            .find(|a| a.name == "one")
            .unwrap()
            .id;
        assert!(matches!(
            s.task_finished(ms(2200), one, b.lease, b.token, TaskResult::success(ms(5))),
            Err(Refused::UnknownLease(_))
        ));
    }

    #[test]
    fn a_restored_run_that_stops_on_failure_keeps_its_running_task_and_starts_nothing_new() {
        let mut s = Scheduler::new(config());
        let spec = RunSpec {
            stop_on_failure: true,
            ..spec()
        };
        let graph = vec![t("a", &[]), t("b", &[]), t("c", &["a"]), t("d", &[])];
        s.start_run(ms(0), "run-1".into(), spec.clone()).unwrap();
        s.submit(ms(0), "run-1", graph.clone()).unwrap();
        let one = s.agent_connected(ms(0), hello("one", vec![])).unwrap();
        let two = s.agent_connected(ms(0), hello("two", vec![])).unwrap();
        let granted = leases(&mut s);
        let on = |agent: AgentId| granted.iter().find(|(a, _)| *a == agent).unwrap().1.clone();
        let (first, second) = (on(one), on(two));
        s.task_finished(
            ms(10),
            one,
            first.lease,
            first.token,
            TaskResult::exit(1, ms(10)),
        )
        .unwrap();
        let mut ended: Vec<String> = vec![first.task_id.clone()];
        for v in s.run_view("run-1").unwrap().tasks {
            if v.status == TaskStatus::Skipped {
                ended.push(v.task.clone());
            }
        }
        let ended: Vec<&str> = ended.iter().map(String::as_str).collect();
        let restore = recorded(&s, "run-1", spec, &graph, &ended);

        let mut s = Scheduler::new(config());
        let report = s.restore(ms(0), restore);
        assert!(report.skipped.is_empty(), "{report:?}");
        let view = s.run_view("run-1").unwrap();
        assert_eq!(view.state, "stopping");
        assert_eq!(view.progress.running, 1, "{view:?}");
        let two = s
            .agent_connected(
                ms(100),
                hello(
                    "two",
                    vec![Held {
                        lease: second.lease,
                        token: second.token,
                    }],
                ),
            )
            .unwrap();
        assert!(leases(&mut s).is_empty());
        s.task_finished(
            ms(200),
            two,
            second.lease,
            second.token,
            TaskResult::success(ms(1)),
        )
        .unwrap();
        let view = s.run_view("run-1").unwrap();
        assert_eq!(view.state, "failed");
        assert_eq!(
            (
                view.progress.failed,
                view.progress.succeeded,
                view.progress.skipped
            ),
            (1, 1, 2)
        );
    }

    #[test]
    fn a_task_that_failed_once_keeps_its_failure_count_and_is_flaky_when_it_passes() {
        let mut s = Scheduler::new(config());
        let spec = RunSpec {
            retries: 1,
            ..spec()
        };
        let graph = vec![t("a", &[])];
        s.start_run(ms(0), "run-1".into(), spec.clone()).unwrap();
        s.submit(ms(0), "run-1", graph.clone()).unwrap();
        let one = s.agent_connected(ms(0), hello("one", vec![])).unwrap();
        let a = leases(&mut s).remove(0).1;
        s.task_finished(ms(10), one, a.lease, a.token, TaskResult::exit(2, ms(10)))
            .unwrap();
        let again = leases(&mut s).remove(0).1;
        let restore = recorded(&s, "run-1", spec, &graph, &[]);

        let mut s = Scheduler::new(config());
        s.restore(ms(0), restore);
        let held = vec![Held {
            lease: again.lease,
            token: again.token,
        }];
        let one = s.agent_connected(ms(10), hello("one", held)).unwrap();
        s.task_finished(
            ms(20),
            one,
            again.lease,
            again.token,
            TaskResult::success(ms(5)),
        )
        .unwrap();
        let view = s.run_view("run-1").unwrap();
        let a = &view.tasks[0];
        assert_eq!(
            (a.status, a.attempts, a.flaky),
            (TaskStatus::Succeeded, 2, true)
        );
    }

    #[test]
    fn steps_that_do_not_fit_are_reported_not_fatal() {
        let mut s = Scheduler::new(config());
        let report = s.restore(
            ms(0),
            Restore {
                steps: vec![
                    Replay::Submit {
                        run_id: "nope".into(),
                        tasks: vec![t("a", &[])],
                    },
                    Replay::Task {
                        run_id: "nope".into(),
                        task_id: "a".into(),
                        record: TaskRecord {
                            status: TaskStatus::Succeeded,
                            reason: String::new(),
                            agent: String::new(),
                            exit_code: Some(0),
                            duration_ms: 0,
                            attempts: 1,
                            failures: 0,
                            lost: 0,
                            avoid: vec![],
                            lease: None,
                        },
                    },
                ],
                ..Restore::default()
            },
        );
        assert_eq!(report.skipped.len(), 2, "{report:?}");
        assert_eq!(s.counters().next_lease, 1);
    }
}
