//! Unit tests of `drover ci-workflow`: every provider's pipeline is parsed back as YAML and
//! read the way that CI would read it (which jobs run, which commands, with which secrets),
//! and compared byte for byte with the golden files in `cli/tests/ci-workflow/`
//! (`UPDATE_GOLDEN=1` rewrites them).

use std::path::PathBuf;

use clap::Parser;
use drover_scheduler::state::RERUN_MESSAGE;
use serde_json::Value;

use super::*;

const SPEC: &str = "3 linux-medium:2, 1 linux-large:4";
const ALL: [Ci; 4] = [Ci::Github, Ci::Gitlab, Ci::Azure, Ci::Circleci];

fn args(ci: Ci, agents: Option<&str>, nx: bool) -> CiWorkflowArgs {
    CiWorkflowArgs {
        ci,
        agents: agents.map(str::to_string),
        nx,
        coordinator: None,
        cache_server: None,
        output: None,
    }
}

fn generate(ci: Ci, agents: Option<&str>, nx: bool) -> String {
    let pipeline = Pipeline::from_args(&args(ci, agents, nx)).expect("valid flags");
    render(ci, &pipeline)
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("not valid YAML: {e}\n{text}"))
}

/// What a pipeline does, as its CI would run it.
#[derive(Debug)]
struct Read {
    /// The main job's commands in order, each with whether it runs whatever happened before.
    main: Vec<(String, bool)>,
    /// The secret the main job's DROVER_TOKEN comes from.
    main_token: String,
    /// The coordinator the main job talks to.
    main_coordinator: String,
    /// One entry per agent that runs.
    agents: Vec<Agent>,
}

#[derive(Debug, Clone)]
struct Agent {
    /// The `drover agent ...` command, parameters filled in.
    command: String,
    /// The secret its DROVER_TOKEN comes from.
    token: String,
    coordinator: String,
}

impl Agent {
    fn template_and_slots(&self) -> (String, u32) {
        let words: Vec<&str> = self.command.split_whitespace().collect();
        assert_eq!(&words[..2], ["drover", "agent"], "{}", self.command);
        let after = |flag: &str| {
            let i = words.iter().position(|w| *w == flag).unwrap_or_else(|| {
                panic!("`{}` has no {flag}", self.command);
            });
            words[i + 1].to_string()
        };
        (
            after("--launch-template"),
            after("--slots").parse().expect("--slots is a number"),
        )
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut at = v;
    for key in path {
        at = &at[*key];
    }
    at.as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string: {at}"))
}

fn list(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}"))
}

/// `${{ secrets.NAME }}`, `$(NAME)`: the secret's name.
fn secret_name(expression: &str, open: &str, close: &str) -> String {
    expression
        .trim()
        .strip_prefix(open)
        .and_then(|e| e.strip_suffix(close))
        .unwrap_or_else(|| panic!("`{expression}` does not read a secret"))
        .trim()
        .to_string()
}

/// The token an agent script hands to `drover agent`: the exported DROVER_TOKEN.
fn exported_token(script: &str) -> String {
    let export = script
        .split(['\n', '&', ';'])
        .map(str::trim)
        .find_map(|s| s.strip_prefix("export DROVER_TOKEN="))
        .unwrap_or_else(|| panic!("the agent script exports no DROVER_TOKEN:\n{script}"));
    let name = export.trim_matches('"').trim_start_matches('$').to_string();
    assert!(
        script.contains(&format!("unset {name}")),
        "tasks would see {name}:\n{script}"
    );
    name
}

