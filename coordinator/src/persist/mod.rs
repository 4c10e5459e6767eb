//! Runs, graphs, task results, leases and run logs, kept in one crash-safe file under
//! `--data-dir` (redb), so a coordinator that is killed and started again carries on.
//!
//! Group commit: while the actor handles a batch of commands it notes here what changed; then
//! [`Store::commit`] writes all of it in one transaction, flushed to disk once, before anyone
//! (an agent, a watcher) hears of it. A crash loses at most what nobody was told.
//!
//! What is stored, and how a restart uses it:
//! - `runs`, `run_requests`: each run's `StartRunRequest` as the main job sent it (rules
//!   included), when it was completed and when it ended (wall clock, for run retention);
//! - `submissions`: every graph submitted to a run;
//! - `tasks`: each task's latest [`TaskRecord`] (status, attempts, failures, its lease);
//! - `agents`: who each agent is, to recognise it when it reconnects and reports its leases;
//! - `events`: every run event with its sequence number, output included, so `drover exec`
//!   resumes its watch from the last number it saw;
//! - `meta`: the next ids (run, agent, lease, fencing token) and the write counter that orders
//!   everything above for the replay.
//!
//! Run retention: [`Store::forget`] deletes every row of a run (range deletes on the
//! run-prefixed keys) in the next commit, and [`Store::open`] deletes the runs that ended before
//! a cutoff before reading anything, so an old store shrinks on the first start.

mod rows;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use drover_proto::v1 as pb;
use drover_scheduler::TaskSpec;
use drover_scheduler::state::{
    Action, AgentRecord, Counters, Replay, Restore, RunEvent, Scheduler,
};
use prost::Message;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};

use crate::error::CoordError;
use rows::{RunRow, StoredEvent, SubmissionRow, TaskRow};

/// The database file under the data dir.
pub const FILE: &str = "drover.redb";

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
const RUN_REQUESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("run_requests");
const SUBMISSIONS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("submissions");
const TASKS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("tasks");
const AGENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("agents");
const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");

const SCHEMA: u64 = 1;

/// What the store held when it was opened.
#[derive(Default)]
pub struct Loaded {
    pub restore: Restore,
    /// Each run's events in sequence order, with the submissions they belong to.
    pub logs: HashMap<String, Vec<(pb::RunEvent, Vec<u64>)>>,
    /// Runs that had ended before the cutoff given to [`Store::open`]: deleted, not loaded.
    pub forgotten: Vec<String>,
    /// Runs that could not be rebuilt from what was stored (their settings no longer
    /// check); the restart goes on without them.
    pub problems: Vec<String>,
    /// Records that could not be decoded: a damaged store, refused (see [`Store::open`]).
    damage: Vec<String>,
}

/// What changed since the last commit.
#[derive(Default)]
struct Batch {
    meta: BTreeMap<&'static str, u64>,
    runs: Vec<String>,
    requests: Vec<(String, Vec<u8>)>,
    submissions: Vec<(String, u64, Vec<u8>)>,
    /// Tasks to write, with the write counter of their last change.
    tasks: BTreeMap<(String, String), u64>,
    agents: Vec<(u64, Vec<u8>)>,
    events: Vec<(String, u64, Vec<u8>)>,
    /// Runs whose rows are deleted, after everything above is written.
    forget: Vec<String>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.meta.is_empty()
            && self.runs.is_empty()
            && self.submissions.is_empty()
            && self.tasks.is_empty()
            && self.agents.is_empty()
            && self.events.is_empty()
            && self.forget.is_empty()
    }
}

pub struct Store {
    /// The open file, until the commit thread takes it ([`Store::take_database`]).
    db: Option<Database>,
    path: PathBuf,
    /// The write counter: orders runs, submissions and task records for the replay.
    version: u64,
    runs: HashMap<String, RunRow>,
    counters: Counters,
    batch: Batch,
}

