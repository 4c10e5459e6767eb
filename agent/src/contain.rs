//! How a task's processes are kept together so that all of them end with it.
//!
//! On Linux with cgroup v2 whose agent's cgroup may be written to (a root agent, a systemd
//! unit with `Delegate=yes`, a container given its cgroup), each task runs in a cgroup of its
//! own, `AGENT_CGROUP/drover-agent-PID/task-N`, and `cgroup.kill` ends every process in it,
//! including those that left the task's process group (`setsid`, daemonizing). Elsewhere each
//! task is a process group, which a process can leave.
//!
//! The task's first process is moved into its cgroup by the agent as soon as it is spawned
//! (a process started by posix_spawn cannot be moved before it runs, and a `pre_exec` move
//! would make every spawn a full fork of the agent: twice the cost per task). What it starts
//! in the few microseconds before is still in its process group, which is killed too; to
//! escape both, a process would have to fork and leave the group within that moment.
//!
//! Controllers are not enabled on the cgroups made here: they are for keeping and killing,
//! not for limits, so the agent's own cgroup may keep its processes.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// What holds a task's processes, decided once when the agent starts.
#[derive(Debug, Clone)]
pub(crate) enum Containment {
    /// A cgroup per task under this agent's own directory.
    Cgroups(Arc<CgroupRoot>),
    /// A process group per task; why cgroups are not used.
    ProcessGroups { why: String },
}

impl Containment {
    /// Cgroups when they can be used here, else process groups.
    pub(crate) fn detect() -> Containment {
        match CgroupRoot::create() {
            Ok(root) => Containment::Cgroups(root),
            Err(why) => Containment::ProcessGroups { why },
        }
    }

    /// Process groups only.
    #[cfg(test)]
    pub(crate) fn process_groups(why: &str) -> Containment {
        Containment::ProcessGroups {
            why: why.to_string(),
        }
    }

    /// One line for the agent's log at start.
    pub(crate) fn describe(&self) -> String {
        match self {
            Containment::Cgroups(root) => format!(
                "each task runs in a cgroup of its own under {} and all of it is killed when \
                 the task ends",
                root.dir.display()
            ),
            Containment::ProcessGroups { why } => format!(
                "each task runs in a process group of its own (a process that leaves it can \
                 outlive the task); cgroups are not used: {why}"
            ),
        }
    }

    /// A new cgroup for one task, or none with process groups. A cgroup that cannot be made
    /// fails the task's start with the reason (the agent said at start that it contains).
    pub(crate) fn for_task(&self) -> io::Result<Option<TaskCgroup>> {
        match self {
            Containment::Cgroups(root) => CgroupRoot::task(root).map(Some),
            Containment::ProcessGroups { .. } => Ok(None),
        }
    }
}

/// This agent's directory in the cgroup tree; removed (when empty) as the agent ends.
#[derive(Debug)]
pub(crate) struct CgroupRoot {
    dir: PathBuf,
    next: AtomicU64,
    /// Task cgroups that ended empty, kept for the next tasks: making and removing a cgroup
    /// costs the kernel more than moving a process into one.
    free: Mutex<Vec<Slot>>,
}

/// A task cgroup's directory and the two files the agent uses on every task, kept open with
/// it: a move and a look cost one system call each, not an open, a path walk and a close.
#[derive(Debug)]
struct Slot {
    dir: PathBuf,
    /// `cgroup.procs`, written to move a process in.
    procs: File,
    /// `cgroup.events`, read to see whether a process is left.
    events: File,
}

impl Slot {
    fn open(dir: PathBuf) -> io::Result<Slot> {
        Ok(Slot {
            procs: File::options().write(true).open(dir.join("cgroup.procs"))?,
            events: File::open(dir.join("cgroup.events"))?,
            dir,
        })
    }
}

