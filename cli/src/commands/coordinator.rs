//! `drover coordinator`: serve runs and agents.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use drover_coordinator::cache::{CacheConfig, EvictionPolicy, S3Config, StorageConfig};
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
    /// A task whose agent is lost (silent or gone) this many times fails with that reason.
    #[arg(long, env = "DROVER_MAX_LOST_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_lost_attempts: u32,
    /// Runs that ended (succeeded or failed) longer ago than this are forgotten, in memory and
    /// in the data dir; `0` keeps every run forever. Active runs are always kept.
    #[arg(long, env = "DROVER_RUN_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub run_retention: Duration,
    /// How often ended runs are checked against the run retention.
    #[arg(long, env = "DROVER_RETENTION_SWEEP_INTERVAL", default_value = "1m", value_parser = parse_positive_duration, hide = true)]
    pub retention_sweep_interval: Duration,
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
    #[arg(long, env = "DROVER_CACHE_MAX_ENTRY_SIZE", default_value = "2GiB", value_parser = parse_size)]
    pub cache_max_entry_size: u64,
    /// Evict the least recently used entries when the cache grows past this, e.g. 50GiB.
    #[arg(long, env = "DROVER_CACHE_MAX_SIZE", value_parser = parse_size)]
    pub cache_max_size: Option<u64>,
    /// Evict entries unused (S3: unwritten) for this long, e.g. 7d.
    #[arg(long, env = "DROVER_CACHE_MAX_AGE", value_parser = parse_duration)]
    pub cache_max_age: Option<Duration>,
    /// How often the eviction policy runs.
    #[arg(long, env = "DROVER_CACHE_PRUNE_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub cache_prune_interval: Duration,
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
            max_entry_bytes: self.cache_max_entry_size,
            policy: EvictionPolicy {
                max_total_bytes: self.cache_max_size,
                max_age: self.cache_max_age,
            },
            prune_interval: self.cache_prune_interval,
            public_url: self.cache_url.clone(),
        }
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    drover_coordinator::cache::parse_size(s)
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    drover_scheduler::duration::parse_duration(s)
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        Duration::ZERO => Err(format!("`{s}` must be longer than zero")),
        d => Ok(d),
    }
}

pub async fn run(args: CoordinatorArgs) -> Result<u8, CliError> {
    let mut config = CoordinatorConfig::new(args.listen, args.http_listen, args.data_dir);
    config.heartbeat_interval = args.heartbeat_interval;
    config.lease_timeout = args.lease_timeout;
    config.reconnect_grace = args.reconnect_grace.unwrap_or(args.lease_timeout);
    config.max_lost_attempts = args.max_lost_attempts;
    config.run_retention = (!args.run_retention.is_zero()).then_some(args.run_retention);
    config.retention_sweep_interval = args.retention_sweep_interval;
    config.cache = args.cache.config();
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
