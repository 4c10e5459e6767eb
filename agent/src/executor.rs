//! Runs leased tasks: `sh -c <command>` in the agent's checkout, each in its own process
//! group, stdout and stderr streamed in chunks as they arrive, a timeout that takes the whole
//! group down, and a guard that kills the group however the agent ends.
//!
//! [`TaskSet`] owns every supervisor task and every process group; dropping it kills them all
//! synchronously, so even an error path or a `process::exit` right after `run` returns leaves
//! no task process behind.

use std::collections::HashMap;
use std::future::pending;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use drover_proto::v1::{Finished, Lease, OutputStream};
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{self, JoinError, JoinSet};

use drover_scheduler::duration::format_duration;

use crate::contain::{Containment, TaskCgroup};
use crate::nx_worker::{self, NxWorkers, WorkerOutcome};
use crate::workspace::{Trees, WorkspacesConfig, coordinator_templates_path};

/// The largest output chunk read and sent at once.
pub(crate) const OUTPUT_CHUNK: usize = 16 * 1024;
/// Between SIGTERM and SIGKILL when a task times out or is cancelled.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(3);
/// How long to keep reading output after the task's group is gone, for pipes held open by a
/// process that escaped the group.
pub(crate) const PIPE_DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// Task events waiting for the agent loop; a full queue slows the task's output, not the agent.
const EVENT_QUEUE: usize = 256;

/// What every task of this agent shares.
#[derive(Debug, Clone)]
pub(crate) struct ExecContext {
    pub(crate) workdir: PathBuf,
    pub(crate) agent_name: String,
    pub(crate) launch_template: String,
    pub(crate) kill_grace: Duration,
    pub(crate) pipe_drain_limit: Duration,
    /// A daemon agent's workspaces: tasks of runs that name a repository run in one.
    pub(crate) workspaces: Option<WorkspacesConfig>,
    /// Process groups, or a cgroup per task.
    pub(crate) containment: Containment,
    /// Whether tasks that `drover nx` marks run in warm Nx workers ([`crate::nx_worker`]).
    pub(crate) nx_worker: bool,
}

/// One task to run, taken from a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskSpec {
    pub(crate) lease_id: String,
    pub(crate) token: u64,
    pub(crate) run_id: String,
    pub(crate) task_id: String,
    pub(crate) command: String,
    pub(crate) env: HashMap<String, String>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) attempt: u32,
    /// The run's repository and commit (empty: the agent's own checkout).
    pub(crate) repository: String,
    pub(crate) commit: String,
}

impl From<Lease> for TaskSpec {
    fn from(lease: Lease) -> Self {
        Self {
            lease_id: lease.lease_id,
            token: lease.fencing_token,
            run_id: lease.run_id,
            task_id: lease.task_id,
            command: lease.command,
            env: lease.env,
            timeout: (lease.timeout_ms > 0).then(|| Duration::from_millis(lease.timeout_ms)),
            attempt: lease.attempt,
            repository: lease.repository,
            commit: lease.commit,
        }
    }
}

/// Variables of the agent's environment that hold long-lived credentials; tasks never see them.
pub(crate) const AGENT_SECRETS: &[&str] = &[
    "DROVER_TOKEN",
    "DROVER_CACHE_TOKEN",
    "DROVER_CACHE_READ_TOKEN",
    "NX_CLOUD_ACCESS_TOKEN",
    "NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN",
];

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskResult {
    pub(crate) lease_id: String,
    pub(crate) token: u64,
    /// The process's exit code; -1 when it did not exit on its own.
    pub(crate) exit_code: i32,
    pub(crate) duration: Duration,
    /// Why there is no exit code of the process's own ("timed out after 10s").
    pub(crate) error: String,
}

impl TaskResult {
    /// A result for a task that never ran.
    pub(crate) fn not_run(lease_id: &str, token: u64, error: String) -> Self {
        Self {
            lease_id: lease_id.to_owned(),
            token,
            exit_code: -1,
            duration: Duration::ZERO,
            error,
        }
    }

    pub(crate) fn into_finished(self) -> Finished {
        Finished {
            lease_id: self.lease_id,
            fencing_token: self.token,
            exit_code: self.exit_code,
            duration_ms: u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
            error: self.error,
        }
    }
}

/// What running tasks report to the agent loop, in order per task: output chunks, then one
/// `Finished` (none for a cancelled task).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TaskEvent {
    Output {
        lease_id: String,
        token: u64,
        stream: OutputStream,
        data: Vec<u8>,
    },
    Finished(TaskResult),
}

/// A task's processes: its process group and, where the agent uses them, its cgroup.
/// Killed with SIGKILL when dropped unless it already was.
#[derive(Debug)]
pub(crate) struct ProcessGroup {
    pgid: Pid,
    killed: AtomicBool,
    cgroup: std::sync::Mutex<Option<TaskCgroup>>,
}

impl ProcessGroup {
    pub(crate) fn new(leader: u32, cgroup: Option<TaskCgroup>) -> Self {
        let pgid = Pid::from_raw(i32::try_from(leader).unwrap_or(0));
        Self {
            pgid,
            killed: AtomicBool::new(false),
            cgroup: std::sync::Mutex::new(cgroup),
        }
    }

    /// Sends `signal` to the whole group (and cgroup), unless it was already killed.
    pub(crate) fn signal(&self, signal: Signal) {
        if !self.killed.load(Ordering::SeqCst) {
            self.send(signal);
            if let Some(cgroup) = &*self.cgroup() {
                cgroup.signal(signal);
            }
        }
    }

