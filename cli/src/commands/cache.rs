//! `drover cache stats` and `drover cache prune`: the coordinator's remote cache, over HTTP.

use clap::{Args, Subcommand};
use drover_coordinator::cache::{PruneReport, Stats};

use crate::error::CliError;
use crate::human;

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// Entries, bytes, hits and misses of the coordinator's cache.
    Stats {
        #[command(flatten)]
        server: CacheServer,
        /// Print the JSON the coordinator answered.
        #[arg(long)]
        json: bool,
    },
    /// Apply the eviction policy now (--cache-max-size, --cache-max-age), or empty the cache.
    Prune {
        #[command(flatten)]
        server: CacheServer,
        /// Remove every entry.
        #[arg(long)]
        all: bool,
    },
}

/// Where the cache is and how to get in.
#[derive(Args, Debug, Clone)]
pub struct CacheServer {
    /// The coordinator's HTTP address (default: DROVER_CACHE_URL, else
    /// NX_SELF_HOSTED_REMOTE_CACHE_SERVER, else http://127.0.0.1:50052).
    #[arg(long)]
    pub server: Option<String>,
    /// Bearer token (default: DROVER_TOKEN, else DROVER_CACHE_TOKEN, else
    /// NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN, else DROVER_CACHE_READ_TOKEN). Stats need the
    /// `read` scope, pruning `write`.
    #[arg(long)]
    pub token: Option<String>,
    /// Trust this CA (PEM) for an https:// server (default: the system's roots).
    #[arg(long, env = "DROVER_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
}

impl CacheServer {
    pub fn url(&self) -> String {
        let url = self
            .server
            .clone()
            .or_else(|| first_env(&["DROVER_CACHE_URL", "NX_SELF_HOSTED_REMOTE_CACHE_SERVER"]))
            .unwrap_or_else(|| "http://127.0.0.1:50052".into());
        let url = if url.contains("://") {
            url
        } else {
            format!("http://{url}")
        };
        url.trim_end_matches('/').to_string()
    }

    /// The token, if one is given (a coordinator without tokens needs none).
    pub fn token(&self) -> Option<String> {
        self.token.clone().or_else(|| {
            first_env(&[
                "DROVER_TOKEN",
                "DROVER_CACHE_TOKEN",
                "NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN",
                "DROVER_CACHE_READ_TOKEN",
            ])
        })
    }
}

fn first_env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
}

pub async fn run(cmd: CacheCommand) -> Result<u8, CliError> {
    match cmd {
        CacheCommand::Stats { server, json } => {
            let body = call(&server, reqwest::Method::GET, "/drover/cache/stats").await?;
            if json {
                out!("{body}");
                return Ok(0);
            }
            let s: Stats = serde_json::from_str(&body)
                .map_err(|e| CliError::Io(format!("the cache answered unreadable stats: {e}")))?;
            let lookups = s.hits + s.misses;
            let rate = if lookups == 0 {
                "-".to_string()
            } else {
                format!("{:.0}%", 100.0 * s.hits as f64 / lookups as f64)
            };
            out!("backend:   {}", s.backend);
            out!("entries:   {}", s.entries);
            out!("bytes:     {} ({})", s.bytes, human::bytes(s.bytes));
            out!("hits:      {}", s.hits);
            out!("misses:    {}", s.misses);
            out!("hit rate:  {rate}");
            out!("stored:    {} ({} in)", s.stored, human::bytes(s.bytes_in));
            out!("conflicts: {} (409: already there)", s.conflicts);
            out!("too large: {} (413)", s.too_large);
            out!("evicted:   {}", s.evicted);
            out!(
                "policy:    max entry {}, max total {}, max age {}",
                human::bytes(s.max_entry_bytes),
                s.max_total_bytes.map_or("none".into(), human::bytes),
                s.max_age_secs.map_or("none".into(), |secs| {
                    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
                })
            );
            Ok(0)
        }
        CacheCommand::Prune { server, all } => {
            let path = if all {
                "/drover/cache/prune?all=true"
            } else {
                "/drover/cache/prune"
            };
            let body = call(&server, reqwest::Method::POST, path).await?;
            let r: PruneReport = serde_json::from_str(&body).map_err(|e| {
                CliError::Io(format!("the cache answered an unreadable report: {e}"))
            })?;
            out!(
                "removed {} entries ({}); {} entries ({}) left",
                r.removed,
                human::bytes(r.removed_bytes),
                r.entries,
                human::bytes(r.bytes)
            );
            Ok(0)
        }
    }
}

async fn call(
    server: &CacheServer,
    method: reqwest::Method,
    path: &str,
) -> Result<String, CliError> {
    let url = format!("{}{path}", server.url());
    let mut request = crate::client::http_client(server.ca_cert.as_deref())?.request(method, &url);
    if let Some(token) = server.token() {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|e| CliError::Io(format!("cannot reach the cache at {url}: {e}")))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| CliError::Io(format!("{url}: {e}")))?;
    if !status.is_success() {
        return Err(CliError::Rpc {
            context: format!("{url} answered {status}"),
            message: body.trim().to_string(),
        });
    }
    Ok(body)
}
