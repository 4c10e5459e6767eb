//! `drover loadtest`: simulated agents over real gRPC streams, in one process, against a real
//! coordinator: a run of T no-op (or fixed-length) tasks, and what it measured: tasks/s,
//! ready-to-lease latency (from the moment a task's last dependency was reported finished, or
//! its submission was acknowledged, to its lease arriving), and the coordinator's CPU and RSS
//! when it runs on this machine. It checks as it goes that every task was leased and finished
//! exactly once. Loopback only, bounded in agents, tasks and time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use drover_proto::v1 as pb;
use pb::agent_service_client::AgentServiceClient;
use pb::run_service_client::RunServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::CoordinatorUrl;
use crate::client::connect;
use crate::error::CliError;
use crate::human::Human;

const MAX_AGENTS: usize = 20_000;
const MAX_TASKS: usize = 2_000_000;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Shape {
    /// 50 chains (or `--chains`): each task depends on the one before it in its chain.
    Chains,
    /// No dependencies: every task is ready at once.
    Wide,
    /// Nx-like layers: builds, then tests and lints of each, then e2e suites.
    Nx,
}

#[derive(Args, Debug)]
pub struct LoadtestArgs {
    #[command(flatten)]
    pub coordinator: CoordinatorUrl,
    /// Simulated agents, each with its own connection and stream.
    #[arg(long, default_value_t = 50)]
    pub agents: usize,
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=i64::from(drover_scheduler::fleet::MAX_SLOTS)))]
    pub slots: u32,
    /// Tasks in the run (0: connect the agents and measure the coordinator idle, see --idle).
    #[arg(long, default_value_t = 20_000)]
    pub tasks: usize,
    #[arg(long, value_enum, default_value_t = Shape::Chains)]
    pub graph_shape: Shape,
    /// Chains of the `chains` shape.
    #[arg(long, default_value_t = 50)]
    pub chains: usize,
    /// How long each task "runs" before its agent reports it (0: at once).
    #[arg(long, default_value_t = Human(Duration::ZERO))]
    pub task_duration: Human,
    /// With --tasks 0: how long to measure the connected, idle fleet.
    #[arg(long, default_value_t = Human(Duration::from_secs(20)))]
    pub idle: Human,
    /// Give up after this long.
    #[arg(long, default_value_t = Human(Duration::from_secs(300)))]
    pub timeout: Human,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What the run measured.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub agents: usize,
    pub slots: u32,
    pub tasks: usize,
    pub shape: String,
    pub connect_seconds: f64,
    pub run_seconds: f64,
    pub tasks_per_second: f64,
    pub ready_to_lease_ms_p50: f64,
    pub ready_to_lease_ms_p99: f64,
    pub ready_to_lease_ms_max: f64,
    pub leased: u64,
    pub finished: u64,
    pub leased_twice: u64,
    pub succeeded: u64,
    pub coordinator_cpu_cores: Option<f64>,
    pub coordinator_rss_mib: Option<f64>,
    pub coordinator_peak_rss_mib: Option<f64>,
}

/// Shared between the agents: when each task became ready, and what happened to it.
struct Book {
    /// Task index -> when it became ready (its last dependency reported, or submitted).
    ready_at: Mutex<Vec<Option<Instant>>>,
    /// Latencies in microseconds.
    latencies: Mutex<Vec<u64>>,
    leases: Mutex<Vec<u8>>,
    /// Dependents of each task, and how many dependencies each task waits for.
    dependents: Vec<Vec<usize>>,
    waiting: Mutex<Vec<u32>>,
    index: HashMap<String, usize>,
    finished: AtomicU64,
    leased: AtomicU64,
    twice: AtomicU64,
}

impl Book {
    fn leased(&self, task: usize, now: Instant) {
        self.leased.fetch_add(1, Ordering::Relaxed);
        let mut leases = self.leases.lock().expect("not poisoned");
        leases[task] = leases[task].saturating_add(1);
        if leases[task] > 1 {
            self.twice.fetch_add(1, Ordering::Relaxed);
        }
        drop(leases);
        if let Some(at) = self.ready_at.lock().expect("not poisoned")[task] {
            let us = now.saturating_duration_since(at).as_micros() as u64;
            self.latencies.lock().expect("not poisoned").push(us);
        }
    }

