//! `drover coordinator`: serve runs and agents.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use drover_coordinator::cache::{CacheConfig, EvictionPolicy, S3Config, StorageConfig};
use drover_coordinator::{Coordinator, CoordinatorConfig};
use drover_scheduler::Config;

use crate::error::CliError;
use crate::human::{Human, Positive, Size};
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
    /// How often agents heartbeat while the fleet is small (see --max-heartbeat-rate).
    #[arg(long, env = "DROVER_HEARTBEAT_INTERVAL", default_value_t = Human(Config::default().heartbeat_interval))]
    pub heartbeat_interval: Human,
    /// Heartbeats per second to stay under: with more agents than this rate times the
    /// interval, the interval stretches (up to 2/5 of --lease-timeout), and connected agents
    /// are told. 0: never stretch.
    #[arg(long, env = "DROVER_MAX_HEARTBEAT_RATE", default_value_t = Config::default().max_heartbeat_rate)]
    pub max_heartbeat_rate: u32,
    /// A lease whose agent has not been heard from for this long is revoked and its task requeued.
    #[arg(long, env = "DROVER_LEASE_TIMEOUT", default_value_t = Human(Config::default().lease_timeout))]
    pub lease_timeout: Human,
    /// How long an agent whose stream closed may take to reconnect and keep its leases
    /// (default: the lease timeout).
    #[arg(long, env = "DROVER_RECONNECT_GRACE")]
    pub reconnect_grace: Option<Human>,
    /// A task whose agent is lost (silent or gone) this many times fails with that reason.
    #[arg(long, env = "DROVER_MAX_LOST_ATTEMPTS", default_value_t = Config::default().max_lost_attempts, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_lost_attempts: u32,
    /// A re-run pipeline's run (attempt 2 or later) whose ready tasks no agent serves for this
    /// long fails with "You reran only failed jobs, ...": its agents were not re-run.
    #[arg(long, env = "DROVER_RERUN_GRACE", default_value_t = Human(Config::default().rerun_grace))]
    pub rerun_grace: Human,
    /// Runs that ended (succeeded or failed) longer ago than this are forgotten, in memory and
    /// in the data dir; `0` keeps every run forever. Active runs are always kept.
    #[arg(long, env = "DROVER_RUN_RETENTION", default_value_t = Human(CoordinatorConfig::DEFAULT_RUN_RETENTION))]
    pub run_retention: Human,
    /// What one attempt of a task keeps of its output, in DATA_DIR/logs: its first and last
    /// halves of this, with a line saying how much was cut between (at least 1 KiB).
    #[arg(long, env = "DROVER_TASK_LOG_LIMIT", default_value_t = Size(drover_coordinator::logstore::DEFAULT_LIMIT), value_parser = task_log_limit)]
    pub task_log_limit: Size,
    /// The most tasks one submission (one graph) may hold; a larger one is refused with this
    /// limit named. About 1.3 GiB of coordinator memory a million tasks.
    #[arg(long, env = "DROVER_MAX_GRAPH_TASKS", default_value_t = CoordinatorConfig::DEFAULT_MAX_GRAPH_TASKS as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_graph_tasks: u64,
    /// How long an HTTP client may take to send its request headers; an idle keep-alive
    /// connection is closed after as long.
    #[arg(long, env = "DROVER_HTTP_HEADER_TIMEOUT", default_value_t = Positive(drover_coordinator::http_header_timeout_default()), hide = true)]
    pub http_header_timeout: Positive,
    /// How often ended runs are checked against the run retention.
    #[arg(long, env = "DROVER_RETENTION_SWEEP_INTERVAL", default_value_t = Positive(CoordinatorConfig::DEFAULT_RETENTION_SWEEP), hide = true)]
    pub retention_sweep_interval: Positive,
    /// Tokens with scopes: YAML `tokens:` of `{name, sha256, scopes, launch-templates?,
    /// cache-namespace?}` (`drover token new` makes entries). Re-read on SIGHUP. Without it
    /// only loopback addresses are served.
    #[arg(long, env = "DROVER_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,
    /// Serve without tokens on addresses beyond loopback (anyone who reaches the port can run
    /// code on the agents).
    #[arg(long, env = "DROVER_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// TLS on both ports: the coordinator's certificate (PEM, with its chain).
    #[arg(long, env = "DROVER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "DROVER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: gRPC clients (agents) must present a certificate signed by this CA (PEM).
    #[arg(long, env = "DROVER_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Launch templates (Nx's .nx/workflows format) that daemon agents use for repositories
    /// that have none of their own.
    #[arg(long, env = "DROVER_LAUNCH_TEMPLATES")]
    pub launch_templates: Option<PathBuf>,
    /// Send traces to this OTLP/HTTP endpoint (e.g. http://collector:4318): a run is a
    /// trace, each task attempt a span.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// Nx's remote cache on the HTTP port (served once a token is set).
