//! The HTTP port: `/healthz` and `/metrics` (Prometheus text format).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::actor::{Command, Handle};

pub fn router(actor: Handle) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(actor)
}

async fn healthz(State(actor): State<Handle>) -> impl IntoResponse {
    // Answering through the actor proves the scheduling loop is alive, not just the socket.
    match actor.query(|reply| Command::ListRuns { reply }).await {
        Ok(_) => (StatusCode::OK, "ok\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
    }
}

async fn metrics(State(actor): State<Handle>) -> impl IntoResponse {
    match actor.query(|reply| Command::Metrics { reply }).await {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            text,
        )
            .into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}
