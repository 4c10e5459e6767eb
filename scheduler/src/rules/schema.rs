//! The two Nx schemas for a rule, read out of the YAML tree.
//!
//! Current:
//!
//! ```yaml
//! assignment-rules:
//!   - projects: [app1]          # lists of globs
//!     targets: [e2e-ci*]
//!     configurations: [production]
//!     run-on:
//!       - agent: linux-medium
//!         parallelism: 5
//! ```
//!
//! Deprecated (still accepted, as Nx does):
//!
//! ```yaml
//! assignment-rules:
//!   - project: app1             # one glob
//!     target: e2e-ci*
//!     configuration: production
//!     runs-on:                  # agent type names
//!       - linux-medium-js
//! ```
//!
//! Either spelling of a property takes a single glob string or a list of them, and `run-on`
//! and `runs-on` both take `{agent, parallelism}` entries or plain agent type names. A rule
//! may mix spellings, but not give one property under both.
//!
//! Every problem is recorded in the [`Collector`], so a file with several mistakes gets them
//! all back in one go.

use super::distribute_on::{self, Changeset};
use super::error::Collector;
use super::glob::{GlobEntry, GlobList};
use super::suggest::closest;
use super::yaml::{self, Node, Value};
use super::{Position, Rule, RunOn};

pub(super) const ASSIGNMENT_RULES: &str = "assignment-rules";
pub(super) const DISTRIBUTE_ON: &str = "distribute-on";
const TOP_KEYS: &[&str] = &[ASSIGNMENT_RULES, DISTRIBUTE_ON];

const RUN_ON: &str = "run-on";
const RUNS_ON: &str = "runs-on";
const AGENT: &str = "agent";
const PARALLELISM: &str = "parallelism";
const RUN_ON_KEYS: &[&str] = &[AGENT, PARALLELISM];

/// The three matching properties: current key, deprecated key.
const PROPERTIES: [(&str, &str); 3] = [
    ("projects", "project"),
    ("targets", "target"),
    ("configurations", "configuration"),
];

/// Every key a rule may have; current spellings first so suggestions prefer them.
const RULE_KEYS: &[&str] = &[
    "projects",
    "targets",
    "configurations",
    RUN_ON,
    "project",
    "target",
    "configuration",
    RUNS_ON,
];

const MISSING_PROPERTIES: &str =
    "at least one of `projects`, `targets`, `configurations` is required";

/// What a file holds, as far as it could be read.
#[derive(Default)]
pub(super) struct Document {
    /// Every rule, including ones with problems (with the parts that could be read), so that
    /// later checks can still look at their agent types.
    pub(super) rules: Vec<Rule>,
    pub(super) changesets: Vec<Changeset>,
}

pub(super) fn read(text: &str, errors: &mut Collector) -> Document {
    let start = Position { line: 1, column: 1 };
    let root = match yaml::load(text) {
        Ok(Some(root)) => root,
        Ok(None) => {
            errors.push(
                start,
                None,
                "the file is empty; expected an `assignment-rules` list",
            );
            return Document::default();
        }
        Err(e) => {
            errors.push(e.at, None, e.message);
            return Document::default();
        }
    };
    let Value::Map(entries) = &root.value else {
        errors.push(
            root.at,
            None,
            format!(
                "expected a mapping with an `assignment-rules` list, found {}",
                root.kind()
            ),
        );
        return Document::default();
    };

    let mut document = Document::default();
    let mut found_rules = false;
    for (key, value) in entries {
        match key.as_str() {
            Some(ASSIGNMENT_RULES) => {
                found_rules = true;
                document.rules = read_rules(value, errors);
            }
            Some(DISTRIBUTE_ON) => document.changesets = distribute_on::read(value, errors),
            _ => errors.push(key.at, None, unknown_key(key, TOP_KEYS)),
        }
    }
    if !found_rules {
        errors.push(root.at, None, "`assignment-rules` is missing");
    }
    document
}

fn read_rules(node: &Node, errors: &mut Collector) -> Vec<Rule> {
    match &node.value {
        Value::Seq(items) => items
            .iter()
            .enumerate()
            .map(|(index, item)| read_rule(index, item, errors))
            .collect(),
        Value::Null => {
            errors.push(
                node.at,
                None,
                "`assignment-rules` is empty; expected a list of rules (write `[]` for none)",
            );
            Vec::new()
        }
        _ => {
            errors.push(
                node.at,
                None,
                format!(
                    "`assignment-rules` must be a list of rules, found {}",
                    node.kind()
                ),
            );
            Vec::new()
        }
    }
}

