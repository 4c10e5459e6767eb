//! The agent loop against a fake coordinator on loopback: real gRPC, real processes.

use std::time::Duration;

use drover_proto::v1::agent_message::Msg as Up;
use drover_proto::v1::coordinator_message::Msg as Down;
use drover_proto::v1::{Cancel, Finished, HeldLease, Lease, OutputStream, Stop};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::*;
use crate::fake_coordinator::{FakeCoordinator, FakeStream, PATIENCE};
use crate::shutdown::ShutdownHandle;

/// Long enough that no heartbeat interferes unless a test wants one.
const NO_HEARTBEAT: u64 = 60_000;

fn config(url: &str) -> AgentConfig {
    AgentConfig {
        coordinator: url.to_owned(),
        name: "agent-1".into(),
        instance_id: AgentConfig::new_instance_id(),
        launch_template: "linux-medium".into(),
        slots: 2,
        ci_execution_id: Some("ci-123".into()),
        workdir: std::env::temp_dir(),
        drain_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        token: None,
        tls: Default::default(),
        attempt: 0,
        workspaces: None,
    }
}

fn start(config: AgentConfig) -> (JoinHandle<Result<AgentExit, AgentError>>, ShutdownHandle) {
    let (shutdown, handle) = Shutdown::manual();
    (tokio::spawn(run(config, shutdown)), handle)
}

async fn exit_of(
    agent: JoinHandle<Result<AgentExit, AgentError>>,
) -> Result<AgentExit, AgentError> {
    tokio::time::timeout(PATIENCE, agent)
        .await
        .expect("the agent did not exit in time")
        .expect("the agent task panicked")
}

fn lease(id: &str, token: u64, command: &str) -> Down {
    Down::Lease(Lease {
        lease_id: id.into(),
        fencing_token: token,
        run_id: "run-1".into(),
        task_id: format!("{id}:test"),
        command: command.into(),
        attempt: 1,
        ..Default::default()
    })
}

fn held(id: &str, token: u64) -> HeldLease {
    HeldLease {
        lease_id: id.into(),
        fencing_token: token,
    }
}

/// Output of one stream until the lease's result; returns both.
async fn until_finished(stream: &mut FakeStream, lease_id: &str) -> (String, String, Finished) {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    loop {
        match stream.next().await {
            Up::Output(output) if output.lease_id == lease_id => {
                if output.stream == OutputStream::Stdout as i32 {
                    stdout.extend(output.data);
                } else {
                    stderr.extend(output.data);
                }
            }
            Up::Finished(finished) if finished.lease_id == lease_id => {
                let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
                return (text(stdout), text(stderr), finished);
            }
            other => panic!("unexpected message while {lease_id} runs: {other:?}"),
        }
    }
}

async fn expect_started(stream: &mut FakeStream, lease_id: &str, token: u64) {
    match stream.next().await {
        Up::Started(started) => assert_eq!(
            (started.lease_id.as_str(), started.fencing_token),
            (lease_id, token)
        ),
        other => panic!("expected Started for {lease_id}, got {other:?}"),
    }
}

/// Reads the first stdout line of a lease as a pid.
async fn first_pid(stream: &mut FakeStream) -> i32 {
    match stream.next().await {
        Up::Output(output) => String::from_utf8_lossy(&output.data)
            .trim()
            .parse()
            .expect("a pid"),
        other => panic!("expected a pid on stdout, got {other:?}"),
    }
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !matches!(
                stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next()),
                Some('Z' | 'X')
            )
        })
        .unwrap_or(false)
}

async fn gone_within(pid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    !alive(pid)
}