fn read_github(v: &Value) -> Read {
    assert_eq!(
        str_at(v, &["env", "DROVER_CI_RUN_ATTEMPT"]),
        "${{ github.run_attempt }}"
    );
    let coordinator = str_at(v, &["env", "DROVER_COORDINATOR"]).to_string();
    let jobs = v["jobs"].as_object().expect("jobs");
    let main = &jobs["main"];
    let main_cmds = list(&main["steps"])
        .iter()
        .filter_map(|s| {
            let run = s["run"].as_str()?;
            Some((run.to_string(), s["if"].as_str() == Some("always()")))
        })
        .collect();
    let mut agents = Vec::new();
    for (name, job) in jobs.iter().filter(|(name, _)| *name != "main") {
        let strategy = &job["strategy"];
        assert_eq!(strategy["fail-fast"], Value::Bool(false), "{name}");
        let count = list(&strategy["matrix"]["agent"]).len();
        let token = secret_name(str_at(job, &["env", "DROVER_TOKEN"]), "${{ secrets.", "}}");
        let command = list(&job["steps"])
            .iter()
            .filter_map(|s| s["run"].as_str())
            .find(|r| r.starts_with("drover agent"))
            .unwrap_or_else(|| panic!("{name} runs no agent"));
        for _ in 0..count {
            agents.push(Agent {
                command: command.to_string(),
                token: token.clone(),
                coordinator: coordinator.clone(),
            });
        }
    }
    Read {
        main: main_cmds,
        main_token: secret_name(str_at(main, &["env", "DROVER_TOKEN"]), "${{ secrets.", "}}"),
        main_coordinator: coordinator,
        agents,
    }
}

