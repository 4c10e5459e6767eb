//! Faults with real processes: an agent killed mid-task, the coordinator killed mid-run and
//! restarted on its data dir, an agent cut off by a stalled network, drain and kill by
//! SIGTERM, task timeouts with retries, and stopping a run after its first failure.
//!
//! Every test checks that each task succeeded exactly once in the coordinator's record (its
//! run log, as `drover exec` replays it) and, where a lease is taken back, that its task
//! started again within the deadline plus 1 s. The tests run one at a time: their timing
//! bounds should not depend on how many fleets share the machine.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use drover_proto::v1::{RunEvent, TaskStatus, run_event::Event};
use drover_tests::proxy::Proxy;
use drover_tests::{Fleet, FleetConfig, RecordLine, eventually, read_record, recorded, text};

/// One fleet at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const LEASE_TIMEOUT: Duration = Duration::from_secs(2);
/// How late a requeued task may start again, after its lease's deadline.
const SLACK: Duration = Duration::from_secs(1);

fn config() -> FleetConfig {
    FleetConfig {
        heartbeat_interval: "200ms",
        lease_timeout: "2s",
        reconnect_grace: None, // the lease timeout
        ..FleetConfig::default()
    }
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

/// A task command that notes its process group (for killing it as if its machine died), then
/// records its start and end around `secs` of work.
fn task(dir: &Path, record: &Path, secs: f32) -> String {
    format!(
        "echo $$ > {}/pgid.$DROVER_TASK_ID.$DROVER_AGENT_NAME; {}",
        dir.display(),
        recorded(record, secs, "true")
    )
}

/// Kills what a dead machine would take with it: the task process groups an agent started.
fn kill_task_groups(dir: &Path, agent: &str) {
    for entry in std::fs::read_dir(dir)
        .expect("read the fleet dir")
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("pgid.") && name.ends_with(&format!(".{agent}")) {
            let pgid = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", pgid.trim())])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Whether any process of this task's group on this agent is alive.
fn group_alive(dir: &Path, task: &str, agent: &str) -> bool {
    let pgid =
        std::fs::read_to_string(dir.join(format!("pgid.{task}.{agent}"))).unwrap_or_default();
    std::process::Command::new("kill")
        .args(["-0", "--", &format!("-{}", pgid.trim())])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `drover exec` running in the background; killed if the test ends first.
struct Exec {
    child: Child,
    out: std::thread::JoinHandle<Vec<u8>>,
    err: std::thread::JoinHandle<Vec<u8>>,
}

impl Exec {
    fn start(fleet: &Fleet, exec_id: &str) -> Exec {
        let mut child = fleet
            .drover(&["exec", "--graph", "tasks.yaml"])
            .env("DROVER_CI_EXECUTION_ID", exec_id)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn drover exec");
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        Exec {
            child,
            out: std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = stdout.read_to_end(&mut v);
                v
            }),
            err: std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = stderr.read_to_end(&mut v);
                v
            }),
        }
    }

    fn finish(mut self, timeout: Duration, fleet: &Fleet) -> Output {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "drover exec did not finish within {timeout:?}\n{}",
                    fleet.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stdout = std::mem::replace(&mut self.out, std::thread::spawn(Vec::new));
        let stderr = std::mem::replace(&mut self.err, std::thread::spawn(Vec::new));
        Output {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        }
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `start-ci-run` for this CI execution; the run id.
fn start_run(fleet: &Fleet, exec_id: &str, extra: &[&str]) -> String {
    let mut args = vec!["start-ci-run"];
    args.extend_from_slice(extra);
    let out = fleet
        .drover(&args)
        .env("DROVER_CI_EXECUTION_ID", exec_id)
        .output()
        .expect("run start-ci-run");
    assert!(out.status.success(), "start-ci-run: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

fn complete_run(fleet: &Fleet, exec_id: &str) {
    let out = fleet
        .drover(&["complete-ci-run"])
        .env("DROVER_CI_EXECUTION_ID", exec_id)
        .output()
        .expect("run complete-ci-run");
    assert!(
        out.status.success(),
        "complete-ci-run: {}",
        text(&out.stderr)
    );
}

/// The record's lines for one task and event, in time order.
fn lines<'a>(record: &'a [RecordLine], task: &str, event: &str) -> Vec<&'a RecordLine> {
    record
        .iter()
        .filter(|l| l.task == task && l.event == event)
        .collect()
}

/// Waits for a task's start (on `agent`, if named) to appear in the record.
fn wait_for_start(fleet: &Fleet, record: &Path, task: &str, agent: Option<&str>) -> RecordLine {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = read_record(record)
            .into_iter()
            .find(|l| l.task == task && l.event == "start" && agent.is_none_or(|a| l.agent == a));
        if let Some(line) = found {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "{task} did not start on {agent:?}\n{}",
            fleet.logs()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Successful `TaskFinished` events per task: the coordinator's record of what succeeded.
fn successes(events: &[RunEvent]) -> HashMap<String, Vec<String>> {
    let mut by_task: HashMap<String, Vec<String>> = HashMap::new();
    for e in events {
        if let Some(Event::TaskFinished(f)) = &e.event
            && f.status == TaskStatus::Succeeded as i32
        {
            by_task
                .entry(f.task_id.clone())
                .or_default()
                .push(f.agent.clone());
        }
    }
    by_task
}

fn requeues(events: &[RunEvent], task: &str) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::TaskRequeued(r)) if r.task_id == task => Some(r.reason.clone()),
            _ => None,
        })
        .collect()
}

