//! One file per command.

pub mod agent;
pub mod bench;
pub mod cache;
pub mod ci_workflow;
pub mod coordinator;
pub mod demo;
pub mod exec;
pub mod loadtest;
pub mod loadtest_proc;
pub mod nx;
pub mod rules;
pub mod run;
pub mod simulate;
pub mod status;
pub mod token;

use std::path::PathBuf;

use clap::Args;

/// Where the coordinator is and how to reach it; every command that talks to it takes this.
#[derive(Args, Debug, Clone)]
pub struct CoordinatorUrl {
    /// The coordinator's gRPC address, e.g. http://drover.internal:50051 (https:// for TLS).
    #[arg(
        long = "coordinator",
        env = "DROVER_COORDINATOR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub url: String,
    /// The bearer token to send (a token of the coordinator's --auth-file).
    #[arg(long, env = "DROVER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Trust this CA (PEM) for https:// addresses (default: the system's roots).
    #[arg(long, env = "DROVER_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// A client certificate (PEM), for a coordinator that asks for one (mutual TLS).
    #[arg(long = "tls-cert", env = "DROVER_TLS_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long = "tls-key", env = "DROVER_TLS_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

impl CoordinatorUrl {
    pub fn tls(&self) -> drover_proto::ClientTls {
        drover_proto::ClientTls {
            ca_cert: self.ca_cert.clone(),
            identity: self.client_cert.clone().zip(self.client_key.clone()),
        }
    }
}
