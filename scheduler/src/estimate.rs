//! Duration estimates learned from finished tasks: per task id (exponentially weighted), then
//! the target's average, then the graph's `estimate` hint, then a default.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::task::TaskSpec;

/// Weight of the newest sample in a task's moving average.
const ALPHA: f64 = 0.3;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
struct Ewma {
    ms: f64,
    samples: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
struct Mean {
    total_ms: f64,
    samples: u64,
}

/// What the scheduler knows about how long tasks take.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Estimates {
    per_task: HashMap<String, Ewma>,
    per_target: HashMap<String, Mean>,
    /// Used when nothing else is known.
    pub default: Duration,
}

impl Default for Estimates {
    fn default() -> Self {
        Estimates {
            per_task: HashMap::new(),
            per_target: HashMap::new(),
            default: Duration::from_secs(10),
        }
    }
}

/// Where an estimate came from, for explanations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    TaskHistory,
    TargetAverage,
    Hint,
    Default,
}

impl Estimates {
    /// The estimate for a task, and where it came from.
    pub fn estimate_with_source(&self, task: &TaskSpec) -> (Duration, Source) {
        if let Some(e) = self.per_task.get(&task.id) {
            return (
                Duration::from_millis(e.ms.round() as u64),
                Source::TaskHistory,
            );
        }
        if let Some(m) = self.per_target.get(&task.target).filter(|m| m.samples > 0) {
            return (
                Duration::from_millis((m.total_ms / m.samples as f64).round() as u64),
                Source::TargetAverage,
            );
        }
        if let Some(hint) = task.estimate {
            return (hint, Source::Hint);
        }
        (self.default, Source::Default)
    }

    /// Every task's learned duration (its moving average), by task id.
    pub fn per_task(&self) -> impl Iterator<Item = (&str, Duration)> {
        self.per_task
            .iter()
            .map(|(id, e)| (id.as_str(), Duration::from_secs_f64(e.ms.max(0.0) / 1000.0)))
    }

    pub fn estimate(&self, task: &TaskSpec) -> Duration {
        self.estimate_with_source(task).0
    }

    /// Learns from one successful run of a task.
    pub fn record(&mut self, task: &TaskSpec, took: Duration) {
        let ms = took.as_secs_f64() * 1000.0;
        let e = self.per_task.entry(task.id.clone()).or_default();
        e.ms = if e.samples == 0 {
            ms
        } else {
            e.ms + ALPHA * (ms - e.ms)
        };
        e.samples += 1;
        let m = self.per_target.entry(task.target.clone()).or_default();
        m.total_ms += ms;
        m.samples += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_back_from_task_to_target_to_hint_to_default() {
        let mut est = Estimates::default();
        let mut a = TaskSpec::new("a:build", "true");
        let b = TaskSpec::new("b:build", "true");
        let c = TaskSpec::new("c:test", "true");
        a.estimate = Some(Duration::from_secs(7));
        assert_eq!(
            est.estimate_with_source(&a),
            (Duration::from_secs(7), Source::Hint)
        );
        assert_eq!(
            est.estimate_with_source(&c),
            (Duration::from_secs(10), Source::Default)
        );
        est.record(&a, Duration::from_secs(20));
        assert_eq!(
            est.estimate_with_source(&a),
            (Duration::from_secs(20), Source::TaskHistory)
        );
        assert_eq!(
            est.estimate_with_source(&b),
            (Duration::from_secs(20), Source::TargetAverage)
        );
        est.record(&a, Duration::from_secs(10));
        assert_eq!(est.estimate(&a), Duration::from_secs(17));
        assert_eq!(est.estimate(&b), Duration::from_secs(15));
    }

    #[test]
    fn round_trips_through_json() {
        let mut est = Estimates::default();
        est.record(
            &TaskSpec::new("a:build", "true"),
            Duration::from_millis(1234),
        );
        let back: Estimates = serde_json::from_str(&serde_json::to_string(&est).unwrap()).unwrap();
        assert_eq!(back, est);
    }
}
