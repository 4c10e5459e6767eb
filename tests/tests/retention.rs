//! Run retention with real processes: a run that ended longer ago than `--run-retention` is
//! forgotten, stays forgotten after a restart, and an active run is kept however old it is.

use std::time::Duration;

use drover_proto::v1::{
    GetRunRequest, ListRunsRequest, WatchRunRequest, admin_service_client::AdminServiceClient,
    run_service_client::RunServiceClient,
};
use drover_tests::{Fleet, FleetConfig, eventually, text};
use tonic::Code;

/// Answers of the coordinator's gRPC services, from a blocking test.
struct Client {
    rt: tokio::runtime::Runtime,
    url: String,
}

impl Client {
    fn new(fleet: &Fleet) -> Client {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        Client {
            rt,
            url: fleet.url(),
        }
    }

    fn channel(&self) -> tonic::transport::Channel {
        self.rt.block_on(async {
            tonic::transport::Endpoint::from_shared(self.url.clone())
                .expect("a valid URL")
                .connect()
                .await
                .expect("connect to the coordinator")
        })
    }

    /// The run's state (`running`, `succeeded`...), or the status code of the answer.
    fn run_state(&self, run_id: &str) -> Result<String, Code> {
        let mut admin = AdminServiceClient::new(self.channel());
        let req = GetRunRequest {
            run_id: run_id.into(),
            ..Default::default()
        };
        self.rt
            .block_on(admin.get_run(req))
            .map(|r| r.into_inner().run.expect("run info").state)
            .map_err(|s| s.code())
    }

    fn run_ids(&self) -> Vec<String> {
        let mut admin = AdminServiceClient::new(self.channel());
        let runs = self
            .rt
            .block_on(admin.list_runs(ListRunsRequest::default()))
            .expect("list runs")
            .into_inner()
            .runs;
        runs.into_iter().map(|r| r.run_id).collect()
    }

    /// The status code a watch of the run answers with, if it fails.
    fn watch_error(&self, run_id: &str) -> Option<Code> {
        let mut runs = RunServiceClient::new(self.channel());
        let req = WatchRunRequest {
            run_id: run_id.into(),
            from_seq: 1,
            ..Default::default()
        };
        self.rt
            .block_on(runs.watch_run(req))
            .err()
            .map(|s| s.code())
    }
}

fn start_run(fleet: &Fleet, exec: &str) -> String {
    let out = fleet
        .drover(&["start-ci-run", "--ci-execution-id", exec])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// Runs the graph in the run and completes it.
fn finish_run(fleet: &Fleet, run_id: &str) {
    let out = fleet.run(&["exec", "--graph", "tasks.yaml", "--run", run_id]);
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr),
        fleet.logs()
    );
    let out = fleet.run(&["complete-ci-run", "--run", run_id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn an_ended_run_is_forgotten_after_the_retention_and_a_restart_does_not_bring_it_back() {
    let mut fleet = Fleet::with_config(
        "retention",
        FleetConfig {
            coordinator_args: [
                "--run-retention",
                "1s",
                "--retention-sweep-interval",
                "200ms",
            ]
            .map(String::from)
            .to_vec(),
            ..FleetConfig::default()
        },
    );
    fleet.dir.write(
        "tasks.yaml",
        "tasks:\n  - { id: \"app:build\", command: 'true' }\n",
    );
    fleet.agent("only", "linux", 1, None);
    let client = Client::new(&fleet);

    // Opened first and never completed: older than the retention, but active.
    let active = start_run(&fleet, "exec-active");
    let done = start_run(&fleet, "exec-done");
    finish_run(&fleet, &done);

    eventually(
        Duration::from_secs(10),
        "the ended run to be forgotten",
        || (client.run_state(&done) == Err(Code::NotFound)).then_some(()),
    );
    assert_eq!(client.watch_error(&done), Some(Code::NotFound));
    assert_eq!(client.run_ids(), [active.as_str()]);
    assert_eq!(client.run_state(&active), Ok("running".to_string()));
    let metrics = fleet.http_get("/metrics");
    assert!(
        metrics.contains("drover_runs_forgotten_total 1\n"),
        "{metrics}"
    );

    fleet.restart_coordinator();
    let client = Client::new(&fleet);
    assert_eq!(
        client.run_state(&done),
        Err(Code::NotFound),
        "{}",
        fleet.logs()
    );
    assert_eq!(client.run_ids(), [active.as_str()]);
    assert!(
        !fleet
            .coordinator_log()
            .contains("deleted runs that ended longer ago"),
        "the sweep had deleted it from the store already, so the start found nothing to delete"
    );

    // A new run works (the agent reconnects by itself), then goes the same way.
    let next = start_run(&fleet, "exec-next");
    finish_run(&fleet, &next);
    eventually(
        Duration::from_secs(10),
        "the new run to be forgotten in turn",
        || (client.run_state(&next) == Err(Code::NotFound)).then_some(()),
    );
    assert_eq!(client.run_state(&active), Ok("running".to_string()));
    let log = fleet.coordinator_log();
    assert!(
        log.contains("forgot runs that ended longer ago than the run retention"),
        "{log}"
    );
}