    /// The agent reports the task finished now: dependents whose last dependency it was are
    /// ready from now.
    fn finishing(&self, task: usize, now: Instant) {
        let mut waiting = self.waiting.lock().expect("not poisoned");
        let mut ready = self.ready_at.lock().expect("not poisoned");
        for &d in &self.dependents[task] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready[d] = Some(now);
            }
        }
    }
}

/// The graph of a shape: task ids and dependencies (by index).
fn graph(shape: Shape, tasks: usize, chains: usize) -> Vec<(String, Vec<usize>)> {
    match shape {
        Shape::Wide => (0..tasks).map(|i| (format!("t{i}:run"), vec![])).collect(),
        Shape::Chains => {
            let chains = chains.clamp(1, tasks.max(1));
            (0..tasks)
                .map(|i| {
                    let (chain, k) = (i % chains, i / chains);
                    let deps = if k == 0 { vec![] } else { vec![i - chains] };
                    (format!("c{chain}-{k}:run"), deps)
                })
                .collect()
        }
        Shape::Nx => {
            // Per project: build, then test and lint; every tenth project an e2e on the build
            // of the project before it too.
            let mut out: Vec<(String, Vec<usize>)> = Vec::with_capacity(tasks);
            let mut p = 0;
            while out.len() < tasks {
                let build = out.len();
                out.push((
                    format!("p{p}:build"),
                    if p > 0 { vec![build - 3] } else { vec![] },
                ));
                for target in ["test", "lint"] {
                    if out.len() < tasks {
                        out.push((format!("p{p}:{target}"), vec![build]));
                    }
                }
                p += 1;
            }
            out.truncate(tasks);
            out
        }
    }
}

fn loopback(url: &str) -> bool {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let host = rest.split('/').next().unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1") || host.starts_with("127.")
}

