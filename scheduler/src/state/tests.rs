//! Scheduler tests with a fake clock: every timing rule without sleeping.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::rules::RuleSet;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A scheduler with a hand-moved clock and helpers to read its actions.
struct Harness {
    s: Scheduler,
    now: Duration,
    leases: Vec<(AgentId, LeaseGrant)>,
    events: Vec<RunEvent>,
    cancels: Vec<(AgentId, LeaseId)>,
    stops: Vec<AgentId>,
}

impl Harness {
    fn new() -> Self {
        Self::with(Config::default())
    }

    fn with(config: Config) -> Self {
        Harness {
            s: Scheduler::new(config),
            now: Duration::ZERO,
            leases: vec![],
            events: vec![],
            cancels: vec![],
            stops: vec![],
        }
    }

    fn drain(&mut self) {
        for a in self.s.take_actions() {
            match a {
                Action::Lease { agent, grant } => self.leases.push((agent, grant)),
                Action::Run { event, .. } => self.events.push(event),
                Action::Cancel { agent, lease, .. } => self.cancels.push((agent, lease)),
                Action::Stop { agent, .. } => self.stops.push(agent),
                _ => {}
            }
        }
    }

    fn run(&mut self, spec: RunSpec) -> String {
        let (id, _) = self
            .s
            .start_run(self.now, format!("run-{}", spec.ci_execution_id), spec)
            .unwrap();
        self.drain();
        id
    }

    fn simple_run(&mut self, exec: &str) -> String {
        self.run(RunSpec {
            ci_execution_id: exec.into(),
            ..RunSpec::default()
        })
    }

    fn agent(&mut self, name: &str, template: &str, slots: u32, exec: Option<&str>) -> AgentId {
        self.connect(hello(name, template, slots, exec, vec![]))
    }

    /// The same agent process (`NAME-1`, `linux`, one slot) connecting again with its leases.
    fn reconnect(&mut self, name: &str, held: Vec<Held>) -> AgentId {
        self.connect(hello(name, "linux", 1, None, held))
    }

    fn connect(&mut self, hello: Hello) -> AgentId {
        let id = self.s.agent_connected(self.now, hello).unwrap();
        self.drain();
        id
    }

    fn submit(&mut self, run: &str, tasks: Vec<TaskSpec>) -> u64 {
        let s = self.s.submit(self.now, run, tasks).unwrap();
        self.drain();
        s
    }

    /// Takes the leases handed out so far.
    fn take_leases(&mut self) -> Vec<(AgentId, LeaseGrant)> {
        std::mem::take(&mut self.leases)
    }

    fn finish(&mut self, lease: &(AgentId, LeaseGrant), code: i32) -> Result<(), Refused> {
        let r = self.s.task_finished(
            self.now,
            lease.0,
            lease.1.lease,
            lease.1.token,
            TaskResult::exit(code, ms(100)),
        );
        self.drain();
        r
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.s.tick(self.now);
        self.drain();
    }

    fn finished(&self, task: &str) -> Vec<&TaskFinished> {
        self.events
            .iter()
            .filter_map(|e| match e {
                RunEvent::TaskFinished(f) if f.task == task => Some(f),
                _ => None,
            })
            .collect()
    }

    fn final_status(&self, task: &str) -> Option<TaskStatus> {
        self.finished(task)
            .into_iter()
            .rfind(|f| !f.retrying)
            .map(|f| f.status)
    }
}

/// What an agent process named `name` (instance `NAME-1`) says when it connects.
fn hello(name: &str, template: &str, slots: u32, exec: Option<&str>, held: Vec<Held>) -> Hello {
    Hello {
        name: name.into(),
        instance_id: format!("{name}-1"),
        launch_template: template.into(),
        slots,
        ci_execution_id: exec.map(str::to_string),
        held,
        ..Hello::default()
    }
}

fn held(lease: &(AgentId, LeaseGrant)) -> Held {
    Held {
        lease: lease.1.lease,
        token: lease.1.token,
    }
}

fn t(id: &str, deps: &[&str]) -> TaskSpec {
    TaskSpec::new(id, format!("run {id}")).depends_on(deps.iter().copied())
}

fn ids(leases: &[(AgentId, LeaseGrant)]) -> Vec<&str> {
    let mut v: Vec<&str> = leases.iter().map(|(_, g)| g.task_id.as_str()).collect();
    v.sort();
    v
}

#[test]
fn dependencies_run_in_order() {
    let mut h = Harness::new();
    let run = h.simple_run("ci-1");
    h.agent("a1", "linux", 4, None);
    h.submit(
        &run,
        vec![
            t("app:build", &["lib:build"]),
            t("lib:build", &[]),
            t("app:test", &["app:build"]),
        ],
    );
    let first = h.take_leases();
    assert_eq!(ids(&first), ["lib:build"]);
    h.finish(&first[0], 0).unwrap();
    let second = h.take_leases();
    assert_eq!(ids(&second), ["app:build"]);
    h.finish(&second[0], 0).unwrap();
    let third = h.take_leases();
    assert_eq!(ids(&third), ["app:test"]);
    h.finish(&third[0], 0).unwrap();
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, RunEvent::SubmissionDone { success: true, .. }))
    );
}

#[test]
fn an_agent_never_exceeds_its_slots_and_runs_one_non_cacheable_task_at_a_time() {
    let mut h = Harness::new();
    let run = h.simple_run("ci-1");
    h.agent("a1", "linux", 3, None);
    let mut tasks: Vec<TaskSpec> = (0..5).map(|i| t(&format!("p{i}:build"), &[])).collect();
    for i in 0..3 {
        let mut e = t(&format!("p{i}:e2e"), &[]);
        e.cache = false;
        e.estimate = Some(Duration::from_secs(1000)); // ranked first
        tasks.push(e);
    }
    h.submit(&run, tasks);
    let leases = h.take_leases();
    assert_eq!(leases.len(), 3);
    assert_eq!(
        leases
            .iter()
            .filter(|(_, g)| g.task_id.ends_with(":e2e"))
            .count(),
        1
    );
    let e2e = leases
        .iter()
        .find(|(_, g)| g.task_id.ends_with(":e2e"))
        .unwrap()
        .clone();
    h.finish(&e2e, 0).unwrap();
    let next = h.take_leases();
    assert_eq!(ids(&next).len(), 1);
    assert!(
        next[0].1.task_id.ends_with(":e2e"),
        "the next e2e takes the freed slot first"
    );
}