/// Each task succeeded exactly once in the coordinator's record, and the run log is dense.
fn assert_each_succeeded_once(events: &[RunEvent], tasks: &[&str], logs: &str) {
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "the run log is numbered without gaps"
    );
    let ok = successes(events);
    for t in tasks {
        assert_eq!(
            ok.get(*t).map_or(0, Vec::len),
            1,
            "{t} succeeded exactly once: {ok:?}\n{logs}"
        );
    }
    assert_eq!(ok.len(), tasks.len(), "{ok:?}");
}

fn assert_within(what: &str, from: u128, to: u128, bound: Duration) -> Duration {
    assert!(to >= from, "{what}: happened before the fault");
    let took = Duration::from_nanos((to - from) as u64);
    assert!(took <= bound, "{what} took {took:?}, more than {bound:?}");
    eprintln!("{what}: {took:?} (bound {bound:?})");
    took
}

fn dir(fleet: &Fleet) -> PathBuf {
    fleet.dir.path.clone()
}

#[test]
fn an_agent_killed_mid_task_loses_its_lease_and_the_task_runs_again_on_another_agent() {
    let _serial = serial();
    let mut fleet = Fleet::with_config("chaos-kill", config());
    let (d, record) = (dir(&fleet), fleet.dir.join("record.txt"));
    fleet.dir.write(
        "tasks.yaml",
        &format!(
            r#"tasks:
  - {{ id: "lib:build", command: '{quick}' }}
  - {{ id: "app:build", command: '{slow}', dependsOn: ["lib:build"] }}
  - {{ id: "app:test", command: '{quick}', dependsOn: ["app:build"] }}
"#,
            quick = task(&d, &record, 0.2),
            slow = task(&d, &record, 2.0),
        ),
    );
    fleet.agent("victim", "linux", 1, Some("kill-1"));
    let run = start_run(&fleet, "kill-1", &[]);
    let exec = Exec::start(&fleet, "kill-1");
    wait_for_start(&fleet, &record, "app:build", Some("victim"));
    fleet.agent("survivor", "linux", 1, Some("kill-1"));
    // Let the survivor connect before the fault, so only the reclaim is timed.
    std::thread::sleep(Duration::from_millis(500));

    let killed_at = now_nanos();
    fleet.agent_proc("victim").signal("KILL");
    kill_task_groups(&d, "victim");

    let out = exec.finish(Duration::from_secs(30), &fleet);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", fleet.logs());
    assert!(
        stdout.contains("Summary: 3 succeeded, 0 failed"),
        "{stdout}"
    );
    assert!(stdout.contains("requeued app:build"), "{stdout}");

    let rec = read_record(&record);
    let starts = lines(&rec, "app:build", "start");
    assert_eq!(starts.len(), 2, "{rec:?}");
    assert_eq!(starts[1].agent, "survivor");
    assert_eq!(
        lines(&rec, "app:build", "end").len(),
        1,
        "only the survivor finished it"
    );
    // The stream closed at once; the lease waited out the grace period (the lease timeout).
    assert_within(
        "reclaim after kill -9",
        killed_at,
        starts[1].nanos,
        LEASE_TIMEOUT + SLACK,
    );

    let events = fleet.events(&run, Duration::from_secs(2));
    assert_each_succeeded_once(
        &events,
        &["lib:build", "app:build", "app:test"],
        &fleet.logs(),
    );
    let why = requeues(&events, "app:build");
    assert!(
        why.len() == 1 && why[0].contains("disconnected and did not come back within 2s"),
        "{why:?}"
    );
    complete_run(&fleet, "kill-1");
    let status = fleet
        .agent_proc("survivor")
        .wait_for_exit(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

#[test]
fn a_coordinator_killed_mid_run_restarts_on_its_data_dir_and_the_run_completes_with_every_result_kept()
 {
    let _serial = serial();
    // Agents back off up to 5 s between attempts: a restart leaves them that long to return.
    let grace = Duration::from_secs(5);
    let mut fleet = Fleet::with_config(
        "chaos-restart",
        FleetConfig {
            reconnect_grace: Some("5s"),
            ..config()
        },
    );
    let (d, record) = (dir(&fleet), fleet.dir.join("record.txt"));
    fleet.dir.write(
        "tasks.yaml",
        &format!(
            r#"tasks:
  - {{ id: "lib:build", command: '{quick}' }}
  - {{ id: "api:build", command: '{slow}', dependsOn: ["lib:build"] }}
  - {{ id: "web:build", command: '{slow}', dependsOn: ["lib:build"] }}
  - {{ id: "e2e:test", command: '{quick}', dependsOn: ["api:build", "web:build"] }}
"#,
            quick = task(&d, &record, 0.2),
            slow = task(&d, &record, 3.0),
        ),
    );
    fleet.agent("a1", "linux", 1, Some("restart-1"));
    fleet.agent("a2", "linux", 1, Some("restart-1"));
    let run = start_run(&fleet, "restart-1", &[]);
    let exec = Exec::start(&fleet, "restart-1");
    let first = wait_for_start(&fleet, &record, "api:build", None);
    let second = wait_for_start(&fleet, &record, "web:build", None);
    // The coordinator dies with lib:build done and two tasks running; so does one agent's
    // machine while the coordinator is away.
    let (gone, stays) = (second.agent.clone(), first.agent.clone());
    assert_ne!(gone, stays, "one slow task per agent");
    fleet.coordinator.as_ref().expect("running").signal("KILL");
    fleet.agent_proc(&gone).signal("KILL");
    kill_task_groups(&d, &gone);
    fleet.restart_coordinator();
    let restarted_at = now_nanos();

    let out = exec.finish(Duration::from_secs(40), &fleet);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        text(&out.stderr),
        fleet.logs()
    );
    assert!(
        stdout.contains("Summary: 4 succeeded, 0 failed"),
        "{stdout}"
    );
    assert!(
        fleet.coordinator_log().contains("restored from the store"),
        "{}",
        fleet.logs()
    );

    let rec = read_record(&record);
    // Finished before the crash: kept, not run again.
    assert_eq!(lines(&rec, "lib:build", "start").len(), 1, "{rec:?}");
    // Running on the agent that came back: its lease was kept across the restart.
    let kept = if first.task == "api:build" {
        "api:build"
    } else {
        "web:build"
    };
    let lost = if kept == "api:build" {
        "web:build"
    } else {
        "api:build"
    };
    assert_eq!(
        lines(&rec, kept, "start").len(),
        1,
        "{kept} ran once: {rec:?}"
    );
    assert_eq!(lines(&rec, kept, "end")[0].agent, stays);
    // Running on the agent that never came back: reclaimed after the grace period.
    let starts = lines(&rec, lost, "start");
    assert_eq!(starts.len(), 2, "{rec:?}");
    assert_eq!(starts[1].agent, stays);
    assert_within(
        "reclaim of a restored lease whose agent did not return",
        restarted_at,
        starts[1].nanos,
        grace + SLACK,
    );
    for t in ["lib:build", "api:build", "web:build", "e2e:test"] {
        assert_eq!(lines(&rec, t, "end").len(), 1, "{t} finished once: {rec:?}");
    }

    let events = fleet.events(&run, Duration::from_secs(2));
    assert_each_succeeded_once(
        &events,
        &["lib:build", "api:build", "web:build", "e2e:test"],
        &fleet.logs(),
    );
    complete_run(&fleet, "restart-1");
    let status = fleet
        .agent_proc(&stays)
        .wait_for_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        fleet.logs()
    );
}

