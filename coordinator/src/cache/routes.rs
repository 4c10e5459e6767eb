//! The HTTP edge of the cache: Nx's `/v1/cache/{hash}` and Drover's `/drover/cache/*`.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde::Deserialize;

use super::backend::{PutOutcome, valid_hash};
use super::{Access, Cache};

/// The cache's routes; `None` answers 503 everywhere (no token configured, so no cache).
pub fn router(cache: Option<Cache>) -> Router {
    Router::new()
        .route("/v1/cache/{hash}", get(get_entry).put(put_entry))
        .route("/drover/cache/stats", get(stats))
        .route("/drover/cache/prune", post(prune))
        .layer(DefaultBodyLimit::disable())
        .with_state(cache)
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut body = message.into();
    body.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn off() -> Response {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "this coordinator serves no cache: start it with --cache-token (DROVER_CACHE_TOKEN)",
    )
}

fn unauthorized() -> Response {
    text(
        StatusCode::UNAUTHORIZED,
        "Unauthorized: missing or unknown bearer token (Authorization: Bearer TOKEN)",
    )
}

/// Why a request is refused before it is looked at.
enum Refused {
    Off,
    Unauthorized,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Off => off(),
            Refused::Unauthorized => unauthorized(),
        }
    }
}

/// The access a request has, or why it has none.
fn authorize(cache: &Option<Cache>, headers: &HeaderMap) -> Result<(Cache, Access), Refused> {
    let Some(cache) = cache else {
        return Err(Refused::Off);
    };
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match cache.access(auth) {
        Some(access) => Ok((cache.clone(), access)),
        None => Err(Refused::Unauthorized),
    }
}

async fn put_entry(
    State(cache): State<Option<Cache>>,
    Path(hash): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut stream = body.into_data_stream();
    let (cache, access) = match authorize(&cache, &headers) {
        Ok(ok) => ok,
        Err(refused) => {
            drain(&mut stream).await;
            return refused.into_response();
        }
    };
    if access != Access::ReadWrite {
        drain(&mut stream).await;
        return text(
            StatusCode::FORBIDDEN,
            "Forbidden: this token may only read the cache",
        );
    }
    if !valid_hash(&hash) {
        drain(&mut stream).await;
        return text(
            StatusCode::BAD_REQUEST,
            format!("`{hash}` is not a valid hash"),
        );
    }
    let limit = cache.max_entry_bytes();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let counters = cache.counters();
    if declared.is_some_and(|n| n > limit) {
        counters.too_large.inc();
        drain(&mut stream).await;
        return too_large(limit);
    }
    let outcome = cache.backend().put(&hash, &mut stream, limit).await;
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

fn too_large(limit: u64) -> Response {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the entry is larger than the cache's limit of {limit} bytes (--cache-max-entry-size)"
        ),
    )
}

async fn get_entry(
    State(cache): State<Option<Cache>>,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (cache, _) = match authorize(&cache, &headers) {
        Ok(ok) => ok,
        Err(refused) => return refused.into_response(),
    };
    if !valid_hash(&hash) {
        return text(
            StatusCode::BAD_REQUEST,
            format!("`{hash}` is not a valid hash"),
        );
    }
    match cache.backend().get(&hash).await {
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

async fn stats(State(cache): State<Option<Cache>>, headers: HeaderMap) -> Response {
    let (cache, _) = match authorize(&cache, &headers) {
        Ok(ok) => ok,
        Err(refused) => return refused.into_response(),
    };
    match cache.stats().await {
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
    State(cache): State<Option<Cache>>,
    Query(q): Query<PruneQuery>,
    headers: HeaderMap,
) -> Response {
    let (cache, access) = match authorize(&cache, &headers) {
        Ok(ok) => ok,
        Err(refused) => return refused.into_response(),
    };
    if access != Access::ReadWrite {
        return text(
            StatusCode::FORBIDDEN,
            "Forbidden: pruning needs the read-write token",
        );
    }
    match cache.prune(q.all).await {
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
