//! The simulator against schedules that can be worked out by hand.

use std::collections::HashMap;
use std::time::Duration;

use super::datasets::{self, sim_task};
use super::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn task(id: &str, deps: &[&str]) -> TaskSpec {
    let (project, target) = id.split_once(':').unwrap_or((id, id));
    sim_task(
        id,
        project,
        target,
        deps.iter().map(|d| d.to_string()).collect(),
    )
}

fn durations(pairs: &[(&str, u64)]) -> HashMap<String, Duration> {
    pairs
        .iter()
        .map(|(id, s)| (id.to_string(), secs(*s)))
        .collect()
}

fn sim(
    tasks: &[TaskSpec],
    truth: &HashMap<String, Duration>,
    rules: &RuleSet,
    fleet: &str,
    policy: Policy,
) -> Outcome {
    let fleet = FleetSpec::parse(fleet).unwrap();
    simulate(&Setup {
        tasks,
        durations: truth,
        rules,
        fleet: &fleet,
        policy,
        estimates: None,
        cold_start: None,
    })
    .unwrap()
}

#[test]
fn a_chain_takes_the_sum_of_its_tasks() {
    let tasks = [
        task("a:x", &[]),
        task("b:x", &["a:x"]),
        task("c:x", &["b:x"]),
    ];
    let truth = durations(&[("a:x", 3), ("b:x", 5), ("c:x", 7)]);
    let o = sim(
        &tasks,
        &truth,
        &RuleSet::default(),
        "4 linux:2",
        Policy::CriticalPath,
    );
    assert_eq!(o.makespan, secs(15));
    assert_eq!(o.lower_bound, secs(15));
    let order: Vec<&str> = o.schedule.iter().map(|p| p.task.as_str()).collect();
    assert_eq!(order, ["a:x", "b:x", "c:x"]);
    assert_eq!(o.schedule[1].start_ms, secs(3));
}

#[test]
fn independent_tasks_fill_every_slot() {
    let tasks: Vec<TaskSpec> = (0..12).map(|i| task(&format!("p{i}:t"), &[])).collect();
    let truth: HashMap<String, Duration> = tasks.iter().map(|t| (t.id.clone(), secs(10))).collect();
    // 3 agents × 2 slots: two waves of 10 s.
    let o = sim(
        &tasks,
        &truth,
        &RuleSet::default(),
        "3 linux:2",
        Policy::Fifo,
    );
    assert_eq!(o.makespan, secs(20));
    assert_eq!(o.lower_bound, secs(20));
    assert!((o.utilization - 1.0).abs() < 1e-9);
    // Every agent slot holds two tasks, never overlapping.
    for a in &o.agents {
        for slot in 0..a.slots {
            let mine: Vec<_> = o
                .schedule
                .iter()
                .filter(|p| p.agent == a.name && p.slot == slot)
                .collect();
            assert_eq!(mine.len(), 2, "{}/{slot}", a.name);
            assert!(mine[0].end_ms <= mine[1].start_ms);
        }
    }
}

#[test]
fn critical_path_beats_fifo_on_a_long_tail() {
    // `long` heads a 30 s chain; FIFO starts the short tasks first (readiness order).
    let mut tasks: Vec<TaskSpec> = (0..3).map(|i| task(&format!("s{i}:t"), &[])).collect();
    tasks.push(task("long:t", &[]));
    tasks.push(task("tail:t", &["long:t"]));
    let mut truth: HashMap<String, Duration> =
        tasks.iter().map(|t| (t.id.clone(), secs(10))).collect();
    truth.insert("tail:t".into(), secs(20));
    let hinted = datasets::with_hints(&tasks, &truth, 0.0, 0);
    let cp = sim(
        &hinted,
        &truth,
        &RuleSet::default(),
        "2 linux:1",
        Policy::CriticalPath,
    );
    let fifo = sim(
        &hinted,
        &truth,
        &RuleSet::default(),
        "2 linux:1",
        Policy::Fifo,
    );
    assert_eq!(cp.makespan, secs(30));
    assert_eq!(fifo.makespan, secs(40));
    assert_eq!(cp.lower_bound, secs(30));
}

