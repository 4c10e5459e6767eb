//! `drover nx` end to end with the real Nx from the npm registry, the oldest (21) and the newest
//! (24) supported, installed by `.ci/run` from `tests/fixtures/nx/package-lock.json` and
//! `tests/fixtures/nx24/package-lock.json`: a generated workspace of 8 projects, a coordinator
//! serving Nx's remote cache, two agents each in its own clone with its own Nx cache, and the
//! main job's replay.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Instant;

use drover_tests::{Fleet, FleetConfig, Proc, text};

const WRITE_TOKEN: &str = "nx-test-write-token";
const READ_TOKEN: &str = "nx-test-read-token";

const RULES: &str = "assignment-rules:
  - targets:
      - e2e
    run-on:
      - agent: linux-large
        parallelism: 1
";

/// Libraries and apps, and what each depends on.
const PROJECTS: &[(&str, &str, &[&str])] = &[
    ("util", "libs/util", &[]),
    ("core", "libs/core", &["util"]),
    ("data", "libs/data", &["core"]),
    ("ui", "libs/ui", &["core"]),
    ("auth", "libs/auth", &["data"]),
    ("api-client", "libs/api-client", &["data"]),
    ("web", "apps/web", &["ui", "auth"]),
    ("admin", "apps/admin", &["ui", "api-client"]),
];

const APPS: &[&str] = &["web", "admin"];

/// What every target runs: one line in the record file (task id, agent, template), its
/// terminal output, and for `build` a file under `dist/`. A `FAIL_<target>` file in the
/// project makes that target fail.
const TASK_JS: &str = r#"const fs = require('fs');
const path = require('path');
const [target, project, projectRoot, ...overrides] = process.argv.slice(2);
const agent = process.env.DROVER_AGENT_NAME || 'main-job';
const template = process.env.DROVER_LAUNCH_TEMPLATE || '-';
const conf = process.env.NX_TASK_TARGET_CONFIGURATION;
const id = `${project}:${target}` + (conf ? `:${conf}` : '');
if (process.env.DROVER_NX_RECORD) {
  const mark = process.env.NX_DROVER_TEST_MARK || '-';
  const cache = path.basename(process.env.NX_CACHE_DIRECTORY || '-');
  const extra = overrides.join(',') || '-';
  fs.appendFileSync(process.env.DROVER_NX_RECORD, `${id} ${agent} ${template} ${mark} ${cache} ${extra}\n`);
}
console.log(`ran ${id} on ${agent}`);
if (fs.existsSync(path.join(projectRoot, `FAIL_${target}`))) {
  console.log(`${project} ${target} is broken: expected 42, got 41`);
  process.exit(1);
}
if (target === 'build' && process.env.DROVER_NX_CHECK_DEPS) {
  // Like a real build of a buildable library: the dependencies' outputs must be here.
  for (const dep of fs.readFileSync(path.join(projectRoot, 'deps.txt'), 'utf8').split(/\s+/).filter(Boolean)) {
    if (!fs.existsSync(path.join('dist', dep, 'main.js'))) {
      console.log(`${project} build: the output of ${dep} is missing`);
      process.exit(1);
    }
  }
}
if (target === 'build') {
  const dir = path.join('dist', project);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'main.js'), `built ${project} mode=${process.env.MODE || 'dev'} on ${agent}\n`);
}
"#;

const NX_JSON: &str = r#"{
  "$schema": "./node_modules/nx/schemas/nx-schema.json",
  "targetDefaults": {
    "build": {
      "dependsOn": ["^build"],
      "cache": true,
      "outputs": ["{workspaceRoot}/dist/{projectName}"],
      "executor": "nx:run-commands",
      "options": { "command": "node tools/task.js build {projectName} {projectRoot}" },
      "configurations": { "production": { "env": { "MODE": "production" } } }
    },
    "test": {
      "dependsOn": ["build"],
      "cache": true,
      "executor": "nx:run-commands",
      "options": { "command": "node tools/task.js test {projectName} {projectRoot}" }
    },
    "lint": {
      "cache": true,
      "executor": "nx:run-commands",
      "options": { "command": "node tools/task.js lint {projectName} {projectRoot}" }
    },
    "e2e": {
      "dependsOn": ["build"],
      "cache": false,
      "parallelism": false,
      "executor": "nx:run-commands",
      "options": { "command": "node tools/task.js e2e {projectName} {projectRoot}" }
    }
  }
}
"#;

