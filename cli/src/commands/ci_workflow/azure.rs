//! Azure Pipelines: `azure-pipelines.yml`. The agents of a group are one job with `strategy:
//! parallel`; the build id is the CI execution and each job's attempt guards reruns; secret
//! variables reach a step only through its `env:`.

use super::header::{self, Header};
use super::{COMPLETE_COMMAND, NODE_MAJOR, Pipeline, agent_command, agent_job_names};

const MAIN_JOB: &str = "main";

pub(super) fn render(p: &Pipeline) -> String {
    // Job names take letters, digits and `_`.
    let agent_jobs = agent_job_names(&p.fleet, "agents", '_', |c| {
        c.is_ascii_alphanumeric() || c == '_'
    });
    let rerun = header::rerun_with_attempt(
        "DROVER_CI_RUN_ATTEMPT, the job's attempt: rerun the whole stage, not only its failed jobs",
    );
    let mut y = String::new();
    header::write(
        &mut y,
        p,
        &Header {
            main_job: MAIN_JOB,
            always: "in a step that always runs (`condition: always()`)",
            agent_jobs: &agent_jobs,
            secrets: "secret variables of the pipeline, Edit > Variables > Keep this value secret, or of a variable group linked to it",
            token_note: Some(
                "Secret variables reach a step only through its `env:`, as below: DROVER_AGENT_TOKEN is the agents' DROVER_TOKEN.",
            ),
            rerun: &rerun,
            runner: "Every job needs `drover` on its PATH: run the jobs on self-hosted agents that have it (deploy/Dockerfile --target agent builds an image with drover, git and Node.js), or add a step that installs it.",
        },
    );
    emit!(y, "trigger:");
    emit!(y, "  - main");
    emit!(y, "pr:");
    emit!(y, "  - main");
    emit!(y);
    emit!(y, "variables:");
    emit!(y, "  CI: 'true'");
    emit!(y, "  DROVER_COORDINATOR: {}", p.coordinator);
    emit!(
        y,
        "  # One build is one CI execution: the main job and its agents share it."
    );
    emit!(y, "  DROVER_CI_EXECUTION_ID: $(Build.BuildId)");
    emit!(
        y,
        "  # The rerun guard: the coordinator refuses agents of another attempt than the run's."
    );
    emit!(y, "  DROVER_CI_RUN_ATTEMPT: $(System.JobAttempt)");
    if p.nx {
        emit!(
            y,
            "  ${{{{ if eq(variables['Build.Reason'], 'PullRequest') }}}}:"
        );
        emit!(y, "    NX_BRANCH: $(System.PullRequest.PullRequestNumber)");
        emit!(
            y,
            "    TARGET_BRANCH: $[replace(variables['System.PullRequest.TargetBranch'],'refs/heads/','origin/')]"
        );
        emit!(y, "    BASE_SHA: $(git merge-base $(TARGET_BRANCH) HEAD)");
        emit!(
            y,
            "  ${{{{ if ne(variables['Build.Reason'], 'PullRequest') }}}}:"
        );
        emit!(y, "    NX_BRANCH: $(Build.SourceBranchName)");
        emit!(y, "    BASE_SHA: $(git rev-parse HEAD~1)");
        emit!(y, "  HEAD_SHA: $(git rev-parse HEAD)");
    }
    emit!(y);
    emit!(y, "jobs:");
    main_job(&mut y, p);
    for (name, group) in agent_jobs.iter().zip(&p.fleet.groups) {
        emit!(y);
        emit!(y, "  - job: {name}");
        emit!(y, "    displayName: Drover agent {}", group.template);
        if group.count > 1 {
            emit!(y, "    strategy:");
            emit!(y, "      parallel: {}", group.count);
        }
        emit!(y, "    pool:");
        emit!(
            y,
            "      vmImage: ubuntu-latest # the pool for launch template {}",
            group.template
        );
        emit!(y, "    steps:");
        emit!(y, "      - checkout: self");
        if p.nx {
            setup_node(&mut y);
        }
        emit!(y, "      - script: {}", agent_command(group));
        emit!(y, "        env:");
        emit!(y, "          DROVER_TOKEN: $(DROVER_AGENT_TOKEN)");
    }
    y
}

fn main_job(y: &mut String, p: &Pipeline) {
    emit!(y, "  - job: {MAIN_JOB}");
    emit!(y, "    displayName: Drover main job");
    emit!(y, "    pool:");
    emit!(y, "      vmImage: ubuntu-latest");
    emit!(y, "    steps:");
    emit!(y, "      - checkout: self");
    if p.nx {
        emit!(
            y,
            "        fetchDepth: 0 # affected compares the head with the base commit"
        );
        emit!(y, "        fetchFilter: tree:0");
        emit!(
            y,
            "      # The base of a branch build: the last successful build's commit, else HEAD~1."
        );
        emit!(y, "      - bash: |");
        for line in LAST_SUCCESSFUL_SHA.lines() {
            emit!(y, "          {line}");
        }
        emit!(y, "        displayName: Get last successful commit SHA");
        emit!(
            y,
            "        condition: ne(variables['Build.Reason'], 'PullRequest')"
        );
        emit!(y, "        env:");
        emit!(y, "          AZURE_DEVOPS_EXT_PAT: $(System.AccessToken)");
        setup_node(y);
    }
    let env = |y: &mut String, nx_cache: bool| {
        emit!(y, "        env:");
        emit!(y, "          DROVER_TOKEN: $(DROVER_TOKEN)");
        if nx_cache {
            emit!(
                y,
                "          NX_SELF_HOSTED_REMOTE_CACHE_SERVER: {}",
                p.cache_server
            );
            emit!(
                y,
                "          NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN: $(DROVER_TOKEN)"
            );
        }
    };
    emit!(y, "      - script: {}", p.start_command());
    env(y, false);
    emit!(
        y,
        "      - script: {}",
        p.work_command("$(BASE_SHA)", "$(HEAD_SHA)")
    );
    env(y, p.nx);
    emit!(y, "      - script: {COMPLETE_COMMAND}");
    emit!(
        y,
        "        displayName: {COMPLETE_COMMAND} (always, so that the agents stop)"
    );
    emit!(y, "        condition: always()");
    env(y, false);
}

/// Node and the workspace's dependencies (`--nx`).
fn setup_node(y: &mut String) {
    emit!(y, "      - task: NodeTool@0");
    emit!(y, "        inputs:");
    emit!(y, "          versionSpec: {NODE_MAJOR}.x");
    emit!(y, "      - script: npm ci");
}

/// Nx's recipe for the base commit of a branch build, from the Azure DevOps CLI.
const LAST_SUCCESSFUL_SHA: &str = r###"LAST_SHA=$(az pipelines build list --branch $(Build.SourceBranchName) --definition-ids $(System.DefinitionId) --result succeeded --top 1 --query "[0].triggerInfo.\"ci.sourceSha\"")
if [ -z "$LAST_SHA" ]
then
  echo "Last successful commit not found. Using fallback 'HEAD~1': $BASE_SHA"
else
  echo "Last successful commit SHA: $LAST_SHA"
  echo "##vso[task.setvariable variable=BASE_SHA]$LAST_SHA"
fi"###;