/// One rule. Always returns what could be read; problems go to `errors`.
fn read_rule(index: usize, node: &Node, errors: &mut Collector) -> Rule {
    let mut rule = Rule {
        index,
        run_on: Vec::new(),
        line: node.at.line,
        column: node.at.column,
        projects: None,
        targets: None,
        configurations: None,
        run_on_at: Vec::new(),
    };
    let rule_no = Some(index);
    let Value::Map(entries) = &node.value else {
        errors.push(
            node.at,
            rule_no,
            format!(
                "a rule must be a mapping with `run-on` and at least one of `projects`, `targets`, `configurations`; found {}",
                node.kind()
            ),
        );
        return rule;
    };

    // Which spelling each property (and run-on) was given under, to refuse both at once.
    let mut property_keys: [Option<&str>; 3] = [None; 3];
    let mut run_on_key: Option<&str> = None;
    // Keys we suggested for misspelt ones: a misspelt `run-on` is reported once, as such,
    // not again as a missing `run-on`.
    let mut suggested: Vec<&str> = Vec::new();
    for (key, value) in entries {
        let Some(name) = key.as_str() else {
            errors.push(key.at, rule_no, unknown_key(key, RULE_KEYS));
            continue;
        };
        if let Some(p) = PROPERTIES
            .iter()
            .position(|&(current, old)| name == current || name == old)
        {
            if let Some(earlier) = property_keys[p] {
                errors.push(key.at, rule_no, both_given(earlier, name, PROPERTIES[p].0));
                continue;
            }
            property_keys[p] = Some(name);
            let globs = read_globs(name, value, rule_no, errors);
            match p {
                0 => rule.projects = globs,
                1 => rule.targets = globs,
                _ => rule.configurations = globs,
            }
        } else if name == RUN_ON || name == RUNS_ON {
            if let Some(earlier) = run_on_key {
                errors.push(key.at, rule_no, both_given(earlier, name, RUN_ON));
                continue;
            }
            run_on_key = Some(name);
            read_run_on(name, value, rule_no, &mut rule, errors);
        } else {
            suggested.extend(closest(name, RULE_KEYS));
            errors.push(key.at, rule_no, unknown_key(key, RULE_KEYS));
        }
    }

    let property_suggested = suggested.iter().any(|s| {
        PROPERTIES
            .iter()
            .any(|&(current, old)| *s == current || *s == old)
    });
    if property_keys.iter().all(Option::is_none) && !property_suggested {
        errors.push(node.at, rule_no, MISSING_PROPERTIES);
    }
    let run_on_suggested = suggested.iter().any(|s| *s == RUN_ON || *s == RUNS_ON);
    if run_on_key.is_none() && !run_on_suggested {
        errors.push(node.at, rule_no, "`run-on` is missing");
    }
    rule
}

/// A property's globs: one string or a list of strings, each maybe comma-separated.
/// `None` (with errors recorded) when the value is unusable.
fn read_globs(
    key: &str,
    node: &Node,
    rule_no: Option<usize>,
    errors: &mut Collector,
) -> Option<GlobList> {
    let items: Vec<&Node> = match &node.value {
        Value::Seq(items) if !items.is_empty() => items.iter().collect(),
        Value::Seq(_) | Value::Null => {
            errors.push(
                node.at,
                rule_no,
                format!("`{key}` is empty; expected at least one glob"),
            );
            return None;
        }
        Value::Map(_) => {
            errors.push(
                node.at,
                rule_no,
                format!("`{key}` must be a list of globs, found a mapping"),
            );
            return None;
        }
        _ => vec![node],
    };
    let before = errors.count();
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let Some(text) = item.as_str() else {
            errors.push(
                item.at,
                rule_no,
                format!("`{key}` entries must be globs, found {}", item.kind()),
            );
            continue;
        };
        match GlobEntry::parse(text) {
            Ok(entry) => entries.push(entry),
            Err(e) => errors.push(item.at, rule_no, format!("`{key}`: {e}")),
        }
    }
    (errors.count() == before).then(|| GlobList::new(entries))
}

