//! Drover's scheduling domain: task graphs, assignment rules, duration estimates, leases and the
//! scheduling state machine.
//!
//! Everything here is synchronous and deterministic: no tokio, no tonic, no system clock. The
//! caller passes `now` (a [`Duration`](std::time::Duration) since its own epoch) into every
//! call, so every timing rule is tested without sleeping, and the simulator runs the very same
//! code under a virtual clock.
#![forbid(unsafe_code)]

pub mod duration;
pub mod estimate;
pub mod fleet;
pub mod graph;
pub mod launch;
pub mod rules;
pub mod sim;
pub mod state;
pub mod task;

pub use graph::{GraphError, TaskGraph};
pub use rules::RuleSet;
pub use state::{
    Action, AgentId, Config, Event, LeaseId, Outcome, Policy, Reply, RunEvent, RunRef, RunSpec,
    Scheduler, TaskResult, TaskStatus,
};
pub use task::{TaskSpec, shell_word};