    /// SIGKILL to the whole group, once; later signals are not sent (the group id may be
    /// reused once its processes are gone). The cgroup is killed whole every time: it holds
    /// only the task's processes, and those that left the process group.
    pub(crate) fn kill(&self) {
        if !self.killed.swap(true, Ordering::SeqCst) {
            self.send(Signal::SIGKILL);
        }
        if let Some(cgroup) = &*self.cgroup() {
            cgroup.kill();
        }
    }

    /// Puts the (empty) cgroup back for the next task; one the kernel has not emptied yet
    /// (it does in moments, not at once) is killed and removed off the async threads.
    fn release(&self) {
        if let Some(cgroup) = self.cgroup().take().and_then(TaskCgroup::put_back) {
            task::spawn_blocking(move || drop(cgroup));
        }
    }

    fn cgroup(&self) -> std::sync::MutexGuard<'_, Option<TaskCgroup>> {
        self.cgroup.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, signal: Signal) {
        // Group ids 0 and 1 would mean our own group and init: never signal those.
        if self.pgid.as_raw() <= 1 {
            return;
        }
        match killpg(self.pgid, signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(error) => {
                tracing::warn!(pgid = self.pgid.as_raw(), ?signal, %error, "could not signal a task's process group")
            }
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Running {
    token: u64,
    supervisor: task::Id,
    cancel: oneshot::Sender<()>,
}

/// The words of a command that needs no shell, as make decides it: nothing but plain words
/// (no quotes, variables, globs, redirections, pipes, separators, comments or escapes), and
/// a first word that is a program, not a shell keyword, builtin or assignment. Such a
/// command runs directly, which saves a shell's start per task; anything else runs under
/// `sh -c` as written.
pub(crate) fn direct_argv(command: &str) -> Option<Vec<String>> {
    const SHELL: &[&str] = &[
        ".", ":", "alias", "bg", "break", "case", "cd", "command", "continue", "do", "done",
        "elif", "else", "esac", "eval", "exec", "exit", "export", "fg", "fi", "for", "function",
        "getopts", "hash", "if", "in", "jobs", "local", "read", "readonly", "return", "select",
        "set", "shift", "source", "test", "then", "time", "times", "trap", "type", "typeset",
        "ulimit", "umask", "unalias", "unset", "until", "wait", "while",
    ];
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./,:+@%=".contains(c);
    if !command.chars().all(|c| plain(c) || c == ' ' || c == '\t') {
        return None;
    }
    let argv: Vec<String> = command.split_whitespace().map(str::to_string).collect();
    let first = argv.first()?;
    if first.contains('=') || SHELL.contains(&first.as_str()) {
        return None;
    }
    Some(argv)
}

/// Where a program name resolves, as the task's `execvp` would find it: a path (from the
/// task's directory) to an executable file, or the first executable file of that name on the
/// task's PATH (relative entries from the task's directory). `None` when it does not resolve:
/// the command then runs under the shell, which says "not found" as usual. The task starts
/// from the path found, so its process looks nowhere else.
fn resolve(
    program: &str,
    workdir: &std::path::Path,
    task_path: Option<&String>,
) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = workdir.join(program);
        return executable(&p).then_some(p);
    }
    let path = match task_path {
        Some(p) => std::ffi::OsString::from(p),
        None => std::env::var_os("PATH")?,
    };
    std::env::split_paths(&path)
        .map(|dir| workdir.join(dir).join(program))
        .find(|p| executable(p))
}

