//! Task output, kept on disk beside the store and bounded per task, so that the
//! coordinator's memory and its run store do not grow with what tasks print.
//!
//! Each attempt of a task has a directory `DATA_DIR/logs/<run>/<task, hex>/<attempt>/`: a
//! `head` file with the first half of the cap, then the rest in numbered segments of an eighth
//! of the cap each, of which only the newest four are kept. A task that prints more than the
//! cap keeps its head and its tail, and a reader sees one line saying how much was cut in
//! between. Everything about an attempt can be worked out from its files, so a restart needs
//! no other state.
//!
//! Offsets are over the bytes the task printed (cut ones included), every attempt after the
//! first preceded by a `--- attempt N ---` line, so an offset read once stays valid while the
//! task goes on printing. One thread owns the files; requests are answered in the order they
//! came, so a read sees every append before it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};

use tokio::sync::oneshot;

/// The default cap on what one attempt of a task keeps (`--task-log-limit`).
pub const DEFAULT_LIMIT: u64 = 10 * 1024 * 1024;
/// The most one read returns (a client pages with the offset it got).
pub const MAX_READ: usize = 1024 * 1024;
/// Segments of the tail kept.
const TAIL_SEGMENTS: u64 = 4;

/// A read of a task's log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub data: Vec<u8>,
    /// The offset after `data`; the log's length when `data` reaches its end.
    pub next: u64,
    /// The log's length so far.
    pub size: u64,
}

enum Op {
    Append {
        run: String,
        task: String,
        attempt: u32,
        data: Vec<u8>,
    },
    Read {
        run: String,
        task: String,
        attempt: Option<u32>,
        from: u64,
        max: usize,
        reply: oneshot::Sender<Chunk>,
    },
    Forget {
        run: String,
    },
    /// Answered once every operation before it is done.
    Sync(oneshot::Sender<()>),
}

/// The handle to the log thread; cheap to clone.
#[derive(Clone)]
pub struct Logs {
    tx: Sender<Op>,
    dir: PathBuf,
}

impl Logs {
    /// Starts the log thread over `DATA_DIR/logs`.
    pub fn open(data_dir: &Path, limit: u64) -> io::Result<Logs> {
        let dir = data_dir.join("logs");
        fs::create_dir_all(&dir)?;
        let (tx, rx) = channel();
        let files = Files {
            dir: dir.clone(),
            head: (limit / 2).max(1),
            segment: (limit / 2 / TAIL_SEGMENTS).max(1),
        };
        std::thread::Builder::new()
            .name("drover-logs".into())
            .spawn(move || run(files, rx))?;
        Ok(Logs { tx, dir })
    }

    /// Whether the task has a log on disk.
    pub fn exists(&self, run: &str, task: &str) -> bool {
        self.dir.join(safe(run)).join(hex(task)).exists()
    }

    /// Appends output of an attempt (not waiting for it to be written).
    pub fn append(&self, run: &str, task: &str, attempt: u32, data: Vec<u8>) {
        let _ = self.tx.send(Op::Append {
            run: run.into(),
            task: task.into(),
            attempt: attempt.max(1),
            data,
        });
    }

    /// Up to `max` bytes of the task's log from offset `from`.
    pub async fn read(&self, run: &str, task: &str, from: u64, max: usize) -> Chunk {
        self.read_attempt(run, task, None, from, max).await
    }

    /// [`read`](Self::read) of one attempt only (`None`: every attempt).
    pub async fn read_attempt(
        &self,
        run: &str,
        task: &str,
        attempt: Option<u32>,
        from: u64,
        max: usize,
    ) -> Chunk {
        self.read_now(run, task, attempt, from, max)
            .await
            .unwrap_or_default()
    }

    /// [`read_attempt`](Self::read_attempt) asked now: the chunk sees every append asked
    /// before this call and none after, whenever its receiver is awaited.
    pub fn read_now(
        &self,
        run: &str,
        task: &str,
        attempt: Option<u32>,
        from: u64,
        max: usize,
    ) -> oneshot::Receiver<Chunk> {
        let (reply, rx) = oneshot::channel();
        let op = Op::Read {
            run: run.into(),
            task: task.into(),
            attempt,
            from,
            max: max.min(MAX_READ),
            reply,
        };
        // A closed log thread drops the reply: the receiver then reads as empty.
        let _ = self.tx.send(op);
        rx
    }

    /// The task's whole log (up to the cap per attempt), for pages and tests.
    pub async fn read_all(&self, run: &str, task: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut from = 0;
        loop {
            let chunk = self.read(run, task, from, MAX_READ).await;
            out.extend_from_slice(&chunk.data);
            if chunk.data.is_empty() || chunk.next >= chunk.size {
                return out;
            }
            from = chunk.next;
        }
    }

    /// Deletes every log of a run.
    pub fn forget(&self, run: &str) {
        let _ = self.tx.send(Op::Forget { run: run.into() });
    }

