//! Every run the scheduler opened, by index. Leases, parallelism groups, `by_execution` and the
//! round-robin cursor hold run indices, so a forgotten run leaves a tombstone (an empty slot,
//! one pointer wide) instead of shifting the runs after it. Loops go over the live slots only.

use std::ops::{Index, IndexMut};

use super::run::Run;

#[derive(Debug, Default)]
pub(crate) struct Runs {
    slots: Vec<Option<Box<Run>>>,
    /// Indices of the slots that hold a run, ascending.
    live: Vec<usize>,
}

impl Runs {
    /// The number of slots, tombstones included: every run index is below it.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Adds a run in a new slot and returns its index.
    pub fn push(&mut self, run: Run) -> usize {
        let r = self.slots.len();
        self.slots.push(Some(Box::new(run)));
        self.live.push(r);
        r
    }

    /// Turns the slot into a tombstone and returns the run it held.
    pub fn forget(&mut self, r: usize) -> Option<Box<Run>> {
        let run = self.slots.get_mut(r)?.take()?;
        if let Ok(k) = self.live.binary_search(&r) {
            self.live.remove(k);
        }
        Some(run)
    }

    /// Indices of the live runs, ascending.
    pub fn live(&self) -> &[usize] {
        &self.live
    }

    /// The position in [`live`](Self::live) of the first live run at or after slot `r`
    /// (`live().len()` when there is none).
    pub fn live_from(&self, r: usize) -> usize {
        self.live.partition_point(|&x| x < r)
    }

    /// The live runs, in the order they were opened.
    pub fn iter(&self) -> impl Iterator<Item = &Run> {
        self.live.iter().map(|&r| &self[r])
    }

    /// Calls `f` on every live run.
    pub fn for_each_mut(&mut self, mut f: impl FnMut(&mut Run)) {
        for &r in &self.live {
            if let Some(run) = self.slots[r].as_deref_mut() {
                f(run);
            }
        }
    }
}

impl Index<usize> for Runs {
    type Output = Run;

    /// A live run. Nothing holds the index of a forgotten run, so reaching a tombstone is a bug.
    fn index(&self, r: usize) -> &Run {
        match self.slots[r].as_deref() {
            Some(run) => run,
            None => panic!("run slot {r} was forgotten"),
        }
    }
}

impl IndexMut<usize> for Runs {
    fn index_mut(&mut self, r: usize) -> &mut Run {
        match self.slots[r].as_deref_mut() {
            Some(run) => run,
            None => panic!("run slot {r} was forgotten"),
        }
    }
}
