//! Why a task got the rule it got, for people (`reason`) and for tools (`ExplainRecord`).

use std::fmt;

use super::precedence::{self, Priority};
use super::{Rule, RunOn};

/// The rule that applies to one task and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// `project:target` or `project:target:configuration`.
    pub task: String,
    /// 0-based index of the chosen rule.
    pub rule: Option<usize>,
    pub priority: Option<Priority>,
    /// The chosen rule's `run-on`; empty when no rule matches.
    pub run_on: Vec<RunOn>,
    /// One line, e.g. `rule 1 (targets: e2e-ci*, projects: app1; priority 4) — more specific
    /// than rule 2 (priority 6)`. Rule numbers here are 1-based, as in error messages.
    pub reason: String,
}

/// One task's rule as JSON:
/// `{"task": "app1:build:production", "rule": 0, "run_on": [{"agent": "linux-medium", "parallelism": 5}]}`;
/// `"rule": null, "run_on": []` when no rule matches.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ExplainRecord {
    pub task: String,
    pub rule: Option<usize>,
    pub run_on: Vec<RunOn>,
}

impl Explanation {
    pub fn record(&self) -> ExplainRecord {
        ExplainRecord {
            task: self.task.clone(),
            rule: self.rule,
            run_on: self.run_on.clone(),
        }
    }
}

/// `app1:build:production: rule 1 (...; priority 1) — ...`
impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.task, self.reason)
    }
}

impl From<Explanation> for ExplainRecord {
    fn from(e: Explanation) -> ExplainRecord {
        ExplainRecord {
            task: e.task,
            rule: e.rule,
            run_on: e.run_on,
        }
    }
}

pub(super) fn explain(
    rules: &[Rule],
    project: &str,
    target: &str,
    configuration: Option<&str>,
) -> Explanation {
    let task = match configuration {
        Some(c) => format!("{project}:{target}:{c}"),
        None => format!("{project}:{target}"),
    };
    let matching: Vec<(usize, Priority)> =
        precedence::matching(rules, project, target, configuration).collect();
    let Some(&(chosen, priority)) = matching.iter().min_by_key(|&&(i, p)| (p, i)) else {
        return Explanation {
            task,
            rule: None,
            priority: None,
            run_on: Vec::new(),
            reason: "no rule matches; any agent type may run it".to_string(),
        };
    };
    debug_assert_eq!(
        Some(chosen),
        precedence::choose(rules, project, target, configuration)
    );

    let rule = &rules[chosen];
    let mut reason = format!(
        "rule {} ({}; priority {priority})",
        chosen + 1,
        rule.criteria()
    );
    let others: Vec<String> = matching
        .iter()
        .filter(|&&(i, _)| i != chosen)
        .map(|&(i, p)| {
            if p > priority {
                format!("more specific than rule {} (priority {p})", i + 1)
            } else {
                format!("listed before rule {} (also priority {p})", i + 1)
            }
        })
        .collect();
    if others.is_empty() {
        reason.push_str(" — the only rule that matches");
    } else {
        reason.push_str(" — ");
        reason.push_str(&others.join(", "));
    }
    Explanation {
        task,
        rule: Some(chosen),
        priority: Some(priority),
        run_on: rule.run_on.clone(),
        reason,
    }
}
