//! Forgetting ended runs, with a fake clock: lookups, refusals, and the runs that share the
//! forgotten run's agents (leases, parallelism groups, round robin, CI agents).

use std::time::Duration;

use super::*;
use crate::rules::RuleSet;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn t(id: &str) -> TaskSpec {
    TaskSpec::new(id, format!("run {id}"))
}

/// A scheduler, a hand-moved clock, and the leases and stops handed out so far.
struct Harness {
    s: Scheduler,
    now: Duration,
    leases: Vec<(AgentId, LeaseGrant)>,
    stops: Vec<AgentId>,
}

impl Harness {
    fn new(config: Config) -> Self {
        Harness {
            s: Scheduler::new(config),
            now: Duration::ZERO,
            leases: Vec::new(),
            stops: Vec::new(),
        }
    }

    fn drain(&mut self) {
        for a in self.s.take_actions() {
            match a {
                Action::Lease { agent, grant } => self.leases.push((agent, grant)),
                Action::Stop { agent, .. } => self.stops.push(agent),
                _ => {}
            }
        }
    }

    fn run(&mut self, exec: &str, rules: RuleSet) -> String {
        let spec = RunSpec {
            ci_execution_id: exec.into(),
            rules,
            ..RunSpec::default()
        };
        let (id, existing) = self
            .s
            .start_run(self.now, format!("run-{exec}"), spec)
            .unwrap();
        assert!(!existing, "a new run");
        self.drain();
        id
    }

    fn agent(&mut self, name: &str, instance: &str, slots: u32, exec: Option<&str>) -> AgentId {
        let hello = Hello {
            name: name.into(),
            instance_id: instance.into(),
            launch_template: "linux".into(),
            slots,
            ci_execution_id: exec.map(str::to_string),
            held: vec![],
            ..Hello::default()
        };
        let id = self.s.agent_connected(self.now, hello).unwrap();
        self.drain();
        id
    }

    fn submit(&mut self, run: &str, tasks: &[&str]) {
        self.s
            .submit(self.now, run, tasks.iter().map(|id| t(id)).collect())
            .unwrap();
        self.drain();
    }

    fn take_leases(&mut self) -> Vec<(AgentId, LeaseGrant)> {
        std::mem::take(&mut self.leases)
    }

    /// Finishes a lease successfully.
    fn finish(&mut self, lease: &(AgentId, LeaseGrant)) {
        self.now += ms(10);
        self.s
            .task_finished(
                self.now,
                lease.0,
                lease.1.lease,
                lease.1.token,
                TaskResult::success(ms(10)),
            )
            .unwrap();
        self.drain();
    }

    fn complete(&mut self, run: &str) {
        self.s.complete_run(self.now, run).unwrap();
        self.drain();
    }

    fn state(&self, run: &str) -> &'static str {
        self.s.run_view(run).expect("a known run").state.as_str()
    }
}

fn tasks_of(leases: &[(AgentId, LeaseGrant)]) -> Vec<&str> {
    leases.iter().map(|(_, g)| g.task_id.as_str()).collect()
}

const ONE_BUILD_AT_A_TIME: &str = "assignment-rules:
  - targets:
      - build
    run-on:
      - agent: linux
        parallelism: 1
";

#[test]
fn an_ended_run_is_forgotten_and_every_lookup_says_unknown_run() {
    let mut h = Harness::new(Config::default());
    let run = h.run("ci-1", RuleSet::default());
    let agent = h.agent("a1", "a1-1", 1, None);
    h.submit(&run, &["x:build"]);
    let x = h.take_leases().remove(0);
    h.finish(&x);
    h.complete(&run);
    assert_eq!(h.state(&run), "succeeded");
    assert_eq!(h.s.ended_runs().collect::<Vec<_>>(), [run.as_str()]);

    h.s.forget_run(&run).unwrap();

    let unknown = SchedError::UnknownRun(run.clone());
    assert!(!h.s.has_run(&run));
    assert!(h.s.run_view(&run).is_none());
    assert!(h.s.run_summaries().is_empty());
    assert!(h.s.progress(&run, None).is_none());
    assert!(h.s.task_record(&run, "x:build").is_none());
    assert_eq!(h.s.run_for_execution("ci-1"), None);
    assert_eq!(h.s.ended_runs().count(), 0);
    assert_eq!(
        h.s.submit(h.now, &run, vec![t("y:build")]),
        Err(unknown.clone())
    );
    assert_eq!(h.s.complete_run(h.now, &run), Err(unknown.clone()));
    assert_eq!(h.s.forget_run(&run), Err(unknown));
    // The agent's finished lease stays refused.
    assert_eq!(
        h.s.task_finished(
            h.now,
            agent,
            x.1.lease,
            x.1.token,
            TaskResult::success(ms(1))
        ),
        Err(Refused::UnknownLease(x.1.lease))
    );
    assert!(h.s.agent_views()[0].running.is_empty());
}