/// An Nx install of `.ci/run` (from `tests/fixtures/<files>/package-lock.json`).
#[derive(Clone, Copy)]
struct NxVersion {
    /// The folder of tests/fixtures with its package.json and lockfile.
    files: &'static str,
    /// The variable that says where it is installed, and the default under ~/.cache/drover.
    env: &'static str,
    cache: &'static str,
}

/// The oldest Nx Drover supports (21), the workspace of most tests.
const NX21: NxVersion = NxVersion {
    files: "nx",
    env: "DROVER_NX_FIXTURE_DIR",
    cache: "nx-fixture",
};

/// The newest Nx Drover supports.
const NX24: NxVersion = NxVersion {
    files: "nx24",
    env: "DROVER_NX24_FIXTURE_DIR",
    cache: "nx24-fixture",
};

/// Where `.ci/run` installed the fixture's node_modules.
fn node_modules(nx: NxVersion) -> PathBuf {
    let base = std::env::var_os(nx.env)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache/drover").join(nx.cache)
        });
    let modules = base.join("node_modules");
    assert!(
        modules.join(".bin/nx").exists(),
        "Nx is not installed in {}: run `bash .ci/run` (it installs tests/fixtures/{} with npm ci), or set {}",
        base.display(),
        nx.files,
        nx.env
    );
    modules
}

fn fixture(nx: NxVersion, name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(nx.files)
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What a generated workspace is made of.
#[derive(Clone, Copy)]
struct Workspace {
    nx: NxVersion,
    nx_json: &'static str,
    /// The targets of every project (apps also get `e2e` when `nx_json` has it).
    targets: &'static [&'static str],
}

const WORKSPACE: Workspace = Workspace {
    nx: NX21,
    nx_json: NX_JSON,
    targets: &["build", "test", "lint"],
};

/// Writes the workspace into `root` (the main job's checkout or an agent's clone).
fn write_workspace(root: &Path, ws: Workspace, failing: &[(&str, &str)]) {
    let write = |rel: &str, content: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    };
    write("package.json", &fixture(ws.nx, "package.json"));
    write("package-lock.json", &fixture(ws.nx, "package-lock.json"));
    write("nx.json", ws.nx_json);
    write(".gitignore", "node_modules\ndist\n.nx\n");
    write("tools/task.js", TASK_JS);
    for (name, dir, deps) in PROJECTS {
        let mut targets: Vec<String> = ws
            .targets
            .iter()
            .map(|t| format!("\"{t}\": {{}}"))
            .collect();
        if APPS.contains(name) && ws.nx_json.contains("\"e2e\"") {
            targets.push(r#""e2e": {}"#.to_string());
        }
        let deps: Vec<String> = deps.iter().map(|d| format!("\"{d}\"")).collect();
        write(
            &format!("{dir}/project.json"),
            &format!(
                "{{\n  \"name\": \"{name}\",\n  \"root\": \"{dir}\",\n  \"implicitDependencies\": [{}],\n  \"targets\": {{ {} }}\n}}\n",
                deps.join(", "),
                targets.join(", ")
            ),
        );
        write(
            &format!("{dir}/deps.txt"),
            &format!("{}\n", deps_of(name).join(" ")),
        );
        write(
            &format!("{dir}/src/index.js"),
            &format!("module.exports = '{name}';\n"),
        );
    }
    for (project, target) in failing {
        let dir = PROJECTS.iter().find(|p| p.1.ends_with(project)).unwrap().1;
        write(&format!("{dir}/FAIL_{target}"), "broken on purpose\n");
    }
    #[cfg(unix)]
    std::os::unix::fs::symlink(node_modules(ws.nx), root.join("node_modules")).unwrap();
}

fn deps_of(name: &str) -> Vec<&'static str> {
    PROJECTS
        .iter()
        .find(|p| p.0 == name)
        .map(|p| p.2.to_vec())
        .unwrap_or_default()
}

