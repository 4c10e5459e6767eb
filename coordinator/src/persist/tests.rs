use std::time::Duration;

use drover_scheduler::state::{
    AgentId, Config, Event, Held, Hello, LeaseGrant, Reply, RunRef, RunSpec, TaskResult, TaskStatus,
};

use super::*;
use crate::convert;

use crate::test_support::TempDir;

fn run_spec(req: pb::StartRunRequest) -> Result<RunSpec, String> {
    RunSpec::from_request(&convert::run_request(req)).map_err(|e| e.to_string())
}

fn open(dir: &TempDir) -> (Store, Loaded) {
    Store::open(&dir.0, run_spec, None).unwrap()
}

/// One event through a scheduler: its reply (which must be a success) and its actions.
fn send(sched: &mut Scheduler, now: Duration, event: Event) -> (Reply, Vec<Action>) {
    let outcome = sched.handle(now, event);
    (
        outcome.reply.expect("the event is accepted"),
        outcome.actions,
    )
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
    pending: Vec<Action>,
}

impl Owner {
    fn new(store: Store) -> Owner {
        Owner {
            sched: Scheduler::new(Config::default()),
            store,
            seq: HashMap::new(),
            pending: Vec::new(),
        }
    }

    fn handle(&mut self, now: Duration, event: Event) -> Reply {
        let (reply, actions) = send(&mut self.sched, now, event);
        self.pending.extend(actions);
        reply
    }

    /// Opens a run and notes it as the actor does.
    fn start(&mut self, req: &pb::StartRunRequest) -> String {
        let spec = run_spec(req.clone()).unwrap();
        let Reply::RunStarted { run_id, .. } =
            self.handle(ms(0), Event::StartRun { spec, unix_ms: 0 })
        else {
            panic!("not a run");
        };
        self.store.run_started(&run_id, req, 0);
        run_id
    }

    fn submit(&mut self, run: &str, tasks: &[TaskSpec]) -> u64 {
        let event = Event::Submit {
            run: RunRef::Id(run.into()),
            tasks: tasks.to_vec(),
        };
        let version = self.store.submission_version();
        let Reply::Submitted { submission, .. } = self.handle(ms(0), event) else {
            panic!("not a submission");
        };
        self.store
            .submitted(run, submission, &super::encode_tasks(tasks), version);
        submission
    }

    fn complete(&mut self, now: Duration, run: &str) {
        self.handle(
            now,
            Event::Complete {
                run: RunRef::Id(run.into()),
            },
        );
        self.store.completed(run);
    }

    fn connect(&mut self, hello: Hello) -> AgentId {
        let Reply::Agent(id) = self.handle(ms(0), Event::Hello(hello)) else {
            panic!("not an agent");
        };
        self.store.agent(&self.sched.agent_record(id).unwrap());
        id
    }

    fn finish(&mut self, now: Duration, agent: AgentId, g: &LeaseGrant) {
        let event = Event::Finished {
            agent,
            lease: g.lease,
            token: g.token,
            result: TaskResult::success(ms(1)),
        };
        self.handle(now, event);
    }

