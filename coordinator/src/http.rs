//! The HTTP port: `/healthz` and `/metrics` (Prometheus text format).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::actor::Handle;
use crate::metrics::Metrics;

#[derive(Clone)]
struct Http {
    actor: Handle,
    metrics: Arc<Metrics>,
}

pub fn router(actor: Handle, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(Http { actor, metrics })
}

async fn healthz(State(http): State<Http>) -> impl IntoResponse {
    // Answering through the actor proves the scheduling loop is alive, not just the socket.
    match http.actor.read(|_| ()).await {
        Ok(()) => (StatusCode::OK, "ok\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
    }
}

async fn metrics_text(State(http): State<Http>) -> impl IntoResponse {
    match http.actor.read(|s| s.gauges()).await {
        Ok(gauges) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            http.metrics.render(&gauges),
        )
            .into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}
