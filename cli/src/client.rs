//! Connecting to the coordinator.

use tonic::transport::Channel;

use crate::error::CliError;

/// A lazily connected channel: the first request connects, and a broken connection is
/// re-established on the next request.
pub fn channel(url: &str) -> Result<Channel, CliError> {
    let (_, endpoint) =
        drover_proto::coordinator_endpoint(url).map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(endpoint.connect_lazy())
}
