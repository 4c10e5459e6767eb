//! Readers for the public DAG sets the benchmark uses (see `../shared/data/dags/README.md`),
//! the `--durations` file of `drover simulate`, and the noise model for estimates.
//!
//! - workflow runs (`wf/*.json`): `{"tasks": [{"id", "type", "parents", "runtime_s"}]}`; the
//!   measured runtime is the true duration, and the `type` (without a trailing `_ID000123`)
//!   is the target;
//! - STG random graphs (`stg/*.stg`): `n`, then `id cost npred pred...` rows; the zero-cost
//!   entry and exit nodes are dropped; a cost unit is one second. `CaseN_M_OPT.csv` rows are
//!   `file,M,optimum` or, when the optimum is not proven, `file,M,lower,upper`;
//! - an Nx-shaped graph (`nx/*.json`): `{"tasks": [[project, target]], "edges": [[dep, dependent]]}`,
//!   without durations: [`draw_durations`] draws them per target.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::task::TaskSpec;

use super::rng::Rng;

/// A graph with the true duration of each task.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub name: String,
    pub tasks: Vec<TaskSpec>,
    pub durations: HashMap<String, Duration>,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{path}: {message}")]
pub struct DatasetError {
    pub path: String,
    pub message: String,
}

fn err(path: &str, message: impl Into<String>) -> DatasetError {
    DatasetError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// A task as the simulator needs it: no command to run, rule fields set explicitly (so a target
/// like `test:e2e` stays whole).
pub fn sim_task(id: &str, project: &str, target: &str, deps: Vec<String>) -> TaskSpec {
    TaskSpec {
        id: id.to_string(),
        command: "true".into(),
        depends_on: deps,
        cache: true,
        project: project.to_string(),
        target: target.to_string(),
        ..TaskSpec::default()
    }
}

#[derive(Deserialize)]
struct WfFile {
    tasks: Vec<WfTask>,
}

#[derive(Deserialize)]
struct WfTask {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    parents: Vec<String>,
    runtime_s: f64,
}

/// A workflow run (`wf/*.json`).
pub fn parse_workflow(path: &str, text: &str) -> Result<Dataset, DatasetError> {
    let file: WfFile = serde_json::from_str(text).map_err(|e| err(path, e.to_string()))?;
    let mut tasks = Vec::with_capacity(file.tasks.len());
    let mut durations = HashMap::new();
    for t in file.tasks {
        let target = strip_instance_suffix(&t.kind);
        tasks.push(sim_task(&t.id, &t.id, target, t.parents));
        let ms = (t.runtime_s.max(0.0) * 1000.0).round() as u64;
        durations.insert(t.id, Duration::from_millis(ms));
    }
    Ok(Dataset {
        name: stem(path),
        tasks,
        durations,
    })
}

/// `blastall_ID000002` → `blastall`: Pegasus/Makeflow types carry the task's instance number.
fn strip_instance_suffix(kind: &str) -> &str {
    match kind.rfind("_ID") {
        Some(at) if kind[at + 3..].chars().all(|c| c.is_ascii_digit()) && at + 3 < kind.len() => {
            &kind[..at]
        }
        _ => kind,
    }
}

/// An STG graph. Task ids are `tN`; one cost unit is one second.
pub fn parse_stg(path: &str, text: &str) -> Result<Dataset, DatasetError> {
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let n: usize = lines
        .next()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| err(path, "the first line must be the task count"))?;
    let mut rows: Vec<(usize, u64, Vec<usize>)> = Vec::with_capacity(n + 2);
    for (k, line) in lines.take(n + 2).enumerate() {
        let nums: Vec<u64> = line
            .split_whitespace()
            .map(|w| w.parse::<u64>())
            .collect::<Result<_, _>>()
            .map_err(|_| {
                err(
                    path,
                    format!("row {}: not a list of numbers: `{line}`", k + 2),
                )
            })?;
        let [id, cost, npred, preds @ ..] = nums.as_slice() else {
            return Err(err(
                path,
                format!("row {}: expected `id cost npred pred...`", k + 2),
            ));
        };
        if preds.len() != *npred as usize {
            return Err(err(
                path,
                format!(
                    "row {}: {npred} predecessors announced, {} given",
                    k + 2,
                    preds.len()
                ),
            ));
        }
        rows.push((
            *id as usize,
            *cost,
            preds.iter().map(|&p| p as usize).collect(),
        ));
    }
    if rows.len() != n + 2 {
        return Err(err(
            path,
            format!("expected {} task rows, found {}", n + 2, rows.len()),
        ));
    }
    let exit = n + 1;
    let mut tasks = Vec::with_capacity(n);
    let mut durations = HashMap::new();
    for (id, cost, preds) in rows {
        // The zero-cost entry (0) and exit (n+1) nodes only tie the graph together.
        if (id == 0 || id == exit) && cost == 0 {
            continue;
        }
        let name = format!("t{id}");
        let deps = preds
            .into_iter()
            .filter(|&p| p != 0)
            .map(|p| format!("t{p}"))
            .collect();
        tasks.push(sim_task(&name, &name, "task", deps));
        durations.insert(name, Duration::from_secs(cost));
    }
    Ok(Dataset {
        name: stem(path),
        tasks,
        durations,
    })
}

