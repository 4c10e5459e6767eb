//! The agents with a free slot, indexed so that assignment does not grow with the fleet.
//!
//! Assignment visits free agents least loaded first, and among equally loaded ones those that
//! hold the repository of a run with work waiting (warm) before the others, then by id: the
//! order `(load, cold, id)`. Sorting every free agent for each decision made one decision cost
//! O(F log F) with F free agents, and with a large idle fleet that was most of the
//! coordinator's time. Here the free agents are kept in ordered sets by `(load, id)`, overall
//! and per repository, and [`FreeOrder`] walks them lazily: a pass that hands out one task
//! looks at one agent, whatever the size of the fleet.
//!
//! The index is exact: an agent is in it exactly when [`Agent::can_take`], under the load it
//! has now. Whatever changes an agent's slots, leases, liveness, drain or stop, or the
//! repositories it holds, calls [`FreeIndex::refresh`] for it (through `Agents::refresh`);
//! debug builds check that after every assignment.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Bound;

use super::agent::Agent;
use super::types::AgentId;

/// Running leases per slot, in millionths: the order of "least loaded".
pub(crate) fn load_of(agent: &Agent) -> u64 {
    u64::from(agent.running()) * 1_000_000 / u64::from(agent.slots.max(1))
}

type Key = (u64, AgentId);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    load: u64,
    template: String,
    repositories: Vec<String>,
}

#[derive(Debug, Default)]
pub(crate) struct FreeIndex {
    by_load: BTreeSet<Key>,
    by_repository: HashMap<String, BTreeSet<Key>>,
    entries: HashMap<AgentId, Entry>,
    /// Free agents per launch template.
    templates: HashMap<String, usize>,
}

impl FreeIndex {
    /// Puts the agent in the index as it is now, or takes it out when it cannot take work.
    pub fn refresh(&mut self, agent: &Agent) {
        let entry = agent.can_take().then(|| Entry {
            load: load_of(agent),
            template: agent.template.clone(),
            repositories: agent.repositories.iter().cloned().collect(),
        });
        if self.entries.get(&agent.id) == entry.as_ref() {
            return;
        }
        self.remove(agent.id);
        if let Some(entry) = entry {
            let key = (entry.load, agent.id);
            self.by_load.insert(key);
            for repository in &entry.repositories {
                self.by_repository
                    .entry(repository.clone())
                    .or_default()
                    .insert(key);
            }
            *self.templates.entry(entry.template.clone()).or_insert(0) += 1;
            self.entries.insert(agent.id, entry);
        }
    }

    pub fn remove(&mut self, id: AgentId) {
        let Some(entry) = self.entries.remove(&id) else {
            return;
        };
        let key = (entry.load, id);
        self.by_load.remove(&key);
        for repository in &entry.repositories {
            if let Some(set) = self.by_repository.get_mut(repository) {
                set.remove(&key);
                if set.is_empty() {
                    self.by_repository.remove(repository);
                }
            }
        }
        if let Some(n) = self.templates.get_mut(&entry.template) {
            *n -= 1;
            if *n == 0 {
                self.templates.remove(&entry.template);
            }
        }
    }

    #[cfg(test)]
    pub fn contains(&self, id: AgentId) -> bool {
        self.entries.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Launch templates with a free agent, and how many free agents each has.
    pub fn templates(&self) -> Vec<(String, usize)> {
        self.templates
            .iter()
            .map(|(t, n)| (t.clone(), *n))
            .collect()
    }

    fn holds_any(&self, id: AgentId, wanted: &[String]) -> bool {
        self.entries
            .get(&id)
            .is_some_and(|e| e.repositories.iter().any(|r| wanted.contains(r)))
    }

    #[cfg(debug_assertions)]
    /// Panics unless the index says exactly what the agents say (debug builds).
    pub fn check<'a>(&self, agents: impl Iterator<Item = &'a Agent>) {
        let mut expected = FreeIndex::default();
        for agent in agents {
            expected.refresh(agent);
        }
        assert_eq!(self.entries, expected.entries, "the free index is stale");
        assert_eq!(self.by_load, expected.by_load, "the free index is stale");
        assert_eq!(
            self.templates, expected.templates,
            "the free index is stale"
        );
    }
}

/// One pass over the free agents in the order `(load, cold, id)` as they were when the pass
/// began, each visited once: the agents already visited (whose load grew when they took a
/// task) are passed over. Holds positions only, so the scheduler may change agents between
/// steps.
pub(crate) struct FreeOrder {
    /// Repositories of runs with work waiting: agents holding one are warm.
    wanted: Vec<String>,
    /// Per wanted repository, the last key its walk passed.
    warm_after: Vec<Option<Key>>,
    cold_after: Option<Key>,
    visited: HashSet<AgentId>,
}

impl FreeOrder {
    pub fn new(wanted: Vec<String>) -> FreeOrder {
        FreeOrder {
            warm_after: vec![None; wanted.len()],
            wanted,
            cold_after: None,
            visited: HashSet::new(),
        }
    }