/// What the agent tells every task about itself and the lease.
pub(crate) fn agent_vars(ctx: &ExecContext, spec: &TaskSpec) -> [(&'static str, String); 5] {
    [
        ("DROVER_AGENT_NAME", ctx.agent_name.clone()),
        ("DROVER_LAUNCH_TEMPLATE", ctx.launch_template.clone()),
        ("DROVER_TASK_ID", spec.task_id.clone()),
        ("DROVER_RUN_ID", spec.run_id.clone()),
        ("DROVER_ATTEMPT", spec.attempt.to_string()),
    ]
}

/// A task's variables on its process: the lease's, then [`agent_vars`]. The agent's own
/// credentials stay with the agent: a task gets the one minted for its lease (in the lease's
/// variables), never a long-lived token.
pub(crate) fn set_task_env(command: &mut Command, ctx: &ExecContext, spec: &TaskSpec) {
    command.envs(&spec.env);
    for name in AGENT_SECRETS {
        if !spec.env.contains_key(*name) {
            command.env_remove(name);
        }
    }
    command.envs(agent_vars(ctx, spec));
}

/// `drover prepare-workspace` for the task's run in tree `n`, up to the `--` after which the
/// command it becomes goes.
pub(crate) fn prepare_workspace(
    ws: &WorkspacesConfig,
    launch_template: &str,
    spec: &TaskSpec,
    n: u32,
) -> Command {
    let mut c = Command::new(&ws.exe);
    c.arg("prepare-workspace")
        .arg("--workspaces")
        .arg(&ws.dir)
        .args(["--repository", &spec.repository, "--commit", &spec.commit])
        .args(["--run", &spec.run_id, "--tree", &n.to_string()])
        .args(["--launch-template", launch_template]);
    for f in ws
        .launch_templates
        .iter()
        .cloned()
        .chain([coordinator_templates_path(&ws.dir)])
    {
        c.arg("--fallback-templates").arg(f);
    }
    for k in &ws.keep {
        c.args(["--keep", k]);
    }
    c.arg("--").current_dir(&ws.dir);
    c
}

/// The running tasks of one agent: their supervisors, process groups and events.
pub(crate) struct TaskSet {
    ctx: ExecContext,
    running: HashMap<String, Running>,
    groups: HashMap<task::Id, Arc<ProcessGroup>>,
    leases: HashMap<task::Id, (String, u64)>,
    supervisors: JoinSet<()>,
    events_tx: mpsc::Sender<TaskEvent>,
    events_rx: mpsc::Receiver<TaskEvent>,
    trees: Trees,
    /// The workspace tree each supervisor's task runs in.
    tree_of: HashMap<task::Id, (String, u32)>,
    nx_workers: Arc<NxWorkers>,
    /// Tasks a warm Nx worker handed back, to run as their commands.
    fallback_tx: mpsc::UnboundedSender<TaskSpec>,
    fallback_rx: mpsc::UnboundedReceiver<TaskSpec>,
}

impl TaskSet {
    pub(crate) fn new(ctx: ExecContext) -> Self {
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (fallback_tx, fallback_rx) = mpsc::unbounded_channel();
        Self {
            ctx,
            running: HashMap::new(),
            groups: HashMap::new(),
            leases: HashMap::new(),
            supervisors: JoinSet::new(),
            events_tx,
            events_rx,
            trees: Trees::default(),
            tree_of: HashMap::new(),
            nx_workers: Arc::new(NxWorkers::default()),
            fallback_tx,
            fallback_rx,
        }
    }

    /// Tasks started and neither finished, cancelled nor killed.
    #[cfg(test)]
    pub(crate) fn running(&self) -> usize {
        self.running.len()
    }

    /// Spawns the task's process and its supervisor (or hands the task to a warm Nx worker).
    /// An error means nothing was started.
    pub(crate) fn start(&mut self, spec: TaskSpec) -> io::Result<()> {
        let in_workspace =
            self.ctx.workspaces.is_some() && !spec.repository.is_empty() && !spec.commit.is_empty();
        if nx_worker::wants_worker(&self.ctx, &spec) {
            self.start_in_worker(spec, in_workspace);
            return Ok(());
        }
        self.start_command(spec)
    }

    /// Trees that ended workers held, back to the trees free for other runs.
    fn give_back_worker_trees(&mut self) {
        for tree in self.nx_workers.released_trees() {
            self.trees.give_back(&tree);
        }
    }

    /// Hands the task to a warm Nx worker of its run (an idle one, else a new one, started in
    /// the run's workspace tree on a daemon agent with workspaces); one that cannot run it
    /// hands it back (see [`Self::next_event`]).
    fn start_in_worker(&mut self, spec: TaskSpec, in_workspace: bool) {
        let idle = self.nx_workers.take(&spec.run_id);
        self.give_back_worker_trees();
        let launch = match (&idle, &self.ctx.workspaces) {
            (None, Some(ws)) if in_workspace => {
                let tree = self.trees.take(&spec.repository, &spec.run_id);
                let command = prepare_workspace(ws, &self.ctx.launch_template, &spec, tree.1);
                nx_worker::Launch::Workspace {
                    command: Box::new(command),
                    tree,
                }
            }
            _ => nx_worker::Launch::Checkout,
        };
        let (cancel_tx, cancel_rx) = oneshot::channel();
        let (workers, ctx) = (Arc::clone(&self.nx_workers), self.ctx.clone());
        let (events, fallback) = (self.events_tx.clone(), self.fallback_tx.clone());
        let (lease_id, token) = (spec.lease_id.clone(), spec.token);
        let id = self
            .supervisors
            .spawn(async move {
                let task = nx_worker::WorkerTask {
                    workers,
                    ctx,
                    spec: spec.clone(),
                    events: events.clone(),
                    idle,
                    launch,
                };
                let outcome = nx_worker::run_task(task, cancel_rx).await;
                match outcome {
                    WorkerOutcome::Done(result) => {
                        let _ = events.send(TaskEvent::Finished(result)).await;
                    }
                    WorkerOutcome::Cancelled => {}
                    WorkerOutcome::Fallback => {
                        let _ = fallback.send(spec);
                    }
                }
            })
            .id();
        self.leases.insert(id, (lease_id.clone(), token));
        self.running.insert(
            lease_id,
            Running {
                token,
                supervisor: id,
                cancel: cancel_tx,
            },
        );
    }

    /// Spawns the task's command and its supervisor. An error means nothing was started.
    fn start_command(&mut self, spec: TaskSpec) -> io::Result<()> {
        self.give_back_worker_trees();
        let ctx = &self.ctx;
        let workspace = ctx
            .workspaces
            .as_ref()
            .filter(|_| !spec.repository.is_empty() && !spec.commit.is_empty());
        let mut tree = None;
        let mut command = match workspace {
            None => {
                let direct = direct_argv(&spec.command).and_then(|argv| {
                    let program = resolve(&argv[0], &ctx.workdir, spec.env.get("PATH"))?;
                    Some((program, argv))
                });
                let mut c = match direct {
                    // Like make: a plain command runs without a shell in between.
                    Some((program, argv)) => {
                        let mut c = Command::new(program);
                        c.arg0(&argv[0]).args(&argv[1..]);
                        c
                    }
                    None => {
                        let mut c = Command::new("sh");
                        c.arg("-c").arg(&spec.command);
                        c
                    }
                };
                c.current_dir(&ctx.workdir);
                c
            }
            Some(ws) => {
                // The task's own process prepares the run's workspace, then becomes the task.
                let (key, n) = self.trees.take(&spec.repository, &spec.run_id);
                let mut c = prepare_workspace(ws, &ctx.launch_template, &spec, n);
                c.args(["sh", "-c", &spec.command]);
                tree = Some((key, n));
                c
            }
        };
        set_task_env(&mut command, ctx, &spec);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let cgroup = match ctx.containment.for_task() {
            Ok(cgroup) => cgroup,
            Err(error) => {
                if let Some(t) = &tree {
                    self.trees.give_back(t);
                }
                return Err(io::Error::new(
                    error.kind(),
                    format!("cannot make the task's cgroup: {error}"),
                ));
            }
        };

        let started = Instant::now();
        let child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                if let Some(t) = &tree {
                    self.trees.give_back(t);
                }
                return Err(io::Error::new(
                    error.kind(),
                    format!(
                        "cannot start the task in {}: {error}",
                        ctx.workdir.display()
                    ),
                ));
            }
        };
        let Some(pid) = child.id() else {
            return Err(io::Error::other(
                "the task process vanished before it had a pid",
            ));
        };
        if let Some(cgroup) = &cgroup {
            cgroup.adopt(pid);
        }
        let group = Arc::new(ProcessGroup::new(pid, cgroup));
        let (cancel_tx, cancel_rx) = oneshot::channel();
        let supervisor = Supervisor {
            child,
            group: Arc::clone(&group),
            lease_id: spec.lease_id.clone(),
            token: spec.token,
            timeout: spec.timeout,
            started,
            kill_grace: ctx.kill_grace,
            pipe_drain_limit: ctx.pipe_drain_limit,
            events: self.events_tx.clone(),
        };
        let id = self.supervisors.spawn(supervisor.run(cancel_rx)).id();
        if let Some(t) = tree {
            self.tree_of.insert(id, t);
        }
        self.groups.insert(id, group);
        self.leases.insert(id, (spec.lease_id.clone(), spec.token));
        self.running.insert(
            spec.lease_id,
            Running {
                token: spec.token,
                supervisor: id,
                cancel: cancel_tx,
            },
        );
        Ok(())
    }

    /// Kills the task's process group (SIGTERM, then SIGKILL after the grace) and forgets
    /// the task: no `Finished` will come for it. False when no such task runs.
    pub(crate) fn cancel(&mut self, lease_id: &str) -> bool {
        match self.running.remove(lease_id) {
            Some(running) => {
                // An error means the supervisor is already past waiting: nothing left to stop.
                let _ = running.cancel.send(());
                true
            }
            None => false,
        }
    }

    /// SIGKILLs every task's process group now, cancelled ones included, and forgets them.
    /// Returns how many tasks were still running.
    pub(crate) fn kill_all(&mut self) -> usize {
        for group in self.groups.values() {
            group.kill();
        }
        self.nx_workers.kill_all();
        let killed = self.running.len();
        self.running.clear();
        killed
    }

    /// The next output chunk or result of any task. Cancel-safe.
    pub(crate) async fn next_event(&mut self) -> TaskEvent {
        loop {
            tokio::select! {
                Some(event) = self.events_rx.recv() => {
                    if let TaskEvent::Finished(result) = &event {
                        self.forget(&result.lease_id, result.token);
                    }
                    return event;
                }
                Some(joined) = self.supervisors.join_next_with_id(), if !self.supervisors.is_empty() => {
                    if let Some(event) = self.reap(joined) {
                        return event;
                    }
                }
                Some(spec) = self.fallback_rx.recv() => {
                    // Unless it was cancelled meanwhile, the task runs as its command.
                    if self.running.get(&spec.lease_id).is_none_or(|r| r.token != spec.token) {
                        continue;
                    }
                    let (lease_id, token) = (spec.lease_id.clone(), spec.token);
                    if let Err(error) = self.start_command(spec) {
                        self.running.remove(&lease_id);
                        return TaskEvent::Finished(TaskResult::not_run(&lease_id, token, error.to_string()));
                    }
                }
                else => pending::<()>().await,
            }
        }
    }

    fn forget(&mut self, lease_id: &str, token: u64) {
        if self.running.get(lease_id).is_some_and(|r| r.token == token) {
            self.running.remove(lease_id);
        }
    }

    /// Bookkeeping for a supervisor that ended; a panicked one still owes its task a result.
    fn reap(&mut self, joined: Result<(task::Id, ()), JoinError>) -> Option<TaskEvent> {
        let id = match &joined {
            Ok((id, ())) => *id,
            Err(error) => error.id(),
        };
        self.groups.remove(&id);
        if let Some(t) = self.tree_of.remove(&id) {
            self.trees.give_back(&t);
        }
        let (lease_id, token) = self.leases.remove(&id)?;
        let error = joined.err().filter(JoinError::is_panic)?;
        tracing::error!(lease_id, %error, "a task supervisor panicked; its process group was killed");
        let owed = self
            .running
            .get(&lease_id)
            .is_some_and(|r| r.supervisor == id);
        owed.then(|| {
            self.running.remove(&lease_id);
            TaskEvent::Finished(TaskResult::not_run(
                &lease_id,
                token,
                format!("agent bug: the task supervisor panicked: {error}"),
            ))
        })
    }
}