/// One row of an STG optimum file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Optimum {
    /// As written, e.g. `50/rand0002.stg`.
    pub file: String,
    pub processors: u32,
    /// The proven optimum, or its best lower bound when `upper` is set.
    pub optimum: u64,
    /// The best known schedule when the optimum is not proven.
    pub upper: Option<u64>,
}

pub fn parse_optima(path: &str, text: &str) -> Result<Vec<Optimum>, DatasetError> {
    let mut rows = Vec::new();
    for (k, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        let bad = || {
            err(
                path,
                format!("line {}: expected `file,M,optimum[,upper]`", k + 1),
            )
        };
        if cells.len() < 3 {
            return Err(bad());
        }
        rows.push(Optimum {
            file: cells[0].to_string(),
            processors: cells[1].parse().map_err(|_| bad())?,
            optimum: cells[2].parse().map_err(|_| bad())?,
            upper: match cells.get(3) {
                Some(u) => Some(u.parse().map_err(|_| bad())?),
                None => None,
            },
        });
    }
    Ok(rows)
}

#[derive(Deserialize)]
struct NxFile {
    tasks: Vec<(String, String)>,
    edges: Vec<((String, String), (String, String))>,
}

/// An Nx-shaped graph without durations. Task ids are `project:target`.
pub fn parse_nx_tasks(path: &str, text: &str) -> Result<Vec<TaskSpec>, DatasetError> {
    let file: NxFile = serde_json::from_str(text).map_err(|e| err(path, e.to_string()))?;
    let id = |(p, t): &(String, String)| format!("{p}:{t}");
    let mut deps: HashMap<String, Vec<String>> = HashMap::new();
    for (from, to) in &file.edges {
        deps.entry(id(to)).or_default().push(id(from));
    }
    Ok(file
        .tasks
        .iter()
        .map(|task| {
            let me = id(task);
            let d = deps.remove(&me).unwrap_or_default();
            sim_task(&me, &task.0, &task.1, d)
        })
        .collect())
}

/// Median and spread of the lognormal durations drawn per target for Nx-shaped graphs.
/// Lognormal with sigma 1 is heavy-tailed: about one task in twenty takes over five times its
/// target's median.
pub const NX_DURATIONS: &[(&str, f64)] = &[
    ("lint", 20.0),
    ("build", 60.0),
    ("test", 45.0),
    ("test:e2e", 240.0),
];
pub const NX_SIGMA: f64 = 1.0;
/// Median for a target not in [`NX_DURATIONS`], in seconds.
pub const NX_OTHER_MEDIAN: f64 = 30.0;

/// True durations per target: lognormal with the target's median and [`NX_SIGMA`], seeded.
pub fn draw_durations(tasks: &[TaskSpec], seed: u64) -> HashMap<String, Duration> {
    let mut rng = Rng::new(seed);
    tasks
        .iter()
        .map(|t| {
            let median = NX_DURATIONS
                .iter()
                .find(|(target, _)| *target == t.target)
                .map_or(NX_OTHER_MEDIAN, |(_, m)| *m);
            let secs = rng.lognormal(median.ln(), NX_SIGMA);
            (
                t.id.clone(),
                Duration::from_millis((secs * 1000.0).round() as u64),
            )
        })
        .collect()
}

/// The tasks with `estimate` hints: the true duration times lognormal noise
/// (`exp(N(0, sigma²))`, seeded), or exact when `sigma` is 0.
pub fn with_hints(
    tasks: &[TaskSpec],
    durations: &HashMap<String, Duration>,
    sigma: f64,
    seed: u64,
) -> Vec<TaskSpec> {
    let mut rng = Rng::new(seed);
    tasks
        .iter()
        .map(|t| {
            let truth = durations.get(&t.id).copied().unwrap_or_default();
            let factor = if sigma > 0.0 {
                rng.lognormal(0.0, sigma)
            } else {
                1.0
            };
            let mut t = t.clone();
            t.estimate = Some(Duration::from_secs_f64(truth.as_secs_f64() * factor));
            t
        })
        .collect()
}

/// A `--durations` file: a JSON object `{task id: milliseconds}`, or the coordinator's own
/// `DATA_DIR/durations.json` (its learned estimates: each task's moving average).
pub fn parse_durations(path: &str, text: &str) -> Result<HashMap<String, Duration>, DatasetError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| err(path, format!("not JSON: {e}")))?;
    if value
        .get("per_task")
        .is_some_and(serde_json::Value::is_object)
    {
        let learned: crate::estimate::Estimates = serde_json::from_value(value).map_err(|e| {
            err(
                path,
                format!("looks like a coordinator's durations.json but does not read as one: {e}"),
            )
        })?;
        return Ok(learned
            .per_task()
            .map(|(id, d)| (id.to_string(), d))
            .collect());
    }
    let raw: HashMap<String, f64> = serde_json::from_value(value).map_err(|e| {
        err(
            path,
            format!(
                "expected a JSON object {{\"task id\": milliseconds}} or a coordinator's durations.json: {e}"
            ),
        )
    })?;
    raw.into_iter()
        .map(|(id, ms)| {
            if ms.is_finite() && ms >= 0.0 {
                Ok((id, Duration::from_secs_f64(ms / 1000.0)))
            } else {
                Err(err(
                    path,
                    format!("task `{id}`: {ms} is not a duration in milliseconds"),
                ))
            }
        })
        .collect()
}

/// The file name without directory and extension.
fn stem(path: &str) -> String {
    let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
    name.rsplit_once('.').map_or(name, |(s, _)| s).to_string()
}
