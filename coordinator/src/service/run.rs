//! `RunService`: the CI main job starts a run, submits graphs, follows them, completes the run.

use std::pin::Pin;
use std::sync::Arc;

use drover_proto::v1 as pb;
use drover_scheduler::state::{Reply, RunRef, RunSpec, SchedError};
use pb::run_service_server::RunService;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::actor::{Command, Handle};
use crate::auth::{Auth, Scope};
use crate::convert;
use crate::error::CoordError;
use crate::runlog::Filter;

pub struct RunSvc {
    actor: Handle,
    auth: Arc<Auth>,
    max_graph_tasks: usize,
    /// The remote cache's URL as agents get it.
    cache_url: String,
}

impl RunSvc {
    pub fn new(actor: Handle, auth: Arc<Auth>, max_graph_tasks: usize, cache_url: String) -> Self {
        RunSvc {
            actor,
            auth,
            max_graph_tasks,
            cache_url,
        }
    }

    /// A submission over the limit, said with the limit and how to raise it.
    fn too_many(&self, count: usize) -> Status {
        Status::resource_exhausted(format!(
            "the graph has more than {} tasks ({count} so far), the coordinator's limit for \
             one submission; raise it with --max-graph-tasks (DROVER_MAX_GRAPH_TASKS) or \
             submit the graph in parts",
            self.max_graph_tasks
        ))
    }

    /// Takes in one whole graph as a submission of the run.
    async fn submit(
        &self,
        run: RunRef,
        tasks: Vec<pb::Task>,
    ) -> Result<Response<pb::SubmitGraphResponse>, Status> {
        let tasks: Vec<_> = tasks.into_iter().map(convert::task_from_proto).collect();
        // Encoded for the store here, not in the scheduling loop: a large graph would hold
        // every agent's next lease for as long as that takes.
        let stored = crate::persist::encode_tasks(&tasks);
        let reply = self
            .actor
            .ask(|reply| Command::Submit {
                run,
                tasks,
                stored,
                reply,
            })
            .await?;
        match reply {
            Reply::Submitted {
                run_id,
                submission,
                tasks,
            } => Ok(Response::new(pb::SubmitGraphResponse {
                submission_id: submission,
                task_count: tasks,
                run_id,
            })),
            other => Err(unexpected(other)),
        }
    }
}

fn run_ref(run_id: String, ci_execution_id: String) -> Result<RunRef, Status> {
    RunRef::from_fields(run_id, ci_execution_id).map_err(|e| CoordError::from(e).into())
}

fn unexpected(reply: Reply) -> Status {
    Status::internal(format!("unexpected answer {reply:?}"))
}

