//! Every run the scheduler opened, by index, by id and by CI execution. Leases, parallelism
//! groups and the round-robin cursor hold run indices, so a forgotten run leaves a tombstone
//! (an empty slot, one pointer wide) instead of shifting the runs after it. Loops go over the
//! live slots only. The count of ready tasks over all runs is kept here, moved only by the
//! phase changes that go through [`Runs::mark_ready`], [`Runs::take_ready`] and
//! [`Runs::end`].

use std::collections::HashMap;
use std::ops::{Index, IndexMut};

use super::event::RunRef;
use super::run::Run;
use super::types::{LeaseId, SchedError, TaskStatus};

#[derive(Debug)]
pub(crate) struct Runs {
    slots: Vec<Option<Box<Run>>>,
    /// Indices of the slots that hold a run, ascending.
    live: Vec<usize>,
    by_id: HashMap<String, usize>,
    /// The newest run of each CI execution id.
    by_execution: HashMap<String, usize>,
    ready_total: usize,
    /// The number in the next run id.
    next_run: u64,
    /// Round-robin cursor, so runs that share agents take turns.
    pub turn: usize,
}

impl Default for Runs {
    fn default() -> Self {
        Runs {
            slots: Vec::new(),
            live: Vec::new(),
            by_id: HashMap::new(),
            by_execution: HashMap::new(),
            ready_total: 0,
            next_run: 1,
            turn: 0,
        }
    }
}

impl Runs {
    /// The number of slots, tombstones included: every run index is below it.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// A new run id: the wall clock's seconds and a counter, unique for this data dir.
    pub fn new_id(&mut self, unix_ms: u64) -> String {
        let id = format!("run-{:x}-{}", unix_ms / 1000, self.next_run);
        self.next_run += 1;
        id
    }

    pub fn next_run(&self) -> u64 {
        self.next_run
    }

    pub fn set_next_run(&mut self, next: u64) {
        self.next_run = self.next_run.max(next).max(1);
    }

    /// Adds a run in a new slot, the newest of its CI execution, and returns its index.
    pub fn open(&mut self, run: Run) -> usize {
        let r = self.slots.len();
        self.by_id.insert(run.id.clone(), r);
        self.by_execution
            .insert(run.spec.ci_execution_id.clone(), r);
        self.slots.push(Some(Box::new(run)));
        self.live.push(r);
        r
    }

    pub fn find(&self, run_id: &str) -> Result<usize, SchedError> {
        self.by_id
            .get(run_id)
            .copied()
            .ok_or_else(|| SchedError::UnknownRun(run_id.to_string()))
    }

    pub fn resolve(&self, run: &RunRef) -> Result<usize, SchedError> {
        match run {
            RunRef::Id(id) => self.find(id),
            RunRef::Execution(exec) => self
                .newest_of(exec)
                .ok_or_else(|| SchedError::NoRunForExecution(exec.clone())),
        }
    }

    /// The newest run of a CI execution.
    pub fn newest_of(&self, ci_execution_id: &str) -> Option<usize> {
        self.by_execution.get(ci_execution_id).copied()
    }

    pub fn contains(&self, run_id: &str) -> bool {
        self.by_id.contains_key(run_id)
    }

    /// Turns the slot into a tombstone and returns the run it held.
    pub fn forget(&mut self, r: usize) -> Option<Box<Run>> {
        let run = self.slots.get_mut(r)?.take()?;
        if let Ok(k) = self.live.binary_search(&r) {
            self.live.remove(k);
        }
        self.by_id.remove(&run.id);
        if self.by_execution.get(&run.spec.ci_execution_id) == Some(&r) {
            self.by_execution.remove(&run.spec.ci_execution_id);
        }
        assert_eq!(
            run.ready_count(),
            0,
            "run {} forgotten with ready tasks",
            run.id
        );
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

    /// Ready tasks over every run.
    pub fn ready_total(&self) -> usize {
        self.ready_total
    }

    pub fn mark_ready(&mut self, r: usize, i: usize, seq: u64) {
        self[r].mark_ready(i, seq);
        self.ready_total += 1;
    }

    pub fn take_ready(&mut self, r: usize, i: usize, lease: LeaseId) {
        self[r].take_ready(i, lease);
        self.ready_total -= 1;
    }

    pub fn end(&mut self, r: usize, i: usize, status: TaskStatus) {
        if self[r].end(i, status) {
            self.ready_total -= 1;
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
