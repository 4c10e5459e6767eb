//! The protocol state of one agent across connections: the leases it holds, what it still
//! owes the coordinator, and what to send next. Synchronous and clock-free; the agent loop
//! feeds it events and asks it for messages.
//!
//! Delivery of results is at least once. A `Finished` handed to a stream stays
//! "unconfirmed" until the coordinator acknowledges it (`Ack`, sent once the result is
//! stored; coordinators whose Welcome says `acks_results`), or with an older coordinator until
//! two more heartbeats went out on the same stream. If the stream is lost before that, the
//! result is sent again after the next `Welcome` (and its lease is listed in
//! `Hello.held_leases`). The coordinator ignores a repeated result for a lease it already closed.

use std::collections::{BTreeMap, VecDeque};

use drover_proto::v1::{
    AgentMessage, Draining, Finished, Heartbeat, HeldLease, Lease, Output, OutputStream, Started,
    agent_message::Msg,
};

use crate::executor::{TaskResult, TaskSpec};
use crate::outbox::Outbox;

/// Heartbeats that must follow a result on the same stream before it counts as delivered.
const CONFIRMING_HEARTBEATS: u64 = 2;

/// What to do with a lease.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LeaseDecision {
    /// Start the task, then report [`Session::task_started`] or a spawn failure.
    Run(TaskSpec),
    /// Not run; a `Finished` with this error is queued.
    Refused(String),
    /// This agent already holds the lease; nothing to do.
    Duplicate,
}

#[derive(Debug)]
pub(crate) struct Session {
    slots: usize,
    /// Leases whose task runs: lease id → fencing token.
    running: BTreeMap<String, u64>,
    outbox: Outbox,
    /// Results sent on the current stream that may have been lost with it, each with the
    /// number of heartbeats sent before it.
    unconfirmed: VecDeque<(Finished, u64)>,
    heartbeats_sent: u64,
    /// The coordinator acknowledges results (else heartbeats confirm them).
    acks: bool,
    heartbeat_due: bool,
    draining: bool,
    draining_due: bool,
    stop_reason: Option<String>,
}

impl Session {
    pub(crate) fn new(slots: u32, output_limit: usize) -> Self {
        Self {
            slots: usize::try_from(slots).unwrap_or(usize::MAX),
            running: BTreeMap::new(),
            outbox: Outbox::new(output_limit),
            unconfirmed: VecDeque::new(),
            heartbeats_sent: 0,
            acks: false,
            heartbeat_due: false,
            draining: false,
            draining_due: false,
            stop_reason: None,
        }
    }

    pub(crate) fn running(&self) -> usize {
        self.running.len()
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining
    }

    pub(crate) fn stop_reason(&self) -> Option<&str> {
        self.stop_reason.as_deref()
    }

    /// Results the coordinator may not have yet.
    pub(crate) fn undelivered(&self) -> usize {
        self.outbox.finished().count() + self.unconfirmed.len()
    }

    /// For `Hello`: running leases and every result that may not have arrived.
    pub(crate) fn held_for_hello(&self) -> Vec<HeldLease> {
        let unconfirmed = self.unconfirmed.iter().map(|(f, _)| f);
        held(&self.running, self.outbox.finished().chain(unconfirmed))
    }

    /// For `Heartbeat`: running leases and results not yet sent.
    fn held_for_heartbeat(&self) -> Vec<HeldLease> {
        held(&self.running, self.outbox.finished())
    }

