//! Nx kept warm: tasks that `drover nx` marks (the `DROVER_NX_TASK` variable) run in a
//! long-lived Node process per agent slot that keeps the workspace's Nx loaded, its project
//! graph made, between the tasks of one run — instead of a full Nx start-up (about a second)
//! per task. The worker (`nx_worker.js`, written next to the agent's other state on first use)
//! drives Nx's own task-running API, `runDiscreteTasks`, so hashing, the caches and the
//! executors are Nx's.
//!
//! A worker serves one run in one checkout, one task at a time; it is kept for the next task
//! of that run and ended when a task of another run needs the slot, when its task is
//! cancelled or times out, and when the agent ends. Whenever the worker cannot serve a task
//! (no Nx in the checkout, an Nx without that API, a task with continuous dependencies, the
//! worker dying) the task runs its own command instead (`nx run …`), as without a worker, and
//! the agent's log says why. `DROVER_AGENT_NX_WORKER=off` turns workers off.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drover_proto::v1::OutputStream;
use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};

use drover_scheduler::duration::format_duration;

use crate::executor::{
    ExecContext, OUTPUT_CHUNK, ProcessGroup, TaskEvent, TaskResult, TaskSpec, agent_vars,
    set_task_env,
};

/// The variable `drover nx` sets on the tasks a worker can run: what to run, as JSON.
pub(crate) const TASK_VAR: &str = "DROVER_NX_TASK";
const SCRIPT: &str = include_str!("nx_worker.js");
/// How long a new worker may take to load Nx and make the project graph.
const READY_LIMIT: Duration = Duration::from_secs(120);

/// Whether workers are on (`DROVER_AGENT_NX_WORKER=off` turns them off).
pub(crate) fn enabled_by_env() -> bool {
    !std::env::var("DROVER_AGENT_NX_WORKER").is_ok_and(|v| v == "off")
}

/// The agent's workers: idle ones by run, and every worker's process group (to kill them all
/// when the agent ends, busy ones included).
#[derive(Default)]
pub(crate) struct NxWorkers {
    inner: Mutex<Pool>,
}

#[derive(Default)]
struct Pool {
    idle: Vec<Worker>,
    /// Runs whose workers could not start, and why: their tasks run their commands.
    unavailable: HashSet<String>,
    groups: HashMap<u32, Arc<ProcessGroup>>,
    /// Workspace trees of workers that ended, for the agent to give back.
    released: Vec<(String, u32)>,
    script: Option<PathBuf>,
    /// Tasks whose outputs a worker made in a checkout (the agent's, or a workspace tree)
    /// during a run: later tasks there do not restore them again. Without the Nx daemon a
    /// restore rewrites the outputs whole, and the agent's slots share the checkout, so
    /// restoring what is already there could pull it from under a task reading it.
    present: HashMap<Checkout, HashSet<String>>,
}

/// A run's checkout: the agent's own (`None`), or a tree of a daemon agent's workspace.
type Checkout = (String, Option<(String, u32)>);

impl Pool {
    fn end(&mut self, worker: Worker) {
        self.groups.remove(&worker.pid);
        worker.group.kill();
        self.released.extend(worker.tree);
    }
}

impl NxWorkers {
    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// SIGKILLs every worker's processes now.
    pub(crate) fn kill_all(&self) {
        let mut pool = self.pool();
        for group in pool.groups.values() {
            group.kill();
        }
        pool.groups.clear();
        for worker in std::mem::take(&mut pool.idle) {
            pool.end(worker);
        }
    }

    /// The workspace trees that ended workers held.
    pub(crate) fn released_trees(&self) -> Vec<(String, u32)> {
        std::mem::take(&mut self.pool().released)
    }

    /// An idle worker of the run; idle workers of other runs are ended (their runs are over
    /// or elsewhere).
    pub(crate) fn take(&self, run: &str) -> Option<Worker> {
        let mut pool = self.pool();
        let idle = std::mem::take(&mut pool.idle);
        let (mine, others): (Vec<Worker>, Vec<Worker>) =
            idle.into_iter().partition(|w| w.run == run);
        for w in others {
            pool.end(w);
        }
        pool.present.retain(|(r, _), _| r == run);
        let mut mine = mine.into_iter();
        let taken = mine.next();
        pool.idle.extend(mine);
        taken
    }