pub async fn run(args: LoadtestArgs) -> Result<u8, CliError> {
    if !loopback(&args.coordinator.url) {
        return Err(CliError::Usage(format!(
            "drover loadtest runs against a coordinator on this machine only (loopback), not {}",
            args.coordinator.url
        )));
    }
    if args.agents == 0 || args.agents > MAX_AGENTS {
        return Err(CliError::Usage(format!(
            "--agents must be 1 to {MAX_AGENTS}"
        )));
    }
    if args.tasks > MAX_TASKS {
        return Err(CliError::Usage(format!(
            "--tasks must be at most {MAX_TASKS}"
        )));
    }
    raise_fd_limit();
    let report = tokio::time::timeout(args.timeout.0, measure(&args))
        .await
        .map_err(|_| {
            CliError::Io(format!(
                "the load test did not end within {} (--timeout)",
                args.timeout
            ))
        })??;
    if args.json {
        out!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else if report.tasks == 0 {
        out!(
            "{} agents x {} slots connected in {:.2}s, then idle for {}",
            report.agents,
            report.slots,
            report.connect_seconds,
            args.idle
        );
        match (report.coordinator_cpu_cores, report.coordinator_rss_mib) {
            (Some(cpu), Some(rss)) => out!(
                "coordinator: {cpu:.3} cores, {rss:.0} MiB resident (peak {:.0} MiB)",
                report.coordinator_peak_rss_mib.unwrap_or(rss)
            ),
            _ => out!("coordinator: not on this machine's /proc (CPU and memory not measured)"),
        }
    } else {
        out!(
            "{} agents x {} slots, {} tasks ({}): {:.0} tasks/s over {:.2}s; ready-to-lease p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            report.agents,
            report.slots,
            report.tasks,
            report.shape,
            report.tasks_per_second,
            report.run_seconds,
            report.ready_to_lease_ms_p50,
            report.ready_to_lease_ms_p99,
            report.ready_to_lease_ms_max
        );
        if let (Some(cpu), Some(rss)) = (report.coordinator_cpu_cores, report.coordinator_rss_mib) {
            out!(
                "coordinator: {cpu:.2} cores, {rss:.0} MiB resident (peak {:.0} MiB)",
                report.coordinator_peak_rss_mib.unwrap_or(rss)
            );
        }
        out!(
            "leased {}, finished {}, leased twice {}, succeeded {}",
            report.leased,
            report.finished,
            report.leased_twice,
            report.succeeded
        );
    }
    let exact = report.tasks == 0
        || (report.leased == report.tasks as u64
            && report.finished == report.tasks as u64
            && report.leased_twice == 0
            && report.succeeded == report.tasks as u64);
    Ok(if exact { 0 } else { 1 })
}

async fn measure(args: &LoadtestArgs) -> Result<Report, CliError> {
    let exec = format!("loadtest-{}", std::process::id());
    let conn = connect(&args.coordinator)?;
    let mut runs = RunServiceClient::new(conn.clone());
    let coordinator = crate::commands::loadtest_proc::find(&args.coordinator.url);
    let graph = graph(args.graph_shape, args.tasks, args.chains);
    let mut dependents = vec![Vec::new(); graph.len()];
    for (i, (_, deps)) in graph.iter().enumerate() {
        for &d in deps {
            dependents[d].push(i);
        }
    }
    let book = Arc::new(Book {
        ready_at: Mutex::new(vec![None; graph.len()]),
        latencies: Mutex::new(Vec::with_capacity(graph.len())),
        leases: Mutex::new(vec![0; graph.len()]),
        waiting: Mutex::new(graph.iter().map(|(_, d)| d.len() as u32).collect()),
        dependents,
        index: graph
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (id.clone(), i))
            .collect(),
        finished: AtomicU64::new(0),
        leased: AtomicU64::new(0),
        twice: AtomicU64::new(0),
    });
    if args.tasks > 0 {
        runs.start_run(pb::StartRunRequest {
            ci_execution_id: exec.clone(),
            attempt: 1,
            ..Default::default()
        })
        .await
        .map_err(|s| CliError::rpc("starting the run", s))?;
    }

    // The fleet: every agent on a connection of its own.
    let connecting = Instant::now();
    let (welcomed_tx, mut welcomed_rx) = mpsc::channel::<Result<(), String>>(args.agents);
    let mut fleet = tokio::task::JoinSet::new();
    let (_, endpoint) =
        drover_proto::coordinator_endpoint(&args.coordinator.url, &args.coordinator.tls())
            .map_err(|e| CliError::Usage(e.to_string()))?;
    let bearer =
        drover_proto::Bearer::new(args.coordinator.token.as_deref()).map_err(CliError::Usage)?;
    for k in 0..args.agents {
        let agent = SimAgent {
            name: format!("lt-{k}"),
            slots: args.slots,
            exec: (args.tasks > 0).then(|| exec.clone()),
            duration: args.task_duration.0,
            book: book.clone(),
        };
        let (endpoint, bearer, welcomed) = (endpoint.clone(), bearer.clone(), welcomed_tx.clone());
        fleet.spawn(async move {
            let name = agent.name.clone();
            if let Err(e) = agent.serve(endpoint, bearer, welcomed.clone()).await {
                let _ = welcomed.send(Err(format!("agent {name}: {e}"))).await;
            }
        });
    }
    drop(welcomed_tx);
    for _ in 0..args.agents {
        match welcomed_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                fleet.abort_all();
                return Err(CliError::Io(e));
            }
            None => break,
        }
    }
    let connect_seconds = connecting.elapsed().as_secs_f64();

    let mut report = Report {
        agents: args.agents,
        slots: args.slots,
        tasks: args.tasks,
        shape: format!("{:?}", args.graph_shape).to_lowercase(),
        connect_seconds,
        ..Report::default()
    };
    if args.tasks == 0 {
        // Idle: the coordinator's cost of a connected fleet that only heartbeats.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = coordinator.as_ref().and_then(|c| c.cpu());
        tokio::time::sleep(args.idle.0).await;
        let after = coordinator.as_ref().and_then(|c| c.cpu());
        report.coordinator_cpu_cores = before
            .zip(after)
            .map(|(b, a)| (a - b) / args.idle.0.as_secs_f64());
        report.coordinator_rss_mib = coordinator.as_ref().and_then(|c| c.rss_mib());
        report.coordinator_peak_rss_mib = coordinator.as_ref().and_then(|c| c.peak_rss_mib());
        fleet.abort_all();
        return Ok(report);
    }

    let tasks: Vec<pb::Task> = graph
        .iter()
        .map(|(id, deps)| pb::Task {
            id: id.clone(),
            command: "true".into(),
            depends_on: deps.iter().map(|&d| graph[d].0.clone()).collect(),
            ..Default::default()
        })
        .collect();
    let cpu_before = coordinator.as_ref().and_then(|c| c.cpu());
    let started = Instant::now();
    let submitted = runs
        .submit_graph(pb::SubmitGraphRequest {
            ci_execution_id: exec.clone(),
            tasks,
            label: "loadtest".into(),
            ..Default::default()
        })
        .await
        .map_err(|s| CliError::rpc("submitting the graph", s))?
        .into_inner();
    {
        // Roots were ready from the moment the submission was acknowledged (or before).
        let acked = Instant::now();
        let mut ready = book.ready_at.lock().expect("not poisoned");
        for (i, (_, deps)) in graph.iter().enumerate() {
            if deps.is_empty() && ready[i].is_none() {
                ready[i] = Some(acked.min(started + (acked - started) / 2));
            }
        }
    }
    let mut watch = runs
        .watch_run(pb::WatchRunRequest {
            run_id: submitted.run_id.clone(),
            submission_id: submitted.submission_id,
            from_seq: 1,
            ..Default::default()
        })
        .await
        .map_err(|s| CliError::rpc("following the run", s))?
        .into_inner();
    let mut succeeded = 0;
    while let Some(e) = watch
        .message()
        .await
        .map_err(|s| CliError::rpc("following the run", s))?
    {
        if let Some(pb::run_event::Event::SubmissionDone(done)) = e.event {
            succeeded = done
                .tasks
                .iter()
                .filter(|t| t.status == pb::TaskStatus::Succeeded as i32)
                .count() as u64;
            break;
        }
    }
    let took = started.elapsed();
    let cpu_after = coordinator.as_ref().and_then(|c| c.cpu());
    let _ = runs
        .complete_run(pb::CompleteRunRequest {
            run_id: submitted.run_id,
            ..Default::default()
        })
        .await;
    let mut lat = std::mem::take(&mut *book.latencies.lock().expect("not poisoned"));
    lat.sort_unstable();
    let pct = |p: f64| {
        if lat.is_empty() {
            0.0
        } else {
            lat[((lat.len() - 1) as f64 * p) as usize] as f64 / 1000.0
        }
    };
    report.run_seconds = took.as_secs_f64();
    report.tasks_per_second = args.tasks as f64 / took.as_secs_f64().max(1e-9);
    report.ready_to_lease_ms_p50 = pct(0.5);
    report.ready_to_lease_ms_p99 = pct(0.99);
    report.ready_to_lease_ms_max = pct(1.0);
    report.leased = book.leased.load(Ordering::Relaxed);
    report.finished = book.finished.load(Ordering::Relaxed);
    report.leased_twice = book.twice.load(Ordering::Relaxed);
    report.succeeded = succeeded;
    report.coordinator_cpu_cores = cpu_before
        .zip(cpu_after)
        .map(|(b, a)| (a - b) / took.as_secs_f64().max(1e-9));
    report.coordinator_rss_mib = coordinator.as_ref().and_then(|c| c.rss_mib());
    report.coordinator_peak_rss_mib = coordinator.as_ref().and_then(|c| c.peak_rss_mib());
    fleet.abort_all();
    Ok(report)
}

