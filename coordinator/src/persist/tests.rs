use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use drover_scheduler::state::{Config, Held, Hello, TaskResult, TaskStatus};

use super::*;
use crate::actor::run_spec;

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "drover-store-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open(dir: &TempDir) -> (Store, Loaded) {
    Store::open(&dir.0, |req| run_spec(req).map_err(|e| e.to_string()), None).unwrap()
}

fn request() -> pb::StartRunRequest {
    pb::StartRunRequest {
        ci_execution_id: "exec-1".into(),
        retries: 1,
        ..Default::default()
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Drives a scheduler the way the actor does: every action noted, events numbered and stored.
struct Owner {
    sched: Scheduler,
    store: Store,
    seq: HashMap<String, u64>,
}

impl Owner {
    fn collect(&mut self) -> Vec<Action> {
        let actions = self.sched.take_actions();
        self.store.note(&actions);
        let mut rest = Vec::new();
        for a in actions {
            match a {
                Action::Run { run_id, .. } => {
                    let seq = self.seq.entry(run_id.clone()).or_default();
                    *seq += 1;
                    let event = pb::RunEvent {
                        seq: *seq,
                        ..Default::default()
                    };
                    self.store.event(&run_id, &event, &[1]);
                }
                other => rest.push(other),
            }
        }
        rest
    }
}

fn grants(
    actions: Vec<Action>,
) -> Vec<(
    drover_scheduler::state::AgentId,
    drover_scheduler::state::LeaseGrant,
)> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Lease { agent, grant } => Some((agent, grant)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_reopened_store_gives_back_runs_results_leases_and_numbered_events() {
    let dir = TempDir::new();
    let (store, loaded) = open(&dir);
    assert!(loaded.restore.steps.is_empty());
    let mut o = Owner {
        sched: Scheduler::new(Config::default()),
        store,
        seq: HashMap::new(),
    };
    let req = request();
    let spec = run_spec(req.clone()).unwrap();
    o.sched.start_run(ms(0), "run-1".into(), spec).unwrap();
    o.store.run_started("run-1", &req, 2);
    let graph = vec![
        TaskSpec::new("a", "true"),
        TaskSpec::new("b", "true").depends_on(["a"]),
        TaskSpec::new("c", "true").depends_on(["a"]),
    ];
    let n = o.sched.submit(ms(0), "run-1", graph.clone()).unwrap();
    o.store.submitted("run-1", n, &graph);
    o.collect();
    let hello = Hello {
        name: "one".into(),
        instance_id: "i-1".into(),
        launch_template: "linux".into(),
        slots: 2,
        ..Hello::default()
    };
    let one = o.sched.agent_connected(ms(0), hello.clone()).unwrap();
    o.store.agent(&o.sched.agent_record(one).unwrap());
    let a = grants(o.collect()).remove(0).1;
    o.sched
        .task_finished(ms(10), one, a.lease, a.token, TaskResult::success(ms(10)))
        .unwrap();
    let running = grants(o.collect());
    assert_eq!(running.len(), 2);
    o.sched.complete_run(ms(20), "run-1").unwrap();
    o.store.completed("run-1");
    o.collect();
    o.store.commit(&o.sched).unwrap();
    // Noted but never committed: lost, as in a crash.
    o.store.submitted("run-1", 2, &[TaskSpec::new("d", "true")]);
    drop(o);

    let (_store, loaded) = open(&dir);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    assert_eq!(loaded.next_run, 2);
    let events = &loaded.logs["run-1"];
    assert_eq!(
        events.iter().map(|(e, _)| e.seq).collect::<Vec<_>>(),
        (1..=events.len() as u64).collect::<Vec<_>>()
    );
    let mut sched = Scheduler::new(Config::default());
    let report = sched.restore(ms(0), loaded.restore);
    assert_eq!((report.runs, report.tasks_ended, report.leases), (1, 1, 2));
    let view = sched.run_view("run-1").unwrap();
    assert_eq!(
        view.tasks.len(),
        3,
        "the uncommitted submission is not there"
    );
    assert_eq!(view.progress.succeeded, 1);
    assert_eq!(view.progress.running, 2);

    // The agent comes back with both leases and finishes them: the run completes.
    let held = running
        .iter()
        .map(|(_, g)| Held {
            lease: g.lease,
            token: g.token,
        })
        .collect();
    let again = sched
        .agent_connected(ms(100), Hello { held, ..hello })
        .unwrap();
    assert_eq!(again, one, "same agent id after the restart");
    for (_, g) in &running {
        sched
            .task_finished(ms(200), one, g.lease, g.token, TaskResult::success(ms(5)))
            .unwrap();
    }
    let view = sched.run_view("run-1").unwrap();
    assert_eq!(view.state, "succeeded");
    assert!(
        view.tasks
            .iter()
            .all(|t| t.status == TaskStatus::Succeeded && t.attempts == 1),
        "{view:?}"
    );
}

#[test]
fn a_second_coordinator_on_the_same_data_dir_is_refused_by_name() {
    let dir = TempDir::new();
    let _first = open(&dir);
    let second = Store::open(&dir.0, |req| run_spec(req).map_err(|e| e.to_string()), None);
    let Err(e) = second else {
        panic!("opened twice")
    };
    let msg = e.to_string();
    assert!(msg.contains(FILE), "{msg}");
}

/// Opens a run, runs its two tasks on `agent` and ends it; the store notes it ended at `ended_at`.
fn finished_run(o: &mut Owner, agent: drover_scheduler::state::AgentId, id: &str, ended_at: u64) {
    let req = pb::StartRunRequest {
        ci_execution_id: format!("exec-{id}"),
        ..Default::default()
    };
    o.sched
        .start_run(ms(0), id.into(), run_spec(req.clone()).unwrap())
        .unwrap();
    o.store.run_started(id, &req, 1);
    let graph = vec![
        TaskSpec::new("a", "true"),
        TaskSpec::new("b", "true").depends_on(["a"]),
    ];
    let n = o.sched.submit(ms(0), id, graph.clone()).unwrap();
    o.store.submitted(id, n, &graph);
    for _ in 0..2 {
        let (_, g) = grants(o.collect()).remove(0);
        o.sched
            .task_finished(ms(1), agent, g.lease, g.token, TaskResult::success(ms(1)))
            .unwrap();
    }
    o.sched.complete_run(ms(2), id).unwrap();
    o.store.completed(id);
    o.collect();
    assert_eq!(o.sched.run_view(id).unwrap().state, "succeeded");
    o.store.run_ended(id, ended_at);
    o.store.commit(&o.sched).unwrap();
}

/// Rows of one run in every run-keyed table: runs, run_requests, submissions, tasks, events.
fn rows_of(store: &Store, run: &str) -> [usize; 5] {
    let txn = store.db.begin_read().unwrap();
    let count_str = |t: TableDefinition<&str, &[u8]>| {
        let table = txn.open_table(t).unwrap();
        table
            .iter()
            .unwrap()
            .filter(|e| e.as_ref().unwrap().0.value() == run)
            .count()
    };
    let count_seq = |t: TableDefinition<(&str, u64), &[u8]>| {
        let table = txn.open_table(t).unwrap();
        table
            .iter()
            .unwrap()
            .filter(|e| e.as_ref().unwrap().0.value().0 == run)
            .count()
    };
    let tasks = txn.open_table(TASKS).unwrap();
    let tasks = tasks
        .iter()
        .unwrap()
        .filter(|e| e.as_ref().unwrap().0.value().0 == run)
        .count();
    [
        count_str(RUNS),
        count_str(RUN_REQUESTS),
        count_seq(SUBMISSIONS),
        tasks,
        count_seq(EVENTS),
    ]
}

fn owner_with_agent(store: Store) -> (Owner, drover_scheduler::state::AgentId) {
    let mut o = Owner {
        sched: Scheduler::new(Config::default()),
        store,
        seq: HashMap::new(),
    };
    let hello = Hello {
        name: "one".into(),
        instance_id: "i-1".into(),
        launch_template: "linux".into(),
        slots: 1,
        ..Hello::default()
    };
    let agent = o.sched.agent_connected(ms(0), hello).unwrap();
    o.store.agent(&o.sched.agent_record(agent).unwrap());
    (o, agent)
}

#[test]
fn forgetting_a_run_deletes_every_row_of_it_and_no_row_of_another() {
    let dir = TempDir::new();
    let (store, _) = open(&dir);
    let (mut o, agent) = owner_with_agent(store);
    // `run-1` is a prefix of `run-10`: the range deletes must stop at the run's own keys.
    for id in ["run-1", "run-10", "run-0"] {
        finished_run(&mut o, agent, id, 1_000);
    }
    let kept = rows_of(&o.store, "run-10");
    assert_eq!(
        rows_of(&o.store, "run-1"),
        kept,
        "both runs have the same rows"
    );
    assert!(kept.iter().all(|&n| n > 0), "{kept:?}");
    assert_eq!(o.store.ended_before(1_001), ["run-0", "run-1", "run-10"]);
    assert!(o.store.ended_before(1_000).is_empty());

    o.sched.forget_run("run-1").unwrap();
    o.store.forget("run-1");
    o.store.commit(&o.sched).unwrap();

    assert_eq!(rows_of(&o.store, "run-1"), [0; 5]);
    assert_eq!(rows_of(&o.store, "run-10"), kept);
    assert_eq!(rows_of(&o.store, "run-0"), kept);
    assert_eq!(o.store.ended_before(u64::MAX), ["run-0", "run-10"]);
    drop(o);

    let (_store, loaded) = open(&dir);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    assert!(!loaded.logs.contains_key("run-1"));
    let mut sched = Scheduler::new(Config::default());
    let report = sched.restore(ms(0), loaded.restore);
    assert!(report.skipped.is_empty(), "{report:?}");
    assert_eq!(report.runs, 2);
    assert!(
        sched.run_view("run-1").is_none(),
        "the restart does not bring it back"
    );
    assert_eq!(sched.run_view("run-10").unwrap().state, "succeeded");
}

#[test]
fn opening_deletes_the_runs_that_ended_before_the_cutoff() {
    let dir = TempDir::new();
    let (store, _) = open(&dir);
    let (mut o, agent) = owner_with_agent(store);
    finished_run(&mut o, agent, "run-old", 1_000);
    finished_run(&mut o, agent, "run-new", 5_000);
    // An active run is never forgotten, however old.
    let req = pb::StartRunRequest {
        ci_execution_id: "exec-active".into(),
        ..Default::default()
    };
    o.sched
        .start_run(ms(0), "run-active".into(), run_spec(req.clone()).unwrap())
        .unwrap();
    o.store.run_started("run-active", &req, 1);
    o.store.commit(&o.sched).unwrap();
    drop(o);

    let cutoff = Some(3_000);
    let (store, loaded) = Store::open(
        &dir.0,
        |req| run_spec(req).map_err(|e| e.to_string()),
        cutoff,
    )
    .unwrap();
    assert_eq!(loaded.forgotten, ["run-old"]);
    assert_eq!(rows_of(&store, "run-old"), [0; 5]);
    assert!(!loaded.logs.contains_key("run-old"));
    let mut sched = Scheduler::new(Config::default());
    let report = sched.restore(ms(0), loaded.restore);
    assert!(report.skipped.is_empty(), "{report:?}");
    assert!(sched.run_view("run-old").is_none());
    assert_eq!(sched.run_view("run-new").unwrap().state, "succeeded");
    assert_eq!(sched.run_view("run-active").unwrap().state, "running");
    assert_eq!(store.ended_before(u64::MAX), ["run-new"]);
    drop(store);

    let (_store, loaded) = open(&dir);
    assert!(
        loaded.forgotten.is_empty(),
        "without a cutoff nothing is deleted"
    );
    let mut sched = Scheduler::new(Config::default());
    sched.restore(ms(0), loaded.restore);
    assert!(sched.run_view("run-old").is_none(), "still gone");
    assert_eq!(sched.run_summaries().len(), 2);
}