#[tokio::test]
async fn runs_a_lease_and_resends_its_result_after_a_lost_stream() {
    let mut coordinator = FakeCoordinator::start().await;
    let config = config(&coordinator.url);
    let instance_id = config.instance_id.clone();
    let (agent, _shutdown) = start(config);

    let (mut stream, hello) = coordinator.accept_welcome(NO_HEARTBEAT).await;
    assert_eq!(hello.name, "agent-1");
    assert_eq!(hello.instance_id, instance_id);
    assert_eq!(hello.launch_template, "linux-medium");
    assert_eq!(hello.slots, 2);
    assert_eq!(hello.ci_execution_id, "ci-123");
    assert_eq!(hello.version, env!("CARGO_PKG_VERSION"));
    assert!(hello.held_leases.is_empty());

    stream.send(lease("l1", 7, "echo hi; echo err >&2; exit 3"));
    expect_started(&mut stream, "l1", 7).await;
    let (stdout, stderr, finished) = until_finished(&mut stream, "l1").await;
    assert_eq!((stdout.as_str(), stderr.as_str()), ("hi\n", "err\n"));
    assert_eq!(
        (
            finished.fencing_token,
            finished.exit_code,
            finished.error.as_str()
        ),
        (7, 3, "")
    );

    // The coordinator restarts before any heartbeat confirmed the result.
    drop(stream);
    let (mut stream, hello) = coordinator.accept_welcome(NO_HEARTBEAT).await;
    assert_eq!(
        hello.instance_id, instance_id,
        "a reconnect is the same agent"
    );
    assert_eq!(hello.held_leases, [held("l1", 7)]);
    match stream.next().await {
        Up::Finished(again) => assert_eq!(again, finished),
        other => panic!("expected the result again, got {other:?}"),
    }

    stream.send(Down::Stop(Stop {
        reason: "run complete".into(),
    }));
    assert!(stream.rest().await.is_empty());
    let exit = exit_of(agent).await.expect("a clean stop");
    assert_eq!(
        exit,
        AgentExit::Stopped {
            reason: "run complete".into()
        }
    );
    assert_eq!(exit.exit_code(), 0);
}

#[tokio::test]
async fn a_task_keeps_running_while_the_coordinator_is_away() {
    let mut coordinator = FakeCoordinator::start().await;
    let (agent, _shutdown) = start(config(&coordinator.url));
    let (mut stream, _) = coordinator.accept_welcome(NO_HEARTBEAT).await;
    stream.send(lease("l1", 3, "echo before; sleep 0.4; echo after"));
    expect_started(&mut stream, "l1", 3).await;
    assert!(matches!(stream.next().await, Up::Output(o) if o.data == b"before\n"));

    drop(stream);
    let (mut stream, hello) = coordinator.accept_welcome(NO_HEARTBEAT).await;
    assert_eq!(hello.held_leases, [held("l1", 3)], "the task still runs");
    let (stdout, _, finished) = until_finished(&mut stream, "l1").await;
    assert_eq!((stdout.as_str(), finished.exit_code), ("after\n", 0));

    stream.send(Down::Stop(Stop {
        reason: "done".into(),
    }));
    assert!(stream.rest().await.is_empty());
    exit_of(agent).await.expect("a clean stop");
}

#[tokio::test]
async fn heartbeats_carry_the_held_leases_and_extra_leases_are_refused() {
    let mut coordinator = FakeCoordinator::start().await;
    let (agent, _shutdown) = start(AgentConfig {
        slots: 1,
        ..config(&coordinator.url)
    });
    let (mut stream, _) = coordinator.accept_welcome(50).await;
    stream.send(lease("l1", 1, "sleep 30"));
    stream.send(lease("l2", 2, "echo never"));
    let mut refused = None;
    let mut beat = None;
    while refused.is_none() || beat.is_none() {
        match stream.next_any().await.expect("stream open") {
            Up::Finished(finished) => refused = Some(finished),
            Up::Heartbeat(heartbeat) if !heartbeat.held_leases.is_empty() => beat = Some(heartbeat),
            _ => {}
        }
    }
    let refused = refused.unwrap_or_default();
    assert_eq!((refused.lease_id.as_str(), refused.exit_code), ("l2", -1));
    assert_eq!(refused.error, "agent has no free slot");
    assert_eq!(beat.unwrap_or_default().held_leases, [held("l1", 1)]);

    stream.send(Down::Cancel(Cancel {
        lease_id: "l1".into(),
        reason: "test".into(),
    }));
    stream.send(Down::Stop(Stop {
        reason: "done".into(),
    }));
    assert!(stream.rest().await.is_empty());
    exit_of(agent).await.expect("a clean stop");
}

