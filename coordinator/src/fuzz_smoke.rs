//! A fuzz smoke, bounded: mutated inputs for the graph parser, the rules parser and the
//! coordinator's handling of agent messages (protobuf bytes, through the service edge, into
//! the scheduler). Each target must neither panic nor take long on any input.
//!
//! Deterministic by default (a fixed seed, `DROVER_FUZZ_ITERATIONS` inputs per target, 3,000
//! unless set), so a test run is repeatable; for a longer hunt:
//!
//! ```text
//! DROVER_FUZZ_SEED=$RANDOM DROVER_FUZZ_ITERATIONS=200000 cargo test --release -p drover-coordinator fuzz
//! ```
//!
//! An input that fails is written to `coordinator/fuzz-regressions/TARGET/`, and every file
//! there is run again before anything new: a crash found stays a regression test.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use drover_proto::v1 as pb;
use drover_scheduler::RuleSet;
use drover_scheduler::graph::parse_graph_file;
use drover_scheduler::state::{
    Action, AgentId, Config, Event, Reply, RunRef, RunRequest, RunSpec, Scheduler,
};
use prost::Message;

use crate::convert;

/// The longest one input may take (debug builds, a shared 2-core machine).
const SLOW: Duration = Duration::from_secs(2);

/// xorshift64*: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

fn seed() -> u64 {
    std::env::var("DROVER_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_D20E_u64)
        | 1
}

fn iterations() -> usize {
    std::env::var("DROVER_FUZZ_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3_000)
}

/// A few changes to `input`: bytes flipped, dropped, repeated, or tokens of the format put in.
fn mutate(rng: &mut Rng, input: &[u8], tokens: &[&[u8]]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                out.drain(at.min(end)..end);
            }
            2 if !out.is_empty() => {
                let end = (at + 1 + rng.below(64)).min(out.len());
                let piece = out[at.min(end)..end].to_vec();
                let to = rng.below(out.len() + 1);
                out.splice(to..to, piece);
            }
            3 => {
                let byte = *rng.pick(&[0u8, b'\n', b' ', b'"', b'\'', 0x7f, 0xff, b'\t']);
                out.insert(at, byte);
            }
            _ => {
                let token = rng.pick(tokens);
                out.splice(at..at, token.iter().copied());
            }
        }
    }
    out
}

/// Runs `check` on every saved regression of `target`, then on `iterations()` mutations of
/// `seeds`; the first input that panics or is slow is saved and fails the test.
fn fuzz(target: &str, seeds: &[&str], tokens: &[&[u8]], check: impl Fn(&[u8])) {
    let dir = regressions(target);
    let mut saved: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    saved.sort();
    for path in &saved {
        let input = std::fs::read(path).expect("a regression input");
        if let Err(why) = try_one(&check, &input) {
            panic!("{target}: the regression {} fails: {why}", path.display());
        }
    }
    let mut rng = Rng(seed() ^ target.len() as u64);
    let mut corpus: Vec<Vec<u8>> = seeds.iter().map(|s| s.as_bytes().to_vec()).collect();
    for n in 0..iterations() {
        let base = corpus[rng.below(corpus.len())].clone();
        let input = mutate(&mut rng, &base, tokens);
        if let Err(why) = try_one(&check, &input) {
            std::fs::create_dir_all(&dir).expect("the regressions dir");
            let path = dir.join(format!("seed-{}-input-{n}", seed()));
            std::fs::write(&path, &input).expect("a regression input");
            panic!(
                "{target}: input {n} {why}; saved as {} (a regression test from now on)",
                path.display()
            );
        }
        // Keep some mutants as bases: deeper changes than a few at once from a seed.
        if rng.chance(8) && corpus.len() < 256 {
            corpus.push(input);
        }
    }
}

fn try_one(check: &impl Fn(&[u8]), input: &[u8]) -> Result<(), String> {
    let started = Instant::now();
    catch_unwind(AssertUnwindSafe(|| check(input))).map_err(|p| {
        let what = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("panicked: {what}")
    })?;
    let took = started.elapsed();
    if took > SLOW {
        return Err(format!("took {took:?}"));
    }
    Ok(())
}