/// A store refused at start, and how to go on.
fn damaged(path: &Path, reason: &str) -> CoordError {
    CoordError::StoreDamaged {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Opens the store file, or creates it when there is none. A file that is empty, truncated or
/// damaged is refused and left exactly as it was: redb's integrity check repairs what it can,
/// so it runs on a copy.
fn open_verified(path: &Path) -> Result<Database, CoordError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Database::create(path).map_err(|e| store_error(path, e));
        }
        Err(e) => return Err(store_error(path, e)),
        Ok(m) if m.len() == 0 => return Err(damaged(path, "the file is empty (0 bytes)")),
        Ok(_) => {}
    }
    let copy = path.with_extension("redb.verifying");
    std::fs::copy(path, &copy).map_err(|e| {
        store_error(
            path,
            format!("cannot make a copy to check ({}): {e}", copy.display()),
        )
    })?;
    // redb may panic on a page it cannot make sense of: that is a damaged file too.
    let checked = copy.clone();
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let verdict = std::panic::catch_unwind(move || {
        Database::open(&checked)
            .map_err(|e| e.to_string())
            .and_then(|mut db| db.check_integrity().map_err(|e| e.to_string()))
    });
    std::panic::set_hook(quiet);
    let _ = std::fs::remove_file(&copy);
    let verdict = verdict.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "redb could not read it".into());
        Err(what)
    });
    match verdict {
        Ok(true) => {}
        Ok(false) => {
            return Err(damaged(
                path,
                "it fails redb's integrity check (redb could repair it, losing what it cannot read)",
            ));
        }
        Err(e) => return Err(damaged(path, &e)),
    }
    Database::open(path).map_err(|e| damaged(path, &e.to_string()))
}

