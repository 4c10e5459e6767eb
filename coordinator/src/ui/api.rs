//! The UI's JSON: runs, one run with its tasks and attempts (for the timeline), a task's log
//! from an offset, the fleet. Times are milliseconds since the Unix epoch.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use drover_scheduler::state::{AgentView, RunSummary, TaskStatus};

use super::Ui;
use crate::actor::View;
use crate::actor::unix_ms;
use crate::http::{refused, text};
use crate::runlog::Attempt;

#[derive(Serialize)]
pub struct RunJson {
    pub id: String,
    pub ci_execution_id: String,
    pub state: String,
    pub started_by: String,
    pub opened_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    pub total: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub skipped: usize,
    pub running: usize,
    pub queued: usize,
}

pub fn run_json(v: &View<'_>, s: &RunSummary) -> RunJson {
    RunJson {
        id: s.id.clone(),
        ci_execution_id: s.ci_execution_id.clone(),
        state: s.state.to_string(),
        started_by: s.started_by.clone(),
        opened_at_ms: s.opened_unix_ms,
        ended_at_ms: v.logs.get(&s.id).and_then(|l| l.ended_at()),
        total: s.progress.total,
        succeeded: s.progress.succeeded,
        failed: s.progress.failed,
        skipped: s.progress.skipped,
        running: s.progress.running,
        queued: s.progress.queued,
    }
}

#[derive(Serialize)]
pub struct TaskJson {
    pub id: String,
    pub status: String,
    pub agent: String,
    pub attempts: u32,
    pub reason: String,
    pub duration_ms: u64,
    pub critical: bool,
}

#[derive(Serialize)]
pub struct RunDetail {
    pub now_ms: u64,
    pub run: RunJson,
    pub tasks: Vec<TaskJson>,
    pub attempts: Vec<Attempt>,
}

/// Everything the run page shows.
pub fn run_detail(v: &View<'_>, run_id: &str) -> Option<RunDetail> {
    let view = v.sched.run_view(run_id)?;
    let critical: HashSet<String> = v.sched.critical_path(run_id).into_iter().collect();
    Some(RunDetail {
        now_ms: unix_ms(SystemTime::now()),
        run: run_json(v, &view.summary()),
        tasks: view
            .tasks
            .iter()
            .map(|t| TaskJson {
                critical: critical.contains(&t.task),
                id: t.task.clone(),
                status: t.status.to_string(),
                agent: t.agent.clone(),
                attempts: t.attempts,
                reason: t.reason.clone(),
                duration_ms: t.duration.as_millis() as u64,
            })
            .collect(),
        attempts: v.logs.get(run_id).map(|l| l.attempts()).unwrap_or_default(),
    })
}

#[derive(Serialize)]
pub struct RunningTask {
    pub run: String,
    pub task: String,
}

#[derive(Serialize)]
pub struct AgentJson {
    pub id: String,
    pub name: String,
    pub template: String,
    pub slots: u32,
    pub running: Vec<RunningTask>,
    pub last_heartbeat_ms_ago: u64,
    pub connected: bool,
    pub draining: bool,
    pub version: String,
}

pub fn agents_json(v: &View<'_>) -> Vec<AgentJson> {
    let running = v.sched.running_leases();
    v.sched
        .agent_views()
        .into_iter()
        .map(|a: AgentView| AgentJson {
            running: running
                .iter()
                .filter(|(agent, _, _)| *agent == a.id)
                .map(|(_, run, task)| RunningTask {
                    run: run.clone(),
                    task: task.clone(),
                })
                .collect(),
            id: a.id.to_string(),
            last_heartbeat_ms_ago: v.now.saturating_sub(a.last_seen).as_millis() as u64,
            name: a.name,
            template: a.template,
            slots: a.slots,
            connected: a.connected,
            draining: a.draining,
            version: a.version,
        })
        .collect()
}

fn unauthorized(ui: &Ui, headers: &HeaderMap, peer: SocketAddr, what: &str) -> Option<Response> {
    ui.reader(headers)
        .err()
        .map(|denied| refused(&denied, Some(peer), what))
}