#[test]
fn an_active_run_is_refused_and_stays_as_it_was() {
    let mut h = Harness::new(Config::default());
    let idle = h.run("ci-idle", RuleSet::default());
    let busy = h.run("ci-busy", RuleSet::default());
    h.agent("a1", "a1-1", 1, None);
    h.submit(&busy, &["x:build"]);
    let x = h.take_leases().remove(0);
    // Completed but with a task still running: it has not ended.
    h.complete(&busy);

    for run in [&idle, &busy] {
        let err = h.s.forget_run(run).unwrap_err();
        assert_eq!(err, SchedError::RunActive(run.to_string()));
        assert!(err.to_string().contains("has not ended"), "{err}");
    }
    assert_eq!(h.state(&idle), "running");
    assert_eq!(h.state(&busy), "running");
    assert_eq!(h.s.run_for_execution("ci-busy"), Some(busy.as_str()));
    h.finish(&x);
    assert_eq!(h.state(&busy), "succeeded");
    h.s.forget_run(&busy).unwrap();
    assert_eq!(h.s.run_summaries().len(), 1, "the idle run is still there");
}

#[test]
fn runs_sharing_the_agents_keep_their_parallelism_after_a_forget() {
    let mut h = Harness::new(Config::default());
    let rules = || RuleSet::parse("rules.yaml", ONE_BUILD_AT_A_TIME).unwrap();
    let a = h.run("ci-a", rules());
    let b = h.run("ci-b", rules());
    h.agent("x", "x-1", 2, None);
    h.submit(&a, &["a:build"]);
    h.submit(&b, &["b0:build", "b1:build"]);
    let first = h.take_leases();
    assert_eq!(tasks_of(&first), ["a:build", "b0:build"]);
    h.finish(&first[0]);
    h.complete(&a);
    assert!(
        h.take_leases().is_empty(),
        "b1 waits: one build of run b at a time"
    );

    h.s.forget_run(&a).unwrap();

    assert!(
        h.take_leases().is_empty(),
        "still one build of run b at a time"
    );
    h.finish(&first[1]);
    let b1 = h.take_leases();
    assert_eq!(tasks_of(&b1), ["b1:build"]);
    // A run opened after the forget takes the other slot: parallelism is per run.
    let c = h.run("ci-c", rules());
    h.submit(&c, &["c0:build", "c1:build"]);
    let c0 = h.take_leases();
    assert_eq!(tasks_of(&c0), ["c0:build"]);
    h.finish(&b1[0]);
    h.complete(&b);
    assert_eq!(h.state(&b), "succeeded");
    assert!(h.take_leases().is_empty(), "c1 waits for c0");
    h.finish(&c0[0]);
    let c1 = h.take_leases();
    assert_eq!(tasks_of(&c1), ["c1:build"]);
    h.finish(&c1[0]);
    h.complete(&c);
    assert_eq!(h.state(&c), "succeeded");
}