#[test]
fn an_agent_cut_off_by_a_stalled_network_loses_its_lease_and_its_late_result_is_refused() {
    let _serial = serial();
    let mut fleet = Fleet::with_config("chaos-stall", config());
    let (d, record) = (dir(&fleet), fleet.dir.join("record.txt"));
    fleet.dir.write(
        "tasks.yaml",
        &format!(
            "tasks:\n  - {{ id: \"app:build\", command: '{}' }}\n",
            task(&d, &record, 1.0)
        ),
    );
    let proxy = Proxy::start(fleet.grpc);
    fleet.agent_via(&proxy.url(), "cut-off", "linux", 1, Some("stall-1"));
    let run = start_run(&fleet, "stall-1", &[]);
    let exec = Exec::start(&fleet, "stall-1");
    wait_for_start(&fleet, &record, "app:build", Some("cut-off"));
    fleet.agent("healthy", "linux", 1, Some("stall-1"));
    std::thread::sleep(Duration::from_millis(300));

    let stalled_at = now_nanos();
    proxy.stall();
    // The task ends on the cut-off agent during the stall; its result waits in the network.
    let again = wait_for_start(&fleet, &record, "app:build", Some("healthy"));
    let took = assert_within(
        "reclaim after a network stall",
        stalled_at,
        again.nanos,
        LEASE_TIMEOUT + SLACK,
    );
    assert!(
        took >= LEASE_TIMEOUT - Duration::from_millis(300),
        "not before the timeout: {took:?}"
    );
    assert_eq!(
        lines(&read_record(&record), "app:build", "end")
            .iter()
            .filter(|l| l.agent == "cut-off")
            .count(),
        1,
        "the cut-off agent finished its copy during the stall"
    );
    proxy.heal();

    let out = exec.finish(Duration::from_secs(30), &fleet);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", fleet.logs());
    let events = fleet.events(&run, Duration::from_secs(2));
    assert_each_succeeded_once(&events, &["app:build"], &fleet.logs());
    assert_eq!(successes(&events)["app:build"], ["healthy"]);
    let why = requeues(&events, "app:build");
    assert!(
        why.len() == 1 && why[0].contains("sent no heartbeat for 2s"),
        "{why:?}"
    );
    // The late result arrives once the network heals, and is refused.
    eventually(
        Duration::from_secs(10),
        "the late result to be refused",
        || {
            fleet
                .http_get("/metrics")
                .contains("drover_results_refused_total 1")
                .then_some(())
        },
    );
    assert!(
        fleet.coordinator_log().contains("result refused"),
        "{}",
        fleet.logs()
    );
    // The cut-off agent is alive again and stops with the run like the others.
    complete_run(&fleet, "stall-1");
    for name in ["cut-off", "healthy"] {
        let status = fleet
            .agent_proc(name)
            .wait_for_exit(Duration::from_secs(10));
        assert!(
            status.is_some_and(|s| s.success()),
            "{name}: {status:?}\n{}",
            fleet.logs()
        );
    }
}