/// Nx's variables for one checkout: no daemon, no Nx Cloud, its own local cache.
fn nx_env(fleet: &Fleet, who: &str) -> Vec<(String, String)> {
    vec![
        ("NX_DAEMON".into(), "false".into()),
        ("NX_NO_CLOUD".into(), "true".into()),
        ("NX_TUI".into(), "false".into()),
        // Plugins in worker processes cost a second per Nx start; this workspace has none.
        ("NX_ISOLATE_PLUGINS".into(), "false".into()),
        (
            "NX_CACHE_DIRECTORY".into(),
            fleet
                .dir
                .join(format!("nx-cache/{who}"))
                .display()
                .to_string(),
        ),
        (
            "DROVER_NX_RECORD".into(),
            fleet.dir.join("record.txt").display().to_string(),
        ),
    ]
}

/// A daemon agent running in its own clone of the workspace.
/// With `check_deps`, a build fails unless its dependencies' outputs are in its checkout.
fn nx_agent(
    fleet: &mut Fleet,
    ws: Workspace,
    name: &str,
    template: &str,
    failing: &[(&str, &str)],
    check_deps: bool,
) {
    let clone = fleet.dir.join(format!("agents/{name}"));
    write_workspace(&clone, ws, failing);
    let mut cmd = fleet.drover(&[
        "agent",
        "--launch-template",
        template,
        "--slots",
        "2",
        "--name",
        name,
        "--workdir",
        clone.to_str().unwrap(),
        "--daemon",
    ]);
    cmd.envs(nx_env(fleet, name));
    if name == "large-1" {
        // This one runs each task as its `nx run` command; medium-1 in warm Nx workers.
        cmd.env("DROVER_AGENT_NX_WORKER", "off");
    }
    if check_deps {
        cmd.env("DROVER_NX_CHECK_DEPS", "1");
    }
    let log = fleet.dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).unwrap();
    cmd.stdout(file.try_clone().unwrap()).stderr(file);
    let child = cmd.spawn().expect("spawn agent");
    fleet.agents.push(Proc {
        name: name.to_string(),
        child,
        log,
    });
}

fn nx_fleet(label: &str, failing: &[(&str, &str)], check_deps: bool) -> (Fleet, PathBuf) {
    let config = FleetConfig {
        coordinator_args: vec![
            "--cache-token".into(),
            WRITE_TOKEN.into(),
            "--cache-read-token".into(),
            READ_TOKEN.into(),
        ],
        ..FleetConfig::default()
    };
    let mut fleet = Fleet::with_config(label, config);
    let main = fleet.dir.join("main");
    write_workspace(&main, WORKSPACE, failing);
    fleet.dir.write("rules.yaml", RULES);
    nx_agent(
        &mut fleet,
        WORKSPACE,
        "medium-1",
        "linux-medium",
        failing,
        check_deps,
    );
    nx_agent(
        &mut fleet,
        WORKSPACE,
        "large-1",
        "linux-large",
        failing,
        check_deps,
    );
    (fleet, main)
}

fn start_run(fleet: &Fleet, execution: &str) {
    let out = fleet
        .drover(&["start-ci-run", "--assignment-rules", "rules.yaml"])
        .env("DROVER_CI_EXECUTION_ID", execution)
        .output()
        .unwrap();
    assert!(out.status.success(), "start-ci-run: {}", text(&out.stderr));
}

/// `drover nx [FLAGS] -- ARGS` on the main job, with a read-only token for the replay.
fn drover_nx_with(
    fleet: &Fleet,
    main: &Path,
    execution: &str,
    flags: &[&str],
    nx_args: &[&str],
) -> Output {
    let mut args = vec!["nx"];
    args.extend_from_slice(flags);
    args.push("--");
    args.extend_from_slice(nx_args);
    let started = Instant::now();
    let out = fleet
        .drover(&args)
        .current_dir(main)
        .envs(nx_env(fleet, "main"))
        .env("DROVER_CI_EXECUTION_ID", execution)
        .env(
            "NX_SELF_HOSTED_REMOTE_CACHE_SERVER",
            format!("http://{}", fleet.http),
        )
        .env("NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN", READ_TOKEN)
        .env("NX_DROVER_TEST_MARK", "from-the-main-job")
        .output()
        .unwrap();
    eprintln!(
        "drover nx -- {} took {:.1}s",
        nx_args.join(" "),
        started.elapsed().as_secs_f64()
    );
    out
}

/// `(task id, agent, template)` for every task execution so far.
fn records(fleet: &Fleet) -> Vec<(String, String, String)> {
    raw_records(fleet)
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
        .collect()
}