impl Drop for TaskSet {
    fn drop(&mut self) {
        let killed = self.kill_all();
        if killed > 0 {
            tracing::warn!(killed, "killed running tasks because the agent is exiting");
        }
    }
}

/// Watches one task from spawn to result.
struct Supervisor {
    child: Child,
    group: Arc<ProcessGroup>,
    lease_id: String,
    token: u64,
    timeout: Option<Duration>,
    started: Instant,
    kill_grace: Duration,
    pipe_drain_limit: Duration,
    events: mpsc::Sender<TaskEvent>,
}

enum Ending {
    Exited,
    TimedOut(Duration),
    Cancelled,
}

impl Supervisor {
    async fn run(mut self, mut cancel: oneshot::Receiver<()>) {
        let mut pumps = JoinSet::new();
        if let Some(stdout) = self.child.stdout.take() {
            pumps.spawn(self.pump(stdout, OutputStream::Stdout));
        }
        if let Some(stderr) = self.child.stderr.take() {
            pumps.spawn(self.pump(stderr, OutputStream::Stderr));
        }
        let deadline = self
            .timeout
            .map(|t| tokio::time::Instant::from_std(self.started + t));
        let (ending, status) = tokio::select! {
            status = self.child.wait() => (Ending::Exited, status),
            () = sleep_until(deadline) => {
                let status = self.stop_group().await;
                (Ending::TimedOut(self.timeout.unwrap_or_default()), status)
            }
            // A dropped sender means the agent is going away: stop the task too.
            _ = &mut cancel => (Ending::Cancelled, self.stop_group().await),
        };
        let duration = self.started.elapsed();
        // Whatever the task left running in its group (and its cgroup) goes with it.
        self.group.kill();
        let drained = tokio::time::timeout(self.pipe_drain_limit, async {
            while pumps.join_next().await.is_some() {}
        })
        .await;
        self.group.release();
        if drained.is_err() {
            tracing::warn!(
                lease_id = self.lease_id,
                "a process outside the task's group still holds its output open; stopped reading after {}",
                format_duration(self.pipe_drain_limit)
            );
        }
        let (exit_code, error) = match ending {
            Ending::Cancelled => return,
            Ending::TimedOut(limit) => (-1, format!("timed out after {}", format_duration(limit))),
            Ending::Exited => describe(status),
        };
        let result = TaskResult {
            lease_id: self.lease_id,
            token: self.token,
            exit_code,
            duration,
            error,
        };
        // An error means the agent loop is gone, and with it anyone to tell.
        let _ = self.events.send(TaskEvent::Finished(result)).await;
    }

