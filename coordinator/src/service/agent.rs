//! `AgentService.Connect`: one bidirectional stream per agent. The handler turns each message
//! into a scheduler event (see [`convert`](crate::convert)) and each action back into a message.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use drover_proto::v1 as pb;
use drover_scheduler::state::{AgentId, Event, Reply};
use pb::agent_service_server::AgentService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::actor::{Command, Handle};
use crate::auth::{Auth, Denied, Scope, audit_refusal};
use crate::convert;

/// How long a new stream may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued for an agent before it counts as not reading.
const OUTBOUND_QUEUE: usize = 1024;

pub struct AgentSvc {
    actor: Handle,
    auth: Arc<Auth>,
    /// Mutual TLS: an agent must have presented a certificate of the client CA.
    need_certificate: bool,
    next_conn: AtomicU64,
}

impl AgentSvc {
    pub fn new(actor: Handle, auth: Arc<Auth>, need_certificate: bool) -> Self {
        AgentSvc {
            actor,
            auth,
            need_certificate,
            next_conn: AtomicU64::new(1),
        }
    }
}

#[tonic::async_trait]
impl AgentService for AgentSvc {
    type ConnectStream = Pin<Box<dyn Stream<Item = Result<pb::CoordinatorMessage, Status>> + Send>>;

    async fn connect(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let principal = self
            .auth
            .grpc(&request, Scope::Agent, "AgentService/Connect")?;
        let peer = request.remote_addr();
        if self.need_certificate && request.peer_certs().is_none_or(|c| c.is_empty()) {
            tracing::warn!(token = %principal.name, peer = ?peer, "request refused: an agent without a client certificate (mutual TLS)");
            return Err(Status::unauthenticated(
                "this coordinator requires agents to present a client certificate (--tls-cert and --tls-key)",
            ));
        }
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded("no Hello within 10s of opening the stream")
            })??;
        let hello = match first.and_then(|m| m.msg) {
            Some(pb::agent_message::Msg::Hello(h)) => convert::hello(h),
            _ => {
                return Err(Status::invalid_argument(
                    "the first message on the stream must be Hello",
                ));
            }
        };
        if !principal.may_be(&hello.launch_template) {
            let denied = Denied::Template {
                name: principal.name,
                template: hello.launch_template,
            };
            audit_refusal(&denied, peer, "AgentService/Connect");
            return Err(denied.status());
        }
        let name = hello.name.clone();
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let reply = self
            .actor
            .ask(|reply| Command::Connect {
                hello,
                conn,
                tx,
                reply,
            })
            .await?;
        let Reply::Agent(agent) = reply else {
            return Err(Status::internal(format!("Hello answered {reply:?}")));
        };
        // The reader lives as long as the agent's stream and tells the actor when it ends.
        tokio::spawn(read_agent(inbound, self.actor.clone(), agent, conn, name));
        Ok(Response::new(Box::pin(
            ReceiverStream::new(rx).map(|m| Ok(*m)),
        )))
    }
}

/// An agent's stream, message by message, into the actor; then `Gone`. One such task waits
/// on every idle agent, so its future is kept small: between messages it holds the stream,
/// the handle and the agent's name, not a command ([`Handle::send_lean`]).
async fn read_agent(
    mut inbound: Streaming<pb::AgentMessage>,
    actor: Handle,
    agent: AgentId,
    conn: u64,
    name: String,
) {
    loop {
        // The message is taken apart before the await on the actor, so that no message (nor
        // the result it came in) is kept in this future's state.
        let cmd = match inbound.message().await {
            Ok(Some(pb::AgentMessage { msg: Some(msg) })) => {
                match convert::agent_event(agent, msg) {
                    Ok(event) => {
                        if matches!(event, Event::Draining { .. }) {
                            tracing::info!(agent = %name, "agent draining");
                        }
                        Command::FromAgent { agent, conn, event }
                    }
                    Err(e) => {
                        tracing::warn!(agent = %name, error = %e, "agent message ignored");
                        continue;
                    }
                }
            }
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(status) => {
                tracing::info!(agent = %name, %status, "agent stream broke");
                break;
            }
        };
        if actor.send_lean(cmd).await.is_err() {
            break;
        }
    }
    let _ = actor.send_lean(Command::Gone { agent, conn }).await;
}
