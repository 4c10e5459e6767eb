//! The actor with its commit thread, on a real store: what reaches agents and clients, and
//! what a restart keeps.

use std::sync::Arc;
use std::time::Duration;

use drover_proto::v1 as pb;
use drover_scheduler::TaskSpec;
use drover_scheduler::state::{Config, Hello, Reply, RunRef, RunRequest, RunSpec};
use tokio::sync::mpsc;

use super::open::ID_GAP_AFTER_RESTART;
use super::{Actor, Command, Handle, Retention};
use crate::auth::{Auth, CacheTokens};
use crate::metrics::Metrics;

use crate::test_support::TempDir;

fn actor(dir: &TempDir) -> (Actor, Handle) {
    let auth = Auth::open(None, CacheTokens::default(), &dir.0).expect("auth");
    let logs = crate::logstore::Logs::open(&dir.0, crate::logstore::DEFAULT_LIMIT).expect("logs");
    Actor::new(
        Config::default(),
        dir.0.clone(),
        logs,
        Retention {
            keep: None,
            sweep_interval: Duration::from_secs(3600),
        },
        Arc::new(Metrics::new(None)),
        Arc::new(auth),
        "http://127.0.0.1:1".into(),
        None,
    )
    .expect("actor")
}

/// Opens a run of one task, connects an agent and returns the lease it is sent.
async fn lease_one(handle: &Handle, exec: &str) -> pb::Lease {
    let request = RunRequest {
        ci_execution_id: exec.into(),
        ..RunRequest::default()
    };
    let spec = RunSpec::from_request(&request).expect("spec");
    handle
        .ask(|reply| Command::StartRun {
            request: Box::new(request),
            spec: Box::new(spec),
            reply,
        })
        .await
        .expect("run started");
    handle
        .ask(|reply| Command::Submit {
            run: RunRef::Execution(exec.into()),
            tasks: vec![TaskSpec::new("app:build", "true")],
            stored: crate::persist::encode_tasks(&[TaskSpec::new("app:build", "true")]),
            reply,
        })
        .await
        .expect("submitted");
    let (tx, mut rx) = mpsc::channel(16);
    let hello = Hello {
        name: format!("agent-{exec}"),
        instance_id: "1".into(),
        launch_template: "linux".into(),
        slots: 1,
        ..Hello::default()
    };
    let reply = handle
        .ask(|reply| Command::Connect {
            hello,
            conn: 1,
            tx,
            reply,
        })
        .await
        .expect("connected");
    assert!(matches!(reply, Reply::Agent(_)), "{reply:?}");
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a lease within 10s")
            .expect("the stream stays open");
        if let Some(pb::coordinator_message::Msg::Lease(lease)) = msg.msg {
            return lease;
        }
    }
}

/// Leases go to agents before their batch is on disk, so a lease of the last moments before a
/// crash may be unknown to the restarted coordinator: the ids and fencing tokens it hands out
/// skip ahead, and never repeat one an agent may still hold.
#[tokio::test]
async fn lease_ids_and_tokens_after_a_restart_never_repeat_one_sent_before() {
    let dir = TempDir::new("actor");
    let (first, handle) = actor(&dir);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(first.run(async {
        let _ = stop_rx.await;
    }));
    let before = lease_one(&handle, "exec-1").await;
    let _ = stop_tx.send(());
    running.await.expect("the first actor ends");
    drop(handle);

    let (second, handle) = actor(&dir);
    let running = tokio::spawn(second.run(std::future::pending::<()>()));
    let after = lease_one(&handle, "exec-2").await;
    let (id_before, id_after): (u64, u64) = (
        before.lease_id.parse().expect("numeric"),
        after.lease_id.parse().expect("numeric"),
    );
    assert!(
        id_after > id_before + ID_GAP_AFTER_RESTART / 2,
        "{id_before} then {id_after}"
    );
    assert!(
        after.fencing_token > before.fencing_token + ID_GAP_AFTER_RESTART / 2,
        "{} then {}",
        before.fencing_token,
        after.fencing_token
    );
    running.abort();
}
