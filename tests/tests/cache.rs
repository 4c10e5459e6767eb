//! Nx's remote-cache API on the coordinator's HTTP port, against a real coordinator: statuses
//! and tokens exactly as Nx expects them, the size limit, streaming, `drover cache stats` and
//! `prune`; on the local file system and on S3 (a local `moto_server` from PyPI).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use drover_tests::{Fleet, FleetConfig, text};
use futures_util::stream;
use reqwest::StatusCode;

const RW: &str = "cache-test-write";
const RO: &str = "cache-test-read";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn cache_fleet(label: &str, extra: &[&str], env: &[(&str, &str)]) -> Fleet {
    let mut args: Vec<String> = ["--cache-token", RW, "--cache-read-token", RO]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    Fleet::with_config(
        label,
        FleetConfig {
            coordinator_args: args,
            coordinator_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..FleetConfig::default()
        },
    )
}

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    fn new(fleet: &Fleet) -> Api {
        Api {
            base: format!("http://{}", fleet.http),
            client: reqwest::Client::new(),
        }
    }

    async fn put(&self, hash: &str, token: Option<&str>, body: Vec<u8>) -> (StatusCode, String) {
        let mut req = self
            .client
            .put(format!("{}/v1/cache/{hash}", self.base))
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    }

    /// A PUT whose body comes in `chunks` pieces of `chunk` bytes, without Content-Length.
    async fn put_streamed(&self, hash: &str, chunk: usize, chunks: usize) -> (StatusCode, String) {
        let piece = Bytes::from(vec![7u8; chunk]);
        let body = stream::iter((0..chunks).map(move |_| Ok::<_, std::io::Error>(piece.clone())));
        let r = self
            .client
            .put(format!("{}/v1/cache/{hash}", self.base))
            .bearer_auth(RW)
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap_or_default())
    }

    async fn get(&self, hash: &str, token: Option<&str>) -> (StatusCode, Vec<u8>) {
        let mut req = self.client.get(format!("{}/v1/cache/{hash}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        (r.status(), r.bytes().await.unwrap().to_vec())
    }
}

/// Everything a cache must answer, whatever its storage.
async fn check_statuses(api: &Api, limit: usize) {
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        api.put("1001", Some(RW), blob.clone()).await.0,
        StatusCode::OK
    );
    let (status, body) = api.put("1001", Some(RW), b"other".to_vec()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = api.put("1002", Some(RO), blob.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    for token in [Some("wrong"), None] {
        let (status, body) = api.put("1002", token, blob.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("Unauthorized"), "a text body: {body:?}");
        let (status, body) = api.get("1001", token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(!body.is_empty());
    }
    for token in [RW, RO] {
        let (status, body) = api.get("1001", Some(token)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body == blob, "the entry comes back byte for byte");
    }
    assert_eq!(api.get("1002", Some(RO)).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        api.get("bad%2Fhash", Some(RO)).await.0,
        StatusCode::BAD_REQUEST
    );

    // Over the limit: refused up front when the length is declared ...
    let (status, body) = api.put("1003", Some(RW), vec![1u8; limit + 1]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    // ... and while streaming when it is not; nothing half-written is kept.
    let (status, _) = api
        .put_streamed("1004", 64 * 1024, limit / (64 * 1024) + 2)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(api.get("1004", Some(RO)).await.0, StatusCode::NOT_FOUND);
    // A streamed upload within the limit, several parts long.
    let chunks = limit / (64 * 1024) - 1;
    assert_eq!(
        api.put_streamed("1005", 64 * 1024, chunks).await.0,
        StatusCode::OK
    );
    let (status, body) = api.get("1005", Some(RO)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), chunks * 64 * 1024);
    assert!(body.iter().all(|b| *b == 7));
}

fn stats(fleet: &Fleet, token: &str) -> serde_json::Value {
    let out = fleet.run(&[
        "cache",
        "stats",
        "--json",
        "--server",
        &fleet.http.to_string(),
        "--token",
        token,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_cache_answers_as_nx_expects_on_the_local_file_system() {
    let fleet = cache_fleet("cache-local", &["--cache-max-entry-size", "12MiB"], &[]);
    let api = Api::new(&fleet);
    runtime().block_on(check_statuses(&api, 12 << 20));
    assert!(fleet.dir.join("data/cache/1001").is_file());

    let s = stats(&fleet, RO);
    assert_eq!(s["entries"], 2, "{s}");
    assert_eq!(s["hits"], 3, "{s}");
    assert_eq!(s["misses"], 2, "{s}");
    assert_eq!(s["conflicts"], 1, "{s}");
    assert_eq!(s["too_large"], 2, "{s}");
    let out = fleet.run(&[
        "cache",
        "stats",
        "--server",
        &fleet.http.to_string(),
        "--token",
        RO,
    ]);
    let human = text(&out.stdout);
    assert!(human.contains("entries:   2"), "{human}");
    assert!(human.contains("hits:      3"), "{human}");

    // Pruning needs the write token; --all empties the cache.
    let prune = |token: &str| {
        fleet.run(&[
            "cache",
            "prune",
            "--all",
            "--server",
            &fleet.http.to_string(),
            "--token",
            token,
        ])
    };
    let out = prune(RO);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("403"), "{}", text(&out.stderr));
    let out = prune(RW);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("removed 2 entries"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(stats(&fleet, RO)["entries"], 0);
}

#[test]
fn eviction_keeps_the_cache_under_its_size_and_drops_the_least_recently_used() {
    let fleet = cache_fleet("cache-evict", &["--cache-max-size", "250k"], &[]);
    let api = Api::new(&fleet);
    runtime().block_on(async {
        for hash in ["1", "2", "3"] {
            assert_eq!(
                api.put(hash, Some(RW), vec![0u8; 100_000]).await.0,
                StatusCode::OK
            );
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        // A hit makes "1" the most recently used.
        assert_eq!(api.get("1", Some(RO)).await.0, StatusCode::OK);
    });
    let out = fleet.run(&[
        "cache",
        "prune",
        "--server",
        &fleet.http.to_string(),
        "--token",
        RW,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("removed 1 entries"),
        "{}",
        text(&out.stdout)
    );
    runtime().block_on(async {
        assert_eq!(api.get("2", Some(RO)).await.0, StatusCode::NOT_FOUND);
        assert_eq!(api.get("1", Some(RO)).await.0, StatusCode::OK);
        assert_eq!(api.get("3", Some(RO)).await.0, StatusCode::OK);
    });
}

/// The coordinator's peak memory (VmHWM) in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn uploads_and_downloads_stream_instead_of_sitting_in_memory() {
    let fleet = cache_fleet("cache-stream", &[], &[]);
    let api = Api::new(&fleet);
    let pid = fleet.coordinator.as_ref().unwrap().pid();
    let before = peak_rss_kib(pid);
    const SIZE: usize = 256 << 20;
    runtime().block_on(async {
        let (status, _) = api.put_streamed("2001", 1 << 20, SIZE >> 20).await;
        assert_eq!(status, StatusCode::OK);
        let r = api
            .client
            .get(format!("{}/v1/cache/2001", api.base))
            .bearer_auth(RO)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.content_length(), Some(SIZE as u64));
        let mut r = r;
        let mut total = 0;
        while let Some(chunk) = r.chunk().await.unwrap() {
            total += chunk.len();
        }
        assert_eq!(total, SIZE);
    });
    let grew = peak_rss_kib(pid).saturating_sub(before);
    assert!(
        grew < 64 * 1024,
        "the coordinator's peak memory grew by {grew} KiB for a 256 MiB entry"
    );
}

/// A `moto_server` (S3 on loopback) for the length of a test.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start moto_server ({e}): `bash .ci/run` installs it (pip install 'moto[server]')")
            });
        let endpoint = format!("http://127.0.0.1:{port}");
        let moto = Moto { child, endpoint };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_cache_answers_as_nx_expects_on_s3() {
    let moto = Moto::start();
    // moto accepts any credentials; the bucket is made with a plain PUT.
    runtime().block_on(async {
        let r = reqwest::Client::new()
            .put(format!("{}/nx-cache-bucket", moto.endpoint))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "create bucket: {}", r.status());
    });
    let fleet = cache_fleet(
        "cache-s3",
        &[
            "--cache-s3-bucket",
            "nx-cache-bucket",
            "--cache-s3-endpoint",
            &moto.endpoint,
            "--cache-s3-region",
            "us-east-1",
            "--cache-s3-prefix",
            "ci",
            "--cache-max-entry-size",
            "12MiB",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
    );
    let api = Api::new(&fleet);
    runtime().block_on(check_statuses(&api, 12 << 20));
    // The objects are in the bucket under the prefix.
    runtime().block_on(async {
        let listing = reqwest::Client::new()
            .get(format!("{}/nx-cache-bucket?list-type=2", moto.endpoint))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(listing.contains("<Key>ci/1001</Key>"), "{listing}");
        assert!(listing.contains("<Key>ci/1005</Key>"), "{listing}");
        assert!(!listing.contains("1004"), "{listing}");
    });
    let s = stats(&fleet, RO);
    assert_eq!(s["entries"], 2, "{s}");
    assert!(
        s["backend"]
            .as_str()
            .unwrap()
            .starts_with("s3://nx-cache-bucket/ci"),
        "{s}"
    );
    let out = fleet.run(&[
        "cache",
        "prune",
        "--all",
        "--server",
        &fleet.http.to_string(),
        "--token",
        RW,
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        fleet.logs()
    );
    assert_eq!(stats(&fleet, RO)["entries"], 0);
}
