//! Daemon agents with workspaces: one agent serves runs of two repositories (git
//! repositories made here), each task runs at its run's commit after its launch template's
//! init steps (the repository's `.nx/workflows`, else the coordinator's), a later run of the
//! same repository reuses the workspace (fetch, not clone) and starts clean, and a failing
//! init step fails that run with its output on the main job while the agent goes on.

use std::path::Path;
use std::process::Command;

use drover_tests::{Fleet, FleetConfig, text};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

fn commit_all(dir: &Path, message: &str) -> String {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

fn repo(dir: &Path, files: &[(&str, &str)]) -> String {
    std::fs::create_dir_all(dir).expect("repo dir");
    git(dir, &["init", "-q"]);
    for (name, body) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().expect("a parent")).expect("dirs");
        std::fs::write(p, body).expect("write");
    }
    commit_all(dir, "first")
}

/// `start-ci-run` for a repository at a commit, `exec --stream-output` of the graph, then
/// `complete-ci-run`; the exec's output and whether it succeeded.
fn run(fleet: &Fleet, exec: &str, repo: &Path, commit: &str, graph: &str) -> (bool, String) {
    fleet.dir.write(&format!("{exec}.yaml"), graph);
    let drover = |args: &[&str]| {
        fleet
            .drover(args)
            .env("DROVER_CI_EXECUTION_ID", exec)
            .output()
            .expect("run drover")
    };
    let repo = repo.display().to_string();
    let start = drover(&["start-ci-run", "--repository", &repo, "--commit", commit]);
    assert!(start.status.success(), "{}", text(&start.stderr));
    let out = drover(&[
        "exec",
        "--graph",
        &format!("{exec}.yaml"),
        "--stream-output",
    ]);
    let complete = drover(&["complete-ci-run"]);
    assert!(complete.status.success(), "{}", text(&complete.stderr));
    (out.status.success(), text(&out.stdout))
}

#[test]
fn a_daemon_agent_prepares_each_runs_workspace_and_reuses_it() {
    let dir = drover_tests::Scratch::new("ws-repos");
    let templates = dir.write(
        "coordinator-templates.yaml",
        "launch-templates:\n  linux:\n    env:\n      FROM: coordinator\n    init-steps:\n      - name: Mark\n        script: echo coordinator > prepared.txt\n",
    );
    let fleet = Fleet::with_config(
        "ws",
        FleetConfig {
            coordinator_args: vec!["--launch-templates".into(), templates.display().to_string()],
            ..FleetConfig::default()
        },
    );
    let (a, b) = (dir.join("repo-a"), dir.join("repo-b"));
    let a1 = repo(
        &a,
        &[
            ("README", "a\n"),
            (
                ".nx/workflows/agents.yaml",
                "launch-templates:\n  linux:\n    init-steps:\n      - name: Checkout\n        uses: 'nrwl/nx-cloud-workflows/v5/workflow-steps/checkout/main.yaml'\n      - name: Tools\n        script: |\n          echo repo-a > prepared.txt\n          echo TOOL=from-init >> $NX_CLOUD_ENV\n",
            ),
        ],
    );
    let b1 = repo(&b, &[("README", "b\n")]);
    let workspaces = fleet.dir.join("workspaces");
    let ws = workspaces.display().to_string();
    let workdir = fleet.dir.join("agent-workdir");
    std::fs::create_dir_all(&workdir).expect("workdir");
    let mut agent = fleet.drover(&[
        "agent",
        "--daemon",
        "--launch-template",
        "linux",
        "--slots",
        "2",
        "--name",
        "daemon-1",
        "--workdir",
        workdir.to_str().expect("utf-8"),
        "--workspaces-dir",
        &ws,
    ]);
    let log = std::fs::File::create(fleet.dir.join("daemon.log")).expect("log");
    agent.stdout(log.try_clone().expect("dup")).stderr(log);
    let mut daemon = agent.spawn().expect("spawn the daemon agent");

    let task = "tasks:\n  - { id: 'app:build', command: 'echo \"at $(git rev-parse HEAD) prepared=$(cat prepared.txt) tool=$TOOL from=$FROM in=$(pwd)\"; touch junk.txt' }\n";
    // Run 1: repository A, its own launch template.
    let (ok, out) = run(&fleet, "ws-1", &a, &a1, task);
    assert!(ok, "{out}\n{}", fleet.logs());
    assert!(
        out.contains(&format!("at {a1} prepared=repo-a tool=from-init")),
        "{out}"
    );
    assert!(out.contains("cloning"), "{out}");
    let tree_a = out
        .lines()
        .find_map(|l| l.split(" in=").nth(1))
        .expect("the task's directory")
        .to_string();
    assert!(tree_a.starts_with(&ws), "{tree_a}");

    // Run 2: repository B has no .nx/workflows: the coordinator's template serves it.
    let (ok, out) = run(&fleet, "ws-2", &b, &b1, task);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "at {b1} prepared=coordinator tool= from=coordinator"
        )),
        "{out}"
    );

    // Run 3: a new commit of A: the workspace is fetched (not cloned) and clean.
    std::fs::write(a.join("README"), "a, again\n").expect("write");
    let a2 = commit_all(&a, "second");
    let check_clean = "tasks:\n  - { id: 'app:build', command: 'test ! -e junk.txt && echo \"clean at $(git rev-parse HEAD) in=$(pwd)\"' }\n";
    let (ok, out) = run(&fleet, "ws-3", &a, &a2, check_clean);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("clean at {a2} in={tree_a}")),
        "the same workspace, clean: {out}"
    );
    assert!(
        out.contains("fetching") && !out.contains("cloning"),
        "{out}"
    );

    // Run 4: an init step that fails fails the run, with its output on the main job.
    std::fs::write(
        a.join(".nx/workflows/agents.yaml"),
        "launch-templates:\n  linux:\n    init-steps:\n      - name: Install\n        script: echo 'npm ERR! broken lockfile'; exit 3\n",
    )
    .expect("write");
    let a3 = commit_all(&a, "broken");
    let (ok, out) = run(&fleet, "ws-4", &a, &a3, task);
    assert!(!ok, "{out}");
    assert!(out.contains("npm ERR! broken lockfile"), "{out}");
    assert!(
        out.contains("init step `Install` of launch template `linux` failed"),
        "{out}"
    );

    // The agent goes on: run 5 of repository B works.
    let (ok, out) = run(&fleet, "ws-5", &b, &b1, task);
    assert!(
        ok,
        "{out}\n{}",
        std::fs::read_to_string(fleet.dir.join("daemon.log")).unwrap_or_default()
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
}

