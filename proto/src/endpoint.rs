//! How every client (agents, the main job's commands, operators' commands) reaches the
//! coordinator: one address normalisation and one set of connection settings.

use std::path::PathBuf;
use std::time::Duration;

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings find a silently dead connection (a cut network sends no reset).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A coordinator address that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("`{address}` is not a coordinator address: {reason}")]
pub struct BadAddress {
    pub address: String,
    pub reason: String,
}

/// How a client proves the coordinator is who it says and, for mutual TLS, who the client is.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// Trust this CA (PEM) for `https://` addresses; the system's roots when `None`.
    pub ca_cert: Option<PathBuf>,
    /// A client certificate and key (PEM) for a coordinator that asks for one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl ClientTls {
    fn config(&self, address: &str) -> Result<ClientTlsConfig, BadAddress> {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| BadAddress {
                address: address.to_owned(),
                reason: format!("cannot read {}: {e}", p.display()),
            })
        };
        let mut config = ClientTlsConfig::new();
        config = match &self.ca_cert {
            Some(ca) => config.ca_certificate(Certificate::from_pem(read(ca)?)),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        Ok(config)
    }
}

/// Adds `authorization: Bearer TOKEN` to every request (nothing without a token).
#[derive(Clone, Debug, Default)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl Bearer {
    /// A token that cannot be a header value is refused here, with a message that does not
    /// repeat it.
    pub fn new(token: Option<&str>) -> Result<Bearer, String> {
        match token.map(str::trim).filter(|t| !t.is_empty()) {
            None => Ok(Bearer(None)),
            Some(t) => MetadataValue::try_from(format!("Bearer {t}"))
                .map(|v| Bearer(Some(v)))
                .map_err(|_| "the token holds characters a header cannot carry".to_string()),
        }
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// The coordinator's address, normalised (`http://` added when no scheme is given), and an
/// endpoint for it: TLS for `https://` (see [`ClientTls`]), TCP_NODELAY, a connect timeout,
/// HTTP/2 keepalives.
pub fn coordinator_endpoint(
    address: &str,
    tls: &ClientTls,
) -> Result<(String, Endpoint), BadAddress> {
    let address = address.trim();
    let url = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    let invalid = |reason: String| BadAddress {
        address: address.to_owned(),
        reason,
    };
    let https = url.starts_with("https://");
    if !https && !url.starts_with("http://") {
        return Err(invalid(
            "the address must start with http:// or https://".into(),
        ));
    }
    let mut endpoint = Endpoint::from_shared(url.clone()).map_err(|e| invalid(e.to_string()))?;
    if endpoint.uri().host().is_none_or(str::is_empty) {
        return Err(invalid("the address has no host".into()));
    }
    if https {
        endpoint = endpoint
            .tls_config(tls.config(address)?)
            .map_err(|e| invalid(e.to_string()))?;
    }
    let endpoint = endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    Ok((url, endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalised_and_checked() {
        let tls = ClientTls::default();
        let (url, _) = coordinator_endpoint(" 127.0.0.1:50051 ", &tls).unwrap();
        assert_eq!(url, "http://127.0.0.1:50051");
        let (url, _) = coordinator_endpoint("http://drover.internal:50051", &tls).unwrap();
        assert_eq!(url, "http://drover.internal:50051");
        let (url, _) = coordinator_endpoint("https://drover.internal:50051", &tls).unwrap();
        assert_eq!(url, "https://drover.internal:50051");
        let e = coordinator_endpoint("ftp://x:1", &tls).unwrap_err();
        assert!(e.to_string().contains("must start with http://"), "{e}");
        let missing = ClientTls {
            ca_cert: Some("/no/such/ca.pem".into()),
            identity: None,
        };
        let e = coordinator_endpoint("https://x:1", &missing).unwrap_err();
        assert!(e.to_string().contains("/no/such/ca.pem"), "{e}");
        let e = coordinator_endpoint("http://:1", &tls).unwrap_err();
        assert!(e.to_string().contains("`http://:1`"), "{e}");
    }
}
