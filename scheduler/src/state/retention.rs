//! Forgetting runs that ended: the owner decides when (it keeps the wall-clock end times), the
//! scheduler drops the run's state and leaves a tombstone in its slot.

use super::*;

impl Scheduler {
    /// Whether the scheduler knows this run (it was opened and not forgotten).
    pub fn has_run(&self, run_id: &str) -> bool {
        self.run_index.contains_key(run_id)
    }

    /// The runs that have ended (succeeded or failed), in the order they were opened.
    pub fn ended_runs(&self) -> impl Iterator<Item = &str> {
        self.runs
            .iter()
            .filter(|r| !r.is_active())
            .map(|r| r.id.as_str())
    }

    /// Forgets a run that has ended: its tasks, submissions and queues are dropped, its id is
    /// no longer known (lookups answer [`SchedError::UnknownRun`]) and its CI execution id no
    /// longer names it. Other runs keep their indices. An active run is refused.
    pub fn forget_run(&mut self, run_id: &str) -> Result<(), SchedError> {
        let r = self.run_index(run_id)?;
        let run = &self.runs[r];
        // An ended run has no task left running; the lease check only guards that invariant.
        if run.is_active() || self.leases.values().any(|l| l.run == r) {
            return Err(SchedError::RunActive(run_id.to_string()));
        }
        debug_assert_eq!(run.ready_count, 0, "an ended run has no ready task");
        let exec = run.spec.ci_execution_id.clone();
        if self.by_execution.get(&exec) == Some(&r) {
            self.by_execution.remove(&exec);
        }
        self.run_index.remove(run_id);
        // Parallelism groups of the run are all at zero (it has no lease): drop the entries.
        for agent in self.agents.values_mut() {
            agent.groups.retain(|&(run, _), _| run != r);
        }
        self.runs.forget(r);
        Ok(())
    }
}
