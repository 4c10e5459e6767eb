//! Every event of a run, numbered, replayable from any point, and fanned out to watchers.
//!
//! A watcher that cannot keep up is dropped; its client reconnects with the next sequence
//! number it needs and loses nothing. Task output is not among the numbered events: it is
//! kept in the task logs ([`crate::logstore`]), and sent live, unnumbered (`seq` 0), to
//! watchers that asked for all output; a failed task's output is read from its log by the
//! client that wants it, so numbered events arrive in order, each once.

use drover_proto::v1 as pb;
use pb::run_event::Event;
use tokio::sync::mpsc;

/// One recorded event and the submissions it belongs to (empty: every submission).
struct Entry {
    event: pb::RunEvent,
    submissions: Vec<u64>,
}

/// What a watcher asked for.
#[derive(Clone, Copy, Debug)]
pub struct Filter {
    /// `None`: the whole run.
    pub submission: Option<u64>,
    pub all_output: bool,
}

impl Filter {
    fn wants(&self, entry: &Entry) -> bool {
        match self.submission {
            None => true,
            Some(s) => entry.submissions.is_empty() || entry.submissions.contains(&s),
        }
    }

    /// The last event this watcher needs: its submission is done, or the run is.
    fn is_last(&self, event: &pb::RunEvent) -> bool {
        match &event.event {
            Some(Event::RunDone(_)) => true,
            Some(Event::SubmissionDone(_)) => self.submission == Some(event.submission_id),
            _ => false,
        }
    }
}

struct Watcher {
    filter: Filter,
    tx: mpsc::Sender<Result<pb::RunEvent, tonic::Status>>,
}

/// The capacity of a watcher's queue before it is dropped as too slow.
pub const WATCHER_QUEUE: usize = 4096;

#[derive(Default)]
pub struct RunLog {
    entries: Vec<Entry>,
    watchers: Vec<Watcher>,
    /// Entries before this index have been sent to watchers. Later ones wait until they are
    /// stored, so that a sequence number a watcher saw survives a coordinator restart.
    published: usize,
}

impl RunLog {
    pub fn next_seq(&self) -> u64 {
        self.entries.last().map_or(1, |e| e.event.seq + 1)
    }

    /// Whether a watcher wants live output.
    pub fn streams_output(&self) -> bool {
        self.watchers.iter().any(|w| w.filter.all_output)
    }

    /// Sends an unnumbered output event to the watchers that stream output and want it.
    pub fn live(&mut self, event: pb::RunEvent, submissions: &[u64]) {
        let entry = Entry {
            event,
            submissions: submissions.to_vec(),
        };
        self.watchers.retain(|w| {
            if !w.filter.all_output || !w.filter.wants(&entry) {
                return true;
            }
            // Gone or too slow: dropped; it reconnects from its last numbered event.
            w.tx.try_send(Ok(entry.event.clone())).is_ok()
        });
    }

    /// A log of events recorded before a restart; all of them count as sent.
    pub fn restore(events: Vec<(pb::RunEvent, Vec<u64>)>) -> RunLog {
        let mut entries: Vec<Entry> = events
            .into_iter()
            .map(|(event, submissions)| Entry { event, submissions })
            .collect();
        entries.sort_by_key(|e| e.event.seq);
        RunLog {
            published: entries.len(),
            entries,
            watchers: Vec::new(),
        }
    }

    /// Records an event and sends it to the watchers that want it.
    #[cfg(test)]
    pub fn push(&mut self, event: pb::RunEvent, submissions: Vec<u64>) {
        self.record(event, submissions);
        self.publish();
    }

    /// Numbers and records an event; watchers get it at the next [`publish`](Self::publish).
    pub fn record(&mut self, mut event: pb::RunEvent, submissions: Vec<u64>) -> &pb::RunEvent {
        event.seq = self.next_seq();
        if event.submission_id == 0 {
            event.submission_id = submissions.first().copied().unwrap_or(0);
        }
        self.entries.push(Entry { event, submissions });
        &self.entries[self.entries.len() - 1].event
    }

    /// Sends every recorded event not sent yet to the watchers that want it.
    #[cfg(test)]
    pub fn publish(&mut self) {
        self.publish_to(self.entries.len());
    }

    /// Events recorded so far (published or not).
    pub fn recorded(&self) -> usize {
        self.entries.len()
    }

    /// Sends the recorded events before index `upto` not sent yet to the watchers that want
    /// them (the later ones are not stored yet).
    pub fn publish_to(&mut self, upto: usize) {
        let upto = upto.min(self.entries.len());
        while self.published < upto {
            self.published += 1;
            self.fan_out(self.published - 1);
        }
    }

    fn fan_out(&mut self, index: usize) {
        let entries = &self.entries;
        self.watchers.retain(|w| {
            let entry = &entries[index];
            if !w.filter.wants(entry) {
                return true;
            }
            for e in to_send(entries, index, w.filter) {
                if w.tx.try_send(Ok(e)).is_err() {
                    return false; // gone or too slow: it reconnects from its last seq
                }
            }
            !w.filter.is_last(&entry.event)
        });
    }