    /// Waits until everything asked before is done.
    pub async fn sync(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Op::Sync(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

fn run(files: Files, rx: Receiver<Op>) {
    while let Ok(op) = rx.recv() {
        match op {
            Op::Append {
                run,
                task,
                attempt,
                data,
            } => {
                if let Err(e) = files.append(&run, &task, attempt, &data) {
                    tracing::warn!(run, task, error = %e, "could not keep a task's output");
                }
            }
            Op::Read {
                run,
                task,
                attempt,
                from,
                max,
                reply,
            } => {
                let chunk = files
                    .read(&run, &task, attempt, from, max)
                    .unwrap_or_else(|e| {
                        tracing::warn!(run, task, error = %e, "could not read a task's output");
                        Chunk::default()
                    });
                let _ = reply.send(chunk);
            }
            Op::Forget { run } => {
                let dir = files.dir.join(safe(&run));
                if let Err(e) = fs::remove_dir_all(&dir)
                    && e.kind() != io::ErrorKind::NotFound
                {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not delete a run's logs");
                }
            }
            Op::Sync(tx) => {
                let _ = tx.send(());
            }
        }
    }
}

struct Files {
    dir: PathBuf,
    head: u64,
    segment: u64,
}

/// One attempt's files as they are on disk.
struct Attempt {
    dir: PathBuf,
    head: u64,
    /// Segments present, oldest first, with their sizes.
    segments: Vec<(u64, u64)>,
}

impl Attempt {
    /// Bytes the attempt printed, cut ones included.
    fn printed(&self, segment_size: u64) -> u64 {
        match self.segments.last() {
            None => self.head,
            Some(&(k, len)) => self.head + k * segment_size + len,
        }
    }
}

impl Files {
    fn task_dir(&self, run: &str, task: &str) -> PathBuf {
        self.dir.join(safe(run)).join(hex(task))
    }

    fn attempt(&self, run: &str, task: &str, attempt: u32) -> io::Result<Attempt> {
        let dir = self.task_dir(run, task).join(attempt.to_string());
        let head = match fs::metadata(dir.join("head")) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let mut segments = Vec::new();
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if let Some(k) = name
                    .to_str()
                    .and_then(|n| n.strip_prefix("tail."))
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    segments.push((k, entry.metadata()?.len()));
                }
            }
        }
        segments.sort_unstable();
        Ok(Attempt {
            dir,
            head,
            segments,
        })
    }

    /// The attempts of a task with output, in order.
    fn attempts(&self, run: &str, task: &str) -> io::Result<Vec<(u32, Attempt)>> {
        let mut numbers: Vec<u32> = match fs::read_dir(self.task_dir(run, task)) {
            Ok(entries) => entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        numbers.sort_unstable();
        numbers
            .into_iter()
            .map(|n| Ok((n, self.attempt(run, task, n)?)))
            .collect()
    }

    fn append(&self, run: &str, task: &str, attempt: u32, mut data: &[u8]) -> io::Result<()> {
        let a = self.attempt(run, task, attempt)?;
        fs::create_dir_all(&a.dir)?;
        let mut printed = a.printed(self.segment);
        if printed < self.head {
            let n = (self.head - printed).min(data.len() as u64) as usize;
            append_to(&a.dir.join("head"), &data[..n])?;
            data = &data[n..];
            printed += n as u64;
        }
        while !data.is_empty() {
            let into = printed - self.head;
            let k = into / self.segment;
            let room = self.segment - into % self.segment;
            let n = room.min(data.len() as u64) as usize;
            append_to(&a.dir.join(format!("tail.{k}")), &data[..n])?;
            if into.is_multiple_of(self.segment) && k >= TAIL_SEGMENTS {
                // A new segment: the oldest one kept goes.
                let _ = fs::remove_file(a.dir.join(format!("tail.{}", k - TAIL_SEGMENTS)));
            }
            data = &data[n..];
            printed += n as u64;
        }
        Ok(())
    }

    fn read(
        &self,
        run: &str,
        task: &str,
        only: Option<u32>,
        from: u64,
        max: usize,
    ) -> io::Result<Chunk> {
        // The log as a list of pieces: (offset, length, what).
        let mut pieces: Vec<(u64, u64, Piece)> = Vec::new();
        let mut at = 0;
        for (n, a) in self.attempts(run, task)? {
            if only.is_some_and(|o| o != n) {
                continue;
            }
            if n > 1 && only.is_none() {
                let header = format!("\n--- attempt {n} ---\n").into_bytes();
                let len = header.len() as u64;
                pieces.push((at, len, Piece::Text(header)));
                at += len;
            }
            pieces.push((at, a.head, Piece::File(a.dir.join("head"))));
            at += a.head;
            let mut expected = 0;
            for &(k, len) in &a.segments {
                if k > expected {
                    let cut = (k - expected) * self.segment;
                    pieces.push((
                        at,
                        cut,
                        Piece::Cut {
                            cut,
                            limit: self.head * 2,
                        },
                    ));
                    at += cut;
                }
                pieces.push((at, len, Piece::File(a.dir.join(format!("tail.{k}")))));
                at += len;
                expected = k + 1;
            }
        }
        let size = at;
        let mut data = Vec::new();
        let mut next = from.min(size);
        for (offset, len, piece) in pieces {
            if data.len() >= max {
                break;
            }
            if offset + len <= next {
                continue;
            }
            let skip = next - offset;
            let want = ((len - skip) as usize).min(max - data.len());
            match piece {
                Piece::Text(text) => {
                    data.extend_from_slice(&text[skip as usize..skip as usize + want]);
                    next += want as u64;
                }
                Piece::File(path) => {
                    let mut f = File::open(path)?;
                    f.seek(SeekFrom::Start(skip))?;
                    let start = data.len();
                    data.resize(start + want, 0);
                    f.read_exact(&mut data[start..])?;
                    next += want as u64;
                }
                Piece::Cut { cut, limit } => {
                    // The whole cut range reads as one line, from wherever a reader is in it.
                    let note = format!(
                        "\n[drover] {cut} bytes of output cut here: a task's log keeps its first and last {} (--task-log-limit {})\n",
                        human(limit / 2),
                        human(limit)
                    );
                    data.extend_from_slice(note.as_bytes());
                    next = offset + len;
                }
            }
        }
        Ok(Chunk { data, next, size })
    }
}

enum Piece {
    Text(Vec<u8>),
    File(PathBuf),
    Cut { cut: u64, limit: u64 },
}

fn append_to(path: &Path, data: &[u8]) -> io::Result<()> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(data)
}

