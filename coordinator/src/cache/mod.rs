//! Nx's self-hosted remote cache, served on the coordinator's HTTP port.
//!
//! The API is Nx's OpenAPI spec for a custom remote cache (Nx 20.8 and later):
//!
//! | request | answers |
//! |---|---|
//! | `PUT /v1/cache/{hash}` (tar body, `Content-Length`) | 200 stored, 409 already there, 403 read-only token, 413 over the size limit |
//! | `GET /v1/cache/{hash}` | 200 with the tar, 404 not there |
//! | either, without a valid `Authorization: Bearer TOKEN` (when tokens are configured) | 401 with a text body |
//!
//! Blobs stream straight to the storage backend (a file under the data dir, or S3-compatible
//! object storage) and back: an upload never sits whole in memory. Drover adds two operator
//! endpoints on the same port, `GET /drover/cache/stats` and `POST /drover/cache/prune`, and
//! an eviction policy (total size and age) applied on a timer and on request.

mod backend;
mod evict;
mod local;
mod routes;
mod s3;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};

pub use backend::{Backend, CacheError, EntryMeta};
pub use evict::{EvictionPolicy, choose_evictions};
pub use routes::router;

use crate::error::CoordError;

/// Where cache blobs live.
#[derive(Clone, Debug)]
pub enum StorageConfig {
    /// Files under this directory (default: `<data-dir>/cache`).
    Local { dir: PathBuf },
    /// An S3-compatible bucket; credentials come from the usual `AWS_*` variables.
    S3(S3Config),
}

#[derive(Clone, Debug, Default)]
pub struct S3Config {
    pub bucket: String,
    /// e.g. `http://127.0.0.1:9000` for MinIO or moto; empty: AWS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Key prefix inside the bucket, e.g. `nx-cache/`.
    pub prefix: String,
}

#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// `None`: `<data-dir>/cache` on the local file system.
    pub storage: Option<StorageConfig>,
    /// Read-write token (agents, and the main job if it may write).
    pub token: Option<String>,
    /// Read-only token (e.g. developers' machines).
    pub read_token: Option<String>,
    /// Largest accepted entry; a larger upload gets 413.
    pub max_entry_bytes: u64,
    pub policy: EvictionPolicy,
    /// How often the eviction policy runs.
    pub prune_interval: Duration,
    /// The URL agents use to reach the cache (default: `http://<http address>`).
    pub public_url: Option<String>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            storage: None,
            token: None,
            read_token: None,
            max_entry_bytes: 2 << 30,
            policy: EvictionPolicy::default(),
            prune_interval: Duration::from_secs(300),
            public_url: None,
        }
    }
}

impl CacheConfig {
    /// The cache's own tokens, for [`Auth`](crate::auth::Auth).
    pub fn tokens(&self) -> crate::auth::CacheTokens {
        crate::auth::CacheTokens {
            write: self.token.clone().filter(|t| !t.is_empty()),
            read: self.read_token.clone().filter(|t| !t.is_empty()),
        }
    }
}

/// Counters since the coordinator started; `/metrics` exports the same counters.
#[derive(Default)]
pub struct Counters {
    pub hits: Counter,
    pub misses: Counter,
    pub stored: Counter,
    pub conflicts: Counter,
    pub too_large: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub evicted: Counter,
}

/// What `GET /drover/cache/stats` answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stats {
    pub backend: String,
    pub entries: u64,
    pub bytes: u64,
    pub hits: u64,
    pub misses: u64,
    pub stored: u64,
    pub conflicts: u64,
    pub too_large: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub evicted: u64,
    pub max_entry_bytes: u64,
    pub max_total_bytes: Option<u64>,
    pub max_age_secs: Option<u64>,
}

/// What `POST /drover/cache/prune` answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PruneReport {
    pub removed: u64,
    pub removed_bytes: u64,
    pub entries: u64,
    pub bytes: u64,
}

/// The cache: a backend, the tokens, the limits and the counters. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    max_entry_bytes: u64,
    policy: EvictionPolicy,
    prune_interval: Duration,
    counters: Counters,
    /// One prune at a time.
    pruning: tokio::sync::Mutex<()>,
}

