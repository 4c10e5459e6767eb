//! The HTTP edge of the cache: Nx's `/v1/cache/{hash}` and Drover's `/drover/cache/*`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde::Deserialize;

use super::Cache;
use super::backend::{PutOutcome, valid_hash};
use crate::auth::{Auth, Principal, Scope};
use crate::http::{authorization, refused, text};

/// The cache's routes. Who may read and write is the [`Auth`]'s: `read` for GET, `write` or a
/// lease credential for PUT; entries go to the caller's cache namespace.
pub fn router(cache: Cache, auth: Arc<Auth>) -> Router {
    Router::new()
        .route("/v1/cache/{hash}", get(get_entry).put(put_entry))
        .route("/drover/cache/stats", get(stats))
        .route("/drover/cache/prune", post(prune))
        .layer(DefaultBodyLimit::disable())
        .with_state(Routes { cache, auth })
}

#[derive(Clone)]
struct Routes {
    cache: Cache,
    auth: Arc<Auth>,
}

impl Routes {
    fn allow(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
        scope: Scope,
        what: &str,
    ) -> Result<Principal, Box<Response>> {
        self.auth
            .cache_principal(authorization(headers), scope)
            .map_err(|denied| Box::new(refused(&denied, Some(peer), what)))
    }
}

/// Where an entry of a namespace is kept: `HASH` in the default namespace, `NS~HASH` in
/// another (`~` is never part of a valid hash, so no key of one namespace is another's).
fn key(namespace: Option<&str>, hash: &str) -> String {
    match namespace {
        None => hash.to_string(),
        Some(ns) => format!("{ns}~{hash}"),
    }
}

async fn put_entry(
    State(routes): State<Routes>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(hash): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut stream = body.into_data_stream();
    let principal = match routes.allow(&headers, peer, Scope::Write, "PUT /v1/cache") {
        Ok(p) => p,
        Err(response) => {
            drain(&mut stream).await;
            return *response;
        }
    };
    let cache = &routes.cache;
    if !valid_hash(&hash) {
        drain(&mut stream).await;
        return text(
            StatusCode::BAD_REQUEST,
            "not a valid hash: letters, digits, `-`, `_` and `.`, at most 128",
        );
    }
    let stored_as = key(principal.cache_namespace.as_deref(), &hash);
    let limit = cache.max_entry_bytes();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let counters = cache.counters();
    if declared.is_some_and(|n| n > limit) {
        // Said before a byte of it is read. What the client goes on sending is read and
        // dropped beside the answer (bounded, as nginx's lingering close), so it reads the
        // answer rather than a reset; then the connection closes.
        counters.too_large.inc();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(LINGER, drain(&mut stream)).await;
        });
        let mut refused = too_large(limit);
        refused.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return refused;
    }
    let outcome = cache.backend().put(&stored_as, &mut stream, limit).await;
    if matches!(outcome, Ok(PutOutcome::Exists | PutOutcome::TooLarge)) {
        drain(&mut stream).await;
    }
    match outcome {
        Ok(PutOutcome::Stored(n)) => {
            counters.stored.inc();
            counters.bytes_in.inc_by(n);
            tracing::debug!(%hash, bytes = n, "cache: stored");
            StatusCode::OK.into_response()
        }
        Ok(PutOutcome::Exists) => {
            counters.conflicts.inc();
            text(StatusCode::CONFLICT, "Cannot override an existing record")
        }
        Ok(PutOutcome::TooLarge) => {
            counters.too_large.inc();
            too_large(limit)
        }
        Ok(PutOutcome::Interrupted(why)) => text(
            StatusCode::BAD_REQUEST,
            format!("the upload broke off: {why}"),
        ),
        Err(e) => {
            tracing::warn!(%hash, error = %e, "cache: upload failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cache storage: {e}"),
            )
        }
    }
}

/// Reads and drops what is left of a refused upload (up to [`DRAIN_LIMIT`]), so the client,
/// still sending, reads the answer instead of a reset connection.
async fn drain<S, E>(stream: &mut S)
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    let mut read = 0usize;
    while read < DRAIN_LIMIT {
        match stream.next().await {
            Some(Ok(chunk)) => read += chunk.len(),
            _ => return,
        }
    }
}

/// Past this, a refused upload's connection is closed rather than read to its end.
const DRAIN_LIMIT: usize = 64 << 20;
/// How long the rest of an upload refused up front is read before the connection closes.
const LINGER: std::time::Duration = std::time::Duration::from_secs(30);

fn too_large(limit: u64) -> Response {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the entry is larger than the cache's limit of {limit} bytes (--cache-max-entry-size)"
        ),
    )
}

async fn get_entry(
    State(routes): State<Routes>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Response {
    let principal = match routes.allow(&headers, peer, Scope::Read, "GET /v1/cache") {
        Ok(p) => p,
        Err(response) => return *response,
    };
    let cache = &routes.cache;
    if !valid_hash(&hash) {
        return text(
            StatusCode::BAD_REQUEST,
            "not a valid hash: letters, digits, `-`, `_` and `.`, at most 128",
        );
    }
    // A run of another namespace reads its own entries, then the trusted default ones; a
    // default-namespace run reads only default entries.
    let found = match principal.cache_namespace.as_deref() {
        Some(ns) => match cache.backend().get(&key(Some(ns), &hash)).await {
            Ok(None) => cache.backend().get(&hash).await,
            other => other,
        },
        None => cache.backend().get(&hash).await,
    };
    match found {
        Ok(Some(download)) => {
            cache.counters().hits.inc();
            let counted = cache.clone();
            let body = download.body.inspect(move |chunk| {
                if let Ok(bytes) = chunk {
                    counted.counters().bytes_out.inc_by(bytes.len() as u64);
                }
            });
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                    (header::CONTENT_LENGTH, download.size.to_string()),
                ],
                Body::from_stream(body),
            )
                .into_response()
        }
        Ok(None) => {
            cache.counters().misses.inc();
            text(StatusCode::NOT_FOUND, "The record was not found")
        }
        Err(e) => {
            tracing::warn!(%hash, error = %e, "cache: download failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cache storage: {e}"),
            )
        }
    }
}

async fn stats(
    State(routes): State<Routes>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = routes.allow(&headers, peer, Scope::Read, "GET /drover/cache/stats") {
        return *response;
    }
    match routes.cache.stats().await {
        Ok(s) => json(&s),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cache storage: {e}"),
        ),
    }
}

#[derive(Deserialize)]
struct PruneQuery {
    #[serde(default)]
    all: bool,
}

async fn prune(
    State(routes): State<Routes>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<PruneQuery>,
    headers: HeaderMap,
) -> Response {
    let principal = match routes.allow(&headers, peer, Scope::Write, "POST /drover/cache/prune") {
        Ok(p) => p,
        Err(response) => return *response,
    };
    if principal.lease.is_some() {
        let denied = crate::auth::Denied::Scope {
            name: principal.name,
            needed: Scope::Write,
        };
        return refused(&denied, Some(peer), "POST /drover/cache/prune");
    }
    match routes.cache.prune(q.all).await {
        Ok(r) => json(&r),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cache storage: {e}"),
        ),
    }
}

fn json(value: &impl serde::Serialize) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