/// A task id as a file name: hex, so any id is safe and distinct.
fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// A run id as a directory name (run ids are made by the coordinator: letters, digits, `-`).
fn safe(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        s.to_string()
    } else {
        hex(s)
    }
}

fn human(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    const KIB: u64 = 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    #[tokio::test]
    async fn a_log_keeps_its_head_and_tail_and_says_how_much_was_cut() {
        let dir = TempDir::new("logs");
        let logs = Logs::open(&dir.0, 800).unwrap();
        // 100 bytes per line, 30 lines: 3,000 bytes through a cap of 800.
        for i in 0..30 {
            logs.append("run-1", "app:build", 1, format!("{i:099}\n").into_bytes());
        }
        let all = String::from_utf8(logs.read_all("run-1", "app:build").await).unwrap();
        assert!(all.starts_with(&format!("{:099}\n{:099}\n", 0, 1)), "{all}");
        assert!(all.ends_with(&format!("{:099}\n", 29)), "{all}");
        assert!(all.contains("bytes of output cut here"), "{all}");
        let kept = all.lines().filter(|l| l.len() == 99).count();
        assert!(
            (6..=9).contains(&kept),
            "about 800 bytes kept: {kept} lines\n{all}"
        );
        let chunk = logs.read("run-1", "app:build", 0, MAX_READ).await;
        assert_eq!(chunk.size, 3000, "offsets count every byte printed");
        // On disk, not more than the cap plus a segment.
        let on_disk: u64 = walk(&dir.0.join("logs"));
        assert!(on_disk <= 900, "{on_disk} bytes on disk");
    }

    #[tokio::test]
    async fn offsets_stay_valid_as_a_task_prints_and_attempts_have_headers() {
        let dir = TempDir::new("logs");
        let logs = Logs::open(&dir.0, DEFAULT_LIMIT).unwrap();
        logs.append("r", "t", 1, b"one\n".to_vec());
        let first = logs.read("r", "t", 0, MAX_READ).await;
        assert_eq!((first.data.as_slice(), first.next), (&b"one\n"[..], 4));
        logs.append("r", "t", 1, b"two\n".to_vec());
        logs.append("r", "t", 2, b"again\n".to_vec());
        let rest = logs.read("r", "t", first.next, MAX_READ).await;
        assert_eq!(
            String::from_utf8(rest.data).unwrap(),
            "two\n\n--- attempt 2 ---\nagain\n"
        );
        assert_eq!(rest.next, rest.size);
        // Paging in small reads gives the same bytes.
        let mut paged = Vec::new();
        let mut from = 0;
        loop {
            let c = logs.read("r", "t", from, 3).await;
            if c.data.is_empty() {
                break;
            }
            paged.extend_from_slice(&c.data);
            from = c.next;
        }
        assert_eq!(paged, logs.read_all("r", "t").await);
        assert!(logs.read_all("r", "no such task").await.is_empty());
        logs.forget("r");
        assert!(logs.read_all("r", "t").await.is_empty());
    }

    fn walk(dir: &Path) -> u64 {
        let mut n = 0;
        for e in fs::read_dir(dir).unwrap().flatten() {
            let m = e.metadata().unwrap();
            n += if m.is_dir() { walk(&e.path()) } else { m.len() };
        }
        n
    }
}