#[test]
fn runs_keep_taking_turns_when_the_cursor_points_at_a_forgotten_run() {
    let mut h = Harness::new(Config::default());
    let a = h.run("ci-a", RuleSet::default());
    let b = h.run("ci-b", RuleSet::default());
    let c = h.run("ci-c", RuleSet::default());
    h.agent("x", "x-1", 1, None);
    h.submit(&a, &["a:build"]);
    h.submit(&b, &["b0:build", "b1:build", "b2:build"]);
    h.submit(&c, &["c0:build", "c1:build", "c2:build"]);
    let mut order = Vec::new();
    let mut lease = h.take_leases().remove(0);
    order.push(lease.1.task_id.clone());
    for _ in 0..2 {
        h.finish(&lease);
        lease = h.take_leases().remove(0);
        order.push(lease.1.task_id.clone());
    }
    assert_eq!(order, ["a:build", "b0:build", "c0:build"]);
    // The last turn went to the last run: the cursor wraps to run a's slot.
    h.complete(&a);
    h.s.forget_run(&a).unwrap();
    for _ in 0..4 {
        h.finish(&lease);
        lease = h.take_leases().remove(0);
        order.push(lease.1.task_id.clone());
    }
    assert_eq!(
        &order[3..],
        ["b1:build", "c1:build", "b2:build", "c2:build"]
    );
    h.finish(&lease);
    h.complete(&b);
    h.complete(&c);
    assert_eq!((h.state(&b), h.state(&c)), ("succeeded", "succeeded"));
    // A new run after the forget works as any other.
    let d = h.run("ci-d", RuleSet::default());
    h.submit(&d, &["d:build"]);
    let d0 = h.take_leases();
    assert_eq!(tasks_of(&d0), ["d:build"]);
    assert_eq!(
        h.s.run_summaries()
            .iter()
            .map(|v| v.id.as_str())
            .collect::<Vec<_>>(),
        [b.as_str(), c.as_str(), d.as_str()]
    );
}

#[test]
fn binning_plans_the_remaining_runs_after_a_forget() {
    let mut h = Harness::new(Config {
        policy: Policy::Binning,
        ..Config::default()
    });
    let a = h.run("ci-a", RuleSet::default());
    let b = h.run("ci-b", RuleSet::default());
    h.agent("x", "x-1", 1, None);
    h.agent("y", "y-1", 1, None);
    h.submit(&a, &["a:build"]);
    let a0 = h.take_leases();
    h.finish(&a0[0]);
    h.complete(&a);
    h.s.forget_run(&a).unwrap();
    h.submit(&b, &["b0:build", "b1:test"]);
    let got = h.take_leases();
    assert_eq!(
        got.len(),
        2,
        "one agent per target's bin: {:?}",
        tasks_of(&got)
    );
    for l in &got {
        h.finish(l);
    }
    h.complete(&b);
    assert_eq!(h.state(&b), "succeeded");
}

#[test]
fn a_ci_agent_of_a_forgotten_runs_execution_breaks_nothing() {
    let mut h = Harness::new(Config::default());
    let run = h.run("ci-1", RuleSet::default());
    let ci = h.agent("ci-agent", "ci-agent-1", 1, Some("ci-1"));
    h.submit(&run, &["x:build"]);
    let x = h.take_leases().remove(0);
    h.finish(&x);
    h.complete(&run);
    assert_eq!(h.stops, [ci], "told to stop when its run ended");
    h.s.forget_run(&run).unwrap();

    // The old process keeps talking, then its stream closes; a new process of the same CI
    // execution connects. Nobody gets a lease, nothing panics.
    h.s.heartbeat(
        h.now,
        ci,
        &[Held {
            lease: x.1.lease,
            token: x.1.token,
        }],
    );
    assert!(
        h.s.output_target(ci, x.1.lease, x.1.token).is_err(),
        "output under the old lease is refused"
    );
    h.s.agent_disconnected(h.now, ci);
    h.now += ms(20_000);
    h.s.tick(h.now);
    h.drain();
    let late = h.agent("ci-agent", "ci-agent-2", 1, Some("ci-1"));
    let other = h.run("ci-2", RuleSet::default());
    h.submit(&other, &["y:build"]);
    assert!(
        h.take_leases().is_empty(),
        "a CI agent serves only its own execution"
    );
    h.now += ms(100);
    h.s.tick(h.now);
    h.drain();

    // The same CI execution opens a new run: the new agent serves it.
    let (again, existing) =
        h.s.start_run(
            h.now,
            "run-ci-1-again".into(),
            RunSpec {
                ci_execution_id: "ci-1".into(),
                attempt: 2,
                ..RunSpec::default()
            },
        )
        .unwrap();
    assert!(!existing);
    assert_eq!(h.s.run_for_execution("ci-1"), Some(again.as_str()));
    h.submit(&again, &["z:build"]);
    let z = h.take_leases();
    assert_eq!(z.len(), 1);
    assert_eq!((z[0].0, z[0].1.task_id.as_str()), (late, "z:build"));
}