/// Every record line's words: task id, agent, template, `NX_DROVER_TEST_MARK`, the basename
/// of `NX_CACHE_DIRECTORY`, the task's overrides (`-` for none).
fn raw_records(fleet: &Fleet) -> Vec<Vec<String>> {
    std::fs::read_to_string(fleet.dir.join("record.txt"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|w| w.len() == 6)
        .collect()
}

fn all_task_ids() -> Vec<String> {
    let mut ids = Vec::new();
    for (name, _, _) in PROJECTS {
        ids.push(format!("{name}:build:production"));
        ids.push(format!("{name}:test"));
        ids.push(format!("{name}:lint"));
        if APPS.contains(name) {
            ids.push(format!("{name}:e2e"));
        }
    }
    ids.sort();
    ids
}

#[test]
fn drover_nx_runs_every_task_on_the_agents_and_brings_outputs_and_logs_back() {
    let (fleet, main) = nx_fleet("nx-e2e", &[], true);
    start_run(&fleet, "nx-1");
    let nx_args = [
        "run-many",
        "-t",
        "build",
        "test",
        "lint",
        "e2e",
        "--parallel=2",
        "--configuration=production",
    ];
    // Builds read their dependencies' outputs, which agents restore from the remote cache
    // (the default).
    let out = drover_nx_with(&fleet, &main, "nx-1", &[], &nx_args);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    let context = || format!("stdout:\n{stdout}\nstderr:\n{stderr}\n{}", fleet.logs());
    assert!(out.status.success(), "drover nx failed\n{}", context());

    // Every task ran exactly once, on an agent, never on the main job; e2e where the rule says.
    let ran = records(&fleet);
    let mut ids: Vec<String> = ran.iter().map(|r| r.0.clone()).collect();
    ids.sort();
    assert_eq!(ids, all_task_ids(), "{ran:?}\n{}", context());
    for (task, agent, template) in &ran {
        assert!(
            agent == "medium-1" || agent == "large-1",
            "{task} ran on {agent}\n{}",
            context()
        );
        if task.ends_with(":e2e") {
            assert_eq!(template, "linux-large", "{task} ran on {template}");
        }
    }
    // The main job's NX_* variables reach the tasks; its Nx cache directory does not.
    for r in raw_records(&fleet) {
        assert_eq!(r[3], "from-the-main-job", "{r:?}");
        assert_eq!(r[4], r[1], "each agent keeps its own Nx cache: {r:?}");
    }
    // medium-1 ran its tasks in warm Nx workers, at most one per slot; large-1 (workers
    // off) as commands.
    let medium = std::fs::read_to_string(fleet.dir.join("medium-1.log")).unwrap();
    let large = std::fs::read_to_string(fleet.dir.join("large-1.log")).unwrap();
    let on_medium = ran.iter().filter(|r| r.1 == "medium-1").count();
    assert_eq!(
        medium.matches("the task runs in an Nx worker").count(),
        on_medium,
        "{medium}"
    );
    let workers = medium.matches("started an Nx worker").count();
    assert!((1..=2).contains(&workers), "{workers} workers\n{medium}");
    assert!(!large.contains("Nx worker"), "{large}");
    let by_template: HashMap<&str, usize> = ran.iter().fold(HashMap::new(), |mut m, r| {
        *m.entry(r.2.as_str()).or_default() += 1;
        m
    });
    assert_eq!(by_template.len(), 2, "both agents work: {by_template:?}");

    // Every build output is on the main job, built in production mode by an agent.
    for (name, _, _) in PROJECTS {
        let file = main.join(format!("dist/{name}/main.js"));
        let content = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", file.display(), context()));
        assert!(
            content.starts_with(&format!("built {name} mode=production on ")),
            "{content}"
        );
        assert!(!content.contains("main-job"), "{content}");
    }
    // The terminal output of every task is in the main job's log: replayed from the cache, or
    // (e2e, not cacheable) as the agent printed it.
    for (task, agent, _) in &ran {
        assert!(
            stdout.contains(&format!("ran {task} on {agent}")),
            "no output of {task} on the main job\n{}",
            context()
        );
    }
    assert!(stdout.contains("not cacheable"), "{}", context());
    assert!(
        stderr.contains("replaying on the main job from the remote cache"),
        "{}",
        context()
    );

    // The next pipeline: every cacheable task is a cache hit; only the e2e suites run again.
    let before = records(&fleet).len();
    start_run(&fleet, "nx-2");
    // Nx straight from node_modules this time (`--nx`), here and on the agents.
    let out = drover_nx_with(
        &fleet,
        &main,
        "nx-2",
        &["--nx", "node_modules/.bin/nx"],
        &nx_args,
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(
        out.status.success(),
        "second drover nx failed\nstdout:\n{stdout}\nstderr:\n{stderr}\n{}",
        fleet.logs()
    );
    let again: Vec<String> = records(&fleet)[before..]
        .iter()
        .map(|r| r.0.clone())
        .collect();
    let mut again_sorted = again.clone();
    again_sorted.sort();
    assert_eq!(
        again_sorted,
        ["admin:e2e", "web:e2e"],
        "the second run executed {again:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains(
            "Nx read the output from the cache instead of running the command for 8 out of 8 tasks"
        ) && stdout.contains("for 16 out of 16 tasks"),
        "the replay was not all cache hits\nstdout:\n{stdout}"
    );
}

#[test]
fn a_failing_nx_task_fails_drover_nx_and_its_output_reaches_the_main_job() {
    let (fleet, main) = nx_fleet("nx-fail", &[("core", "test")], false);
    start_run(&fleet, "nx-fail-1");
    let out = drover_nx_with(
        &fleet,
        &main,
        "nx-fail-1",
        &["--nx", "node_modules/.bin/nx"],
        &[
            "run-many",
            "-t",
            "test",
            "-p",
            "util,core",
            "--",
            "--coverage",
        ],
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    let context = || format!("stdout:\n{stdout}\nstderr:\n{stderr}\n{}", fleet.logs());
    assert_eq!(out.status.code(), Some(1), "{}", context());
    assert!(
        stdout.contains("core test is broken: expected 42, got 41"),
        "{}",
        context()
    );
    assert!(stdout.contains("FAILED core:test"), "{}", context());
    // The failed task is not run again on the main job; the others come back from the cache.
    let ran = records(&fleet);
    assert!(
        ran.iter().all(|r| r.1 != "main-job"),
        "{ran:?}\n{}",
        context()
    );
    assert!(main.join("dist/core/main.js").exists(), "{}", context());
    assert!(stdout.contains("ran util:test on"), "{}", context());
    // The overrides after the Nx arguments reached the tasks the command names, only those.
    for r in raw_records(&fleet) {
        let expected = if r[0].ends_with(":test") {
            "--coverage"
        } else {
            "-"
        };
        assert_eq!(r[5], expected, "{r:?}");
    }
}

#[test]
fn drover_nx_stops_before_running_anything_when_the_replay_could_not_read_the_cache() {
    let fleet = Fleet::with_config(
        "nx-no-cache",
        FleetConfig {
            coordinator_args: vec!["--cache-token".into(), WRITE_TOKEN.into()],
            ..FleetConfig::default()
        },
    );
    let nx = |server: Option<String>, token: &str| {
        let mut cmd = fleet.drover(&["nx", "--", "run-many", "-t", "build"]);
        cmd.env_remove("NX_SELF_HOSTED_REMOTE_CACHE_SERVER")
            .env_remove("DROVER_CACHE_URL")
            .env("DROVER_CI_EXECUTION_ID", "nx-no-cache")
            .env("NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN", token);
        if let Some(s) = server {
            cmd.env("NX_SELF_HOSTED_REMOTE_CACHE_SERVER", s);
        }
        cmd.output().unwrap()
    };
    // Without a cache URL the main job asks the coordinator, which needs the run to exist.
    let out = nx(None, WRITE_TOKEN);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("asking the coordinator for its remote cache")
            && text(&out.stderr).contains("start-ci-run"),
        "{}",
        text(&out.stderr)
    );
    let out = nx(Some(format!("http://{}", fleet.http)), "not-the-token");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("refused the token (401"),
        "{}",
        text(&out.stderr)
    );
}

