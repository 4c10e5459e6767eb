//! Helpers for end-to-end tests: a [`Fleet`] starts a real `drover coordinator` and real
//! `drover agent` processes on free loopback ports, runs `drover` commands against them, and
//! cleans everything up (killing every child) when dropped.
#![forbid(unsafe_code)]

pub mod pki;
pub mod proxy;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The `drover` binary of this workspace, built once per test process if needed.
pub fn drover_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        // target/<profile>/deps/<test> -> target/<profile>/drover
        let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut build = Command::new(cargo);
        build.args(["build", "-q", "-p", "drover-cli", "--bin", "drover"]);
        if release {
            build.arg("--release");
        }
        let status = build
            .status()
            .expect("run cargo build for the drover binary");
        assert!(status.success(), "cargo build -p drover-cli failed");
        let bin = profile_dir.join("drover");
        assert!(bin.exists(), "{} was not built", bin.display());
        bin
    })
}

/// A scratch directory under the system temp dir, removed on drop unless the test failed.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(label: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "drover-test-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create scratch dir");
        Scratch { path }
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.join(name);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).expect("create dir");
        }
        std::fs::write(&p, text).expect("write file");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A child process that is killed (with its process group) when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Waits up to `timeout` for the process to exit.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`"TERM"`, `"KILL"`, `"STOP"`, `"CONT"`) to the process.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How a fleet's coordinator is set up.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    pub heartbeat_interval: &'static str,
    pub lease_timeout: &'static str,
    /// More `drover coordinator` flags, e.g. `--cache-token`.
    pub coordinator_args: Vec<String>,
    /// Environment of the coordinator process, e.g. `AWS_ACCESS_KEY_ID`.
    pub coordinator_env: Vec<(String, String)>,
    /// `None`: the coordinator's default (the lease timeout).
    pub reconnect_grace: Option<&'static str>,
    /// Tokens: an auth file with the tokens of [`Tokens`]; commands send the main job's,
    /// agents the agent token.
    pub auth: bool,
    /// TLS on both ports (certificates of a [`pki::Pki`]); with `mtls`, agents present a
    /// client certificate.
    pub tls: bool,
    pub mtls: bool,
    /// The coordinator's data dir (default: `data` in the fleet's directory).
    pub data_dir: Option<PathBuf>,
}

/// The tokens of a fleet with `auth`, by role.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    /// read, write: the main job.
    pub main: String,
    /// read only.
    pub reader: String,
    /// agent, limited to the launch templates `linux` and `linux-medium`.
    pub agent: String,
    /// admin.
    pub admin: String,
    /// read, write, with the cache namespace `pr`.
    pub pr: String,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            heartbeat_interval: "200ms",
            lease_timeout: "3s",
            coordinator_args: Vec::new(),
            coordinator_env: Vec::new(),
            reconnect_grace: None,
            auth: false,
            tls: false,
            mtls: false,
            data_dir: None,
        }
    }
}

/// A coordinator and agents, all real processes on loopback.
pub struct Fleet {
    pub dir: Scratch,
    pub config: FleetConfig,
    pub coordinator: Option<Proc>,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub agents: Vec<Proc>,
    /// Set when the config asks for `auth`.
    pub tokens: Option<Tokens>,
    /// Set when the config asks for `tls`.
    pub pki: Option<pki::Pki>,
    /// The auth file, when there is one.
    pub auth_file: Option<PathBuf>,
}

impl Fleet {
    pub fn start(label: &str) -> Fleet {
        Self::with_config(label, FleetConfig::default())
    }

