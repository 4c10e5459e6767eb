//! The open agent streams: which connection is an agent's current one, and sending to it.

use std::collections::HashMap;

use drover_proto::v1 as pb;
use drover_scheduler::state::AgentId;
use tokio::sync::mpsc;

/// Messages to an agent's stream, boxed: a channel allocates its slots 32 at a time, and a
/// slot of the message itself would cost kilobytes per idle agent.
pub type AgentTx = mpsc::Sender<Box<pb::CoordinatorMessage>>;

struct Conn {
    conn: u64,
    tx: AgentTx,
}

#[derive(Default)]
pub struct Conns {
    by_agent: HashMap<AgentId, Conn>,
}

impl Conns {
    /// The agent's stream is this connection from now on (a reconnect replaces the old one).
    pub fn open(&mut self, agent: AgentId, conn: u64, tx: AgentTx) {
        self.by_agent.insert(agent, Conn { conn, tx });
    }

    /// Whether `conn` is the agent's current connection (messages from an older one of the
    /// same agent are stale).
    pub fn is_current(&self, agent: AgentId, conn: u64) -> bool {
        self.by_agent.get(&agent).is_some_and(|c| c.conn == conn)
    }

    /// Drops the agent's stream: the agent sees it end.
    pub fn close(&mut self, agent: AgentId) {
        self.by_agent.remove(&agent);
    }

    /// The agent's current stream, if it has one.
    pub fn sender(&self, agent: AgentId) -> Option<AgentTx> {
        self.by_agent.get(&agent).map(|c| c.tx.clone())
    }
}
