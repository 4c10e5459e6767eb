//! Agents coming and going: Hello (and reconnects), heartbeats, drain, a closed stream, stops.

use std::time::Duration;

use super::*;

impl Scheduler {
    /// An agent opened its stream. A reconnect of the same agent process (same name and
    /// instance id) keeps its id and the leases it still holds. The agent's `Welcome` goes
    /// before every other action for it.
    pub(super) fn on_hello(&mut self, now: Duration, hello: Hello) -> Result<AgentId, SchedError> {
        let bad = |message: &str| SchedError::BadAgent {
            name: hello.name.clone(),
            message: message.into(),
        };
        if hello.name.trim().is_empty() {
            return Err(bad("the agent name is empty"));
        }
        if hello.launch_template.trim().is_empty() {
            return Err(bad("the launch template is empty"));
        }
        if hello.slots == 0 || hello.slots > crate::fleet::MAX_SLOTS {
            return Err(bad(&format!(
                "slots must be from 1 to {}, not {}",
                crate::fleet::MAX_SLOTS,
                hello.slots
            )));
        }
        for (what, text) in [
            ("name", &hello.name),
            ("instance id", &hello.instance_id),
            ("launch template", &hello.launch_template),
        ] {
            if text.chars().any(char::is_control) {
                return Err(bad(&format!(
                    "the {what} {} has a control character",
                    text.escape_debug()
                )));
            }
        }
        // The rerun guard: a CI agent of another attempt than its run's was re-run alone (or
        // left behind); the run it would wait for never comes.
        if let Some(exec) = hello.ci_execution_id.as_deref().filter(|e| !e.is_empty())
            && hello.attempt > 0
            && let Some(r) = self.runs.newest_of(exec)
            && self.runs[r].spec.attempt > 0
            && self.runs[r].spec.attempt != hello.attempt
        {
            return Err(SchedError::Rerun);
        }
        let first_action = self.actions.len();
        let id = match self.agents.find(&hello.name, &hello.instance_id) {
            Some(id) => {
                self.reattach(now, id, &hello);
                id
            }
            None => self.attach(now, &hello),
        };
        let heartbeat_interval = self.heartbeat_interval();
        if let Some(a) = self.agents.get_mut(id) {
            a.heartbeat_interval = heartbeat_interval;
        }
        let welcome = Welcome {
            agent: id,
            heartbeat_interval,
            lease_timeout: self.config.lease_timeout,
        };
        self.actions
            .insert(first_action, Action::Welcome { agent: id, welcome });
        // A CI agent whose run is over stops at once.
        let exec = self.agents.get(id).and_then(|a| a.ci_execution_id.clone());
        if let Some(exec) = exec
            && let Some(r) = self.runs.newest_of(&exec)
            && let Some(success) = self.runs[r].ended
        {
            let reason = settle::run_over_reason(&self.runs[r].id, success);
            self.stop_agent(id, reason);
        }
        self.runs.for_each_mut(|run| run.waiting_reported.clear());
        self.agents.refresh(id);
        self.schedule_agent(id);
        Ok(id)
    }

    /// A new agent process. One with the same name that is not live is gone (the process was
    /// restarted): its work is handed back.
    fn attach(&mut self, now: Duration, hello: &Hello) -> AgentId {
        let stale: Vec<AgentId> = self
            .agents
            .named(&hello.name)
            .iter()
            .copied()
            .filter(|&id| self.agents.get(id).is_some_and(|a| !a.is_live()))
            .collect();
        for old in stale {
            let reason = format!("agent `{}` restarted", hello.name);
            self.revoke_all(old, &Revoke::Returned(reason));
            self.forget_agent(old, "a new process of the agent connected");
        }
        let id = self.agents.new_id();
        let who = AgentRecord {
            id,
            name: hello.name.clone(),
            instance_id: hello.instance_id.clone(),
            template: hello.launch_template.clone(),
            slots: hello.slots,
            ci_execution_id: hello.ci_execution_id.clone().filter(|e| !e.is_empty()),
        };
        let version = hello.version.clone();
        let mut agent = Agent::new(who, Presence::Live, now);
        agent.version = version;
        agent.repositories = hello.repositories.iter().cloned().collect();
        self.agents.insert(agent);
        for held in &hello.held {
            self.actions.push(Action::Cancel {
                agent: id,
                lease: held.lease,
                reason: "the coordinator does not know this lease".into(),
            });
        }
        id
    }

