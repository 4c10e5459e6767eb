//! Run retention: a run that ended longer ago than `--run-retention` is forgotten by the
//! scheduler, the run logs and the store. End times are wall-clock times kept in the store's
//! `runs` rows, because the scheduler's clock starts again at zero with every process.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drover_scheduler::duration::format_duration;
use drover_scheduler::state::{Event, SchedError};

use super::Actor;
use crate::error::CoordError;

/// How long ended runs are kept, and how often the actor looks for runs past that.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// `None`: runs are kept forever.
    pub keep: Option<Duration>,
    pub sweep_interval: Duration,
}

impl Retention {
    /// Runs that ended before this time (milliseconds since the Unix epoch) are forgotten.
    pub fn cutoff(&self, now: SystemTime) -> Option<u64> {
        let keep = self.keep?;
        Some(unix_ms(now).saturating_sub(keep.as_millis() as u64))
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Actor {
    /// Gives ended runs without a stored end time one, now: runs that ended before end times
    /// were stored, or that ended while the store was replayed. Their retention starts today.
    pub(super) fn note_end_times(&mut self) {
        let now = unix_ms(SystemTime::now());
        for run_id in self.sched.ended_runs() {
            self.store.run_ended(run_id, now);
        }
    }

    /// Forgets every run that ended before the retention cutoff; the store deletes them in the
    /// next commit, one transaction for the whole sweep.
    pub(super) fn sweep_ended_runs(&mut self) {
        let (Some(keep), Some(cutoff)) = (
            self.retention.keep,
            self.retention.cutoff(SystemTime::now()),
        ) else {
            return;
        };
        let mut forgotten = 0;
        for run_id in self.store.ended_before(cutoff) {
            let forget = Event::Forget {
                run_id: run_id.clone(),
            };
            match self.apply(forget) {
                // Unknown: the replay left it out; its rows are of no use either.
                Ok(_) | Err(CoordError::Sched(SchedError::UnknownRun(_))) => {}
                Err(e) => {
                    tracing::warn!(run = %run_id, error = %e, "run retention: run kept");
                    continue;
                }
            }
            self.logs.remove(&run_id);
            self.task_logs.forget(&run_id);
            self.store.forget(&run_id);
            forgotten += 1;
        }
        if forgotten > 0 {
            self.metrics.runs_forgotten(forgotten);
            tracing::info!(
                runs = forgotten,
                retention = %format_duration(keep),
                "forgot runs that ended longer ago than the run retention"
            );
        }
    }
}