    pub(crate) fn on_lease(&mut self, lease: Lease) -> LeaseDecision {
        let lease_id = lease.lease_id.as_str();
        let known = self.running.contains_key(lease_id)
            || self.outbox.finished().any(|f| f.lease_id == lease_id)
            || self.unconfirmed.iter().any(|(f, _)| f.lease_id == lease_id);
        if known {
            return LeaseDecision::Duplicate;
        }
        let refusal = if self.stop_reason.is_some() {
            Some("agent is stopping")
        } else if self.draining {
            Some("agent is draining")
        } else if self.running.len() >= self.slots {
            Some("agent has no free slot")
        } else {
            None
        };
        if let Some(reason) = refusal {
            let result = TaskResult::not_run(lease_id, lease.fencing_token, reason.to_owned());
            self.outbox.push(Msg::Finished(result.into_finished()));
            return LeaseDecision::Refused(reason.to_owned());
        }
        self.running
            .insert(lease.lease_id.clone(), lease.fencing_token);
        LeaseDecision::Run(TaskSpec::from(lease))
    }

    pub(crate) fn task_started(&mut self, lease_id: &str, token: u64) {
        if self.holds(lease_id, token) {
            let started = Started {
                lease_id: lease_id.to_owned(),
                fencing_token: token,
            };
            self.outbox.push(Msg::Started(started));
        }
    }

    pub(crate) fn task_output(
        &mut self,
        lease_id: &str,
        token: u64,
        stream: OutputStream,
        data: Vec<u8>,
    ) {
        if self.holds(lease_id, token) {
            let output = Output {
                lease_id: lease_id.to_owned(),
                fencing_token: token,
                stream: stream as i32,
                data,
            };
            self.outbox.push(Msg::Output(output));
        }
    }

    /// Queues the result; false (and nothing queued) for a lease this agent no longer holds.
    pub(crate) fn task_finished(&mut self, result: TaskResult) -> bool {
        if !self.holds(&result.lease_id, result.token) {
            return false;
        }
        self.running.remove(&result.lease_id);
        self.outbox.push(Msg::Finished(result.into_finished()));
        true
    }

    /// Forgets the lease, its queued messages and any result not yet confirmed. True when
    /// its task was running (the caller kills it).
    pub(crate) fn cancel(&mut self, lease_id: &str) -> bool {
        self.outbox.remove_lease(lease_id);
        self.unconfirmed.retain(|(f, _)| f.lease_id != lease_id);
        self.running.remove(lease_id).is_some()
    }

    /// Takes no more leases; tells the coordinator when `connected`, else after the next Welcome.
    pub(crate) fn drain(&mut self, connected: bool) {
        if !self.draining {
            self.draining = true;
            self.draining_due = connected;
        }
    }

    pub(crate) fn stop(&mut self, reason: String) {
        self.stop_reason.get_or_insert(reason);
    }

    /// A new stream got its Welcome; `acks`: the coordinator acknowledges results.
    pub(crate) fn connected(&mut self, acks: bool) {
        self.acks = acks;
        self.outbox.set_connected(true);
        self.heartbeats_sent = 0;
        self.heartbeat_due = false;
        self.draining_due = self.draining;
    }

    /// The stream is gone: what it may have lost is sent again on the next one.
    pub(crate) fn connection_lost(&mut self) {
        self.outbox.set_connected(false);
        let resend: Vec<_> = self
            .unconfirmed
            .drain(..)
            .map(|(f, _)| Msg::Finished(f))
            .collect();
        self.outbox.requeue_front(resend.into_iter());
        self.heartbeat_due = false;
        self.draining_due = false;
    }

    /// The coordinator stored this result.
    pub(crate) fn acknowledged(&mut self, lease_id: &str, token: u64) {
        self.unconfirmed
            .retain(|(f, _)| !(f.lease_id == lease_id && f.fencing_token == token));
    }

    /// Whether results wait for acknowledgements.
    pub(crate) fn acks(&self) -> bool {
        self.acks
    }

    pub(crate) fn heartbeat_due(&mut self) {
        self.heartbeat_due = true;
    }

    pub(crate) fn has_message(&self) -> bool {
        self.draining_due || self.heartbeat_due || !self.outbox.is_empty()
    }