#[tonic::async_trait]
impl RunService for RunSvc {
    async fn start_run(
        &self,
        request: Request<pb::StartRunRequest>,
    ) -> Result<Response<pb::StartRunResponse>, Status> {
        let who = self
            .auth
            .grpc(&request, Scope::Write, "RunService/StartRun")?;
        let mut request = convert::run_request(request.into_inner());
        // The token decides these, never the caller.
        request.cache_namespace = who.cache_namespace;
        request.started_by = who.name;
        let spec = RunSpec::from_request(&request).map_err(CoordError::from)?;
        let reply = self
            .actor
            .ask(|reply| Command::StartRun {
                request: Box::new(request),
                spec: Box::new(spec),
                reply,
            })
            .await?;
        match reply {
            Reply::RunStarted { run_id, existing } => {
                Ok(Response::new(pb::StartRunResponse { run_id, existing }))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn submit_graph(
        &self,
        request: Request<pb::SubmitGraphRequest>,
    ) -> Result<Response<pb::SubmitGraphResponse>, Status> {
        self.auth
            .grpc(&request, Scope::Write, "RunService/SubmitGraph")?;
        let req = request.into_inner();
        let run = run_ref(req.run_id, req.ci_execution_id)?;
        if req.tasks.len() > self.max_graph_tasks {
            return Err(self.too_many(req.tasks.len()));
        }
        self.submit(run, req.tasks).await
    }

    async fn submit_graph_stream(
        &self,
        request: Request<Streaming<pb::SubmitGraphRequest>>,
    ) -> Result<Response<pb::SubmitGraphResponse>, Status> {
        self.auth
            .grpc(&request, Scope::Write, "RunService/SubmitGraphStream")?;
        let mut pieces = request.into_inner();
        let first = pieces.message().await?.ok_or_else(|| {
            Status::invalid_argument("the submission stream ended before its first message")
        })?;
        let run = run_ref(first.run_id, first.ci_execution_id)?;
        let mut tasks = first.tasks;
        if tasks.len() > self.max_graph_tasks {
            return Err(self.too_many(tasks.len()));
        }
        while let Some(piece) = pieces.message().await? {
            if !piece.run_id.is_empty() || !piece.ci_execution_id.is_empty() {
                return Err(Status::invalid_argument(
                    "only the first message of a submission stream names the run",
                ));
            }
            if tasks.len() + piece.tasks.len() > self.max_graph_tasks {
                return Err(self.too_many(tasks.len() + piece.tasks.len()));
            }
            tasks.extend(piece.tasks);
        }
        self.submit(run, tasks).await
    }

    async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::GetRunResponse>, Status> {
        self.auth.grpc(&request, Scope::Read, "RunService/GetRun")?;
        let req = request.into_inner();
        let run = run_ref(req.run_id, req.ci_execution_id)?;
        let view = self
            .actor
            .read(move |v| {
                let id = v.sched.resolve(&run)?;
                v.sched.run_view(&id).ok_or(SchedError::UnknownRun(id))
            })
            .await?
            .map_err(CoordError::from)?;
        Ok(Response::new(convert::get_run(&view)))
    }

    async fn get_cache_access(
        &self,
        request: Request<pb::GetCacheAccessRequest>,
    ) -> Result<Response<pb::GetCacheAccessResponse>, Status> {
        self.auth
            .grpc(&request, Scope::Read, "RunService/GetCacheAccess")?;
        let req = request.into_inner();
        let run = run_ref(req.run_id, req.ci_execution_id)?;
        let (run_id, namespace) = self
            .actor
            .read(move |v| {
                let id = v.sched.resolve(&run)?;
                let namespace = v.sched.cache_namespace(&id).map(str::to_string);
                Ok::<_, SchedError>((id, namespace))
            })
            .await?
            .map_err(CoordError::from)?;
        Ok(Response::new(pb::GetCacheAccessResponse {
            url: self.cache_url.clone(),
            read_token: self.auth.leases.issue_read(&run_id, namespace.as_deref()),
        }))
    }

    async fn get_task_log(
        &self,
        request: Request<pb::GetTaskLogRequest>,
    ) -> Result<Response<pb::GetTaskLogResponse>, Status> {
        self.auth
            .grpc(&request, Scope::Read, "RunService/GetTaskLog")?;
        let req = request.into_inner();
        let run = run_ref(req.run_id, req.ci_execution_id)?;
        let task_id = req.task_id.clone();
        let (run_id, status) = self
            .actor
            .read(move |v| {
                let run_id = v.sched.resolve(&run)?;
                let run = v
                    .sched
                    .run_view(&run_id)
                    .ok_or(SchedError::UnknownRun(run_id.clone()))?;
                let task = run
                    .tasks
                    .iter()
                    .find(|t| t.task == task_id)
                    .ok_or_else(|| {
                        SchedError::InvalidRun(format!("run {run_id} has no task `{task_id}`"))
                    })?;
                Ok::<_, SchedError>((run_id, task.status))
            })
            .await?
            .map_err(CoordError::from)?;
        let chunk = self
            .actor
            .logs()
            .read_attempt(
                &run_id,
                &req.task_id,
                (req.attempt > 0).then_some(req.attempt),
                req.from,
                crate::logstore::MAX_READ,
            )
            .await;
        let answer = pb::GetTaskLogResponse {
            data: chunk.data,
            size: chunk.size,
            status: convert::status_to_proto(status) as i32,
            next: chunk.next,
        };
        Ok(Response::new(answer))
    }

    type WatchRunStream = Pin<Box<dyn Stream<Item = Result<pb::RunEvent, Status>> + Send>>;

    async fn watch_run(
        &self,
        request: Request<pb::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        self.auth
            .grpc(&request, Scope::Read, "RunService/WatchRun")?;
        let req = request.into_inner();
        let run = run_ref(req.run_id, req.ci_execution_id)?;
        let filter = Filter {
            submission: (req.submission_id > 0).then_some(req.submission_id),
            all_output: req.all_output,
        };
        let from_seq = req.from_seq.max(1);
        let watch = self
            .actor
            .ask(|reply| Command::Watch {
                run,
                filter,
                from_seq,
                reply,
            })
            .await?;
        let crate::actor::Watch { run, rx, earlier } = watch;
        let live = ReceiverStream::new(rx);
        if earlier.is_empty() {
            return Ok(Response::new(Box::pin(live)));
        }
        // What was printed before, then the watcher's own queue.
        let (tx, replayed) = tokio::sync::mpsc::channel(64);
        tokio::spawn(replay(self.actor.logs().clone(), run, earlier, tx));
        Ok(Response::new(Box::pin(
            ReceiverStream::new(replayed).chain(live),
        )))
    }

    async fn complete_run(
        &self,
        request: Request<pb::CompleteRunRequest>,
    ) -> Result<Response<pb::CompleteRunResponse>, Status> {
        self.auth
            .grpc(&request, Scope::Write, "RunService/CompleteRun")?;
        let req = request.into_inner();
        let run = run_ref(req.run_id, req.ci_execution_id)?;
        self.actor
            .ask(|reply| Command::Complete { run, reply })
            .await?;
        Ok(Response::new(pb::CompleteRunResponse {}))
    }
}

/// Sends a new watcher the output its tasks printed before it came. Ends when that is sent,
/// or when the watcher goes.
async fn replay(
    logs: crate::logstore::Logs,
    run: String,
    earlier: Vec<crate::actor::EarlierOutput>,
    tx: tokio::sync::mpsc::Sender<Result<pb::RunEvent, Status>>,
) {
    let max = crate::logstore::MAX_READ;
    for e in earlier {
        let (mut chunk, end) = match e.first {
            Some(first) => {
                let chunk = first.await.unwrap_or_default();
                let end = chunk.size;
                (chunk, end)
            }
            None => (
                logs.read_attempt(&run, &e.task, Some(e.attempt), 0, max)
                    .await,
                u64::MAX,
            ),
        };
        loop {
            let mut data = std::mem::take(&mut chunk.data);
            if chunk.next > end {
                // Past what was printed when the watcher came: that part arrives live.
                let over = usize::try_from(chunk.next - end).unwrap_or(usize::MAX);
                data.truncate(data.len().saturating_sub(over));
            }
            if !data.is_empty() {
                let event = pb::RunEvent {
                    event: Some(pb::run_event::Event::TaskOutput(pb::TaskOutputEvent {
                        task_id: e.task.clone(),
                        stream: pb::OutputStream::Unspecified as i32,
                        data,
                        attempt: e.attempt,
                    })),
                    ..Default::default()
                };
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            if chunk.next >= end.min(chunk.size) || chunk.next == 0 {
                break;
            }
            chunk = logs
                .read_attempt(&run, &e.task, Some(e.attempt), chunk.next, max)
                .await;
        }
    }
}
