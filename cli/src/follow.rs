//! Following a submission on the main job: a progress line per finished task, the output of a
//! failed task as soon as it fails, and a summary at the end. A broken stream (coordinator
//! restart, network) is resumed from the last event seen, so nothing is printed twice or lost.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use drover_proto::v1 as pb;
use drover_scheduler::TaskSpec;
use drover_scheduler::duration::format_duration;
use pb::run_event::Event;
use pb::run_service_client::RunServiceClient;

use crate::ci_log::{CiLog, TaskBlock, next_section, now_unix};
use crate::client::Conn;
use crate::error::CliError;

/// How long the follower keeps trying to reach a coordinator that went away.
const RECONNECT_FOR: Duration = Duration::from_secs(300);
/// The largest run event the follower takes (a submission's end lists all its tasks).
const MAX_EVENT: usize = 1 << 30;
/// Tasks per message of a streamed submission: well under gRPC's 4 MiB for common tasks.
const TASKS_PER_MESSAGE: usize = 5_000;

pub struct Follow {
    pub run_id: String,
    pub submission: u64,
    pub total: usize,
    /// Print every task's output as it comes, prefixed with the task id.
    pub stream_output: bool,
}

/// The end of a submission as the main job saw it.
pub struct Outcome {
    pub success: bool,
    pub tasks: Vec<pb::TaskSummary>,
}

/// Each task's last known status, and how many tasks are in each, kept as events come (a
/// progress line costs the same at a million tasks as at ten).
#[derive(Default)]
struct Counts {
    state: HashMap<String, pb::TaskStatus>,
    running: usize,
    done: usize,
    failed: usize,
}

impl Counts {
    fn set(&mut self, task: &str, status: pb::TaskStatus) {
        let before = match self.state.get_mut(task) {
            Some(s) => std::mem::replace(s, status),
            None => {
                self.state.insert(task.to_string(), status);
                pb::TaskStatus::Unspecified
            }
        };
        self.count(before, -1);
        self.count(status, 1);
    }

    fn count(&mut self, status: pb::TaskStatus, by: isize) {
        let add = |n: &mut usize| *n = n.checked_add_signed(by).expect("counted once");
        match status {
            pb::TaskStatus::Running => add(&mut self.running),
            pb::TaskStatus::Succeeded | pb::TaskStatus::Skipped => add(&mut self.done),
            pb::TaskStatus::Failed => {
                add(&mut self.done);
                add(&mut self.failed);
            }
            _ => {}
        }
    }

    fn line(&self, total: usize) -> String {
        format!(
            "{}/{total} done, {} running, {} queued, {} failed",
            self.done,
            self.running,
            total.saturating_sub(self.done + self.running),
            self.failed
        )
    }
}

/// A graph to submit to a run.
pub struct Submit<'a> {
    /// The run, or (when empty) the newest run of `ci_execution_id`.
    pub run_id: String,
    pub ci_execution_id: String,
    pub tasks: &'a [TaskSpec],
    /// A label for the submission, e.g. the command that made it.
    pub label: String,
    pub stream_output: bool,
}

/// The main job's one way to run a graph (`exec`, `nx`, `demo`): submit it, say so with
/// `announce`, and follow it to its end.
pub async fn submit_and_follow(
    channel: Conn,
    submit: Submit<'_>,
    announce: impl FnOnce(&pb::SubmitGraphResponse),
) -> Result<(pb::SubmitGraphResponse, Outcome), CliError> {
    let mut client = RunServiceClient::new(channel.clone());
    // In pieces, whatever the graph's size; the coordinator takes it in whole at the end.
    let mut first = Some((submit.run_id, submit.ci_execution_id, submit.label));
    let mut pieces: Vec<pb::SubmitGraphRequest> = submit
        .tasks
        .chunks(TASKS_PER_MESSAGE)
        .map(|chunk| {
            let (run_id, ci_execution_id, label) = first.take().unwrap_or_default();
            pb::SubmitGraphRequest {
                run_id,
                tasks: chunk
                    .iter()
                    .map(drover_coordinator::task_to_proto)
                    .collect(),
                label,
                ci_execution_id,
            }
        })
        .collect();
    if let Some((run_id, ci_execution_id, label)) = first {
        // No tasks: the coordinator says what is wrong with that.
        pieces.push(pb::SubmitGraphRequest {
            run_id,
            tasks: Vec::new(),
            label,
            ci_execution_id,
        });
    }
    let submitted = client
        .submit_graph_stream(tokio_stream::iter(pieces))
        .await
        .map_err(|s| CliError::rpc("submitting the graph", s))?
        .into_inner();
    announce(&submitted);
    let outcome = follow(
        channel,
        Follow {
            run_id: submitted.run_id.clone(),
            submission: submitted.submission_id,
            total: submit.tasks.len(),
            stream_output: submit.stream_output,
        },
    )
    .await?;
    Ok((submitted, outcome))
}

