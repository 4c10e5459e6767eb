//! Connecting to the coordinator.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::error::CliError;

/// A lazily connected channel: the first request connects, and a broken connection is
/// re-established on the next request.
pub fn channel(url: &str) -> Result<Channel, CliError> {
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| CliError::Usage(format!("`{url}` is not a coordinator URL ({e})")))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_lazy())
}
