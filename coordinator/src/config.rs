//! How a coordinator is set up. The scheduling settings are the scheduler's own
//! [`Config`](drover_scheduler::Config), with its defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use drover_scheduler::Config;

use crate::cache::CacheConfig;
use crate::tls::TlsConfig;

#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// gRPC address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// HTTP address for `/healthz`, `/metrics` and the cache.
    pub http_listen: SocketAddr,
    /// Where runs, results and duration history are kept.
    pub data_dir: PathBuf,
    /// Heartbeats, lease timeout, reconnect grace, lost attempts.
    pub scheduling: Config,
    /// Runs that ended longer ago than this are forgotten (memory and store); `None` keeps
    /// them forever.
    pub run_retention: Option<Duration>,
    /// How often ended runs are checked against the retention.
    pub retention_sweep_interval: Duration,
    /// Nx's remote cache on the HTTP port: storage, tokens, limits, eviction.
    pub cache: CacheConfig,
    /// Tokens with scopes (`--auth-file`); without one, only loopback addresses are served.
    pub auth_file: Option<PathBuf>,
    /// Serve without tokens beyond loopback (`--insecure-no-auth`).
    pub insecure_no_auth: bool,
    /// TLS on both ports.
    pub tls: Option<TlsConfig>,
    /// Send traces (a run a trace, a task attempt a span) to this OTLP/HTTP endpoint.
    pub otlp_endpoint: Option<String>,
    /// Launch templates (Nx's `.nx/workflows` format) for repositories that have none.
    pub launch_templates: Option<PathBuf>,
    /// What one attempt of a task keeps of its output: its first and last halves of this.
    pub task_log_limit: u64,
    /// How long an HTTP client may take to send its request headers (and an idle keep-alive
    /// connection may stay open).
    pub http_header_timeout: Duration,
    /// The most tasks one submission may hold (`--max-graph-tasks`).
    pub max_graph_tasks: usize,
}

impl CoordinatorConfig {
    pub const DEFAULT_RUN_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
    pub const DEFAULT_RETENTION_SWEEP: Duration = Duration::from_secs(60);
    /// A submission's tasks at most, by default: twice the million-task graph measured in
    /// the README (about 1.3 GiB of coordinator memory each million).
    pub const DEFAULT_MAX_GRAPH_TASKS: usize = 2_000_000;

    pub fn new(listen: SocketAddr, http_listen: SocketAddr, data_dir: PathBuf) -> Self {
        CoordinatorConfig {
            listen,
            http_listen,
            data_dir,
            scheduling: Config::default(),
            run_retention: Some(Self::DEFAULT_RUN_RETENTION),
            retention_sweep_interval: Self::DEFAULT_RETENTION_SWEEP,
            cache: CacheConfig::default(),
            auth_file: None,
            insecure_no_auth: false,
            tls: None,
            otlp_endpoint: None,
            launch_templates: None,
            task_log_limit: crate::logstore::DEFAULT_LIMIT,
            http_header_timeout: crate::http::HEADER_TIMEOUT,
            max_graph_tasks: Self::DEFAULT_MAX_GRAPH_TASKS,
        }
    }
}
