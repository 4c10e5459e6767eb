//! The values stored in the tables: JSON rows for what the scheduler defines, protobuf for
//! run events (they are protobuf already).

use drover_proto::v1 as pb;
use drover_scheduler::TaskSpec;
use drover_scheduler::state::TaskRecord;
use serde::{Deserialize, Serialize};

/// A run: when it was opened and when the main job completed it, in write-counter order, and
/// when it ended, by the wall clock (run retention counts from then).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRow {
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<u64>,
    /// Milliseconds since the Unix epoch when the run ended (succeeded or failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at_ms: Option<u64>,
    /// Milliseconds since the Unix epoch when the run was opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmissionRow {
    pub version: u64,
    pub tasks: Vec<TaskSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRow {
    /// The write counter of the task's last change: ended tasks replay in the order they ended.
    pub version: u64,
    pub record: TaskRecord,
}

/// A run event and the submissions it belongs to.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredEvent {
    #[prost(message, optional, tag = "1")]
    pub event: Option<pb::RunEvent>,
    #[prost(uint64, repeated, tag = "2")]
    pub submissions: Vec<u64>,
}
