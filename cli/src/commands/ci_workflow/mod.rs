//! `drover ci-workflow`: a CI pipeline with a main job and agent jobs that runs on Drover, in
//! the shape of Nx's manual DTE recipes, for GitHub Actions, GitLab CI, Azure Pipelines or
//! CircleCI. One file per provider; what they share (the checked flags, the commands every
//! pipeline runs, the header comment, YAML scalars) is here and in [`header`].

use std::io::Write as _;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use drover_scheduler::fleet::{AgentGroup, FleetSpec};

use super::nx::shell_word;
use crate::error::CliError;

/// `writeln!` into a `String`, which cannot fail (defined before the provider modules, which
/// use it).
macro_rules! emit {
    ($out:expr) => {
        $out.push('\n')
    };
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

mod azure;
mod circleci;
mod github;
mod gitlab;
mod header;
#[cfg(test)]
mod tests;

#[derive(Args, Debug)]
pub struct CiWorkflowArgs {
    /// The CI provider to write the pipeline for.
    #[arg(long, value_enum)]
    pub ci: Ci,
    /// The agents to start, "COUNT TEMPLATE:SLOTS, ..." (e.g. "3 linux-medium:2, 1
    /// linux-large:4"): one agent job per agent [default: "3 linux:2"].
    #[arg(long)]
    pub agents: Option<String>,
    /// An Nx workspace: Node and `npm ci` in every job, and `nx affected -t
    /// lint,test,build,e2e-ci` from the base to the head commit on the agents.
    /// Without it the main job runs `drover exec --graph tasks.yaml`.
    #[arg(long)]
    pub nx: bool,
    /// The coordinator's gRPC address as the CI jobs reach it
    /// [default: https://drover.internal:50051].
    #[arg(long)]
    pub coordinator: Option<String>,
    /// With --nx: the coordinator's HTTP address, whose remote cache the main job replays
    /// from [default: the coordinator's scheme and host, port 50052].
    #[arg(long, requires = "nx")]
    pub cache_server: Option<String>,
    /// Write the pipeline to this file (its folder is made) instead of stdout.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Ci {
    Github,
    Gitlab,
    Azure,
    Circleci,
}

impl Ci {
    fn name(self) -> &'static str {
        match self {
            Ci::Github => "github",
            Ci::Gitlab => "gitlab",
            Ci::Azure => "azure",
            Ci::Circleci => "circleci",
        }
    }
}

const DEFAULT_AGENTS: &str = "3 linux:2";
const DEFAULT_COORDINATOR: &str = "https://drover.internal:50051";
/// `drover coordinator`'s default `--http-listen` port, where the remote cache is.
const CACHE_PORT: u16 = 50052;

/// The Nx targets the main job runs, and the one after which the agents may stop.
const NX_TARGETS: &str = "lint,test,build,e2e-ci";
const NX_STOP_AGENTS_AFTER: &str = "e2e-ci";
/// The graph the main job submits without `--nx`.
const GRAPH_FILE: &str = "tasks.yaml";
/// The Node.js major version jobs set up with `--nx` (deploy/Dockerfile's agent image has it).
const NODE_MAJOR: u32 = 22;

pub fn run(args: CiWorkflowArgs) -> Result<u8, CliError> {
    let pipeline = Pipeline::from_args(&args)?;
    let text = render(args.ci, &pipeline);
    match &args.output {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    CliError::Io(format!("cannot make the folder {}: {e}", dir.display()))
                })?;
            }
            std::fs::write(path, &text)
                .map_err(|e| CliError::Io(format!("cannot write {}: {e}", path.display())))?;
            eprintln!(
                "drover: wrote {} ({}: a main job and {} agent jobs)",
                path.display(),
                args.ci.name(),
                pipeline.fleet.agents()
            );
        }
        None => {
            // A closed stdout (`| head`) is not an error worth a message.
            let _ = std::io::stdout().write_all(text.as_bytes());
        }
    }
    Ok(0)
}

/// The pipeline for `ci`: the same pipeline gives the same bytes.
pub fn render(ci: Ci, pipeline: &Pipeline) -> String {
    match ci {
        Ci::Github => github::render(pipeline),
        Ci::Gitlab => gitlab::render(pipeline),
        Ci::Azure => azure::render(pipeline),
        Ci::Circleci => circleci::render(pipeline),
    }
}

/// What a pipeline is made of, with every flag checked.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The command that wrote it, for the header.
    pub command_line: String,
    pub fleet: FleetSpec,
    pub nx: bool,
    pub coordinator: String,
    /// The remote cache the main job replays from (used with `nx`).
    pub cache_server: String,
}

impl Pipeline {
    pub fn from_args(args: &CiWorkflowArgs) -> Result<Pipeline, CliError> {
        let spec = args.agents.as_deref().unwrap_or(DEFAULT_AGENTS);
        let fleet =
            FleetSpec::parse(spec).map_err(|e| CliError::Usage(format!("--agents: {e}")))?;
        for group in &fleet.groups {
            check_template(&group.template)?;
        }
        let coordinator = args
            .coordinator
            .clone()
            .unwrap_or_else(|| DEFAULT_COORDINATOR.into());
        check_url("--coordinator", &coordinator)?;
        let cache_server = match &args.cache_server {
            Some(url) => {
                check_url("--cache-server", url)?;
                url.clone()
            }
            None => cache_server_of(&coordinator),
        };
        Ok(Pipeline {
            command_line: command_line(args),
            fleet,
            nx: args.nx,
            coordinator,
            cache_server,
        })
    }