#[tokio::test]
async fn cancel_kills_the_task_group_and_sends_no_result() {
    let mut coordinator = FakeCoordinator::start().await;
    let (agent, _shutdown) = start(config(&coordinator.url));
    let (mut stream, _) = coordinator.accept_welcome(NO_HEARTBEAT).await;
    stream.send(lease("l1", 5, "sleep 30 & echo $!; wait"));
    expect_started(&mut stream, "l1", 5).await;
    let grandchild = first_pid(&mut stream).await;

    stream.send(Down::Cancel(Cancel {
        lease_id: "l1".into(),
        reason: "revoked".into(),
    }));
    assert!(
        gone_within(grandchild, Duration::from_secs(1)).await,
        "{grandchild} survived the cancel"
    );
    stream.send(Down::Stop(Stop {
        reason: "done".into(),
    }));
    let rest = stream.rest().await;
    assert!(
        rest.is_empty(),
        "nothing more for a cancelled lease: {rest:?}"
    );
    let exit = exit_of(agent).await.expect("a clean stop");
    assert!(matches!(exit, AgentExit::Stopped { .. }));
}

#[tokio::test]
async fn drain_lets_running_tasks_finish_and_refuses_new_leases() {
    let mut coordinator = FakeCoordinator::start().await;
    let (agent, shutdown) = start(config(&coordinator.url));
    let (mut stream, _) = coordinator.accept_welcome(NO_HEARTBEAT).await;
    stream.send(lease("l1", 1, "sleep 0.3; echo done"));
    expect_started(&mut stream, "l1", 1).await;

    shutdown.drain();
    assert!(matches!(stream.next().await, Up::Draining(_)));
    stream.send(lease("l2", 2, "echo late"));
    let mut results = Vec::new();
    while results.len() < 2 {
        match stream.next().await {
            Up::Finished(finished) => results.push(finished),
            Up::Output(output) => assert_eq!(output.data, b"done\n"),
            other => panic!("unexpected {other:?}"),
        }
    }
    results.sort_by(|a, b| a.lease_id.cmp(&b.lease_id));
    assert_eq!((results[0].exit_code, results[0].error.as_str()), (0, ""));
    assert_eq!(
        (results[1].exit_code, results[1].error.as_str()),
        (-1, "agent is draining")
    );
    assert!(stream.rest().await.is_empty());
    assert_eq!(
        exit_of(agent).await.expect("a clean drain"),
        AgentExit::Drained
    );
}

#[tokio::test]
async fn a_drain_timeout_kills_what_still_runs() {
    let mut coordinator = FakeCoordinator::start().await;
    let config = AgentConfig {
        drain_timeout: Duration::from_millis(200),
        ..config(&coordinator.url)
    };
    let (agent, shutdown) = start(config);
    let (mut stream, _) = coordinator.accept_welcome(NO_HEARTBEAT).await;
    stream.send(lease("l1", 1, "sleep 30 & echo $!; wait"));
    expect_started(&mut stream, "l1", 1).await;
    let grandchild = first_pid(&mut stream).await;

    let drained_at = Instant::now();
    shutdown.drain();
    assert!(matches!(&stream.rest().await[..], [Up::Draining(_)]));
    let exit = exit_of(agent)
        .await
        .expect("a drain that timed out is not an error");
    assert_eq!(exit, AgentExit::DrainTimedOut { killed_tasks: 1 });
    assert!(
        drained_at.elapsed() < Duration::from_secs(3),
        "took {:?}",
        drained_at.elapsed()
    );
    assert!(
        gone_within(grandchild, Duration::from_millis(500)).await,
        "{grandchild} survived"
    );
}

