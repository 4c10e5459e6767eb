//! Connecting to the coordinator: one address, TLS and token handling for every command.

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::commands::CoordinatorUrl;
use crate::error::CliError;

/// A channel to the coordinator that sends the token with every request.
pub type Conn = InterceptedService<Channel, drover_proto::Bearer>;

/// A lazily connected channel: the first request connects, and a broken connection is
/// re-established on the next request.
pub fn connect(c: &CoordinatorUrl) -> Result<Conn, CliError> {
    let (_, endpoint) = drover_proto::coordinator_endpoint(&c.url, &c.tls())
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let bearer = drover_proto::Bearer::new(c.token.as_deref())
        .map_err(|e| CliError::Usage(format!("--token: {e}")))?;
    Ok(InterceptedService::new(endpoint.connect_lazy(), bearer))
}

/// An HTTP client for the coordinator's HTTP port (cache, metrics): the system's roots, or the
/// CA given, for https:// addresses.
pub fn http_client(ca_cert: Option<&std::path::Path>) -> Result<reqwest::Client, CliError> {
    let mut builder = reqwest::Client::builder();
    if let Some(ca) = ca_cert {
        let pem = std::fs::read(ca)
            .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", ca.display())))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
            CliError::Usage(format!("{}: not a PEM certificate: {e}", ca.display()))
        })?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build()
        .map_err(|e| CliError::Io(format!("cannot set up HTTPS: {e}")))
}