impl CgroupRoot {
    fn create() -> Result<Arc<CgroupRoot>, String> {
        if std::env::var("DROVER_AGENT_CGROUPS").is_ok_and(|v| v == "off") {
            return Err("turned off by DROVER_AGENT_CGROUPS=off".into());
        }
        let own = own_cgroup()?;
        remove_stale(&own);
        // One per agent process; a second one in the same process (tests) gets a suffix.
        static ROOTS: AtomicU64 = AtomicU64::new(0);
        let dir = match ROOTS.fetch_add(1, Ordering::Relaxed) {
            0 => own.join(format!("drover-agent-{}", std::process::id())),
            n => own.join(format!("drover-agent-{}-{n}", std::process::id())),
        };
        std::fs::create_dir(&dir)
            .map_err(|e| format!("cannot make a cgroup in {}: {e}", own.display()))?;
        let root = Arc::new(CgroupRoot {
            dir,
            next: AtomicU64::new(1),
            free: Mutex::new(Vec::new()),
        });
        if !root.dir.join("cgroup.kill").exists() {
            return Err(format!(
                "{} has no cgroup.kill (Linux 5.14 or later is needed)",
                root.dir.display()
            ));
        }
        // A process must be movable in: try it with one that waits to be killed.
        let probe = CgroupRoot::task(&root).map_err(|e| e.to_string())?;
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .map_err(|e| format!("cannot start a probe process: {e}"))?;
        let moved = probe.move_in(child.id());
        let _ = child.kill();
        let _ = child.wait();
        moved.map_err(|e| format!("cannot move a process into {}: {e}", probe.dir().display()))?;
        drop(probe);
        Ok(root)
    }

    fn task(root: &Arc<CgroupRoot>) -> io::Result<TaskCgroup> {
        let reused = root.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let slot = match reused {
            Some(slot) => slot,
            None => {
                let n = root.next.fetch_add(1, Ordering::Relaxed);
                let dir = root.dir.join(format!("task-{n}"));
                std::fs::create_dir(&dir)?;
                Slot::open(dir.clone()).inspect_err(|_| {
                    let _ = std::fs::remove_dir(&dir);
                })?
            }
        };
        Ok(TaskCgroup {
            slot: Some(slot),
            root: Arc::clone(root),
        })
    }
}

impl Drop for CgroupRoot {
    fn drop(&mut self) {
        remove_tree(&self.dir);
    }
}

/// Removes an agent's cgroup directory and the task cgroups left in it, killing what they
/// still hold (an agent's tasks die with it).
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                remove_cgroup(&path);
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Kills what a cgroup holds and removes it once the kernel has emptied it.
fn remove_cgroup(dir: &Path) {
    kill_cgroup(dir);
    // Killed processes leave the cgroup within moments; until then it cannot be removed.
    for _ in 0..200 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    if let Err(error) = std::fs::remove_dir(dir) {
        tracing::warn!(cgroup = %dir.display(), %error, "could not remove a task's cgroup");
    }
}

/// Kills every process in a cgroup, those started meanwhile included.
fn kill_cgroup(dir: &Path) {
    if let Err(error) = std::fs::write(dir.join("cgroup.kill"), "1")
        && error.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(cgroup = %dir.display(), %error, "could not kill a task's cgroup");
    }
}

/// Directories of agents that are gone (killed, crashed) in `parent`, removed.
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("drover-agent-"))
            .and_then(|p| p.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if kill(Pid::from_raw(pid), None) == Err(nix::errno::Errno::ESRCH) {
            remove_tree(&entry.path());
        }
    }
}

/// The cgroup v2 directory this process is in: its `0::` line in /proc/self/cgroup under the
/// cgroup2 mount point of /proc/self/mountinfo.
fn own_cgroup() -> Result<PathBuf, String> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let relative = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("this process is in no cgroup v2 hierarchy")?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let mount = mounts
        .lines()
        .find_map(|l| {
            let (before, after) = l.split_once(" - ")?;
            (after.split(' ').next() == Some("cgroup2")).then(|| before.split(' ').nth(4))?
        })
        .ok_or("no cgroup2 file system is mounted")?;
    let dir = Path::new(mount).join(relative.trim_start_matches('/'));
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    Ok(dir)
}

