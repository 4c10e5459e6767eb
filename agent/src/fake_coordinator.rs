//! A stand-in coordinator for tests: a real tonic `AgentService` on 127.0.0.1:0 that hands
//! every stream an agent opens to the test, which then plays the coordinator's part.

use std::time::Duration;

use drover_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use drover_proto::v1::{
    AgentMessage, CoordinatorMessage, Hello, Welcome, agent_message, coordinator_message,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

/// How long a test waits for anything from the agent before it fails.
pub(crate) const PATIENCE: Duration = Duration::from_secs(5);

pub(crate) struct FakeCoordinator {
    pub(crate) url: String,
    streams: mpsc::UnboundedReceiver<FakeStream>,
    server: JoinHandle<()>,
}

impl FakeCoordinator {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let (tx, streams) = mpsc::unbounded_channel();
        let service = AgentServiceServer::new(Service { streams: tx });
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .expect("fake coordinator serves");
        });
        Self {
            url,
            streams,
            server,
        }
    }

    /// The next stream an agent opened.
    pub(crate) async fn accept(&mut self) -> FakeStream {
        tokio::time::timeout(PATIENCE, self.streams.recv())
            .await
            .expect("the agent did not connect in time")
            .expect("the fake coordinator stopped")
    }

    /// The next stream, answered with `Welcome`; returns its `Hello` too.
    pub(crate) async fn accept_welcome(
        &mut self,
        heartbeat_interval_ms: u64,
    ) -> (FakeStream, Hello) {
        let mut stream = self.accept().await;
        let hello = stream.hello().await;
        stream.send(coordinator_message::Msg::Welcome(Welcome {
            agent_id: format!("agent-{}", hello.name),
            heartbeat_interval_ms,
            lease_timeout_ms: 30_000,
            launch_templates: String::new(),
            acks_results: false,
        }));
        (stream, hello)
    }
}

impl Drop for FakeCoordinator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// One agent stream, seen from the coordinator's side.
pub(crate) struct FakeStream {
    inbound: Streaming<AgentMessage>,
    /// Dropped when the agent ends its side, as a real coordinator ends its own then.
    outbound: Option<mpsc::UnboundedSender<Result<CoordinatorMessage, Status>>>,
}

impl FakeStream {
    pub(crate) fn send(&self, msg: coordinator_message::Msg) {
        if let Some(outbound) = &self.outbound {
            let _ = outbound.send(Ok(CoordinatorMessage { msg: Some(msg) }));
        }
    }

    /// Ends the stream with an error status, as a refusing coordinator would.
    pub(crate) fn fail(&self, status: Status) {
        if let Some(outbound) = &self.outbound {
            let _ = outbound.send(Err(status));
        }
    }

    /// The next message from the agent, heartbeats included; `None` when the agent closed
    /// its side (and then this side is closed too).
    pub(crate) async fn next_any(&mut self) -> Option<agent_message::Msg> {
        let msg = tokio::time::timeout(PATIENCE, self.inbound.message())
            .await
            .expect("the agent sent nothing in time")
            .ok()
            .flatten();
        if msg.is_none() {
            self.outbound = None;
        }
        msg.map(|m| m.msg.expect("every agent message has a body"))
    }

    /// The next message that is not a heartbeat.
    pub(crate) async fn next(&mut self) -> agent_message::Msg {
        loop {
            match self.next_any().await.expect("the agent closed the stream") {
                agent_message::Msg::Heartbeat(_) => continue,
                msg => return msg,
            }
        }
    }

    pub(crate) async fn hello(&mut self) -> Hello {
        match self.next().await {
            agent_message::Msg::Hello(hello) => hello,
            other => panic!("expected Hello first, got {other:?}"),
        }
    }

    /// Messages until the agent closes its side, heartbeats left out.
    pub(crate) async fn rest(&mut self) -> Vec<agent_message::Msg> {
        let mut rest = Vec::new();
        while let Some(msg) = self.next_any().await {
            if !matches!(msg, agent_message::Msg::Heartbeat(_)) {
                rest.push(msg);
            }
        }
        rest
    }
}

struct Service {
    streams: mpsc::UnboundedSender<FakeStream>,
}

#[tonic::async_trait]
impl AgentService for Service {
    type ConnectStream = UnboundedReceiverStream<Result<CoordinatorMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let (outbound, rx) = mpsc::unbounded_channel();
        let stream = FakeStream {
            inbound: request.into_inner(),
            outbound: Some(outbound),
        };
        self.streams
            .send(stream)
            .map_err(|_| Status::unavailable("the test is over"))?;
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}
