//! How every client (agents, the main job's commands, operators' commands) reaches the
//! coordinator: one address normalisation and one set of connection settings.

use std::time::Duration;

use tonic::transport::Endpoint;

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

/// The coordinator's address, normalised (`http://` added when no scheme is given), and an
/// endpoint for it: TCP_NODELAY, a connect timeout, HTTP/2 keepalives.
pub fn coordinator_endpoint(address: &str) -> Result<(String, Endpoint), BadAddress> {
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
    if url.starts_with("https://") {
        return Err(invalid(
            "TLS (https://) is not supported by this build yet; use http://".into(),
        ));
    }
    if !url.starts_with("http://") {
        return Err(invalid("the address must start with http://".into()));
    }
    let endpoint = Endpoint::from_shared(url.clone()).map_err(|e| invalid(e.to_string()))?;
    if endpoint.uri().host().is_none_or(str::is_empty) {
        return Err(invalid("the address has no host".into()));
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
        let (url, _) = coordinator_endpoint(" 127.0.0.1:50051 ").unwrap();
        assert_eq!(url, "http://127.0.0.1:50051");
        let (url, _) = coordinator_endpoint("http://drover.internal:50051").unwrap();
        assert_eq!(url, "http://drover.internal:50051");
        let e = coordinator_endpoint("ftp://x:1").unwrap_err();
        assert!(e.to_string().contains("must start with http://"), "{e}");
        let e = coordinator_endpoint("http://:1").unwrap_err();
        assert!(e.to_string().contains("`http://:1`"), "{e}");
    }
}
