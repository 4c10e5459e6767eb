//! `RunService`: the CI main job starts a run, submits graphs, follows them, completes the run.

use std::pin::Pin;

use drover_proto::v1 as pb;
use pb::run_service_server::RunService;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::actor::{Command, Handle, RunRef, run_spec};
use crate::convert::task_from_proto;
use crate::runlog::Filter;

pub struct RunSvc {
    actor: Handle,
}

impl RunSvc {
    pub fn new(actor: Handle) -> Self {
        RunSvc { actor }
    }
}

#[tonic::async_trait]
impl RunService for RunSvc {
    async fn start_run(
        &self,
        request: Request<pb::StartRunRequest>,
    ) -> Result<Response<pb::StartRunResponse>, Status> {
        let request = request.into_inner();
        let spec = run_spec(request.clone())?;
        let (run_id, existing) = self
            .actor
            .ask(|reply| Command::StartRun {
                spec,
                request: Box::new(request),
                reply,
            })
            .await?;
        Ok(Response::new(pb::StartRunResponse { run_id, existing }))
    }

    async fn submit_graph(
        &self,
        request: Request<pb::SubmitGraphRequest>,
    ) -> Result<Response<pb::SubmitGraphResponse>, Status> {
        let req = request.into_inner();
        let run = RunRef::from_fields(req.run_id, req.ci_execution_id)?;
        let tasks = req.tasks.into_iter().map(task_from_proto).collect();
        let (run_id, submission_id, task_count) = self
            .actor
            .ask(|reply| Command::Submit { run, tasks, reply })
            .await?;
        Ok(Response::new(pb::SubmitGraphResponse {
            submission_id,
            task_count,
            run_id,
        }))
    }

    type WatchRunStream = Pin<Box<dyn Stream<Item = Result<pb::RunEvent, Status>> + Send>>;

    async fn watch_run(
        &self,
        request: Request<pb::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        let req = request.into_inner();
        let run = RunRef::from_fields(req.run_id, req.ci_execution_id)?;
        let filter = Filter {
            submission: (req.submission_id > 0).then_some(req.submission_id),
            all_output: req.all_output,
        };
        let from_seq = req.from_seq.max(1);
        let rx = self
            .actor
            .ask(|reply| Command::Watch {
                run,
                filter,
                from_seq,
                reply,
            })
            .await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn complete_run(
        &self,
        request: Request<pb::CompleteRunRequest>,
    ) -> Result<Response<pb::CompleteRunResponse>, Status> {
        let req = request.into_inner();
        let run = RunRef::from_fields(req.run_id, req.ci_execution_id)?;
        self.actor
            .ask(|reply| Command::Complete { run, reply })
            .await?;
        Ok(Response::new(pb::CompleteRunResponse {}))
    }
}