fn regressions(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz-regressions")
        .join(target)
}

const GRAPH_YAML: &str = "\
tasks:
  - id: lib:build
    command: ./build.sh lib
    outputs: [dist/lib]
    env: { NODE_ENV: production }
    timeout: 10m
    estimate: 30s
  - id: app:build:production
    project: app
    target: build
    configuration: production
    command: npx nx run app:build
    dependsOn: [lib:build]
    cache: false
    parallelism: 2
  - id: app:test
    command: \"true\"
    dependsOn:
      - app:build:production
";

const GRAPH_JSON: &str = r#"{"tasks": [
  {"id": "a:build", "command": "make a", "timeout": 60000},
  {"id": "b:build", "command": "make b", "dependsOn": ["a:build"], "estimate": "2s"}
]}"#;

const NX_GRAPH: &str = r#"{"tasks": {
  "tasks": {
    "lib:build": {"id": "lib:build", "target": {"project": "lib", "target": "build"},
      "overrides": {}, "outputs": ["dist/lib"], "cache": true, "parallelism": true},
    "app:test:ci": {"id": "app:test:ci",
      "target": {"project": "app", "target": "test", "configuration": "ci"},
      "cache": true, "continuous": false, "parallelism": false},
    "app:serve": {"id": "app:serve", "target": {"project": "app", "target": "serve"},
      "continuous": true}
  },
  "dependencies": {"lib:build": [], "app:test:ci": ["lib:build", "app:serve"],
    "app:serve": []},
  "continuousDependencies": {"app:test:ci": ["app:serve"]},
  "roots": ["lib:build"]
}}"#;

const YAML_TOKENS: &[&[u8]] = &[
    b"- ",
    b": ",
    b"\n  - id: x:y\n",
    b"dependsOn: [",
    b"]",
    b"{",
    b"}",
    b"&a ",
    b"*a",
    b"<<: *a",
    b"!!str ",
    b"---\n",
    b"|\n",
    b"\"\\u0000\"",
    b"99999999999999999999",
    b"-1",
    b"0",
    b"null",
    b"~",
    b"tasks",
    b"command",
    b"timeout: ",
    b"estimate: ",
    b"parallelism: ",
    b"\xe2\x80\xae",
];

#[test]
fn fuzz_the_graph_parser() {
    for seed in [GRAPH_YAML, GRAPH_JSON, NX_GRAPH] {
        parse_graph_file("seed", seed).unwrap_or_else(|e| panic!("a seed must parse: {e}"));
    }
    fuzz(
        "graph",
        &[GRAPH_YAML, GRAPH_JSON, NX_GRAPH],
        YAML_TOKENS,
        |input| {
            let text = String::from_utf8_lossy(input);
            if let Ok(file) = parse_graph_file("tasks.yaml", &text) {
                // What parses is a graph the scheduler takes.
                let mut sched = Scheduler::new(Config::default());
                let run = start_run(&mut sched, "");
                let _ = sched.handle(
                    Duration::ZERO,
                    Event::Submit {
                        run,
                        tasks: file.graph.tasks,
                    },
                );
            }
        },
    );
}

const RULES: &str = "\
assignment-rules:
  - projects:
      - app1
      - 'tag:e2e'
    targets:
      - e2e-ci*
    configurations: [production]
    run-on:
      - agent: linux-medium
        parallelism: 5
      - agent: linux-large
  - targets:
      - lint
    run-on:
      - agent: linux-small
        parallelism: 1
";

const RULES_WITH_CHANGESETS: &str = "\
distribute-on:
  small-changeset: 2 linux-medium, 1 linux-large
  medium-changeset: 4 linux-medium, 1 linux-large
  large-changeset: 8 linux-medium, 2 linux-large
