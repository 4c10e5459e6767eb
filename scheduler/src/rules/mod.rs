//! Nx-compatible assignment rules: which launch templates may run a task, and with what
//! per-agent parallelism. See `../shared/reference/nx-assignment-rules.md`.
//!
//! The public surface below is what the rest of Drover calls; keep these signatures.

use std::fmt;

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
}

/// A parsed, valid rules file.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    pub path: String,
    pub rules: Vec<Rule>,
}

/// One problem in a rules file, shown as `FILE:LINE:COL: rule N: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    pub path: String,
    pub line: u32,
    pub column: u32,
    /// 1-based rule number for messages; `None` for file-level problems.
    pub rule: Option<usize>,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.path, self.line, self.column)?;
        if let Some(n) = self.rule {
            write!(f, "rule {n}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a rules file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleErrors(pub Vec<RuleError>);

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RuleErrors {}

impl RuleSet {
    /// Parses and validates a rules file (both Nx schemas). `path` is used in error messages.
    pub fn parse(path: &str, text: &str) -> Result<RuleSet, RuleErrors> {
        let _ = text;
        Ok(RuleSet { path: path.to_string(), rules: Vec::new() })
    }

    /// The index of the one rule that applies to the task, by Nx's precedence chart; `None`
    /// when no rule matches (the task may then run on any agent type).
    pub fn rule_for(&self, project: &str, target: &str, configuration: Option<&str>) -> Option<usize> {
        let _ = (project, target, configuration);
        None
    }

    /// Errors for every `run-on` agent type that is not among `known` agent types.
    pub fn check_agent_types(&self, known: &[&str]) -> Result<(), RuleErrors> {
        let _ = known;
        Ok(())
    }
}
