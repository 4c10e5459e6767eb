//! A TCP proxy for chaos tests. It forwards every connection to a target and can *stall*: hold
//! every byte in both directions without closing anything, the way a broken network path looks
//! to both ends, then *heal* and let the held bytes through.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

struct Shared {
    stalled: Mutex<bool>,
    healed: Condvar,
    closing: AtomicBool,
    /// Both ends of every connection, to close them when the proxy goes.
    streams: Mutex<Vec<TcpStream>>,
}

impl Shared {
    /// Blocks while the proxy is stalled.
    fn pass(&self) {
        let stalled = self.stalled.lock().unwrap_or_else(|e| e.into_inner());
        let _unused = self
            .healed
            .wait_while(stalled, |s| *s && !self.closing.load(Ordering::SeqCst))
            .unwrap_or_else(|e| e.into_inner());
    }
}

pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            stalled: Mutex::new(false),
            healed: Condvar::new(),
            closing: AtomicBool::new(false),
            streams: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.closing.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    continue; // the target is down: the client sees its connection close
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                if let (Ok(c3), Ok(s3)) = (client.try_clone(), server.try_clone()) {
                    let mut streams = s.streams.lock().unwrap_or_else(|e| e.into_inner());
                    streams.push(c3);
                    streams.push(s3);
                }
                pump(Arc::clone(&s), client, s2);
                pump(Arc::clone(&s), server, c2);
            }
        });
        Proxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Holds every byte from now on, in both directions, on every connection.
    pub fn stall(&self) {
        *self
            .shared
            .stalled
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = true;
    }

    /// Lets the held bytes and everything after them through.
    pub fn heal(&self) {
        *self
            .shared
            .stalled
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = false;
        self.shared.healed.notify_all();
    }
}

/// Copies `from` to `to` until either closes, waiting while the proxy is stalled.
fn pump(shared: Arc<Shared>, mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            shared.pass();
            if shared.closing.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.healed.notify_all();
        for s in self
            .shared
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Wake the accept loop so it sees `closing`.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bytes_pass_stall_and_come_through_after_healing() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = echo.accept().unwrap();
            let mut buf = [0u8; 64];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        let proxy = Proxy::start(target);
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 2];
        c.write_all(b"hi").unwrap();
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        proxy.stall();
        c.write_all(b"yo").unwrap();
        assert!(c.read_exact(&mut buf).is_err(), "nothing passes a stall");
        proxy.heal();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"yo", "held bytes arrive after healing");
    }
}
