//! One file per command.

pub mod agent;
pub mod bench;
pub mod cache;
pub mod coordinator;
pub mod demo;
pub mod exec;
pub mod nx;
pub mod rules;
pub mod run;
pub mod simulate;

use clap::Args;

/// Where the coordinator is; every command that talks to it takes this.
#[derive(Args, Debug, Clone)]
pub struct CoordinatorUrl {
    /// The coordinator's gRPC address, e.g. http://drover.internal:50051.
    #[arg(
        long = "coordinator",
        env = "DROVER_COORDINATOR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub url: String,
}