#[test]
fn a_failure_skips_dependents_and_names_the_cause() {
    let mut h = Harness::new();
    let run = h.simple_run("ci-1");
    h.agent("a1", "linux", 2, None);
    h.submit(
        &run,
        vec![
            t("lib:build", &[]),
            t("app:build", &["lib:build"]),
            t("app:e2e", &["app:build"]),
            t("other:lint", &[]),
        ],
    );
    let leases = h.take_leases();
    let lib = leases
        .iter()
        .find(|(_, g)| g.task_id == "lib:build")
        .unwrap()
        .clone();
    let lint = leases
        .iter()
        .find(|(_, g)| g.task_id == "other:lint")
        .unwrap()
        .clone();
    h.finish(&lib, 2).unwrap();
    h.finish(&lint, 0).unwrap();
    assert_eq!(h.final_status("lib:build"), Some(TaskStatus::Failed));
    assert_eq!(h.finished("lib:build")[0].reason, "exit code 2");
    for dependent in ["app:build", "app:e2e"] {
        let f = h.finished(dependent);
        assert_eq!(f.len(), 1, "{dependent} ends exactly once");
        assert_eq!(f[0].status, TaskStatus::Skipped);
        assert_eq!(f[0].reason, "dependency `lib:build` failed");
    }
    let done = h.events.iter().find_map(|e| match e {
        RunEvent::SubmissionDone { success, tasks, .. } => Some((*success, tasks.len())),
        _ => None,
    });
    assert_eq!(done, Some((false, 4)));
    assert!(h.take_leases().is_empty());
}

#[test]
fn work_spreads_over_agents_instead_of_filling_one() {
    let mut h = Harness::new();
    let run = h.simple_run("ci-1");
    let a1 = h.agent("a1", "linux", 2, None);
    let a2 = h.agent("a2", "linux", 2, None);
    h.submit(&run, vec![t("x:build", &[]), t("y:build", &[])]);
    let got = h.take_leases();
    let mut agents: Vec<AgentId> = got.iter().map(|(a, _)| *a).collect();
    agents.sort();
    assert_eq!(
        agents,
        vec![a1, a2],
        "one task on each idle agent, not two on the first"
    );
    // A freed slot on a busier agent loses to an idle one.
    h.finish(&got[0], 0).unwrap();
    h.submit(&run, vec![t("z:build", &[]), t("w:build", &[])]);
    let next = h.take_leases();
    assert_eq!(next.len(), 2);
    assert_ne!(next[0].0, next[1].0, "{next:?}");
}

#[test]
fn critical_path_goes_first() {
    let mut h = Harness::new();
    let run = h.simple_run("ci-1");
    let mut tasks = vec![t("short:build", &[])];
    tasks.push(t("long:a", &[]));
    tasks.push(t("long:b", &["long:a"]));
    tasks.push(t("long:c", &["long:b"]));
    h.submit(&run, tasks);
    h.agent("a1", "linux", 1, None);
    assert_eq!(ids(&h.take_leases()), ["long:a"]);
}

#[test]
fn fifo_policy_keeps_readiness_order() {
    let mut h = Harness::with(Config {
        policy: Policy::Fifo,
        ..Config::default()
    });
    let run = h.simple_run("ci-1");
    h.submit(
        &run,
        vec![
            t("short:build", &[]),
            t("long:a", &[]),
            t("long:b", &["long:a"]),
        ],
    );
    h.agent("a1", "linux", 1, None);
    assert_eq!(ids(&h.take_leases()), ["short:build"]);
}

#[test]
fn a_silent_agent_loses_its_lease_after_the_timeout_and_its_late_result_is_refused() {
    let mut h = Harness::new();
    let run = h.simple_run("ci-1");
    let a1 = h.agent("a1", "linux", 1, None);
    h.submit(&run, vec![t("x:build", &[])]);
    let first = h.take_leases();
    assert_eq!(first[0].0, a1);
    let a2 = h.agent("a2", "linux", 1, None);
    // a2 keeps heartbeating; a1 goes silent.
    for _ in 0..10 {
        h.now += ms(1000);
        h.s.heartbeat(h.now, a2, &[]);
        h.drain();
        h.s.tick(h.now);
        h.drain();
    }
    assert!(
        h.take_leases().is_empty(),
        "not revoked at exactly the lease timeout"
    );
    h.advance(ms(1));
    let second = h.take_leases();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].0, a2, "requeued on the other agent");
    assert_eq!(second[0].1.attempt, 2);
    assert!(h.events.iter().any(|e| matches!(e, RunEvent::TaskRequeued { reason, .. } if reason.contains("no heartbeat for 10s"))));
    assert_eq!(
        h.finish(&first[0], 0),
        Err(Refused::UnknownLease(first[0].1.lease))
    );
    h.finish(&second[0], 0).unwrap();
    assert_eq!(h.finished("x:build").len(), 1, "finished exactly once");
}

#[test]
fn a_reconnect_within_the_grace_period_keeps_the_lease() {
    let mut h = Harness::new();
    let run = h.simple_run("ci-1");
    let a1 = h.agent("a1", "linux", 1, None);
    h.submit(&run, vec![t("x:build", &[])]);
    let lease = h.take_leases().remove(0);
    h.s.agent_disconnected(h.now, a1);
    h.advance(ms(9_000));
    assert_eq!(h.reconnect("a1", vec![held(&lease)]), a1);
    h.advance(ms(5_000));
    assert!(h.cancels.is_empty());
    h.finish(&lease, 0).unwrap();
    assert_eq!(h.final_status("x:build"), Some(TaskStatus::Succeeded));
}

