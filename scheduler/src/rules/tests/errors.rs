//! The exact messages for bad files: `FILE:LINE:COL: rule N: message`, every problem at once.

use super::errors;

const F: &str = "rules.yaml";

fn one(text: &str) -> String {
    let all = errors(F, text);
    assert_eq!(all.len(), 1, "expected one error, got {all:#?}");
    all.into_iter().next().unwrap_or_default()
}

#[test]
fn unknown_key_suggests_the_closest_known_key() {
    let text = "\
assignment-rules:
  - targets: [lint]
    run_on:
      - agent: linux-medium
";
    assert_eq!(
        one(text),
        "rules.yaml:3:5: rule 1: unknown key `run_on`; did you mean `run-on`?"
    );
}

#[test]
fn unknown_keys_everywhere_are_refused() {
    let text = "\
assignment_rules: []
distribute-on:
  default: 1 linux-medium
assignment-rules:
  - tagrets: [lint]
    run-on:
      - agent: linux-medium
        parallel: 3
  - targets: [lint]
    color: blue
    run-on: [linux-medium]
";
    assert_eq!(
        errors(F, text),
        [
            "rules.yaml:1:1: unknown key `assignment_rules`; did you mean `assignment-rules`?",
            "rules.yaml:5:5: rule 1: unknown key `tagrets`; did you mean `targets`?",
            "rules.yaml:8:9: rule 1: unknown key `parallel`; did you mean `parallelism`?",
            "rules.yaml:10:5: rule 2: unknown key `color`; expected one of `projects`, `targets`, `configurations`, `run-on`",
        ]
    );
}

#[test]
fn parallelism_must_be_a_positive_integer() {
    let text = "\
assignment-rules:
  - targets: [build]
    run-on:
      - agent: a
        parallelism: 0
      - agent: b
        parallelism: -1
      - agent: c
        parallelism: \"x\"
      - agent: d
        parallelism: 2.5
      - agent: e
        parallelism:
      - agent: f
        parallelism: 4294967296
      - agent: g
        parallelism: '3'
";
    assert_eq!(
        errors(F, text),
        [
            "rules.yaml:5:22: rule 1: `parallelism` must be a positive integer, got `0`",
            "rules.yaml:7:22: rule 1: `parallelism` must be a positive integer, got `-1`",
            "rules.yaml:9:22: rule 1: `parallelism` must be a positive integer, got \"x\"",
            "rules.yaml:11:22: rule 1: `parallelism` must be a positive integer, got `2.5`",
            "rules.yaml:13:9: rule 1: `parallelism` must be a positive integer, got nothing",
            "rules.yaml:15:22: rule 1: `parallelism` must be at most 4294967295, got `4294967296`",
            "rules.yaml:17:22: rule 1: `parallelism` must be a positive integer, got \"3\"",
        ]
    );
}

#[test]
fn syntax_errors_have_the_parsers_position_and_no_rule() {
    assert_eq!(
        one("assignment-rules:\n  - targets: [lint\n"),
        "rules.yaml:2:14: unclosed bracket '['"
    );
    assert_eq!(
        one("assignment-rules:\n  - targets: [lint]\n    targets: [build]\n    run-on: [a]\n"),
        "rules.yaml:3:5: duplicate mapping key: targets"
    );
    assert_eq!(
        one("assignment-rules:\n\t- targets: [lint]\n"),
        "rules.yaml:2:2: tabs disallowed within this context (block indentation)"
    );
}

#[test]
fn file_level_problems() {
    assert_eq!(
        one(""),
        "rules.yaml:1:1: the file is empty; expected an `assignment-rules` list"
    );
    assert_eq!(
        one("# all rules removed\n"),
        "rules.yaml:1:1: the file is empty; expected an `assignment-rules` list"
    );
    assert_eq!(
        one("distribute-on:\n  default: 2 linux-medium\n"),
        "rules.yaml:1:1: `assignment-rules` is missing"
    );
    assert_eq!(
        one("- targets: [lint]\n  run-on: [a]\n"),
        "rules.yaml:1:1: expected a mapping with an `assignment-rules` list, found a list"
    );
    assert_eq!(
        one("assignment-rules:\n  targets: [lint]\n"),
        "rules.yaml:2:3: `assignment-rules` must be a list of rules, found a mapping"
    );
    assert_eq!(
        one("assignment-rules: lint\n"),
        "rules.yaml:1:19: `assignment-rules` must be a list of rules, found a string"
    );
    assert_eq!(
        one("assignment-rules:\n"),
        "rules.yaml:1:1: `assignment-rules` is empty; expected a list of rules (write `[]` for none)"
    );
}

