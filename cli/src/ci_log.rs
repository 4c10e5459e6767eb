//! A task's output in the main job's log as the CI provider shows it best: on GitHub Actions in
//! a `::group::` fold, a failure also as an `::error::` annotation; on GitLab in a collapsible
//! section; elsewhere under a plain header line. The header always names the task and the agent.

use std::io::Write;

/// How the CI provider of this job folds and annotates a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CiLog {
    Github,
    Gitlab,
    Plain,
}

impl CiLog {
    /// From the provider's variables: `GITHUB_ACTIONS=true`, else `GITLAB_CI`, else plain.
    pub fn from_env() -> CiLog {
        Self::from(|name| std::env::var(name).ok())
    }

    pub fn from(env: impl Fn(&str) -> Option<String>) -> CiLog {
        if env("GITHUB_ACTIONS").as_deref() == Some("true") {
            CiLog::Github
        } else if env("GITLAB_CI").is_some_and(|v| !v.is_empty()) {
            CiLog::Gitlab
        } else {
            CiLog::Plain
        }
    }
}

/// One task's output under a header: `title` names it (e.g. `core:test failed on medium-1:
/// exit code 1`), `failure` is the annotation's text for a failed task. `section` is unique in
/// the job (GitLab's section names), `now_unix` GitLab's section timestamps.
pub struct TaskBlock<'a> {
    pub task: &'a str,
    pub title: &'a str,
    pub body: &'a [u8],
    pub failure: Option<&'a str>,
    pub section: u64,
    pub now_unix: u64,
}

/// A section number not used before in this process (GitLab's section names are unique).
pub fn next_section() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Seconds since the epoch, for GitLab's section lines.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl CiLog {
    pub fn write(self, out: &mut impl Write, block: &TaskBlock<'_>) -> std::io::Result<()> {
        let body = block.body;
        let end_line = |out: &mut dyn Write| -> std::io::Result<()> {
            if !body.is_empty() && !body.ends_with(b"\n") {
                writeln!(out)?;
            }
            Ok(())
        };
        match self {
            CiLog::Github => {
                writeln!(out, "::group::{}", one_line(block.title))?;
                // What the task printed is data: workflow commands in it are not obeyed.
                let token = stop_token(block);
                writeln!(out, "::stop-commands::{token}")?;
                out.write_all(body)?;
                end_line(out)?;
                writeln!(out, "::{token}::")?;
                writeln!(out, "::endgroup::")?;
                if let Some(message) = block.failure {
                    writeln!(
                        out,
                        "::error title={}::{}",
                        escape_property(&format!("{} failed", block.task)),
                        escape_data(message)
                    )?;
                }
            }
            CiLog::Gitlab => {
                let name = format!("drover_task_{}", block.section);
                let collapsed = if block.failure.is_some() {
                    ""
                } else {
                    "[collapsed=true]"
                };
                writeln!(
                    out,
                    "\x1b[0Ksection_start:{}:{name}{collapsed}\r\x1b[0K{}",
                    block.now_unix,
                    one_line(block.title)
                )?;
                out.write_all(body)?;
                end_line(out)?;
                writeln!(out, "\x1b[0Ksection_end:{}:{name}\r\x1b[0K", block.now_unix)?;
            }
            CiLog::Plain => {
                writeln!(out, "----- {} -----", one_line(block.title))?;
                out.write_all(body)?;
                end_line(out)?;
                writeln!(out, "----- end of {} -----", one_line(block.task))?;
            }
        }
        Ok(())
    }
}

/// Text for a header: one line, no control characters.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// GitHub's escaping of a workflow command's message.
fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// GitHub's escaping of a workflow command's property value.
fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

/// A token no task output can guess in advance (it ends `::stop-commands::`).
fn stop_token(block: &TaskBlock<'_>) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(block.task.as_bytes());
    h.update(block.section.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.update(nanos.to_le_bytes());
    h.update(block.body);
    let digest = h.finalize();
    format!(
        "drover-{}",
        digest[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<'a>(body: &'a [u8], failure: Option<&'a str>) -> TaskBlock<'a> {
        TaskBlock {
            task: "core:test",
            title: "core:test failed on medium-1: exit code 1",
            body,
            failure,
            section: 3,
            now_unix: 1_700_000_000,
        }
    }

    fn render(style: CiLog, b: &TaskBlock<'_>) -> String {
        let mut out = Vec::new();
        style.write(&mut out, b).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_provider_comes_from_its_variables() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |n: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            CiLog::from(env(&[("GITHUB_ACTIONS", "true")])),
            CiLog::Github
        );
        assert_eq!(CiLog::from(env(&[("GITLAB_CI", "true")])), CiLog::Gitlab);
        assert_eq!(CiLog::from(env(&[])), CiLog::Plain);
    }

    #[test]
    fn github_folds_the_output_annotates_the_failure_and_obeys_no_command_in_it() {
        let text = render(
            CiLog::Github,
            &block(
                b"expected 42\n::add-mask::x\n100%",
                Some("exit code 1\non medium-1"),
            ),
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "::group::core:test failed on medium-1: exit code 1"
        );
        let token = lines[1].strip_prefix("::stop-commands::").unwrap();
        assert!(token.starts_with("drover-") && token.len() > 20, "{token}");
        assert_eq!(&lines[2..5], ["expected 42", "::add-mask::x", "100%"]);
        assert_eq!(lines[5], format!("::{token}::"));
        assert_eq!(lines[6], "::endgroup::");
        assert_eq!(
            lines[7],
            "::error title=core%3Atest failed::exit code 1%0Aon medium-1"
        );
        assert_eq!(lines.len(), 8);
        // A task that did not fail gets a fold and no annotation.
        let text = render(CiLog::Github, &block(b"fine\n", None));
        assert!(!text.contains("::error"), "{text}");
    }

    #[test]
    fn gitlab_sections_and_plain_headers() {
        let text = render(CiLog::Gitlab, &block(b"out\n", Some("exit code 1")));
        assert_eq!(
            text,
            "\x1b[0Ksection_start:1700000000:drover_task_3\r\x1b[0Kcore:test failed on medium-1: exit code 1\nout\n\x1b[0Ksection_end:1700000000:drover_task_3\r\x1b[0K\n"
        );
        let text = render(CiLog::Gitlab, &block(b"out\n", None));
        assert!(text.contains("drover_task_3[collapsed=true]"), "{text:?}");
        let text = render(CiLog::Plain, &block(b"out", Some("exit code 1")));
        assert_eq!(
            text,
            "----- core:test failed on medium-1: exit code 1 -----\nout\n----- end of core:test -----\n"
        );
    }
}
