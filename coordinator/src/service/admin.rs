//! `AdminService`: what operators ask with grpcurl. Every method needs the `admin` scope, and
//! every action is logged with the token's name and the peer address.

use std::sync::Arc;

use drover_proto::v1 as pb;
use drover_scheduler::state::{AgentId, RunRef, RunState, SchedError};
use pb::admin_service_server::AdminService;
use tonic::{Request, Response, Status};

use crate::actor::{Command, Handle};
use crate::auth::{Auth, Scope};
use crate::convert;
use crate::error::CoordError;

pub struct AdminSvc {
    actor: Handle,
    auth: Arc<Auth>,
}

impl AdminSvc {
    pub fn new(actor: Handle, auth: Arc<Auth>) -> Self {
        AdminSvc { actor, auth }
    }

    /// The admin scope, and who asked from where (for the audit log).
    fn admit<T>(&self, request: &Request<T>, what: &str) -> Result<(String, String), Status> {
        let who = self.auth.grpc(request, Scope::Admin, what)?;
        let peer = request
            .remote_addr()
            .map_or("-".to_string(), |p| p.to_string());
        Ok((who.name, peer))
    }

    async fn run_info(&self, run_id: String) -> Result<pb::RunInfo, Status> {
        let summary = self
            .actor
            .read(move |v| {
                v.sched
                    .run_summary(&run_id)
                    .ok_or(SchedError::UnknownRun(run_id))
            })
            .await?
            .map_err(CoordError::from)?;
        Ok(convert::run_info(&summary))
    }
}

#[tonic::async_trait]
impl AdminService for AdminSvc {
    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        self.admit(&request, "AdminService/ListAgents")?;
        let (agents, now) = self.actor.read(|v| (v.sched.agent_views(), v.now)).await?;
        let agents = agents
            .into_iter()
            .map(|a| convert::agent_info(a, now))
            .collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn drain_agent(
        &self,
        request: Request<pb::DrainAgentRequest>,
    ) -> Result<Response<pb::DrainAgentResponse>, Status> {
        let (who, peer) = self.admit(&request, "AdminService/DrainAgent")?;
        let wanted = request.into_inner().agent;
        let find = wanted.clone();
        let found: Option<AgentId> = self
            .actor
            .read(move |v| {
                v.sched
                    .agent_views()
                    .into_iter()
                    .find(|a| a.name == find || a.id.to_string() == find)
                    .map(|a| a.id)
            })
            .await?;
        let agent = found.ok_or_else(|| {
            Status::not_found(format!("no agent named `{wanted}` (ListAgents lists them)"))
        })?;
        self.actor
            .ask(|reply| Command::Drain { agent, reply })
            .await?;
        tracing::info!(token = %who, %peer, %agent, name = %wanted, "admin: agent drained");
        let (view, now) = self
            .actor
            .read(move |v| {
                (
                    v.sched.agent_views().into_iter().find(|a| a.id == agent),
                    v.now,
                )
            })
            .await?;
        Ok(Response::new(pb::DrainAgentResponse {
            agent: view.map(|a| convert::agent_info(a, now)),
        }))
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        self.admit(&request, "AdminService/ListRuns")?;
        let filter = request.into_inner();
        let runs = self.actor.read(|v| v.sched.run_summaries()).await?;
        let runs = runs
            .iter()
            .filter(|r| !filter.active || r.state.is_active())
            .filter(|r| !filter.ended || !r.state.is_active())
            .filter(|r| {
                filter.ci_execution_id.is_empty() || r.ci_execution_id == filter.ci_execution_id
            })
            .map(convert::run_info)
            .collect();
        Ok(Response::new(pb::ListRunsResponse { runs }))
    }

    async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::GetRunResponse>, Status> {
        self.admit(&request, "AdminService/GetRun")?;
        let req = request.into_inner();
        let run = RunRef::from_fields(req.run_id, req.ci_execution_id).map_err(CoordError::from)?;
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

    async fn cancel_run(
        &self,
        request: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::CancelRunResponse>, Status> {
        let (who, peer) = self.admit(&request, "AdminService/CancelRun")?;
        let run_id = request.into_inner().run_id;
        let run = RunRef::Id(run_id.clone());
        let by = who.clone();
        self.actor
            .ask(|reply| Command::Cancel { run, by, reply })
            .await?;
        tracing::info!(token = %who, %peer, run = %run_id, "admin: run cancelled");
        let info = self.run_info(run_id).await?;
        debug_assert_ne!(info.state, RunState::Running.as_str());
        Ok(Response::new(pb::CancelRunResponse { run: Some(info) }))
    }
}