    /// The attempts started so far that `filter` wants, in the order they started, each with
    /// whether it has finished (recorded events, published or not).
    pub fn started(&self, filter: Filter) -> Vec<(String, u32, bool)> {
        let mut out: Vec<(String, u32, bool)> = Vec::new();
        for e in self.entries.iter().filter(|e| filter.wants(e)) {
            match &e.event.event {
                Some(Event::TaskStarted(s)) => out.push((s.task_id.clone(), s.attempt, false)),
                Some(Event::TaskFinished(f)) => {
                    if let Some(a) = out
                        .iter_mut()
                        .rev()
                        .find(|a| a.0 == f.task_id && a.1 == f.attempt)
                    {
                        a.2 = true;
                    }
                }
                Some(Event::TaskRequeued(r)) => {
                    if let Some(a) = out.iter_mut().rev().find(|a| a.0 == r.task_id) {
                        a.2 = true;
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Adds a watcher: everything recorded from `from_seq` on is queued now, the rest as it
    /// comes. Returns `false` when the watcher got everything it will ever get.
    pub fn watch(
        &mut self,
        filter: Filter,
        from_seq: u64,
        tx: mpsc::Sender<Result<pb::RunEvent, tonic::Status>>,
    ) -> bool {
        let start = self.entries.partition_point(|e| e.event.seq < from_seq);
        for index in start..self.published {
            let entry = &self.entries[index];
            if !filter.wants(entry) {
                continue;
            }
            for e in to_send(&self.entries, index, filter) {
                if tx.try_send(Ok(e)).is_err() {
                    return false;
                }
            }
            if filter.is_last(&entry.event) {
                return false;
            }
        }
        // An ended run has nothing more to say: a watch from past its end ends at once.
        if self.ended_at().is_some() && start >= self.published {
            return false;
        }
        self.watchers.push(Watcher { filter, tx });
        true
    }
}

/// One attempt of a task as the run's events tell it, for the timeline.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Attempt {
    pub task: String,
    pub attempt: u32,
    pub agent: String,
    pub template: String,
    pub start_ms: u64,
    pub end_ms: Option<u64>,
    /// running, succeeded, failed, requeued or cancelled.
    pub status: &'static str,
}

impl RunLog {
    /// Every attempt that started, in the order they started.
    pub fn attempts(&self) -> Vec<Attempt> {
        let mut out: Vec<Attempt> = Vec::new();
        for e in &self.entries {
            let at = e.event.at_ms;
            match &e.event.event {
                Some(Event::TaskStarted(s)) => out.push(Attempt {
                    task: s.task_id.clone(),
                    attempt: s.attempt,
                    agent: s.agent.clone(),
                    template: s.launch_template.clone(),
                    start_ms: at,
                    end_ms: None,
                    status: "running",
                }),
                Some(Event::TaskFinished(f)) => {
                    if let Some(i) = out.iter().rposition(|a| {
                        a.task == f.task_id && a.attempt == f.attempt && a.end_ms.is_none()
                    }) {
                        let a = &mut out[i];
                        a.end_ms = Some(at);
                        a.status = if f.reason.starts_with("cancelled by ") {
                            "cancelled"
                        } else if f.status == pb::TaskStatus::Succeeded as i32 {
                            "succeeded"
                        } else {
                            "failed"
                        };
                    }
                }
                Some(Event::TaskRequeued(r)) => {
                    if let Some(i) = out
                        .iter()
                        .rposition(|a| a.task == r.task_id && a.end_ms.is_none())
                    {
                        out[i].end_ms = Some(at);
                        out[i].status = "requeued";
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// When the run ended, if it has.
    pub fn ended_at(&self) -> Option<u64> {
        self.entries.iter().rev().find_map(|e| match e.event.event {
            Some(Event::RunDone(_)) => Some(e.event.at_ms),
            _ => None,
        })
    }
}

/// What a watcher gets for the entry at `index`.
fn to_send(entries: &[Entry], index: usize, _filter: Filter) -> Vec<pb::RunEvent> {
    vec![entries[index].event.clone()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(task: &str, data: &str) -> pb::RunEvent {
        pb::RunEvent {
            event: Some(Event::TaskOutput(pb::TaskOutputEvent {
                task_id: task.into(),
                stream: pb::OutputStream::Stdout as i32,
                data: data.as_bytes().to_vec(),
                attempt: 1,
            })),
            ..Default::default()
        }
    }

    fn finished(task: &str, status: pb::TaskStatus) -> pb::RunEvent {
        pb::RunEvent {
            event: Some(Event::TaskFinished(pb::TaskFinishedEvent {
                task_id: task.into(),
                status: status as i32,
                attempt: 1,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn drain(rx: &mut mpsc::Receiver<Result<pb::RunEvent, tonic::Status>>) -> Vec<pb::RunEvent> {
        let mut v = Vec::new();
        while let Ok(e) = rx.try_recv() {
            v.push(e.unwrap());
        }
        v
    }

    #[test]
    fn numbered_events_come_in_order_once_and_output_only_live_to_streamers() {
        let mut log = RunLog::default();
        let filter = |all_output| Filter {
            submission: Some(1),
            all_output,
        };
        let (tx, mut quiet) = mpsc::channel(16);
        assert!(log.watch(filter(false), 1, tx));
        let (tx, mut streaming) = mpsc::channel(16);
        assert!(log.watch(filter(true), 1, tx));
        log.live(output("bad:build", "boom\n"), &[1]);
        log.push(finished("ok:build", pb::TaskStatus::Succeeded), vec![1]);
        log.live(output("other:build", "x\n"), &[1]);
        log.push(finished("bad:build", pb::TaskStatus::Failed), vec![1]);
        let seqs = |events: Vec<pb::RunEvent>| events.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(
            seqs(drain(&mut quiet)),
            [1, 2],
            "no output, numbered in order"
        );
        assert_eq!(
            seqs(drain(&mut streaming)),
            [0, 1, 0, 2],
            "live output is unnumbered"
        );
    }

    #[test]
    fn a_watch_from_past_the_end_of_an_ended_run_ends_at_once() {
        let mut log = RunLog::default();
        log.push(finished("a", pb::TaskStatus::Succeeded), vec![1]);
        let done = pb::RunEvent {
            event: Some(Event::RunDone(pb::RunDoneEvent {
                success: true,
                reason: String::new(),
            })),
            ..Default::default()
        };
        log.push(done, vec![]);
        let all = Filter {
            submission: None,
            all_output: false,
        };
        let (tx, mut rx) = mpsc::channel(16);
        assert!(!log.watch(all, 3, tx), "nothing more will come");
        assert!(drain(&mut rx).is_empty());
        let (tx, mut rx) = mpsc::channel(16);
        assert!(!log.watch(all, 1, tx));
        assert_eq!(drain(&mut rx).len(), 2);
    }

    #[test]
    fn a_late_watcher_replays_from_its_seq_and_stops_after_its_submission() {
        let mut log = RunLog::default();
        log.push(finished("a", pb::TaskStatus::Succeeded), vec![1]);
        log.push(finished("b", pb::TaskStatus::Succeeded), vec![2]);
        let done = pb::RunEvent {
            submission_id: 1,
            event: Some(Event::SubmissionDone(pb::SubmissionDoneEvent {
                success: true,
                tasks: vec![],
            })),
            ..Default::default()
        };
        log.push(done, vec![1]);
        let (tx, mut rx) = mpsc::channel(16);
        assert!(
            !log.watch(
                Filter {
                    submission: Some(1),
                    all_output: true
                },
                1,
                tx
            ),
            "nothing more to come"
        );
        let seqs: Vec<u64> = drain(&mut rx).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 3]);
        let (tx, mut rx) = mpsc::channel(16);
        assert!(log.watch(
            Filter {
                submission: None,
                all_output: true
            },
            2,
            tx
        ));
        assert_eq!(
            drain(&mut rx).iter().map(|e| e.seq).collect::<Vec<_>>(),
            [2, 3]
        );
    }

    #[test]
    fn recorded_events_reach_watchers_only_when_published() {
        let mut log = RunLog::default();
        log.push(finished("a", pb::TaskStatus::Succeeded), vec![1]);
        let all = Filter {
            submission: None,
            all_output: true,
        };
        let (tx, mut early) = mpsc::channel(16);
        assert!(log.watch(all, 1, tx));
        log.record(output("b", "x"), vec![1]);
        let (tx, mut late) = mpsc::channel(16);
        assert!(log.watch(all, 1, tx));
        let seqs = |rx: &mut mpsc::Receiver<_>| drain(rx).iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(&mut early), [1]);
        assert_eq!(seqs(&mut late), [1], "not stored yet, so not sent");
        log.publish();
        assert_eq!(seqs(&mut early), [2]);
        assert_eq!(seqs(&mut late), [2]);
        let restored = RunLog::restore(
            log.entries
                .iter()
                .map(|e| (e.event.clone(), e.submissions.clone()))
                .collect(),
        );
        assert_eq!(restored.next_seq(), 3);
    }

    #[test]
    fn a_slow_watcher_is_dropped_not_waited_for() {
        let mut log = RunLog::default();
        let (tx, _rx) = mpsc::channel(1);
        assert!(log.watch(
            Filter {
                submission: None,
                all_output: true
            },
            1,
            tx
        ));
        log.push(output("a", "1"), vec![1]);
        log.push(output("a", "2"), vec![1]);
        assert!(log.watchers.is_empty());
        assert_eq!(log.entries.len(), 2, "nothing is lost from the log");
    }
}
