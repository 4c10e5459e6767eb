//! Drover's coordinator: keeps each run's task graph, streams leases to agents, serves the main
//! job and operators over gRPC (with reflection and health) and HTTP.
#![forbid(unsafe_code)]

mod actor;
pub mod cache;
mod config;
mod convert;
mod error;
mod http;
mod metrics;
mod persist;
mod runlog;
mod service;
mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use drover_proto::v1::admin_service_server::AdminServiceServer;
use drover_proto::v1::agent_service_server::AgentServiceServer;
use drover_proto::v1::run_service_server::RunServiceServer;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

pub use config::CoordinatorConfig;
pub use convert::{task_from_proto, task_to_proto};
pub use error::CoordError;

use actor::{Actor, Handle, Retention};
use metrics::Metrics;
use service::admin::AdminSvc;
use service::agent::AgentSvc;
use service::run::RunSvc;

/// A coordinator whose ports are bound, ready to serve.
pub struct Coordinator {
    grpc: TcpListener,
    http: TcpListener,
    actor: Actor,
    handle: Handle,
    cache: Option<cache::Cache>,
    metrics: Arc<Metrics>,
}

impl Coordinator {
    /// Binds both ports and opens the data dir.
    pub async fn bind(config: CoordinatorConfig) -> Result<Coordinator, CoordError> {
        let grpc = TcpListener::bind(config.listen)
            .await
            .map_err(|source| CoordError::Bind {
                addr: config.listen.to_string(),
                source,
            })?;
        let http = TcpListener::bind(config.http_listen)
            .await
            .map_err(|source| CoordError::Bind {
                addr: config.http_listen.to_string(),
                source,
            })?;
        let cache = match config.cache.enabled() {
            true => Some(cache::Cache::open(&config.cache, &config.data_dir).await?),
            false => None,
        };
        let http_addr = http.local_addr().map_err(|source| CoordError::Bind {
            addr: config.http_listen.to_string(),
            source,
        })?;
        let retention = Retention {
            keep: config.run_retention,
            sweep_interval: config.retention_sweep_interval,
        };
        let metrics = Arc::new(Metrics::new(cache.as_ref().map(|c| c.counters())));
        let (actor, handle) = Actor::new(
            config.scheduling,
            config.data_dir,
            retention,
            metrics.clone(),
        )?;
        let actor = actor.with_lease_env(cache::lease_env(&config.cache, http_addr));
        Ok(Coordinator {
            grpc,
            http,
            actor,
            handle,
            cache,
            metrics,
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

        let grpc = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(5)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(AgentServiceServer::new(AgentSvc::new(self.handle.clone())))
            .add_service(RunServiceServer::new(RunSvc::new(self.handle.clone())))
            .add_service(AdminServiceServer::new(AdminSvc::new(self.handle.clone())))
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(self.grpc),
                stopped(stop_rx.clone()),
            );
        let routes = http::router(self.handle.clone(), self.metrics.clone())
            .merge(cache::router(self.cache.clone()));
        let http = axum::serve(self.http, routes).with_graceful_shutdown(stopped(stop_rx.clone()));
        let eviction_stop = stopped(stop_rx.clone());
        let eviction = async move {
            match self.cache {
                Some(cache) => cache.evict_periodically(eviction_stop).await,
                None => eviction_stop.await,
            }
        };
        // The actor stops first: that ends every agent and watch stream, so the servers'
        // graceful shutdown does not wait on them.
        let actor = self.actor.run(stopped(stop_rx));
        drop(self.handle);
        let trigger = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        let (_, _, grpc, http, ()) = tokio::join!(trigger, actor, grpc, http, eviction);
        grpc?;
        http.map_err(|source| CoordError::Http {
            addr: http_addr,
            source,
        })?;
        Ok(())
    }
}