/// One simulated agent: Hello, then leases answered with Finished (after the task's
/// duration), heartbeats at the coordinator's interval.
struct SimAgent {
    name: String,
    slots: u32,
    exec: Option<String>,
    duration: Duration,
    book: Arc<Book>,
}

impl SimAgent {
    /// Serves until the coordinator ends the stream (Ok) or the agent cannot connect.
    async fn serve(
        self,
        endpoint: tonic::transport::Endpoint,
        bearer: drover_proto::Bearer,
        welcomed: mpsc::Sender<Result<(), String>>,
    ) -> Result<(), String> {
        // A fleet connecting at once may find the accept queue full: try again, a few times.
        let mut tries = 0;
        let channel = loop {
            match endpoint.connect().await {
                Ok(channel) => break channel,
                Err(e) if tries >= 5 => return Err(format!("cannot connect: {e}")),
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100 << tries)).await;
                }
            }
        };
        let mut client = AgentServiceClient::with_interceptor(channel, bearer);
        let (tx, rx) = mpsc::channel(64);
        let hello = pb::AgentMessage {
            msg: Some(pb::agent_message::Msg::Hello(pb::Hello {
                name: self.name.clone(),
                instance_id: format!("{}-{}", self.name, std::process::id()),
                launch_template: "loadtest".into(),
                slots: self.slots,
                ci_execution_id: self.exec.clone().unwrap_or_default(),
                attempt: u32::from(self.exec.is_some()),
                ..Default::default()
            })),
        };
        let _ = tx.send(hello).await;
        let response = client
            .connect(ReceiverStream::new(rx))
            .await
            .map_err(|s| format!("the coordinator refused the stream: {}", s.message()))?;
        let mut inbound = response.into_inner();
        let mut interval = Duration::from_secs(1);
        let held: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let mut heartbeat = tokio::time::interval(interval);
        loop {
            tokio::select! {
                msg = inbound.message() => {
                    let msg = match msg {
                        Ok(Some(msg)) => msg,
                        Ok(None) => return Ok(()),
                        Err(s) => return Err(format!("the stream broke: {}", s.message())),
                    };
                    match msg.msg {
                        Some(pb::coordinator_message::Msg::Welcome(w)) => {
                            interval = Duration::from_millis(w.heartbeat_interval_ms.max(50));
                            heartbeat = tokio::time::interval(interval);
                            heartbeat.reset();
                            let _ = welcomed.send(Ok(())).await;
                        }
                        Some(pb::coordinator_message::Msg::Lease(lease)) => {
                            let now = Instant::now();
                            let task = self.book.index.get(&lease.task_id).copied();
                            if let Some(i) = task {
                                self.book.leased(i, now);
                            }
                            held.lock().expect("not poisoned").insert(lease.lease_id.clone(), lease.fencing_token);
                            let (tx, book, held, duration) = (tx.clone(), self.book.clone(), held.clone(), self.duration);
                            let finish = async move {
                                if !duration.is_zero() {
                                    tokio::time::sleep(duration).await;
                                }
                                if let Some(i) = task {
                                    book.finishing(i, Instant::now());
                                }
                                held.lock().expect("not poisoned").remove(&lease.lease_id);
                                let done = pb::AgentMessage {
                                    msg: Some(pb::agent_message::Msg::Finished(pb::Finished {
                                        lease_id: lease.lease_id,
                                        fencing_token: lease.fencing_token,
                                        exit_code: 0,
                                        duration_ms: duration.as_millis() as u64,
                                        error: String::new(),
                                    })),
                                };
                                if tx.send(done).await.is_ok() {
                                    book.finished.fetch_add(1, Ordering::Relaxed);
                                }
                            };
                            if duration.is_zero() {
                                finish.await;
                            } else {
                                tokio::spawn(finish);
                            }
                        }
                        Some(pb::coordinator_message::Msg::Settings(s)) => {
                            interval = Duration::from_millis(s.heartbeat_interval_ms.max(50));
                            heartbeat = tokio::time::interval(interval);
                            heartbeat.reset();
                        }
                        Some(pb::coordinator_message::Msg::Stop(_)) => return Ok(()),
                        _ => {}
                    }
                }
                _ = heartbeat.tick() => {
                    let held_leases = held
                        .lock()
                        .expect("not poisoned")
                        .iter()
                        .map(|(id, token)| pb::HeldLease { lease_id: id.clone(), fencing_token: *token })
                        .collect();
                    let hb = pb::AgentMessage {
                        msg: Some(pb::agent_message::Msg::Heartbeat(pb::Heartbeat { held_leases })),
                    };
                    if tx.send(hb).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Lets one process hold a connection per simulated agent.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_have_the_tasks_asked_for() {
        let chains = graph(Shape::Chains, 20, 5);
        assert_eq!(chains.len(), 20);
        assert!(chains[..5].iter().all(|(_, d)| d.is_empty()));
        assert_eq!(chains[7].1, vec![2]);
        assert!(graph(Shape::Wide, 9, 1).iter().all(|(_, d)| d.is_empty()));
        let nx = graph(Shape::Nx, 10, 1);
        assert_eq!(nx.len(), 10);
        assert_eq!(nx[1].1, vec![0]);
        assert!(
            loopback("http://127.0.0.1:50051")
                && loopback("localhost:1")
                && !loopback("http://10.0.0.1:1")
        );
    }
}
