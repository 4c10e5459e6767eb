//! An agent as the scheduler sees it: what it may run, what it runs, whether it is alive.

use std::collections::HashMap;
use std::time::Duration;

use super::types::{AgentId, LeaseId};

/// Parallelism is counted per run and rule on each agent.
pub(crate) type Group = (usize, Option<usize>);

#[derive(Debug)]
pub(crate) struct Agent {
    pub id: AgentId,
    pub name: String,
    pub instance_id: String,
    pub template: String,
    pub slots: u32,
    pub ci_execution_id: Option<String>,
    pub connected: bool,
    pub draining: bool,
    /// Told to stop: its run is over.
    pub stopped: bool,
    pub last_seen: Duration,
    pub disconnected_at: Option<Duration>,
    pub leases: Vec<LeaseId>,
    pub non_cacheable: u32,
    pub groups: HashMap<Group, u32>,
}

impl Agent {
    pub fn running(&self) -> u32 {
        self.leases.len() as u32
    }

    /// Connected, not draining or stopped, with a free slot.
    pub fn can_take(&self) -> bool {
        self.connected && !self.draining && !self.stopped && self.running() < self.slots
    }

    pub fn in_group(&self, group: Group) -> u32 {
        self.groups.get(&group).copied().unwrap_or(0)
    }
}