#[test]
fn sigterm_drains_an_agent_its_task_finishes_on_the_first_attempt_and_it_exits_zero() {
    let _serial = serial();
    let mut fleet = Fleet::with_config("chaos-drain", config());
    let (d, record) = (dir(&fleet), fleet.dir.join("record.txt"));
    fleet.dir.write(
        "tasks.yaml",
        &format!(
            r#"tasks:
  - {{ id: "app:build", command: '{slow}' }}
  - {{ id: "app:lint", command: '{quick}', dependsOn: ["app:build"] }}
"#,
            slow = task(&d, &record, 1.5),
            quick = task(&d, &record, 0.2),
        ),
    );
    fleet.agent("drained", "linux", 1, Some("drain-1"));
    let run = start_run(&fleet, "drain-1", &[]);
    let exec = Exec::start(&fleet, "drain-1");
    wait_for_start(&fleet, &record, "app:build", Some("drained"));
    fleet.agent("other", "linux", 1, Some("drain-1"));
    fleet.agent_proc("drained").signal("TERM");

    let status = fleet
        .agent_proc("drained")
        .wait_for_exit(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        fleet.logs()
    );
    let out = exec.finish(Duration::from_secs(30), &fleet);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        fleet.logs()
    );

    let rec = read_record(&record);
    assert_eq!(lines(&rec, "app:build", "start").len(), 1, "{rec:?}");
    assert_eq!(lines(&rec, "app:build", "end")[0].agent, "drained");
    assert_eq!(
        lines(&rec, "app:lint", "start")[0].agent,
        "other",
        "a draining agent takes nothing new"
    );
    let events = fleet.events(&run, Duration::from_secs(2));
    assert_each_succeeded_once(&events, &["app:build", "app:lint"], &fleet.logs());
    assert!(requeues(&events, "app:build").is_empty());
    let attempt = events.iter().find_map(|e| match &e.event {
        Some(Event::TaskFinished(f)) if f.task_id == "app:build" => Some(f.attempt),
        _ => None,
    });
    assert_eq!(attempt, Some(1), "no attempt charged");
}