#[test]
fn the_scheduler_ranks_by_hints_not_by_true_durations() {
    // The hints say `a` is the long one; truly `b` is. The scheduler must follow the hints:
    // it cannot see the true durations.
    let mut a = task("a:t", &[]);
    a.estimate = Some(secs(100));
    let mut b = task("b:t", &[]);
    b.estimate = Some(secs(1));
    let truth = durations(&[("a:t", 1), ("b:t", 100)]);
    let o = sim(
        &[b, a],
        &truth,
        &RuleSet::default(),
        "1 linux:1",
        Policy::CriticalPath,
    );
    assert_eq!(o.schedule[0].task, "a:t", "ranked by the hint");
    assert_eq!(o.makespan, secs(101));
}

const RULES: &str = "\
assignment-rules:
  - targets: ['e2e']
    run-on:
      - agent: large
  - targets: ['build']
    run-on:
      - agent: medium
      - agent: large
";

#[test]
fn rules_confine_tasks_and_scarce_agents_keep_their_exclusive_work() {
    let rules = RuleSet::parse("rules.yaml", RULES).unwrap();
    // Two builds rank above the e2e test (the hints say so); a large and a medium agent are
    // free, the large one chooses first. It takes the e2e test, which only it may run, and
    // leaves the builds to the medium agent.
    let mut tasks = vec![
        task("a:build", &[]),
        task("b:build", &[]),
        task("c:e2e", &[]),
    ];
    let truth = durations(&[("a:build", 50), ("b:build", 50), ("c:e2e", 100)]);
    tasks = datasets::with_hints(&tasks, &truth, 0.0, 0);
    tasks[0].estimate = Some(secs(200));
    tasks[1].estimate = Some(secs(200));
    let o = sim(
        &tasks,
        &truth,
        &rules,
        "1 large:1, 1 medium:1",
        Policy::CriticalPath,
    );
    let e2e = o.schedule.iter().find(|p| p.task == "c:e2e").unwrap();
    assert_eq!((e2e.template.as_str(), e2e.start_ms), ("large", secs(0)));
    assert_eq!(o.makespan, secs(100));
    // Work only the large agent may do bounds the makespan too.
    let heavy = durations(&[("a:build", 1), ("b:build", 1), ("c:e2e", 300)]);
    let o = sim(
        &tasks,
        &heavy,
        &rules,
        "3 medium:1, 1 large:1",
        Policy::CriticalPath,
    );
    assert_eq!(o.lower_bound, secs(300));
}