/// `run-on` / `runs-on`: entries into `rule.run_on`, problems into `errors`.
fn read_run_on(
    key: &str,
    node: &Node,
    rule_no: Option<usize>,
    rule: &mut Rule,
    errors: &mut Collector,
) {
    let items = match &node.value {
        Value::Seq(items) if !items.is_empty() => items,
        Value::Seq(_) | Value::Null => {
            errors.push(
                node.at,
                rule_no,
                format!("`{key}` is empty; expected at least one agent type"),
            );
            return;
        }
        _ => {
            errors.push(
                node.at,
                rule_no,
                format!(
                    "`{key}` must be a list of agents such as `- agent: linux-medium`, found {}",
                    node.kind()
                ),
            );
            return;
        }
    };
    for item in items {
        let Some((run_on, at)) = read_run_on_entry(key, item, rule_no, errors) else {
            continue;
        };
        if rule.run_on.iter().any(|r| r.agent == run_on.agent) {
            errors.push(
                at,
                rule_no,
                format!("agent type `{}` is listed twice in `{key}`", run_on.agent),
            );
            continue;
        }
        rule.run_on.push(run_on);
        rule.run_on_at.push(at);
    }
}

/// One `run-on` entry, `{agent, parallelism}` or a bare agent type, and where its agent type
/// is written.
fn read_run_on_entry(
    key: &str,
    node: &Node,
    rule_no: Option<usize>,
    errors: &mut Collector,
) -> Option<(RunOn, Position)> {
    if let Some(agent) = node.as_str() {
        let agent = agent_type(agent, node.at, rule_no, errors)?;
        return Some((
            RunOn {
                agent,
                parallelism: None,
            },
            node.at,
        ));
    }
    let Value::Map(entries) = &node.value else {
        errors.push(
            node.at,
            rule_no,
            format!(
                "`{key}` entries must be `agent:` mappings or agent type names, found {}",
                node.kind()
            ),
        );
        return None;
    };
    let before = errors.count();
    let mut agent: Option<(String, Position)> = None;
    let mut parallelism = None;
    for (k, v) in entries {
        match k.as_str() {
            Some(AGENT) => match v.as_str() {
                Some(text) => {
                    agent = agent_type(text, v.at, rule_no, errors).map(|a| (a, v.at));
                }
                None => errors.push(
                    v.at,
                    rule_no,
                    format!("`agent` must be an agent type name, found {}", v.kind()),
                ),
            },
            Some(PARALLELISM) => parallelism = read_parallelism(v, rule_no, errors),
            _ => errors.push(k.at, rule_no, unknown_key(k, RUN_ON_KEYS)),
        }
    }
    let has_agent_key = entries.iter().any(|(k, _)| k.as_str() == Some(AGENT));
    if !has_agent_key {
        errors.push(
            node.at,
            rule_no,
            format!("`{key}` entry is missing `agent`"),
        );
    }
    if errors.count() != before {
        return None;
    }
    let (agent, at) = agent?;
    Some((RunOn { agent, parallelism }, at))
}

/// An agent type name: not empty, and free of the separators an agent SPEC uses.
fn agent_type(
    text: &str,
    at: Position,
    rule_no: Option<usize>,
    errors: &mut Collector,
) -> Option<String> {
    if text.trim().is_empty() {
        errors.push(at, rule_no, "the agent type is empty");
        return None;
    }
    if text.contains(|c: char| c.is_whitespace() || c == ',' || c == ':') {
        errors.push(
            at,
            rule_no,
            format!("agent type `{text}` must not contain spaces, `,` or `:`"),
        );
        return None;
    }
    Some(text.to_string())
}

fn read_parallelism(node: &Node, rule_no: Option<usize>, errors: &mut Collector) -> Option<u32> {
    match node.value {
        Value::Int(n) if n >= 1 => match u32::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                errors.push(
                    node.at,
                    rule_no,
                    format!(
                        "`parallelism` must be at most {}, got {}",
                        u32::MAX,
                        node.shown()
                    ),
                );
                None
            }
        },
        _ => {
            errors.push(
                node.at,
                rule_no,
                format!(
                    "`parallelism` must be a positive integer, got {}",
                    node.shown()
                ),
            );
            None
        }
    }
}

fn both_given(earlier: &str, now: &str, preferred: &str) -> String {
    if earlier == now {
        // The parser refuses duplicate keys, so this is two spellings of one property.
        format!("`{now}` is given twice")
    } else {
        format!("both `{earlier}` and `{now}` are given; use only `{preferred}`")
    }
}

fn unknown_key(key: &Node, known: &[&str]) -> String {
    let Some(name) = key.as_str() else {
        return format!("keys must be names, found {}", key.kind());
    };
    match closest(name, known) {
        Some(suggestion) => format!("unknown key `{name}`; did you mean `{suggestion}`?"),
        None => {
            let current: Vec<String> = known
                .iter()
                .filter(|k| !matches!(**k, "project" | "target" | "configuration" | RUNS_ON))
                .map(|k| format!("`{k}`"))
                .collect();
            format!(
                "unknown key `{name}`; expected one of {}",
                current.join(", ")
            )
        }
    }
}
