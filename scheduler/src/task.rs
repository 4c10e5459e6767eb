//! One task of a graph, as submitted.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A task as the main job submits it. `project`, `target` and `configuration` are what
/// assignment rules match against; they come from the Nx graph or from the id
/// (`project:target[:configuration]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub id: String,
    pub command: String,
    pub depends_on: Vec<String>,
    /// `false`: non-cacheable, runs at most one at a time per agent.
    pub cache: bool,
    pub outputs: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    /// A hint for the first run; learned history wins once there is one.
    pub estimate: Option<Duration>,
    /// Per-agent parallelism where no assignment rule gives one (Nx's `--parallel`).
    pub parallelism: Option<u32>,
    pub project: String,
    pub target: String,
    pub configuration: Option<String>,
}

impl TaskSpec {
    /// A cacheable task whose project, target and configuration come from its id.
    pub fn new(id: impl Into<String>, command: impl Into<String>) -> Self {
        let mut task = TaskSpec {
            id: id.into(),
            command: command.into(),
            cache: true,
            ..TaskSpec::default()
        };
        task.fill_from_id();
        task
    }

    /// Fills `project`, `target` and `configuration` from the id
    /// (`project:target[:configuration]`) where they were not given. The one place a task's
    /// rule fields default.
    pub fn fill_from_id(&mut self) {
        // An explicit target is taken as it is and the id is not read for a configuration:
        // that is how a target with a colon (`test:lib`) is written.
        let explicit_target = !self.target.is_empty();
        let (project, target, configuration) = split_task_id(&self.id);
        if self.project.is_empty() {
            self.project = project.to_string();
        }
        if self.target.is_empty() {
            self.target = target.to_string();
        }
        if self.configuration.is_none() && !explicit_target {
            self.configuration = configuration.map(str::to_string);
        }
    }

    pub fn depends_on<I, S>(mut self, deps: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.depends_on = deps.into_iter().map(Into::into).collect();
        self
    }
}

/// Splits `project:target[:configuration]`. An id without a colon is a project-less target
/// named like the id, so rules on targets still apply to plain ids like `lint`.
pub fn split_task_id(id: &str) -> (&str, &str, Option<&str>) {
    let mut parts = id.splitn(3, ':');
    let first = parts.next().unwrap_or_default();
    match (parts.next(), parts.next()) {
        (Some(target), configuration) => (first, target, configuration.filter(|c| !c.is_empty())),
        (None, _) => ("", first, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_ids() {
        assert_eq!(
            split_task_id("app1:build:production"),
            ("app1", "build", Some("production"))
        );
        assert_eq!(split_task_id("app1:build"), ("app1", "build", None));
        assert_eq!(split_task_id("lint"), ("", "lint", None));
        assert_eq!(split_task_id("a:b:c:d"), ("a", "b", Some("c:d")));
    }

    #[test]
    fn new_fills_rule_fields() {
        let t = TaskSpec::new("app1:e2e-ci:ci", "true");
        assert_eq!((t.project.as_str(), t.target.as_str()), ("app1", "e2e-ci"));
        assert_eq!(t.configuration.as_deref(), Some("ci"));
        assert!(t.cache);
    }
}

/// A word for `sh -c`, quoted where it needs to be: a task id or path from a graph never
/// becomes shell syntax (`a;b` stays one argument).
pub fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:=,@+%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod shell_tests {
    use super::shell_word;

    #[test]
    fn a_quoted_word_reaches_the_command_as_one_argument() {
        for word in [
            "app:build",
            "a;touch x",
            "it's",
            "$(id)",
            "a b",
            "`x`",
            "",
            "-n",
            "*",
        ] {
            let quoted = shell_word(word);
            let script = format!("printf '%s|' {quoted}");
            let out = std::process::Command::new("sh")
                .args(["-c", &script])
                .output()
                .expect("sh runs");
            let printed = String::from_utf8_lossy(&out.stdout).to_string();
            let expected = if word == "-n" {
                "-n|".to_string()
            } else {
                format!("{word}|")
            };
            assert_eq!(printed, expected, "{word:?} quoted as {quoted}");
        }
    }
}