#[test]
fn an_empty_rule_list_is_no_rules() {
    let rules = super::parse("assignment-rules: []\n");
    assert!(rules.rules.is_empty());
    assert_eq!(rules.rule_for("app1", "build", None), None);
}

#[test]
fn a_rule_needs_a_property_and_run_on() {
    let text = "\
assignment-rules:
  - run-on: [a]
  - targets: [lint]
  - targets: [lint]
    run-on: []
  - targets: [lint]
    run-on:
  - projects: []
    targets:
    run-on: [a]
  - lint
";
    assert_eq!(
        errors(F, text),
        [
            "rules.yaml:2:5: rule 1: at least one of `projects`, `targets`, `configurations` is required",
            "rules.yaml:3:5: rule 2: `run-on` is missing",
            "rules.yaml:5:13: rule 3: `run-on` is empty; expected at least one agent type",
            "rules.yaml:7:5: rule 4: `run-on` is empty; expected at least one agent type",
            "rules.yaml:8:15: rule 5: `projects` is empty; expected at least one glob",
            "rules.yaml:9:5: rule 5: `targets` is empty; expected at least one glob",
            "rules.yaml:11:5: rule 6: a rule must be a mapping with `run-on` and at least one of `projects`, `targets`, `configurations`; found a string",
        ]
    );
}

#[test]
fn one_property_or_run_on_under_two_spellings_is_refused() {
    let text = "\
assignment-rules:
  - targets: [lint]
    target: build
    run-on: [a]
    runs-on: [b]
";
    assert_eq!(
        errors(F, text),
        [
            "rules.yaml:3:5: rule 1: both `targets` and `target` are given; use only `targets`",
            "rules.yaml:5:5: rule 1: both `run-on` and `runs-on` are given; use only `run-on`",
        ]
    );
}

#[test]
fn bad_globs_and_run_on_entries() {
    let text = "\
assignment-rules:
  - targets:
      - lint,
      - ''
      - [nested]
    run-on:
      - parallelism: 2
      - agent: a
      - agent: a
      - agent: linux medium
      - agent: ''
      - [x]
      - agent: [y]
    configurations: {prod: true}
";
    assert_eq!(
        errors(F, text),
        [
            "rules.yaml:3:9: rule 1: `targets`: empty glob in `lint,` (a stray comma?)",
            "rules.yaml:4:9: rule 1: `targets`: empty glob",
            "rules.yaml:5:9: rule 1: `targets` entries must be globs, found a list",
            "rules.yaml:7:9: rule 1: `run-on` entry is missing `agent`",
            "rules.yaml:9:16: rule 1: agent type `a` is listed twice in `run-on`",
            "rules.yaml:10:16: rule 1: agent type `linux medium` must not contain spaces, `,` or `:`",
            "rules.yaml:11:16: rule 1: the agent type is empty",
            "rules.yaml:12:9: rule 1: `run-on` entries must be `agent:` mappings or agent type names, found a list",
            "rules.yaml:13:16: rule 1: `agent` must be an agent type name, found a list",
            "rules.yaml:14:21: rule 1: `configurations` must be a list of globs, found a mapping",
        ]
    );
}

#[test]
fn every_problem_of_every_rule_is_reported() {
    let text = "\
assignment-rules:
  - projects: [app1]
    run-on:
      - agent: a
        parallelism: 0
  - runs_on: [a]
  - targets: [lint]
    run-on:
      - agent: b
        paralelism: 2
";
    assert_eq!(
        errors(F, text),
        [
            "rules.yaml:5:22: rule 1: `parallelism` must be a positive integer, got `0`",
            "rules.yaml:6:5: rule 2: unknown key `runs_on`; did you mean `runs-on`?",
            "rules.yaml:6:5: rule 2: at least one of `projects`, `targets`, `configurations` is required",
            "rules.yaml:10:9: rule 3: unknown key `paralelism`; did you mean `parallelism`?",
        ]
    );
}

