//! Time passing: lease timeouts, reconnect grace periods and the waiting check, each fired
//! from the deadline set when it is due (see [`Scheduler::next_deadline`]).

use std::time::Duration;

use super::*;
use crate::duration::format_duration;

impl Scheduler {
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
        if self.waiting_check.is_some_and(|at| at <= now) {
            self.waiting_check = None;
            self.report_waiting();
        }
        if fired {
            self.arm_waiting_check(now);
        }
    }
}