impl Cache {
    /// Opens the backend named by `config` (`data_dir/cache` by default).
    pub async fn open(
        config: &CacheConfig,
        data_dir: &std::path::Path,
    ) -> Result<Cache, CoordError> {
        let storage = config.storage.clone().unwrap_or(StorageConfig::Local {
            dir: data_dir.join("cache"),
        });
        let backend = match storage {
            StorageConfig::Local { dir } => Backend::Local(local::LocalStore::open(dir).await?),
            StorageConfig::S3(s3) => {
                Backend::S3(s3::S3Store::open(&s3).map_err(CoordError::Cache)?)
            }
        };
        tracing::info!(
            backend = %backend.describe(),
            "cache: serving Nx's remote cache API on the HTTP port"
        );
        Ok(Cache {
            inner: Arc::new(Inner {
                backend,
                max_entry_bytes: config.max_entry_bytes,
                policy: config.policy,
                prune_interval: config.prune_interval,
                counters: Counters::default(),
                pruning: tokio::sync::Mutex::new(()),
            }),
        })
    }

    pub fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    pub fn max_entry_bytes(&self) -> u64 {
        self.inner.max_entry_bytes
    }

    /// Every entry's key, size and age, and the counters.
    pub async fn stats(&self) -> Result<Stats, CacheError> {
        let entries = self.inner.backend.list().await?;
        let c = &self.inner.counters;
        let get = |a: &Counter| a.get();
        Ok(Stats {
            backend: self.inner.backend.describe(),
            entries: entries.len() as u64,
            bytes: entries.iter().map(|e| e.size).sum(),
            hits: get(&c.hits),
            misses: get(&c.misses),
            stored: get(&c.stored),
            conflicts: get(&c.conflicts),
            too_large: get(&c.too_large),
            bytes_in: get(&c.bytes_in),
            bytes_out: get(&c.bytes_out),
            evicted: get(&c.evicted),
            max_entry_bytes: self.inner.max_entry_bytes,
            max_total_bytes: self.inner.policy.max_total_bytes,
            max_age_secs: self.inner.policy.max_age.map(|d| d.as_secs()),
        })
    }

    /// Applies the eviction policy; with `everything`, empties the cache.
    pub async fn prune(&self, everything: bool) -> Result<PruneReport, CacheError> {
        let _one_at_a_time = self.inner.pruning.lock().await;
        let entries = self.inner.backend.list().await?;
        let policy = if everything {
            EvictionPolicy {
                max_total_bytes: Some(0),
                max_age: None,
            }
        } else {
            self.inner.policy
        };
        let doomed = choose_evictions(&entries, &policy, SystemTime::now());
        let mut removed = 0;
        let mut removed_bytes = 0;
        for i in &doomed {
            let e = &entries[*i];
            match self.inner.backend.delete(&e.key).await {
                Ok(()) => {
                    removed += 1;
                    removed_bytes += e.size;
                }
                Err(err) => tracing::warn!(key = %e.key, error = %err, "cache: could not evict"),
            }
        }
        self.inner.counters.evicted.inc_by(removed);
        let total: u64 = entries.iter().map(|e| e.size).sum();
        Ok(PruneReport {
            removed,
            removed_bytes,
            entries: entries.len() as u64 - removed,
            bytes: total - removed_bytes,
        })
    }

    /// Prunes every `prune_interval` until `stop` resolves.
    pub async fn evict_periodically(self, stop: impl std::future::Future<Output = ()>) {
        if self.inner.policy.is_unbounded() {
            stop.await;
            return;
        }
        let mut tick = tokio::time::interval(self.inner.prune_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = tick.tick() => match self.prune(false).await {
                    Ok(r) if r.removed > 0 => tracing::info!(
                        removed = r.removed, bytes = r.removed_bytes, "cache: evicted entries"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cache: eviction failed"),
                },
                _ = &mut stop => break,
            }
        }
    }
}

/// The cache's URL as agents reach it: `--cache-url`, else `http(s)://<http address>`.
pub fn public_url(config: &CacheConfig, http_addr: std::net::SocketAddr, tls: bool) -> String {
    let url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{}://{http_addr}", if tls { "https" } else { "http" }));
    url.trim_end_matches('/').to_string()
}

/// Parses a size: `1048576`, `512KiB`, `10MiB`, `2GiB` (powers of 1024), `1.5GB`
/// (powers of 1000), through `bytesize`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("`{text}` is not a size like `500MiB`, `2GiB` or `1048576` ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn the_public_url_defaults_to_the_http_address() {
        let addr: std::net::SocketAddr = "127.0.0.1:50052".parse().unwrap();
        let mut config = CacheConfig::default();
        assert_eq!(public_url(&config, addr, false), "http://127.0.0.1:50052");
        assert_eq!(public_url(&config, addr, true), "https://127.0.0.1:50052");
        config.public_url = Some("https://cache.example/".into());
        assert_eq!(public_url(&config, addr, false), "https://cache.example");
    }
}
