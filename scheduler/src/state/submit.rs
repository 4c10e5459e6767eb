//! Runs: opening, submissions (with critical-path ranks), completion, forgetting.

use std::time::Duration;

use super::*;

impl Scheduler {
    /// Opens a run, or answers with the open run of the same CI execution and attempt.
    pub(super) fn on_start_run(
        &mut self,
        now: Duration,
        spec: RunSpec,
        unix_ms: u64,
    ) -> Result<Reply, SchedError> {
        if let Some(run_id) = self.open_run_of(&spec) {
            return Ok(Reply::RunStarted {
                run_id,
                existing: true,
            });
        }
        let run_id = self.runs.new_id(unix_ms);
        self.open(now, run_id.clone(), spec, unix_ms);
        Ok(Reply::RunStarted {
            run_id,
            existing: false,
        })
    }

    /// Opens a run under `run_id`; a re-run pipeline's run gets its rerun check.
    pub(super) fn open(&mut self, now: Duration, run_id: String, spec: RunSpec, unix_ms: u64) {
        let rerun = spec.attempt > 1;
        let r = self.runs.open(Run::new(run_id, spec, unix_ms));
        if rerun {
            self.rerun_checks.insert((now + self.config.rerun_grace, r));
        }
    }

    /// The open run of the same CI execution and attempt, if there is one (a retried main
    /// job step).
    pub(super) fn open_run_of(&self, spec: &RunSpec) -> Option<String> {
        let r = self.runs.newest_of(&spec.ci_execution_id)?;
        let run = &self.runs[r];
        (run.spec.attempt == spec.attempt && run.is_active()).then(|| run.id.clone())
    }

    pub(super) fn on_submit(
        &mut self,
        run: RunRef,
        tasks: Vec<TaskSpec>,
    ) -> Result<Reply, SchedError> {
        let r = self.runs.resolve(&run)?;
        let count = tasks.len() as u32;
        let submission = self.submit_to(r, tasks)?;
        Ok(Reply::Submitted {
            run_id: self.runs[r].id.clone(),
            submission,
            tasks: count,
        })
    }