#[test]
fn a_disconnected_agent_that_stays_away_loses_its_leases_after_the_grace_period() {
    let mut h = Harness::new();
    let run = h.simple_run("ci-1");
    let a1 = h.agent("a1", "linux", 1, None);
    h.submit(&run, vec![t("x:build", &[])]);
    let lease = h.take_leases().remove(0);
    h.s.agent_disconnected(h.now, a1);
    h.advance(ms(10_000));
    assert!(
        h.events
            .iter()
            .all(|e| !matches!(e, RunEvent::TaskRequeued { .. }))
    );
    h.advance(ms(1));
    assert!(h.events.iter().any(|e| matches!(e, RunEvent::TaskRequeued { reason, .. } if reason.contains("did not come back"))));
    // The agent comes back too late: the old lease is refused and it gets the task anew.
    let again = h.reconnect("a1", vec![held(&lease)]);
    assert_eq!(h.cancels, vec![(again, lease.1.lease)]);
    let fresh = h.take_leases();
    assert_eq!(fresh.len(), 1);
    assert_ne!(fresh[0].1.token, lease.1.token);
}

#[test]
fn a_task_fails_after_losing_its_agent_three_times() {
    let mut h = Harness::new();
    let run = h.simple_run("ci-1");
    h.submit(&run, vec![t("x:build", &[]), t("x:test", &["x:build"])]);
    for n in 0..3 {
        let a = h.agent(&format!("a{n}"), "linux", 1, None);
        assert_eq!(h.take_leases().len(), 1);
        h.s.agent_disconnected(h.now, a);
        h.advance(ms(10_001));
    }
    let f = h.finished("x:build");
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].status, TaskStatus::Failed);
    assert!(
        f[0].reason.starts_with("agent lost 3 times"),
        "{}",
        f[0].reason
    );
    assert_eq!(h.final_status("x:test"), Some(TaskStatus::Skipped));
}

#[test]
fn retries_prefer_another_agent_and_report_flaky() {
    let mut h = Harness::new();
    let run = h.run(RunSpec {
        ci_execution_id: "ci-1".into(),
        retries: 1,
        ..RunSpec::default()
    });
    let a1 = h.agent("a1", "linux", 1, None);
    h.submit(&run, vec![t("x:test", &[])]);
    let first = h.take_leases().remove(0);
    assert_eq!(first.0, a1);
    let a2 = h.agent("a2", "linux", 1, None);
    h.finish(&first, 1).unwrap();
    assert!(h.finished("x:test")[0].retrying);
    let second = h.take_leases().remove(0);
    assert_eq!(second.0, a2, "the retry goes to the other agent");
    h.finish(&second, 0).unwrap();
    let last = h.finished("x:test").into_iter().last().unwrap().clone();
    assert_eq!(
        (last.status, last.flaky, last.attempt),
        (TaskStatus::Succeeded, true, 2)
    );
}

#[test]
fn retries_run_out() {
    let mut h = Harness::new();
    let run = h.run(RunSpec {
        ci_execution_id: "ci-1".into(),
        retries: 2,
        ..RunSpec::default()
    });
    h.agent("a1", "linux", 1, None);
    h.submit(&run, vec![t("x:test", &[])]);
    for _ in 0..3 {
        let l = h.take_leases().remove(0);
        h.finish(&l, 1).unwrap();
    }
    assert!(h.take_leases().is_empty());
    assert_eq!(h.final_status("x:test"), Some(TaskStatus::Failed));
    assert_eq!(h.finished("x:test").len(), 3);
}

#[test]
fn completing_an_empty_run_ends_it_and_stops_its_ci_agents_only() {
    let mut h = Harness::new();
    let run = h.simple_run("ci-1");
    let ci = h.agent("ci-agent", "linux", 1, Some("ci-1"));
    let other = h.agent("other-ci", "linux", 1, Some("ci-2"));
    let daemon = h.agent("daemon", "linux", 1, None);
    h.s.complete_run(h.now, &run).unwrap();
    h.drain();
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, RunEvent::RunDone { success: true, .. }))
    );
    assert_eq!(h.stops, vec![ci]);
    let _ = (other, daemon);
    // A CI agent of that execution that connects late is stopped at once.
    let late = h.agent("late", "linux", 1, Some("ci-1"));
    assert_eq!(h.stops, vec![ci, late]);
}

#[test]
fn the_run_waits_for_running_tasks_before_it_completes() {
    let mut h = Harness::new();
    let run = h.simple_run("ci-1");
    let ci = h.agent("ci-agent", "linux", 1, Some("ci-1"));
    h.submit(&run, vec![t("x:build", &[])]);
    let l = h.take_leases().remove(0);
    h.s.complete_run(h.now, &run).unwrap();
    h.drain();
    assert!(h.stops.is_empty());
    h.finish(&l, 0).unwrap();
    assert_eq!(h.stops, vec![ci]);
}

#[test]
fn stop_agents_after_ends_the_run_when_those_targets_are_done() {
    let mut h = Harness::new();
    let run = h.run(RunSpec {
        ci_execution_id: "ci-1".into(),
        stop_agents_after: vec!["e2e".into()],
        ..RunSpec::default()
    });
    let ci = h.agent("ci-agent", "linux", 2, Some("ci-1"));
    h.submit(&run, vec![t("app:build", &[])]);
    let l = h.take_leases().remove(0);
    h.finish(&l, 0).unwrap();
    assert!(h.stops.is_empty(), "no e2e task yet");
    h.submit(&run, vec![t("app:e2e", &["app:build"])]);
    let l = h.take_leases().remove(0);
    h.finish(&l, 0).unwrap();
    assert_eq!(h.stops, vec![ci]);
}

