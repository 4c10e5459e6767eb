//! Whether the agent types rules run on exist: in every `distribute-on` changeset (Nx agents)
//! or among the agent types a caller knows (manual distribution with Drover agents).

use super::distribute_on::Changeset;
use super::error::Collector;
use super::{Position, Rule, RunOn};

/// Nx: "every changeset in your `distribute-on` field must include at least one agent that
/// matches each agent type specified in the `runs-on` field across all assignment rules".
///
/// An agent type found in no changeset is a mistake in the rule, reported there. One missing
/// from only some changesets is a mistake in those changesets, reported at each of them,
/// once per agent type, naming the rules that need it.
pub(super) fn against_changesets(rules: &[Rule], changesets: &[Changeset], errors: &mut Collector) {
    if changesets.is_empty() {
        return;
    }
    let all_types = changesets.iter().flat_map(|c| c.agents.templates());
    let mut known: Vec<&str> = Vec::new();
    for t in all_types {
        if !known.contains(&t) {
            known.push(t);
        }
    }

    // (agent type, rules using it) for types some changeset has and some lacks.
    let mut partly_missing: Vec<(&str, Vec<usize>)> = Vec::new();
    for rule in rules {
        for (run_on, at) in entries(rule) {
            let agent = run_on.agent.as_str();
            if !known.contains(&agent) {
                errors.push(
                    at,
                    Some(rule.index),
                    format!(
                        "agent type `{agent}` is not in any `distribute-on` changeset ({})",
                        known.join(", ")
                    ),
                );
            } else if changesets.iter().any(|c| !c.has(agent)) {
                match partly_missing.iter_mut().find(|(a, _)| *a == agent) {
                    Some((_, users)) => users.push(rule.index),
                    None => partly_missing.push((agent, vec![rule.index])),
                }
            }
        }
    }
    for changeset in changesets {
        for (agent, users) in &partly_missing {
            if changeset.has(agent) {
                continue;
            }
            errors.push(
                changeset.at,
                None,
                format!(
                    "changeset `{}` has no `{agent}` agent, which {} {} on; every changeset needs agents of each type the rules run on",
                    changeset.name,
                    rule_list(users),
                    if users.len() == 1 { "runs" } else { "run" },
                ),
            );
        }
    }
}

/// Every `run-on` agent type that is not among `known`.
pub(super) fn against_known(rules: &[Rule], known: &[&str], errors: &mut Collector) {
    let listed = if known.is_empty() {
        "none are known".to_string()
    } else {
        known.join(", ")
    };
    for rule in rules {
        for (run_on, at) in entries(rule) {
            if !known.contains(&run_on.agent.as_str()) {
                errors.push(
                    at,
                    Some(rule.index),
                    format!(
                        "agent type `{}` is not among the agent types ({listed})",
                        run_on.agent
                    ),
                );
            }
        }
    }
}

/// `rule 1`, `rules 1 and 3`, `rules 1, 2 and 4` (1-based).
fn rule_list(indexes: &[usize]) -> String {
    let numbers: Vec<String> = indexes.iter().map(|i| (i + 1).to_string()).collect();
    match numbers.as_slice() {
        [one] => format!("rule {one}"),
        [init @ .., last] => format!("rules {} and {last}", init.join(", ")),
        [] => "no rule".to_string(),
    }
}

/// A rule's `run-on` entries with where each is written (the rule's start for a rule built
/// by hand without positions).
fn entries(rule: &Rule) -> impl Iterator<Item = (&RunOn, Position)> {
    let start = Position {
        line: rule.line,
        column: rule.column,
    };
    rule.run_on
        .iter()
        .enumerate()
        .map(move |(i, r)| (r, rule.run_on_at.get(i).copied().unwrap_or(start)))
}
