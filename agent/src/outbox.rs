//! Messages waiting for the coordinator, kept while the connection is down.
//!
//! Control messages (`Started`, `Finished`) are never dropped. Task output is bounded: past
//! the limit the oldest chunks go, and the next message of that task is preceded by a line
//! saying how much was lost.

use std::collections::{HashMap, VecDeque};

use drover_proto::v1::{AgentMessage, Finished, Output, OutputStream, agent_message::Msg};

/// Output kept while disconnected before the oldest is dropped.
pub(crate) const OUTPUT_LIMIT: usize = 4 * 1024 * 1024;
/// What one queued output message costs beyond its data, so floods of tiny chunks are bounded too.
const OUTPUT_OVERHEAD: usize = 64;

#[derive(Debug)]
pub(crate) struct Outbox {
    queue: VecDeque<AgentMessage>,
    output_bytes: usize,
    output_limit: usize,
    /// Bytes of output dropped per lease and not yet reported: while connected (the task
    /// printed faster than the stream took it) and while not.
    dropped: HashMap<String, Dropped>,
    /// Whether a stream to the coordinator is open.
    connected: bool,
}

#[derive(Debug, Default)]
struct Dropped {
    token: u64,
    connected: usize,
    away: usize,
}

impl Outbox {
    pub(crate) fn new(output_limit: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            output_bytes: 0,
            output_limit,
            dropped: HashMap::new(),
            connected: false,
        }
    }

    pub(crate) fn set_connected(&mut self, connected: bool) {
        self.connected = connected;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub(crate) fn push(&mut self, msg: Msg) {
        self.output_bytes += output_cost(&msg);
        self.queue.push_back(AgentMessage { msg: Some(msg) });
        while self.output_bytes > self.output_limit && self.drop_oldest_output() {}
    }

    /// Puts messages that were sent on a lost connection back in front, in their order.
    pub(crate) fn requeue_front(&mut self, msgs: impl DoubleEndedIterator<Item = Msg>) {
        for msg in msgs.rev() {
            self.output_bytes += output_cost(&msg);
            self.queue.push_front(AgentMessage { msg: Some(msg) });
        }
    }

    /// The next message to send; a marker for dropped output comes before the task's next
    /// message.
    pub(crate) fn pop(&mut self) -> Option<AgentMessage> {
        let front = self.queue.front()?;
        let front_lease = front.msg.as_ref().and_then(lease_of).map(str::to_owned);
        if let Some(lease_id) = front_lease
            && let Some(dropped) = self.dropped.remove(&lease_id)
        {
            return Some(marker(lease_id, &dropped, self.output_limit));
        }
        let msg = self.queue.pop_front()?;
        self.output_bytes -= msg.msg.as_ref().map_or(0, output_cost);
        Some(msg)
    }

    /// Forgets every message of a lease (it was cancelled).
    pub(crate) fn remove_lease(&mut self, lease_id: &str) {
        self.dropped.remove(lease_id);
        let mut freed = 0;
        self.queue.retain(|m| {
            let keep = m.msg.as_ref().and_then(lease_of) != Some(lease_id);
            if !keep {
                freed += m.msg.as_ref().map_or(0, output_cost);
            }
            keep
        });
        self.output_bytes -= freed;
    }

    /// Results waiting to be sent.
    pub(crate) fn finished(&self) -> impl Iterator<Item = &Finished> {
        self.queue.iter().filter_map(|m| match &m.msg {
            Some(Msg::Finished(finished)) => Some(finished),
            _ => None,
        })
    }

    /// Drops the oldest output chunk; false when there is none.
    fn drop_oldest_output(&mut self) -> bool {
        let Some(index) = self
            .queue
            .iter()
            .position(|m| matches!(m.msg, Some(Msg::Output(_))))
        else {
            return false;
        };
        let Some(AgentMessage {
            msg: Some(Msg::Output(output)),
        }) = self.queue.remove(index)
        else {
            return false;
        };
        self.output_bytes -= output.data.len() + OUTPUT_OVERHEAD;
        let entry = self.dropped.entry(output.lease_id).or_default();
        entry.token = output.fencing_token;
        if self.connected {
            entry.connected += output.data.len();
        } else {
            entry.away += output.data.len();
        }
        true
    }
}

fn output_cost(msg: &Msg) -> usize {
    match msg {
        Msg::Output(output) => output.data.len() + OUTPUT_OVERHEAD,
        _ => 0,
    }
}

/// The lease a task message belongs to.
fn lease_of(msg: &Msg) -> Option<&str> {
    match msg {
        Msg::Started(m) => Some(&m.lease_id),
        Msg::Output(m) => Some(&m.lease_id),
        Msg::Finished(m) => Some(&m.lease_id),
        Msg::Hello(_) | Msg::Heartbeat(_) | Msg::Draining(_) => None,
    }
}

