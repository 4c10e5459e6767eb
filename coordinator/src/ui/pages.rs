//! The UI's pages as plain HTML: everything they show is in the markup, so they read without
//! JavaScript; `app.js` adds the timeline and keeps them live (it relies on the ids, classes
//! and `data-` attributes written here).

use std::fmt::Write as _;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use drover_scheduler::duration::format_duration;

use super::api::{AgentJson, RunDetail, RunJson, agents_json, run_detail, run_json, task_log};
use super::{Ui, page_refusal};
use crate::logstore::Chunk;
use crate::runlog::Attempt;

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a path segment (task ids hold `:`, `/`, spaces...).
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn layout(page: &str, title: &str, body: &str) -> Response {
    let html = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Drover</title>
<link rel="icon" href="/ui/assets/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/ui/assets/style.css">
<script defer src="/ui/assets/app.js"></script>
</head>
<body data-page="{page}">
<header class="top"><a class="brand" href="/ui/runs">Drover</a><nav><a href="/ui/runs">Runs</a> <a href="/ui/agents">Agents</a></nav></header>
<main>
{body}
</main>
</body>
</html>
"#,
        title = esc(title)
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

fn status(state: &str) -> String {
    format!(
        r#"<span class="status status-{s}">{s}</span>"#,
        s = esc(state)
    )
}

fn time(ms: u64) -> String {
    let secs = ms / 1000;
    let iso = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
    );
    format!(r#"<time datetime="{iso}">{iso}</time>"#)
}

fn took(ms: u64) -> String {
    format_duration(std::time::Duration::from_millis(ms))
}

fn counts(r: &RunJson) -> String {
    let mut parts = vec![format!("{} ok", r.succeeded)];
    for (n, what) in [
        (r.failed, "failed"),
        (r.running, "running"),
        (r.queued, "queued"),
        (r.skipped, "skipped"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    parts.join(" · ")
}

fn run_duration(r: &RunJson, now_ms: u64) -> String {
    took(
        r.ended_at_ms
            .unwrap_or(now_ms)
            .saturating_sub(r.opened_at_ms),
    )
}

fn run_row(r: &RunJson, now_ms: u64) -> String {
    format!(
        r#"<tr data-run="{id}" data-state="{state}"><td><a href="/ui/runs/{enc}">{id}</a></td><td>{status}</td><td>{opened}</td><td>{took}</td><td class="counts">{counts} of {total}</td><td>{by}</td></tr>"#,
        id = esc(&r.id),
        enc = encode(&r.id),
        state = esc(&r.state),
        status = status(&r.state),
        opened = time(r.opened_at_ms),
        took = run_duration(r, now_ms),
        counts = counts(r),
        total = r.total,
        by = esc(&r.started_by),
    )
}

fn now_ms() -> u64 {
    crate::actor::unix_ms(std::time::SystemTime::now())
}

pub async fn runs(
    State(ui): State<Ui>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = ui.reader(&headers) {
        return page_refusal(denied, peer, "/ui/runs");
    }
    let Ok(mut runs) = ui
        .actor
        .read(|v| {
            v.sched
                .run_summaries()
                .iter()
                .map(|s| run_json(v, s))
                .collect::<Vec<_>>()
        })
        .await
    else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    };
    runs.sort_by(|a, b| b.opened_at_ms.cmp(&a.opened_at_ms).then(b.id.cmp(&a.id)));
    let now = now_ms();
    let rows: String = runs.iter().map(|r| run_row(r, now)).collect();
    let empty = if runs.is_empty() {
        r#"<p class="empty">No runs yet: start one with <code>drover start-ci-run</code>.</p>"#
    } else {
        ""
    };
    layout(
        "runs",
        "Runs",
        &format!(
            r#"<h1>Runs</h1>
<table id="runs"><thead><tr><th>Run</th><th>Status</th><th>Started</th><th>Duration</th><th>Tasks</th><th>Started by</th></tr></thead>
<tbody>{rows}</tbody></table>{empty}"#
        ),
    )
}

fn task_rows(d: &RunDetail) -> String {
    let mut rows = String::new();
    for t in &d.tasks {
        let _ = write!(
            rows,
            r#"<tr data-task="{id}" data-status="{st}" data-agent="{agent}"{critical}><td><a href="/ui/runs/{run}/tasks/{enc}">{id}</a>{star}</td><td>{status}</td><td>{agent}</td><td>{attempts}</td><td>{took}</td><td class="reason">{reason}</td></tr>"#,
            id = esc(&t.id),
            enc = encode(&t.id),
            run = encode(&d.run.id),
            st = esc(&t.status),
            agent = esc(&t.agent),
            critical = if t.critical {
                r#" class="critical""#
            } else {
                ""
            },
            star = if t.critical {
                r#" <span class="star" title="on the critical path">★</span>"#
            } else {
                ""
            },
            status = status(&t.status),
            attempts = t.attempts,
            took = if t.duration_ms > 0 {
                took(t.duration_ms)
            } else {
                String::new()
            },
            reason = esc(&t.reason),
        );
    }
    rows
}

pub async fn run(
    State(ui): State<Ui>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(run): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/ui/runs/{}", encode(&run));
    if let Err(denied) = ui.reader(&headers) {
        return page_refusal(denied, peer, &path);
    }
    let detail = match ui.actor.read(move |v| run_detail(v, &run)).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return not_found("No such run (it may have been forgotten after its retention).");
        }
        Err(_) => return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    };
    let r = &detail.run;
    let body = format!(
        r#"<section id="run" data-run="{id}" data-state="{state}">
<h1>Run <code>{id}</code> {status}</h1>
<dl class="facts"><dt>CI execution</dt><dd>{exec}</dd><dt>Started</dt><dd>{opened}</dd><dt>Duration</dt><dd>{took}</dd><dt>Tasks</dt><dd class="counts">{counts} of {total}</dd><dt>Started by</dt><dd>{by}</dd></dl>
</section>
<h2>Timeline</h2>
<div id="timeline"><noscript>The timeline needs JavaScript; the table below has every task.</noscript></div>
<h2>Tasks</h2>
<table id="tasks"><thead><tr><th>Task</th><th>Status</th><th>Agent</th><th>Attempts</th><th>Duration</th><th>Reason</th></tr></thead>
<tbody>{rows}</tbody></table>"#,
        id = esc(&r.id),
        state = esc(&r.state),
        status = status(&r.state),
        exec = esc(&r.ci_execution_id),
        opened = time(r.opened_at_ms),
        took = run_duration(r, detail.now_ms),
        counts = counts(r),
        total = r.total,
        by = esc(&r.started_by),
        rows = task_rows(&detail),
    );
    layout("run", &format!("Run {}", r.id), &body)
}

