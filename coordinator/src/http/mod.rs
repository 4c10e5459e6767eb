//! The HTTP port: `/healthz` (alive), `/readyz` (the store takes writes and the loop answers),
//! `/metrics` (Prometheus text; a `read` token when tokens are configured), and the cache
//! (see [`cache::router`](crate::cache::router)).

mod serve;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use serve::{HEADER_TIMEOUT, serve};

use crate::actor::Handle;
use crate::auth::{Auth, Denied, Scope, audit_refusal};
use crate::metrics::Metrics;

#[derive(Clone)]
struct Http {
    actor: Handle,
    metrics: Arc<Metrics>,
    auth: Arc<Auth>,
}

pub fn router(actor: Handle, metrics: Arc<Metrics>, auth: Arc<Auth>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Http {
            actor,
            metrics,
            auth,
        })
}

/// A plain-text answer.
pub fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut body = message.into();
    body.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The answer to a refused request (401 or 403), logged with the token's name and the peer.
pub fn refused(denied: &Denied, peer: Option<SocketAddr>, what: &str) -> Response {
    audit_refusal(denied, peer, what);
    let status = denied.http_status();
    let reason = status.canonical_reason().unwrap_or_default();
    text(status, format!("{reason}: {}", denied.message()))
}

/// The `authorization` header, if it is text.
pub fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

async fn healthz(State(http): State<Http>) -> impl IntoResponse {
    // Answering through the actor proves the scheduling loop is alive, not just the socket.
    match http.actor.read(|_| ()).await {
        Ok(()) => text(StatusCode::OK, "ok"),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    }
}

async fn readyz(State(http): State<Http>) -> impl IntoResponse {
    if http.actor.read(|_| ()).await.is_err() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    if !http.metrics.store_writable() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store cannot write (see the coordinator's log); nothing new is acknowledged",
        );
    }
    text(StatusCode::OK, "ready")
}

async fn metrics_text(
    State(http): State<Http>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = http.auth.require(authorization(&headers), Scope::Read) {
        return refused(&denied, Some(peer), "GET /metrics");
    }
    match http.actor.read(|v| v.sched.gauges()).await {
        Ok(gauges) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            http.metrics.render(&gauges),
        )
            .into_response(),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    }
}
