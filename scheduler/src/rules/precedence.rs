//! Which one rule applies to a task: Nx's precedence chart.
//!
//! | Priority | Configuration | Target | Project |
//! | :------: | :-----------: | :----: | :-----: |
//! |    1     |      ✅       |   ✅   |   ✅    |
//! |    2     |      ✅       |   ✅   |         |
//! |    3     |      ✅       |        |   ✅    |
//! |    4     |               |   ✅   |   ✅    |
//! |    5     |      ✅       |        |         |
//! |    6     |               |   ✅   |         |
//! |    7     |               |        |   ✅    |
//!
//! A rule matches a task when every property it defines matches; of the matching rules the
//! one with the best (lowest) priority wins, and of equals the one listed first.

use std::fmt;

use super::Rule;

/// A rule's place in the precedence chart, 1 (most specific) to 7.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(u8);

impl Priority {
    /// The chart's row for a rule defining the given properties; `None` when it defines none.
    pub fn of(configurations: bool, targets: bool, projects: bool) -> Option<Priority> {
        let n = match (configurations, targets, projects) {
            (true, true, true) => 1,
            (true, true, false) => 2,
            (true, false, true) => 3,
            (false, true, true) => 4,
            (true, false, false) => 5,
            (false, true, false) => 6,
            (false, false, true) => 7,
            (false, false, false) => return None,
        };
        Some(Priority(n))
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Whether every property `rule` defines matches the task.
///
/// A task without a configuration (`nx run app1:build`) does not match a rule that defines
/// `configurations`, whatever its globs, `!prod` and `*` included. The reference is silent
/// here; we read a `configurations` rule as being about tasks that have a configuration, so
/// that `!prod` means "some configuration other than prod" and a negation cannot quietly
/// catch every unconfigured task.
pub(super) fn matches(
    rule: &Rule,
    project: &str,
    target: &str,
    configuration: Option<&str>,
) -> bool {
    if rule.priority().is_none() {
        return false;
    }
    let project_ok = rule.projects.as_ref().is_none_or(|g| g.matches(project));
    let target_ok = rule.targets.as_ref().is_none_or(|g| g.matches(target));
    let configuration_ok = match (&rule.configurations, configuration) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(g), Some(c)) => g.matches(c),
    };
    project_ok && target_ok && configuration_ok
}

/// The index of the rule that applies to the task, if any.
pub(super) fn choose(
    rules: &[Rule],
    project: &str,
    target: &str,
    configuration: Option<&str>,
) -> Option<usize> {
    matching(rules, project, target, configuration)
        .min_by_key(|&(i, priority)| (priority, i))
        .map(|(i, _)| i)
}

/// Every rule that matches the task, with its priority, in file order.
pub(super) fn matching<'a>(
    rules: &'a [Rule],
    project: &'a str,
    target: &'a str,
    configuration: Option<&'a str>,
) -> impl Iterator<Item = (usize, Priority)> + 'a {
    rules.iter().enumerate().filter_map(move |(i, rule)| {
        let priority = rule.priority()?;
        matches(rule, project, target, configuration).then_some((i, priority))
    })
}
