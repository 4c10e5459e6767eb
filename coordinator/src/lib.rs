//! Drover's coordinator: keeps each run's task graph, streams leases to agents, serves the main
//! job and operators over gRPC (with reflection and health) and HTTP.
#![forbid(unsafe_code)]

mod actor;
pub mod auth;
pub mod cache;
mod config;
mod convert;
mod error;
#[cfg(test)]
mod fuzz_smoke;
mod http;
pub mod logstore;
mod metrics;
mod otel;
mod persist;
mod runlog;
mod service;
mod store;
#[cfg(test)]
mod test_support;
mod tls;
mod ui;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use drover_proto::v1::admin_service_server::AdminServiceServer;
use drover_proto::v1::agent_service_server::AgentServiceServer;
use drover_proto::v1::run_service_server::RunServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

pub use config::CoordinatorConfig;
pub use convert::{task_from_proto, task_to_proto};
pub use error::CoordError;
pub use tls::TlsConfig;

use actor::{Actor, Handle, Retention};
use auth::Auth;
use metrics::Metrics;
use service::admin::AdminSvc;
use service::agent::AgentSvc;
use service::run::RunSvc;
use tls::ServerTls;

/// A coordinator whose ports are bound, ready to serve.
pub struct Coordinator {
    grpc: TcpListener,
    http: TcpListener,
    actor: Actor,
    handle: Handle,
    cache: cache::Cache,
    metrics: Arc<Metrics>,
    auth: Arc<Auth>,
    tls: Option<ServerTls>,
    http_header_timeout: Duration,
    max_graph_tasks: usize,
    cache_url: String,
}

/// Connections a listener holds before they are accepted. A whole fleet reconnects at once
/// after a coordinator restart; the kernel's default of 1,024 would turn much of it away for
/// a retry a second later. (The kernel caps it at net.core.somaxconn.)
const ACCEPT_BACKLOG: u32 = 8192;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// The HTTP port's header timeout by default.
pub fn http_header_timeout_default() -> Duration {
    http::HEADER_TIMEOUT
}

fn bind_error(addr: SocketAddr) -> impl FnOnce(std::io::Error) -> CoordError {
    move |source| CoordError::Bind {
        addr: addr.to_string(),
        source,
    }
}

