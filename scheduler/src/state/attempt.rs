//! One attempt of a task, from its agent's point of view: started, output, finished, and the
//! leases taken back. A message under a lease that is not the agent's active lease is refused,
//! and the agent is told to drop that lease.

use std::time::Duration;

use super::*;

impl Scheduler {
    pub(super) fn on_started(&mut self, now: Duration, agent: AgentId, lease: LeaseId, token: u64) {
        // An agent the scheduler gave up on holds no lease: the check below refuses it too.
        self.is_known(agent);
        match self.leases.check(agent, lease, token) {
            Ok(_) => {
                if let Some(l) = self.leases.get_mut(lease) {
                    l.started = true;
                }
                if let Some(a) = self.agents.get_mut(agent) {
                    a.last_seen = now;
                }
            }
            Err(refused) => self.refuse(agent, lease, MessageKind::Started, refused),
        }
    }

    pub(super) fn on_output(
        &mut self,
        agent: AgentId,
        lease: LeaseId,
        token: u64,
        stream: OutputStream,
        data: Vec<u8>,
    ) {
        self.is_known(agent);
        match self.leases.check(agent, lease, token) {
            Ok(l) => {
                let run = &self.runs[l.run];
                let t = &run.tasks[l.task];
                let event = RunEvent::TaskOutput {
                    task: t.spec.id.clone(),
                    submissions: t.submissions.clone(),
                    attempt: t.attempts,
                    stream,
                    data,
                };
                let run_id = run.id.clone();
                self.actions.push(Action::Run { run_id, event });
            }
            Err(refused) => self.refuse(agent, lease, MessageKind::Output, refused),
        }
    }

    /// One attempt of a task ended. A result under a lease that is no longer active is refused.
    pub(super) fn on_finished(
        &mut self,
        now: Duration,
        agent: AgentId,
        lease_id: LeaseId,
        token: u64,
        result: TaskResult,
    ) {
        self.is_known(agent);
        if let Err(refused) = self.leases.check(agent, lease_id, token) {
            self.refuse(agent, lease_id, MessageKind::Result, refused);
            return;
        }
        let lease = self.release(lease_id);
        // What an agent says a task took is trusted only as far as the coordinator saw: no
        // longer than the lease was out (a clock gone wrong, or a lie, must not teach the
        // estimates that a target takes years).
        let mut result = result;
        result.duration = result.duration.min(now.saturating_sub(lease.granted_at));
        let a = self
            .agents
            .get_mut(agent)
            .expect("a lease's agent is known");
        a.last_seen = now;
        let agent_name = a.name.clone();
        let (r, i) = (lease.run, lease.task);
        {
            let t = &mut self.runs[r].tasks[i];
            t.agent = agent_name.clone();
            t.exit_code = Some(result.exit_code);
            t.duration = result.duration;
        }
        if result.succeeded() {
            self.estimates
                .record(&self.runs[r].tasks[i].spec, result.duration);
            self.finish(r, i, TaskStatus::Succeeded, String::new());
        } else {
            let reason = result
                .error
                .clone()
                .unwrap_or_else(|| format!("exit code {}", result.exit_code));
            let run = &mut self.runs[r];
            let stopping = run.stopping_after.is_some();
            let retries = run.spec.retries;
            let t = &mut run.tasks[i];
            t.failures += 1;
            if !stopping && t.failures <= retries {
                t.avoid.push(agent);
                t.reason = reason.clone();
                let event = RunEvent::TaskFinished(TaskFinished {
                    task: t.spec.id.clone(),
                    target: t.spec.target.clone(),
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
    }

    /// A refused message: noted for the owner, and the agent is told to drop the lease.
    fn refuse(&mut self, agent: AgentId, lease: LeaseId, message: MessageKind, refused: Refused) {
        let reason = refused.to_string();
        self.actions.push(Action::Refused {
            agent,
            message,
            refused,
        });
        self.actions.push(Action::Cancel {
            agent,
            lease,
            reason,
        });
    }

    /// Removes a lease and frees its agent's capacity.
    pub(super) fn release(&mut self, lease_id: LeaseId) -> Lease {
        let lease = self
            .leases
            .remove(lease_id)
            .expect("the caller checked the lease");
        let agent = self
            .agents
            .get_mut(lease.agent)
            .expect("a lease's agent is known");
        agent.release_slot(lease_id, lease.group, lease.cache);
        self.agents.refresh(lease.agent);
        self.actions.push(Action::Released {
            agent: lease.agent,
            lease: lease_id,
        });
        lease
    }

    pub(super) fn revoke_all(&mut self, agent: AgentId, why: &Revoke) {
        let leases = self
            .agents
            .get(agent)
            .map(|a| a.leases().to_vec())
            .unwrap_or_default();
        for lease in leases {
            self.revoke(lease, why);
        }
    }

    /// Takes a lease back and queues its task again (or fails it after too many lost agents).
    pub(super) fn revoke(&mut self, lease_id: LeaseId, why: &Revoke) {
        if !self.leases.contains(lease_id) {
            return;
        }
        let lease = self.release(lease_id);
        let (reason, counted) = match why {
            Revoke::Lost(r) => (r.clone(), true),
            Revoke::Returned(r) => (r.clone(), false),
        };
        if self.agents.get(lease.agent).is_some_and(Agent::is_live) {
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
            assert!(
                t.attempts > 0,
                "task {} leased without an attempt",
                t.spec.id
            );
            t.attempts -= 1;
        }
        if counted && t.lost >= max_lost {
            let reason = format!("agent lost {} times (last: {reason})", t.lost);
            self.finish(r, i, TaskStatus::Failed, reason);
            self.check_submissions(r);
            self.maybe_finish_run(r);
        } else if let Some(stop) = self.runs[r].stopping() {
            self.skip(r, i, stop);
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
        self.runs.mark_ready(r, i, seq);
    }
}