#[test]
fn ci_agents_serve_only_their_run_and_daemons_serve_all_in_turn() {
    let mut h = Harness::new();
    let r1 = h.simple_run("ci-1");
    let r2 = h.simple_run("ci-2");
    let ci1 = h.agent("ci1", "linux", 8, Some("ci-1"));
    h.submit(
        &r2,
        (0..4).map(|i| t(&format!("b{i}:build"), &[])).collect(),
    );
    assert!(
        h.take_leases().is_empty(),
        "a CI agent of ci-1 takes nothing of ci-2"
    );
    h.submit(
        &r1,
        (0..4).map(|i| t(&format!("a{i}:build"), &[])).collect(),
    );
    assert!(
        h.take_leases()
            .iter()
            .all(|(a, g)| *a == ci1 && g.run_id == r1)
    );
    let _daemon = h.agent("daemon", "linux", 2, None);
    let got = h.take_leases();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|(_, g)| g.run_id == r2));

    // Two runs sharing one daemon take turns.
    let mut h = Harness::new();
    let r1 = h.simple_run("ci-1");
    let r2 = h.simple_run("ci-2");
    h.submit(
        &r1,
        (0..4).map(|i| t(&format!("a{i}:build"), &[])).collect(),
    );
    h.submit(
        &r2,
        (0..4).map(|i| t(&format!("b{i}:build"), &[])).collect(),
    );
    h.agent("daemon", "linux", 4, None);
    let got = h.take_leases();
    assert_eq!(got.iter().filter(|(_, g)| g.run_id == r1).count(), 2);
    assert_eq!(got.iter().filter(|(_, g)| g.run_id == r2).count(), 2);
}

const RULES: &str = "assignment-rules:
  - targets:
      - e2e*
    run-on:
      - agent: linux-large
        parallelism: 1
  - targets:
      - build
    run-on:
      - agent: linux-medium
        parallelism: 2
      - agent: linux-large
";

#[test]
fn rules_send_tasks_to_their_templates_with_their_parallelism() {
    let mut h = Harness::new();
    let rules = RuleSet::parse("rules.yaml", RULES).unwrap();
    let run = h.run(RunSpec {
        ci_execution_id: "ci-1".into(),
        rules,
        ..RunSpec::default()
    });
    let medium = h.agent("m", "linux-medium", 4, None);
    let mut tasks: Vec<TaskSpec> = (0..4).map(|i| t(&format!("p{i}:build"), &[])).collect();
    tasks.extend((0..2).map(|i| t(&format!("p{i}:e2e-ci"), &[])));
    tasks.push(t("p0:lint", &[]));
    h.submit(&run, tasks);
    let got = h.take_leases();
    // Medium: at most 2 builds (rule parallelism), lint (no rule) may run too, no e2e.
    assert_eq!(
        got.iter()
            .filter(|(_, g)| g.task_id.ends_with(":build"))
            .count(),
        2
    );
    assert!(
        got.iter()
            .all(|(a, g)| *a == medium && !g.task_id.contains("e2e"))
    );
    assert_eq!(got.len(), 3);
    h.advance(ms(100));
    let waiting = h.events.iter().find_map(|e| match e {
        RunEvent::Waiting { tasks, reason, .. } => Some((tasks.clone(), reason.clone())),
        _ => None,
    });
    let (tasks, reason) = waiting.expect("the main job hears that e2e tasks wait");
    assert_eq!(tasks, ["p0:e2e-ci", "p1:e2e-ci"]);
    assert!(
        reason.contains("linux-large") && reason.contains("rule 1"),
        "{reason}"
    );
    let large = h.agent("l", "linux-large", 4, None);
    let got = h.take_leases();
    // Large: one e2e (parallelism 1) and the two remaining builds (no cap for large).
    assert!(got.iter().all(|(a, _)| *a == large));
    assert_eq!(ids(&got), ["p0:e2e-ci", "p2:build", "p3:build"]);
}

#[test]
fn a_heartbeat_without_a_granted_lease_heals_a_lost_message() {
    let mut h = Harness::new();
    let run = h.simple_run("ci-1");
    let a1 = h.agent("a1", "linux", 1, None);
    h.submit(&run, vec![t("x:build", &[])]);
    let lost = h.take_leases().remove(0);
    h.now += ms(1000);
    h.s.heartbeat(h.now, a1, &[]);
    h.drain();
    assert!(h.take_leases().is_empty(), "too early to call it lost");
    h.now += ms(1500);
    h.s.heartbeat(h.now, a1, &[]);
    h.drain();
    let again = h.take_leases();
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].1.lease, lost.1.lease);
    // And a lease the agent reports that the coordinator does not know is cancelled.
    assert_eq!(
        h.cancels,
        vec![(a1, lost.1.lease)],
        "the agent is told to drop the lost lease"
    );
    h.s.heartbeat(
        h.now,
        a1,
        &[Held {
            lease: LeaseId(999),
            token: 1,
        }],
    );
    h.drain();
    assert_eq!(h.cancels, vec![(a1, lost.1.lease), (a1, LeaseId(999))]);
}

#[test]
fn stop_on_failure_starts_nothing_new_and_ends_the_run_failed() {
    let mut h = Harness::new();
    let run = h.run(RunSpec {
        ci_execution_id: "ci-1".into(),
        stop_on_failure: true,
        ..RunSpec::default()
    });
    let ci = h.agent("a1", "linux", 2, Some("ci-1"));
    h.submit(
        &run,
        vec![
            t("a:test", &[]),
            t("b:test", &[]),
            t("c:test", &[]),
            t("d:build", &["a:test"]),
        ],
    );
    let got = h.take_leases();
    assert_eq!(got.len(), 2);
    h.finish(&got[0], 1).unwrap();
    assert!(
        h.take_leases().is_empty(),
        "nothing new starts after the failure"
    );
    assert!(h.stops.is_empty(), "the running task finishes first");
    h.finish(&got[1], 0).unwrap();
    assert_eq!(h.stops, vec![ci]);
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, RunEvent::RunDone { success: false, .. }))
    );
    let skipped: Vec<_> = h
        .events
        .iter()
        .filter(|e| matches!(e, RunEvent::TaskFinished(f) if f.status == TaskStatus::Skipped))
        .collect();
    assert_eq!(skipped.len(), 2);
}