fn read_gitlab(v: &Value) -> Read {
    let jobs = v.as_object().expect("a mapping");
    let coordinator = str_at(v, &["variables", "DROVER_COORDINATOR"]).to_string();
    let stages: Vec<&str> = list(&v["stages"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let script = |job: &Value| -> Vec<String> {
        let mut lines: Vec<String> = Vec::new();
        if let Some(parent) = job["extends"].as_str() {
            for l in list(&jobs[parent]["before_script"]) {
                lines.push(l.as_str().expect("a command").to_string());
            }
        }
        for l in list(&job["script"]) {
            lines.push(l.as_str().expect("a command").to_string());
        }
        lines
    };
    let main = &jobs["drover-main"];
    let complete = &jobs["drover-complete-ci-run"];
    assert!(stages.contains(&main["stage"].as_str().unwrap()));
    assert_eq!(complete["when"], "always");
    assert_eq!(complete["needs"], serde_json::json!(["drover-main"]));
    let (main_stage, complete_stage) = (
        stages.iter().position(|s| *s == main["stage"]),
        stages.iter().position(|s| *s == complete["stage"]),
    );
    assert!(main_stage < complete_stage, "complete after the main job");
    let mut main_cmds: Vec<(String, bool)> = script(main).into_iter().map(|c| (c, false)).collect();
    main_cmds.extend(script(complete).into_iter().map(|c| (c, true)));
    // A project variable would win over a job's `variables:`: no job sets DROVER_TOKEN there.
    for (name, job) in jobs {
        assert!(
            job["variables"].get("DROVER_TOKEN").is_none(),
            "{name} sets DROVER_TOKEN in `variables:`"
        );
    }
    let mut agents = Vec::new();
    for (name, job) in jobs.iter().filter(|(n, _)| n.starts_with("drover-agent")) {
        assert_eq!(
            job["stage"], main["stage"],
            "{name} runs beside the main job"
        );
        let count = job["parallel"].as_u64().unwrap_or(1);
        let lines = script(job).join("\n");
        let token = exported_token(&lines);
        let command = lines
            .lines()
            .find(|l| l.starts_with("drover agent"))
            .unwrap_or_else(|| panic!("{name} runs no agent"));
        for _ in 0..count {
            agents.push(Agent {
                command: command.to_string(),
                token: token.clone(),
                coordinator: coordinator.clone(),
            });
        }
    }
    Read {
        main: main_cmds,
        // GitLab puts the CI/CD variable DROVER_TOKEN in every job's environment.
        main_token: "DROVER_TOKEN".into(),
        main_coordinator: coordinator,
        agents,
    }
}

fn read_azure(v: &Value) -> Read {
    let variables = &v["variables"];
    assert_eq!(
        str_at(variables, &["DROVER_CI_EXECUTION_ID"]),
        "$(Build.BuildId)"
    );
    assert_eq!(
        str_at(variables, &["DROVER_CI_RUN_ATTEMPT"]),
        "$(System.JobAttempt)"
    );
    let coordinator = str_at(variables, &["DROVER_COORDINATOR"]).to_string();
    let jobs = list(&v["jobs"]);
    let mut main = None;
    let mut agents = Vec::new();
    for job in jobs {
        assert!(job["dependsOn"].is_null(), "every job starts at once");
        let steps = list(&job["steps"]);
        if job["job"] == "main" {
            let mut cmds = Vec::new();
            let mut token = None;
            for step in steps {
                let Some(script) = step["script"].as_str() else {
                    continue;
                };
                if script.starts_with("drover ") {
                    let t = secret_name(str_at(step, &["env", "DROVER_TOKEN"]), "$(", ")");
                    assert!(token.as_ref().is_none_or(|seen: &String| *seen == t));
                    token = Some(t);
                }
                cmds.push((script.to_string(), step["condition"] == "always()"));
            }
            main = Some((cmds, token.expect("the main job runs drover")));
        } else {
            let count = job["strategy"]["parallel"].as_u64().unwrap_or(1);
            let step = steps
                .iter()
                .find(|s| {
                    s["script"]
                        .as_str()
                        .is_some_and(|c| c.starts_with("drover agent"))
                })
                .unwrap_or_else(|| panic!("{} runs no agent", job["job"]));
            let token = secret_name(str_at(step, &["env", "DROVER_TOKEN"]), "$(", ")");
            for _ in 0..count {
                agents.push(Agent {
                    command: str_at(step, &["script"]).to_string(),
                    token: token.clone(),
                    coordinator: coordinator.clone(),
                });
            }
        }
    }
    let (main, main_token) = main.expect("a main job");
    Read {
        main,
        main_token,
        main_coordinator: coordinator,
        agents,
    }
}

fn read_circleci(v: &Value) -> Read {
    let jobs = &v["jobs"];
    let run_of = |step: &Value| -> Option<(String, bool)> {
        match &step["run"] {
            Value::String(c) => Some((c.clone(), false)),
            Value::Object(run) => Some((
                run["command"].as_str()?.to_string(),
                run.get("when").and_then(Value::as_str) == Some("always"),
            )),
            _ => None,
        }
    };
    let main = &jobs["main"];
    let main_cmds: Vec<(String, bool)> = list(&main["steps"]).iter().filter_map(run_of).collect();
    let workflow_jobs = v["workflows"]
        .as_object()
        .expect("workflows")
        .values()
        .flat_map(|w| list(&w["jobs"]).iter())
        .collect::<Vec<_>>();
    let mut agents = Vec::new();
    let mut main_runs = 0;
    for invocation in workflow_jobs {
        let (job_name, params) = invocation
            .as_object()
            .and_then(|o| o.iter().next())
            .expect("`- job: {parameters}`");
        assert_eq!(params["context"], "drover", "{job_name} reads the secrets");
        if job_name == "main" {
            main_runs += 1;
            continue;
        }
        let job = &jobs[job_name];
        let declared = job["parameters"].as_object().expect("parameters");
        let ordinals = list(&params["matrix"]["parameters"]["ordinal"]);
        for ordinal in ordinals {
            let value = |name: &str| -> String {
                assert!(declared.contains_key(name), "{name} is not declared");
                let v = if name == "ordinal" {
                    ordinal
                } else {
                    &params[name]
                };
                match v {
                    Value::String(s) => {
                        assert_eq!(declared[name]["type"], "string", "{name}");
                        s.clone()
                    }
                    Value::Number(n) => {
                        assert_eq!(declared[name]["type"], "integer", "{name}");
                        n.to_string()
                    }
                    other => panic!("{name}: {other}"),
                }
            };
            let script = list(&job["steps"])
                .iter()
                .filter_map(run_of)
                .map(|(c, _)| c)
                .find(|c| c.contains("drover agent"))
                .expect("the agent job runs drover agent");
            let mut filled = script.clone();
            for name in declared.keys() {
                filled = filled.replace(&format!("<< parameters.{name} >>"), &value(name));
            }
            let token = exported_token(&filled);
            let command = filled
                .lines()
                .find(|l| l.starts_with("drover agent"))
                .expect("a drover agent line")
                .to_string();
            agents.push(Agent {
                command,
                token,
                coordinator: str_at(job, &["environment", "DROVER_COORDINATOR"]).to_string(),
            });
        }
    }
    assert_eq!(main_runs, 1, "the workflow runs the main job once");
    Read {
        main: main_cmds,
        // The context puts DROVER_TOKEN in the job's environment.
        main_token: "DROVER_TOKEN".into(),
        main_coordinator: str_at(main, &["environment", "DROVER_COORDINATOR"]).to_string(),
        agents,
    }
}

fn read(ci: Ci, text: &str) -> Read {
    let v = yaml(text);
    match ci {
        Ci::Github => read_github(&v),
        Ci::Gitlab => read_gitlab(&v),
        Ci::Azure => read_azure(&v),
        Ci::Circleci => read_circleci(&v),
    }
}

/// The header's comment lines as one text.
fn header_text(text: &str) -> String {
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .flat_map(|l| l.trim_start_matches('#').split_whitespace())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Everything a pipeline must do, for a fleet whose agents are `expected` (template, slots).
fn check(ci: Ci, spec: &str, nx: bool, expected: &[(&str, u32)]) {
    let text = generate(ci, Some(spec), nx);
    let got = read(ci, &text);
    let what = format!("{} nx={nx}", ci.name());

    // The main job: install (nx), start, the work, and complete, the last one always.
    let commands: Vec<&str> = got.main.iter().map(|(c, _)| c.as_str()).collect();
    let drover: Vec<&(String, bool)> = got
        .main
        .iter()
        .filter(|(c, _)| c.contains("drover "))
        .collect();
    assert_eq!(drover.len(), 3, "{what}: {commands:?}");
    let fleet = FleetSpec::parse(spec).unwrap().to_string();
    assert!(
        drover[0]
            .0
            .starts_with(&format!("drover start-ci-run --distribute-on '{fleet}'")),
        "{what}: {}",
        drover[0].0
    );
    assert!(
        !drover[0].1 && !drover[1].1,
        "{what}: only complete runs always"
    );
    if nx {
        assert!(
            drover[0].0.ends_with("--stop-agents-after e2e-ci"),
            "{what}"
        );
        let work = &drover[1].0[drover[1].0.find("drover nx").expect("drover nx")..];
        assert!(
            work.starts_with("drover nx -- affected -t lint,test,build,e2e-ci "),
            "{what}: {work}"
        );
        assert!(
            work.contains(" --base=") && work.contains(" --head="),
            "{what}"
        );
        let npm = commands.iter().position(|c| c.starts_with("npm ci"));
        assert!(npm.is_some_and(|i| commands[i..].contains(&drover[0].0.as_str())));
    } else {
        assert!(!drover[0].0.contains("--stop-agents-after"), "{what}");
        assert_eq!(drover[1].0, "drover exec --graph tasks.yaml", "{what}");
        assert!(!commands.iter().any(|c| c.contains("npm")), "{what}");
    }
    assert_eq!(
        drover[2],
        &("drover complete-ci-run".to_string(), true),
        "{what}"
    );
    assert_eq!(got.main_token, "DROVER_TOKEN", "{what}");
    assert_eq!(got.main_coordinator, DEFAULT_COORDINATOR, "{what}");

    // One agent per agent of the SPEC, each with its template and slots and the agent token.
    let mut agents: Vec<(String, u32)> = got.agents.iter().map(Agent::template_and_slots).collect();
    agents.sort();
    let mut want: Vec<(String, u32)> = expected.iter().map(|(t, s)| (t.to_string(), *s)).collect();
    want.sort();
    assert_eq!(agents, want, "{what}");
    for agent in &got.agents {
        assert_eq!(agent.token, "DROVER_AGENT_TOKEN", "{what}: {agent:?}");
        assert_eq!(agent.coordinator, DEFAULT_COORDINATOR, "{what}: {agent:?}");
    }

    // The header: the command, the secrets, the rerun advice.
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with(&format!(
            "# Generated by `drover ci-workflow --ci {} --agents '{spec}'{}`.",
            ci.name(),
            if nx { " --nx" } else { "" }
        )),
        "{what}: {first}"
    );
    let header = header_text(&text);
    assert!(
        header.contains(
            "Rerun all jobs, not only failed ones: Drover refuses agents of another attempt"
        ),
        "{what}: {header}"
    );
    assert!(
        header.contains(
            "DROVER_TOKEN the main job's: drover token new --name ci-main --scopes read,write"
        ),
        "{what}"
    );
    let templates = FleetSpec::parse(spec).unwrap().templates().join(",");
    assert!(
        header.contains(&format!(
            "DROVER_AGENT_TOKEN the agents': drover token new --name ci-agents --scopes agent --launch-templates {templates}"
        )),
        "{what}: {header}"
    );
    match ci {
        Ci::Github | Ci::Azure => {
            assert!(header.contains(RERUN_MESSAGE), "{what}: {header}");
            assert!(text.contains("DROVER_CI_RUN_ATTEMPT:"), "{what}");
        }
        Ci::Gitlab | Ci::Circleci => {
            assert!(
                header.contains("joins the run only while it is active"),
                "{what}"
            );
            assert!(
                !text.contains("DROVER_CI_RUN_ATTEMPT"),
                "{what}: no attempt to pass"
            );
        }
    }
    assert_eq!(
        text,
        generate(ci, Some(spec), nx),
        "{what}: the same bytes again"
    );
}

#[test]
fn every_ci_with_and_without_nx_runs_the_main_job_and_one_job_per_agent() {
    let expected = [
        ("linux-medium", 2),
        ("linux-medium", 2),
        ("linux-medium", 2),
        ("linux-large", 4),
    ];
    for ci in ALL {
        for nx in [false, true] {
            check(ci, SPEC, nx, &expected);
        }
    }
}

#[test]
fn odd_fleets_get_unique_job_names_and_templates_read_back_as_strings() {
    // Two groups of one template, a template with a dot, one that YAML would read as a
    // number, one that it would read as a boolean.
    let spec = "2 linux:2, 1 linux:4, 1 linux.x:1, 1 7:3, 1 true:1";
    let expected = [
        ("linux", 2),
        ("linux", 2),
        ("linux", 4),
        ("linux.x", 1),
        ("7", 3),
        ("true", 1),
    ];
    for ci in ALL {
        for nx in [false, true] {
            check(ci, spec, nx, &expected);
        }
    }
    let github = yaml(&generate(Ci::Github, Some(spec), false));
    // (serde_json's maps are sorted.)
    let jobs: Vec<&String> = github["jobs"].as_object().unwrap().keys().collect();
    assert_eq!(
        jobs,
        [
            "agents-7",
            "agents-linux",
            "agents-linux-2",
            "agents-linux-x",
            "agents-true",
            "main",
        ]
    );
    let azure = yaml(&generate(Ci::Azure, Some(spec), false));
    let jobs: Vec<&str> = list(&azure["jobs"])
        .iter()
        .map(|j| j["job"].as_str().unwrap())
        .collect();
    assert_eq!(
        jobs,
        [
            "main",
            "agents_linux",
            "agents_linux_2",
            "agents_linux_x",
            "agents_7",
            "agents_true"
        ]
    );
}

#[test]
fn nx_pipelines_find_the_base_and_head_commits_the_ci_way() {
    let github = yaml(&generate(Ci::Github, None, true));
    let steps = list(&github["jobs"]["main"]["steps"]);
    assert_eq!(steps[0]["uses"], "actions/checkout@v4");
    assert_eq!(steps[0]["with"]["fetch-depth"], 0, "affected needs history");
    let shas = steps
        .iter()
        .position(|s| s["uses"] == "nrwl/nx-set-shas@v4")
        .expect("nx-set-shas");
    let nx = steps
        .iter()
        .position(|s| {
            s["run"]
                .as_str()
                .is_some_and(|r| r.starts_with("drover nx"))
        })
        .unwrap();
    assert!(shas < nx);
    assert!(
        steps[nx]["run"]
            .as_str()
            .unwrap()
            .ends_with("--base=$NX_BASE --head=$NX_HEAD")
    );
    let env = &github["jobs"]["main"]["env"];
    assert_eq!(
        env["NX_SELF_HOSTED_REMOTE_CACHE_SERVER"],
        "https://drover.internal:50052"
    );
    assert_eq!(
        env["NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN"],
        "${{ secrets.DROVER_TOKEN }}"
    );

    let gitlab = yaml(&generate(Ci::Gitlab, None, true));
    let script: Vec<&str> = list(&gitlab["drover-main"]["script"])
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(script[0], "export NX_HEAD=$CI_COMMIT_SHA");
    assert_eq!(
        script[1],
        "export NX_BASE=${CI_MERGE_REQUEST_DIFF_BASE_SHA:-$CI_COMMIT_BEFORE_SHA}"
    );
    assert!(script[3].ends_with("--base=$NX_BASE --head=$NX_HEAD"));
    assert_eq!(gitlab["drover-main"]["variables"]["GIT_DEPTH"], "0");

    let azure_text = generate(Ci::Azure, None, true);
    let azure = yaml(&azure_text);
    let main = &list(&azure["jobs"])[0];
    assert_eq!(list(&main["steps"])[0]["fetchDepth"], 0);
    assert!(azure_text.contains("--base=$(BASE_SHA) --head=$(HEAD_SHA)"));
    assert!(azure_text.contains("HEAD_SHA: $(git rev-parse HEAD)"));

    let circleci = yaml(&generate(Ci::Circleci, None, true));
    assert_eq!(circleci["orbs"]["nx"], "nrwl/nx@1.5.1");
    let steps = list(&circleci["jobs"]["main"]["steps"]);
    let shas = steps.iter().position(|s| *s == "nx/set-shas").unwrap();
    let nx = steps
        .iter()
        .position(|s| s["run"].as_str().is_some_and(|r| r.contains("drover nx")))
        .unwrap();
    assert!(shas < nx);
}

#[test]
fn the_nx_replay_reads_the_cache_with_the_main_job_token() {
    for (ci, token) in [
        (
            Ci::Github,
            "NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN: ${{ secrets.DROVER_TOKEN }}",
        ),
        (
            Ci::Gitlab,
            "NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN: $DROVER_TOKEN",
        ),
        (
            Ci::Azure,
            "NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN: $(DROVER_TOKEN)",
        ),
        (
            Ci::Circleci,
            "NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN=\"$DROVER_TOKEN\" drover nx",
        ),
    ] {
        let text = generate(ci, None, true);
        assert!(
            text.contains("NX_SELF_HOSTED_REMOTE_CACHE_SERVER: https://drover.internal:50052"),
            "{}",
            ci.name()
        );
        assert_eq!(text.matches(token).count(), 1, "{}: {token}", ci.name());
        let plain = generate(ci, None, false);
        assert!(!plain.contains("NX_SELF_HOSTED"), "{}", ci.name());
    }
}

#[test]
fn defaults_three_linux_agents_and_the_internal_coordinator() {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CiWorkflowArgs,
    }
    let cli = Cli::try_parse_from(["drover", "--ci", "gitlab"]).unwrap();
    let pipeline = Pipeline::from_args(&cli.args).unwrap();
    assert_eq!(pipeline.fleet.to_string(), "3 linux:2");
    assert_eq!(pipeline.coordinator, "https://drover.internal:50051");
    assert_eq!(pipeline.command_line, "drover ci-workflow --ci gitlab");
    let text = render(Ci::Gitlab, &pipeline);
    let agents = read(Ci::Gitlab, &text).agents;
    assert_eq!(agents.len(), 3);
    assert!(
        agents
            .iter()
            .all(|a| a.template_and_slots() == ("linux".into(), 2))
    );
    assert!(Cli::try_parse_from(["drover", "--ci", "jenkins"]).is_err());
    assert!(
        Cli::try_parse_from(["drover", "--ci", "github", "--cache-server", "http://c:1"]).is_err(),
        "--cache-server is for --nx"
    );
}

#[test]
fn the_coordinator_and_its_cache_reach_every_job() {
    let mut a = args(Ci::Circleci, Some("1 a:1"), true);
    a.coordinator = Some("http://10.0.0.5:7000".into());
    let p = Pipeline::from_args(&a).unwrap();
    assert_eq!(p.cache_server, "http://10.0.0.5:50052");
    let text = render(Ci::Circleci, &p);
    let got = read(Ci::Circleci, &text);
    assert_eq!(got.main_coordinator, "http://10.0.0.5:7000");
    assert!(
        got.agents
            .iter()
            .all(|a| a.coordinator == "http://10.0.0.5:7000")
    );
    assert!(text.contains("NX_SELF_HOSTED_REMOTE_CACHE_SERVER: http://10.0.0.5:50052"));

    assert_eq!(
        cache_server_of("https://ci.example.com"),
        "https://ci.example.com:50052"
    );
    assert_eq!(cache_server_of("http://[::1]:50051/"), "http://[::1]:50052");
    a.cache_server = Some("https://cache.example.com".into());
    assert_eq!(
        Pipeline::from_args(&a).unwrap().cache_server,
        "https://cache.example.com"
    );
}

#[test]
fn flags_that_would_break_the_pipeline_are_refused() {
    let refused = |a: CiWorkflowArgs| match Pipeline::from_args(&a) {
        Err(CliError::Usage(message)) => message,
        other => panic!("accepted: {other:?}"),
    };
    let m = refused(args(Ci::Github, Some("2 linux$(id):2"), false));
    assert!(m.contains("launch template `linux$(id)`"), "{m}");
    let m = refused(args(Ci::Github, Some("1 -x:2"), false));
    assert!(m.contains("`-x`"), "{m}");
    let m = refused(args(Ci::Github, Some("two linux:2"), false));
    assert!(m.starts_with("--agents: "), "{m}");
    for url in [
        "drover.internal:50051",
        "https://",
        "https://x:1/${{ secrets.X }}",
        "https://x:1 # y",
        "http://x:1/'",
    ] {
        let mut a = args(Ci::Gitlab, None, false);
        a.coordinator = Some(url.into());
        let m = refused(a);
        assert!(m.starts_with("--coordinator "), "{url}: {m}");
    }
}

#[test]
fn the_header_names_the_command_as_a_shell_reads_it() {
    let mut a = args(Ci::Azure, Some(" 2  linux:2,\n1 big:4 "), true);
    a.coordinator = Some("https://d.example:443".into());
    a.output = Some(PathBuf::from("my dir/azure-pipelines.yml"));
    let p = Pipeline::from_args(&a).unwrap();
    assert_eq!(
        p.command_line,
        "drover ci-workflow --ci azure --agents '2 linux:2, 1 big:4' --nx --coordinator https://d.example:443 --output 'my dir/azure-pipelines.yml'"
    );
    a.output = Some(PathBuf::from("ci\n.yml"));
    let p = Pipeline::from_args(&a).unwrap();
    assert!(
        p.command_line.ends_with("--output 'ci?.yml'"),
        "{}",
        p.command_line
    );
    assert_eq!(yaml_str("linux-medium"), "linux-medium");
    assert_eq!(yaml_str("No"), "'No'");
    assert_eq!(yaml_str("1.5"), "'1.5'");
    // The header's paragraphs are wrapped at 100 columns; the command and the token commands
    // stay whole, to be copied.
    for ci in ALL {
        for line in generate(ci, Some(SPEC), true)
            .lines()
            .take_while(|l| l.starts_with('#'))
        {
            let whole = line.starts_with("# Generated by") || line.contains("drover token new");
            assert!(line.len() <= 100 || whole, "{line}");
        }
    }
}

#[test]
fn output_writes_the_file_and_its_folder() {
    let dir = std::env::temp_dir().join(format!("drover-ci-workflow-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join(".github/workflows/ci.yml");
    let mut a = args(Ci::Github, Some(SPEC), true);
    a.output = Some(path.clone());
    assert_eq!(run(a).unwrap(), 0);
    let written = std::fs::read_to_string(&path).unwrap();
    let mut a = args(Ci::Github, Some(SPEC), true);
    a.output = Some(path.clone());
    assert_eq!(
        written,
        render(Ci::Github, &Pipeline::from_args(&a).unwrap())
    );
    assert!(written.contains(&format!("--output {}`", path.display())));
    let _ = std::fs::remove_dir_all(&dir);
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ci-workflow")
}

/// The golden files: `drover ci-workflow --ci CI --agents SPEC [--nx]`, byte for byte.
#[test]
fn golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for ci in ALL {
        for nx in [false, true] {
            let name = format!("{}{}.yml", ci.name(), if nx { "-nx" } else { "" });
            let path = golden_dir().join(&name);
            let text = generate(ci, Some(SPEC), nx);
            if update {
                std::fs::create_dir_all(golden_dir()).unwrap();
                std::fs::write(&path, &text).unwrap();
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(golden) if golden == text => {}
                _ => stale.push(name),
            }
        }
    }
    assert!(
        stale.is_empty(),
        "{stale:?} differ from what ci-workflow writes now; if the change is meant, rewrite them with UPDATE_GOLDEN=1 cargo test -p drover-cli golden_files, and read the diff"
    );
}
