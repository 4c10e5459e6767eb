//! Runs: opening, submissions (with critical-path ranks), completion.

use std::time::Duration;

use super::*;

impl Scheduler {
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
        let exec = spec.ci_execution_id.clone();
        let index = self.runs.push(Run::new(run_id.clone(), spec));
        self.run_index.insert(run_id.clone(), index);
        self.by_execution.insert(exec, index);
        self.assign(now);
        Ok((run_id, false))
    }

    /// The newest run of a CI execution.
    pub fn run_for_execution(&self, ci_execution_id: &str) -> Option<&str> {
        self.by_execution
            .get(ci_execution_id)
            .map(|&i| self.runs[i].id.as_str())
    }

    pub(super) fn run_index(&self, run_id: &str) -> Result<usize, SchedError> {
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
        self.plan_bins(r);
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
    pub fn complete_run(&mut self, now: Duration, run_id: &str) -> Result<(), SchedError> {
        let r = self.run_index(run_id)?;
        self.runs[r].complete_requested = true;
        self.maybe_finish_run(r);
        self.assign(now);
        Ok(())
    }
}

pub(super) fn run_over_reason(run_id: &str, success: bool) -> String {
    format!(
        "run {run_id} {}",
        if success {
            "completed"
        } else {
            "ended with failures"
        }
    )
}

/// A small, good 64-bit mixer for seeded orders.
pub(super) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