    pub fn with_config(label: &str, mut config: FleetConfig) -> Fleet {
        let dir = Scratch::new(label);
        let pki = config.tls.then(|| pki::Pki::new(&dir.join("pki")));
        let (tokens, auth_file) = if config.auth {
            let (tokens, file) = make_tokens(&dir);
            (Some(tokens), Some(file))
        } else {
            (None, None)
        };
        if let Some(file) = &auth_file {
            config.coordinator_args.push("--auth-file".into());
            config.coordinator_args.push(file.display().to_string());
        }
        if let Some(pki) = &pki {
            for (flag, path) in [
                ("--tls-cert", &pki.server_cert),
                ("--tls-key", &pki.server_key),
            ] {
                config.coordinator_args.push(flag.into());
                config.coordinator_args.push(path.display().to_string());
            }
            if config.mtls {
                config.coordinator_args.push("--tls-client-ca".into());
                config.coordinator_args.push(pki.ca.display().to_string());
            }
        }
        let (coordinator, grpc, http) =
            start_coordinator(&dir, &config, "127.0.0.1:0", "127.0.0.1:0");
        Fleet {
            dir,
            config,
            coordinator: Some(coordinator),
            grpc,
            http,
            agents: Vec::new(),
            tokens,
            pki,
            auth_file,
        }
    }

    /// Restarts the coordinator on the same ports and data dir (after it was killed).
    pub fn restart_coordinator(&mut self) {
        if let Some(mut old) = self.coordinator.take() {
            if let Ok(None) = old.child.try_wait() {
                old.signal("KILL");
            }
            old.wait_for_exit(Duration::from_secs(5));
        }
        let (c, grpc, http) = start_coordinator(
            &self.dir,
            &self.config,
            &self.grpc.to_string(),
            &self.http.to_string(),
        );
        self.coordinator = Some(c);
        self.grpc = grpc;
        self.http = http;
    }

    /// The coordinator's gRPC address as clients use it (`https://localhost:PORT` with TLS).
    pub fn url(&self) -> String {
        match &self.pki {
            Some(_) => format!("https://localhost:{}", self.grpc.port()),
            None => format!("http://{}", self.grpc),
        }
    }

    /// The main job's token, when the fleet has tokens.
    pub fn main_token(&self) -> Option<&str> {
        self.tokens.as_ref().map(|t| t.main.as_str())
    }

    /// A `drover` command pointed at this fleet's coordinator, run in the fleet's directory.
    pub fn drover(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(drover_bin());
        cmd.args(args)
            .current_dir(&self.dir.path)
            .env("DROVER_COORDINATOR", self.url())
            .env("DROVER_STATE_FILE", self.dir.join("ci-run.json"))
            .env_remove("DROVER_CI_EXECUTION_ID")
            .env_remove("NX_CI_EXECUTION_ID")
            .env_remove("GITHUB_RUN_ID")
            .env_remove("CI_PIPELINE_ID")
            .env_remove("BUILD_BUILDID")
            .env_remove("CIRCLE_WORKFLOW_ID")
            .env_remove("DROVER_TOKEN")
            .env_remove("DROVER_CA_CERT")
            .stdin(Stdio::null());
        if let Some(t) = self.main_token() {
            cmd.env("DROVER_TOKEN", t);
        }
        if let Some(pki) = &self.pki {
            cmd.env("DROVER_CA_CERT", &pki.ca);
        }
        cmd
    }

