//! The helpers the scheduler and CLI call: parallelism, allowed templates, explain.

use super::{explain_rule, parse};
use crate::rules::{ExplainRecord, RuleSet, RunOn};

const RULES: &str = "\
assignment-rules:
  - projects:
      - app1
    targets:
      - e2e-ci*
    run-on:
      - agent: linux-medium
        parallelism: 5
  - targets:
      - e2e-ci*
      - lint
    run-on:
      - agent: linux-large
      - agent: linux-medium
        parallelism: 2
  - targets:
      - lint
    run-on:
      - agent: linux-small
";

#[test]
fn parallelism_is_per_rule_and_agent_type() {
    let rules = parse(RULES);
    assert_eq!(rules.parallelism(0, "linux-medium"), Some(5));
    assert_eq!(rules.parallelism(1, "linux-medium"), Some(2));
    assert_eq!(rules.parallelism(1, "linux-large"), None);
    assert_eq!(rules.parallelism(0, "linux-large"), None, "not in rule 0");
    assert_eq!(rules.parallelism(9, "linux-medium"), None, "no rule 9");
}

#[test]
fn allows_only_the_rules_agent_types() {
    let rules = parse(RULES);
    assert!(rules.allows(Some(0), "linux-medium"));
    assert!(!rules.allows(Some(0), "linux-large"));
    assert!(rules.allows(Some(1), "linux-large"));
    assert!(rules.allows(None, "anything"), "no rule: any agent type");
    assert!(!rules.allows(Some(9), "linux-medium"), "no such rule");
}

#[test]
fn templates_in_file_order_once_each() {
    let rules = parse(RULES);
    assert_eq!(
        rules.templates(),
        ["linux-medium", "linux-large", "linux-small"]
    );
    assert!(RuleSet::default().templates().is_empty());
}

#[test]
fn the_default_rule_set_has_no_rules() {
    let rules = RuleSet::default();
    assert_eq!(rules.rule_for("app1", "build", Some("production")), None);
    assert!(rules.allows(rules.rule_for("app1", "build", None), "x"));
    assert!(rules.check_agent_types(&[]).is_ok());
}

#[test]
fn explain_says_why() {
    let rules = parse(RULES);
    assert_eq!(
        explain_rule(&rules, "app1:e2e-ci"),
        "rule 1 (targets: e2e-ci*, projects: app1; priority 4) — more specific than rule 2 (priority 6)"
    );
    assert_eq!(
        explain_rule(&rules, "app2:lint"),
        "rule 2 (targets: e2e-ci* or lint; priority 6) — listed before rule 3 (also priority 6)"
    );
    assert_eq!(
        explain_rule(&rules, "app2:e2e-ci-x"),
        "rule 2 (targets: e2e-ci* or lint; priority 6) — the only rule that matches"
    );
    assert_eq!(
        explain_rule(&rules, "app1:build"),
        "no rule matches; any agent type may run it"
    );
    let e = rules.explain("app1", "e2e-ci", Some("production"));
    assert_eq!(e.task, "app1:e2e-ci:production");
    assert_eq!(
        e.to_string(),
        "app1:e2e-ci:production: rule 1 (targets: e2e-ci*, projects: app1; priority 4) — more specific than rule 2 (priority 6)"
    );
    assert_eq!(e.rule, Some(0));
    assert_eq!(e.priority.map(|p| p.get()), Some(4));
    assert_eq!(
        e.run_on,
        [RunOn {
            agent: "linux-medium".to_string(),
            parallelism: Some(5)
        }]
    );
}

#[test]
fn explain_records_serialize_as_documented() {
    let rules = parse(
        "\
assignment-rules:
  - projects: [app1]
    targets: [build]
    configurations: [production]
    run-on:
      - agent: linux-medium
        parallelism: 5
      - agent: linux-large
",
    );
    let record = rules.explain("app1", "build", Some("production")).record();
    assert_eq!(
        serde_json::to_value(&record).unwrap(),
        serde_json::json!({
            "task": "app1:build:production",
            "rule": 0,
            "run_on": [
                {"agent": "linux-medium", "parallelism": 5},
                {"agent": "linux-large", "parallelism": null},
            ],
        })
    );
    let unmatched: ExplainRecord = rules.explain("app1", "lint", None).into();
    assert_eq!(
        serde_json::to_string(&unmatched).unwrap(),
        r#"{"task":"app1:lint","rule":null,"run_on":[]}"#
    );
}

#[test]
fn rules_know_their_priority_and_criteria() {
    let rules = parse(RULES);
    let priorities: Vec<u8> = rules
        .rules
        .iter()
        .filter_map(|r| r.priority())
        .map(|p| p.get())
        .collect();
    assert_eq!(priorities, [4, 6, 6]);
    assert_eq!(
        rules.rules[0].criteria(),
        "targets: e2e-ci*, projects: app1"
    );
    assert_eq!((rules.rules[1].line, rules.rules[1].column), (9, 5));
}

#[test]
fn a_missing_configuration_matches_no_configuration_glob() {
    let rules = parse(
        "\
assignment-rules:
  - configurations: ['!prod']
    run-on: [a]
  - configurations: ['*']
    run-on: [b]
",
    );
    assert_eq!(rules.rule_for("app1", "build", Some("dev")), Some(0));
    assert_eq!(rules.rule_for("app1", "build", Some("prod")), Some(1));
    assert_eq!(rules.rule_for("app1", "build", None), None);
}