    /// The same agent process is back: it keeps the leases it reports, and loses the rest.
    fn reattach(&mut self, now: Duration, id: AgentId, hello: &Hello) {
        let Some(agent) = self.agents.get_mut(id) else {
            return;
        };
        agent.presence = Presence::Live;
        agent.last_seen = now;
        agent.draining = false;
        agent.slots = hello.slots;
        agent.version = hello.version.clone();
        agent
            .repositories
            .extend(hello.repositories.iter().cloned());
        let ours = agent.leases().to_vec();
        let name = agent.name.clone();
        for held in &hello.held {
            if !self.leases.holds(id, held) {
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
    /// a draining or stopped agent hands its leases back at once.
    pub(super) fn on_disconnected(&mut self, now: Duration, agent: AgentId) {
        let Some(a) = self.agents.get_mut(agent) else {
            return;
        };
        a.presence = Presence::Away { since: now };
        if a.draining || a.stopped {
            let reason = format!("agent `{}` shut down", a.name);
            self.revoke_all(agent, &Revoke::Returned(reason));
        }
        self.agents.refresh(agent);
        self.schedule_agent(agent);
    }

    /// The agent takes no new leases; running ones finish.
    pub(super) fn on_draining(&mut self, now: Duration, agent: AgentId) {
        if let Some(a) = self.agents.get_mut(agent) {
            a.draining = true;
            a.last_seen = now;
        }
        self.agents.refresh(agent);
    }

    /// An operator drains the agent: like its own drain, but says nothing of its liveness.
    pub(super) fn on_drain(&mut self, agent: AgentId) {
        if let Some(a) = self.agents.get_mut(agent) {
            a.draining = true;
        }
        self.agents.refresh(agent);
    }

    /// A heartbeat: the agent is alive and holds these leases. Returns whether it changed
    /// anything assignment depends on (the agent came back, a lease was taken back); most
    /// heartbeats change nothing, and assignment need not look again.
    pub(super) fn on_heartbeat(&mut self, now: Duration, agent: AgentId, held: &[Held]) -> bool {
        if !self.is_known(agent) {
            return false;
        }
        let a = self.agents.get_mut(agent).expect("known");
        a.last_seen = now;
        // Declared silent (its leases were taken back) while its stream stayed open: a stalled
        // network healed. It is alive and may take work again.
        let revived = !a.is_live();
        if revived {
            a.presence = Presence::Live;
        }
        let ours = a.leases().to_vec();
        let name = a.name.clone();
        let told = a.heartbeat_interval;
        if revived {
            self.agents.refresh(agent);
            self.schedule_agent(agent);
        }
        // The fleet grew or shrank by a quarter since the agent was told its interval.
        let interval = self.heartbeat_interval();
        if interval.abs_diff(told) * 4 > told {
            if let Some(a) = self.agents.get_mut(agent) {
                a.heartbeat_interval = interval;
            }
            self.actions.push(Action::Heartbeat { agent, interval });
        }
        for h in held {
            if !self.leases.holds(agent, h) {
                self.actions.push(Action::Cancel {
                    agent,
                    lease: h.lease,
                    reason: "the lease is no longer active".into(),
                });
            }
        }
        // A lease the agent should have had for a while but does not report was lost on the way.
        let patience = told.max(self.config.heartbeat_interval) * 2;
        let mut changed = revived;
        for lease in ours {
            let lost = !held.iter().any(|h| h.lease == lease)
                && self
                    .leases
                    .get(lease)
                    .is_some_and(|l| now.saturating_sub(l.granted_at) > patience);
            if lost {
                self.revoke(
                    lease,
                    &Revoke::Returned(format!("agent `{name}` never received the lease")),
                );
                changed = true;
            }
        }
        changed
    }

    /// Whether the scheduler knows this agent; a message from one it does not know (given up
    /// on while its stream stayed open) closes that stream, so the agent connects again and
    /// says who it is.
    pub(super) fn is_known(&mut self, agent: AgentId) -> bool {
        let known = self.agents.contains(agent);
        if !known {
            self.actions.push(Action::Close {
                agent,
                reason: "the coordinator does not know this agent (it was given up on)".into(),
            });
        }
        known
    }

    /// The heartbeat interval for the fleet as it is now: the configured one, stretched so
    /// that the agents' heartbeats stay under `max_heartbeat_rate` a second, as Nomad does;
    /// never past two fifths of the lease timeout, so that an agent may lose a heartbeat
    /// (and jitter may bring the next one early or late) without losing its leases.
    pub(super) fn heartbeat_interval(&self) -> Duration {
        let base = self.config.heartbeat_interval;
        let rate = self.config.max_heartbeat_rate;
        if rate == 0 {
            return base;
        }
        let stretched = Duration::from_secs_f64(self.agents.len() as f64 / f64::from(rate));
        let cap = self.config.lease_timeout * 2 / 5;
        base.max(stretched.min(cap))
    }

    /// Puts the agent's next deadline in the set (see [`Agent::due`]).
    pub(super) fn schedule_agent(&mut self, id: AgentId) {
        if let Some(a) = self.agents.get(id) {
            let due = a.due(self.config.lease_timeout, self.config.reconnect_grace);
            self.agents.schedule(id, due);
        }
    }

    /// Drops an agent the scheduler gave up on; a stream it still has is closed.
    pub(super) fn forget_agent(&mut self, id: AgentId, why: &str) {
        if let Some(a) = self.agents.forget(id) {
            debug_assert_eq!(a.running(), 0, "agent {id} forgotten with leases");
            if a.has_stream() {
                self.actions.push(Action::Close {
                    agent: id,
                    reason: why.to_string(),
                });
            }
        }
    }

    pub(super) fn stop_agent(&mut self, id: AgentId, reason: String) {
        if let Some(a) = self.agents.get_mut(id)
            && !a.stopped
        {
            a.stopped = true;
            if a.is_live() {
                self.actions.push(Action::Stop { agent: id, reason });
            }
        }
        self.agents.refresh(id);
    }
}