#[test]
fn a_task_no_agent_type_may_run_is_an_error_up_front() {
    let rules = RuleSet::parse("rules.yaml", RULES).unwrap();
    let fleet = FleetSpec::parse("2 medium:1").unwrap();
    let tasks = [task("c:e2e", &[])];
    let err = simulate(&Setup {
        tasks: &tasks,
        durations: &HashMap::new(),
        rules: &rules,
        fleet: &fleet,
        policy: Policy::CriticalPath,
        estimates: None,
        cold_start: None,
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("task `c:e2e` may run on no agent type"),
        "{err}"
    );
}

#[test]
fn binning_leaves_agents_idle_while_another_bin_has_work() {
    // Eight 10 s lint tasks and two 10 s builds on two agents: binning gives each target one
    // agent (its bin), so the build agent idles after 20 s while lint runs 80 s.
    let mut tasks: Vec<TaskSpec> = (0..8).map(|i| task(&format!("p{i}:lint"), &[])).collect();
    tasks.extend((0..2).map(|i| task(&format!("p{i}:build"), &[])));
    let truth: HashMap<String, Duration> = tasks.iter().map(|t| (t.id.clone(), secs(10))).collect();
    let hinted = datasets::with_hints(&tasks, &truth, 0.0, 0);
    let binned = sim(
        &hinted,
        &truth,
        &RuleSet::default(),
        "2 linux:1",
        Policy::Binning,
    );
    let cp = sim(
        &hinted,
        &truth,
        &RuleSet::default(),
        "2 linux:1",
        Policy::CriticalPath,
    );
    assert_eq!(cp.makespan, secs(50));
    assert_eq!(binned.makespan, secs(80));
    let agents_of = |target: &str| -> Vec<&str> {
        let mut a: Vec<&str> = binned
            .schedule
            .iter()
            .filter(|p| p.task.ends_with(target))
            .map(|p| p.agent.as_str())
            .collect();
        a.dedup();
        a
    };
    assert_eq!(agents_of(":lint").len(), 1);
    assert_eq!(agents_of(":build").len(), 1);
    assert_ne!(agents_of(":lint"), agents_of(":build"));
    assert!(binned.utilization < 0.7);
}

#[test]
fn simulate_json_has_the_documented_shape() {
    let tasks = [task("a:x", &[]), task("b:x", &["a:x"])];
    let truth = durations(&[("a:x", 1), ("b:x", 2)]);
    let o = sim(
        &tasks,
        &truth,
        &RuleSet::default(),
        "1 linux:1",
        Policy::CriticalPath,
    );
    let v = serde_json::to_value(&o.schedule[1]).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"task": "b:x", "agent": "linux-1", "template": "linux", "start_ms": 1000, "end_ms": 3000})
    );
    let text = render::text(&o);
    assert!(text.contains("makespan 3.0s"), "{text}");
    assert!(text.contains("linux-1/0"), "{text}");
    let svg = render::svg(&o);
    assert!(
        svg.starts_with("<svg") && svg.contains("<title>b:x"),
        "{svg}"
    );
}