    /// Runs a `drover` command to completion and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.drover(args).output().expect("run drover")
    }

    /// Starts an agent with its own working directory `agents/NAME`.
    pub fn agent(
        &mut self,
        name: &str,
        template: &str,
        slots: u32,
        ci_execution_id: Option<&str>,
    ) -> &mut Proc {
        let url = self.url();
        self.agent_via(&url, name, template, slots, ci_execution_id)
    }

    /// Starts an agent that reaches the coordinator at `url` (e.g. through a
    /// [`proxy::Proxy`]).
    pub fn agent_via(
        &mut self,
        url: &str,
        name: &str,
        template: &str,
        slots: u32,
        ci_execution_id: Option<&str>,
    ) -> &mut Proc {
        let workdir = self.dir.join(format!("agents/{name}"));
        std::fs::create_dir_all(&workdir).expect("agent workdir");
        let mut cmd = self.drover(&[
            "agent",
            "--launch-template",
            template,
            "--slots",
            &slots.to_string(),
            "--name",
            name,
            "--workdir",
            workdir.to_str().expect("utf-8 path"),
            "--connect-timeout",
            "30s",
        ]);
        match ci_execution_id {
            Some(id) => {
                cmd.env("DROVER_CI_EXECUTION_ID", id);
            }
            None => {
                cmd.arg("--daemon");
            }
        }
        cmd.env("DROVER_COORDINATOR", url);
        if let Some(t) = &self.tokens {
            cmd.env("DROVER_TOKEN", &t.agent);
        }
        if let (Some(pki), true) = (&self.pki, self.config.mtls) {
            cmd.env("DROVER_TLS_CERT", &pki.client_cert)
                .env("DROVER_TLS_KEY", &pki.client_key);
        }
        let log = self.dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("agent log");
        cmd.stdout(file.try_clone().expect("dup log")).stderr(file);
        let child = cmd.spawn().expect("spawn agent");
        self.agents.push(Proc {
            name: name.to_string(),
            child,
            log,
        });
        self.agents.last_mut().expect("just pushed")
    }

    pub fn agent_proc(&mut self, name: &str) -> &mut Proc {
        self.agents
            .iter_mut()
            .find(|a| a.name == name)
            .expect("no such agent")
    }

    pub fn coordinator_log(&self) -> String {
        self.coordinator
            .as_ref()
            .map(Proc::log_text)
            .unwrap_or_default()
    }

    /// Every event of a run so far, output included, as `drover exec` could replay them.
    /// Reads until the run is done or no event came for `quiet`.
    pub fn events(&self, run_id: &str, quiet: Duration) -> Vec<drover_proto::v1::RunEvent> {
        use drover_proto::v1::{
            WatchRunRequest, run_event::Event, run_service_client::RunServiceClient,
        };
        let run_id = run_id.to_string();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let conn = self.connect(self.main_token());
        rt.block_on(async move {
            let mut client = RunServiceClient::new(conn.await);
            let mut stream = client
                .watch_run(WatchRunRequest {
                    run_id,
                    from_seq: 1,
                    all_output: true,
                    ..Default::default()
                })
                .await
                .expect("watch run")
                .into_inner();
            let mut events = Vec::new();
            while let Ok(Ok(Some(e))) = tokio::time::timeout(quiet, stream.message()).await {
                let done = matches!(e.event, Some(Event::RunDone(_)));
                events.push(e);
                if done {
                    break;
                }
            }
            events
        })
    }

    /// A gRPC connection to the coordinator that sends `token` (TLS as the fleet's).
    pub fn connect(
        &self,
        token: Option<&str>,
    ) -> impl std::future::Future<
        Output = tonic::service::interceptor::InterceptedService<
            tonic::transport::Channel,
            drover_proto::Bearer,
        >,
    > + use<> {
        let tls = drover_proto::ClientTls {
            ca_cert: self.pki.as_ref().map(|p| p.ca.clone()),
            identity: self
                .pki
                .as_ref()
                .filter(|_| self.config.mtls)
                .map(|p| (p.client_cert.clone(), p.client_key.clone())),
        };
        let (_, endpoint) =
            drover_proto::coordinator_endpoint(&self.url(), &tls).expect("a valid URL");
        let bearer = drover_proto::Bearer::new(token).expect("a header-safe token");
        async move {
            let channel = endpoint
                .connect()
                .await
                .expect("connect to the coordinator");
            tonic::service::interceptor::InterceptedService::new(channel, bearer)
        }
    }

    /// `GET path` on the coordinator's HTTP port; the body of the answer. (Plain HTTP with the
    /// main job's token.)
    pub fn http_get(&self, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(self.http).expect("connect to the HTTP port");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let auth = self
            .main_token()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\n{auth}Connection: close\r\n\r\n",
            self.http
        )
        .expect("send the request");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or(answer)
    }

    /// Everything the processes logged, for assertion messages.
    pub fn logs(&self) -> String {
        let mut s = format!("--- coordinator ---\n{}", self.coordinator_log());
        for a in &self.agents {
            s.push_str(&format!("--- agent {} ---\n{}", a.name, a.log_text()));
        }
        s
    }
}

