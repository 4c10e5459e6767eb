//! Property tests: glob semantics, and rule choice against a plain reading of the chart.

use proptest::prelude::*;

use crate::rules::{Glob, GlobEntry, GlobList, Rule, RuleSet, RunOn};

// ---- A reference matcher: the definition, recursively, exponential and obviously right. ----

fn naive(pattern: &[char], name: &[char]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some(('*', rest)) => (0..=name.len()).any(|k| naive(rest, &name[k..])),
        Some(('?', rest)) => !name.is_empty() && naive(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && naive(rest, &name[1..]),
    }
}

fn naive_glob(glob: &str, name: &str) -> bool {
    let name: Vec<char> = name.chars().collect();
    match glob.strip_prefix('!') {
        Some(p) => !naive(&p.chars().collect::<Vec<_>>(), &name),
        None => naive(&glob.chars().collect::<Vec<_>>(), &name),
    }
}

/// A property: entries OR'ed, comma-separated globs in an entry AND'ed.
fn naive_list(entries: &[String], name: &str) -> bool {
    entries
        .iter()
        .any(|e| e.split(',').all(|g| naive_glob(g.trim(), name)))
}

// ---- Strategies. ----

/// Names over a tiny alphabet, so that random patterns often match.
fn name() -> impl Strategy<Value = String> {
    "[ab]{1,4}"
}

fn pattern() -> impl Strategy<Value = String> {
    "!?[ab*?]{1,4}"
}

fn entry() -> impl Strategy<Value = String> {
    prop::collection::vec(pattern(), 1..=2).prop_map(|globs| globs.join(","))
}

fn property() -> impl Strategy<Value = Option<Vec<String>>> {
    prop::option::of(prop::collection::vec(entry(), 1..=2))
}

/// A rule's properties as text: (configurations, targets, projects), at least one defined.
type RuleSpec = (
    Option<Vec<String>>,
    Option<Vec<String>>,
    Option<Vec<String>>,
);

fn rule_spec() -> impl Strategy<Value = RuleSpec> {
    (property(), property(), property()).prop_filter("a rule defines a property", |(c, t, p)| {
        c.is_some() || t.is_some() || p.is_some()
    })
}

type Task = (String, String, Option<String>);

fn task() -> impl Strategy<Value = Task> {
    (name(), name(), prop::option::of(name()))
}

fn globs(entries: &Option<Vec<String>>) -> Option<GlobList> {
    entries
        .as_ref()
        .map(|e| GlobList::parse(e.iter().map(String::as_str)).expect("generated globs are valid"))
}

fn rule_set(specs: &[RuleSpec]) -> RuleSet {
    let rules = specs
        .iter()
        .enumerate()
        .map(|(index, (c, t, p))| Rule {
            index,
            run_on: vec![RunOn {
                agent: format!("agent-{index}"),
                parallelism: None,
            }],
            line: 0,
            column: 0,
            projects: globs(p),
            targets: globs(t),
            configurations: globs(c),
            run_on_at: Vec::new(),
        })
        .collect();
    RuleSet {
        path: "generated.yaml".to_string(),
        rules,
        changesets: Vec::new(),
    }
}

/// The chart, row by row: which of (configuration, target, project) a rule defines.
const CHART: [(bool, bool, bool); 7] = [
    (true, true, true),
    (true, true, false),
    (true, false, true),
    (false, true, true),
    (true, false, false),
    (false, true, false),
    (false, false, true),
];

fn defines(spec: &RuleSpec) -> (bool, bool, bool) {
    (spec.0.is_some(), spec.1.is_some(), spec.2.is_some())
}

fn chart_priority(spec: &RuleSpec) -> usize {
    CHART
        .iter()
        .position(|row| *row == defines(spec))
        .expect("a rule defines a property")
}

fn naive_matches(spec: &RuleSpec, (project, target, configuration): &Task) -> bool {
    let (c, t, p) = spec;
    let configuration_ok = match (c, configuration) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(c), Some(conf)) => naive_list(c, conf),
    };
    configuration_ok
        && t.as_ref().is_none_or(|t| naive_list(t, target))
        && p.as_ref().is_none_or(|p| naive_list(p, project))
}

/// The reference's procedure, literally: go down the chart; at each row take the first rule,
/// in file order, of that shape that matches.
fn naive_choice(specs: &[RuleSpec], task: &Task) -> Option<usize> {
    CHART.iter().find_map(|row| {
        specs
            .iter()
            .position(|s| defines(s) == *row && naive_matches(s, task))
    })
}

