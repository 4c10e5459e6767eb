//! `AgentService.Connect`: one bidirectional stream per agent.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use drover_proto::v1 as pb;
use drover_scheduler::state::{Held, Hello};
use pb::agent_service_server::AgentService;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::actor::{Command, Handle};

/// How long a new stream may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub struct AgentSvc {
    actor: Handle,
    next_conn: AtomicU64,
}

impl AgentSvc {
    pub fn new(actor: Handle) -> Self {
        AgentSvc {
            actor,
            next_conn: AtomicU64::new(1),
        }
    }
}

fn hello_from_proto(h: pb::Hello) -> Hello {
    Hello {
        name: h.name,
        instance_id: h.instance_id,
        launch_template: h.launch_template,
        slots: h.slots,
        ci_execution_id: (!h.ci_execution_id.is_empty()).then_some(h.ci_execution_id),
        held: h
            .held_leases
            .iter()
            .filter_map(|l| {
                Some(Held {
                    lease: l.lease_id.parse().ok()?,
                    token: l.fencing_token,
                })
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl AgentService for AgentSvc {
    type ConnectStream = Pin<Box<dyn Stream<Item = Result<pb::CoordinatorMessage, Status>> + Send>>;

    async fn connect(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded("no Hello within 10s of opening the stream")
            })??;
        let hello = match first.and_then(|m| m.msg) {
            Some(pb::agent_message::Msg::Hello(h)) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message on the stream must be Hello",
                ));
            }
        };
        let name = hello.name.clone();
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(1024);
        let agent = self
            .actor
            .ask(|reply| Command::Hello {
                hello: hello_from_proto(hello),
                conn,
                tx,
                reply,
            })
            .await?;
        // The reader lives as long as the agent's stream and tells the actor when it ends.
        let actor = self.actor.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(pb::AgentMessage { msg: Some(msg) })) => {
                        if actor
                            .send(Command::FromAgent { agent, conn, msg })
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(status) => {
                        tracing::info!(agent = %name, %status, "agent stream broke");
                        break;
                    }
                }
            }
            let _ = actor.send(Command::AgentGone { agent, conn }).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