#[test]
fn distribute_on_problems() {
    let text = "\
distribute-on:
  small-changeset: 1 linux-small-js, 0 linux-medium-js
  medium-changeset: 2 linux-medium-js:4
  large-changeset: [3 linux-large-js]
assignment-rules:
  - targets: [lint]
    run-on: [linux-small-js]
";
    assert_eq!(
        errors(F, text),
        [
            "rules.yaml:2:20: changeset `small-changeset`: `0 linux-medium-js`: COUNT `0` is not a whole number from 1 to 100000",
            "rules.yaml:3:21: changeset `medium-changeset`: `2 linux-medium-js:4` has a `:`; expected `COUNT AGENT-TYPE` entries such as `5 linux-medium-js, 5 linux-large-js`",
            "rules.yaml:4:20: changeset `large-changeset` must list agents such as `5 linux-medium-js, 5 linux-large-js`, found a list",
        ]
    );
    assert_eq!(
        one("distribute-on: 5 linux-medium-js\nassignment-rules: []\n"),
        "rules.yaml:1:16: `distribute-on` must map changeset names to agents, such as `default: 5 linux-medium-js, 5 linux-large-js`; found a string"
    );
    assert_eq!(
        one("distribute-on:\nassignment-rules: []\n"),
        "rules.yaml:1:1: `distribute-on` is empty; expected changesets such as `default: 5 linux-medium-js, 5 linux-large-js`"
    );
}

#[test]
fn agent_types_missing_from_some_changesets_are_reported_at_each_changeset() {
    let text = "\
distribute-on:
  small: 1 s
  medium: 1 s, 1 m
  large: 1 m, 1 l
assignment-rules:
  - targets: [lint]
    run-on: [s]
  - targets: [build]
    run-on: [m, l]
  - targets: [test]
    run-on: [m]
";
    assert_eq!(
        errors(F, text),
        [
            "rules.yaml:2:10: changeset `small` has no `m` agent, which rules 2 and 3 run on; every changeset needs agents of each type the rules run on",
            "rules.yaml:2:10: changeset `small` has no `l` agent, which rule 2 runs on; every changeset needs agents of each type the rules run on",
            "rules.yaml:3:11: changeset `medium` has no `l` agent, which rule 2 runs on; every changeset needs agents of each type the rules run on",
            "rules.yaml:4:10: changeset `large` has no `s` agent, which rule 1 runs on; every changeset needs agents of each type the rules run on",
        ]
    );
}

#[test]
fn check_agent_types_names_every_unknown_type() {
    let rules = super::parse(
        "\
assignment-rules:
  - targets: [lint]
    run-on:
      - agent: linux-small-js
      - agent: linux-extra-large-js
  - projects: [app1]
    runs-on:
      - linux-huge
",
    );
    let e = rules
        .check_agent_types(&["linux-small-js", "linux-medium-js"])
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "assignment-rules.yaml:5:16: rule 1: agent type `linux-extra-large-js` is not among the agent types (linux-small-js, linux-medium-js)\n\
         assignment-rules.yaml:8:9: rule 2: agent type `linux-huge` is not among the agent types (linux-small-js, linux-medium-js)"
    );
    assert_eq!(e.0[1].rule, Some(2));
    assert_eq!((e.0[1].line, e.0[1].column), (8, 9));
    assert_eq!(
        rules.check_agent_types(&[]).unwrap_err().0[0].message,
        "agent type `linux-small-js` is not among the agent types (none are known)"
    );
}

#[test]
fn names_yaml_would_type_are_kept_as_written() {
    let rules = super::parse(
        "\
assignment-rules:
  - projects: [007, y, 1e3]
    configurations: [on]
    run-on: [no, '5']
",
    );
    assert_eq!(rules.rule_for("007", "build", Some("on")), Some(0));
    assert_eq!(rules.rule_for("y", "build", Some("on")), Some(0));
    assert_eq!(rules.rule_for("1e3", "build", Some("on")), Some(0));
    assert_eq!(rules.rule_for("7", "build", Some("on")), None);
    assert_eq!(rules.templates(), ["no", "5"]);
}
