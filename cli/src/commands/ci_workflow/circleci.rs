//! CircleCI: `.circleci/config.yml`. One parameterized `agent` job; the workflow runs it once
//! per agent (a matrix over an ordinal per group); the `nx/set-shas` orb step finds the base
//! and head commits; secrets come from a context.

use super::header::{self, Header};
use super::{COMPLETE_COMMAND, Pipeline, agent_job_names, ordinals, yaml_str};

const MAIN_JOB: &str = "main";
const CONTEXT: &str = "drover";
const NX_ORB: &str = "nrwl/nx@1.5.1";

pub(super) fn render(p: &Pipeline) -> String {
    let agent_jobs = agent_job_names(&p.fleet, "agent", '-', |c| {
        c.is_ascii_alphanumeric() || c == '_' || c == '-'
    });
    let image = if p.nx {
        "cimg/node:lts-browsers"
    } else {
        "cimg/base:stable"
    };
    let mut y = String::new();
    header::write(
        &mut y,
        p,
        &Header {
            main_job: MAIN_JOB,
            always: "in a step that always runs (`when: always`)",
            agent_jobs: &agent_jobs,
            secrets: &format!(
                "environment variables of the context `{CONTEXT}`, which every job names: Organization Settings > Contexts"
            ),
            token_note: Some(
                "The agent step exports DROVER_AGENT_TOKEN as DROVER_TOKEN, the name drover reads.",
            ),
            rerun: ". CircleCI re-runs a workflow under a new workflow id (a new Drover run) and has no attempt number: rerun the workflow from start. \"Rerun from failed\" re-runs only the failed jobs: a main job re-run without its agents waits for agents that do not come, and a re-run agent job joins the run only while it is active.",
            runner: &format!(
                "Every job needs `drover` on its PATH: use an image that has it instead of {image} (deploy/Dockerfile --target agent builds one with drover, git and Node.js)."
            ),
        },
    );
    emit!(y, "version: 2.1");
    if p.nx {
        emit!(y);
        emit!(y, "orbs:");
        emit!(y, "  nx: {NX_ORB}");
    }
    emit!(y);
    emit!(y, "jobs:");
    emit!(y, "  {MAIN_JOB}:");
    emit!(y, "    docker:");
    emit!(y, "      - image: {image}");
    emit!(y, "    environment:");
    emit!(y, "      DROVER_COORDINATOR: {}", p.coordinator);
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
    }
    emit!(y, "    steps:");
    emit!(y, "      - checkout");
    if p.nx {
        emit!(y, "      - run: npm ci");
        emit!(y, "      - nx/set-shas");
    }
    emit!(y, "      - run: {}", p.start_command());
    let work = p.work_command("$NX_BASE", "$NX_HEAD");
    if p.nx {
        emit!(
            y,
            "      - run: NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN=\"$DROVER_TOKEN\" {work}"
        );
    } else {
        emit!(y, "      - run: {work}");
    }
    emit!(
        y,
        "      # Always, so that the agents stop even when a step failed or there was nothing to run."
    );
    emit!(y, "      - run:");
    emit!(y, "          name: {COMPLETE_COMMAND}");
    emit!(y, "          command: {COMPLETE_COMMAND}");
    emit!(y, "          when: always");
    emit!(y);
    emit!(y, "  agent:");
    emit!(y, "    docker:");
    emit!(y, "      - image: {image}");
    emit!(y, "    parameters:");
    emit!(y, "      launch-template:");
    emit!(y, "        type: string");
    emit!(y, "      slots:");
    emit!(y, "        type: integer");
    emit!(y, "      ordinal:");
    emit!(y, "        type: integer");
    emit!(y, "    environment:");
    emit!(y, "      DROVER_COORDINATOR: {}", p.coordinator);
    emit!(y, "    steps:");
    emit!(y, "      - checkout");
    if p.nx {
        emit!(y, "      - run: npm ci");
    }
    emit!(y, "      - run:");
    emit!(y, "          name: drover agent");
    emit!(y, "          command: |");
    emit!(y, "            export DROVER_TOKEN=\"$DROVER_AGENT_TOKEN\"");
    emit!(y, "            unset DROVER_AGENT_TOKEN");
    emit!(
        y,
        "            drover agent --launch-template << parameters.launch-template >> --slots << parameters.slots >>"
    );
    emit!(y, "          no_output_timeout: 60m");
    emit!(y);
    emit!(y, "workflows:");
    emit!(y, "  ci:");
    emit!(y, "    jobs:");
    emit!(y, "      - {MAIN_JOB}:");
    emit!(y, "          context: {CONTEXT}");
    for (name, group) in agent_jobs.iter().zip(&p.fleet.groups) {
        emit!(y, "      - agent:");
        emit!(y, "          name: {name}-<< matrix.ordinal >>");
        emit!(y, "          context: {CONTEXT}");
        emit!(
            y,
            "          launch-template: {}",
            yaml_str(&group.template)
        );
        emit!(y, "          slots: {}", group.slots);
        emit!(y, "          matrix:");
        emit!(y, "            parameters:");
        emit!(y, "              ordinal: [{}]", ordinals(group.count));
    }
    y
}
