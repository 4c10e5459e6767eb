//! Every YAML example of `shared/reference/nx-assignment-rules.md`, copied verbatim into
//! `scheduler/tests/rules/`, with the tasks the reference says each rule takes (and some it
//! must not).
//!
//! Three examples do not hold up as written, and the tests pin down what Drover does with
//! them:
//! - the first (Nx agents) example runs rules on `linux-medium`/`linux-large` while its
//!   `distribute-on` only starts `linux-medium-js`/`linux-large-js` agents, which the
//!   reference's own constraint forbids (its prose says `linux-medium-js`);
//! - the manual DTE intro's `lint,build` is comma-delimited, so AND'ed: it matches no target,
//!   although the prose says "any task that has a `lint` or `build` target";
//! - the parallelism example lacks the colon after `assignment-rules`, a YAML syntax error.

use super::{errors, explain_rule, parse, rule_for, run_on};
use crate::rules::RuleSet;

const INTRO_NX_AGENTS: &str = include_str!("../../../tests/rules/intro-nx-agents.yaml");
const INTRO_MANUAL_DTE: &str = include_str!("../../../tests/rules/intro-manual-dte.yaml");
const LIST_DELIMITED: &str = include_str!("../../../tests/rules/list-delimited-globs.yaml");
const COMMA_DELIMITED: &str = include_str!("../../../tests/rules/comma-delimited-globs.yaml");
const PARALLELISM: &str = include_str!("../../../tests/rules/parallelism-example.yaml");
const DEFAULT_PARALLELISM: &str = include_str!("../../../tests/rules/default-parallelism.yaml");
const PRECEDENCE: &str = include_str!("../../../tests/rules/precedence-example.yaml");
const MANUAL_DTE: &str = include_str!("../../../tests/rules/manual-dte.yaml");
const DYNAMIC_AGENTS: &str = include_str!("../../../tests/rules/dynamic-agents.yaml");
const INVALID: &str = include_str!("../../../tests/rules/invalid-example.yaml");
const VALID: &str = include_str!("../../../tests/rules/valid-example.yaml");
const DEPRECATED: &str = include_str!("../../../tests/rules/deprecated-schema.yaml");

#[test]
fn intro_nx_agents_example_as_written_names_agent_types_distribute_on_lacks() {
    assert_eq!(
        errors("distribution-config.yaml", INTRO_NX_AGENTS),
        [
            "distribution-config.yaml:12:16: rule 1: agent type `linux-medium` is not in any `distribute-on` changeset (linux-medium-js, linux-large-js)",
            "distribution-config.yaml:19:16: rule 2: agent type `linux-large` is not in any `distribute-on` changeset (linux-medium-js, linux-large-js)",
        ]
    );
}

#[test]
fn intro_nx_agents_example_with_its_agent_types_fixed() {
    let fixed = INTRO_NX_AGENTS
        .replace("agent: linux-medium\n", "agent: linux-medium-js\n")
        .replace("agent: linux-large\n", "agent: linux-large-js\n");
    let rules = parse(&fixed);
    assert_eq!(rules.changesets.len(), 1);
    assert_eq!(rules.changesets[0].name, "default");
    // "any task that has a project named app1, any targets that begin with e2e-ci, and a
    // configuration named production"
    assert_eq!(rule_for(&rules, "app1:e2e-ci:production"), Some(0));
    assert_eq!(rule_for(&rules, "app1:e2e-ci--button:production"), Some(0));
    assert_eq!(rule_for(&rules, "app1:e2e-ci"), None);
    assert_eq!(rule_for(&rules, "app1:e2e-ci:staging"), None);
    assert_eq!(rule_for(&rules, "app2:e2e-ci:production"), None);
    assert_eq!(run_on(&rules, 0), [("linux-medium-js", Some(5))]);
    // "any task that has a lint or build target", on linux-large with parallelism 10
    assert_eq!(rule_for(&rules, "app1:lint"), Some(1));
    assert_eq!(rule_for(&rules, "lib9:build:production"), Some(1));
    assert_eq!(rule_for(&rules, "app1:test"), None);
    assert_eq!(run_on(&rules, 1), [("linux-large-js", Some(10))]);
}

#[test]
fn intro_manual_dte_example() {
    let rules = parse(INTRO_MANUAL_DTE);
    assert!(rules.changesets.is_empty());
    assert_eq!(rule_for(&rules, "app1:e2e-ci"), Some(0));
    assert_eq!(rule_for(&rules, "app1:e2e-ci-chrome:production"), Some(0));
    assert_eq!(rule_for(&rules, "app2:e2e-ci"), None);
    assert_eq!(run_on(&rules, 0), [("linux-medium", Some(5))]);
    // `lint,build` needs a target that is both `lint` and `build`: none is.
    assert_eq!(rule_for(&rules, "app1:lint"), None);
    assert_eq!(rule_for(&rules, "app1:build"), None);
    assert_eq!(run_on(&rules, 1), [("linux-large", Some(10))]);
    assert!(
        rules
            .check_agent_types(&["linux-medium", "linux-large"])
            .is_ok()
    );
}

