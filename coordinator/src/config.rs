//! How a coordinator is set up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cache::CacheConfig;

#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// gRPC address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// HTTP address for `/healthz` and `/metrics`.
    pub http_listen: SocketAddr,
    /// Where runs, results and duration history are kept.
    pub data_dir: PathBuf,
    pub heartbeat_interval: Duration,
    pub lease_timeout: Duration,
    /// How long a disconnected agent may take to come back before its leases are revoked.
    pub reconnect_grace: Duration,
    /// A task whose agent is lost this many times fails.
    pub max_lost_attempts: u32,
    /// Runs that ended longer ago than this are forgotten (memory and store); `None` keeps
    /// them forever.
    pub run_retention: Option<Duration>,
    /// How often ended runs are checked against the retention.
    pub retention_sweep_interval: Duration,
    /// Nx's remote cache on the HTTP port: storage, tokens, limits, eviction.
    pub cache: CacheConfig,
}

impl CoordinatorConfig {
    pub fn new(listen: SocketAddr, http_listen: SocketAddr, data_dir: PathBuf) -> Self {
        CoordinatorConfig {
            listen,
            http_listen,
            data_dir,
            heartbeat_interval: Duration::from_secs(1),
            lease_timeout: Duration::from_secs(10),
            reconnect_grace: Duration::from_secs(10),
            max_lost_attempts: 3,
            run_retention: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_sweep_interval: Duration::from_secs(60),
            cache: CacheConfig::default(),
        }
    }
}