assignment-rules:
  - targets: ['!lint', 'build*']
    run-on:
      - agent: linux-large
";

const RULES_TOKENS: &[&[u8]] = &[
    b"- ",
    b": ",
    b"run-on:\n  - agent: x\n",
    b"parallelism: ",
    b"targets: [",
    b"projects: ",
    b"configurations: ",
    b"agent: ",
    b"]",
    b"*",
    b"!",
    b"{",
    b"[",
    b"&a ",
    b"*a",
    b"0",
    b"4294967296",
    b"'",
    b"\"",
    b"\n",
];

#[test]
fn fuzz_the_rules_parser() {
    for seed in [RULES, RULES_WITH_CHANGESETS] {
        RuleSet::parse("seed", seed).unwrap_or_else(|e| panic!("a seed must parse: {e}"));
    }
    fuzz(
        "rules",
        &[RULES, RULES_WITH_CHANGESETS],
        RULES_TOKENS,
        |input| {
            let text = String::from_utf8_lossy(input);
            if let Ok(rules) = RuleSet::parse("rules.yaml", &text) {
                for t in rules.templates() {
                    let _ = rules.parallelism(0, t);
                }
                let _ = rules.rule_for("app1", "e2e-ci--a", Some("production"));
            }
            // The same text as a run's rules, through the run's own checks.
            let request = RunRequest {
                ci_execution_id: "ci-1".into(),
                rules_text: text.into_owned(),
                rules_path: "rules.yaml".into(),
                distribute_on: "medium-changeset".into(),
                ..RunRequest::default()
            };
            let _ = RunSpec::from_request(&request);
        },
    );
}

fn start_run(sched: &mut Scheduler, rules: &str) -> RunRef {
    let request = RunRequest {
        ci_execution_id: "ci-1".into(),
        rules_text: rules.into(),
        rules_path: "rules.yaml".into(),
        ..RunRequest::default()
    };
    let spec = RunSpec::from_request(&request).expect("a valid run");
    match sched
        .handle(Duration::ZERO, Event::StartRun { spec, unix_ms: 1 })
        .reply
    {
        Ok(Reply::RunStarted { run_id, .. }) => RunRef::Id(run_id),
        other => panic!("no run: {other:?}"),
    }
}

/// The messages of an agent's stream, as the service reads them: the first a Hello (from
/// `connect`), then any. Each is encoded, mutated as bytes, decoded as the service would.
fn agent_session(rng: &mut Rng, leases: &[(String, u64)]) -> Vec<pb::AgentMessage> {
    use pb::agent_message::Msg;
    let lease = |rng: &mut Rng| -> (String, u64) {
        if leases.is_empty() || rng.chance(6) {
            let id = rng.pick(&["", "0", "-1", "x", "18446744073709551616", "4294967297"]);
            (id.to_string(), rng.next())
        } else {
            let (id, token) = rng.pick(leases).clone();
            (id, if rng.chance(5) { token + 1 } else { token })
        }
    };
    let mut messages = Vec::new();
    for _ in 0..1 + rng.below(12) {
        let (lease_id, fencing_token) = lease(rng);
        let msg = match rng.below(7) {
            0 => Msg::Heartbeat(pb::Heartbeat {
                held_leases: vec![pb::HeldLease {
                    lease_id,
                    fencing_token,
                }],
            }),
            1 => Msg::Started(pb::Started {
                lease_id,
                fencing_token,
            }),
            2 => Msg::Output(pb::Output {
                lease_id,
                fencing_token,
                stream: rng.below(4) as i32,
                data: vec![b'x'; rng.below(100)],
            }),
            3 | 4 => Msg::Finished(pb::Finished {
                lease_id,
                fencing_token,
                exit_code: *rng.pick(&[0, 1, -1, i32::MIN]),
                duration_ms: *rng.pick(&[0, 5, u64::MAX]),
                error: if rng.chance(2) {
                    String::new()
                } else {
                    "\u{1b}[2Jboom\n".into()
                },
            }),
            5 => Msg::Draining(pb::Draining {}),
            _ => Msg::Hello(hello(rng)),
        };
        messages.push(pb::AgentMessage { msg: Some(msg) });
    }
    messages
}