    /// The next free agent of the pass, if any.
    pub fn next(&mut self, index: &FreeIndex) -> Option<AgentId> {
        // The warm walk: the least (load, id) over the wanted repositories' sets.
        let mut warm: Option<(Key, usize)> = None;
        for k in 0..self.wanted.len() {
            let Some(set) = index.by_repository.get(&self.wanted[k]) else {
                continue;
            };
            let head = first_after(set, self.warm_after[k], |key| self.visited.contains(&key.1));
            // Entries passed over were visited: this walk need not see them again.
            self.warm_after[k] = head.passed;
            if let Some(key) = head.found
                && warm.is_none_or(|(w, _)| key < w)
            {
                warm = Some((key, k));
            }
        }
        // The cold walk: agents holding no wanted repository. Only one less loaded than the
        // warm head comes first (at equal load, warm goes first), so the walk stops there.
        let bound = warm.map(|((load, _), _)| load);
        let mut cold = None;
        let mut range = match self.cold_after {
            Some(after) => index
                .by_load
                .range((Bound::Excluded(after), Bound::Unbounded)),
            None => index.by_load.range(..),
        };
        for &key in range.by_ref() {
            if bound.is_some_and(|b| key.0 >= b) {
                break;
            }
            if self.visited.contains(&key.1) || index.holds_any(key.1, &self.wanted) {
                // Visited, or warm (and so visited: the warm walk is past every warm agent
                // less loaded than its head).
                self.cold_after = Some(key);
                continue;
            }
            cold = Some(key);
            break;
        }
        let id = match (cold, warm) {
            (Some(c), _) => {
                self.cold_after = Some(c);
                c.1
            }
            (None, Some((w, k))) => {
                self.warm_after[k] = Some(w);
                w.1
            }
            (None, None) => return None,
        };
        self.visited.insert(id);
        Some(id)
    }
}

struct Head {
    found: Option<Key>,
    /// The last key passed over before `found` (or `after` when none was).
    passed: Option<Key>,
}

fn first_after(set: &BTreeSet<Key>, after: Option<Key>, skip: impl Fn(&Key) -> bool) -> Head {
    let range = match after {
        Some(a) => set.range((Bound::Excluded(a), Bound::Unbounded)),
        None => set.range(..),
    };
    let mut passed = after;
    for &key in range {
        if skip(&key) {
            passed = Some(key);
            continue;
        }
        return Head {
            found: Some(key),
            passed,
        };
    }
    Head {
        found: None,
        passed,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::state::agent::Presence;
    use crate::state::restore::AgentRecord;
    use crate::state::types::LeaseId;

    fn agent(id: u64, slots: u32, running: u32, repos: &[&str]) -> Agent {
        let mut a = Agent::new(
            AgentRecord {
                id: AgentId(id),
                name: format!("a{id}"),
                instance_id: "i".into(),
                template: if id.is_multiple_of(3) { "big" } else { "small" }.into(),
                slots,
                ci_execution_id: None,
            },
            Presence::Live,
            Duration::ZERO,
        );
        for k in 0..running {
            a.take_slot(LeaseId(id * 100 + u64::from(k)), (0, None), true);
        }
        a.repositories = repos.iter().map(|r| r.to_string()).collect();
        a
    }

    /// The order the old sort gave: every free agent by (load, cold, id).
    fn sorted(agents: &[Agent], wanted: &[String]) -> Vec<AgentId> {
        let mut free: Vec<&Agent> = agents.iter().filter(|a| a.can_take()).collect();
        free.sort_by_key(|a| {
            let cold = !wanted.is_empty() && !wanted.iter().any(|w| a.repositories.contains(w));
            (load_of(a), cold, a.id)
        });
        free.iter().map(|a| a.id).collect()
    }

    proptest! {
        /// The walk gives the sorted order, whatever the loads and repositories.
        #[test]
        fn walks_in_the_order_of_the_sort(
            specs in prop::collection::vec((1u32..5, 0u32..5, prop::collection::vec(0usize..3, 0..3)), 0..40),
            wanted in prop::collection::vec(0usize..4, 0..3),
        ) {
            let names = ["r0", "r1", "r2", "r3"];
            let agents: Vec<Agent> = specs
                .iter()
                .enumerate()
                .map(|(i, (slots, running, repos))| {
                    let repos: Vec<&str> = repos.iter().map(|&r| names[r]).collect();
                    agent(i as u64 + 1, *slots, (*running).min(*slots), &repos)
                })
                .collect();
            let mut index = FreeIndex::default();
            for a in &agents {
                index.refresh(a);
            }
            index.check(agents.iter());
            let mut wanted: Vec<String> = wanted.iter().map(|&w| names[w].to_string()).collect();
            wanted.dedup();
            let mut order = FreeOrder::new(wanted.clone());
            let mut walked = Vec::new();
            while let Some(id) = order.next(&index) {
                walked.push(id);
            }
            prop_assert_eq!(walked, sorted(&agents, &wanted));
        }
    }

    #[test]
    fn an_agent_that_takes_a_task_is_not_visited_again_in_the_pass() {
        let mut agents = vec![
            agent(1, 4, 0, &[]),
            agent(2, 4, 0, &[]),
            agent(3, 4, 1, &[]),
        ];
        let mut index = FreeIndex::default();
        for a in &agents {
            index.refresh(a);
        }
        let mut order = FreeOrder::new(vec![]);
        assert_eq!(order.next(&index), Some(AgentId(1)));
        // Agent 1 takes a task: its load grows past agent 2's, level with agent 3's.
        agents[0].take_slot(LeaseId(7), (0, None), true);
        index.refresh(&agents[0]);
        assert_eq!(order.next(&index), Some(AgentId(2)));
        assert_eq!(order.next(&index), Some(AgentId(3)));
        assert_eq!(order.next(&index), None);
        assert_eq!(index.len(), 3);
        // Full: out of the index.
        for k in 0..3 {
            agents[0].take_slot(LeaseId(70 + k), (0, None), true);
        }
        index.refresh(&agents[0]);
        assert!(!index.contains(AgentId(1)));
        let mut templates = index.templates();
        templates.sort();
        assert_eq!(
            templates,
            vec![("big".to_string(), 1), ("small".to_string(), 1)]
        );
    }
}