#[test]
fn submissions_share_tasks_the_run_already_has() {
    let mut h = Harness::new();
    let run = h.simple_run("ci-1");
    h.agent("a1", "linux", 4, None);
    h.submit(&run, vec![t("lib:build", &[])]);
    let l = h.take_leases().remove(0);
    let s2 = h.submit(
        &run,
        vec![t("lib:build", &[]), t("app:build", &["lib:build"])],
    );
    assert!(h.take_leases().is_empty(), "lib:build is not run twice");
    h.finish(&l, 0).unwrap();
    let l2 = h.take_leases().remove(0);
    assert_eq!(l2.1.task_id, "app:build");
    h.finish(&l2, 0).unwrap();
    let done: Vec<u64> = h
        .events
        .iter()
        .filter_map(|e| match e {
            RunEvent::SubmissionDone { submission, .. } => Some(*submission),
            _ => None,
        })
        .collect();
    assert_eq!(done, vec![1, s2]);
}

#[test]
fn a_draining_agent_gets_nothing_new_and_hands_back_on_disconnect_without_charge() {
    let mut h = Harness::new();
    let run = h.simple_run("ci-1");
    let a1 = h.agent("a1", "linux", 1, None);
    h.submit(&run, vec![t("x:build", &[]), t("y:build", &[])]);
    let l = h.take_leases().remove(0);
    h.s.agent_draining(h.now, a1);
    h.finish(&l, 0).unwrap();
    assert!(h.take_leases().is_empty());
    let a2 = h.agent("a2", "linux", 1, None);
    let l2 = h.take_leases().remove(0);
    h.s.agent_draining(h.now, a2);
    h.s.agent_disconnected(h.now, a2);
    h.drain();
    let a3 = h.agent("a3", "linux", 1, None);
    let l3 = h.take_leases().remove(0);
    assert_eq!(
        (l3.0, l3.1.attempt),
        (a3, l2.1.attempt),
        "handed back without charging an attempt"
    );
}

// ---------------------------------------------------------------- properties

#[derive(Clone, Debug)]
enum Step {
    /// Finish the oldest running lease with this exit code.
    Finish(i32),
    /// Disconnect an agent (index mod agents).
    Drop(usize),
    /// Reconnect an agent.
    Back(usize),
    /// Let time pass.
    Wait(u64),
    /// Replay a result under an old lease.
    Replay,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => prop_oneof![Just(0), Just(0), Just(0), Just(1)].prop_map(Step::Finish),
        1 => (0usize..4).prop_map(Step::Drop),
        1 => (0usize..4).prop_map(Step::Back),
        2 => (1u64..12_000).prop_map(Step::Wait),
        1 => Just(Step::Replay),
    ]
}

fn dag() -> impl Strategy<Value = Vec<Vec<usize>>> {
    (2usize..25).prop_flat_map(|n| {
        proptest::collection::vec(
            proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
            n,
        )
        .prop_map(move |raw| {
            raw.iter()
                .enumerate()
                .map(|(i, deps)| {
                    let mut d: Vec<usize> = if i == 0 {
                        vec![]
                    } else {
                        deps.iter().map(|x| x.index(i)).collect()
                    };
                    d.sort_unstable();
                    d.dedup();
                    d
                })
                .collect()
        })
    })
}

/// Rules for the property test: e2e only on `large`, one at a time per agent; builds on
/// `small` (two at a time per agent) or `large` (as many as fit); tests anywhere.
const PROP_RULES: &str = "\
assignment-rules:
  - targets: [e2e]
    run-on:
      - agent: large
        parallelism: 1
  - targets: [build]
    run-on:
      - agent: small
        parallelism: 2
      - agent: large
";

/// Task `i`'s target: with rules, a mix the rules treat differently.
fn prop_target(i: usize, rules: bool) -> &'static str {
    match (rules, i % 3) {
        (false, _) | (true, 0) => "build",
        (true, 1) => "test",
        _ => "e2e",
    }
}

