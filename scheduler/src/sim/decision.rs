//! The set-up of the scheduling-decision micro-benchmark (`cargo bench -p drover-scheduler
//! --bench decision`, `drover bench decision`): a run with 100,000 ready tasks under assignment
//! rules, 1,000 agents of two launch templates with every slot busy. One step is one decision:
//! a task ends, its slot is free, the scheduler picks the next task for it and leases it.
//! The caller times the steps (this crate never reads a clock).

use std::collections::VecDeque;
use std::time::Duration;

use crate::rules::RuleSet;
use crate::state::{
    Action, AgentId, Config, Event, Hello, LeaseId, Outcome, Reply, RunRef, RunSpec, Scheduler,
    TaskResult,
};
use crate::task::TaskSpec;

const RULES: &str = "\
assignment-rules:
  - targets: ['e2e']
    run-on:
      - agent: linux-large
  - targets: ['lint', 'build', 'test']
    run-on:
      - agent: linux-medium
      - agent: linux-large
";

pub struct DecisionBench {
    sched: Scheduler,
    /// Running leases, oldest first.
    running: VecDeque<(AgentId, LeaseId, u64)>,
    now: Duration,
    pub tasks: usize,
    pub agents: usize,
}

impl DecisionBench {
    /// `tasks` ready tasks (a quarter each of lint, build, test, and a few e2e), `agents`
    /// agents with two slots each: four in five `linux-medium`, the rest `linux-large`.
    pub fn new(tasks: usize, agents: usize) -> DecisionBench {
        let forever = Duration::from_secs(100 * 365 * 24 * 3600);
        let mut sched = Scheduler::new(Config {
            lease_timeout: forever,
            reconnect_grace: forever,
            ..Config::default()
        });
        let zero = Duration::ZERO;
        let rules = RuleSet::parse("bench-rules.yaml", RULES).expect("valid rules");
        let mut actions = Vec::new();
        let spec = RunSpec {
            ci_execution_id: "bench".into(),
            rules,
            ..RunSpec::default()
        };
        let outcome = sched.handle(zero, Event::StartRun { spec, unix_ms: 0 });
        let Ok(Reply::RunStarted { run_id: run, .. }) = outcome.reply else {
            panic!("a new run: {:?}", outcome.reply);
        };
        for k in 0..agents {
            let template = if k % 5 == 4 {
                "linux-large"
            } else {
                "linux-medium"
            };
            let hello = Hello {
                name: format!("agent-{k}"),
                instance_id: "bench".into(),
                launch_template: template.into(),
                slots: 2,
                ci_execution_id: None,
                held: Vec::new(),
                ..Hello::default()
            };
            let outcome = sched.handle(zero, Event::Hello(hello));
            outcome.reply.expect("a valid agent");
            actions.extend(outcome.actions);
        }
        let targets = ["lint", "build", "test", "lint", "build", "test", "e2e"];
        let graph: Vec<TaskSpec> = (0..tasks)
            .map(|i| {
                let mut t = TaskSpec::new(format!("p{i}:{}", targets[i % targets.len()]), "true");
                t.estimate = Some(Duration::from_millis(1000 + (i as u64 * 7919) % 60_000));
                t
            })
            .collect();
        let run = RunRef::Id(run);
        let outcome = sched.handle(zero, Event::Submit { run, tasks: graph });
        outcome.reply.as_ref().expect("a valid graph");
        actions.extend(outcome.actions);
        let mut bench = DecisionBench {
            sched,
            running: VecDeque::new(),
            now: zero,
            tasks,
            agents,
        };
        bench.collect(actions);
        bench
    }

    fn collect(&mut self, actions: Vec<Action>) {
        for action in actions {
            if let Action::Lease { agent, grant } = action {
                self.running.push_back((agent, grant.lease, grant.token));
            }
        }
    }

    /// One decision: the oldest running task ends and its slot takes the next task.
    /// Returns false when no task is running any more.
    pub fn step(&mut self) -> bool {
        let Some((agent, lease, token)) = self.running.pop_front() else {
            return false;
        };
        self.now += Duration::from_millis(1);
        let event = Event::Finished {
            agent,
            lease,
            token,
            result: TaskResult::success(Duration::from_secs(1)),
        };
        let Outcome { actions, .. } = self.sched.handle(self.now, event);
        debug_assert!(
            !actions.iter().any(|a| matches!(a, Action::Refused { .. })),
            "an active lease"
        );
        self.collect(actions);
        true
    }

    /// Tasks still waiting for a slot.
    pub fn ready(&self) -> usize {
        self.sched.progress("bench", None).map_or(0, |p| p.queued)
    }
}