    /// SIGTERM to the group, SIGKILL after the grace; returns the leader's status.
    async fn stop_group(&mut self) -> io::Result<ExitStatus> {
        self.group.signal(Signal::SIGTERM);
        if let Ok(status) = tokio::time::timeout(self.kill_grace, self.child.wait()).await {
            return status;
        }
        self.group.kill();
        self.child.wait().await
    }

    fn pump(
        &self,
        mut reader: impl AsyncRead + Unpin + Send + 'static,
        stream: OutputStream,
    ) -> impl Future<Output = ()> + Send + 'static {
        let events = self.events.clone();
        let (lease_id, token) = (self.lease_id.clone(), self.token);
        async move {
            let mut buf = vec![0u8; OUTPUT_CHUNK];
            loop {
                let n = match reader.read(&mut buf).await {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                    Err(error) => {
                        tracing::warn!(lease_id, ?stream, %error, "reading task output failed");
                        return;
                    }
                };
                let data = buf[..n].to_vec();
                let event = TaskEvent::Output {
                    lease_id: lease_id.clone(),
                    token,
                    stream,
                    data,
                };
                if events.send(event).await.is_err() {
                    return;
                }
            }
        }
    }
}

pub(crate) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => pending().await,
    }
}

/// The exit code and error text for a process status.
fn describe(status: io::Result<ExitStatus>) -> (i32, String) {
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => (code, String::new()),
            (None, Some(signal)) => (-1, format!("killed by signal {signal}")),
            (None, None) => (-1, format!("ended without an exit code ({status})")),
        },
        Err(error) => (-1, format!("could not wait for the task process: {error}")),
    }
}

#[cfg(test)]
mod direct_tests {
    use super::*;

