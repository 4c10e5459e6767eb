//! The coordinator process behind a loopback URL, found through /proc (Linux): the process that
//! holds the listening socket of the URL's port. Its CPU time and memory, for `drover loadtest`.

use std::path::PathBuf;

/// A process on this machine, read through /proc.
pub struct Process {
    dir: PathBuf,
    ticks_per_second: f64,
}

impl Process {
    /// User plus system CPU time so far, in seconds.
    pub fn cpu(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(self.dir.join("stat")).ok()?;
        // Fields after the command (which may hold spaces), from its closing parenthesis on:
        // state is field 3; utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) / self.ticks_per_second)
    }

    pub fn rss_mib(&self) -> Option<f64> {
        self.status_kib("VmRSS:").map(|k| k / 1024.0)
    }

    pub fn peak_rss_mib(&self) -> Option<f64> {
        self.status_kib("VmHWM:").map(|k| k / 1024.0)
    }

    fn status_kib(&self, key: &str) -> Option<f64> {
        let status = std::fs::read_to_string(self.dir.join("status")).ok()?;
        let line = status.lines().find(|l| l.starts_with(key))?;
        line[key.len()..].split_whitespace().next()?.parse().ok()
    }
}

/// The process listening on the URL's port, when this machine can tell.
pub fn find(url: &str) -> Option<Process> {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let authority = rest.split('/').next()?;
    let port: u16 = authority.rsplit_once(':')?.1.parse().ok()?;
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && wanted.iter().any(|w| target.as_os_str() == w.as_str())
            {
                return Some(Process {
                    dir: entry.path(),
                    ticks_per_second: ticks_per_second(),
                });
            }
        }
    }
    None
}

/// Socket inodes in LISTEN state (0A) on the port, IPv4 and IPv6.
fn listening_inodes(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let local_port = f[1]
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                out.push(f[9].to_string());
            }
        }
    }
    out
}

fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_process_listening_on_a_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let me = find(&format!("http://127.0.0.1:{port}")).expect("this process listens there");
        assert_eq!(
            me.dir,
            PathBuf::from(format!("/proc/{}", std::process::id()))
        );
        assert!(me.cpu().is_some_and(|c| c >= 0.0));
        assert!(me.rss_mib().is_some_and(|r| r > 0.0));
        drop(listener);
        assert!(find(&format!("http://127.0.0.1:{port}")).is_none());
    }
}
