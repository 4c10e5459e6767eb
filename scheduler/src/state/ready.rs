//! Ready tasks of one run, one priority queue per assignment rule (an eligibility class).
//! Entries are removed lazily: a popped entry whose task is no longer ready is dropped.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

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

#[derive(Debug, Default)]
pub(crate) struct ReadyQueues {
    pub classes: HashMap<Class, BinaryHeap<Entry>>,
}

impl ReadyQueues {
    pub fn push(&mut self, class: Class, entry: Entry) {
        self.classes.entry(class).or_default().push(entry);
    }
}
