//! A validated task graph: unique ids, known dependencies, no cycle.

mod file;
mod nx;
mod validate;

pub use file::{GraphFile, parse_graph_file};
pub use nx::{NxEdge, nx_edge_id_mut};
pub use validate::{TaskGraph, find_cycle};

use thiserror::Error;

/// A problem with a submitted graph. Each names the place: file and line, or the tasks.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GraphError {
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: String,
        line: u32,
        column: u32,
        message: String,
    },
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{place}task `{task}` is defined twice")]
    DuplicateId { place: String, task: String },
    #[error("{place}task `{task}` depends on unknown task `{dependency}`")]
    UnknownDependency {
        place: String,
        task: String,
        dependency: String,
    },
    #[error("{place}task `{task}` depends on itself")]
    SelfDependency { place: String, task: String },
    #[error("the graph has a cycle: {}", cycle.join(" -> "))]
    Cycle { cycle: Vec<String> },
    #[error("{place}task `{task}` has an empty command")]
    EmptyCommand { place: String, task: String },
    #[error("{place}a task has an empty id")]
    EmptyId { place: String },
    #[error(
        "{place}task `{}` has a control character in its id (shown escaped); ids are printed in logs and terminals",
        task.escape_debug()
    )]
    ControlCharacter { place: String, task: String },
    #[error(
        "{place}task `{task}` has `parallelism: 0`; a task that may run at most N at once per agent needs N of 1 or more"
    )]
    ZeroParallelism { place: String, task: String },
    #[error("the graph has no tasks")]
    Empty,
}
