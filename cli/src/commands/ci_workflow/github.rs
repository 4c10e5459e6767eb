//! GitHub Actions: `.github/workflows/ci.yml`. The agents of a group are a matrix job;
//! `nrwl/nx-set-shas` finds the base and head commits; secrets come from `secrets.*`.

use super::header::{self, Header};
use super::{COMPLETE_COMMAND, NODE_MAJOR, Pipeline, agent_command, agent_job_names, ordinals};

const MAIN_JOB: &str = "main";

pub(super) fn render(p: &Pipeline) -> String {
    let agent_jobs = agent_job_names(&p.fleet, "agents", '-', |c| {
        c.is_ascii_alphanumeric() || c == '_' || c == '-'
    });
    let rerun = header::rerun_with_attempt(
        "DROVER_CI_RUN_ATTEMPT, the run attempt, which \"Re-run failed jobs\" and \"Re-run all jobs\" both raise",
    );
    let mut y = String::new();
    header::write(
        &mut y,
        p,
        &Header {
            main_job: MAIN_JOB,
            always: "in a step that always runs (`if: always()`)",
            agent_jobs: &agent_jobs,
            secrets: "repository or organization secrets: Settings > Secrets and variables > Actions",
            token_note: None,
            rerun: &rerun,
            runner: "Every job needs `drover` on its PATH: run the jobs on self-hosted runners that have it (deploy/Dockerfile --target agent builds an image with drover, git and Node.js), or add a step that installs it.",
        },
    );
    emit!(y, "name: CI");
    emit!(y);
    emit!(y, "on:");
    emit!(y, "  push:");
    emit!(y, "    branches:");
    emit!(y, "      - main");
    emit!(y, "  pull_request:");
    emit!(y);
    emit!(y, "concurrency:");
    emit!(
        y,
        "  group: ${{{{ github.workflow }}}}-${{{{ github.event.number || github.ref }}}}"
    );
    emit!(y, "  cancel-in-progress: true");
    emit!(y);
    emit!(y, "permissions:");
    if p.nx {
        emit!(
            y,
            "  actions: read # nrwl/nx-set-shas looks up the last successful run"
        );
    }
    emit!(y, "  contents: read");
    emit!(y);
    emit!(y, "env:");
    emit!(y, "  DROVER_COORDINATOR: {}", p.coordinator);
    emit!(
        y,
        "  # The rerun guard: the coordinator refuses agents of another attempt than the run's."
    );
    emit!(y, "  DROVER_CI_RUN_ATTEMPT: ${{{{ github.run_attempt }}}}");
    emit!(y);
    emit!(y, "jobs:");
    main_job(&mut y, p);
    for (name, group) in agent_jobs.iter().zip(&p.fleet.groups) {
        emit!(y);
        emit!(y, "  {name}:");
        emit!(
            y,
            "    name: Drover agent {} ${{{{ matrix.agent }}}}",
            group.template
        );
        emit!(
            y,
            "    runs-on: ubuntu-latest # the runner for launch template {}",
            group.template
        );
        emit!(y, "    strategy:");
        emit!(
            y,
            "      fail-fast: false # one agent failing must not cancel the others"
        );
        emit!(y, "      matrix:");
        emit!(y, "        agent: [{}]", ordinals(group.count));
        emit!(y, "    env:");
        emit!(
            y,
            "      DROVER_TOKEN: ${{{{ secrets.DROVER_AGENT_TOKEN }}}}"
        );
        emit!(y, "    steps:");
        emit!(y, "      - uses: actions/checkout@v4");
        if p.nx {
            setup_node(&mut y);
        }
        emit!(y, "      - run: {}", agent_command(group));
    }
    y
}

fn main_job(y: &mut String, p: &Pipeline) {
    emit!(y, "  {MAIN_JOB}:");
    emit!(y, "    name: Drover main job");
    emit!(y, "    runs-on: ubuntu-latest");
    emit!(y, "    env:");
    emit!(y, "      DROVER_TOKEN: ${{{{ secrets.DROVER_TOKEN }}}}");
    if p.nx {
        emit!(
            y,
            "      # The replay reads the agents' work back from the coordinator's remote cache."
        );
        emit!(
            y,
            "      NX_SELF_HOSTED_REMOTE_CACHE_SERVER: {}",
            p.cache_server
        );
        emit!(
            y,
            "      NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN: ${{{{ secrets.DROVER_TOKEN }}}}"
        );
    }
    emit!(y, "    steps:");
    emit!(y, "      - uses: actions/checkout@v4");
    if p.nx {
        emit!(y, "        with:");
        emit!(
            y,
            "          fetch-depth: 0 # affected compares the head with the base commit"
        );
        emit!(y, "          filter: tree:0");
        setup_node(y);
        emit!(y, "      - uses: nrwl/nx-set-shas@v4");
    }
    emit!(y, "      - run: {}", p.start_command());
    emit!(y, "      - run: {}", p.work_command("$NX_BASE", "$NX_HEAD"));
    emit!(
        y,
        "      # Always, so that the agents stop even when a step failed or there was nothing to run."
    );
    emit!(y, "      - name: {COMPLETE_COMMAND}");
    emit!(y, "        if: always()");
    emit!(y, "        run: {COMPLETE_COMMAND}");
}

/// Node and the workspace's dependencies (`--nx`).
fn setup_node(y: &mut String) {
    emit!(y, "      - uses: actions/setup-node@v4");
    emit!(y, "        with:");
    emit!(y, "          node-version: {NODE_MAJOR}");
    emit!(y, "          cache: npm");
    emit!(y, "      - run: npm ci");
}