fn choice(rules: &RuleSet, (project, target, configuration): &Task) -> Option<usize> {
    rules.rule_for(project, target, configuration.as_deref())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn globs_agree_with_the_definition(p in pattern(), n in "[ab]{0,6}") {
        prop_assert_eq!(Glob::new(&p).matches(&n), naive_glob(&p, &n), "{} on {}", p, n);
    }

    #[test]
    fn a_literal_matches_exactly_itself(p in "[a-z0-9_.-]{1,8}", n in "[a-z0-9_.-]{0,8}") {
        let glob = Glob::new(&p);
        prop_assert!(glob.matches(&p));
        prop_assert_eq!(glob.matches(&n), n == p);
    }

    #[test]
    fn star_matches_everything(n in "\\PC{0,12}") {
        prop_assert!(Glob::new("*").matches(&n));
    }

    #[test]
    fn bang_matches_exactly_what_the_pattern_does_not(p in "[ab*?]{1,5}", n in "[ab]{0,6}") {
        prop_assert_eq!(Glob::new(&format!("!{p}")).matches(&n), !Glob::new(&p).matches(&n));
    }

    #[test]
    fn prefix_star_is_starts_with(a in "[ab-]{0,4}", n in "[ab-]{0,6}") {
        prop_assert_eq!(Glob::new(&format!("{a}*")).matches(&n), n.starts_with(&a));
    }

    #[test]
    fn question_marks_count_characters(len in 1usize..6, n in "\\PC{0,7}") {
        let glob = Glob::new(&"?".repeat(len));
        prop_assert_eq!(glob.matches(&n), n.chars().count() == len);
    }

    #[test]
    fn comma_entries_are_and(parts in prop::collection::vec(pattern(), 1..4), n in "[ab]{0,5}") {
        let entry = GlobEntry::parse(&parts.join(",")).unwrap();
        let each = parts.iter().all(|p| Glob::new(p).matches(&n));
        prop_assert_eq!(entry.matches(&n), each);
    }

    #[test]
    fn list_entries_are_or(entries in prop::collection::vec(entry(), 1..4), n in "[ab]{0,5}") {
        let list = GlobList::parse(entries.iter().map(String::as_str)).unwrap();
        let any = entries.iter().any(|e| GlobEntry::parse(e).unwrap().matches(&n));
        prop_assert_eq!(list.matches(&n), any);
    }

    #[test]
    fn rule_choice_follows_the_chart(
        specs in prop::collection::vec(rule_spec(), 0..8),
        tasks in prop::collection::vec(task(), 1..8),
    ) {
        let rules = rule_set(&specs);
        for t in &tasks {
            prop_assert_eq!(choice(&rules, t), naive_choice(&specs, t), "task {:?}", t);
            let explanation = rules.explain(&t.0, &t.1, t.2.as_deref());
            prop_assert_eq!(explanation.rule, choice(&rules, t));
        }
    }

    #[test]
    fn a_less_specific_rule_never_changes_a_choice(
        specs in prop::collection::vec(rule_spec(), 1..8),
        extra in rule_spec(),
        at in any::<prop::sample::Index>(),
        t in task(),
    ) {
        let rules = rule_set(&specs);
        let Some(chosen) = choice(&rules, &t) else { return Ok(()) };
        let chosen_priority = chart_priority(&specs[chosen]);
        let extra_priority = chart_priority(&extra);
        prop_assume!(extra_priority >= chosen_priority);
        // A strictly less specific rule may go anywhere; an equally specific one only after.
        let at = if extra_priority > chosen_priority {
            at.index(specs.len() + 1)
        } else {
            chosen + 1 + at.index(specs.len() - chosen)
        };
        let mut more = specs.clone();
        more.insert(at, extra);
        let moved = if at <= chosen { chosen + 1 } else { chosen };
        prop_assert_eq!(choice(&rule_set(&more), &t), Some(moved));
    }

    #[test]
    fn reordering_across_priorities_never_changes_a_choice(
        specs in prop::collection::vec(rule_spec(), 1..8),
        keys in prop::collection::vec(any::<u32>(), 8),
        tasks in prop::collection::vec(task(), 1..8),
    ) {
        // Shuffle the rules, then put each priority's rules back in their original order
        // into the places that priority got: an interleaving that keeps ties' order.
        let mut order: Vec<usize> = (0..specs.len()).collect();
        order.sort_by_key(|&i| keys[i]);
        let mut by_priority: Vec<Vec<usize>> = vec![Vec::new(); CHART.len()];
        for i in 0..specs.len() {
            by_priority[chart_priority(&specs[i])].push(i);
        }
        let mut next = vec![0; CHART.len()];
        let new_order: Vec<usize> = order
            .iter()
            .map(|&i| {
                let p = chart_priority(&specs[i]);
                next[p] += 1;
                by_priority[p][next[p] - 1]
            })
            .collect();
        let shuffled: Vec<RuleSpec> = new_order.iter().map(|&i| specs[i].clone()).collect();
        let (rules, reordered) = (rule_set(&specs), rule_set(&shuffled));
        for t in &tasks {
            let before = choice(&rules, t);
            let after = choice(&reordered, t).map(|j| new_order[j]);
            prop_assert_eq!(before, after, "task {:?}", t);
        }
    }
}