    fn give_back(&self, worker: Worker) {
        self.pool().idle.push(worker);
    }

    fn discard(&self, worker: Worker) {
        self.pool().end(worker);
    }

    fn release(&self, launch: Launch) {
        if let Launch::Workspace { tree, .. } = launch {
            self.pool().released.push(tree);
        }
    }

    /// The tasks whose outputs are in the worker's checkout already.
    fn present(&self, worker: &Worker) -> Vec<String> {
        let key = (worker.run.clone(), worker.tree.clone());
        let pool = self.pool();
        let mut tasks: Vec<String> = pool
            .present
            .get(&key)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        tasks.sort();
        tasks
    }

    fn made(&self, worker: &Worker, task: &str) {
        let key = (worker.run.clone(), worker.tree.clone());
        self.pool()
            .present
            .entry(key)
            .or_default()
            .insert(task.to_owned());
    }

    pub(crate) fn is_unavailable(&self, run: &str) -> bool {
        self.pool().unavailable.contains(run)
    }

    fn mark_unavailable(&self, run: &str) {
        self.pool().unavailable.insert(run.to_owned());
    }

    /// The worker's script on disk, written once per agent process.
    fn script(&self) -> io::Result<PathBuf> {
        if let Some(p) = &self.pool().script {
            return Ok(p.clone());
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("drover-agent-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("nx-worker.js");
        std::fs::write(&path, SCRIPT)?;
        self.pool().script = Some(path.clone());
        Ok(path)
    }
}

impl Drop for NxWorkers {
    fn drop(&mut self) {
        self.kill_all();
        if let Some(script) = self.pool().script.take()
            && let Some(dir) = script.parent()
        {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// One worker process: its pipes, its process group, and the mark that ends each reply.
pub(crate) struct Worker {
    run: String,
    /// The workspace tree it runs in, on a daemon agent with workspaces.
    tree: Option<(String, u32)>,
    pid: u32,
    child: Child,
    stdin: ChildStdin,
    stdout: MarkedReader<ChildStdout>,
    stderr: MarkedReader<tokio::process::ChildStderr>,
    group: Arc<ProcessGroup>,
}

/// What a task that a worker may run asks for, and whether the worker should be used.
pub(crate) fn wants_worker(ctx: &ExecContext, spec: &TaskSpec) -> bool {
    ctx.nx_worker && spec.env.contains_key(TASK_VAR)
}

/// How a worker's turn at a task ended.
pub(crate) enum WorkerOutcome {
    /// The task ran; this is its result.
    Done(TaskResult),
    /// Nothing was reported for the task (it was cancelled).
    Cancelled,
    /// The worker cannot run the task: run its command instead.
    Fallback,
}

/// Where a new worker starts: in the agent's checkout, or through `drover prepare-workspace`
/// (up to its `--`) in the run's tree of a daemon agent's workspace.
pub(crate) enum Launch {
    Checkout,
    Workspace {
        command: Box<Command>,
        tree: (String, u32),
    },
}

/// A task for a worker: the idle worker of its run the agent took, if any, else how to
/// start one.
pub(crate) struct WorkerTask {
    pub(crate) workers: Arc<NxWorkers>,
    pub(crate) ctx: ExecContext,
    pub(crate) spec: TaskSpec,
    pub(crate) events: mpsc::Sender<TaskEvent>,
    pub(crate) idle: Option<Worker>,
    pub(crate) launch: Launch,
}

/// Runs one task in a worker of its run, starting one if none is idle.
pub(crate) async fn run_task(task: WorkerTask, mut cancel: oneshot::Receiver<()>) -> WorkerOutcome {
    let WorkerTask {
        workers,
        ctx,
        spec,
        events,
        idle,
        launch,
    } = task;
    let started = Instant::now();
    let out = Forward {
        events: events.clone(),
        lease_id: spec.lease_id.clone(),
        token: spec.token,
    };
    let mut worker = match idle {
        Some(w) => {
            workers.release(launch);
            w
        }
        None if workers.is_unavailable(&spec.run_id) => {
            workers.release(launch);
            return WorkerOutcome::Fallback;
        }
        None => match start(&workers, &ctx, &spec, launch, &out, &mut cancel).await {
            Ok(Some(w)) => w,
            Ok(None) => return WorkerOutcome::Cancelled,
            Err(reason) => {
                tracing::info!(
                    run_id = spec.run_id,
                    "Nx worker unavailable, tasks of this run run as their commands: {reason}"
                );
                workers.mark_unavailable(&spec.run_id);
                return WorkerOutcome::Fallback;
            }
        },
    };
    tracing::info!(
        lease_id = spec.lease_id,
        task_id = spec.task_id,
        pid = worker.pid,
        "the task runs in an Nx worker"
    );
    let request = request(&ctx, &spec, &workers.present(&worker));
    if let Err(error) = worker.stdin.write_all(request.as_bytes()).await {
        tracing::warn!(lease_id = spec.lease_id, %error, "the Nx worker is gone; the task runs as its command");
        workers.discard(worker);
        return WorkerOutcome::Fallback;
    }
    let deadline = spec
        .timeout
        .map(|t| tokio::time::Instant::from_std(started + t));
    let reply = tokio::select! {
        reply = worker.reply(&out) => reply,
        () = crate::executor::sleep_until(deadline) => {
            stop(&workers, worker, ctx.kill_grace).await;
            let limit = spec.timeout.unwrap_or_default();
            return WorkerOutcome::Done(TaskResult {
                lease_id: spec.lease_id,
                token: spec.token,
                exit_code: -1,
                duration: started.elapsed(),
                error: format!("timed out after {}", format_duration(limit)),
            });
        }
        _ = &mut cancel => {
            stop(&workers, worker, ctx.kill_grace).await;
            return WorkerOutcome::Cancelled;
        }
    };
    let reply = match reply {
        Ok(reply) => reply,
        Err(reason) => {
            tracing::warn!(
                lease_id = spec.lease_id,
                "the Nx worker failed ({reason}); the task runs as its command"
            );
            out.line(&format!(
                "drover: the Nx worker failed ({reason}); running the task's own command\n"
            ))
            .await;
            workers.discard(worker);
            return WorkerOutcome::Fallback;
        }
    };
    let exit_code = reply
        .get("code")
        .and_then(Value::as_i64)
        .and_then(|c| i32::try_from(c).ok());
    if exit_code == Some(0) {
        workers.made(&worker, &spec.task_id);
    }
    workers.give_back(worker);
    if let Some(reason) = reply.get("fallback").and_then(Value::as_str) {
        tracing::info!(
            lease_id = spec.lease_id,
            "the Nx worker does not run this task ({reason}); it runs as its command"
        );
        return WorkerOutcome::Fallback;
    }
    WorkerOutcome::Done(TaskResult {
        lease_id: spec.lease_id,
        token: spec.token,
        exit_code: exit_code.unwrap_or(1),
        duration: started.elapsed(),
        error: String::new(),
    })
}

/// Starts a worker for the task's run and waits until Nx is loaded. `Ok(None)`: cancelled
/// meanwhile.
async fn start(
    workers: &NxWorkers,
    ctx: &ExecContext,
    spec: &TaskSpec,
    launch: Launch,
    out: &Forward,
    cancel: &mut oneshot::Receiver<()>,
) -> Result<Option<Worker>, String> {
    let script = match workers.script() {
        Ok(script) => script,
        Err(e) => {
            workers.release(launch);
            return Err(format!("cannot write the worker's script: {e}"));
        }
    };
    // Random per worker (std's hasher keys are), so that no task prints it by chance.
    let nonce = {
        let mut h = RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        format!("{:016x}", h.finish())
    };
    let env = task_env(ctx, spec);
    let (mut command, tree) = match launch {
        Launch::Checkout => {
            let mut c = Command::new("node");
            c.current_dir(&ctx.workdir);
            (c, None)
        }
        Launch::Workspace { mut command, tree } => {
            command.arg("node");
            (*command, Some(tree))
        }
    };
    // A tree held by a worker that never started goes back at once.
    let give_back = |tree: Option<(String, u32)>| workers.pool().released.extend(tree);
    command.arg(&script);
    set_task_env(&mut command, ctx, spec);
    command.env_remove(TASK_VAR);
    let task_vars: Vec<&String> = env.keys().collect();
    command
        .env("DROVER_NX_WORKER_NONCE", &nonce)
        .env(
            "DROVER_NX_WORKER_TASK_VARS",
            serde_json::to_string(&task_vars).unwrap_or_default(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let cgroup = match ctx.containment.for_task() {
        Ok(cgroup) => cgroup,
        Err(e) => {
            give_back(tree);
            return Err(format!("cannot make the worker's cgroup: {e}"));
        }
    };
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            give_back(tree);
            return Err(format!(
                "cannot start node in {}: {e}",
                ctx.workdir.display()
            ));
        }
    };
    let Some(pid) = child.id() else {
        give_back(tree);
        return Err("the worker vanished before it had a pid".into());
    };
    if let Some(cgroup) = &cgroup {
        cgroup.adopt(pid);
    }
    let group = Arc::new(ProcessGroup::new(pid, cgroup));
    workers.pool().groups.insert(pid, Arc::clone(&group));
    let mark = format!("\n\x01drover:{nonce}:").into_bytes();
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        give_back(tree);
        return Err("the worker's pipes are missing".into());
    };
    let mut worker = Worker {
        run: spec.run_id.clone(),
        tree,
        pid,
        child,
        stdin,
        stdout: MarkedReader::new(stdout, mark.clone(), OutputStream::Stdout),
        stderr: MarkedReader::new(stderr, mark, OutputStream::Stderr),
        group,
    };
    let ready = tokio::select! {
        ready = tokio::time::timeout(READY_LIMIT, worker.reply(out)) => ready,
        _ = cancel => {
            workers.discard(worker);
            return Ok(None);
        }
    };
    let reply = match ready {
        Ok(Ok(reply)) => reply,
        Ok(Err(reason)) => {
            workers.discard(worker);
            return Err(reason);
        }
        Err(_) => {
            workers.discard(worker);
            return Err(format!(
                "Nx did not load within {}",
                format_duration(READY_LIMIT)
            ));
        }
    };
    if let Some(reason) = reply.get("unavailable").and_then(Value::as_str) {
        workers.discard(worker);
        return Err(reason.to_owned());
    }
    let version = reply.get("nx").and_then(Value::as_str).unwrap_or("?");
    tracing::info!(
        run_id = spec.run_id,
        pid,
        nx = version,
        "started an Nx worker"
    );
    Ok(Some(worker))
}

/// Ends a worker whose task is being stopped: SIGTERM, then SIGKILL after the grace.
async fn stop(workers: &NxWorkers, mut worker: Worker, grace: Duration) {
    worker.group.signal(Signal::SIGTERM);
    if tokio::time::timeout(grace, worker.child.wait())
        .await
        .is_err()
    {
        worker.group.kill();
        let _ = worker.child.wait().await;
    }
    workers.discard(worker);
}

/// The variables a task gets: the lease's, and the agent's own.
fn task_env(ctx: &ExecContext, spec: &TaskSpec) -> HashMap<String, String> {
    let mut env = spec.env.clone();
    env.remove(TASK_VAR);
    env.extend(agent_vars(ctx, spec).map(|(k, v)| (k.to_string(), v)));
    env
}

/// The request line for the task: what `drover nx` put in `DROVER_NX_TASK`, its variables,
/// and the dependencies whose outputs are in the checkout already (not restored).
fn request(ctx: &ExecContext, spec: &TaskSpec, present: &[String]) -> String {
    let mut task = spec
        .env
        .get(TASK_VAR)
        .and_then(|v| serde_json::from_str::<Value>(v).ok())
        .unwrap_or(Value::Null);
    if let Some(obj) = task.as_object_mut() {
        obj.insert(
            "env".into(),
            serde_json::to_value(task_env(ctx, spec)).unwrap_or_default(),
        );
        obj.insert(
            "skip".into(),
            serde_json::to_value(present).unwrap_or_default(),
        );
    }
    let mut line = task.to_string();
    line.push('\n');
    line
}

impl Worker {
    /// Forwards the worker's output as the task's until both streams carry the reply's mark;
    /// the reply is the JSON after the mark on stdout.
    async fn reply(&mut self, out: &Forward) -> Result<Value, String> {
        let (stdout, stderr) =
            tokio::join!(self.stdout.until_mark(out), self.stderr.until_mark(out));
        let reply = stdout?;
        stderr?;
        let line = String::from_utf8_lossy(&reply);
        serde_json::from_str(line.trim()).map_err(|e| format!("unreadable reply {line:?}: {e}"))
    }
}

/// Where a worker's output goes: the task's output events.
struct Forward {
    events: mpsc::Sender<TaskEvent>,
    lease_id: String,
    token: u64,
}

impl Forward {
    async fn send(&self, stream: OutputStream, data: Vec<u8>) {
        if data.is_empty() {
            return;
        }
        let _ = self
            .events
            .send(TaskEvent::Output {
                lease_id: self.lease_id.clone(),
                token: self.token,
                stream,
                data,
            })
            .await;
    }

    async fn line(&self, text: &str) {
        self.send(OutputStream::Stderr, text.as_bytes().to_vec())
            .await;
    }
}

/// One of a worker's output pipes, read up to each reply's mark.
struct MarkedReader<R> {
    reader: R,
    mark: Vec<u8>,
    stream: OutputStream,
    /// Read and not yet forwarded: a possible start of the mark, or what followed one.
    pending: Vec<u8>,
}

impl<R: AsyncRead + Unpin> MarkedReader<R> {
    fn new(reader: R, mark: Vec<u8>, stream: OutputStream) -> Self {
        Self {
            reader,
            mark,
            stream,
            pending: Vec::new(),
        }
    }

    /// Forwards output up to the next mark and returns the rest of the mark's line.
    async fn until_mark(&mut self, out: &Forward) -> Result<Vec<u8>, String> {
        let mut buf = vec![0u8; OUTPUT_CHUNK];
        loop {
            if let Some(at) = find(&self.pending, &self.mark) {
                let after = at + self.mark.len();
                if let Some(nl) = self.pending[after..].iter().position(|&b| b == b'\n') {
                    let rest = self.pending.split_off(after + nl + 1);
                    let mut marked = std::mem::replace(&mut self.pending, rest);
                    let reply = marked[after..after + nl].to_vec();
                    marked.truncate(at);
                    out.send(self.stream, marked).await;
                    return Ok(reply);
                }
            } else {
                // Everything that cannot be the start of a mark goes out now.
                let keep = partial_mark(&self.pending, &self.mark);
                let ready = self.pending.len() - keep;
                if ready > 0 {
                    let rest = self.pending.split_off(ready);
                    let data = std::mem::replace(&mut self.pending, rest);
                    out.send(self.stream, data).await;
                }
            }
            let n = match self.reader.read(&mut buf).await {
                Ok(0) => {
                    let data = std::mem::take(&mut self.pending);
                    out.send(self.stream, data).await;
                    return Err("the worker exited".into());
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("reading the worker's output: {e}")),
            };
            self.pending.extend_from_slice(&buf[..n]);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The length of the longest end of `data` that begins `mark`.
fn partial_mark(data: &[u8], mark: &[u8]) -> usize {
    (1..mark.len().min(data.len() + 1))
        .rev()
        .find(|&k| data.ends_with(&mark[..k]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_split_across_reads_is_held_back_and_nothing_else() {
        let mark = b"\n\x01drover:ab:";
        assert_eq!(partial_mark(b"hello", mark), 0);
        assert_eq!(partial_mark(b"hello\n", mark), 1);
        assert_eq!(partial_mark(b"hello\n\x01dro", mark), 5);
        assert_eq!(partial_mark(b"", mark), 0);
    }

    #[tokio::test]
    async fn output_before_the_mark_is_the_tasks_and_the_reply_follows_it() {
        let (tx, mut rx) = mpsc::channel(16);
        let out = Forward {
            events: tx,
            lease_id: "1".into(),
            token: 1,
        };
        let data: &[u8] = b"built\n\n\x01drover:ab:{\"code\":3}\nnext";
        let mut reader =
            MarkedReader::new(data, b"\n\x01drover:ab:".to_vec(), OutputStream::Stdout);
        let reply = reader.until_mark(&out).await.unwrap();
        assert_eq!(reply, b"{\"code\":3}");
        drop(out);
        let mut forwarded = Vec::new();
        while let Some(TaskEvent::Output { data, .. }) = rx.recv().await {
            forwarded.extend(data);
        }
        assert_eq!(forwarded, b"built\n");
        assert_eq!(reader.pending, b"next");
    }
}