#[test]
fn list_delimited_globs_example() {
    let rules = parse(LIST_DELIMITED);
    for task in [
        "app:e2e-ci--playwright-button-test",
        "app:e2e-ci",
        "app:lint-js",
        "app:lint",
    ] {
        assert_eq!(rule_for(&rules, task), Some(0), "{task}");
    }
    for task in ["app:build", "app:eslint", "app:my-e2e-ci", "app:test"] {
        assert_eq!(rule_for(&rules, task), None, "{task}");
    }
    assert_eq!(run_on(&rules, 0), [("linux-medium", Some(2))]);
}

#[test]
fn comma_delimited_globs_example() {
    let rules = parse(COMMA_DELIMITED);
    for task in ["app:e2e-ci--playwright-server-test", "app:lint-js"] {
        assert_eq!(rule_for(&rules, task), Some(0), "{task}");
    }
    for task in [
        "app:e2e-ci--playwright-button-test",
        "app:api-server-test",
        "app:e2e-ci",
        "app:build",
    ] {
        assert_eq!(rule_for(&rules, task), None, "{task}");
    }
    assert_eq!(run_on(&rules, 0), [("linux-large", Some(5))]);
}

#[test]
fn parallelism_example_as_written_is_a_syntax_error() {
    assert_eq!(
        errors("assignment-rules.yaml", PARALLELISM),
        ["assignment-rules.yaml:2:12: mapping values are not allowed in this context"]
    );
}

#[test]
fn parallelism_example_with_the_colon_added() {
    let fixed = PARALLELISM.replacen("assignment-rules\n", "assignment-rules:\n", 1);
    let rules = parse(&fixed);
    assert_eq!(rule_for(&rules, "app1:lint"), Some(0));
    assert_eq!(rule_for(&rules, "app1:test"), Some(0));
    assert_eq!(rules.parallelism(0, "linux-medium"), Some(4));
    // `target:` (deprecated spelling) with a list under it.
    assert_eq!(rule_for(&rules, "app1:build"), Some(1));
    assert_eq!(run_on(&rules, 1), [("linux-large", None)]);
    assert_eq!(
        rules.parallelism(1, "linux-large"),
        None,
        "no parallelism in the rule: the command's --parallel applies"
    );
}

#[test]
fn default_parallelism_example() {
    let rules = parse(DEFAULT_PARALLELISM);
    for task in ["app1:e2e-ci", "lib1:e2e-ci--login:production"] {
        assert_eq!(rule_for(&rules, task), Some(0), "{task}");
    }
    for task in ["app1:build", "lib1:lint", "app1:test:production"] {
        assert_eq!(rule_for(&rules, task), Some(1), "{task}");
    }
    assert_eq!(run_on(&rules, 0), [("linux-large", None)]);
    assert_eq!(run_on(&rules, 1), [("linux-medium", Some(5))]);
}

#[test]
fn precedence_example() {
    let rules = parse(PRECEDENCE);
    // The task of the reference: {"project": "app1", "target": "build", "configuration": "production"}
    assert_eq!(rule_for(&rules, "app1:build:production"), Some(0));
    assert_eq!(rule_for(&rules, "app1:build"), Some(1));
    assert_eq!(rule_for(&rules, "app1:build:development"), Some(1));
    assert_eq!(rule_for(&rules, "app2:build:production"), None);
    assert_eq!(run_on(&rules, 0), [("linux-medium-js", Some(5))]);
    assert_eq!(run_on(&rules, 1), [("linux-large-js", Some(3))]);
    assert_eq!(
        explain_rule(&rules, "app1:build:production"),
        "rule 1 (configurations: production, targets: build, projects: app1; priority 1) — more specific than rule 2 (priority 4)"
    );
}

