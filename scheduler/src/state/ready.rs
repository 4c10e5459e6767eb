//! Ready tasks of one run, one priority queue per eligibility class: the task's assignment
//! rule and, under the binning policy, the bin of agents its target belongs to.
//! Entries are removed lazily: a popped entry whose task is no longer ready is dropped.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::types::AgentId;

/// A ready task: higher rank first, then earlier readiness first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub rank: u64,
    pub seq: u64,
    pub task: usize,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank
            .cmp(&other.rank)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The class of a task: the index of its assignment rule, `None` when no rule matches.
pub(crate) type Class = Option<usize>;

/// What one ready queue holds: tasks of one class (and one bin, under binning).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub class: Class,
    /// Always 0 unless the run is split into bins.
    pub bin: u32,
}

/// The binning baseline: agents split statically between targets. A task runs only on an
/// agent of its target's bin.
#[derive(Debug, Default)]
pub(crate) struct BinPlan {
    /// Bin of each task of the run, by task index.
    pub task_bin: Vec<u32>,
    /// Bins each agent serves.
    pub agent_bins: HashMap<AgentId, Vec<u32>>,
}

#[derive(Debug, Default)]
pub(crate) struct ReadyQueues {
    pub classes: HashMap<Key, BinaryHeap<Entry>>,
    /// Set under the binning policy.
    pub bins: Option<BinPlan>,
}

impl ReadyQueues {
    pub fn push(&mut self, class: Class, entry: Entry) {
        let bin = self
            .bins
            .as_ref()
            .and_then(|b| b.task_bin.get(entry.task).copied())
            .unwrap_or(0);
        self.classes
            .entry(Key { class, bin })
            .or_default()
            .push(entry);
    }

    /// Whether an agent may take tasks of this queue as far as bins go.
    pub fn bin_allows(&self, agent: AgentId, key: Key) -> bool {
        match &self.bins {
            None => true,
            Some(plan) => plan
                .agent_bins
                .get(&agent)
                .is_some_and(|bins| bins.contains(&key.bin)),
        }
    }
}
