//! Call-per-event shims for the unit tests: each sends one [`Event`] through
//! [`Scheduler::handle`] and keeps its actions for [`Scheduler::take_actions`], so tests read
//! as a sequence of calls and check what came out.

use std::time::Duration;

use super::*;

impl Scheduler {
    /// Handles an event and keeps its actions with those not taken yet.
    fn shim(&mut self, now: Duration, event: Event) -> Result<Reply, SchedError> {
        let kept = std::mem::take(&mut self.actions);
        let outcome = self.handle(now, event);
        self.actions = kept;
        self.actions.extend(outcome.actions.iter().cloned());
        outcome.reply
    }

    /// Whether the last event's actions refused a message of this kind.
    fn refused(&self, kind: MessageKind) -> Option<Refused> {
        self.actions.iter().rev().find_map(|a| match a {
            Action::Refused {
                message, refused, ..
            } if *message == kind => Some(refused.clone()),
            _ => None,
        })
    }

    /// The actions of the events so far, oldest first (refusal notes left out).
    pub(crate) fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
            .into_iter()
            .filter(|a| {
                !matches!(
                    a,
                    Action::Refused { .. } | Action::Welcome { .. } | Action::Released { .. }
                )
            })
            .collect()
    }

    /// Opens a run under a chosen id (tests name their runs).
    pub(crate) fn start_run(
        &mut self,
        now: Duration,
        run_id: String,
        spec: RunSpec,
    ) -> Result<(String, bool), SchedError> {
        if let Some(id) = self.open_run_of(&spec) {
            return Ok((id, true));
        }
        self.open(now, run_id.clone(), spec, 0);
        self.shim(now, Event::Tick)?;
        Ok((run_id, false))
    }

    pub(crate) fn agent_connected(
        &mut self,
        now: Duration,
        hello: Hello,
    ) -> Result<AgentId, SchedError> {
        match self.shim(now, Event::Hello(hello))? {
            Reply::Agent(id) => Ok(id),
            other => panic!("a Hello answered {other:?}"),
        }
    }

    pub(crate) fn submit(
        &mut self,
        now: Duration,
        run_id: &str,
        tasks: Vec<TaskSpec>,
    ) -> Result<u64, SchedError> {
        let run = RunRef::Id(run_id.to_string());
        match self.shim(now, Event::Submit { run, tasks })? {
            Reply::Submitted { submission, .. } => Ok(submission),
            other => panic!("a submission answered {other:?}"),
        }
    }

    pub(crate) fn complete_run(&mut self, now: Duration, run_id: &str) -> Result<(), SchedError> {
        let run = RunRef::Id(run_id.to_string());
        self.shim(now, Event::Complete { run }).map(|_| ())
    }

    pub(crate) fn forget_run(&mut self, run_id: &str) -> Result<(), SchedError> {
        let run_id = run_id.to_string();
        self.shim(Duration::ZERO, Event::Forget { run_id })
            .map(|_| ())
    }

    pub(crate) fn task_finished(
        &mut self,
        now: Duration,
        agent: AgentId,
        lease: LeaseId,
        token: u64,
        result: TaskResult,
    ) -> Result<(), Refused> {
        let event = Event::Finished {
            agent,
            lease,
            token,
            result,
        };
        let before = self.actions.len();
        self.shim(now, event).expect("a result is always answered");
        match self.actions[before..]
            .iter()
            .any(|a| matches!(a, Action::Refused { .. }))
        {
            true => Err(self.refused(MessageKind::Result).expect("a refusal")),
            false => Ok(()),
        }
    }

    /// Whether output under this lease would be accepted (nothing is recorded).
    pub(crate) fn output_target(
        &self,
        agent: AgentId,
        lease: LeaseId,
        token: u64,
    ) -> Result<(), Refused> {
        self.leases.check(agent, lease, token).map(|_| ())
    }

    pub(crate) fn heartbeat(&mut self, now: Duration, agent: AgentId, held: &[Held]) {
        let held = held.to_vec();
        self.shim(now, Event::Heartbeat { agent, held })
            .expect("a heartbeat is always answered");
    }

    pub(crate) fn agent_disconnected(&mut self, now: Duration, agent: AgentId) {
        self.shim(now, Event::Disconnected { agent })
            .expect("always answered");
    }

    pub(crate) fn agent_draining(&mut self, now: Duration, agent: AgentId) {
        self.shim(now, Event::Draining { agent })
            .expect("always answered");
    }

    pub(crate) fn tick(&mut self, now: Duration) {
        self.shim(now, Event::Tick).expect("always answered");
    }
}