fn attempt_rows(attempts: &[&Attempt], now_ms: u64) -> String {
    let mut rows = String::new();
    for a in attempts {
        let _ = write!(
            rows,
            r#"<tr><td>{n}</td><td>{agent} <span class="muted">({template})</span></td><td>{start}</td><td>{took}</td><td>{status}</td></tr>"#,
            n = a.attempt,
            agent = esc(&a.agent),
            template = esc(&a.template),
            start = time(a.start_ms),
            took = took(a.end_ms.unwrap_or(now_ms).saturating_sub(a.start_ms)),
            status = status(a.status),
        );
    }
    rows
}

pub async fn task(
    State(ui): State<Ui>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((run, task)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/ui/runs/{}/tasks/{}", encode(&run), encode(&task));
    if let Err(denied) = ui.reader(&headers) {
        return page_refusal(denied, peer, &path);
    }
    let r = run.clone();
    let detail = match ui.actor.read(move |v| run_detail(v, &r)).await {
        Ok(Some(d)) => d,
        Ok(None) => return not_found("No such run or task."),
        Err(_) => return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    };
    let (
        st,
        Chunk {
            data: log, next, ..
        },
    ) = match task_log(&ui.actor, run, task.clone(), 0).await {
        Ok(Some(x)) => x,
        Ok(None) => return not_found("No such run or task."),
        Err(_) => return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    };
    let t = detail.tasks.iter().find(|t| t.id == task);
    let attempts: Vec<&Attempt> = detail.attempts.iter().filter(|a| a.task == task).collect();
    // Cut at the last whole character: the page's byte count is where the next read starts,
    // so a character split here comes whole with it.
    let whole = match std::str::from_utf8(&log) {
        Ok(_) => log.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => log.len(),
    };
    let size = next - (log.len() - whole) as u64;
    let log = String::from_utf8_lossy(&log[..whole]);
    let body = format!(
        r#"<p class="crumbs"><a href="/ui/runs/{run_enc}">Run {run}</a></p>
<section id="task" data-run="{run}" data-task="{id}" data-status="{st}">
<h1><code>{id}</code> {status}</h1>
<p class="reason">{reason}</p>
</section>
<h2>Attempts</h2>
<table id="attempts"><thead><tr><th>Attempt</th><th>Agent</th><th>Started</th><th>Duration</th><th>Status</th></tr></thead><tbody>{attempts}</tbody></table>
<h2>Log</h2>
<pre id="log" data-size="{size}">{log}</pre>"#,
        run = esc(&detail.run.id),
        run_enc = encode(&detail.run.id),
        id = esc(&task),
        st = st,
        status = status(&st.to_string()),
        reason = esc(t.map_or("", |t| t.reason.as_str())),
        attempts = attempt_rows(&attempts, detail.now_ms),
        log = esc(&log),
    );
    layout("task", &task, &body)
}

fn agent_row(a: &AgentJson) -> String {
    let running: Vec<String> = a
        .running
        .iter()
        .map(|r| {
            format!(
                r#"<a href="/ui/runs/{}/tasks/{}">{}</a>"#,
                encode(&r.run),
                encode(&r.task),
                esc(&r.task)
            )
        })
        .collect();
    let state = if !a.connected {
        "away"
    } else if a.draining {
        "draining"
    } else {
        "connected"
    };
    format!(
        r#"<tr data-agent="{name}"><td>{name}</td><td>{template}</td><td>{slots}</td><td>{running}</td><td>{ago} ago</td><td>{status}</td></tr>"#,
        name = esc(&a.name),
        template = esc(&a.template),
        slots = a.slots,
        running = running.join(", "),
        ago = took(a.last_heartbeat_ms_ago),
        status = status(state),
    )
}

pub async fn agents(
    State(ui): State<Ui>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = ui.reader(&headers) {
        return page_refusal(denied, peer, "/ui/agents");
    }
    let Ok(agents) = ui.actor.read(agents_json).await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    };
    let rows: String = agents.iter().map(agent_row).collect();
    layout(
        "agents",
        "Agents",
        &format!(
            r#"<h1>Agents</h1>
<table id="agents"><thead><tr><th>Name</th><th>Template</th><th>Slots</th><th>Running</th><th>Last heartbeat</th><th>State</th></tr></thead>
<tbody>{rows}</tbody></table>"#
        ),
    )
}

pub fn login(next: Option<&str>, failed: bool) -> Response {
    let next = next.filter(|n| n.starts_with("/ui/")).unwrap_or("/ui/runs");
    let error = if failed {
        r#"<p class="error">That token is unknown or lacks the <code>read</code> scope.</p>"#
    } else {
        ""
    };
    layout(
        "login",
        "Sign in",
        &format!(
            r#"<h1>Sign in</h1>
<p>This coordinator needs a token with the <code>read</code> scope. It is kept in a cookie for this site.</p>{error}
<form method="post" action="/ui/login" class="login"><input type="hidden" name="next" value="{next}">
<label>Token <input type="password" name="token" autocomplete="off" required autofocus></label>
<button type="submit">Sign in</button></form>"#,
            next = esc(next)
        ),
    )
}

fn not_found(message: &str) -> Response {
    let mut r = layout(
        "missing",
        "Not found",
        &format!("<h1>Not found</h1><p>{}</p>", esc(message)),
    );
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}