pub async fn follow(channel: Conn, f: Follow) -> Result<Outcome, CliError> {
    // The submission's last event lists every task: a million of them are tens of MiB.
    let mut client = RunServiceClient::new(channel).max_decoding_message_size(MAX_EVENT);
    let mut counts = Counts::default();
    let mut next_seq = 1;
    let started = Instant::now();
    let mut last_contact = Instant::now();
    let mut backoff = Duration::from_millis(200);
    let mut out = std::io::stdout();
    let ci = CiLog::from_env();
    let mut lines = Lines::default();
    loop {
        let request = pb::WatchRunRequest {
            run_id: f.run_id.clone(),
            submission_id: f.submission,
            from_seq: next_seq,
            all_output: f.stream_output,
            ci_execution_id: String::new(),
        };
        let mut stream = match client.watch_run(request).await {
            Ok(r) => r.into_inner(),
            Err(status) if is_transient(&status) && last_contact.elapsed() < RECONNECT_FOR => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            Err(status) => return Err(CliError::rpc("following the run", status)),
        };
        loop {
            let event = match stream.message().await {
                Ok(Some(e)) => e,
                Ok(None) | Err(_) => break, // resume from next_seq
            };
            last_contact = Instant::now();
            backoff = Duration::from_millis(200);
            if event.seq == 0 {
                // Live output (unnumbered), when asked for with --stream-output.
                if let Some(Event::TaskOutput(o)) = &event.event {
                    lines.add(&mut out, &o.task_id, &o.data);
                    let _ = out.flush();
                }
                continue;
            }
            if event.seq < next_seq {
                continue;
            }
            next_seq = event.seq + 1;
            let Some(ev) = event.event else { continue };
            match ev {
                Event::TaskStarted(s) => {
                    counts.set(&s.task_id, pb::TaskStatus::Running);
                }
                Event::TaskOutput(_) => {} // (only ever live, above)
                Event::TaskFinished(t) => {
                    lines.end(&mut out, &t.task_id);
                    let status =
                        pb::TaskStatus::try_from(t.status).unwrap_or(pb::TaskStatus::Unspecified);
                    if t.retrying {
                        counts.set(&t.task_id, pb::TaskStatus::Queued);
                        let _ = writeln!(
                            out,
                            "[{}] RETRY {} failed on {} ({}); trying again",
                            counts.line(f.total),
                            t.task_id,
                            printable(&t.agent),
                            printable(&t.reason)
                        );
                        continue;
                    }
                    counts.set(&t.task_id, status);
                    let (word, detail) = match status {
                        pb::TaskStatus::Succeeded => (
                            if t.flaky { "FLAKY" } else { "ok" },
                            format!(
                                "on {} in {}",
                                t.agent,
                                format_duration(Duration::from_millis(t.duration_ms))
                            ),
                        ),
                        pb::TaskStatus::Failed => (
                            "FAILED",
                            format!(
                                "on {}: {}",
                                printable(agent_or_none(&t.agent)),
                                printable(&t.reason)
                            ),
                        ),
                        _ => ("skipped", printable(&t.reason)),
                    };
                    let _ = writeln!(
                        out,
                        "[{}] {word} {} {detail}",
                        counts.line(f.total),
                        t.task_id
                    );
                    if status == pb::TaskStatus::Failed && !f.stream_output {
                        // Every failure's output, read from its log, however close together
                        // tasks fail, under a header naming the task and its agent.
                        let log = task_log(&mut client.clone(), &f.run_id, &t.task_id, 0).await;
                        let title = format!("{} failed {detail}", t.task_id);
                        let _ = ci.write(
                            &mut out,
                            &TaskBlock {
                                task: &t.task_id,
                                title: &title,
                                body: &log,
                                failure: Some(&title),
                                section: next_section(),
                                now_unix: now_unix(),
                            },
                        );
                    }
                }
                Event::TaskRequeued(r) => {
                    lines.end(&mut out, &r.task_id);
                    counts.set(&r.task_id, pb::TaskStatus::Queued);
                    let _ = writeln!(
                        out,
                        "[{}] requeued {}: {}",
                        counts.line(f.total),
                        r.task_id,
                        printable(&r.reason)
                    );
                }
                Event::Waiting(w) => {
                    let _ = writeln!(out, "waiting: {} ({})", some_of(&w.task_ids), w.reason);
                }
                Event::SubmissionDone(done) => {
                    lines.end_all(&mut out);
                    print_summary(&mut out, &done, started.elapsed());
                    return Ok(Outcome {
                        success: done.success,
                        tasks: done.tasks,
                    });
                }
                Event::RunDone(r) => {
                    if event.submission_id == 0 || event.submission_id == f.submission {
                        let _ = writeln!(out, "the run ended: {}", r.reason);
                    }
                }
            }
            let _ = out.flush();
        }
        if last_contact.elapsed() >= RECONNECT_FOR {
            return Err(CliError::Io(format!(
                "lost the coordinator for {}; the run may still be going",
                format_duration(RECONNECT_FOR)
            )));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Streamed output as whole lines, each prefixed with its task: a line that arrives in pieces
/// waits for its end (or its task's end) to be printed once.
#[derive(Default)]
struct Lines {
    partial: HashMap<String, Vec<u8>>,
}

/// A line longer than this is printed in pieces.
const LONGEST_LINE: usize = 64 * 1024;

impl Lines {
    fn add(&mut self, out: &mut impl Write, task: &str, data: &[u8]) {
        let buf = self.partial.entry(task.to_string()).or_default();
        buf.extend_from_slice(data);
        let whole = match buf.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if buf.len() > LONGEST_LINE => buf.len(),
            None => return,
        };
        let rest = buf.split_off(whole);
        let done = std::mem::replace(buf, rest);
        print_lines(out, task, &done);
        if buf.is_empty() {
            self.partial.remove(task);
        }
    }

    fn end(&mut self, out: &mut impl Write, task: &str) {
        if let Some(rest) = self.partial.remove(task) {
            print_lines(out, task, &rest);
        }
    }

    fn end_all(&mut self, out: &mut impl Write) {
        let mut tasks: Vec<String> = self.partial.keys().cloned().collect();
        tasks.sort();
        for t in tasks {
            self.end(out, &t);
        }
    }
}

fn print_lines(out: &mut impl Write, task: &str, data: &[u8]) {
    for line in String::from_utf8_lossy(data).lines() {
        let _ = writeln!(out, "{task} | {line}");
    }
}

/// A task's whole log (one attempt, or with 0 every attempt; bounded by the coordinator's
/// --task-log-limit). A read that fails says so in the log's place rather than stopping the
/// follow.
pub async fn task_log(
    client: &mut RunServiceClient<Conn>,
    run_id: &str,
    task: &str,
    attempt: u32,
) -> Vec<u8> {
    let mut log = Vec::new();
    let mut from = 0;
    loop {
        let request = pb::GetTaskLogRequest {
            run_id: run_id.to_string(),
            task_id: task.to_string(),
            from,
            ci_execution_id: String::new(),
            attempt,
        };
        match client.get_task_log(request).await {
            Ok(r) => {
                let r = r.into_inner();
                log.extend_from_slice(&r.data);
                if r.data.is_empty() || r.next >= r.size {
                    return log;
                }
                from = r.next;
            }
            Err(status) => {
                log.extend_from_slice(
                    format!(
                        "[drover] could not read the output of {task}: {}\n",
                        status.message()
                    )
                    .as_bytes(),
                );
                return log;
            }
        }
    }
}

/// Worth retrying: the coordinator is restarting or the connection broke. (`NotFound` is not:
/// a restarted coordinator restores every run before it serves, so the run is gone.)
fn is_transient(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

/// Text from agents (names, reasons) as it may be printed on a terminal: control characters
/// escaped, so none can move the cursor, recolour or retitle the main job's log.
pub(crate) fn printable(text: &str) -> String {
    if text.chars().any(|c| c.is_control() && c != '\t') {
        text.chars()
            .map(|c| {
                if c.is_control() && c != '\t' {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    } else {
        text.to_string()
    }
}

/// The first few of a list of task ids, and how many more (a wide graph waits by thousands).
fn some_of(ids: &[String]) -> String {
    const SHOWN: usize = 10;
    if ids.len() <= SHOWN {
        ids.join(", ")
    } else {
        format!(
            "{}, and {} more",
            ids[..SHOWN].join(", "),
            ids.len() - SHOWN
        )
    }
}

fn agent_or_none(agent: &str) -> &str {
    if agent.is_empty() { "no agent" } else { agent }
}

fn print_summary(out: &mut impl Write, done: &pb::SubmissionDoneEvent, took: Duration) {
    let with = |s: pb::TaskStatus| done.tasks.iter().filter(move |t| t.status == s as i32);
    let succeeded = with(pb::TaskStatus::Succeeded).count();
    let failed: Vec<&pb::TaskSummary> = with(pb::TaskStatus::Failed).collect();
    let skipped: Vec<&pb::TaskSummary> = with(pb::TaskStatus::Skipped).collect();
    let flaky: Vec<&pb::TaskSummary> = done.tasks.iter().filter(|t| t.flaky).collect();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Summary: {succeeded} succeeded, {} failed, {} skipped ({} tasks) in {}",
        failed.len(),
        skipped.len(),
        done.tasks.len(),
        format_duration(took)
    );
    let mut section =
        |title: &str, tasks: &[&pb::TaskSummary], why: &dyn Fn(&pb::TaskSummary) -> String| {
            if tasks.is_empty() {
                return;
            }
            let _ = writeln!(out, "{title}:");
            for t in tasks {
                let _ = writeln!(out, "  {}  {}", t.task_id, why(t));
            }
        };
    section("Failed", &failed, &|t| {
        format!(
            "{} (on {}, {} attempt(s))",
            t.reason,
            agent_or_none(&t.agent),
            t.attempts
        )
    });
    section("Skipped", &skipped, &|t| t.reason.clone());
    section("Flaky (failed, then passed on a retry)", &flaky, &|t| {
        format!("{} attempts", t.attempts)
    });
    let _ = out.flush();
}

#[cfg(test)]
mod printable_tests {
    #[test]
    fn control_characters_from_agents_are_escaped() {
        assert_eq!(super::printable("exit code 3"), "exit code 3");
        assert_eq!(
            super::printable("\u{1b}]0;owned\u{7}boom"),
            "\\u{1b}]0;owned\\u{7}boom"
        );
    }

    #[test]
    fn a_long_wait_list_is_cut_short() {
        let ids: Vec<String> = (0..1000).map(|i| format!("t{i}")).collect();
        assert_eq!(super::some_of(&ids[..2]), "t0, t1");
        assert_eq!(
            super::some_of(&ids),
            "t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, and 990 more"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_output_is_printed_in_whole_lines_whatever_its_pieces() {
        let mut out = Vec::new();
        let mut lines = Lines::default();
        lines.add(&mut out, "a", b"drover: ");
        lines.add(&mut out, "b", b"one\ntw");
        lines.add(&mut out, "a", b"fetching\n\nnext");
        lines.add(&mut out, "b", b"o\n");
        lines.end(&mut out, "b");
        lines.end_all(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "b | one\na | drover: fetching\na | \nb | two\na | next\n"
        );
    }
}