    #[test]
    fn plain_commands_run_without_a_shell_and_the_rest_under_one() {
        assert_eq!(direct_argv("true"), Some(vec!["true".to_string()]));
        assert_eq!(
            direct_argv("  npx nx run app:build --configuration=production "),
            Some(
                [
                    "npx",
                    "nx",
                    "run",
                    "app:build",
                    "--configuration=production"
                ]
                .map(String::from)
                .to_vec()
            )
        );
        for shell in [
            "echo $HOME",
            "a && b",
            "a | b",
            "a > out",
            "echo 'x'",
            "echo \"x\"",
            "ls *.rs",
            "FOO=1 make",
            "cd dir",
            "exit 3",
            "a; b",
            "echo `date`",
            "echo a\\ b",
            "# note",
            "",
            "export A=1",
            "test -f x",
            "a\nb",
            "echo ~",
        ] {
            assert_eq!(direct_argv(shell), None, "{shell:?} needs a shell");
        }
        let dir = std::env::temp_dir().join(format!("drover-resolve-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let sh = resolve("sh", &dir, None).expect("sh is on PATH");
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
        assert_eq!(resolve("no-such-program-drover", &dir, None), None);
        assert_eq!(resolve("sh", &dir, Some(&"/nonexistent".to_string())), None);
        assert_eq!(resolve("./no-such-script", &dir, None), None);
        // A file that is not executable is passed over, as execvp does; a relative PATH
        // entry is from the task's directory.
        std::fs::write(dir.join("bin/tool"), "#!/bin/sh\n").unwrap();
        let on = Some("bin".to_string());
        assert_eq!(resolve("tool", &dir, on.as_ref()), None);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("bin/tool"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        assert_eq!(
            resolve("tool", &dir, on.as_ref()),
            Some(dir.join("bin/tool"))
        );
        assert_eq!(
            resolve("./bin/tool", &dir, None),
            Some(dir.join("./bin/tool"))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ctx(workdir: PathBuf) -> ExecContext {
        ExecContext {
            workdir,
            agent_name: "agent-7".into(),
            launch_template: "linux-large".into(),
            kill_grace: Duration::from_millis(500),
            pipe_drain_limit: Duration::from_millis(500),
            workspaces: None,
            containment: Containment::detect(),
            nx_worker: true,
        }
    }

    fn spec(command: &str) -> TaskSpec {
        TaskSpec {
            lease_id: "lease-1".into(),
            token: 42,
            run_id: "run-9".into(),
            task_id: "app:test".into(),
            command: command.into(),
            env: HashMap::from([("FROM_LEASE".into(), "yes".into())]),
            timeout: None,
            attempt: 2,
            repository: String::new(),
            commit: String::new(),
        }
    }

    #[derive(Default, Debug)]
    struct Collected {
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        stdout_chunks: usize,
    }

    impl Collected {
        fn stdout(&self) -> String {
            String::from_utf8_lossy(&self.stdout).into_owned()
        }
    }

    /// Collects events until the task's result, failing after `limit`.
    async fn until_finished(tasks: &mut TaskSet, limit: Duration) -> (Collected, TaskResult) {
        let mut collected = Collected::default();
        let wait = async {
            loop {
                match tasks.next_event().await {
                    TaskEvent::Output {
                        token,
                        stream,
                        data,
                        ..
                    } => {
                        assert_eq!(token, 42);
                        match stream {
                            OutputStream::Stdout => {
                                collected.stdout_chunks += 1;
                                collected.stdout.extend(data);
                            }
                            _ => collected.stderr.extend(data),
                        }
                    }
                    TaskEvent::Finished(result) => return result,
                }
            }
        };
        let result = tokio::time::timeout(limit, wait)
            .await
            .expect("the task did not finish in time");
        (collected, result)
    }

    fn run_one(command: &str) -> (TaskSet, TaskSpec) {
        let mut tasks = TaskSet::new(ctx(std::env::temp_dir()));
        let spec = spec(command);
        tasks.start(spec.clone()).expect("spawn");
        (tasks, spec)
    }

    /// Alive and not a zombie (a zombie is dead, merely not reaped by its new parent yet).
    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| {
                let state = stat
                    .rsplit_once(") ")
                    .and_then(|(_, rest)| rest.chars().next());
                !matches!(state, Some('Z' | 'X'))
            })
            .unwrap_or(false)
    }

    async fn gone_within(pid: i32, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if !alive(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        !alive(pid)
    }

    /// Reads the first stdout line as a pid.
    async fn first_pid(tasks: &mut TaskSet) -> i32 {
        let mut line = Vec::new();
        while !line.contains(&b'\n') {
            match tasks.next_event().await {
                TaskEvent::Output {
                    stream: OutputStream::Stdout,
                    data,
                    ..
                } => line.extend(data),
                TaskEvent::Output { .. } => {}
                TaskEvent::Finished(result) => panic!("finished before printing a pid: {result:?}"),
            }
        }
        String::from_utf8_lossy(&line)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .parse()
            .expect("a pid")
    }

    #[tokio::test]
    async fn reports_both_streams_and_the_exit_code() {
        let (mut tasks, _) = run_one("echo hi; echo err >&2; exit 3");
        let (out, result) = until_finished(&mut tasks, Duration::from_secs(5)).await;
        assert_eq!(out.stdout(), "hi\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!((result.exit_code, result.error.as_str()), (3, ""));
        assert_eq!((result.lease_id.as_str(), result.token), ("lease-1", 42));
        assert_eq!(tasks.running(), 0);
    }

    #[tokio::test]
    async fn output_arrives_while_the_task_runs() {
        let (mut tasks, _) = run_one("echo first; sleep 0.3; echo second");
        let first = tokio::time::timeout(Duration::from_millis(250), tasks.next_event())
            .await
            .expect("the first line should arrive before the task ends");
        assert!(
            matches!(first, TaskEvent::Output { ref data, .. } if data == b"first\n"),
            "{first:?}"
        );
        let (out, result) = until_finished(&mut tasks, Duration::from_secs(5)).await;
        assert_eq!((out.stdout(), result.exit_code), ("second\n".to_owned(), 0));
    }

    #[tokio::test]
    async fn large_output_comes_in_bounded_chunks_without_loss() {
        let (mut tasks, _) = run_one("head -c 200000 /dev/zero");
        let (out, result) = until_finished(&mut tasks, Duration::from_secs(5)).await;
        assert_eq!(result.exit_code, 0);
        assert_eq!(out.stdout.len(), 200_000);
        assert!(
            out.stdout_chunks >= 200_000 / OUTPUT_CHUNK,
            "{} chunks",
            out.stdout_chunks
        );
    }

    #[tokio::test]
    async fn sets_the_drover_environment_and_the_lease_env() {
        let (mut tasks, _) = run_one(
            r#"echo "$DROVER_AGENT_NAME|$DROVER_LAUNCH_TEMPLATE|$DROVER_TASK_ID|$DROVER_RUN_ID|$DROVER_ATTEMPT|$FROM_LEASE""#,
        );
        let (out, _) = until_finished(&mut tasks, Duration::from_secs(5)).await;
        assert_eq!(out.stdout(), "agent-7|linux-large|app:test|run-9|2|yes\n");
    }

    #[tokio::test]
    async fn runs_in_the_working_directory_with_stdin_closed() {
        let dir = std::env::temp_dir().join(format!("drover-agent-workdir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create workdir");
        std::fs::write(dir.join("marker.txt"), "here").expect("write marker");
        let mut tasks = TaskSet::new(ctx(dir.clone()));
        tasks
            .start(spec("cat marker.txt; cat; echo"))
            .expect("spawn");
        let (out, result) = until_finished(&mut tasks, Duration::from_secs(5)).await;
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!((out.stdout(), result.exit_code), ("here\n".to_owned(), 0));
    }

    #[tokio::test]
    async fn a_missing_working_directory_is_a_spawn_error() {
        let mut tasks = TaskSet::new(ctx("/no/such/drover/dir".into()));
        let error = tasks.start(spec("true")).expect_err("spawn must fail");
        assert!(error.to_string().contains("/no/such/drover/dir"), "{error}");
        assert_eq!(tasks.running(), 0);
    }

    #[tokio::test]
    async fn a_timeout_kills_the_task_and_its_grandchildren() {
        let mut tasks = TaskSet::new(ctx(std::env::temp_dir()));
        let timeout = Duration::from_millis(300);
        tasks
            .start(TaskSpec {
                timeout: Some(timeout),
                ..spec("sleep 30 & echo $!; wait")
            })
            .expect("spawn");
        let started = Instant::now();
        let grandchild = first_pid(&mut tasks).await;
        let (_, result) = until_finished(&mut tasks, Duration::from_secs(5)).await;
        assert_eq!(
            (result.exit_code, result.error.as_str()),
            (-1, "timed out after 300ms")
        );
        assert!(
            started.elapsed() < timeout + Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
        assert!(
            gone_within(grandchild, Duration::from_millis(500)).await,
            "grandchild {grandchild} survived"
        );
    }

    /// `setsid` leaves the task's process group (and its session): with cgroups it still
    /// ends with the task, whether the task ends by itself or is cancelled.
    #[tokio::test]
    async fn a_process_that_leaves_the_group_ends_with_the_task_under_cgroups() {
        let containment = Containment::detect();
        if !matches!(containment, Containment::Cgroups(_)) {
            eprintln!("skipped: {}", containment.describe());
            return;
        }
        for cancel in [false, true] {
            let mut tasks = TaskSet::new(ctx(std::env::temp_dir()));
            // The agent moves a task into its cgroup just after the spawn: the task waits
            // until it is there (what it starts in its first microseconds could escape).
            let moved = "until grep -q task- /proc/self/cgroup; do :; done; ";
            let command = if cancel {
                format!("{moved}setsid sleep 60 < /dev/null > /dev/null 2>&1 & echo $!; sleep 60")
            } else {
                format!("{moved}setsid sleep 60 < /dev/null > /dev/null 2>&1 & echo $!")
            };
            tasks.start(spec(&command)).expect("spawn");
            let escaped = first_pid(&mut tasks).await;
            if cancel {
                assert!(tasks.cancel("lease-1"));
            } else {
                let (_, result) = until_finished(&mut tasks, Duration::from_secs(5)).await;
                assert_eq!(result.exit_code, 0);
            }
            assert!(
                gone_within(escaped, Duration::from_secs(2)).await,
                "the process {escaped} that left the group outlived the task (cancelled: {cancel})"
            );
        }
    }

    #[tokio::test]
    async fn a_task_ignoring_sigterm_is_killed_after_the_grace() {
        let mut tasks = TaskSet::new(ctx(std::env::temp_dir()));
        let timeout = Duration::from_millis(100);
        let command = "trap '' TERM; echo $$; while :; do sleep 0.05; done";
        tasks
            .start(TaskSpec {
                timeout: Some(timeout),
                ..spec(command)
            })
            .expect("spawn");
        let started = Instant::now();
        let shell = first_pid(&mut tasks).await;
        let (_, result) = until_finished(&mut tasks, Duration::from_secs(5)).await;
        assert_eq!(result.error, "timed out after 100ms");
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(500),
            "SIGKILL came before the grace: {elapsed:?}"
        );
        assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
        assert!(gone_within(shell, Duration::from_millis(500)).await);
    }

    #[tokio::test]
    async fn background_leftovers_are_killed_when_the_task_exits() {
        let (mut tasks, _) = run_one("sleep 30 & echo $!");
        let started = Instant::now();
        let (out, result) = until_finished(&mut tasks, Duration::from_secs(5)).await;
        let leftover: i32 = out.stdout().trim().parse().expect("a pid");
        assert_eq!(result.exit_code, 0);
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "the leftover held the pipe open"
        );
        assert!(
            gone_within(leftover, Duration::from_millis(500)).await,
            "leftover {leftover} survived"
        );
    }

    #[tokio::test]
    async fn a_signal_death_is_reported_as_such() {
        let (mut tasks, _) = run_one("kill -9 $$");
        let (_, result) = until_finished(&mut tasks, Duration::from_secs(5)).await;
        assert_eq!(
            (result.exit_code, result.error.as_str()),
            (-1, "killed by signal 9")
        );
    }

    #[tokio::test]
    async fn cancel_kills_the_group_and_reports_nothing() {
        let (mut tasks, spec) = run_one("sleep 30 & echo $!; wait");
        let grandchild = first_pid(&mut tasks).await;
        assert!(tasks.cancel(&spec.lease_id));
        assert!(!tasks.cancel(&spec.lease_id), "already forgotten");
        assert!(
            gone_within(grandchild, Duration::from_secs(1)).await,
            "grandchild {grandchild} survived"
        );
        let quiet = tokio::time::timeout(Duration::from_millis(300), tasks.next_event()).await;
        assert!(
            quiet.is_err(),
            "a cancelled task sends no result: {quiet:?}"
        );
        assert_eq!(tasks.running(), 0);
    }

    #[tokio::test]
    async fn dropping_the_task_set_kills_every_group() {
        let (mut tasks, _) = run_one("sleep 30 & echo $!; wait");
        let grandchild = first_pid(&mut tasks).await;
        drop(tasks);
        assert!(
            gone_within(grandchild, Duration::from_millis(500)).await,
            "grandchild {grandchild} survived"
        );
    }

    /// A checkout with a stand-in for Nx's task-running API (the real Nx runs in the end-to-end
    /// tests): a task's target says what it does (`ok`, `fail`, `die`, `hang`).
    fn checkout_with_stand_in_nx(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("drover-nx-worker-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let src = dir.join("node_modules/nx/src");
        for sub in ["project-graph", "config", "tasks-runner", "utils"] {
            std::fs::create_dir_all(src.join(sub)).unwrap();
        }
        let write = |path: &str, text: &str| std::fs::write(dir.join(path), text).unwrap();
        write(
            "node_modules/nx/package.json",
            r#"{"name":"nx","version":"0.0.0-stand-in"}"#,
        );
        write(
            "node_modules/nx/src/project-graph/project-graph.js",
            "exports.createProjectGraphAsync = async () => ({ nodes: {}, dependencies: {} });",
        );
        write(
            "node_modules/nx/src/config/nx-json.js",
            "exports.readNxJson = () => ({});",
        );
        write(
            "node_modules/nx/src/utils/command-line-utils.js",
            "exports.createOverrides = (w) => ({ __overrides_unparsed__: w });",
        );
        write(
            "node_modules/nx/src/tasks-runner/create-task-graph.js",
            "exports.createTaskGraph = (pg, x, [project], [target]) => { const id = `${project}:${target}`;
               return { roots: [id], tasks: { [id]: { id, target: { project, target } } },
                        dependencies: { [id]: [] }, continuousDependencies: { [id]: [] } }; };",
        );
        write(
            "node_modules/nx/src/tasks-runner/init-tasks-runner.js",
            "exports.runDiscreteTasks = async ([task]) => {
               const what = task.target.target;
               console.log(`ran ${task.id} in ${process.pid} as ${process.env.DROVER_TASK_ID}`);
               if (what === 'die') process.exit(9);
               if (what === 'hang') return [new Promise(() => {})];
               return [Promise.resolve([{ task, status: what === 'ok' ? 'success' : 'failure', code: what === 'ok' ? 0 : 3 }])];
             };",
        );
        dir
    }

    fn nx_spec(lease: &str, target: &str, command: &str) -> TaskSpec {
        let mut s = spec(command);
        s.lease_id = lease.into();
        s.task_id = format!("app:{target}");
        s.env.insert(
            crate::nx_worker::TASK_VAR.into(),
            format!(r#"{{"project":"app","target":"{target}","restore":false}}"#),
        );
        s
    }

    fn node_available() -> bool {
        std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    #[tokio::test]
    async fn nx_tasks_run_one_after_another_in_one_warm_worker() {
        if !node_available() {
            eprintln!("skipped: no node on PATH");
            return;
        }
        let mut tasks = TaskSet::new(ctx(checkout_with_stand_in_nx("warm")));
        tasks
            .start(nx_spec("lease-1", "ok", "echo the-command"))
            .unwrap();
        let (out, first) = until_finished(&mut tasks, Duration::from_secs(60)).await;
        assert_eq!(first.exit_code, 0, "{out:?}");
        let text = out.stdout();
        assert!(text.starts_with("ran app:ok in "), "{text:?}");
        assert!(text.ends_with(" as app:ok\n"), "{text:?}");
        assert!(!text.contains("the-command"), "{text:?}");
        let pid = text.split_whitespace().nth(3).unwrap().to_string();

        tasks
            .start(nx_spec("lease-1", "fail", "echo the-command"))
            .unwrap();
        let (out, second) = until_finished(&mut tasks, Duration::from_secs(60)).await;
        assert_eq!(second.exit_code, 3, "{out:?}");
        assert_eq!(
            out.stdout(),
            format!("ran app:fail in {pid} as app:fail\n"),
            "the same worker"
        );
    }

    #[tokio::test]
    async fn a_worker_that_dies_hands_the_task_to_its_command() {
        if !node_available() {
            eprintln!("skipped: no node on PATH");
            return;
        }
        let mut tasks = TaskSet::new(ctx(checkout_with_stand_in_nx("dies")));
        tasks
            .start(nx_spec("lease-1", "die", "echo the-command"))
            .unwrap();
        let (out, result) = until_finished(&mut tasks, Duration::from_secs(60)).await;
        assert_eq!(result.exit_code, 0, "{out:?}");
        assert!(out.stdout().ends_with("the-command\n"), "{out:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("the Nx worker failed (the worker exited)"),
            "{said}"
        );
    }

    #[tokio::test]
    async fn without_nx_in_the_checkout_nx_tasks_run_their_commands() {
        let dir = std::env::temp_dir().join(format!("drover-no-nx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut tasks = TaskSet::new(ctx(dir));
        for lease in ["lease-1", "lease-2"] {
            tasks
                .start(nx_spec(lease, "ok", "echo the-command"))
                .unwrap();
            let (out, result) = until_finished(&mut tasks, Duration::from_secs(60)).await;
            assert_eq!(
                (result.exit_code, out.stdout()),
                (0, "the-command\n".into())
            );
        }
        assert!(tasks.nx_workers.is_unavailable("run-9"));
    }

    #[tokio::test]
    async fn a_timeout_in_a_worker_ends_the_worker_and_fails_the_task() {
        if !node_available() {
            eprintln!("skipped: no node on PATH");
            return;
        }
        let mut tasks = TaskSet::new(ctx(checkout_with_stand_in_nx("hangs")));
        let mut spec = nx_spec("lease-1", "hang", "echo the-command");
        spec.timeout = Some(Duration::from_millis(1500));
        tasks.start(spec).unwrap();
        let (out, result) = until_finished(&mut tasks, Duration::from_secs(60)).await;
        assert_eq!(result.exit_code, -1, "{out:?}");
        assert_eq!(result.error, "timed out after 1.5s");
        let pid: i32 = out
            .stdout()
            .split_whitespace()
            .nth(3)
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            gone_within(pid, Duration::from_secs(5)).await,
            "the worker {pid} lives on"
        );
    }
}