#[test]
fn datasets_parse() {
    let wf = datasets::parse_workflow(
        "wf/x.json",
        r#"{"tasks": [{"id": "a_ID01", "type": "split_ID01", "parents": [], "runtime_s": 1.5},
                      {"id": "b_ID02", "type": "blast_ID02", "parents": ["a_ID01"], "runtime_s": 2}]}"#,
    )
    .unwrap();
    assert_eq!(wf.tasks[1].target, "blast");
    assert_eq!(wf.durations["a_ID01"], Duration::from_millis(1500));
    let stg = datasets::parse_stg("s.stg", "2\n0 0 0\n1 3 1 0\n2 4 1 1\n3 0 1 2\n").unwrap();
    assert_eq!(stg.tasks.len(), 2);
    assert_eq!(stg.tasks[1].depends_on, ["t1"]);
    assert_eq!(stg.durations["t2"], secs(4));
    let opt = datasets::parse_optima("o.csv", "50/rand0001.stg,4,94\n50/rand0009.stg,4,132,134\n")
        .unwrap();
    assert_eq!((opt[1].optimum, opt[1].upper), (132, Some(134)));
    let nx = datasets::parse_nx_tasks(
        "n.json",
        r#"{"tasks": [["lib", "build"], ["app", "test:e2e"]], "edges": [[["lib", "build"], ["app", "test:e2e"]]]}"#,
    )
    .unwrap();
    assert_eq!(nx[1].target, "test:e2e");
    assert_eq!(nx[1].depends_on, ["lib:build"]);
    let d = datasets::draw_durations(&nx, 7);
    assert_eq!(d, datasets::draw_durations(&nx, 7), "seeded");
    assert!(datasets::parse_durations("d.json", r#"{"a": -1}"#).is_err());
    // The coordinator's own durations.json reads as its per-task averages.
    let mut learned = crate::estimate::Estimates::default();
    learned.record(
        &crate::TaskSpec::new("app:build", "x"),
        Duration::from_millis(1500),
    );
    let text = serde_json::to_string(&learned).unwrap();
    let got = datasets::parse_durations("durations.json", &text).unwrap();
    assert_eq!(got.len(), 1, "{text}");
    assert_eq!(got["app:build"], Duration::from_millis(1500), "{text}");
}

#[test]
fn the_benchmark_runs_on_a_small_corpus() {
    let stg = datasets::parse_stg(
        "4-rand0.stg",
        "4\n0 0 0\n1 2 1 0\n2 2 1 0\n3 3 1 1\n4 1 1 2\n5 0 2 3 4\n",
    )
    .unwrap();
    let corpus = bench::Corpus {
        workflows: Vec::new(),
        stg: vec![("4/rand0.stg".into(), stg)],
        optima: datasets::parse_optima("o.csv", "4/rand0.stg,2,5\n").unwrap(),
        nx: Vec::new(),
    };
    let report = bench::run(&corpus, &bench::Options::default()).unwrap();
    assert_eq!(report.cases.len(), 1);
    assert_eq!(report.cases[0].clairvoyant_ms, 5000);
    assert!(bench::table(&report).contains("| stg 4-rand0 | 4 | 2 proc:1 | 5s opt | 1.000 |"));
}

#[test]
fn the_simulator_drives_the_coordinators_scheduler() {
    // Driving `Scheduler` by hand, as the coordinator does, hands out the same leases in the
    // same order as the simulation: there is one scheduling implementation.
    let mut tasks: Vec<TaskSpec> = (0..6).map(|i| task(&format!("p{i}:t"), &[])).collect();
    tasks.push(task("z:t", &["p0:t", "p5:t"]));
    for (i, t) in tasks.iter_mut().enumerate() {
        t.estimate = Some(secs(1 + (i as u64 * 7) % 5));
    }
    let truth: HashMap<String, Duration> = tasks.iter().map(|t| (t.id.clone(), secs(3))).collect();
    let o = sim(
        &tasks,
        &truth,
        &RuleSet::default(),
        "2 linux:2",
        Policy::CriticalPath,
    );

    let forever = secs(1 << 30);
    let mut s = Scheduler::new(Config {
        lease_timeout: forever,
        reconnect_grace: forever,
        ..Config::default()
    });
    let z = Duration::ZERO;
    let spec = RunSpec {
        ci_execution_id: "simulation".into(),
        ..RunSpec::default()
    };
    s.start_run(z, "simulation".into(), spec).unwrap();
    for n in 1..=2 {
        s.agent_connected(
            z,
            Hello {
                name: format!("linux-{n}"),
                instance_id: "sim".into(),
                launch_template: "linux".into(),
                slots: 2,
                ..Hello::default()
            },
        )
        .unwrap();
    }
    s.submit(z, "simulation", tasks.clone()).unwrap();
    let first: Vec<String> = s
        .take_actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Lease { grant, .. } => Some(grant.task_id),
            _ => None,
        })
        .collect();
    let simulated: Vec<String> = o.schedule[..4].iter().map(|p| p.task.clone()).collect();
    assert_eq!(first, simulated);
    assert_eq!(o.makespan, secs(6));
}

#[test]
fn given_the_choice_work_goes_to_an_agent_that_holds_the_repository() {
    let tasks = vec![task("a:build", &[])];
    let durations: HashMap<String, Duration> = [("a:build".to_string(), secs(10))].into();
    let fleet = FleetSpec::parse("2 linux:1").unwrap();
    let run = |warm_agents| {
        simulate(&Setup {
            tasks: &tasks,
            durations: &durations,
            rules: &RuleSet::default(),
            fleet: &fleet,
            policy: Policy::CriticalPath,
            estimates: None,
            cold_start: Some(ColdStart {
                penalty: secs(60),
                warm_agents,
            }),
        })
        .unwrap()
    };
    // The second agent holds the repository: it gets the task, though the first is
    // listed first, and nothing is prepared.
    let warm = run(1);
    assert_eq!(warm.schedule[0].agent, warm.agents[1].name);
    assert_eq!((warm.cold_starts, warm.makespan), (0, secs(10)));
    let cold = run(0);
    assert_eq!((cold.cold_starts, cold.makespan), (1, secs(70)));
}