/// Agent `i`'s launch template: with rules, the first is `large` (someone may run e2e).
fn prop_template(i: usize, rules: bool) -> &'static str {
    match (rules, i % 2) {
        (false, _) => "linux",
        (true, 0) => "large",
        _ => "small",
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Whatever agents do: a task never runs before its dependencies succeeded; an agent never
    /// exceeds its slots or runs two non-cacheable tasks; under assignment rules a task runs
    /// only on a launch template its rule allows and never above the rule's parallelism on one
    /// agent; a refused (revoked) lease's result is never accepted; every task ends exactly
    /// once.
    #[test]
    fn invariants_hold(deps in dag(), slots in proptest::collection::vec(1u32..4, 1..4), steps in proptest::collection::vec(step(), 0..200), retries in 0u32..2, with_rules in any::<bool>()) {
        let mut h = Harness::new();
        let rules = if with_rules { RuleSet::parse("rules.yaml", PROP_RULES).unwrap() } else { RuleSet::default() };
        let run = h.run(RunSpec { ci_execution_id: "ci".into(), retries, rules: rules.clone(), ..RunSpec::default() });
        let mut agents: Vec<AgentId> = slots.iter().enumerate().map(|(i, &s)| h.agent(&format!("a{i}"), prop_template(i, with_rules), s, None)).collect();
        let tasks: Vec<TaskSpec> = deps.iter().enumerate().map(|(i, d)| {
            let mut task = t(&format!("t{i}:{}", prop_target(i, with_rules)), &[]);
            task.depends_on = d.iter().map(|&j| format!("t{j}:{}", prop_target(j, with_rules))).collect();
            task.cache = i % 5 != 3;
            task
        }).collect();
        h.submit(&run, tasks.clone());
        let mut running: Vec<(AgentId, LeaseGrant)> = Vec::new();
        let mut dead: Vec<(AgentId, LeaseGrant)> = Vec::new();
        let mut succeeded: HashSet<String> = HashSet::new();
        let mut connected = vec![true; agents.len()];

        // Leases the agents receive (a task never starts before its dependencies succeeded),
        // and cancelled leases, which agents drop.
        let absorb = |h: &mut Harness, running: &mut Vec<(AgentId, LeaseGrant)>, dead: &mut Vec<(AgentId, LeaseGrant)>, succeeded: &HashSet<String>| -> Result<(), TestCaseError> {
            for (a, g) in h.take_leases() {
                let spec = tasks.iter().find(|x| x.id == g.task_id).unwrap();
                for d in &spec.depends_on {
                    prop_assert!(succeeded.contains(d), "{} leased before {} succeeded", g.task_id, d);
                }
                running.push((a, g));
            }
            let cancels = std::mem::take(&mut h.cancels);
            running.retain(|(a, g)| {
                let gone = cancels.iter().any(|(_, l)| *l == g.lease);
                if gone { dead.push((*a, g.clone())); }
                !gone
            });
            Ok(())
        };
        // No agent over its slots, none with two non-cacheable tasks, none running a task its
        // rule does not allow on its template or more of one rule's tasks than its parallelism.
        let check_caps = |agents: &[AgentId], running: &[(AgentId, LeaseGrant)]| -> Result<(), TestCaseError> {
            let mut per_agent: HashMap<AgentId, (u32, u32)> = HashMap::new();
            let mut per_rule: HashMap<(AgentId, usize), u32> = HashMap::new();
            for (a, g) in running {
                let e = per_agent.entry(*a).or_default();
                e.0 += 1;
                let spec = tasks.iter().find(|x| x.id == g.task_id).unwrap();
                if !spec.cache { e.1 += 1; }
                let Some(idx) = agents.iter().position(|x| x == a) else { continue };
                let template = prop_template(idx, with_rules);
                let rule = rules.rule_for(&spec.project, &spec.target, spec.configuration.as_deref());
                prop_assert!(rules.allows(rule, template), "{} runs on {template}, which its rule does not allow", g.task_id);
                if let Some(r) = rule {
                    let n = per_rule.entry((*a, r)).or_default();
                    *n += 1;
                    if let Some(cap) = rules.parallelism(r, template) {
                        prop_assert!(*n <= cap, "rule {} runs {} tasks on one {template} agent, over its parallelism {cap}", r + 1, n);
                    }
                }
            }
            for (a, (n, nc)) in per_agent {
                let Some(idx) = agents.iter().position(|x| *x == a) else { continue };
                prop_assert!(n <= slots[idx], "agent over its slots");
                prop_assert!(nc <= 1, "two non-cacheable tasks on one agent");
            }
            Ok(())
        };
        // An agent reconnects with the leases it still runs. After the grace period it was
        // forgotten and comes back under a new id.
        let reconnect = |h: &mut Harness, i: usize, agents: &[AgentId], running: &[(AgentId, LeaseGrant)]| {
            let held: Vec<Held> = running.iter().filter(|(a, _)| *a == agents[i]).map(|(_, g)| Held { lease: g.lease, token: g.token }).collect();
            h.connect(hello(&format!("a{i}"), prop_template(i, with_rules), slots[i], None, held))
        };

        absorb(&mut h, &mut running, &mut dead, &succeeded)?;
        check_caps(&agents, &running)?;
        let tail = std::iter::repeat_n(Step::Wait(11_000), 3).chain(std::iter::repeat_n(Step::Finish(0), 100));
        for s in steps.iter().cloned().chain(tail) {
            match s {
                Step::Finish(code) => {
                    // Only a connected agent can report; with none busy, everyone comes back.
                    let pos = running.iter().position(|(a, _)| agents.iter().position(|x| x == a).is_some_and(|i| connected[i]));
                    match pos {
                        Some(p) => {
                            let l = running.remove(p);
                            if h.finish(&l, code).is_ok() {
                                if code == 0 { succeeded.insert(l.1.task_id.clone()); }
                                dead.push(l);
                            }
                        }
                        None => {
                            for i in 0..agents.len() {
                                if !connected[i] {
                                    agents[i] = reconnect(&mut h, i, &agents, &running);
                                    connected[i] = true;
                                }
                            }
                            h.advance(ms(1));
                        }
                    }
                }
                Step::Drop(i) => {
                    let i = i % agents.len();
                    if connected[i] {
                        h.s.agent_disconnected(h.now, agents[i]);
                        h.drain();
                        connected[i] = false;
                    }
                }
                Step::Back(i) => {
                    let i = i % agents.len();
                    if !connected[i] {
                        agents[i] = reconnect(&mut h, i, &agents, &running);
                        connected[i] = true;
                    }
                }
                Step::Wait(n) => {
                    // Connected agents heartbeat the leases they hold, once a second.
                    let mut left = n;
                    while left > 0 {
                        let dt = left.min(1000);
                        left -= dt;
                        h.now += ms(dt);
                        absorb(&mut h, &mut running, &mut dead, &succeeded)?;
                        for (i, a) in agents.iter().enumerate() {
                            if connected[i] {
                                let held: Vec<Held> = running.iter().filter(|(x, _)| x == a).map(|(_, g)| Held { lease: g.lease, token: g.token }).collect();
                                h.s.heartbeat(h.now, *a, &held);
                            }
                        }
                        h.s.tick(h.now);
                        h.drain();
                    }
                }
                Step::Replay => {
                    if let Some(l) = dead.first().cloned() {
                        prop_assert!(h.finish(&l, 0).is_err(), "a finished lease's result was accepted twice");
                    }
                }
            }
            absorb(&mut h, &mut running, &mut dead, &succeeded)?;
            // Leases of an agent that was forgotten and came back under a new id are gone.
            running.retain(|(a, _)| agents.contains(a));
            check_caps(&agents, &running)?;
        }
        // Every task ended exactly once.
        for task in &tasks {
            let finals = h.finished(&task.id).into_iter().filter(|f| !f.retrying).count();
            prop_assert_eq!(finals, 1, "task {} ended {} times", task.id, finals);
        }
    }
}

