//! Which of the main job's `NX_*` variables go to the agents' tasks.

use std::collections::BTreeMap;

/// `NX_*` variables that stay on the main job: paths of this checkout, the daemon, the
/// agent's own identity and cache (the coordinator gives agents theirs), and what Nx sets for
/// the task it runs.
pub(super) const NOT_FORWARDED: &[&str] = &[
    "NX_CACHE_DIRECTORY",
    "NX_WORKSPACE_ROOT",
    "NX_WORKSPACE_ROOT_PATH",
    "NX_WORKSPACE_DATA_DIRECTORY",
    "NX_PROJECT_GRAPH_CACHE_DIRECTORY",
    "NX_DAEMON",
    "NX_DAEMON_SOCKET_DIR",
    "NX_SOCKET_DIR",
    "NX_SELF_HOSTED_REMOTE_CACHE_SERVER",
    "NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN",
    "NX_AGENT_NAME",
    "NX_AGENT_LAUNCH_TEMPLATE",
    "NX_CI_EXECUTION_ID",
    "NX_CI_EXECUTION_ENV",
    "NX_TERMINAL_OUTPUT_PATH",
    "NX_STREAM_OUTPUT",
    "NX_PREFIX_OUTPUT",
    "NX_TUI",
    "NX_CLI_SET",
    "NX_LOAD_DOT_ENV_FILES",
    "NX_INVOKED_BY_RUNNER",
    "NX_FORKED_TASK_EXECUTOR",
];

/// Whether an `NX_*` variable of the main job goes to the agents' tasks.
pub fn forwards_nx_var(name: &str) -> bool {
    name.starts_with("NX_") && !name.starts_with("NX_TASK_") && !NOT_FORWARDED.contains(&name)
}

/// The main job's `NX_*` variables that every task gets.
pub fn forwarded_nx_env() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| forwards_nx_var(k))
        .collect()
}
