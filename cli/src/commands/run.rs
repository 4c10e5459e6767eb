//! `drover start-ci-run` and `drover complete-ci-run`: open and close a CI run.

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Args;
use drover_proto::v1 as pb;
use drover_scheduler::RuleSet;
use pb::run_service_client::RunServiceClient;

use super::CoordinatorUrl;
use crate::ci_env::{self, RememberedRun};
use crate::client::connect;
use crate::error::CliError;
use crate::human::Human;

#[derive(Args, Debug)]
pub struct StartArgs {
    #[command(flatten)]
    pub coordinator: CoordinatorUrl,
    /// `manual` (agents are started by the pipeline), or the fleet the pipeline starts, as
    /// "COUNT TEMPLATE:SLOTS, ..." so rules can be checked against it up front.
    #[arg(long, default_value = "manual")]
    pub distribute_on: String,
    /// Nx-compatible assignment rules (e.g. .nx/workflows/assignment-rules.yaml).
    #[arg(long, env = "DROVER_ASSIGNMENT_RULES")]
    pub assignment_rules: Option<PathBuf>,
    /// When every task of these targets has ended, the run is complete and CI agents exit.
    #[arg(long, value_delimiter = ',')]
    pub stop_agents_after: Vec<String>,
    /// Environment variables of the main job to forward to every task.
    #[arg(long, value_delimiter = ',')]
    pub with_env_vars: Vec<String>,
    /// Try a failed task again this many times, on another agent where one exists.
    #[arg(long, default_value_t = 0)]
    pub retries: u32,
    /// After the first failure start nothing new; the run ends failed and CI agents exit.
    #[arg(long)]
    pub stop_agents_on_failure: bool,
    /// Timeout for tasks that give none, e.g. 30m.
    #[arg(long)]
    pub default_timeout: Option<Human>,
    /// The repository daemon agents fetch for this run (default: `git remote get-url origin`).
    #[arg(long, env = "DROVER_REPOSITORY")]
    pub repository: Option<String>,
    /// The commit daemon agents check out (default: `git rev-parse HEAD`).
    #[arg(long, env = "DROVER_COMMIT")]
    pub commit: Option<String>,
    /// Ties the main job to its agents (default: DROVER_CI_EXECUTION_ID, NX_CI_EXECUTION_ID,
    /// or the CI provider's run id).
    #[arg(long)]
    pub ci_execution_id: Option<String>,
}

pub async fn start(args: StartArgs) -> Result<u8, CliError> {
    let (rules_text, rules_path) = match &args.assignment_rules {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
            let shown = path.display().to_string();
            // Check here first so the main job fails fast, with the same messages.
            if let Err(errors) = RuleSet::parse(&shown, &text) {
                return Err(CliError::Input(errors.to_string()));
            }
            (text, shown)
        }
        None => (String::new(), String::new()),
    };
    let (ci_execution_id, source) = match args.ci_execution_id.clone() {
        Some(id) => (
            ci_env::execution_key(&id, &ci_env::execution_env_from_env()),
            "--ci-execution-id",
        ),
        None => match ci_env::execution_id_from_env() {
            Some(found) => found,
            None => {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                (format!("local-{secs}-{}", std::process::id()), "generated")
            }
        },
    };
    let mut env: HashMap<String, String> = HashMap::new();
    for name in &args.with_env_vars {
        if drover_agent::is_credential(name) {
            eprintln!(
                "drover: --with-env-vars: `{name}` holds a long-lived credential; not forwarded (tasks get one minted for their lease)"
            );
            continue;
        }
        match std::env::var(name) {
            Ok(v) => {
                env.insert(name.clone(), v);
            }
            Err(_) => eprintln!(
                "drover: --with-env-vars: `{name}` is not set on the main job; not forwarded"
            ),
        }
    }
    // Nx's own variables go along too (less those that would break agents, see `nx.rs`).
    for (name, value) in super::nx::forwarded_nx_env() {
        env.entry(name).or_insert(value);
    }
    let request = pb::StartRunRequest {
        ci_execution_id: ci_execution_id.clone(),
        execution_env: ci_env::execution_env_from_env(),
        attempt: ci_env::attempt_from_env(),
        distribute_on: args.distribute_on,
        assignment_rules: rules_text,
        assignment_rules_path: rules_path,
        stop_agents_after: args.stop_agents_after,
        env,
        retries: args.retries,
        stop_agents_on_failure: args.stop_agents_on_failure,
        default_timeout_ms: args.default_timeout.map_or(0, |d| d.0.as_millis() as u64),
        // The CI pipeline's trace, when it has one: the run's trace becomes its child.
        traceparent: std::env::var("TRACEPARENT").unwrap_or_default(),
        repository: args
            .repository
            .clone()
            .or_else(|| git_output(&["remote", "get-url", "origin"]))
            .unwrap_or_default(),
        commit: args
            .commit
            .clone()
            .or_else(|| git_output(&["rev-parse", "HEAD"]))
            .unwrap_or_default(),
        ..Default::default()
    };
    let mut client = RunServiceClient::new(connect(&args.coordinator)?);
    let response = client
        .start_run(request)
        .await
        .map_err(|s| CliError::rpc("starting the run", s))?
        .into_inner();
    let remembered = RememberedRun {
        run_id: response.run_id.clone(),
        ci_execution_id: ci_execution_id.clone(),
        coordinator: args.coordinator.url.clone(),
    };
    if let Err(e) = ci_env::remember(&remembered) {
        eprintln!(
            "drover: could not remember the run in {}: {e}",
            ci_env::state_file().display()
        );
    }
    eprintln!(
        "drover: {} run {} for CI execution {ci_execution_id} (from {source}); agents join with DROVER_CI_EXECUTION_ID={ci_execution_id}",
        if response.existing {
            "using the open"
        } else {
            "started"
        },
        response.run_id
    );
    out!("{}", response.run_id);
    Ok(0)
}

/// What a git command prints, when it works (the main job's checkout).
fn git_output(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

#[derive(Args, Debug)]
pub struct RunRefArgs {
    #[command(flatten)]
    pub coordinator: CoordinatorUrl,
    /// The run (default: the CI execution's run, or the one `start-ci-run` remembered).
    #[arg(long = "run", env = "DROVER_RUN_ID")]
    pub run_id: Option<String>,
}

impl RunRefArgs {
    /// `(run_id, ci_execution_id)`: exactly one is non-empty.
    pub fn resolve(&self) -> Result<(String, String), CliError> {
        if let Some(id) = self.run_id.clone().filter(|r| !r.is_empty()) {
            return Ok((id, String::new()));
        }
        if let Some((exec, _)) = ci_env::execution_id_from_env() {
            return Ok((String::new(), exec));
        }
        if let Some(r) = ci_env::remembered() {
            return Ok((r.run_id, String::new()));
        }
        Err(CliError::Usage(
            "no run: start one with `drover start-ci-run`, or name it with --run or DROVER_CI_EXECUTION_ID".into(),
        ))
    }
}

pub async fn complete(args: RunRefArgs) -> Result<u8, CliError> {
    let (run_id, ci_execution_id) = args.resolve()?;
    let mut client = RunServiceClient::new(connect(&args.coordinator)?);
    client
        .complete_run(pb::CompleteRunRequest {
            run_id,
            ci_execution_id,
        })
        .await
        .map_err(|s| CliError::rpc("completing the run", s))?;
    eprintln!("drover: run completed; its CI agents stop when the last task ends");
    Ok(0)
}