#[test]
fn a_stalled_agent_loses_its_lease_and_takes_work_again_when_its_heartbeats_come_back() {
    let mut h = Harness::with(Config {
        lease_timeout: ms(2000),
        reconnect_grace: ms(2000),
        ..Config::default()
    });
    let run = h.simple_run("ci-1");
    let a1 = h.agent("a1", "linux", 1, None);
    h.submit(&run, vec![t("x:build", &[])]);
    let first = h.take_leases();
    let a2 = h.agent("a2", "linux", 1, None);
    // a1's network stalls: nothing from it for longer than the lease timeout.
    for _ in 0..21 {
        h.now += ms(100);
        h.s.heartbeat(h.now, a2, &[]);
        h.s.tick(h.now);
        h.drain();
    }
    let second = h.take_leases();
    assert_eq!(second.len(), 1, "requeued after the lease timeout");
    assert_eq!(second[0].0, a2);
    assert!(
        h.cancels.contains(&(a1, first[0].1.lease)),
        "a1 is told to kill the task"
    );
    // The stall heals within the grace period: a1's queued heartbeat and late result arrive.
    h.s.heartbeat(
        h.now,
        a1,
        &[Held {
            lease: first[0].1.lease,
            token: first[0].1.token,
        }],
    );
    h.drain();
    assert_eq!(
        h.finish(&first[0], 0),
        Err(Refused::UnknownLease(first[0].1.lease)),
        "the late result is refused"
    );
    let a1_view = h.s.agent_views().into_iter().find(|a| a.id == a1).unwrap();
    assert!(a1_view.connected, "its heartbeat shows it is alive");
    // It keeps its identity and takes new work.
    h.submit(&run, vec![t("y:build", &[])]);
    let third = h.take_leases();
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].0, a1);
    for _ in 0..50 {
        h.now += ms(100);
        let held = |l: &(AgentId, LeaseGrant)| Held {
            lease: l.1.lease,
            token: l.1.token,
        };
        h.s.heartbeat(h.now, a1, &[held(&third[0])]);
        h.s.heartbeat(h.now, a2, &[held(&second[0])]);
        h.s.tick(h.now);
        h.drain();
    }
    assert!(
        h.take_leases().is_empty() && h.cancels.iter().all(|c| *c == (a1, first[0].1.lease)),
        "a1 is neither declared silent again nor forgotten while it heartbeats: {:?}",
        h.cancels
    );
    h.finish(&third[0], 0).unwrap();
    h.finish(&second[0], 0).unwrap();
    assert_eq!(h.finished("x:build").len(), 1, "finished exactly once");
}

#[test]
fn cancelling_a_run_cancels_running_tasks_skips_queued_ones_and_ends_it_failed() {
    let mut h = Harness::new();
    let run = h.simple_run("ci-1");
    let ci = h.agent("a1", "linux", 1, Some("ci-1"));
    h.submit(
        &run,
        vec![
            t("a:build", &[]),
            t("b:build", &[]),
            t("c:test", &["a:build"]),
        ],
    );
    let running = h.take_leases().remove(0);
    let out = h.s.handle(
        h.now,
        Event::Cancel {
            run: RunRef::Id(run.clone()),
            by: "ops".into(),
        },
    );
    assert!(out.reply.is_ok());
    h.s.actions.extend(out.actions);
    h.drain();
    assert_eq!(
        h.cancels,
        vec![(ci, running.1.lease)],
        "the running task is cancelled"
    );
    for task in ["a:build", "b:build", "c:test"] {
        let f = h.finished(task);
        assert_eq!(f.len(), 1, "{task} ends once");
        assert!(
            f[0].reason.contains("cancelled by ops"),
            "{task}: {}",
            f[0].reason
        );
    }
    assert!(h.events.iter().any(|e| matches!(e, RunEvent::RunDone { success: false, reason } if reason == "cancelled by ops")));
    assert_eq!(h.stops, vec![ci]);
    // The cancelled task's late result is refused, not counted.
    assert!(h.finish(&running, 0).is_err());
    assert!(h.take_leases().is_empty());
}

#[test]
fn an_agent_drained_by_an_operator_finishes_its_task_and_takes_no_more() {
    let mut h = Harness::new();
    let run = h.simple_run("ci-1");
    let a1 = h.agent("a1", "linux", 1, None);
    h.submit(&run, vec![t("a:build", &[]), t("b:build", &[])]);
    let first = h.take_leases().remove(0);
    let out = h.s.handle(h.now, Event::Drain { agent: a1 });
    h.s.actions.extend(out.actions);
    h.drain();
    assert!(h.cancels.is_empty(), "the running task goes on");
    h.finish(&first, 0).unwrap();
    assert!(
        h.take_leases().is_empty(),
        "no new lease for a drained agent"
    );
    assert_eq!(h.finished("a:build")[0].attempt, 1);
    assert!(h.s.agent_views()[0].draining);
}

#[test]
fn the_critical_path_follows_the_longest_chain_of_durations() {
    let mut h = Harness::new();
    let run = h.simple_run("ci-1");
    h.agent("a1", "linux", 4, None);
    h.submit(
        &run,
        vec![
            t("lib:build", &[]),
            t("app:build", &["lib:build"]),
            t("app:test", &["app:build"]),
            t("lint:lint", &[]),
        ],
    );
    for _ in 0..3 {
        // (Durations count only as long as the coordinator saw the lease out.)
        h.now += ms(300_000);
        for l in h.take_leases() {
            let took = if l.1.task_id == "lint:lint" {
                300_000
            } else {
                100
            };
            h.s.task_finished(
                h.now,
                l.0,
                l.1.lease,
                l.1.token,
                TaskResult::success(ms(took)),
            )
            .unwrap();
            h.drain();
        }
    }
    assert_eq!(h.s.critical_path(&run), ["lint:lint"]);
    let mut h2 = Harness::new();
    let run = h2.simple_run("ci-2");
    h2.submit(&run, vec![t("a:x", &[]), t("b:x", &["a:x"]), t("c:x", &[])]);
    assert_eq!(
        h2.s.critical_path(&run),
        ["a:x", "b:x"],
        "by estimates before anything ran"
    );
}

