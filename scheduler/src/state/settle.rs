//! Tasks reaching their end, and what follows from it: dependents become ready or are
//! skipped, submissions and runs end, CI agents of an ended run are stopped.

use super::*;

impl Scheduler {
    /// A task reached a final state: tell the main job and settle its dependents.
    pub(super) fn finish(&mut self, r: usize, i: usize, status: TaskStatus, reason: String) {
        self.runs.end(r, i, status);
        let run = &mut self.runs[r];
        let t = &mut run.tasks[i];
        t.reason = reason.clone();
        let event = RunEvent::TaskFinished(TaskFinished {
            task: t.spec.id.clone(),
            target: t.spec.target.clone(),
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
                    if dt.unmet == 0 && dt.phase() == Phase::Blocked {
                        match self.runs[r].stopping() {
                            Some(stop) => self.skip(r, d, stop),
                            None => self.make_ready(r, d),
                        }
                    }
                }
            }
            TaskStatus::Failed | TaskStatus::Skipped => {
                let why = if status == TaskStatus::Failed {
                    SkipReason::DependencyFailed {
                        dependency: id.clone(),
                    }
                } else {
                    match &self.runs[r].tasks[i].skipped {
                        Some(own) => own.for_dependents(&id),
                        None => SkipReason::DependencySkipped {
                            dependency: id.clone(),
                        },
                    }
                };
                for d in dependents {
                    if self.runs[r].tasks[d].phase() == Phase::Blocked {
                        self.skip(r, d, why.clone());
                    }
                }
                if status == TaskStatus::Failed
                    && self.runs[r].spec.stop_on_failure
                    && self.runs[r].stopping_after.is_none()
                    && self.runs[r].aborted.is_none()
                {
                    self.stop_run_after_failure(r, &id);
                }
            }
            TaskStatus::Queued | TaskStatus::Running => unreachable!("not a final status"),
        }
    }

    pub(super) fn skip(&mut self, r: usize, i: usize, why: SkipReason) {
        let reason = why.to_string();
        self.runs[r].tasks[i].skipped = Some(why);
        self.finish(r, i, TaskStatus::Skipped, reason);
    }

    /// `--stop-agents-on-failure`: nothing new starts; running tasks finish.
    pub(super) fn stop_run_after_failure(&mut self, r: usize, failed: &str) {
        self.runs[r].stopping_after = Some(failed.to_string());
        let reason = self.runs[r].stopping().expect("set above");
        let waiting: Vec<usize> = (0..self.runs[r].tasks.len())
            .filter(|&i| matches!(self.runs[r].tasks[i].phase(), Phase::Blocked | Phase::Ready))
            .collect();
        for i in waiting {
            if !self.runs[r].tasks[i].status().is_terminal() {
                self.skip(r, i, reason.clone());
            }
        }
    }

    pub(super) fn check_submissions(&mut self, r: usize) {
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
    pub(super) fn maybe_finish_run(&mut self, r: usize) {
        let run = &self.runs[r];
        if run.ended.is_some() || !run.all_ended() {
            return;
        }
        let stop_targets_done = !run.spec.stop_agents_after.is_empty()
            && run
                .spec
                .stop_agents_after
                .iter()
                .all(|target| run.tasks.iter().any(|t| &t.spec.target == target));
        let stopping = run.stopping_after.is_some() || run.aborted.is_some();
        if !(run.complete_requested || stop_targets_done || stopping) {
            return;
        }
        let success = run.failed() == 0 && !stopping;
        let reason = if let Some(why) = &run.aborted {
            why.clone()
        } else if let Some(stop) = run.stopping() {
            stop.to_string()
        } else if run.failed() > 0 {
            format!("{} task(s) failed", run.failed())
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
        self.runs[r].ended = Some(success);
        self.actions.push(Action::Run {
            run_id: run_id.clone(),
            event: RunEvent::RunDone { success, reason },
        });
        if self.runs.newest_of(&exec) == Some(r) {
            let ci_agents: Vec<AgentId> = self
                .agents
                .iter()
                .filter(|a| a.ci_execution_id.as_deref() == Some(exec.as_str()))
                .map(|a| a.id)
                .collect();
            for id in ci_agents {
                self.stop_agent(id, run_over_reason(&run_id, success));
            }
        }
    }
}

/// What a CI agent of an ended run is told.
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
