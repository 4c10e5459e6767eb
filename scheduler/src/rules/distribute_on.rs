//! `distribute-on`: Nx's changesets, each a name and the agents it starts, e.g.
//!
//! ```yaml
//! distribute-on:
//!   small-changeset: 1 linux-small-js, 2 linux-medium-js
//!   default: 5 linux-medium-js, 5 linux-large-js
//! ```

use crate::fleet::FleetSpec;

use super::Position;
use super::error::Collector;
use super::yaml::{Node, Value};

/// One `distribute-on` changeset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changeset {
    pub name: String,
    pub agents: FleetSpec,
    /// Where the changeset's agent list is written.
    pub at: Position,
}

impl Changeset {
    pub fn has(&self, agent_type: &str) -> bool {
        self.agents.groups.iter().any(|g| g.template == agent_type)
    }
}

const EXAMPLE: &str = "5 linux-medium-js, 5 linux-large-js";

/// Reads the value of `distribute-on`, recording problems in `errors`.
pub(super) fn read(node: &Node, errors: &mut Collector) -> Vec<Changeset> {
    let entries = match &node.value {
        Value::Map(entries) if !entries.is_empty() => entries,
        Value::Map(_) | Value::Null => {
            errors.push(
                node.at,
                None,
                format!(
                    "`distribute-on` is empty; expected changesets such as `default: {EXAMPLE}`"
                ),
            );
            return Vec::new();
        }
        _ => {
            errors.push(
                node.at,
                None,
                format!(
                    "`distribute-on` must map changeset names to agents, such as `default: {EXAMPLE}`; found {}",
                    node.kind()
                ),
            );
            return Vec::new();
        }
    };
    let mut changesets = Vec::new();
    for (key, value) in entries {
        let Some(name) = key.as_str() else {
            errors.push(
                key.at,
                None,
                format!("a changeset name must be text, found {}", key.kind()),
            );
            continue;
        };
        let Some(text) = value.as_str() else {
            errors.push(
                value.at,
                None,
                format!(
                    "changeset `{name}` must list agents such as `{EXAMPLE}`, found {}",
                    value.kind()
                ),
            );
            continue;
        };
        // Drover's agent SPEC also takes `:SLOTS`; Nx's changesets do not.
        if text.contains(':') {
            errors.push(
                value.at,
                None,
                format!(
                    "changeset `{name}`: `{text}` has a `:`; expected `COUNT AGENT-TYPE` entries such as `{EXAMPLE}`"
                ),
            );
            continue;
        }
        match FleetSpec::parse(text) {
            Ok(agents) => changesets.push(Changeset {
                name: name.to_string(),
                agents,
                at: value.at,
            }),
            Err(e) => errors.push(value.at, None, format!("changeset `{name}`: {e}")),
        }
    }
    changesets
}