fn store_error(path: &Path, e: impl std::fmt::Display) -> CoordError {
    CoordError::Store {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

impl Store {
    /// Opens (or creates) the store under `data_dir` and reads everything in it, except the
    /// runs that ended before `forget_ended_before` (milliseconds since the Unix epoch): those
    /// are deleted first and listed in [`Loaded::forgotten`].
    pub fn open(
        data_dir: &Path,
        run_spec: impl Fn(pb::StartRunRequest) -> Result<drover_scheduler::state::RunSpec, String>,
        forget_ended_before: Option<u64>,
    ) -> Result<(Store, Loaded), CoordError> {
        std::fs::create_dir_all(data_dir).map_err(|source| CoordError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let path = data_dir.join(FILE);
        let db = open_verified(&path)?;
        let mut store = Store {
            db: Some(db),
            path,
            version: 0,
            runs: HashMap::new(),
            counters: Counters::default(),
            batch: Batch::default(),
        };
        let loaded = store
            .load(run_spec, forget_ended_before)
            .map_err(|e| damaged(&store.path, &e.to_string()))?;
        if !loaded.damage.is_empty() {
            let shown: Vec<&str> = loaded.damage.iter().take(5).map(String::as_str).collect();
            let more = loaded.damage.len().saturating_sub(shown.len());
            let mut reason = format!("records cannot be read: {}", shown.join("; "));
            if more > 0 {
                reason.push_str(&format!("; and {more} more"));
            }
            return Err(damaged(&store.path, &reason));
        }
        Ok((store, loaded))
    }

    fn load(
        &mut self,
        run_spec: impl Fn(pb::StartRunRequest) -> Result<drover_scheduler::state::RunSpec, String>,
        forget_ended_before: Option<u64>,
    ) -> Result<Loaded, redb::Error> {
        let db = self.db.as_ref().expect("open while loading");
        let mut loaded = Loaded::default();
        // Create the tables on first use, so that reading finds them.
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut meta = txn.open_table(META)?;
            if meta.get("schema")?.is_none() {
                meta.insert("schema", SCHEMA)?;
            }
            txn.open_table(RUNS)?;
            txn.open_table(RUN_REQUESTS)?;
            txn.open_table(SUBMISSIONS)?;
            txn.open_table(TASKS)?;
            txn.open_table(AGENTS)?;
            txn.open_table(EVENTS)?;
        }
        if let Some(cutoff) = forget_ended_before {
            loaded.forgotten = runs_ended_before(&txn, cutoff)?;
            delete_runs(&txn, &loaded.forgotten)?;
        }
        txn.commit()?;

        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        let get = |key: &str| -> Result<u64, redb::Error> {
            Ok(meta.get(key)?.map(|v| v.value()).unwrap_or(0))
        };
        self.version = get("version")?;
        self.counters = Counters {
            next_agent: get("next_agent")?,
            next_lease: get("next_lease")?,
            next_token: get("next_token")?,
            next_run: get("next_run")?.max(1),
        };
        loaded.restore.counters = self.counters;

        let mut steps: Vec<(u64, Replay)> = Vec::new();
        let requests = txn.open_table(RUN_REQUESTS)?;
        for entry in txn.open_table(RUNS)?.iter()? {
            let (id, row) = entry?;
            let id = id.value().to_string();
            let Some(row) = decode::<RunRow>(&mut loaded.damage, &id, row.value()) else {
                continue;
            };
            let spec = match requests.get(id.as_str())? {
                None => {
                    loaded
                        .damage
                        .push(format!("run {id}: its request is missing"));
                    continue;
                }
                Some(bytes) => match pb::StartRunRequest::decode(bytes.value()) {
                    Ok(request) => run_spec(request),
                    Err(e) => {
                        loaded.damage.push(format!("run {id}: its request: {e}"));
                        continue;
                    }
                },
            };
            match spec {
                Ok(spec) => {
                    steps.push((
                        row.version,
                        Replay::StartRun {
                            run_id: id.clone(),
                            spec,
                            unix_ms: row.opened_at_ms.unwrap_or(0),
                        },
                    ));
                    if let Some(v) = row.completed {
                        steps.push((v, Replay::Complete { run_id: id.clone() }));
                    }
                    self.runs.insert(id, row);
                }
                Err(e) => loaded.problems.push(format!("run {id}: {e}")),
            }
        }
        for entry in txn.open_table(SUBMISSIONS)?.iter()? {
            let (key, row) = entry?;
            let (run_id, n) = key.value();
            let what = format!("submission {n} of run {run_id}");
            if let Some(row) = decode::<SubmissionRow>(&mut loaded.damage, &what, row.value()) {
                steps.push((
                    row.version,
                    Replay::Submit {
                        run_id: run_id.to_string(),
                        tasks: row.tasks,
                    },
                ));
            }
        }
        for entry in txn.open_table(TASKS)?.iter()? {
            let (key, row) = entry?;
            let (run_id, task_id) = key.value();
            let what = format!("task {task_id} of run {run_id}");
            if let Some(row) = decode::<TaskRow>(&mut loaded.damage, &what, row.value()) {
                steps.push((
                    row.version,
                    Replay::Task {
                        run_id: run_id.to_string(),
                        task_id: task_id.to_string(),
                        record: row.record,
                    },
                ));
            }
        }
        steps.sort_by_key(|(v, _)| *v);
        loaded.restore.steps = steps.into_iter().map(|(_, s)| s).collect();

        for entry in txn.open_table(AGENTS)?.iter()? {
            let (id, row) = entry?;
            let what = format!("agent-{}", id.value());
            if let Some(a) = decode::<AgentRecord>(&mut loaded.damage, &what, row.value()) {
                loaded.restore.agents.push(a);
            }
        }

        for entry in txn.open_table(EVENTS)?.iter()? {
            let (key, bytes) = entry?;
            let (run_id, seq) = key.value();
            let log = loaded.logs.entry(run_id.to_string()).or_default();
            // Sequence numbers are dense; a gap would renumber what follows, so stop there.
            if seq != log.len() as u64 + 1 {
                if seq > log.len() as u64 + 1 {
                    loaded.damage.push(format!(
                        "run {run_id}: events from {seq} on are out of order"
                    ));
                }
                continue;
            }
            match StoredEvent::decode(bytes.value()) {
                Ok(e) => log.push((e.event.unwrap_or_default(), e.submissions)),
                Err(e) => loaded
                    .damage
                    .push(format!("run {run_id}: event {seq}: {e}")),
            }
        }
        Ok(loaded)
    }

    fn next_version(&mut self) -> u64 {
        self.version += 1;
        self.batch.meta.insert("version", self.version);
        self.version
    }

    /// A run opened at `unix_ms` (milliseconds since the Unix epoch) with this request.
    pub fn run_started(&mut self, run_id: &str, request: &pb::StartRunRequest, unix_ms: u64) {
        let version = self.next_version();
        self.runs.insert(
            run_id.to_string(),
            RunRow {
                version,
                completed: None,
                ended_at_ms: None,
                opened_at_ms: Some(unix_ms),
            },
        );
        self.batch.runs.push(run_id.to_string());
        self.batch
            .requests
            .push((run_id.to_string(), request.encode_to_vec()));
    }

    /// A submission, its tasks encoded by [`encode_tasks`] (off the scheduling thread).
    /// The version a submission about to be applied will be stored with: taken before the
    /// scheduler takes the graph in, so that it sorts before the rows of the tasks leased
    /// while it does (a restore replays the submission, then those tasks). Unused when the
    /// submission is refused (versions only order rows; a gap is harmless).
    pub fn submission_version(&mut self) -> u64 {
        self.next_version()
    }

    /// A submission, stored with the version [`submission_version`](Self::submission_version)
    /// gave before it was applied.
    pub fn submitted(&mut self, run_id: &str, submission: u64, tasks: &[u8], version: u64) {
        // What serde writes for a `SubmissionRow { version, tasks }`, around tasks encoded
        // beforehand.
        let mut bytes = Vec::with_capacity(tasks.len() + 32);
        bytes.extend_from_slice(format!("{{\"version\":{version},\"tasks\":").as_bytes());
        bytes.extend_from_slice(tasks);
        bytes.push(b'}');
        self.batch
            .submissions
            .push((run_id.to_string(), submission, bytes));
    }

    pub fn completed(&mut self, run_id: &str) {
        let version = self.next_version();
        if let Some(row) = self.runs.get_mut(run_id)
            && row.completed.is_none()
        {
            row.completed = Some(version);
            self.batch.runs.push(run_id.to_string());
        }
    }

    /// The run ended at `at_ms` (milliseconds since the Unix epoch); a run keeps the first
    /// time noted.
    pub fn run_ended(&mut self, run_id: &str, at_ms: u64) {
        if let Some(row) = self.runs.get_mut(run_id)
            && row.ended_at_ms.is_none()
        {
            row.ended_at_ms = Some(at_ms);
            self.batch.runs.push(run_id.to_string());
        }
    }

    /// The runs that ended before `cutoff_ms` (milliseconds since the Unix epoch).
    pub fn ended_before(&self, cutoff_ms: u64) -> Vec<String> {
        let mut ids: Vec<String> = self
            .runs
            .iter()
            .filter(|(_, row)| row.ended_at_ms.is_some_and(|at| at < cutoff_ms))
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Deletes every row of a run in the next commit (after whatever that commit writes).
    pub fn forget(&mut self, run_id: &str) {
        self.runs.remove(run_id);
        self.batch.forget.push(run_id.to_string());
    }

    pub fn agent(&mut self, record: &AgentRecord) {
        match serde_json::to_vec(record) {
            Ok(bytes) => self.batch.agents.push((record.id.0, bytes)),
            Err(e) => tracing::error!(agent = %record.id, error = %e, "cannot encode an agent"),
        }
    }

    /// Notes the tasks the scheduler's actions changed; their records are written at commit.
    pub fn note(&mut self, actions: &[Action]) {
        for action in actions {
            let (run_id, task) = match action {
                Action::Lease { grant, .. } => (&grant.run_id, &grant.task_id),
                Action::Run { run_id, event } => match event {
                    RunEvent::TaskStarted { task, .. } | RunEvent::TaskRequeued { task, .. } => {
                        (run_id, task)
                    }
                    RunEvent::TaskFinished(f) => (run_id, &f.task),
                    _ => continue,
                },
                _ => continue,
            };
            let version = self.next_version();
            self.batch
                .tasks
                .insert((run_id.clone(), task.clone()), version);
        }
    }

    /// An event recorded in a run's log (numbered already).
    pub fn event(&mut self, run_id: &str, event: &pb::RunEvent, submissions: &[u64]) {
        let stored = StoredEvent {
            event: Some(event.clone()),
            submissions: submissions.to_vec(),
        };
        self.batch
            .events
            .push((run_id.to_string(), event.seq, stored.encode_to_vec()));
    }

    /// Writes everything noted since the last commit in one durable transaction.
    #[cfg(test)]
    pub fn commit(&mut self, sched: &Scheduler) -> Result<(), CoordError> {
        match (self.seal(sched), &self.db) {
            (Some(sealed), Some(db)) => {
                Sealed::write_all(db, &[sealed]).map_err(|e| store_error(&self.path, e))
            }
            _ => Ok(()),
        }
    }

    /// The open file and its path, for the commit thread, which writes every batch from now
    /// on (and may reopen the file after an I/O error).
    pub fn take_database(&mut self) -> Option<(Database, PathBuf)> {
        Some((self.db.take()?, self.path.clone()))
    }

    /// Everything noted since the last commit, encoded as rows, to be written by
    /// [`Sealed::write`] on any thread: the scheduling thread goes on meanwhile.
    pub fn seal(&mut self, sched: &Scheduler) -> Option<Sealed> {
        if self.batch.is_empty() {
            return None;
        }
        let counters = sched.counters();
        if counters != self.counters {
            self.counters = counters;
            self.batch.meta.insert("next_agent", counters.next_agent);
            self.batch.meta.insert("next_lease", counters.next_lease);
            self.batch.meta.insert("next_token", counters.next_token);
            self.batch.meta.insert("next_run", counters.next_run);
        }
        let batch = std::mem::take(&mut self.batch);
        let runs = batch
            .runs
            .iter()
            .filter_map(|id| self.runs.get(id).map(|row| (id.clone(), json(row))))
            .collect();
        let tasks = batch
            .tasks
            .into_iter()
            .filter_map(|((run_id, task_id), version)| {
                let record = sched.task_record(&run_id, &task_id)?;
                let row = json(&TaskRow { version, record });
                Some((run_id, task_id, row))
            })
            .collect();
        Some(Sealed {
            meta: batch.meta,
            runs,
            requests: batch.requests,
            submissions: batch.submissions,
            tasks,
            agents: batch.agents,
            events: batch.events,
            forget: batch.forget,
        })
    }
}

/// One commit's rows, ready to write.
pub struct Sealed {
    meta: BTreeMap<&'static str, u64>,
    runs: Vec<(String, Vec<u8>)>,
    requests: Vec<(String, Vec<u8>)>,
    submissions: Vec<(String, u64, Vec<u8>)>,
    tasks: Vec<(String, String, Vec<u8>)>,
    agents: Vec<(u64, Vec<u8>)>,
    events: Vec<(String, u64, Vec<u8>)>,
    forget: Vec<String>,
}

impl Sealed {
    /// Writes batches, in order, in one transaction flushed to disk before it returns.
    pub fn write_all<'a>(
        db: &Database,
        batches: impl IntoIterator<Item = &'a Sealed>,
    ) -> Result<(), redb::Error> {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        for batch in batches {
            batch.write_into(&txn)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn write_into(&self, txn: &WriteTransaction) -> Result<(), redb::Error> {
        {
            let mut meta = txn.open_table(META)?;
            for (k, v) in &self.meta {
                meta.insert(*k, *v)?;
            }
            let mut runs = txn.open_table(RUNS)?;
            for (id, bytes) in &self.runs {
                runs.insert(id.as_str(), bytes.as_slice())?;
            }
            let mut requests = txn.open_table(RUN_REQUESTS)?;
            for (id, bytes) in &self.requests {
                requests.insert(id.as_str(), bytes.as_slice())?;
            }
            let mut submissions = txn.open_table(SUBMISSIONS)?;
            for (id, n, bytes) in &self.submissions {
                submissions.insert((id.as_str(), *n), bytes.as_slice())?;
            }
            let mut tasks = txn.open_table(TASKS)?;
            for (run_id, task_id, bytes) in &self.tasks {
                tasks.insert((run_id.as_str(), task_id.as_str()), bytes.as_slice())?;
            }
            let mut agents = txn.open_table(AGENTS)?;
            for (id, bytes) in &self.agents {
                agents.insert(*id, bytes.as_slice())?;
            }
            let mut events = txn.open_table(EVENTS)?;
            for (id, seq, bytes) in &self.events {
                events.insert((id.as_str(), *seq), bytes.as_slice())?;
            }
        }
        delete_runs(txn, &self.forget)?;
        Ok(())
    }
}

/// A submission's tasks as the store keeps them (JSON, the `tasks` of a `SubmissionRow`).
pub fn encode_tasks(tasks: &[TaskSpec]) -> Vec<u8> {
    json(&tasks)
}

/// The runs whose stored row says they ended before `cutoff_ms`.
fn runs_ended_before(txn: &WriteTransaction, cutoff_ms: u64) -> Result<Vec<String>, redb::Error> {
    let mut ids = Vec::new();
    for entry in txn.open_table(RUNS)?.iter()? {
        let (id, row) = entry?;
        let ended = serde_json::from_slice::<RunRow>(row.value())
            .ok()
            .and_then(|row| row.ended_at_ms);
        if ended.is_some_and(|at| at < cutoff_ms) {
            ids.push(id.value().to_string());
        }
    }
    Ok(ids)
}

/// Deletes every row of these runs: one key each in `runs` and `run_requests`, a key range
/// each in `submissions`, `tasks` and `events`.
fn delete_runs(txn: &WriteTransaction, ids: &[String]) -> Result<(), redb::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut runs = txn.open_table(RUNS)?;
    let mut requests = txn.open_table(RUN_REQUESTS)?;
    let mut submissions = txn.open_table(SUBMISSIONS)?;
    let mut tasks = txn.open_table(TASKS)?;
    let mut events = txn.open_table(EVENTS)?;
    for id in ids {
        let id = id.as_str();
        runs.remove(id)?;
        requests.remove(id)?;
        submissions.retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
        events.retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
        // Every `(id, task)` key sorts below `(id + "\0", "")`, and no other run's key falls in
        // between: `id + "\0"` is the smallest string greater than `id`.
        let after = format!("{id}\0");
        tasks.retain_in((id, "")..(after.as_str(), ""), |_, _| false)?;
    }
    Ok(())
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Rows are plain structs of strings and numbers: encoding them cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: serde::de::DeserializeOwned>(
    problems: &mut Vec<String>,
    what: &str,
    bytes: &[u8],
) -> Option<T> {
    match serde_json::from_slice(bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(format!("{what}: {e}"));
            None
        }
    }
}

#[cfg(test)]
mod tests;