/// Makes the tokens of [`Tokens`] with `drover token new` and writes the auth file.
fn make_tokens(dir: &Scratch) -> (Tokens, PathBuf) {
    let mut file = String::from("tokens:\n");
    let mut new = |name: &str, extra: &[&str]| -> String {
        let out = Command::new(drover_bin())
            .args(["token", "new", "--name", name])
            .args(extra)
            .output()
            .expect("run drover token new");
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let token = stdout
            .lines()
            .find(|l| l.starts_with("drover_"))
            .expect("a token line")
            .to_string();
        let entry: String = stdout
            .lines()
            .skip_while(|l| !l.starts_with("  - "))
            .map(|l| format!("{l}\n"))
            .collect();
        file.push_str(&entry);
        token
    };
    let tokens = Tokens {
        main: new("main-job", &["--scopes", "read,write"]),
        reader: new("reader", &["--scopes", "read"]),
        agent: new(
            "agents",
            &[
                "--scopes",
                "agent",
                "--launch-templates",
                "linux,linux-medium",
            ],
        ),
        admin: new("ops", &["--scopes", "admin"]),
        pr: new(
            "pull-requests",
            &["--scopes", "read,write", "--cache-namespace", "pr"],
        ),
    };
    let path = dir.write("auth.yaml", &file);
    (tokens, path)
}

fn start_coordinator(
    dir: &Scratch,
    config: &FleetConfig,
    listen: &str,
    http: &str,
) -> (Proc, SocketAddr, SocketAddr) {
    let log = dir.join("coordinator.log");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("coordinator log");
    let mut child = Command::new(drover_bin())
        .args([
            "coordinator",
            "--listen",
            listen,
            "--http-listen",
            http,
            "--data-dir",
            config
                .data_dir
                .clone()
                .unwrap_or_else(|| dir.join("data"))
                .to_str()
                .expect("utf-8 path"),
            "--heartbeat-interval",
            config.heartbeat_interval,
            "--lease-timeout",
            config.lease_timeout,
        ])
        .args(
            config
                .reconnect_grace
                .map(|g| ["--reconnect-grace", g])
                .into_iter()
                .flatten(),
        )
        .args(&config.coordinator_args)
        .envs(config.coordinator_env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(file)
        .spawn()
        .expect("spawn coordinator");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .expect("read the coordinator's first line");
    let addr = |key: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "coordinator did not print {key}ADDR: {line:?}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
    };
    let (grpc, http) = (addr("grpc="), addr("http="));
    // Keep draining stdout so the coordinator never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    });
    (
        Proc {
            name: "coordinator".into(),
            child,
            log,
        },
        grpc,
        http,
    )
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `timeout` with `what`.
pub fn eventually<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The lines tasks wrote to a record file: `(task id, agent, template, event, time in ns)`.
pub fn read_record(path: &Path) -> Vec<RecordLine> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some(RecordLine {
                task: w.next()?.to_string(),
                agent: w.next()?.to_string(),
                template: w.next()?.to_string(),
                event: w.next()?.to_string(),
                nanos: w.next()?.parse().ok()?,
            })
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordLine {
    pub task: String,
    pub agent: String,
    pub template: String,
    pub event: String,
    pub nanos: u128,
}

/// A shell command that records its start and end in `record`, sleeping `secs` in between,
/// then runs `then` (e.g. `exit 1`).
pub fn recorded(record: &Path, secs: f32, then: &str) -> String {
    let r = record.display();
    format!(
        "echo \"$DROVER_TASK_ID $DROVER_AGENT_NAME $DROVER_LAUNCH_TEMPLATE start $(date +%s%N)\" >> {r}; sleep {secs}; echo \"$DROVER_TASK_ID $DROVER_AGENT_NAME $DROVER_LAUNCH_TEMPLATE end $(date +%s%N)\" >> {r}; {then}"
    )
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The path of a program on `PATH`, if it is there.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}