    /// Adds a task graph to a run. Tasks may depend on tasks of earlier submissions; a task id
    /// that an earlier submission holds already is shared, not run twice.
    pub(super) fn submit_to(&mut self, r: usize, tasks: Vec<TaskSpec>) -> Result<u64, SchedError> {
        if !self.runs[r].is_active() {
            return Err(SchedError::RunEnded(self.runs[r].id.clone()));
        }
        let run = &self.runs[r];
        // Tasks the run holds already are shared; the rest form the new graph.
        // (A first submission shares nothing: no need to move every task once more.)
        let (existing, fresh): (Vec<TaskSpec>, Vec<TaskSpec>) = if run.index.is_empty() {
            (Vec::new(), tasks)
        } else {
            tasks
                .into_iter()
                .partition(|t| run.index.contains_key(&t.id))
        };
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
            // Room for the whole graph at once: growing one task at a time copies them all,
            // again and again, while every agent waits.
            run.tasks.reserve(graph.tasks.len());
            run.index.reserve(graph.tasks.len());
            members.reserve(graph.tasks.len());
            for (k, spec) in graph.tasks.into_iter().enumerate() {
                let class = run.spec.rules.rule_for(
                    &spec.project,
                    &spec.target,
                    spec.configuration.as_deref(),
                );
                run.index.insert(spec.id.clone(), base + k);
                let mut task = TaskState::new(spec, submission, class, ranks[k]);
                task.dependents = graph.dependents[k].iter().map(|&d| base + d).collect();
                task.unmet = graph.deps[k].len();
                run.tasks.push(task);
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
                    match run.tasks[j].phase() {
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
        let blocked: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&i| run.tasks[i].phase() == Phase::Blocked)
            .collect();
        self.plan_bins(r);
        for i in blocked {
            let run = &self.runs[r];
            let failed_dep = run.tasks[i]
                .spec
                .depends_on
                .iter()
                .map(|d| run.index[d])
                .find(|&j| {
                    matches!(
                        run.tasks[j].phase(),
                        Phase::Done(TaskStatus::Failed | TaskStatus::Skipped)
                    )
                });
            if let Some(j) = failed_dep {
                if run.tasks[i].phase() == Phase::Blocked {
                    let dependency = run.tasks[j].spec.id.clone();
                    self.skip(r, i, SkipReason::DependencyNotSucceeded { dependency });
                }
            } else if run.tasks[i].unmet == 0 && run.stopping_after.is_none() {
                self.make_ready(r, i);
            } else if let Some(reason) = run.stopping() {
                self.skip(r, i, reason);
            }
        }
        self.check_submissions(r);
        self.maybe_finish_run(r);
        Ok(submission)
    }

    /// Critical-path ranks (or the policy's stand-in) for a new graph, in milliseconds.
    pub(super) fn ranks(&self, graph: &TaskGraph) -> Vec<u64> {
        let n = graph.tasks.len();
        match self.config.policy {
            Policy::Fifo | Policy::Binning => vec![0; n],
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
    pub(super) fn on_complete(&mut self, run: RunRef) -> Result<Reply, SchedError> {
        let r = self.runs.resolve(&run)?;
        self.runs[r].complete_requested = true;
        self.maybe_finish_run(r);
        Ok(Reply::Completed {
            run_id: self.runs[r].id.clone(),
        })
    }

    /// Forgets a run that has ended: its tasks, submissions and queues are dropped, its id is
    /// no longer known (lookups answer [`SchedError::UnknownRun`]) and its CI execution id no
    /// longer names it. Other runs keep their indices. An active run is refused.
    pub(super) fn on_forget(&mut self, run_id: &str) -> Result<(), SchedError> {
        let r = self.runs.find(run_id)?;
        // An ended run has no task left running; the lease check only guards that invariant.
        if self.runs[r].is_active() || self.leases.iter().any(|(_, l)| l.run == r) {
            return Err(SchedError::RunActive(run_id.to_string()));
        }
        for agent in self.agents.iter_mut() {
            agent.forget_run(r);
        }
        self.runs.forget(r);
        Ok(())
    }
}

/// A small, good 64-bit mixer for seeded orders.
pub(super) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl Scheduler {
    /// An operator cancels a run: queued tasks are skipped, running ones cancelled on their
    /// agents and failed, and the run ends failed with "cancelled by BY".
    pub(super) fn on_cancel(&mut self, run: RunRef, by: String) -> Result<Reply, SchedError> {
        let r = self.runs.resolve(&run)?;
        let run_id = self.runs[r].id.clone();
        if !self.runs[r].is_active() {
            return Err(SchedError::RunEnded(run_id));
        }
        self.abort(r, format!("cancelled by {by}"));
        Ok(Reply::Completed { run_id })
    }

    /// Stops a run from outside: queued tasks are skipped, running ones cancelled on their
    /// agents and failed, all with `why`, and the run ends failed with it.
    pub(super) fn abort(&mut self, r: usize, why: String) {
        self.runs[r].aborted = Some(why.clone());
        let skip = SkipReason::Aborted(why.clone());
        for i in 0..self.runs[r].tasks.len() {
            if matches!(self.runs[r].tasks[i].phase(), Phase::Blocked | Phase::Ready) {
                self.skip(r, i, skip.clone());
            }
        }
        let leased: Vec<LeaseId> = (0..self.runs[r].tasks.len())
            .filter_map(|i| match self.runs[r].tasks[i].phase() {
                Phase::Leased(lease) => Some(lease),
                _ => None,
            })
            .collect();
        for lease_id in leased {
            let lease = self.release(lease_id);
            if self.agents.get(lease.agent).is_some_and(Agent::is_live) {
                self.actions.push(Action::Cancel {
                    agent: lease.agent,
                    lease: lease_id,
                    reason: why.clone(),
                });
            }
            self.finish(r, lease.task, TaskStatus::Failed, why.clone());
        }
        // Complete as well: nothing more may be submitted, and CI agents stop.
        self.runs[r].complete_requested = true;
        self.check_submissions(r);
        self.maybe_finish_run(r);
    }
}