    /// `drover start-ci-run`, naming the fleet so assignment rules are checked against it.
    fn start_command(&self) -> String {
        let mut command = format!(
            "drover start-ci-run --distribute-on {}",
            shell_word(&self.fleet.to_string())
        );
        if self.nx {
            command.push_str(" --stop-agents-after ");
            command.push_str(NX_STOP_AGENTS_AFTER);
        }
        command
    }

    /// The main job's work, with the CI's way of naming the base and head commits (`--nx`).
    /// `--parallel` lets each agent fill its slots (Drover's per-agent parallelism is otherwise
    /// nx.json's `parallel`, or 1).
    fn work_command(&self, base: &str, head: &str) -> String {
        if self.nx {
            format!(
                "drover nx -- affected -t {NX_TARGETS} --parallel={} --base={base} --head={head}",
                self.max_slots()
            )
        } else {
            format!("drover exec --graph {GRAPH_FILE}")
        }
    }

    fn max_slots(&self) -> u32 {
        self.fleet.groups.iter().map(|g| g.slots).max().unwrap_or(1)
    }
}

const COMPLETE_COMMAND: &str = "drover complete-ci-run";

fn agent_command(group: &AgentGroup) -> String {
    format!(
        "drover agent --launch-template {} --slots {}",
        group.template, group.slots
    )
}

/// Job names for the agent groups, one each, unique: `prefix` and the template made into what
/// `allowed` lets through (others become `sep`), with a number when two groups share a name.
fn agent_job_names(
    fleet: &FleetSpec,
    prefix: &str,
    sep: char,
    allowed: impl Fn(char) -> bool,
) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for group in &fleet.groups {
        let base: String = format!("{prefix}{sep}{}", group.template)
            .chars()
            .map(|c| if allowed(c) { c } else { sep })
            .collect();
        let mut name = base.clone();
        let mut n = 1;
        while names.contains(&name) {
            n += 1;
            name = format!("{base}{sep}{n}");
        }
        names.push(name);
    }
    names
}

/// Template names go into job names, YAML and shell commands: letters, digits, `.`, `_`, `-`,
/// and not a flag.
fn check_template(template: &str) -> Result<(), CliError> {
    let starts_well = template
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = template
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if starts_well && rest_ok {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "--agents: launch template `{template}`: ci-workflow writes it into job names and commands, so it takes letters, digits, `.`, `_` and `-`, starting with a letter or digit"
        )))
    }
}

/// An http(s) URL that is safe as a plain YAML scalar and in every CI's variable syntax: no
/// spaces, quotes, `$`, braces, `#` or backslashes.
fn check_url(flag: &str, url: &str) -> Result<(), CliError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let has_host = rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'));
    let plain = url
        .chars()
        .all(|c| c.is_ascii_graphic() && !"'\"`$\\{}#".contains(c));
    if has_host && plain {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "{flag} `{url}`: expected http://HOST:PORT or https://HOST:PORT (no spaces, quotes, `$`, braces, `#` or backslashes)"
        )))
    }
}

/// The remote cache beside a coordinator: same scheme and host, the HTTP port.
fn cache_server_of(coordinator: &str) -> String {
    let (scheme, rest) = coordinator
        .split_once("://")
        .unwrap_or(("https", coordinator));
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    format!("{scheme}://{host}:{CACHE_PORT}")
}

/// `drover ci-workflow ...` as it was asked for: the flags given, in a fixed order, quoted for
/// a shell. Runs of whitespace in the SPEC become one space, so the header stays one line.
fn command_line(args: &CiWorkflowArgs) -> String {
    let mut words = vec![
        "drover".to_string(),
        "ci-workflow".into(),
        "--ci".into(),
        args.ci.name().into(),
    ];
    if let Some(spec) = &args.agents {
        words.push("--agents".into());
        words.push(shell_word(
            &spec.split_whitespace().collect::<Vec<_>>().join(" "),
        ));
    }
    if args.nx {
        words.push("--nx".into());
    }
    if let Some(url) = &args.coordinator {
        words.push("--coordinator".into());
        words.push(shell_word(url));
    }
    if let Some(url) = &args.cache_server {
        words.push("--cache-server".into());
        words.push(shell_word(url));
    }
    if let Some(path) = &args.output {
        words.push("--output".into());
        // A control character (a newline) would end the header's comment line.
        let shown = path.display().to_string().replace(char::is_control, "?");
        words.push(shell_word(&shown));
    }
    words.join(" ")
}

/// A YAML scalar that reads back as the string `text` (a checked template name or number):
/// plain when YAML would not take it for a number, a boolean or null, else single-quoted.
fn yaml_str(text: &str) -> String {
    let keyword = matches!(
        text.to_ascii_lowercase().as_str(),
        "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
    );
    let starts_with_letter = text.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if starts_with_letter && !keyword {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "''"))
    }
}

/// `1, 2, 3`: the agents of a group, for a matrix.
fn ordinals(count: u32) -> String {
    (1..=count)
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