/// A stand-in for Nx's task-running API, committed in the repository (the real Nx runs in the
/// tests of `drover nx`): each task prints where and in which process it ran.
const STAND_IN_NX: &[(&str, &str)] = &[
    (
        "node_modules/nx/package.json",
        r#"{"name":"nx","version":"0.0.0-stand-in"}"#,
    ),
    (
        "node_modules/nx/src/project-graph/project-graph.js",
        "exports.createProjectGraphAsync = async () => ({ nodes: {}, dependencies: {} });\n",
    ),
    (
        "node_modules/nx/src/config/nx-json.js",
        "exports.readNxJson = () => ({});\n",
    ),
    (
        "node_modules/nx/src/utils/command-line-utils.js",
        "exports.createOverrides = (w) => ({ __overrides_unparsed__: w });\n",
    ),
    (
        "node_modules/nx/src/tasks-runner/create-task-graph.js",
        "exports.createTaskGraph = (pg, x, [project], [target]) => { const id = `${project}:${target}`;\n  return { roots: [id], tasks: { [id]: { id, target: { project, target } } }, dependencies: { [id]: [] }, continuousDependencies: { [id]: [] } }; };\n",
    ),
    (
        "node_modules/nx/src/tasks-runner/init-tasks-runner.js",
        "exports.runDiscreteTasks = async ([task]) => {\n  console.log(`nx-ran ${task.id} pid=${process.pid} in=${process.cwd()}`);\n  return [Promise.resolve([{ task, status: 'success', code: 0 }])];\n};\n",
    ),
];

#[test]
fn a_daemon_agent_keeps_nx_warm_in_each_runs_workspace() {
    if Command::new("node").arg("--version").output().is_err() {
        eprintln!("skipped: no node on PATH");
        return;
    }
    let dir = drover_tests::Scratch::new("ws-nx");
    let fleet = Fleet::start("ws-nx");
    let a = dir.join("repo");
    let a1 = repo(&a, STAND_IN_NX);
    let workspaces = fleet.dir.join("workspaces");
    let ws = workspaces.display().to_string();
    let workdir = fleet.dir.join("agent-workdir");
    std::fs::create_dir_all(&workdir).expect("workdir");
    let mut agent = fleet.drover(&[
        "agent",
        "--daemon",
        "--launch-template",
        "linux",
        "--slots",
        "1",
        "--name",
        "daemon-1",
        "--workdir",
        workdir.to_str().expect("utf-8"),
        "--workspaces-dir",
        &ws,
    ]);
    let log = std::fs::File::create(fleet.dir.join("daemon.log")).expect("log");
    agent.stdout(log.try_clone().expect("dup")).stderr(log);
    let mut daemon = agent.spawn().expect("spawn the daemon agent");
    let marked = |id: &str, target: &str| {
        format!(
            "  - {{ id: '{id}', command: 'echo as-a-command', env: {{ DROVER_NX_TASK: '{{\"project\":\"app\",\"target\":\"{target}\"}}' }}{} }}\n",
            if target == "test" {
                ", dependsOn: [app:build]"
            } else {
                ""
            }
        )
    };
    let graph = format!(
        "tasks:\n{}{}",
        marked("app:build", "build"),
        marked("app:test", "test")
    );
    let ran = |out: &str| -> Vec<(String, String)> {
        out.lines()
            .filter_map(|l| l.split("nx-ran ").nth(1))
            .map(|l| {
                let pid = l.split(" pid=").nth(1).and_then(|r| r.split(' ').next());
                let at = l.split(" in=").nth(1);
                (
                    pid.unwrap_or_default().to_string(),
                    at.unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    // Both tasks of a run in one worker, in the run's tree; not as their commands.
    let (ok, out) = run(&fleet, "ws-nx-1", &a, &a1, &graph);
    let logs = || std::fs::read_to_string(fleet.dir.join("daemon.log")).unwrap_or_default();
    assert!(ok, "{out}\n{}", logs());
    let first = ran(&out);
    assert_eq!(first.len(), 2, "{out}\n{}", logs());
    assert_eq!(first[0], first[1], "one worker, one tree: {out}");
    assert!(first[0].1.starts_with(&ws), "{out}");
    assert!(!out.contains("as-a-command"), "{out}");
    // The next run: a new worker, in the same tree (the first worker gave it back).
    let (ok, out) = run(&fleet, "ws-nx-2", &a, &a1, &graph);
    assert!(ok, "{out}\n{}", logs());
    let second = ran(&out);
    assert_eq!(second.len(), 2, "{out}");
    assert_ne!(second[0].0, first[0].0, "a worker serves one run");
    assert_eq!(second[0].1, first[0].1, "the tree is reused");
    let _ = daemon.kill();
    let _ = daemon.wait();
}
