//! Every agent the scheduler knows, by id and by identity (name and instance id), with the
//! agents that may have a free slot and a deadline set that says when each must next be
//! looked at.
//!
//! Deadlines are kept lazily, one entry per agent: a heartbeat only moves `last_seen`, and an
//! entry that comes due early is put back at the agent's real deadline. An entry is moved
//! forward only when a deadline gets earlier (an agent goes away), so the set costs nothing
//! per heartbeat and each agent pops at most once per lease timeout.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use super::agent::Agent;
use super::free::{FreeIndex, FreeOrder};
use super::types::AgentId;

#[derive(Debug, Default)]
pub(crate) struct Agents {
    by_id: BTreeMap<AgentId, Agent>,
    identities: HashMap<(String, String), AgentId>,
    /// Agents by name (a restarted agent process comes back under its name).
    names: HashMap<String, Vec<AgentId>>,
    next_id: u64,
    /// Agents with a free slot, by load (see [`FreeIndex`]).
    free: FreeIndex,
    deadlines: BTreeSet<(Duration, AgentId)>,
    /// Each agent's entry in `deadlines`.
    entry: HashMap<AgentId, Duration>,
}

impl Agents {
    pub fn new() -> Agents {
        Agents {
            next_id: 1,
            ..Agents::default()
        }
    }

    pub fn get(&self, id: AgentId) -> Option<&Agent> {
        self.by_id.get(&id)
    }

    pub fn get_mut(&mut self, id: AgentId) -> Option<&mut Agent> {
        self.by_id.get_mut(&id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn contains(&self, id: AgentId) -> bool {
        self.by_id.contains_key(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Agent> {
        self.by_id.values()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Agent> {
        self.by_id.values_mut()
    }

    /// The agents with this name.
    pub fn named(&self, name: &str) -> &[AgentId] {
        self.names.get(name).map_or(&[], Vec::as_slice)
    }

    /// The agent process with this name and instance id, if it is known.
    pub fn find(&self, name: &str, instance_id: &str) -> Option<AgentId> {
        self.identities
            .get(&(name.to_string(), instance_id.to_string()))
            .copied()
    }

    /// A fresh id, never handed out before (restored counters included).
    pub fn new_id(&mut self) -> AgentId {
        let id = AgentId(self.next_id);
        self.next_id += 1;
        id
    }

    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// After a restore: ids continue above every id handed out before.
    pub fn set_next_id(&mut self, next: u64) {
        let above_known = self.by_id.keys().map(|a| a.0 + 1).max().unwrap_or(1);
        self.next_id = next.max(above_known).max(1);
    }

    pub fn insert(&mut self, agent: Agent) {
        let id = agent.id;
        self.identities
            .insert((agent.name.clone(), agent.instance_id.clone()), id);
        self.names.entry(agent.name.clone()).or_default().push(id);
        self.free.refresh(&agent);
        let old = self.by_id.insert(id, agent);
        debug_assert!(old.is_none(), "agent {id} inserted twice");
    }

    pub fn forget(&mut self, id: AgentId) -> Option<Agent> {
        let agent = self.by_id.remove(&id)?;
        self.identities
            .remove(&(agent.name.clone(), agent.instance_id.clone()));
        if let Some(ids) = self.names.get_mut(&agent.name) {
            ids.retain(|&a| a != id);
            if ids.is_empty() {
                self.names.remove(&agent.name);
            }
        }
        self.free.remove(id);
        if let Some(at) = self.entry.remove(&id) {
            self.deadlines.remove(&(at, id));
        }
        Some(agent)
    }

    /// Brings the free index up to date with the agent: after anything that changes its
    /// slots, leases, liveness, drain or stop, or the repositories it holds.
    pub fn refresh(&mut self, id: AgentId) {
        match self.by_id.get(&id) {
            Some(agent) => self.free.refresh(agent),
            None => self.free.remove(id),
        }
    }

    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Launch templates with a free agent, and how many free agents each has.
    pub fn free_templates(&self) -> Vec<(String, usize)> {
        self.free.templates()
    }

    /// A pass over the free agents, least loaded first (see [`FreeOrder`]).
    pub fn free_order(&self, wanted: Vec<String>) -> FreeOrder {
        FreeOrder::new(wanted)
    }

    /// The next agent of a pass.
    pub fn next_free(&self, order: &mut FreeOrder) -> Option<AgentId> {
        order.next(&self.free)
    }

    #[cfg(debug_assertions)]
    /// Panics unless the free index matches the agents (debug builds check after assigning).
    pub fn check_free(&self) {
        self.free.check(self.by_id.values());
    }

    /// Makes sure the agent's deadline is in the set no later than `due`.
    pub fn schedule(&mut self, id: AgentId, due: Duration) {
        match self.entry.get(&id) {
            Some(&at) if at <= due => {}
            Some(&at) => {
                self.deadlines.remove(&(at, id));
                self.deadlines.insert((due, id));
                self.entry.insert(id, due);
            }
            None => {
                self.deadlines.insert((due, id));
                self.entry.insert(id, due);
            }
        }
    }

    /// The earliest entry of the deadline set (it may be early: see the module docs).
    pub fn next_deadline(&self) -> Option<Duration> {
        self.deadlines.first().map(|&(at, _)| at)
    }

    /// Takes every entry due at `now`, in deadline order. The caller checks each agent's real
    /// deadline and puts back those not due with [`schedule`](Self::schedule).
    pub fn take_due(&mut self, now: Duration) -> Vec<AgentId> {
        let mut due = Vec::new();
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            self.entry.remove(&id);
            due.push(id);
        }
        due
    }
}