/// Nx 24 (object edges) on a zero-config fleet: a coordinator with its embedded defaults (no
/// tokens, no cache flags), a main job that sets nothing but the coordinator (no
/// `NX_SELF_HOSTED_*`, no execution id: `start-ci-run` remembers the run outside the checkout),
/// targets with a colon, builds that read their dependencies' outputs over two agents, and
/// inputs of `{workspaceRoot}/**/*` so anything Drover left in the checkout would change every
/// hash and the replay would miss.
const NX24_JSON: &str = r#"{
  "$schema": "./node_modules/nx/schemas/nx-schema.json",
  "targetDefaults": {
    "build": {
      "dependsOn": ["^build"],
      "cache": true,
      "inputs": ["{workspaceRoot}/**/*"],
      "outputs": ["{workspaceRoot}/dist/{projectName}"],
      "executor": "nx:run-commands",
      "options": { "command": "node tools/task.js build {projectName} {projectRoot}" }
    },
    "test:lib": {
      "dependsOn": ["build"],
      "cache": true,
      "inputs": ["{workspaceRoot}/**/*"],
      "executor": "nx:run-commands",
      "options": { "command": "node tools/task.js test:lib {projectName} {projectRoot}" }
    }
  }
}
"#;

#[test]
fn drover_nx_on_nx_24_needs_only_the_coordinator_and_leaves_nothing_in_the_checkout() {
    let ws = Workspace {
        nx: NX24,
        nx_json: NX24_JSON,
        targets: &["build", "test:lib"],
    };
    let mut fleet = Fleet::with_config("nx24", FleetConfig::default());
    let main = fleet.dir.join("main");
    write_workspace(&main, ws, &[]);
    nx_agent(&mut fleet, ws, "medium-1", "linux-medium", &[], true);
    nx_agent(&mut fleet, ws, "medium-2", "linux-medium", &[], true);
    let state = fleet.dir.join("state");
    let main_job = |args: &[&str]| {
        let mut cmd = fleet.drover(args);
        cmd.current_dir(&main)
            .envs(nx_env(&fleet, "main"))
            .env_remove("DROVER_STATE_FILE")
            .env("XDG_STATE_HOME", &state)
            .env_remove("NX_SELF_HOSTED_REMOTE_CACHE_SERVER")
            .env_remove("NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN")
            .env_remove("DROVER_CACHE_URL")
            .env_remove("DROVER_CACHE_TOKEN")
            .env_remove("DROVER_CACHE_READ_TOKEN")
            .env("NX_DROVER_TEST_MARK", "from-the-main-job");
        cmd.output().unwrap()
    };
    let out = main_job(&["start-ci-run"]);
    assert!(out.status.success(), "start-ci-run: {}", text(&out.stderr));
    let started = Instant::now();
    let out = main_job(&["nx", "--", "run-many", "-t", "test:lib", "--", "--coverage"]);
    eprintln!(
        "drover nx on Nx 24 took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    let context = || format!("stdout:\n{stdout}\nstderr:\n{stderr}\n{}", fleet.logs());
    assert!(out.status.success(), "drover nx failed\n{}", context());

    // Every task ran once, on an agent; the colon stays in the target.
    let ran = records(&fleet);
    let mut ids: Vec<String> = ran.iter().map(|r| r.0.clone()).collect();
    ids.sort();
    let mut expected: Vec<String> = PROJECTS
        .iter()
        .flat_map(|(name, _, _)| [format!("{name}:build"), format!("{name}:test:lib")])
        .collect();
    expected.sort();
    assert_eq!(ids, expected, "{ran:?}\n{}", context());
    assert!(ran.iter().all(|r| r.1.starts_with("medium-")), "{ran:?}");
    // Only the named target got the overrides, not the builds it needs (and the replay, with
    // them, hits). Each task ran once: the builds that Nx restored in a task's own run (one Nx
    // start-up) were cache hits.
    for r in raw_records(&fleet) {
        let expected = if r[0].ends_with(":test:lib") {
            "--coverage"
        } else {
            "-"
        };
        assert_eq!(r[5], expected, "{r:?}");
    }
    let agents: std::collections::BTreeSet<&str> = ran.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(agents.len(), 2, "both agents work: {ran:?}");
    // Builds found their dependencies' outputs (restored by default), and every output is here.
    for (name, _, _) in PROJECTS {
        let file = main.join(format!("dist/{name}/main.js"));
        assert!(file.exists(), "{}\n{}", file.display(), context());
    }
    // The replay was all cache hits although every input is the whole workspace.
    assert!(
        stdout.contains("for 16 out of 16 tasks"),
        "the replay was not all cache hits\n{}",
        context()
    );
    // Drover's state is outside the checkout.
    assert!(!main.join(".drover").exists(), "{}", context());
    let remembered: Vec<_> = std::fs::read_dir(state.join("drover"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(remembered.len(), 1, "{remembered:?}");
}