/// One task's cgroup. Its processes are killed and it is removed when dropped.
#[derive(Debug)]
pub(crate) struct TaskCgroup {
    /// `None` once put back for the next task.
    slot: Option<Slot>,
    root: Arc<CgroupRoot>,
}

impl TaskCgroup {
    /// The directory (empty once put back: the value is then on its way out).
    fn dir(&self) -> &Path {
        self.slot.as_ref().map_or(Path::new(""), |s| &s.dir)
    }

    fn move_in(&self, pid: u32) -> io::Result<()> {
        let Some(slot) = &self.slot else {
            return Err(io::Error::other("the cgroup was put back"));
        };
        // One write per process: the kernel takes one pid per write.
        (&slot.procs).write(pid.to_string().as_bytes()).map(drop)
    }

    /// Moves the task's first process (just spawned) into the cgroup. Should that fail, the
    /// task still runs, in its process group, and the agent's log says so.
    pub(crate) fn adopt(&self, pid: u32) {
        if let Err(error) = self.move_in(pid) {
            tracing::warn!(cgroup = %self.dir().display(), pid, %error, "could not move a task into its cgroup; it runs in its process group only");
        }
    }

    /// Sends `signal` to every process in the cgroup.
    pub(crate) fn signal(&self, signal: Signal) {
        for pid in self.pids() {
            let _ = kill(pid, signal);
        }
    }

    /// Kills every process in the cgroup, those started meanwhile included. (An empty one
    /// has nothing to kill, and nothing can enter it but by being moved in.)
    pub(crate) fn kill(&self) {
        if let Some(slot) = &self.slot
            && self.populated()
        {
            kill_cgroup(&slot.dir);
        }
    }

    fn pids(&self) -> Vec<Pid> {
        let Some(slot) = &self.slot else {
            return Vec::new();
        };
        std::fs::read_to_string(slot.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .map(Pid::from_raw)
            .collect()
    }

    /// Whether a process is still in the cgroup (when it cannot be read: yes).
    fn populated(&self) -> bool {
        let Some(slot) = &self.slot else {
            return false;
        };
        let mut buf = [0u8; 128];
        match slot.events.read_at(&mut buf, 0) {
            Ok(n) => buf[..n].split(|&b| b == b'\n').any(|l| l == b"populated 1"),
            Err(_) => true,
        }
    }

    /// Puts an empty cgroup back for the next task at once; one that still holds processes
    /// is given back, to drop (kill and remove) off the async threads.
    pub(crate) fn put_back(mut self) -> Option<TaskCgroup> {
        if self.populated() {
            return Some(self);
        }
        self.keep_for_next();
        None
    }

    /// The (empty) cgroup goes to the free list, its files still open.
    fn keep_for_next(&mut self) {
        if let Some(slot) = self.slot.take() {
            let mut free = self.root.free.lock().unwrap_or_else(|p| p.into_inner());
            free.push(slot);
        }
    }
}

impl Drop for TaskCgroup {
    /// An empty cgroup (its task's processes were killed with it) is kept for the next task;
    /// one that still holds processes is killed and removed once the kernel has emptied it.
    fn drop(&mut self) {
        if self.populated() {
            if let Some(Slot { dir, .. }) = self.slot.take() {
                remove_cgroup(&dir);
            }
        } else {
            self.keep_for_next();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_says_which_and_why() {
        let line = Containment::detect().describe();
        assert!(
            line.contains("cgroup of its own") || line.contains("cgroups are not used: "),
            "{line}"
        );
        assert!(
            Containment::process_groups("off")
                .describe()
                .ends_with("cgroups are not used: off")
        );
    }
}
