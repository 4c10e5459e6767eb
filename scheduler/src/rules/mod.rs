//! Nx-compatible assignment rules: which launch templates may run a task, and with what
//! per-agent parallelism. See `../shared/reference/nx-assignment-rules.md`.
//!
//! A file is read in three steps: `yaml` turns the text into a tree of positioned nodes,
//! `schema` reads rules (current and deprecated Nx schema) out of that tree, collecting every
//! problem it finds, and `validate` cross-checks agent types against `distribute-on`
//! changesets or a caller's list. `precedence` picks the one rule for a task, `glob` matches
//! names, and `explain` says why.

mod distribute_on;
mod error;
mod explain;
mod glob;
mod precedence;
mod schema;
mod suggest;
mod validate;
mod yaml;

#[cfg(test)]
mod tests;

pub use distribute_on::Changeset;
pub use error::{RuleError, RuleErrors};
pub use explain::{ExplainRecord, Explanation};
pub use glob::{Glob, GlobEntry, GlobList};
pub use precedence::Priority;

/// A 1-based line and column in a rules file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub line: u32,
    pub column: u32,
}

/// One `run-on` entry: an agent type (launch template) and an optional per-agent parallelism.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RunOn {
    pub agent: String,
    pub parallelism: Option<u32>,
}

/// One parsed rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// 0-based position in the file's `assignment-rules` list.
    pub index: usize,
    pub run_on: Vec<RunOn>,
    /// Where the rule starts in its file (1-based).
    pub line: u32,
    pub column: u32,
    /// `projects` (or the deprecated `project`), when the rule defines it.
    pub projects: Option<GlobList>,
    /// `targets` (or the deprecated `target`), when the rule defines it.
    pub targets: Option<GlobList>,
    /// `configurations` (or the deprecated `configuration`), when the rule defines it.
    pub configurations: Option<GlobList>,
    /// Where each `run_on` entry's agent type is written, same order as `run_on`.
    pub run_on_at: Vec<Position>,
}

/// A parsed, valid rules file.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    pub path: String,
    pub rules: Vec<Rule>,
    /// The `distribute-on` changesets, when the file has them (Nx agents' distribution config).
    pub changesets: Vec<Changeset>,
}

impl RuleSet {
    /// Parses and validates a rules file (both Nx schemas). `path` is used in error messages.
    ///
    /// When the file has `distribute-on`, every `run-on` agent type must have agents in every
    /// changeset, as Nx requires.
    pub fn parse(path: &str, text: &str) -> Result<RuleSet, RuleErrors> {
        let mut errors = error::Collector::new(path);
        let document = schema::read(text, &mut errors);
        validate::against_changesets(&document.rules, &document.changesets, &mut errors);
        errors.finish()?;
        Ok(RuleSet {
            path: path.to_string(),
            rules: document.rules,
            changesets: document.changesets,
        })
    }

    /// The index of the one rule that applies to the task, by Nx's precedence chart; `None`
    /// when no rule matches (the task may then run on any agent type).
    pub fn rule_for(
        &self,
        project: &str,
        target: &str,
        configuration: Option<&str>,
    ) -> Option<usize> {
        precedence::choose(&self.rules, project, target, configuration)
    }

    /// Errors for every `run-on` agent type that is not among `known` agent types.
    pub fn check_agent_types(&self, known: &[&str]) -> Result<(), RuleErrors> {
        let mut errors = error::Collector::new(&self.path);
        validate::against_known(&self.rules, known, &mut errors);
        errors.finish()
    }

    /// Which rule applies to the task and why, for `drover explain` and logs.
    pub fn explain(&self, project: &str, target: &str, configuration: Option<&str>) -> Explanation {
        explain::explain(&self.rules, project, target, configuration)
    }

    /// The parallelism rule `rule` gives agents of type `template`; `None` when the rule does
    /// not set one for that type (or does not exist, or does not run on that type).
    pub fn parallelism(&self, rule: usize, template: &str) -> Option<u32> {
        self.rules
            .get(rule)?
            .run_on
            .iter()
            .find(|r| r.agent == template)?
            .parallelism
    }

    /// Whether an agent of type `template` may run a task that `rule` (from
    /// [`RuleSet::rule_for`]) applies to. No rule: any agent type may.
    pub fn allows(&self, rule: Option<usize>, template: &str) -> bool {
        let Some(rule) = rule else { return true };
        self.rules
            .get(rule)
            .is_some_and(|r| r.run_on.iter().any(|r| r.agent == template))
    }

    /// Every `run-on` agent type, in file order, each once.
    pub fn templates(&self) -> Vec<&str> {
        let mut seen = Vec::new();
        for run_on in self.rules.iter().flat_map(|r| &r.run_on) {
            if !seen.contains(&run_on.agent.as_str()) {
                seen.push(run_on.agent.as_str());
            }
        }
        seen
    }
}

impl Rule {
    /// The rule's place in Nx's precedence chart; `None` for a rule that defines none of
    /// `projects`, `targets`, `configurations` (which a parsed file never holds).
    pub fn priority(&self) -> Option<Priority> {
        Priority::of(
            self.configurations.is_some(),
            self.targets.is_some(),
            self.projects.is_some(),
        )
    }

    /// Whether every property the rule defines matches the task. A task without a
    /// configuration never matches a rule that defines `configurations`.
    pub fn matches(&self, project: &str, target: &str, configuration: Option<&str>) -> bool {
        precedence::matches(self, project, target, configuration)
    }

    /// The properties the rule defines, in the precedence chart's order, e.g.
    /// `targets: e2e-ci*, projects: app1`.
    pub fn criteria(&self) -> String {
        let defined = [
            ("configurations", &self.configurations),
            ("targets", &self.targets),
            ("projects", &self.projects),
        ];
        defined
            .iter()
            .filter_map(|(name, globs)| globs.as_ref().map(|g| format!("{name}: {g}")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