fn marker(lease_id: String, dropped: &Dropped, limit: usize) -> AgentMessage {
    let token = dropped.token;
    let mut text = String::new();
    if dropped.away > 0 {
        text.push_str(&format!(
            "\n[drover-agent] {} bytes of output were dropped while the coordinator was unreachable (more than {} KiB waiting)\n",
            dropped.away,
            limit / 1024
        ));
    }
    if dropped.connected > 0 {
        text.push_str(&format!(
            "\n[drover-agent] {} bytes of output were dropped: the task printed faster than they could be sent to the coordinator (more than {} KiB waiting)\n",
            dropped.connected,
            limit / 1024
        ));
    }
    AgentMessage {
        msg: Some(Msg::Output(Output {
            lease_id,
            fencing_token: token,
            stream: OutputStream::Stderr as i32,
            data: text.into_bytes(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use drover_proto::v1::Started;

    use super::*;

    fn output(lease: &str, data: &[u8]) -> Msg {
        Msg::Output(Output {
            lease_id: lease.into(),
            fencing_token: 7,
            stream: OutputStream::Stdout as i32,
            data: data.to_vec(),
        })
    }

    fn finished(lease: &str) -> Msg {
        Msg::Finished(Finished {
            lease_id: lease.into(),
            fencing_token: 7,
            ..Default::default()
        })
    }

    fn drain(outbox: &mut Outbox) -> Vec<Msg> {
        std::iter::from_fn(|| outbox.pop())
            .filter_map(|m| m.msg)
            .collect()
    }

    #[test]
    fn keeps_order_within_the_limit() {
        let mut outbox = Outbox::new(1024);
        outbox.push(Msg::Started(Started {
            lease_id: "a".into(),
            fencing_token: 7,
        }));
        outbox.push(output("a", b"hello"));
        outbox.push(finished("a"));
        let sent = drain(&mut outbox);
        assert!(
            matches!(&sent[..], [Msg::Started(_), Msg::Output(o), Msg::Finished(_)] if o.data == b"hello")
        );
        assert!(outbox.is_empty());
    }

    #[test]
    fn drops_oldest_output_never_results_and_says_so() {
        let limit = 3 * (100 + OUTPUT_OVERHEAD);
        let mut outbox = Outbox::new(limit);
        for i in 0..5u8 {
            outbox.push(output("a", &[i; 100]));
        }
        outbox.push(finished("a"));
        assert_eq!(outbox.finished().count(), 1);
        let sent = drain(&mut outbox);
        let Msg::Output(first) = &sent[0] else {
            panic!("expected the marker first: {sent:?}")
        };
        let marker = String::from_utf8_lossy(&first.data);
        assert!(
            marker
                .contains("200 bytes of output were dropped while the coordinator was unreachable"),
            "{marker}"
        );
        assert_eq!(first.stream, OutputStream::Stderr as i32);
        let kept: Vec<u8> = sent[1..4]
            .iter()
            .map(|m| match m {
                Msg::Output(o) => o.data[0],
                other => panic!("expected output, got {other:?}"),
            })
            .collect();
        assert_eq!(kept, [2, 3, 4], "the oldest chunks go first");
        assert!(matches!(sent[4], Msg::Finished(_)));
        assert_eq!(sent.len(), 5);
    }

    #[test]
    fn output_dropped_while_connected_says_the_task_printed_too_fast() {
        let mut outbox = Outbox::new(2 * (100 + OUTPUT_OVERHEAD));
        outbox.set_connected(true);
        for i in 0..3u8 {
            outbox.push(output("a", &[i; 100]));
        }
        let Msg::Output(first) = &drain(&mut outbox)[0] else {
            panic!("expected the marker first")
        };
        let marker = String::from_utf8_lossy(&first.data);
        assert!(
            marker.contains("100 bytes of output were dropped: the task printed faster"),
            "{marker}"
        );
        assert!(!marker.contains("unreachable"), "{marker}");
    }

    #[test]
    fn requeued_messages_go_first_and_cancel_forgets_a_lease() {
        let mut outbox = Outbox::new(1024);
        outbox.push(output("b", b"x"));
        outbox.push(output("c", b"y"));
        outbox.requeue_front([finished("a"), finished("z")].into_iter());
        outbox.remove_lease("b");
        let sent = drain(&mut outbox);
        let leases: Vec<_> = sent.iter().filter_map(lease_of).collect();
        assert_eq!(leases, ["a", "z", "c"]);
        assert_eq!(outbox.output_bytes, 0);
    }
}
