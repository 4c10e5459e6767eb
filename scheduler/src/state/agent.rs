//! An agent as the scheduler sees it: what it may run, what it runs, whether it is alive.
//! Its capacity is taken and given back only through [`Agent::take_slot`] and
//! [`Agent::release_slot`], which keep the counts in step with its leases.

use std::collections::HashMap;
use std::time::Duration;

use super::restore::AgentRecord;
use super::types::{AgentId, LeaseId};

/// Parallelism is counted per run and rule on each agent.
pub(crate) type Group = (usize, Option<usize>);

/// Whether the scheduler hears from an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Presence {
    /// Its stream is open and it was heard from within the lease timeout.
    Live,
    /// Its stream is open but it went silent past the lease timeout (a hung machine, a
    /// stalled network): its leases were taken back. A heartbeat makes it live again.
    Silent { since: Duration },
    /// Its stream closed. It may reconnect within the grace period and keep its leases.
    Away { since: Duration },
}

#[derive(Debug)]
pub(crate) struct Agent {
    pub id: AgentId,
    pub name: String,
    pub instance_id: String,
    pub template: String,
    pub slots: u32,
    pub ci_execution_id: Option<String>,
    pub version: String,
    /// Repositories it holds a workspace of (it said so, or it was leased a task of a run of
    /// one): given the choice, their runs' work goes to it.
    pub repositories: std::collections::BTreeSet<String>,
    pub presence: Presence,
    pub draining: bool,
    /// Told to stop: its run is over.
    pub stopped: bool,
    pub last_seen: Duration,
    /// The heartbeat interval it was told (in its Welcome or since).
    pub heartbeat_interval: Duration,
    /// Leases it holds, in the order they were granted.
    leases: Vec<LeaseId>,
    /// Non-cacheable tasks among them.
    non_cacheable: u32,
    /// Leases per parallelism group.
    groups: HashMap<Group, u32>,
}

impl Agent {
    /// An agent as its record says, live or away since `now`.
    pub fn new(who: AgentRecord, presence: Presence, now: Duration) -> Agent {
        Agent {
            id: who.id,
            name: who.name,
            instance_id: who.instance_id,
            template: who.template,
            slots: who.slots,
            ci_execution_id: who.ci_execution_id,
            version: String::new(),
            repositories: Default::default(),
            presence,
            draining: false,
            stopped: false,
            last_seen: now,
            heartbeat_interval: Duration::ZERO,
            leases: Vec::new(),
            non_cacheable: 0,
            groups: HashMap::new(),
        }
    }

    pub fn is_live(&self) -> bool {
        self.presence == Presence::Live
    }

    /// Its stream is open (live or silent): the owner holds a connection for it.
    pub fn has_stream(&self) -> bool {
        !matches!(self.presence, Presence::Away { .. })
    }

    pub fn running(&self) -> u32 {
        self.leases.len() as u32
    }

    pub fn leases(&self) -> &[LeaseId] {
        &self.leases
    }

    /// Live, not draining or stopped, with a free slot.
    pub fn can_take(&self) -> bool {
        self.is_live() && !self.draining && !self.stopped && self.running() < self.slots
    }

    /// Live and willing to take work (whether or not a slot is free now).
    pub fn serving(&self) -> bool {
        self.is_live() && !self.draining && !self.stopped
    }

    pub fn in_group(&self, group: Group) -> u32 {
        self.groups.get(&group).copied().unwrap_or(0)
    }

    pub fn non_cacheable(&self) -> u32 {
        self.non_cacheable
    }

    /// Records a lease on this agent. A restored lease may exceed the slots the agent
    /// announces later; a new grant never does (the scheduler checks `fits` first).
    pub fn take_slot(&mut self, lease: LeaseId, group: Group, cache: bool) {
        debug_assert!(!self.leases.contains(&lease), "lease {lease} taken twice");
        self.leases.push(lease);
        *self.groups.entry(group).or_insert(0) += 1;
        if !cache {
            self.non_cacheable += 1;
        }
    }

    /// Gives back what [`take_slot`](Self::take_slot) took.
    pub fn release_slot(&mut self, lease: LeaseId, group: Group, cache: bool) {
        let at = self.leases.iter().position(|&l| l == lease);
        let at = at.unwrap_or_else(|| panic!("agent {} does not hold lease {lease}", self.id));
        self.leases.remove(at);
        let n = self
            .groups
            .get_mut(&group)
            .filter(|n| **n > 0)
            .unwrap_or_else(|| panic!("agent {}: group {group:?} is empty", self.id));
        *n -= 1;
        if *n == 0 {
            self.groups.remove(&group);
        }
        if !cache {
            assert!(
                self.non_cacheable > 0,
                "agent {}: no non-cacheable task to release",
                self.id
            );
            self.non_cacheable -= 1;
        }
    }

    /// Drops the (empty) parallelism groups of a forgotten run.
    pub fn forget_run(&mut self, run: usize) {
        debug_assert!(
            self.groups.keys().all(|&(r, _)| r != run),
            "agent {} still holds leases of a forgotten run",
            self.id
        );
        self.groups.retain(|&(r, _), _| r != run);
    }

    /// When the scheduler must next look at this agent, if ever: the lease timeout after it
    /// was last heard from, or the reconnect grace after it went silent or away. The instant
    /// is the first at which the deadline has passed.
    pub fn due(&self, lease_timeout: Duration, grace: Duration) -> Duration {
        let tick = Duration::from_nanos(1);
        match self.presence {
            Presence::Live => self.last_seen + lease_timeout + tick,
            Presence::Silent { since } | Presence::Away { since } => since + grace + tick,
        }
    }
}
