//! The web UI on the HTTP port: runs, a run's live timeline, a task's live log, the fleet.
//! Pages are plain HTML rendered here (readable without JavaScript); `assets/app.js` draws
//! the timeline and keeps the pages live from the JSON API under `/api/`. The assets are in
//! the binary: no build step. With tokens configured a `read` token is needed, entered once
//! on `/ui/login` and kept in a cookie.

mod api;
mod pages;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::actor::Handle;
use crate::auth::{Auth, Denied, Principal, Scope};
use crate::http::{authorization, refused};

const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");
const FAVICON: &str = include_str!("assets/favicon.svg");
/// The cookie that carries the UI's token.
const COOKIE: &str = "drover_token";

#[derive(Clone)]
pub(crate) struct Ui {
    actor: Handle,
    auth: Arc<Auth>,
    /// Cookies get `Secure` when the port speaks TLS.
    tls: bool,
}

pub fn router(actor: Handle, auth: Arc<Auth>, tls: bool) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/runs") }))
        .route("/ui", get(|| async { Redirect::to("/ui/runs") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/runs") }))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/runs", get(pages::runs))
        .route("/ui/runs/{run}", get(pages::run))
        .route("/ui/runs/{run}/tasks/{*task}", get(pages::task))
        .route("/ui/agents", get(pages::agents))
        .route("/ui/assets/{file}", get(asset))
        .route("/api/runs", get(api::runs))
        .route("/api/runs/{run}", get(api::run))
        .route("/api/runs/{run}/tasks/{*task}", get(api::task_log_api))
        .route("/api/agents", get(api::agents))
        .with_state(Ui { actor, auth, tls })
}

impl Ui {
    /// The caller, with a `read` token from the `Authorization` header or the UI's cookie.
    fn reader(&self, headers: &HeaderMap) -> Result<Principal, Denied> {
        let cookie = cookie(headers).map(|t| format!("Bearer {t}"));
        let header = authorization(headers).or(cookie.as_deref());
        self.auth.require(header, Scope::Read)
    }
}

/// The token in the UI's cookie.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// For a page: the login page when no valid token came along; a refusal otherwise.
fn page_refusal(denied: Denied, peer: SocketAddr, path: &str) -> Response {
    match denied {
        Denied::Unauthenticated(_) => {
            Redirect::to(&format!("/ui/login?next={}", pages::encode(path))).into_response()
        }
        other => refused(&other, Some(peer), path),
    }
}

#[derive(Deserialize)]
struct Next {
    next: Option<String>,
    error: Option<String>,
}

async fn login_page(Query(q): Query<Next>) -> Response {
    pages::login(q.next.as_deref(), q.error.is_some())
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

async fn login(
    State(ui): State<Ui>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = form
        .next
        .filter(|n| n.starts_with("/ui/") && !n.starts_with("//"))
        .unwrap_or_else(|| "/ui/runs".into());
    let token = form.token.trim();
    let header = format!("Bearer {token}");
    match ui.auth.require(Some(&header), Scope::Read) {
        Ok(p) => {
            tracing::info!(token = %p.name, %peer, "ui: signed in");
            let secure = if ui.tls { "; Secure" } else { "" };
            let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}");
            (
                StatusCode::SEE_OTHER,
                [(header::SET_COOKIE, cookie), (header::LOCATION, next)],
            )
                .into_response()
        }
        Err(denied) => {
            crate::auth::audit_refusal(&denied, Some(peer), "POST /ui/login");
            Redirect::to(&format!("/ui/login?error=1&next={}", pages::encode(&next)))
                .into_response()
        }
    }
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        "favicon.svg" => (FAVICON, "image/svg+xml"),
        _ => return (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}
