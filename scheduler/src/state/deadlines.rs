//! Time passing: lease timeouts, reconnect grace periods and the waiting check, each fired
//! from the deadline set when it is due (see [`Scheduler::next_deadline`]).

use std::time::Duration;

use super::*;
use crate::duration::format_duration;

impl Scheduler {
    /// A re-run pipeline's run whose ready tasks no agent has served within the grace: its
    /// agents were not re-run (only the failed jobs were), so it fails with the guard's words
    /// instead of waiting for agents that will not come.
    fn check_rerun(&mut self, now: Duration, r: usize) {
        if self.runs.live().binary_search(&r).is_err() {
            return;
        }
        let run = &self.runs[r];
        if !run.is_active() || run.leased_any {
            return;
        }
        let served = self
            .agents
            .iter()
            .any(|a| a.serving() && assign::serves(&self.runs, a, r));
        if served {
            return;
        }
        if run.ready_count() == 0 {
            // Nothing waits for an agent yet: look again later.
            self.rerun_checks.insert((now + self.config.rerun_grace, r));
            return;
        }
        self.abort(r, RERUN_MESSAGE.to_string());
    }

    /// Fires every deadline due at `now`: a live agent silent past the lease timeout loses its
    /// leases; one silent or away past the reconnect grace is forgotten; ready tasks that no
    /// connected agent may run are reported.
    pub(super) fn on_tick(&mut self, now: Duration) {
        let (timeout, grace) = (self.config.lease_timeout, self.config.reconnect_grace);
        let mut fired = false;
        for id in self.agents.take_due(now) {
            let Some(a) = self.agents.get(id) else {
                continue;
            };
            let due = a.due(timeout, grace);
            if due > now {
                // Heard from since the entry was made: look again at its real deadline.
                self.agents.schedule(id, due);
                continue;
            }
            fired = true;
            let name = a.name.clone();
            if a.is_live() {
                let reason = format!(
                    "agent `{name}` sent no heartbeat for {}",
                    format_duration(timeout)
                );
                self.revoke_all(id, &Revoke::Lost(reason));
                if let Some(a) = self.agents.get_mut(id) {
                    a.presence = Presence::Silent { since: now };
                }
                self.agents.refresh(id);
                self.schedule_agent(id);
            } else {
                let reason = format!(
                    "agent `{name}` disconnected and did not come back within {}",
                    format_duration(grace)
                );
                self.revoke_all(id, &Revoke::Lost(reason));
                self.forget_agent(id, "the agent was silent past the reconnect grace period");
            }
        }
        while let Some(&(at, r)) = self.rerun_checks.first() {
            if at > now {
                break;
            }
            self.rerun_checks.pop_first();
            self.check_rerun(now, r);
        }
        if self.waiting_check.is_some_and(|at| at <= now) {
            self.waiting_check = None;
            self.report_waiting();
        }
        if fired {
            self.arm_waiting_check(now);
        }
    }
}