fn hello(rng: &mut Rng) -> pb::Hello {
    pb::Hello {
        name: rng.pick(&["a1", "a2", "", "a\u{7}", "a1"]).to_string(),
        instance_id: rng.pick(&["i1", "i2", ""]).to_string(),
        launch_template: rng.pick(&["linux", "linux-medium", "", "\n"]).to_string(),
        slots: *rng.pick(&[0, 1, 2, 8, 1024, 1025, u32::MAX]),
        ci_execution_id: rng.pick(&["", "ci-1", "ci-2"]).to_string(),
        version: "fuzz".into(),
        held_leases: Vec::new(),
        attempt: *rng.pick(&[0, 1, 2]),
        repositories: Vec::new(),
    }
}

/// Bytes of a message, changed a little, then decoded; `None` when they no longer decode.
fn garble(rng: &mut Rng, message: &pb::AgentMessage) -> Option<pb::AgentMessage> {
    let bytes = message.encode_to_vec();
    if !rng.chance(4) {
        return Some(message.clone());
    }
    let changed = mutate(
        rng,
        &bytes,
        &[&[0x08], &[0x12, 0x00], &[0xff, 0xff, 0xff, 0x0f]],
    );
    pb::AgentMessage::decode(changed.as_slice()).ok()
}

#[test]
fn fuzz_the_handling_of_agent_messages() {
    // One input: a seed for a whole session of agents and main-job events.
    fuzz("agent", &["0123456789abcdef"], &[b"x"], |input| {
        let mut rng = Rng(input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        }) | 1);
        let mut sched = Scheduler::new(Config::default());
        let mut now = Duration::ZERO;
        let run = start_run(&mut sched, RULES);
        let tasks = parse_graph_file("tasks.yaml", GRAPH_YAML)
            .expect("the seed graph")
            .graph
            .tasks;
        let _ = sched.handle(
            now,
            Event::Submit {
                run: run.clone(),
                tasks,
            },
        );
        let mut leases: Vec<(String, u64)> = Vec::new();
        let mut agents: Vec<AgentId> = Vec::new();
        for _ in 0..1 + rng.below(8) {
            now += Duration::from_millis(rng.below(20_000) as u64);
            let outcome = sched.handle(now, Event::Hello(convert::hello(hello(&mut rng))));
            if let Ok(Reply::Agent(agent)) = outcome.reply {
                agents.push(agent);
            }
            note_leases(&outcome.actions, &mut leases);
            for message in agent_session(&mut rng, &leases) {
                let Some(agent) = agents.last().copied() else {
                    break;
                };
                let Some(message) = garble(&mut rng, &message) else {
                    continue;
                };
                let Some(msg) = message.msg else { continue };
                if let Ok(event) = convert::agent_event(agent, msg) {
                    let outcome = sched.handle(now, event);
                    note_leases(&outcome.actions, &mut leases);
                }
                now += Duration::from_millis(rng.below(3_000) as u64);
                let outcome = sched.handle(now, Event::Tick);
                note_leases(&outcome.actions, &mut leases);
            }
            if !agents.is_empty() && rng.chance(3) {
                let agent = *rng.pick(&agents);
                let _ = sched.handle(now, Event::Disconnected { agent });
            }
        }
        if rng.chance(2) {
            let _ = sched.handle(now, Event::Complete { run });
        }
        // Time enough for every lease and grace to run out.
        for _ in 0..4 {
            now += Duration::from_secs(600);
            let _ = sched.handle(now, Event::Tick);
        }
    });
}

fn note_leases(actions: &[Action], leases: &mut Vec<(String, u64)>) {
    for action in actions {
        if let Action::Lease { grant, .. } = action {
            leases.push((grant.lease.to_string(), grant.token));
        }
    }
}
