//! `drover demo`: a coordinator and three agents of two launch templates in one process, on
//! real gRPC over loopback, running a sample monorepo graph under assignment rules.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use drover_agent::{AgentConfig, Shutdown};
use drover_coordinator::{Coordinator, CoordinatorConfig};
use drover_proto::v1 as pb;
use drover_scheduler::graph::parse_graph_file;
use pb::run_service_client::RunServiceClient;

use crate::client::connect;
use crate::commands::CoordinatorUrl;
use crate::error::CliError;
use crate::follow::{Submit, submit_and_follow};

const GRAPH: &str = include_str!("../demo/graph.yaml");
const RULES: &str = include_str!("../demo/rules.yaml");
const EXECUTION: &str = "demo";

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Print every task's output as it comes.
    #[arg(long)]
    pub stream_output: bool,
}

pub async fn run(args: DemoArgs) -> Result<u8, CliError> {
    let dir = std::env::temp_dir().join(format!("drover-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::Io(format!("cannot create {}: {e}", dir.display())))?;
    let result = demo(&dir, args.stream_output).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn demo(dir: &std::path::Path, stream_output: bool) -> Result<u8, CliError> {
    let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let coordinator = Coordinator::bind(CoordinatorConfig::new(
        loopback(0),
        loopback(0),
        dir.join("data"),
    ))
    .await?;
    let url = format!("http://{}", coordinator.grpc_addr());
    out!(
        "Drover demo: coordinator on {url} (metrics on http://{}/metrics)",
        coordinator.http_addr()
    );
    let (stop_coordinator, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(coordinator.serve(async {
        let _ = stopped.await;
    }));

    let fleet = [
        ("medium-1", "linux-medium", 2),
        ("medium-2", "linux-medium", 2),
        ("large-1", "linux-large", 2),
    ];
    out!(
        "Agents: {}",
        fleet
            .map(|(n, t, s)| format!("{n} ({t}, {s} slots)"))
            .join(", ")
    );
    let mut agents = Vec::new();
    for (name, template, slots) in fleet {
        let workdir = dir.join(name);
        std::fs::create_dir_all(&workdir).map_err(|e| CliError::Io(e.to_string()))?;
        let config = AgentConfig {
            coordinator: url.clone(),
            name: name.into(),
            instance_id: AgentConfig::new_instance_id(),
            launch_template: template.into(),
            slots,
            ci_execution_id: Some(EXECUTION.into()),
            workdir,
            drain_timeout: Duration::from_secs(10),
            connect_timeout: AgentConfig::DEFAULT_CONNECT_TIMEOUT,
            token: None,
            tls: Default::default(),
            attempt: 1,
            workspaces: None,
        };
        agents.push(tokio::spawn(drover_agent::run(config, Shutdown::never())));
    }

    let channel = connect(&CoordinatorUrl {
        url: url.clone(),
        token: None,
        ca_cert: None,
        client_cert: None,
        client_key: None,
    })?;
    let mut client = RunServiceClient::new(channel.clone());
    let start = pb::StartRunRequest {
        ci_execution_id: EXECUTION.into(),
        assignment_rules: RULES.into(),
        assignment_rules_path: "demo/rules.yaml".into(),
        distribute_on: "2 linux-medium:2, 1 linux-large:2".into(),
        attempt: 1,
        ..Default::default()
    };
    let run_id = client
        .start_run(start)
        .await
        .map_err(|s| CliError::rpc("starting the run", s))?
        .into_inner()
        .run_id;
    let graph = parse_graph_file("demo/graph.yaml", GRAPH)
        .map_err(|e| CliError::Io(e.to_string()))?
        .graph;
    out!(
        "Run {run_id}: {} tasks, assignment rules send e2e and production builds to linux-large\n",
        graph.tasks.len()
    );
    let submit = Submit {
        run_id: run_id.clone(),
        ci_execution_id: String::new(),
        tasks: &graph.tasks,
        label: "demo".into(),
        stream_output,
    };
    let (_, outcome) = submit_and_follow(channel, submit, |_| {}).await?;
    client
        .complete_run(pb::CompleteRunRequest {
            run_id,
            ..Default::default()
        })
        .await
        .map_err(|s| CliError::rpc("completing the run", s))?;

    let mut per_agent: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for t in &outcome.tasks {
        per_agent
            .entry(t.agent.as_str())
            .or_default()
            .push(t.task_id.as_str());
    }
    out!("\nWho ran what:");
    for (agent, tasks) in per_agent {
        out!("  {agent:9} {}", tasks.join(", "));
    }
    // The run is complete: CI agents of the run are told to stop and exit.
    for agent in agents {
        match agent.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("drover demo: an agent failed: {e}"),
            Err(e) => eprintln!("drover demo: an agent task panicked: {e}"),
        }
    }
    let _ = stop_coordinator.send(());
    server.await.map_err(|e| CliError::Io(e.to_string()))??;
    out!("All agents stopped after the run completed.");
    Ok(if outcome.success { 0 } else { 1 })
}