#[test]
fn a_second_sigterm_kills_the_task_group_and_hands_the_lease_back_at_once() {
    let _serial = serial();
    let mut fleet = Fleet::with_config("chaos-kill-term", config());
    let (d, record) = (dir(&fleet), fleet.dir.join("record.txt"));
    // Long on the agent that is shut down, short elsewhere.
    let work = format!(
        "echo $$ > {d}/pgid.$DROVER_TASK_ID.$DROVER_AGENT_NAME; {}",
        recorded(&record, 0.0, "true").replace(
            "sleep 0;",
            "if [ \"$DROVER_AGENT_NAME\" = doomed ]; then sleep 30; fi;"
        ),
        d = d.display()
    );
    assert!(work.contains("sleep 30"), "{work}");
    fleet.dir.write(
        "tasks.yaml",
        &format!("tasks:\n  - {{ id: \"app:build\", command: '{work}' }}\n"),
    );
    fleet.agent("doomed", "linux", 1, Some("term-1"));
    let run = start_run(&fleet, "term-1", &[]);
    let exec = Exec::start(&fleet, "term-1");
    wait_for_start(&fleet, &record, "app:build", Some("doomed"));
    fleet.agent("other", "linux", 1, Some("term-1"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(group_alive(&d, "app:build", "doomed"));

    fleet.agent_proc("doomed").signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    let killed_at = now_nanos();
    fleet.agent_proc("doomed").signal("TERM");

    let again = wait_for_start(&fleet, &record, "app:build", Some("other"));
    assert_within(
        "hand-back after a second SIGTERM",
        killed_at,
        again.nanos,
        SLACK,
    );
    let status = fleet
        .agent_proc("doomed")
        .wait_for_exit(Duration::from_secs(5));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "the agent exits at once, non-zero: it killed a task"
    );
    eventually(
        Duration::from_secs(5),
        "the task's process group to be gone",
        || (!group_alive(&d, "app:build", "doomed")).then_some(()),
    );
    let out = exec.finish(Duration::from_secs(30), &fleet);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        fleet.logs()
    );
    let events = fleet.events(&run, Duration::from_secs(2));
    assert_each_succeeded_once(&events, &["app:build"], &fleet.logs());
    let why = requeues(&events, "app:build");
    assert!(why.len() == 1 && why[0].contains("shut down"), "{why:?}");
    let attempt = events.iter().find_map(|e| match &e.event {
        Some(Event::TaskFinished(f)) if f.task_id == "app:build" => Some(f.attempt),
        _ => None,
    });
    assert_eq!(attempt, Some(1), "a handed-back lease is not charged");
}

