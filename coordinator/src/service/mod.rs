//! gRPC services: each handler turns a message into a command for the actor and back.

pub mod admin;
pub mod agent;
pub mod run;
