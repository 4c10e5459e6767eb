//! `AdminService`: what operators ask with grpcurl.

use drover_proto::v1 as pb;
use pb::admin_service_server::AdminService;
use tonic::{Request, Response, Status};

use crate::actor::{Command, Handle, RunRef};

pub struct AdminSvc {
    actor: Handle,
}

impl AdminSvc {
    pub fn new(actor: Handle) -> Self {
        AdminSvc { actor }
    }
}

#[tonic::async_trait]
impl AdminService for AdminSvc {
    async fn list_agents(
        &self,
        _: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let agents = self
            .actor
            .query(|reply| Command::ListAgents { reply })
            .await?;
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn list_runs(
        &self,
        _: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let runs = self
            .actor
            .query(|reply| Command::ListRuns { reply })
            .await?;
        Ok(Response::new(pb::ListRunsResponse { runs }))
    }

    async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::GetRunResponse>, Status> {
        let run = RunRef::Id(request.into_inner().run_id);
        Ok(Response::new(
            self.actor
                .ask(|reply| Command::GetRun { run, reply })
                .await?,
        ))
    }
}
