//! `drover coordinator`: serve runs and agents.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use drover_coordinator::{Coordinator, CoordinatorConfig};

use crate::error::CliError;
use crate::signals::shutdown_signal;

#[derive(Args, Debug)]
pub struct CoordinatorArgs {
    /// gRPC address for agents, main jobs and operators (port 0 picks a free port).
    #[arg(long, env = "DROVER_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// HTTP address for /healthz and /metrics.
    #[arg(long, env = "DROVER_HTTP_LISTEN", default_value = "127.0.0.1:50052")]
    pub http_listen: SocketAddr,
    /// Where runs, results and duration history are kept.
    #[arg(long, env = "DROVER_DATA_DIR", default_value = ".drover/data")]
    pub data_dir: PathBuf,
    /// How often agents heartbeat.
    #[arg(long, env = "DROVER_HEARTBEAT_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// A lease whose agent has not been heard from for this long is revoked and its task requeued.
    #[arg(long, env = "DROVER_LEASE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub lease_timeout: Duration,
    /// How long an agent whose stream closed may take to reconnect and keep its leases
    /// (default: the lease timeout).
    #[arg(long, env = "DROVER_RECONNECT_GRACE", value_parser = parse_duration)]
    pub reconnect_grace: Option<Duration>,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    drover_scheduler::duration::parse_duration(s)
}

pub async fn run(args: CoordinatorArgs) -> Result<u8, CliError> {
    let mut config = CoordinatorConfig::new(args.listen, args.http_listen, args.data_dir);
    config.heartbeat_interval = args.heartbeat_interval;
    config.lease_timeout = args.lease_timeout;
    config.reconnect_grace = args.reconnect_grace.unwrap_or(args.lease_timeout);
    let coordinator = Coordinator::bind(config).await?;
    // Tests and scripts read this line to find the ports.
    out!(
        "drover coordinator listening grpc={} http={}",
        coordinator.grpc_addr(),
        coordinator.http_addr()
    );
    coordinator.serve(shutdown_signal()).await?;
    Ok(0)
}