impl Coordinator {
    /// Checks that the set-up is safe, binds both ports and opens the data dir.
    pub async fn bind(config: CoordinatorConfig) -> Result<Coordinator, CoordError> {
        auth::check_exposure(
            &[config.listen, config.http_listen],
            config.auth_file.is_some(),
            config.insecure_no_auth,
        )
        .map_err(CoordError::Auth)?;
        let tls = config.tls.as_ref().map(TlsConfig::load).transpose()?;
        let auth = Arc::new(Auth::open(
            config.auth_file.as_deref(),
            config.cache.tokens(),
            &config.data_dir,
        )?);
        if auth.enabled() {
            tracing::info!("tokens are required (--auth-file)");
        }
        let grpc = listen(config.listen).map_err(bind_error(config.listen))?;
        let http = TcpListener::bind(config.http_listen)
            .await
            .map_err(bind_error(config.http_listen))?;
        let http_addr = http.local_addr().map_err(bind_error(config.http_listen))?;
        let cache = cache::Cache::open(&config.cache, &config.data_dir).await?;
        let retention = Retention {
            keep: config.run_retention,
            sweep_interval: config.retention_sweep_interval,
        };
        let metrics = Arc::new(Metrics::new(Some(cache.counters())));
        let cache_url = cache::public_url(&config.cache, http_addr, tls.is_some());
        let launch_templates = match &config.launch_templates {
            None => String::new(),
            Some(path) => {
                let shown = path.display().to_string();
                let text = std::fs::read_to_string(path)
                    .map_err(|e| CoordError::Auth(format!("--launch-templates {shown}: {e}")))?;
                let parsed = drover_scheduler::launch::LaunchTemplates::parse(&shown, &text)
                    .map_err(CoordError::Auth)?;
                tracing::info!(templates = parsed.templates.len(), file = %shown, "launch templates for repositories that have none");
                text
            }
        };
        let tracer = match &config.otlp_endpoint {
            Some(endpoint) => {
                let t = otel::RunTracer::otlp(endpoint).map_err(CoordError::Auth)?;
                tracing::info!(%endpoint, "tracing: a run is a trace, each task attempt a span");
                Some(t)
            }
            None => None,
        };
        let logs =
            logstore::Logs::open(&config.data_dir, config.task_log_limit).map_err(|source| {
                CoordError::DataDir {
                    path: config.data_dir.join("logs").display().to_string(),
                    source,
                }
            })?;
        let (actor, handle) = Actor::new(
            config.scheduling,
            config.data_dir,
            logs,
            retention,
            metrics.clone(),
            auth.clone(),
            cache_url.clone(),
            tracer,
        )?;
        let actor = actor.with_launch_templates(launch_templates);
        Ok(Coordinator {
            grpc,
            http,
            actor,
            handle,
            cache,
            metrics,
            auth,
            tls,
            http_header_timeout: config.http_header_timeout,
            max_graph_tasks: config.max_graph_tasks,
            cache_url,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves; then closes every stream and returns.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), CoordError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let http_addr = self.http_addr().to_string();

        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<AgentServiceServer<AgentSvc>>()
            .await;
        health_reporter
            .set_serving::<RunServiceServer<RunSvc>>()
            .await;
        health_reporter
            .set_serving::<AdminServiceServer<AdminSvc>>()
            .await;
        let descriptors = [
            drover_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        ];
        let mut reflection_v1 = tonic_reflection::server::Builder::configure();
        let mut reflection_v1alpha = tonic_reflection::server::Builder::configure();
        for d in descriptors {
            reflection_v1 = reflection_v1.register_encoded_file_descriptor_set(d);
            reflection_v1alpha = reflection_v1alpha.register_encoded_file_descriptor_set(d);
        }
        let reflection_v1 = reflection_v1
            .build_v1()
            .map_err(|e| CoordError::Reflection(e.to_string()))?;
        let reflection_v1alpha = reflection_v1alpha
            .build_v1alpha()
            .map_err(|e| CoordError::Reflection(e.to_string()))?;

        let (grpc_tls, http_tls, agent_certs) = match self.tls {
            Some(t) => (Some(t.grpc), Some(t.http), t.agents_need_certificates),
            None => (None, None, false),
        };
        let mut server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(5)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .layer(metrics::GrpcMetricsLayer {
                metrics: self.metrics.clone(),
            });
        if let Some(tls) = grpc_tls {
            server = server.tls_config(tls)?;
        }
        // Small messages go out at once (no Nagle delay on leases and results). A failed
        // accept (out of file descriptors) is logged and waited out, not spun on in silence.
        let incoming = futures_util::StreamExt::filter_map(
            TcpListenerStream::new(self.grpc),
            |accepted| async move {
                match accepted {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        Some(Ok::<_, std::io::Error>(s))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "grpc: cannot accept a connection (is the open-files limit too low? see `ulimit -n`)");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        None
                    }
                }
            },
        );
        let auth = self.auth.clone();
        let grpc = server
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(AgentServiceServer::new(AgentSvc::new(
                self.handle.clone(),
                auth.clone(),
                agent_certs,
            )))
            .add_service(RunServiceServer::new(RunSvc::new(
                self.handle.clone(),
                auth.clone(),
                self.max_graph_tasks,
                self.cache_url.clone(),
            )))
            .add_service(AdminServiceServer::new(AdminSvc::new(
                self.handle.clone(),
                auth.clone(),
            )))
            .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone()));
        let routes = http::router(self.handle.clone(), self.metrics.clone(), auth.clone())
            .merge(cache::router(self.cache.clone(), auth.clone()))
            .merge(ui::router(
                self.handle.clone(),
                auth.clone(),
                http_tls.is_some(),
            ));
        let http = http::serve(
            self.http,
            routes,
            http_tls,
            self.http_header_timeout,
            stopped(stop_rx.clone()),
        );
        let eviction = self.cache.evict_periodically(stopped(stop_rx.clone()));
        let reload = reload_on_sighup(auth, stopped(stop_rx.clone()));
        // The actor stops first: that ends every agent and watch stream, so the servers'
        // graceful shutdown does not wait on them.
        let actor = self.actor.spawn(stopped(stop_rx));
        drop(self.handle);
        let trigger = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        let (_, _, grpc, http, (), ()) = tokio::join!(trigger, actor, grpc, http, eviction, reload);
        grpc?;
        http.map_err(|source| CoordError::Http {
            addr: http_addr,
            source,
        })?;
        Ok(())
    }
}

/// Re-reads the auth file on every SIGHUP until `stop`; open connections are kept.
async fn reload_on_sighup(auth: Arc<Auth>, stop: impl Future<Output = ()>) {
    if !auth.enabled() {
        return stop.await;
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; the auth file is read at start only");
            return stop.await;
        };
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = hup.recv() => match auth.reload() {
                    Ok(n) => tracing::info!(tokens = n, "SIGHUP: read the auth file again"),
                    Err(e) => tracing::error!(error = %e, "SIGHUP: the auth file is not valid; the old tokens stay"),
                },
                _ = &mut stop => break,
            }
        }
    }
    #[cfg(not(unix))]
    stop.await
}