#[test]
fn the_rerun_guard_refuses_agents_of_another_attempt_and_fails_a_rerun_left_alone() {
    let mut h = Harness::with(Config {
        rerun_grace: ms(5_000),
        ..Config::default()
    });
    let run = h.run(RunSpec {
        ci_execution_id: "ci-1".into(),
        attempt: 2,
        ..RunSpec::default()
    });
    // An agent of the first attempt (its job was not re-run) or of a later one is refused.
    for attempt in [1, 3] {
        let hello = Hello {
            attempt,
            ..hello("old", "linux", 1, Some("ci-1"), vec![])
        };
        let err = h.s.agent_connected(h.now, hello).unwrap_err();
        assert_eq!(err, SchedError::Rerun);
        assert!(
            err.to_string()
                .starts_with("You reran only failed jobs, but CI requires rerunning all jobs."),
            "{err}"
        );
    }
    h.submit(&run, vec![t("x:build", &[])]);
    h.advance(ms(4_999));
    assert!(
        h.events
            .iter()
            .all(|e| !matches!(e, RunEvent::RunDone { .. }))
    );
    h.advance(ms(2));
    let done = h.events.iter().find_map(|e| match e {
        RunEvent::RunDone { success, reason } => Some((*success, reason.clone())),
        _ => None,
    });
    assert_eq!(
        done,
        Some((false, RERUN_MESSAGE.to_string())),
        "the main job hears the same words"
    );
    assert_eq!(h.finished("x:build")[0].reason, RERUN_MESSAGE);

    // A re-run with its agents (same attempt) runs as usual.
    let mut h = Harness::with(Config {
        rerun_grace: ms(5_000),
        ..Config::default()
    });
    let run = h.run(RunSpec {
        ci_execution_id: "ci-2".into(),
        attempt: 2,
        ..RunSpec::default()
    });
    h.submit(&run, vec![t("x:build", &[])]);
    let agent = Hello {
        attempt: 2,
        ..hello("new", "linux", 1, Some("ci-2"), vec![])
    };
    h.connect(agent);
    assert_eq!(h.take_leases().len(), 1);
    h.advance(ms(6_000));
    assert!(
        h.events
            .iter()
            .all(|e| !matches!(e, RunEvent::RunDone { .. }))
    );
}

/// Heartbeats stretch with the fleet, Nomad-style: under `max_heartbeat_rate` a second, never
/// past two fifths of the lease timeout; agents told an interval hear of a new one on their
/// next heartbeat once the fleet has changed by a quarter.
#[test]
fn heartbeats_stretch_with_the_fleet_and_agents_are_told() {
    let config = Config {
        heartbeat_interval: ms(1000),
        max_heartbeat_rate: 100,
        lease_timeout: ms(10_000),
        ..Config::default()
    };
    let mut s = Scheduler::new(config);
    let interval_of = |actions: &[Action]| {
        actions.iter().find_map(|a| match a {
            Action::Welcome { welcome, .. } => Some(welcome.heartbeat_interval),
            _ => None,
        })
    };
    let connect = |s: &mut Scheduler, i: usize| {
        let outcome = s.handle(
            ms(0),
            Event::Hello(hello(&format!("a{i}"), "linux", 1, None, vec![])),
        );
        let Ok(Reply::Agent(id)) = outcome.reply else {
            panic!("{:?}", outcome.reply)
        };
        (id, interval_of(&outcome.actions).expect("a Welcome"))
    };
    // A small fleet heartbeats at the configured interval.
    let (first, told) = connect(&mut s, 0);
    assert_eq!(told, ms(1000));
    for i in 1..250 {
        connect(&mut s, i);
    }
    // 251 agents at 100 a second: 2.51 s.
    let (_, told) = connect(&mut s, 250);
    assert_eq!(told, ms(2510));
    // The first agent hears of it on its next heartbeat, and only once.
    let told_first = |s: &mut Scheduler| {
        s.handle(
            ms(500),
            Event::Heartbeat {
                agent: first,
                held: vec![],
            },
        )
        .actions
        .into_iter()
        .find_map(|a| match a {
            Action::Heartbeat { agent, interval } if agent == first => Some(interval),
            _ => None,
        })
    };
    assert_eq!(told_first(&mut s), Some(ms(2510)));
    assert_eq!(told_first(&mut s), None);
    // A fleet too large for the rate stops at two fifths of the lease timeout.
    for i in 251..2000 {
        connect(&mut s, i);
    }
    let (_, told) = connect(&mut s, 2000);
    assert_eq!(told, ms(4000));
    assert_eq!(told_first(&mut s), Some(ms(4000)));
}

/// An agent's reported duration is clamped to how long the lease was out: a clock gone wrong
/// (or a lie) does not become a target's average.
#[test]
fn a_reported_duration_counts_no_longer_than_the_lease_was_out() {
    let mut h = Harness::new();
    let run = h.simple_run("ci-1");
    h.agent("a1", "linux", 1, None);
    h.submit(&run, vec![t("app:build", &[])]);
    let l = h.take_leases().remove(0);
    h.now += ms(2_000);
    h.s.task_finished(
        h.now,
        l.0,
        l.1.lease,
        l.1.token,
        TaskResult::success(Duration::MAX),
    )
    .unwrap();
    h.drain();
    let spec = TaskSpec::new("app:build", "true");
    let learned = h.s.estimates().estimate(&spec);
    assert!(learned <= ms(2_000), "learned {learned:?}");
}

/// Absurd or hostile values from agents and main jobs are refused with what was wrong.
#[test]
fn absurd_slots_control_characters_and_a_junk_fleet_are_refused() {
    let mut s = Scheduler::new(Config::default());
    let refused = |s: &mut Scheduler, h: Hello| match s.handle(ms(0), Event::Hello(h)).reply {
        Err(e) => e.to_string(),
        Ok(r) => panic!("accepted: {r:?}"),
    };
    let e = refused(&mut s, hello("a1", "linux", 5000, None, vec![]));
    assert!(e.contains("slots must be from 1 to 1024, not 5000"), "{e}");
    let e = refused(&mut s, hello("a1\u{1b}[2J", "linux", 2, None, vec![]));
    assert!(
        e.contains("control character") && e.contains("\\u{1b}"),
        "{e}"
    );
    assert!(!e.contains('\u{1b}'), "{e:?}");
    let request = RunRequest {
        ci_execution_id: "x".into(),
        distribute_on: "3 linux-medium:two".into(),
        rules_text: String::new(),
        ..RunRequest::default()
    };
    let e = RunSpec::from_request(&request).unwrap_err().to_string();
    assert!(
        e.contains("--distribute-on") && e.contains("SLOTS `two`"),
        "{e}"
    );
}