#[tokio::test]
async fn a_second_shutdown_request_kills_at_once() {
    let mut coordinator = FakeCoordinator::start().await;
    let (agent, shutdown) = start(config(&coordinator.url));
    let (mut stream, _) = coordinator.accept_welcome(NO_HEARTBEAT).await;
    stream.send(lease("l1", 1, "sleep 30 & echo $!; wait"));
    expect_started(&mut stream, "l1", 1).await;
    let grandchild = first_pid(&mut stream).await;

    shutdown.drain();
    shutdown.kill();
    let exit = exit_of(agent).await.expect("killing is not an error");
    assert_eq!(exit, AgentExit::Killed { killed_tasks: 1 });
    assert_eq!(exit.exit_code(), 1);
    assert!(
        gone_within(grandchild, Duration::from_millis(500)).await,
        "{grandchild} survived"
    );
}

#[tokio::test]
async fn an_unreachable_coordinator_is_an_error_after_the_connect_timeout() {
    // A port that was just free: connections are refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    let started = Instant::now();
    let (agent, _shutdown) = start(AgentConfig {
        connect_timeout: Duration::from_millis(400),
        token: None,
        tls: Default::default(),
        attempt: 0,
        workspaces: None,
        ..config(&url)
    });
    let error = exit_of(agent).await.expect_err("nobody listens");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(error, AgentError::CoordinatorUnreachable { .. }),
        "{error}"
    );
    let text = error.to_string();
    assert!(
        text.contains(&url) && text.to_lowercase().contains("refused"),
        "{text}"
    );
}

#[tokio::test]
async fn a_refusing_coordinator_is_a_fatal_error() {
    let mut coordinator = FakeCoordinator::start().await;
    let (agent, _shutdown) = start(config(&coordinator.url));
    let mut stream = coordinator.accept().await;
    stream.hello().await;
    stream.fail(tonic::Status::permission_denied(
        "token lacks the agent scope",
    ));
    let error = exit_of(agent).await.expect_err("a refusal is final");
    assert!(
        error.to_string().contains("token lacks the agent scope"),
        "{error}"
    );
}

#[tokio::test]
async fn stop_in_answer_to_hello_ends_the_agent() {
    let mut coordinator = FakeCoordinator::start().await;
    let (agent, _shutdown) = start(config(&coordinator.url));
    let mut stream = coordinator.accept().await;
    stream.hello().await;
    stream.send(Down::Stop(Stop {
        reason: "CI execution ci-123 is over".into(),
    }));
    let exit = exit_of(agent).await.expect("a clean stop");
    assert_eq!(
        exit,
        AgentExit::Stopped {
            reason: "CI execution ci-123 is over".into()
        }
    );
}

#[tokio::test]
async fn stop_in_answer_to_a_reconnect_waits_for_running_tasks() {
    let mut coordinator = FakeCoordinator::start().await;
    let (mut agent, _shutdown) = start(config(&coordinator.url));
    let (mut stream, _) = coordinator.accept_welcome(NO_HEARTBEAT).await;
    stream.send(lease("l1", 1, "sleep 0.4"));
    expect_started(&mut stream, "l1", 1).await;
    drop(stream);

    // Every reconnect is told to stop; the agent backs off instead of hammering, and exits
    // once its task is done.
    let mut hellos = 0;
    let exit = loop {
        tokio::select! {
            mut stream = coordinator.accept() => {
                stream.hello().await;
                hellos += 1;
                stream.send(Down::Stop(Stop { reason: "run is over".into() }));
            }
            joined = &mut agent => break joined.expect("the agent task panicked"),
        }
    };
    assert_eq!(
        exit.expect("a clean stop"),
        AgentExit::Stopped {
            reason: "run is over".into()
        }
    );
    assert!((1..=4).contains(&hellos), "{hellos} reconnects in 0.4s");
}
