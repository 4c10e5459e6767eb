//! GitLab CI: `.gitlab-ci.yml`. The agents of a group are one job with `parallel:`;
//! `complete-ci-run` is a job of its own that needs the main job and runs `when: always`;
//! secrets are CI/CD variables.

use super::header::{self, Header};
use super::{COMPLETE_COMMAND, NODE_MAJOR, Pipeline, agent_command, agent_job_names};

const MAIN_JOB: &str = "drover-main";
const COMPLETE_JOB: &str = "drover-complete-ci-run";
const STAGE: &str = "drover";
const COMPLETE_STAGE: &str = "drover-complete";
/// The hidden job every job of an Nx pipeline extends: the install and its cache.
const INSTALL: &str = ".drover-install";

pub(super) fn render(p: &Pipeline) -> String {
    let agent_jobs = agent_job_names(&p.fleet, "drover-agent", '-', |c| {
        c.is_ascii_alphanumeric() || c == '_' || c == '-'
    });
    let mut y = String::new();
    header::write(
        &mut y,
        p,
        &Header {
            main_job: MAIN_JOB,
            always: &format!(
                "in the job {COMPLETE_JOB}, which runs after it whatever its result (`when: always`)"
            ),
            agent_jobs: &agent_jobs,
            secrets: "CI/CD variables, masked: Settings > CI/CD > Variables; not protected, or merge request pipelines get none",
            token_note: Some(
                "A project variable wins over a job's `variables:`, so the agent jobs export DROVER_AGENT_TOKEN as DROVER_TOKEN in their script.",
            ),
            rerun: ". GitLab retries a job in place, in the same pipeline, and has no attempt number: a retried agent job joins the run only while it is active, and a main job retried alone opens a new run that no agent serves. Run a new pipeline instead.",
            runner: &format!(
                "Every job needs `drover` on its PATH: use an image that has it{} (deploy/Dockerfile --target agent builds one with drover, git and Node.js), or runners that have it.",
                if p.nx {
                    format!(" instead of node:{NODE_MAJOR}")
                } else {
                    String::new()
                }
            ),
        },
    );
    emit!(y, "stages:");
    emit!(y, "  - {STAGE}");
    emit!(y, "  - {COMPLETE_STAGE}");
    emit!(y);
    emit!(
        y,
        "# The main job and its agents run in the same pipelines: merge requests and the default branch."
    );
    emit!(y, "workflow:");
    emit!(y, "  rules:");
    emit!(
        y,
        "    - if: $CI_PIPELINE_SOURCE == \"merge_request_event\""
    );
    emit!(y, "    - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH");
    emit!(y);
    emit!(y, "default:");
    if p.nx {
        emit!(y, "  image: node:{NODE_MAJOR}");
    }
    emit!(y, "  interruptible: true");
    emit!(y);
    emit!(y, "variables:");
    emit!(y, "  DROVER_COORDINATOR: {}", p.coordinator);
    if p.nx {
        emit!(y);
        emit!(y, "{INSTALL}:");
        emit!(y, "  cache:");
        emit!(y, "    key:");
        emit!(y, "      files:");
        emit!(y, "        - package-lock.json");
        emit!(y, "    paths:");
        emit!(y, "      - .npm/");
        emit!(y, "  before_script:");
        emit!(y, "    - npm ci --cache .npm --prefer-offline");
    }
    emit!(y);
    emit!(y, "{MAIN_JOB}:");
    emit!(y, "  stage: {STAGE}");
    if p.nx {
        emit!(y, "  extends: {INSTALL}");
        emit!(y, "  variables:");
        emit!(
            y,
            "    GIT_DEPTH: \"0\" # affected compares the head with the base commit"
        );
        emit!(
            y,
            "    # The replay reads the agents' work back from the coordinator's remote cache."
        );
        emit!(
            y,
            "    NX_SELF_HOSTED_REMOTE_CACHE_SERVER: {}",
            p.cache_server
        );
        emit!(
            y,
            "    NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN: $DROVER_TOKEN"
        );
    }
    emit!(y, "  script:");
    if p.nx {
        emit!(y, "    - export NX_HEAD=$CI_COMMIT_SHA");
        emit!(
            y,
            "    - export NX_BASE=${{CI_MERGE_REQUEST_DIFF_BASE_SHA:-$CI_COMMIT_BEFORE_SHA}}"
        );
    }
    emit!(y, "    - {}", p.start_command());
    emit!(y, "    - {}", p.work_command("$NX_BASE", "$NX_HEAD"));
    emit!(y);
    emit!(
        y,
        "# Always, so that the agents stop even when the main job failed or there was nothing to run."
    );
    emit!(y, "{COMPLETE_JOB}:");
    emit!(y, "  stage: {COMPLETE_STAGE}");
    emit!(y, "  needs: [{MAIN_JOB}]");
    emit!(y, "  when: always");
    emit!(y, "  variables:");
    emit!(y, "    GIT_STRATEGY: none");
    emit!(y, "  script:");
    emit!(y, "    - {COMPLETE_COMMAND}");
    for (name, group) in agent_jobs.iter().zip(&p.fleet.groups) {
        emit!(y);
        emit!(y, "{name}:");
        emit!(
            y,
            "  # The runners for launch template {}: pick them with `tags:`.",
            group.template
        );
        emit!(y, "  stage: {STAGE}");
        if p.nx {
            emit!(y, "  extends: {INSTALL}");
        }
        if group.count > 1 {
            emit!(y, "  parallel: {}", group.count);
        }
        emit!(y, "  script:");
        emit!(
            y,
            "    - export DROVER_TOKEN=\"$DROVER_AGENT_TOKEN\" && unset DROVER_AGENT_TOKEN"
        );
        emit!(y, "    - {}", agent_command(group));
    }
    y
}