    fn collect(&mut self) -> Vec<Action> {
        let actions = std::mem::take(&mut self.pending);
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

fn grants(actions: Vec<Action>) -> Vec<(AgentId, LeaseGrant)> {
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
    let dir = TempDir::new("store");
    let (store, loaded) = open(&dir);
    assert!(loaded.restore.steps.is_empty());
    let mut o = Owner::new(store);
    let req = request();
    let run = o.start(&req);
    let graph = vec![
        TaskSpec::new("a", "true"),
        TaskSpec::new("b", "true").depends_on(["a"]),
        TaskSpec::new("c", "true").depends_on(["a"]),
    ];
    o.submit(&run, &graph);
    o.collect();
    let hello = Hello {
        name: "one".into(),
        instance_id: "i-1".into(),
        launch_template: "linux".into(),
        slots: 2,
        ..Hello::default()
    };
    let one = o.connect(hello.clone());
    let a = grants(o.collect()).remove(0).1;
    o.finish(ms(10), one, &a);
    let running = grants(o.collect());
    assert_eq!(running.len(), 2);
    o.complete(ms(20), &run);
    o.collect();
    o.store.commit(&o.sched).unwrap();
    // Noted but never committed: lost, as in a crash.
    let version = o.store.submission_version();
    o.store.submitted(
        &run,
        2,
        &super::encode_tasks(&[TaskSpec::new("d", "true")]),
        version,
    );
    drop(o);

    let (_store, loaded) = open(&dir);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    assert_eq!(loaded.restore.counters.next_run, 2);
    let events = &loaded.logs[&run];
    assert_eq!(
        events.iter().map(|(e, _)| e.seq).collect::<Vec<_>>(),
        (1..=events.len() as u64).collect::<Vec<_>>()
    );
    let mut sched = Scheduler::new(Config::default());
    let report = sched.restore(ms(0), loaded.restore);
    assert_eq!((report.runs, report.tasks_ended, report.leases), (1, 1, 2));
    let view = sched.run_view(&run).unwrap();
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
    let (again, _) = send(&mut sched, ms(100), Event::Hello(Hello { held, ..hello }));
    assert_eq!(again, Reply::Agent(one), "same agent id after the restart");
    for (_, g) in &running {
        let event = Event::Finished {
            agent: one,
            lease: g.lease,
            token: g.token,
            result: TaskResult::success(ms(5)),
        };
        let (_, actions) = send(&mut sched, ms(200), event);
        assert!(!actions.iter().any(|a| matches!(a, Action::Refused { .. })));
    }
    let view = sched.run_view(&run).unwrap();
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
    let dir = TempDir::new("store");
    let _first = open(&dir);
    let second = Store::open(&dir.0, run_spec, None);
    let Err(e) = second else {
        panic!("opened twice")
    };
    let msg = e.to_string();
    assert!(msg.contains(FILE), "{msg}");
}

/// Opens a run, runs its two tasks on `agent` and ends it; the store notes it ended at
/// `ended_at`. Returns the run's id.
fn finished_run(o: &mut Owner, agent: AgentId, exec: &str, ended_at: u64) -> String {
    let req = pb::StartRunRequest {
        ci_execution_id: format!("exec-{exec}"),
        ..Default::default()
    };
    let id = o.start(&req);
    let graph = vec![
        TaskSpec::new("a", "true"),
        TaskSpec::new("b", "true").depends_on(["a"]),
    ];
    o.submit(&id, &graph);
    for _ in 0..2 {
        let (_, g) = grants(o.collect()).remove(0);
        o.finish(ms(1), agent, &g);
    }
    o.complete(ms(2), &id);
    o.collect();
    assert_eq!(o.sched.run_view(&id).unwrap().state, "succeeded");
    o.store.run_ended(&id, ended_at);
    o.store.commit(&o.sched).unwrap();
    id
}

/// Rows of one run in every run-keyed table: runs, run_requests, submissions, tasks, events.
fn rows_of(store: &Store, run: &str) -> [usize; 5] {
    let txn = store.db.as_ref().unwrap().begin_read().unwrap();
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

fn owner_with_agent(store: Store) -> (Owner, AgentId) {
    let mut o = Owner::new(store);
    let hello = Hello {
        name: "one".into(),
        instance_id: "i-1".into(),
        launch_template: "linux".into(),
        slots: 1,
        ..Hello::default()
    };
    let agent = o.connect(hello);
    (o, agent)
}

/// A task leased while its submission is taken in (an agent was waiting) is noted in the same
/// batch as the submission, as the actor notes it: reopened before the task changes again,
/// the store gives back its lease, not a task of a submission it has not replayed yet.
#[test]
fn a_task_leased_as_its_graph_comes_in_keeps_its_lease_across_a_restart() {
    let dir = TempDir::new("store");
    let (store, _) = open(&dir);
    let (mut o, agent) = owner_with_agent(store);
    let run = o.start(&request());
    let graph = [TaskSpec::new("a", "true")];
    // As the actor does: the submission's version first, then the scheduler takes the
    // graph in (leasing `a` to the waiting agent), its actions noted, then the submission.
    let version = o.store.submission_version();
    let event = Event::Submit {
        run: RunRef::Id(run.clone()),
        tasks: graph.to_vec(),
    };
    let Reply::Submitted { submission, .. } = o.handle(ms(0), event) else {
        panic!("not a submission");
    };
    let leased = grants(o.collect());
    assert_eq!(leased.len(), 1, "`a` goes to the waiting agent at once");
    o.store
        .submitted(&run, submission, &super::encode_tasks(&graph), version);
    o.store.commit(&o.sched).unwrap();
    drop(o);

    let (_store, loaded) = open(&dir);
    let mut sched = Scheduler::new(Config::default());
    let report = sched.restore(ms(0), loaded.restore);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(report.leases, 1);
    let record = sched.task_record(&run, "a").expect("the task is back");
    let lease = record.lease.expect("under its lease");
    assert_eq!((lease.lease, lease.agent), (leased[0].1.lease, agent));
}

#[test]
fn forgetting_a_run_deletes_every_row_of_it_and_no_row_of_another() {
    let dir = TempDir::new("store");
    let (store, _) = open(&dir);
    let (mut o, agent) = owner_with_agent(store);
    // The first run's id is a prefix of the tenth's (`run-0-1`, `run-0-10`): the range deletes
    // must stop at the run's own keys.
    let ids: Vec<String> = (0..10)
        .map(|n| finished_run(&mut o, agent, &n.to_string(), 1_000))
        .collect();
    let (first, tenth, other) = (ids[0].clone(), ids[9].clone(), ids[4].clone());
    assert!(tenth.starts_with(&first), "{first} {tenth}");
    let kept = rows_of(&o.store, &tenth);
    assert_eq!(
        rows_of(&o.store, &first),
        kept,
        "both runs have the same rows"
    );
    assert!(kept.iter().all(|&n| n > 0), "{kept:?}");
    assert_eq!(o.store.ended_before(1_001).len(), 10);
    assert!(o.store.ended_before(1_000).is_empty());

    o.handle(
        ms(3),
        Event::Forget {
            run_id: first.clone(),
        },
    );
    o.store.forget(&first);
    o.store.commit(&o.sched).unwrap();

    assert_eq!(rows_of(&o.store, &first), [0; 5]);
    assert_eq!(rows_of(&o.store, &tenth), kept);
    assert_eq!(rows_of(&o.store, &other), kept);
    assert_eq!(o.store.ended_before(u64::MAX).len(), 9);
    assert!(!o.store.ended_before(u64::MAX).contains(&first));
    drop(o);

    let (_store, loaded) = open(&dir);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    assert!(!loaded.logs.contains_key(&first));
    let mut sched = Scheduler::new(Config::default());
    let report = sched.restore(ms(0), loaded.restore);
    assert!(report.skipped.is_empty(), "{report:?}");
    assert_eq!(report.runs, 9);
    assert!(
        sched.run_view(&first).is_none(),
        "the restart does not bring it back"
    );
    assert_eq!(sched.run_view(&tenth).unwrap().state, "succeeded");
}

#[test]
fn opening_deletes_the_runs_that_ended_before_the_cutoff() {
    let dir = TempDir::new("store");
    let (store, _) = open(&dir);
    let (mut o, agent) = owner_with_agent(store);
    let old = finished_run(&mut o, agent, "old", 1_000);
    let new = finished_run(&mut o, agent, "new", 5_000);
    // An active run is never forgotten, however old.
    let req = pb::StartRunRequest {
        ci_execution_id: "exec-active".into(),
        ..Default::default()
    };
    let active = o.start(&req);
    o.store.commit(&o.sched).unwrap();
    drop(o);

    let cutoff = Some(3_000);
    let (store, loaded) = Store::open(&dir.0, run_spec, cutoff).unwrap();
    assert_eq!(loaded.forgotten, std::slice::from_ref(&old));
    assert_eq!(rows_of(&store, &old), [0; 5]);
    assert!(!loaded.logs.contains_key(&old));
    let mut sched = Scheduler::new(Config::default());
    let report = sched.restore(ms(0), loaded.restore);
    assert!(report.skipped.is_empty(), "{report:?}");
    assert!(sched.run_view(&old).is_none());
    assert_eq!(sched.run_view(&new).unwrap().state, "succeeded");
    assert_eq!(sched.run_view(&active).unwrap().state, "running");
    assert_eq!(store.ended_before(u64::MAX), std::slice::from_ref(&new));
    drop(store);

    let (_store, loaded) = open(&dir);
    assert!(
        loaded.forgotten.is_empty(),
        "without a cutoff nothing is deleted"
    );
    let mut sched = Scheduler::new(Config::default());
    sched.restore(ms(0), loaded.restore);
    assert!(sched.run_view(&old).is_none(), "still gone");
    assert_eq!(sched.run_summaries().len(), 2);
}

#[test]
fn a_submission_encoded_beforehand_is_the_row_serde_would_write() {
    let tasks = vec![
        TaskSpec::new("a:build", "true"),
        TaskSpec::new("b:test", "echo \"}\""),
    ];
    let dir = TempDir::new("store");
    let (mut store, _) = open(&dir);
    let version = store.submission_version();
    store.submitted("run-1", 1, &super::encode_tasks(&tasks), version);
    let (_, _, bytes) = store.batch.submissions.last().expect("noted").clone();
    let row: super::rows::SubmissionRow = serde_json::from_slice(&bytes).expect("a row");
    assert_eq!(row.tasks, tasks);
    let expected = super::rows::SubmissionRow {
        version: row.version,
        tasks,
    };
    assert_eq!(bytes, serde_json::to_vec(&expected).unwrap());
}