pub async fn runs(
    State(ui): State<Ui>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = unauthorized(&ui, &headers, peer, "GET /api/runs") {
        return r;
    }
    let runs = ui
        .actor
        .read(|v| {
            let mut runs: Vec<RunJson> = v
                .sched
                .run_summaries()
                .iter()
                .map(|s| run_json(v, s))
                .collect();
            runs.sort_by(|a, b| b.opened_at_ms.cmp(&a.opened_at_ms).then(b.id.cmp(&a.id)));
            runs
        })
        .await;
    match runs {
        Ok(runs) => Json(serde_json::json!({ "now_ms": unix_ms(SystemTime::now()), "runs": runs }))
            .into_response(),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    }
}

pub async fn run(
    State(ui): State<Ui>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(run): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = unauthorized(&ui, &headers, peer, "GET /api/runs/RUN") {
        return r;
    }
    match ui.actor.read(move |v| run_detail(v, &run)).await {
        Ok(Some(detail)) => Json(detail).into_response(),
        Ok(None) => text(StatusCode::NOT_FOUND, "no such run"),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    }
}

#[derive(Deserialize)]
pub struct From {
    from: Option<usize>,
}

/// A task's status, if the run has the task.
pub fn task_status(v: &View<'_>, run: &str, task: &str) -> Option<TaskStatus> {
    let view = v.sched.run_view(run)?;
    Some(view.tasks.iter().find(|t| t.task == task)?.status)
}

/// A task's status and up to 1 MiB of its log from a byte offset on.
pub async fn task_log(
    actor: &crate::Handle,
    run: String,
    task: String,
    from: u64,
) -> Result<Option<(TaskStatus, crate::logstore::Chunk)>, crate::error::CoordError> {
    let (r, t) = (run.clone(), task.clone());
    let Some(status) = actor.read(move |v| task_status(v, &r, &t)).await? else {
        return Ok(None);
    };
    let chunk = actor
        .logs()
        .read(&run, &task, from, crate::logstore::MAX_READ)
        .await;
    Ok(Some((status, chunk)))
}

/// `GET /api/runs/RUN/tasks/TASK/log?from=BYTES`: the log's bytes from that offset, with the
/// log's length and the task's status in `X-Log-Size` and `X-Task-Status`.
pub async fn task_log_api(
    State(ui): State<Ui>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((run, task)): Path<(String, String)>,
    Query(q): Query<From>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = unauthorized(&ui, &headers, peer, "GET /api/runs/RUN/tasks/TASK/log") {
        return r;
    }
    let Some(task) = task.strip_suffix("/log").map(str::to_string) else {
        return text(
            StatusCode::NOT_FOUND,
            "ask for /api/runs/RUN/tasks/TASK/log",
        );
    };
    let from = q.from.unwrap_or(0);
    match task_log(&ui.actor, run, task, from as u64).await {
        Ok(Some((status, chunk))) => (
            [
                (
                    header::CONTENT_TYPE,
                    "text/plain; charset=utf-8".to_string(),
                ),
                (
                    header::HeaderName::from_static("x-log-size"),
                    chunk.size.to_string(),
                ),
                (
                    header::HeaderName::from_static("x-log-next"),
                    chunk.next.to_string(),
                ),
                (
                    header::HeaderName::from_static("x-task-status"),
                    status.to_string(),
                ),
                (header::CACHE_CONTROL, "no-store".to_string()),
            ],
            chunk.data,
        )
            .into_response(),
        Ok(None) => text(StatusCode::NOT_FOUND, "no such run or task"),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    }
}

pub async fn agents(
    State(ui): State<Ui>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = unauthorized(&ui, &headers, peer, "GET /api/agents") {
        return r;
    }
    match ui.actor.read(agents_json).await {
        Ok(agents) => {
            Json(serde_json::json!({ "now_ms": unix_ms(SystemTime::now()), "agents": agents }))
                .into_response()
        }
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    }
}
