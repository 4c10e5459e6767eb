//! `AdminService`: what operators ask with grpcurl.

use drover_proto::v1 as pb;
use drover_scheduler::state::{RunRef, SchedError};
use pb::admin_service_server::AdminService;
use tonic::{Request, Response, Status};

use crate::actor::Handle;
use crate::convert;
use crate::error::CoordError;

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
        let agents = self.actor.read(|s| s.agent_views()).await?;
        let agents = agents.into_iter().map(convert::agent_info).collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn list_runs(
        &self,
        _: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let runs = self.actor.read(|s| s.run_summaries()).await?;
        let runs = runs.iter().map(convert::run_info).collect();
        Ok(Response::new(pb::ListRunsResponse { runs }))
    }

    async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::GetRunResponse>, Status> {
        let run = RunRef::Id(request.into_inner().run_id);
        let view = self
            .actor
            .read(move |s| {
                let id = s.resolve(&run)?;
                s.run_view(&id).ok_or(SchedError::UnknownRun(id))
            })
            .await?
            .map_err(CoordError::from)?;
        Ok(Response::new(convert::get_run(&view)))
    }
}