#[test]
fn a_task_that_times_out_is_killed_retried_on_another_agent_and_reported_flaky() {
    let _serial = serial();
    let mut fleet = Fleet::with_config("chaos-timeout", config());
    let (d, record) = (dir(&fleet), fleet.dir.join("record.txt"));
    let work = format!(
        "echo $$ > {d}/pgid.$DROVER_TASK_ID.$DROVER_AGENT_NAME; {}",
        recorded(&record, 0.0, "true").replace(
            "sleep 0;",
            "if [ \"$DROVER_AGENT_NAME\" = stuck ]; then sleep 30; fi;"
        ),
        d = d.display()
    );
    fleet.dir.write(
        "tasks.yaml",
        &format!(
            "tasks:\n  - {{ id: \"app:test\", command: '{work}', estimate: 10s }}\n  - {{ id: \"app:lint\", command: 'sleep 5', timeout: 500ms, estimate: 1s }}\n"
        ),
    );
    fleet.agent("stuck", "linux", 1, Some("timeout-1"));
    let run = start_run(
        &fleet,
        "timeout-1",
        &["--retries", "1", "--default-timeout", "1s"],
    );
    let exec = Exec::start(&fleet, "timeout-1");
    wait_for_start(&fleet, &record, "app:test", Some("stuck"));
    // Two slots: a free one when app:test's retry looks for an agent other than `stuck`.
    fleet.agent("fine", "linux", 2, Some("timeout-1"));

    let out = exec.finish(Duration::from_secs(30), &fleet);
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "app:lint times out twice: {stdout}");
    assert!(stdout.contains("FLAKY app:test"), "{stdout}");
    assert!(stdout.contains("timed out after 1s"), "{stdout}");
    assert!(stdout.contains("timed out after 500ms"), "{stdout}");
    eventually(
        Duration::from_secs(5),
        "the timed-out task's process group to be gone",
        || (!group_alive(&d, "app:test", "stuck")).then_some(()),
    );

    let events = fleet.events(&run, Duration::from_secs(2));
    let finished: Vec<(String, bool, String)> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::TaskFinished(f)) if f.task_id == "app:test" => {
                Some((f.agent.clone(), f.retrying, f.reason.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), 2, "{finished:?}");
    assert_eq!(finished[0].0, "stuck");
    assert!(finished[0].1 && finished[0].2.contains("timed out after 1s"));
    assert_eq!(finished[1].0, "fine", "the retry ran on another agent");
    assert_eq!(successes(&events)["app:test"].len(), 1);
    assert!(!successes(&events).contains_key("app:lint"));
}

#[test]
fn stop_agents_on_failure_starts_nothing_new_lets_running_tasks_finish_and_stops_the_agents() {
    let _serial = serial();
    let mut fleet = Fleet::with_config("chaos-stop", config());
    let (d, record) = (dir(&fleet), fleet.dir.join("record.txt"));
    fleet.dir.write(
        "tasks.yaml",
        &format!(
            r#"tasks:
  - {{ id: "bad:test", command: '{bad}', estimate: 10s }}
  - {{ id: "long:test", command: '{long}', estimate: 10s }}
  - {{ id: "later:test", command: '{quick}', estimate: 1s }}
  - {{ id: "after:test", command: '{quick}', dependsOn: ["long:test"] }}
"#,
            bad = recorded(&record, 0.3, "exit 1"),
            long = task(&d, &record, 1.5),
            quick = task(&d, &record, 0.1),
        ),
    );
    fleet.agent("s1", "linux", 1, Some("stop-1"));
    fleet.agent("s2", "linux", 1, Some("stop-1"));
    let run = start_run(&fleet, "stop-1", &["--stop-agents-on-failure"]);
    let exec = Exec::start(&fleet, "stop-1");
    let out = exec.finish(Duration::from_secs(30), &fleet);
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("FAILED bad:test"), "{stdout}");

    let rec = read_record(&record);
    assert_eq!(
        lines(&rec, "long:test", "end").len(),
        1,
        "running tasks finish: {rec:?}"
    );
    assert!(lines(&rec, "later:test", "start").is_empty(), "{rec:?}");
    assert!(lines(&rec, "after:test", "start").is_empty(), "{rec:?}");
    // The run ends on its own, and its CI agents exit 0 without complete-ci-run.
    for name in ["s1", "s2"] {
        let status = fleet
            .agent_proc(name)
            .wait_for_exit(Duration::from_secs(10));
        assert!(
            status.is_some_and(|s| s.success()),
            "{name}: {status:?}\n{}",
            fleet.logs()
        );
    }
    let events = fleet.events(&run, Duration::from_secs(2));
    let done = events.iter().find_map(|e| match &e.event {
        Some(Event::RunDone(d)) => Some((d.success, d.reason.clone())),
        _ => None,
    });
    let (success, reason) = done.expect("the run ended");
    assert!(!success);
    assert!(
        reason.contains("stops after the failure of `bad:test`"),
        "{reason}"
    );
    assert_eq!(successes(&events).len(), 1, "only long:test succeeded");
}