#[derive(Args, Debug)]
pub struct CacheArgs {
    /// Read-write bearer token of the cache; agents get it for every task.
    #[arg(long, env = "DROVER_CACHE_TOKEN", hide_env_values = true)]
    pub cache_token: Option<String>,
    /// Read-only bearer token (PUT answers 403).
    #[arg(long, env = "DROVER_CACHE_READ_TOKEN", hide_env_values = true)]
    pub cache_read_token: Option<String>,
    /// The cache's URL as agents reach it (default: http://<--http-listen>).
    #[arg(long, env = "DROVER_CACHE_URL")]
    pub cache_url: Option<String>,
    /// Where entries live on the local file system (default: <data-dir>/cache).
    #[arg(long, env = "DROVER_CACHE_DIR", conflicts_with = "cache_s3_bucket")]
    pub cache_dir: Option<PathBuf>,
    /// Keep entries in this S3 bucket instead (credentials: the usual AWS_* variables).
    #[arg(long, env = "DROVER_CACHE_S3_BUCKET")]
    pub cache_s3_bucket: Option<String>,
    /// S3-compatible endpoint, e.g. http://minio.internal:9000 (default: AWS).
    #[arg(long, env = "DROVER_CACHE_S3_ENDPOINT", requires = "cache_s3_bucket")]
    pub cache_s3_endpoint: Option<String>,
    /// The bucket's region (default: AWS_REGION, else us-east-1).
    #[arg(long, env = "DROVER_CACHE_S3_REGION", requires = "cache_s3_bucket")]
    pub cache_s3_region: Option<String>,
    /// Key prefix inside the bucket, e.g. nx-cache.
    #[arg(
        long,
        env = "DROVER_CACHE_S3_PREFIX",
        default_value = "",
        requires = "cache_s3_bucket"
    )]
    pub cache_s3_prefix: String,
    /// Largest entry accepted; larger uploads get 413.
    #[arg(long, env = "DROVER_CACHE_MAX_ENTRY_SIZE", default_value_t = Size(CacheConfig::default().max_entry_bytes))]
    pub cache_max_entry_size: Size,
    /// Evict the least recently used entries when the cache grows past this, e.g. 50GiB.
    #[arg(long, env = "DROVER_CACHE_MAX_SIZE")]
    pub cache_max_size: Option<Size>,
    /// Evict entries unused (S3: unwritten) for this long, e.g. 7d.
    #[arg(long, env = "DROVER_CACHE_MAX_AGE")]
    pub cache_max_age: Option<Human>,
    /// How often the eviction policy runs.
    #[arg(long, env = "DROVER_CACHE_PRUNE_INTERVAL", default_value_t = Positive(CacheConfig::default().prune_interval))]
    pub cache_prune_interval: Positive,
}

impl CacheArgs {
    pub fn config(&self) -> CacheConfig {
        let storage = match (&self.cache_s3_bucket, &self.cache_dir) {
            (Some(bucket), _) => Some(StorageConfig::S3(S3Config {
                bucket: bucket.clone(),
                endpoint: self.cache_s3_endpoint.clone(),
                region: self.cache_s3_region.clone(),
                prefix: self.cache_s3_prefix.clone(),
            })),
            (None, Some(dir)) => Some(StorageConfig::Local { dir: dir.clone() }),
            (None, None) => None,
        };
        CacheConfig {
            storage,
            token: self.cache_token.clone().filter(|t| !t.is_empty()),
            read_token: self.cache_read_token.clone().filter(|t| !t.is_empty()),
            max_entry_bytes: self.cache_max_entry_size.0,
            policy: EvictionPolicy {
                max_total_bytes: self.cache_max_size.map(|s| s.0),
                max_age: self.cache_max_age.map(|d| d.0),
            },
            prune_interval: self.cache_prune_interval.0,
            public_url: self.cache_url.clone(),
        }
    }
}

pub async fn run(args: CoordinatorArgs) -> Result<u8, CliError> {
    let mut config = CoordinatorConfig::new(args.listen, args.http_listen, args.data_dir);
    let s = &mut config.scheduling;
    s.heartbeat_interval = args.heartbeat_interval.0;
    s.max_heartbeat_rate = args.max_heartbeat_rate;
    s.lease_timeout = args.lease_timeout.0;
    s.reconnect_grace = args.reconnect_grace.unwrap_or(args.lease_timeout).0;
    s.max_lost_attempts = args.max_lost_attempts;
    s.rerun_grace = args.rerun_grace.0;
    config.run_retention = (!args.run_retention.0.is_zero()).then_some(args.run_retention.0);
    config.retention_sweep_interval = args.retention_sweep_interval.0;
    config.task_log_limit = args.task_log_limit.0;
    config.http_header_timeout = args.http_header_timeout.0;
    config.max_graph_tasks = usize::try_from(args.max_graph_tasks).unwrap_or(usize::MAX);
    config.cache = args.cache.config();
    config.auth_file = args.auth_file;
    config.insecure_no_auth = args.insecure_no_auth;
    config.launch_templates = args.launch_templates;
    config.otlp_endpoint = args.otlp_endpoint.filter(|e| !e.trim().is_empty());
    config.tls = args
        .tls_cert
        .zip(args.tls_key)
        .map(|(cert, key)| drover_coordinator::TlsConfig {
            cert,
            key,
            client_ca: args.tls_client_ca,
        });
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

fn task_log_limit(s: &str) -> Result<Size, String> {
    let size: Size = s.parse()?;
    if size.0 < 1024 {
        return Err(format!(
            "`{s}` is too small: a task's log keeps at least 1 KiB"
        ));
    }
    Ok(size)
}
