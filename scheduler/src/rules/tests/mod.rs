//! Tests of the rules module as a whole: the reference's examples, error messages, the
//! helpers the scheduler calls, and property tests of globs and precedence.

mod api;
mod errors;
mod props;
mod reference;

use super::RuleSet;

/// Parses a file that must be valid, as `assignment-rules.yaml`.
fn parse(text: &str) -> RuleSet {
    RuleSet::parse("assignment-rules.yaml", text).unwrap_or_else(|e| panic!("{e}"))
}

/// Every error of a file that must be invalid, as displayed.
fn errors(path: &str, text: &str) -> Vec<String> {
    match RuleSet::parse(path, text) {
        Ok(_) => panic!("{path} should not parse"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

/// `project:target[:configuration]` split into its parts.
fn task(task: &str) -> (&str, &str, Option<&str>) {
    let mut parts = task.splitn(3, ':');
    let project = parts.next().unwrap_or_default();
    let target = parts.next().expect("task needs a target");
    (project, target, parts.next())
}

fn rule_for(rules: &RuleSet, t: &str) -> Option<usize> {
    let (project, target, configuration) = task(t);
    rules.rule_for(project, target, configuration)
}

fn explain_rule(rules: &RuleSet, t: &str) -> String {
    let (project, target, configuration) = task(t);
    rules.explain(project, target, configuration).reason
}

/// Rule `i`'s `run-on` as (agent, parallelism) pairs.
fn run_on(rules: &RuleSet, i: usize) -> Vec<(&str, Option<u32>)> {
    rules.rules[i]
        .run_on
        .iter()
        .map(|r| (r.agent.as_str(), r.parallelism))
        .collect()
}