#[test]
fn manual_dte_example() {
    let rules = parse(MANUAL_DTE);
    assert_eq!(rule_for(&rules, "app1:build:production"), Some(0));
    assert_eq!(
        run_on(&rules, 0),
        [("linux-medium", Some(5)), ("linux-large", None)]
    );
    // `runs-on` holding `{agent}` entries.
    assert_eq!(rule_for(&rules, "lib1:lint"), Some(1));
    assert_eq!(run_on(&rules, 1), [("linux-medium", None)]);
    // configurations only (priority 5) beats targets only (priority 6).
    assert_eq!(rule_for(&rules, "lib1:lint:development"), Some(2));
    assert_eq!(rule_for(&rules, "app1:build:development"), Some(2));
    assert_eq!(rule_for(&rules, "app1:test"), None);
    assert_eq!(rules.templates(), ["linux-medium", "linux-large"]);
    assert!(
        rules
            .check_agent_types(&["linux-medium", "linux-large"])
            .is_ok()
    );
    assert_eq!(
        rules
            .check_agent_types(&["linux-medium"])
            .unwrap_err()
            .to_string(),
        "assignment-rules.yaml:11:16: rule 1: agent type `linux-large` is not among the agent types (linux-medium)\n\
         assignment-rules.yaml:22:16: rule 3: agent type `linux-large` is not among the agent types (linux-medium)"
    );
}

#[test]
fn dynamic_agents_example() {
    let rules = parse(DYNAMIC_AGENTS);
    assert_eq!(rules.changesets.len(), 1);
    assert_eq!(
        rules.changesets[0].agents.templates(),
        ["linux-medium-js", "linux-large-js"]
    );
    assert_eq!(rule_for(&rules, "app1:build:production"), Some(0));
    assert_eq!(run_on(&rules, 0), [("linux-large-js", None)]);
    assert_eq!(rule_for(&rules, "app1:lint"), Some(1));
    assert_eq!(rules.parallelism(1, "linux-medium-js"), Some(3));
    assert_eq!(rule_for(&rules, "app1:lint:development"), Some(2));
    assert_eq!(
        run_on(&rules, 2),
        [("linux-medium-js", None), ("linux-large-js", None)]
    );
}

/// The three mistakes the example's comments point at, each at its rule, plus the one its
/// `distribute-on` comment points at: `small-changeset` has no `linux-large-js` agent, which
/// rule 1 runs on.
#[test]
fn invalid_example_reports_every_documented_mistake() {
    let path = ".nx/workflows/distribution-config.yaml";
    assert_eq!(
        errors(path, INVALID),
        [
            format!(
                "{path}:3:20: changeset `small-changeset` has no `linux-large-js` agent, which rule 1 runs on; every changeset needs agents of each type the rules run on"
            ),
            format!(
                "{path}:9:5: rule 1: at least one of `projects`, `targets`, `configurations` is required"
            ),
            format!("{path}:16:5: rule 2: `run-on` is missing"),
            format!(
                "{path}:27:16: rule 3: agent type `linux-extra-large-js` is not in any `distribute-on` changeset (linux-small-js, linux-medium-js, linux-large-js)"
            ),
        ]
    );
    let e = RuleSet::parse(path, INVALID).unwrap_err();
    let rule_numbers: Vec<_> = e.0.iter().map(|e| e.rule).collect();
    assert_eq!(rule_numbers, [None, Some(1), Some(2), Some(3)]);
}

#[test]
fn valid_example() {
    let rules = parse(VALID);
    assert_eq!(rules.rules.len(), 3);
    assert_eq!(rule_for(&rules, "app1:build"), Some(0));
    assert_eq!(
        run_on(&rules, 0),
        [("linux-medium-js", None), ("linux-large-js", None)]
    );
    assert_eq!(rule_for(&rules, "lib2:lint:production"), Some(1));
    assert_eq!(rule_for(&rules, "lib2:lint"), None);
    // configuration+target (2) beats project only (7).
    assert_eq!(rule_for(&rules, "app1:lint:production"), Some(1));
    assert_eq!(rule_for(&rules, "lib1:test"), Some(2));
    assert_eq!(rule_for(&rules, "lib1:test:production"), Some(2));
    assert_eq!(rules.parallelism(1, "linux-large-js"), Some(10));
    assert_eq!(
        rules.templates(),
        ["linux-medium-js", "linux-large-js"],
        "linux-small-js is started but no rule asks for it"
    );
}

#[test]
fn deprecated_schema_example() {
    let rules = parse(DEPRECATED);
    assert_eq!(rule_for(&rules, "app1:e2e-ci:production"), Some(0));
    assert_eq!(rule_for(&rules, "app1:e2e-ci-firefox:production"), Some(0));
    assert_eq!(rule_for(&rules, "app1:e2e-ci"), None);
    assert_eq!(rule_for(&rules, "app2:e2e-ci:production"), None);
    assert_eq!(
        run_on(&rules, 0),
        [("linux-medium-js", None), ("linux-large-js", None)]
    );
    assert_eq!(rules.rules[0].priority().map(|p| p.get()), Some(1));
}
