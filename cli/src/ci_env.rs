//! Who this CI job is: the CI execution id that ties a main job to its agents, from Drover's
//! and Nx's variables or the CI provider's own, and the run remembered between commands.

use std::path::PathBuf;

/// Variables that name the CI execution, in order of preference, and the provider they belong to.
const EXECUTION_ID_VARS: &[(&str, &str)] = &[
    ("DROVER_CI_EXECUTION_ID", "Drover"),
    ("NX_CI_EXECUTION_ID", "Nx"),
    ("GITHUB_RUN_ID", "GitHub Actions"),
    ("CI_PIPELINE_ID", "GitLab CI"),
    ("BUILD_BUILDID", "Azure Pipelines"),
    ("CIRCLE_WORKFLOW_ID", "CircleCI"),
];

/// The CI execution id from the environment, and the variable it came from. With an
/// execution env (`DROVER_CI_EXECUTION_ENV` or `NX_CI_EXECUTION_ENV`, e.g. `linux`) it is
/// `ID/ENV`: several main jobs of one pipeline, each with its own agents.
pub fn execution_id_from_env() -> Option<(String, &'static str)> {
    let (id, var) = execution_id_from(|name| std::env::var(name).ok())?;
    Some((execution_key(&id, &execution_env_from_env()), var))
}

/// The key that ties a main job to its agents: the execution id, and its env when there is one.
pub fn execution_key(id: &str, env: &str) -> String {
    match env.trim() {
        "" => id.to_string(),
        env => format!("{id}/{env}"),
    }
}

pub fn execution_id_from(get: impl Fn(&str) -> Option<String>) -> Option<(String, &'static str)> {
    EXECUTION_ID_VARS
        .iter()
        .find_map(|(var, _)| get(var).filter(|v| !v.trim().is_empty()).map(|v| (v, *var)))
}

/// The attempt of a re-run CI pipeline (GitHub's run attempt, Azure's job attempt), else 1.
pub fn attempt_from_env() -> u32 {
    [
        "DROVER_CI_RUN_ATTEMPT",
        "GITHUB_RUN_ATTEMPT",
        "SYSTEM_JOBATTEMPT",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
    .unwrap_or(1)
}

pub fn execution_env_from_env() -> String {
    std::env::var("DROVER_CI_EXECUTION_ENV")
        .or_else(|_| std::env::var("NX_CI_EXECUTION_ENV"))
        .unwrap_or_default()
}

/// Where `start-ci-run` remembers the run for later commands of the same job:
/// `DROVER_STATE_FILE`, else a file outside the checkout, so nothing of Drover's changes the
/// workspace's task hashes (`{workspaceRoot}/**/*` inputs) or shows in `git status`:
/// `$XDG_STATE_HOME/drover` (else `~/.local/state/drover`, else the temp dir), named after the
/// checkout (the nearest directory with `.git`, else the current one).
pub fn state_file() -> PathBuf {
    if let Some(path) = std::env::var_os("DROVER_STATE_FILE").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|p| !p.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        })
        .unwrap_or_else(std::env::temp_dir)
        .join("drover");
    base.join(format!("ci-run-{}.json", checkout_key()))
}

/// The state file of older versions, inside the checkout: still read, never written.
const LEGACY_STATE_FILE: &str = ".drover/ci-run.json";

/// A short name for the checkout this command runs in.
fn checkout_key() -> String {
    use sha2::Digest as _;
    let cwd = std::env::current_dir().unwrap_or_default();
    let cwd = cwd.canonicalize().unwrap_or(cwd);
    let root = cwd
        .ancestors()
        .find(|d| d.join(".git").exists())
        .unwrap_or(&cwd);
    let digest = sha2::Sha256::digest(root.as_os_str().as_encoded_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RememberedRun {
    pub run_id: String,
    pub ci_execution_id: String,
    pub coordinator: String,
}

pub fn remember(run: &RememberedRun) -> std::io::Result<()> {
    let path = state_file();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(run).map_err(std::io::Error::other)?,
    )
}

pub fn remembered() -> Option<RememberedRun> {
    let read = |p: &std::path::Path| serde_json::from_slice(&std::fs::read(p).ok()?).ok();
    read(&state_file()).or_else(|| {
        std::env::var_os("DROVER_STATE_FILE")
            .is_none()
            .then(|| read(std::path::Path::new(LEGACY_STATE_FILE)))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_is_outside_the_checkout() {
        if std::env::var_os("DROVER_STATE_FILE").is_some() {
            return;
        }
        let file = state_file();
        let cwd = std::env::current_dir().unwrap();
        let root = cwd
            .ancestors()
            .find(|d| d.join(".git").exists())
            .unwrap_or(&cwd);
        assert!(!file.starts_with(root), "{}", file.display());
        assert_eq!(state_file(), file, "one name per checkout");
    }

    #[test]
    fn an_execution_env_partitions_the_pipeline() {
        assert_eq!(execution_key("77", ""), "77");
        assert_eq!(execution_key("77", "linux"), "77/linux");
        assert_ne!(execution_key("77", "linux"), execution_key("77", "macos"));
    }

    #[test]
    fn drover_then_nx_then_providers() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            execution_id_from(env(&[
                ("GITHUB_RUN_ID", "77"),
                ("NX_CI_EXECUTION_ID", "nx-1")
            ])),
            Some(("nx-1".into(), "NX_CI_EXECUTION_ID"))
        );
        assert_eq!(
            execution_id_from(env(&[("CI_PIPELINE_ID", "9")])),
            Some(("9".into(), "CI_PIPELINE_ID"))
        );
        assert_eq!(
            execution_id_from(env(&[("BUILD_BUILDID", "5")])),
            Some(("5".into(), "BUILD_BUILDID"))
        );
        assert_eq!(
            execution_id_from(env(&[("CIRCLE_WORKFLOW_ID", "w")])),
            Some(("w".into(), "CIRCLE_WORKFLOW_ID"))
        );
        assert_eq!(
            execution_id_from(env(&[("DROVER_CI_EXECUTION_ID", " ")])),
            None
        );
    }
}
