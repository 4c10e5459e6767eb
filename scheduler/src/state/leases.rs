//! Granted leases, and the ids and fencing tokens they are issued under. An id or token is
//! never issued twice, restored counters included, so a message under a lease from before a
//! restart cannot pass for one from after it.

use std::collections::HashMap;
use std::time::Duration;

use super::agent::Group;
use super::types::{AgentId, Held, LeaseId, Refused};

/// A granted lease, as the scheduler tracks it.
#[derive(Debug)]
pub(crate) struct Lease {
    pub token: u64,
    pub agent: AgentId,
    pub run: usize,
    pub task: usize,
    pub granted_at: Duration,
    pub started: bool,
    pub group: Group,
    pub cache: bool,
}

#[derive(Debug)]
pub(crate) struct Leases {
    active: HashMap<LeaseId, Lease>,
    next_lease: u64,
    next_token: u64,
}

impl Default for Leases {
    fn default() -> Self {
        Leases {
            active: HashMap::new(),
            next_lease: 1,
            next_token: 1,
        }
    }
}

impl Leases {
    pub fn get(&self, id: LeaseId) -> Option<&Lease> {
        self.active.get(&id)
    }

    pub fn get_mut(&mut self, id: LeaseId) -> Option<&mut Lease> {
        self.active.get_mut(&id)
    }

    pub fn contains(&self, id: LeaseId) -> bool {
        self.active.contains_key(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&LeaseId, &Lease)> {
        self.active.iter()
    }

    /// The lease of this agent under this token, or why a message under it is refused.
    pub fn check(&self, agent: AgentId, lease: LeaseId, token: u64) -> Result<&Lease, Refused> {
        let l = self
            .active
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

    /// Whether a lease an agent says it holds is one of its active leases.
    pub fn holds(&self, agent: AgentId, held: &Held) -> bool {
        self.check(agent, held.lease, held.token).is_ok()
    }

    /// Grants a lease under the next id and token.
    pub fn grant(&mut self, lease: Lease) -> (LeaseId, u64) {
        let id = LeaseId(self.next_lease);
        self.next_lease += 1;
        self.next_token += 1;
        let token = self.next_token - 1;
        self.active.insert(id, Lease { token, ..lease });
        (id, token)
    }

    /// Grants a lease again under the id and token it had before a restart; later ids and
    /// tokens stay above both.
    pub fn regrant(&mut self, id: LeaseId, lease: Lease) {
        self.next_lease = self.next_lease.max(id.0 + 1);
        self.next_token = self.next_token.max(lease.token + 1);
        let old = self.active.insert(id, lease);
        debug_assert!(old.is_none(), "lease {id} granted twice");
    }

    pub fn remove(&mut self, id: LeaseId) -> Option<Lease> {
        self.active.remove(&id)
    }

    pub fn counters(&self) -> (u64, u64) {
        (self.next_lease, self.next_token)
    }

    /// After a restore: issue ids and tokens from these on (never below what is active).
    pub fn set_counters(&mut self, next_lease: u64, next_token: u64) {
        self.next_lease = self.next_lease.max(next_lease).max(1);
        self.next_token = self.next_token.max(next_token).max(1);
    }
}