    /// The next message for the current stream: `Draining` first, then a heartbeat, then
    /// queued task messages in order.
    pub(crate) fn next_message(&mut self) -> Option<AgentMessage> {
        let msg = if std::mem::take(&mut self.draining_due) {
            Msg::Draining(Draining {})
        } else if std::mem::take(&mut self.heartbeat_due) {
            self.heartbeats_sent += 1;
            let sent = self.heartbeats_sent;
            if !self.acks {
                self.unconfirmed
                    .retain(|(_, before)| before + CONFIRMING_HEARTBEATS > sent);
            }
            Msg::Heartbeat(Heartbeat {
                held_leases: self.held_for_heartbeat(),
            })
        } else {
            let msg = self.outbox.pop()?;
            if let Some(Msg::Finished(finished)) = &msg.msg {
                self.unconfirmed
                    .push_back((finished.clone(), self.heartbeats_sent));
            }
            return Some(msg);
        };
        Some(AgentMessage { msg: Some(msg) })
    }

    fn holds(&self, lease_id: &str, token: u64) -> bool {
        self.running.get(lease_id) == Some(&token)
    }
}

fn held<'a>(
    running: &BTreeMap<String, u64>,
    finished: impl Iterator<Item = &'a Finished>,
) -> Vec<HeldLease> {
    let mut leases: BTreeMap<&str, u64> = running
        .iter()
        .map(|(id, token)| (id.as_str(), *token))
        .collect();
    leases.extend(finished.map(|f| (f.lease_id.as_str(), f.fencing_token)));
    leases
        .into_iter()
        .map(|(lease_id, fencing_token)| HeldLease {
            lease_id: lease_id.to_owned(),
            fencing_token,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::outbox::OUTPUT_LIMIT;

    fn lease(id: &str, token: u64) -> Lease {
        Lease {
            lease_id: id.into(),
            fencing_token: token,
            task_id: format!("{id}:build"),
            command: "true".into(),
            ..Default::default()
        }
    }

    fn result(id: &str, token: u64, exit_code: i32) -> TaskResult {
        TaskResult {
            lease_id: id.into(),
            token,
            exit_code,
            duration: Duration::from_millis(5),
            error: String::new(),
        }
    }

    fn send_all(session: &mut Session) -> Vec<Msg> {
        std::iter::from_fn(|| session.next_message())
            .filter_map(|m| m.msg)
            .collect()
    }

    fn held_ids(held: &[HeldLease]) -> Vec<(&str, u64)> {
        held.iter()
            .map(|h| (h.lease_id.as_str(), h.fencing_token))
            .collect()
    }

    fn start(session: &mut Session, id: &str, token: u64) {
        let LeaseDecision::Run(spec) = session.on_lease(lease(id, token)) else {
            panic!("lease {id} should run");
        };
        session.task_started(&spec.lease_id, spec.token);
    }

    #[test]
    fn runs_up_to_slots_then_refuses_with_a_result() {
        let mut session = Session::new(1, OUTPUT_LIMIT);
        start(&mut session, "a", 1);
        assert_eq!(session.on_lease(lease("a", 1)), LeaseDecision::Duplicate);
        assert_eq!(
            session.on_lease(lease("b", 2)),
            LeaseDecision::Refused("agent has no free slot".into())
        );
        let sent = send_all(&mut session);
        assert!(matches!(&sent[0], Msg::Started(s) if s.lease_id == "a"));
        assert!(matches!(&sent[1], Msg::Finished(f)
            if f.lease_id == "b" && f.fencing_token == 2 && f.exit_code == -1 && f.error == "agent has no free slot"));
    }

    #[test]
    fn draining_refuses_and_is_announced_first() {
        let mut session = Session::new(4, OUTPUT_LIMIT);
        session.drain(true);
        assert_eq!(
            session.on_lease(lease("a", 1)),
            LeaseDecision::Refused("agent is draining".into())
        );
        let sent = send_all(&mut session);
        assert!(matches!(sent[0], Msg::Draining(_)));
        assert!(matches!(&sent[1], Msg::Finished(f) if f.error == "agent is draining"));
    }

    #[test]
    fn results_of_revoked_or_cancelled_leases_are_dropped() {
        let mut session = Session::new(2, OUTPUT_LIMIT);
        start(&mut session, "a", 1);
        assert!(!session.task_finished(result("a", 99, 0)), "wrong token");
        session.task_output("a", 1, OutputStream::Stdout, b"hi".to_vec());
        assert!(session.cancel("a"));
        assert!(!session.task_finished(result("a", 1, 0)));
        assert!(
            send_all(&mut session).is_empty(),
            "a cancelled lease sends nothing"
        );
        assert_eq!(session.running(), 0);
    }

    #[test]
    fn heartbeats_list_running_and_unsent_results() {
        let mut session = Session::new(2, OUTPUT_LIMIT);
        start(&mut session, "a", 1);
        start(&mut session, "b", 2);
        session.task_finished(result("b", 2, 0));
        session.heartbeat_due();
        let Some(Msg::Heartbeat(beat)) = session.next_message().and_then(|m| m.msg) else {
            panic!("heartbeat goes before queued messages");
        };
        assert_eq!(held_ids(&beat.held_leases), [("a", 1), ("b", 2)]);
        send_all(&mut session);
        session.heartbeat_due();
        let Some(Msg::Heartbeat(beat)) = session.next_message().and_then(|m| m.msg) else {
            panic!("expected a heartbeat");
        };
        assert_eq!(
            held_ids(&beat.held_leases),
            [("a", 1)],
            "b's result was sent"
        );
    }

    #[test]
    fn a_lost_stream_resends_unconfirmed_results_after_hello() {
        let mut session = Session::new(2, OUTPUT_LIMIT);
        start(&mut session, "a", 1);
        session.task_finished(result("a", 1, 3));
        send_all(&mut session);
        assert_eq!(session.undelivered(), 1);
        session.connection_lost();
        assert_eq!(held_ids(&session.held_for_hello()), [("a", 1)]);
        session.connected(false);
        let sent = send_all(&mut session);
        assert!(matches!(&sent[..], [Msg::Finished(f)] if f.lease_id == "a" && f.exit_code == 3));
    }

    #[test]
    fn two_heartbeats_confirm_a_result() {
        let mut session = Session::new(2, OUTPUT_LIMIT);
        start(&mut session, "a", 1);
        session.task_finished(result("a", 1, 0));
        send_all(&mut session);
        for _ in 0..2 {
            assert_eq!(session.undelivered(), 1);
            session.heartbeat_due();
            send_all(&mut session);
        }
        assert_eq!(session.undelivered(), 0);
        session.connection_lost();
        assert!(session.held_for_hello().is_empty());
    }

    #[test]
    fn with_acks_a_result_is_kept_until_the_coordinator_stored_it() {
        let mut session = Session::new(2, OUTPUT_LIMIT);
        session.connected(true);
        start(&mut session, "a", 1);
        session.task_finished(result("a", 1, 0));
        send_all(&mut session);
        for _ in 0..3 {
            session.heartbeat_due();
            send_all(&mut session);
        }
        assert_eq!(session.undelivered(), 1, "heartbeats do not confirm it");
        session.acknowledged("a", 2);
        assert_eq!(session.undelivered(), 1, "an ack of another token does not");
        session.connection_lost();
        session.connected(true);
        let sent = send_all(&mut session);
        assert!(
            matches!(&sent[..], [Msg::Finished(f)] if f.lease_id == "a"),
            "sent again"
        );
        session.acknowledged("a", 1);
        assert_eq!(session.undelivered(), 0);
    }

    #[test]
    fn draining_is_announced_again_on_a_new_stream() {
        let mut session = Session::new(1, OUTPUT_LIMIT);
        session.drain(false);
        assert!(!session.has_message(), "nothing to send while disconnected");
        session.connected(false);
        assert!(matches!(
            session.next_message().and_then(|m| m.msg),
            Some(Msg::Draining(_))
        ));
    }
}
