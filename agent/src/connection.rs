//! Opening the stream to the coordinator: the endpoint, one attempt (connect, `Hello`, wait
//! for `Welcome`), and what a failed attempt means. The retry loop lives in `agent.rs`.

use drover_proto::v1::agent_service_client::AgentServiceClient;
use drover_proto::v1::{
    AgentMessage, CoordinatorMessage, Hello, Welcome, agent_message, coordinator_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tonic::{Code, Status, Streaming};

use crate::error::{AgentError, error_chain};
use drover_proto::{Bearer, ClientTls};

/// Messages handed to the stream but not yet written; kept small, because what sits here
/// when the connection drops is lost (results are resent, output is not).
const OUTBOUND_QUEUE: usize = 16;
/// The coordinator's address, normalised, and an endpoint for it (the one every client uses).
pub(crate) fn endpoint(address: &str, tls: &ClientTls) -> Result<(String, Endpoint), AgentError> {
    drover_proto::coordinator_endpoint(address, tls).map_err(|e| {
        AgentError::InvalidCoordinatorUrl {
            url: e.address,
            reason: e.reason,
        }
    })
}

/// An open stream that got its `Welcome`.
pub(crate) struct Connection {
    pub(crate) tx: mpsc::Sender<AgentMessage>,
    pub(crate) inbound: Streaming<CoordinatorMessage>,
    pub(crate) welcome: Welcome,
}

/// How the coordinator answered `Hello`.
pub(crate) enum Opened {
    Welcome(Box<Connection>),
    /// This agent is not needed (its CI run is already over).
    Stopped(String),
}

/// Why an attempt failed.
#[derive(Debug)]
pub(crate) enum AttemptError {
    /// Worth retrying: the coordinator is down, restarting, or the network is.
    Transient(String),
    /// Retrying would not help.
    Fatal(AgentError),
}

/// One attempt: connect, send `Hello`, wait for the answer.
pub(crate) async fn open(
    endpoint: Endpoint,
    url: String,
    hello: Hello,
    bearer: Bearer,
) -> Result<Opened, AttemptError> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| AttemptError::Transient(error_chain(&e)))?;
    let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
    let hello = AgentMessage {
        msg: Some(agent_message::Msg::Hello(hello)),
    };
    // The channel is new and empty, so this cannot fail; the coordinator answers only after Hello.
    let _ = tx.try_send(hello);
    let response = AgentServiceClient::with_interceptor(channel, bearer)
        .connect(ReceiverStream::new(rx))
        .await
        .map_err(|status| classify(&url, &status))?;
    let mut inbound = response.into_inner();
    let first = inbound
        .message()
        .await
        .map_err(|status| classify(&url, &status))?;
    match first.map(|m| m.msg) {
        Some(Some(coordinator_message::Msg::Welcome(welcome))) => {
            let connection = Connection {
                tx,
                inbound,
                welcome,
            };
            Ok(Opened::Welcome(Box::new(connection)))
        }
        Some(Some(coordinator_message::Msg::Stop(stop))) => Ok(Opened::Stopped(stop.reason)),
        Some(other) => Err(AttemptError::Fatal(AgentError::Protocol {
            url,
            message: format!(
                "the coordinator answered Hello with {} instead of Welcome",
                describe(other.as_ref())
            ),
        })),
        None => Err(AttemptError::Transient(
            "the coordinator closed the stream without answering Hello".into(),
        )),
    }
}

/// Sorts a gRPC status into "try again" and "give up".
pub(crate) fn classify(url: &str, status: &Status) -> AttemptError {
    let mut message = if status.message().is_empty() {
        status.code().description().to_owned()
    } else {
        status.message().to_owned()
    };
    if let Some(source) = std::error::Error::source(status) {
        message = format!("{message}: {}", error_chain(source));
    }
    let rejected = |message: String| {
        AttemptError::Fatal(AgentError::Rejected {
            url: url.to_owned(),
            code: format!("{:?}", status.code()),
            message,
        })
    };
    match status.code() {
        Code::Unimplemented => rejected(format!(
            "{message}; the server does not implement drover.v1.AgentService: is {url} a Drover coordinator's gRPC port?"
        )),
        // A rerun guard refusal may be a main job not rerun yet: keep trying until the connect
        // timeout, then say it in its own words.
        Code::FailedPrecondition if message.starts_with("You reran only failed jobs") => {
            AttemptError::Transient(message)
        }
        // NotFound is not here: it most likely means "no such run yet", which can change.
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::OutOfRange => rejected(message),
        code => AttemptError::Transient(format!("{code:?}: {message}")),
    }
}

/// A coordinator message named for an error text.
pub(crate) fn describe(msg: Option<&coordinator_message::Msg>) -> &'static str {
    match msg {
        Some(coordinator_message::Msg::Welcome(_)) => "Welcome",
        Some(coordinator_message::Msg::Lease(_)) => "Lease",
        Some(coordinator_message::Msg::Cancel(_)) => "Cancel",
        Some(coordinator_message::Msg::Stop(_)) => "Stop",
        Some(coordinator_message::Msg::Settings(_)) => "Settings",
        Some(coordinator_message::Msg::Ack(_)) => "Ack",
        None => "a message this agent does not understand",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalised_and_checked() {
        let (url, _) =
            endpoint("127.0.0.1:50051", &ClientTls::default()).expect("host:port is fine");
        assert_eq!(url, "http://127.0.0.1:50051");
        let (url, _) =
            endpoint("http://coordinator:50051", &ClientTls::default()).expect("http is fine");
        assert_eq!(url, "http://coordinator:50051");
        let (url, _) =
            endpoint("https://coordinator", &ClientTls::default()).expect("https is fine");
        assert_eq!(url, "https://coordinator");
        let err = endpoint("ftp://coordinator", &ClientTls::default()).expect_err("ftp is refused");
        assert!(err.to_string().contains("http://"), "{err}");
    }

    #[test]
    fn refusals_are_fatal_and_outages_are_not() {
        let url = "http://c:1";
        assert!(matches!(
            classify(url, &Status::unavailable("restarting")),
            AttemptError::Transient(_)
        ));
        assert!(matches!(
            classify(url, &Status::internal("h2 reset")),
            AttemptError::Transient(_)
        ));
        assert!(matches!(
            classify(url, &Status::not_found("no run for CI execution 42 yet")),
            AttemptError::Transient(_)
        ));
        let AttemptError::Fatal(err) = classify(url, &Status::unauthenticated("bad token")) else {
            panic!("an unauthenticated agent cannot retry its way in");
        };
        assert!(err.to_string().contains("bad token"), "{err}");
        let AttemptError::Fatal(err) = classify(url, &Status::unimplemented("")) else {
            panic!("a server without AgentService is not a coordinator");
        };
        assert!(err.to_string().contains("drover.v1.AgentService"), "{err}");
    }
}
