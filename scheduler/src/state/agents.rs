//! Agents: connect, reconnect, heartbeats, drain, and the deadlines that reclaim leases.

use std::collections::HashMap;
use std::time::Duration;

use super::runs::run_over_reason;
use super::*;

impl Scheduler {
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
        self.runs.for_each_mut(|run| run.waiting_reported.clear());
        self.agent_may_take(id);
        self.assign(now);
        Ok(id)
    }

    pub(super) fn reattach(&mut self, now: Duration, id: AgentId, hello: &Hello) {
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
        // Declared silent (its leases were taken back) while its stream stayed open: a stalled
        // network healed. It is alive and may take work again.
        let revived = !a.connected && a.disconnected_at.is_some();
        if revived {
            a.connected = true;
            a.disconnected_at = None;
        }
        let ours = a.leases.clone();
        let name = a.name.clone();
        if revived {
            self.agent_may_take(agent);
        }
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

    pub(super) fn forget_agent(&mut self, id: AgentId) {
        if let Some(a) = self.agents.remove(&id) {
            self.identities.remove(&(a.name, a.instance_id));
        }
    }

    pub(super) fn stop_agent(&mut self, id: AgentId, reason: String) {
        if let Some(a) = self.agents.get_mut(&id)
            && !a.stopped
        {
            a.stopped = true;
            if a.connected {
                self.actions.push(Action::Stop { agent: id, reason });
            }
        }
    }
}
