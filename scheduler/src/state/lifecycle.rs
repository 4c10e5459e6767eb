//! A task attempt from start to end: results, fencing, revocation, retries, skips, and the end of submissions and runs.

use std::time::Duration;

use super::runs::run_over_reason;
use super::*;

impl Scheduler {
    pub(super) fn check_lease(
        &self,
        agent: AgentId,
        lease: LeaseId,
        token: u64,
    ) -> Result<&Lease, Refused> {
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
    pub(super) fn release(&mut self, lease_id: LeaseId) -> Lease {
        let lease = self
            .leases
            .remove(&lease_id)
            .expect("caller checked the lease");
        self.agent_may_take(lease.agent);
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

    pub(super) fn revoke_all(&mut self, agent: AgentId, why: &Revoke) {
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
    pub(super) fn revoke(&mut self, lease_id: LeaseId, why: &Revoke) {
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

    pub(super) fn make_ready(&mut self, r: usize, i: usize) {
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
    pub(super) fn finish(&mut self, r: usize, i: usize, status: TaskStatus, reason: String) {
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

    pub(super) fn skip(&mut self, r: usize, i: usize, reason: String) {
        self.finish(r, i, TaskStatus::Skipped, reason);
    }

    /// `--stop-agents-on-failure`: nothing new starts; running tasks finish.
    pub(super) fn stop_run_after_failure(&mut self, r: usize, failed: &str) {
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
}

/// For a task skipped because of another, the root cause to repeat to its own dependents.
pub(super) fn reason_root(reason: &str) -> Option<String> {
    reason
        .starts_with("dependency ")
        .then(|| reason.to_string())
}
