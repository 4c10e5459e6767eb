//! Problems in a rules file, each with the file, line and column it is about.

use std::fmt;

use super::Position;

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

/// Every problem found in a rules file, in file order.
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

/// Gathers problems while a file is read, so one pass reports all of them.
pub(super) struct Collector {
    path: String,
    errors: Vec<RuleError>,
}

impl Collector {
    pub(super) fn new(path: &str) -> Collector {
        Collector {
            path: path.to_string(),
            errors: Vec::new(),
        }
    }

    /// Records a problem; `rule` is the 0-based index of the rule it is about.
    pub(super) fn push(&mut self, at: Position, rule: Option<usize>, message: impl Into<String>) {
        self.errors.push(RuleError {
            path: self.path.clone(),
            line: at.line,
            column: at.column,
            rule: rule.map(|i| i + 1),
            message: message.into(),
        });
    }

    pub(super) fn count(&self) -> usize {
        self.errors.len()
    }

    /// `Ok` when nothing was recorded; otherwise every problem, sorted by position (stable,
    /// so problems at one spot keep the order they were found in).
    pub(super) fn finish(mut self) -> Result<(), RuleErrors> {
        if self.errors.is_empty() {
            return Ok(());
        }
        self.errors.sort_by_key(|e| (e.line, e.column));
        Err(RuleErrors(self.errors))
    }
}
