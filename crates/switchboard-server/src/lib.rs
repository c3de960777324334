//! Wiring of the `switchboard` binary: command line, configuration, the HTTP server that
//! carries both the client endpoint and the REST API on one port, and shutdown.

pub mod cli;
pub mod cluster;
mod cluster_runtime;
pub mod config;
pub mod console;
pub mod engine;
pub mod local;
pub mod metrics;
pub mod serve;
pub mod tls;
pub mod token;

/// How a command ends unsuccessfully.
#[derive(Debug)]
pub enum Exit {
    /// Invalid configuration or arguments: exit code 64 with this one-line reason.
    Usage(String),
    /// A service the node needs (Redis) cannot be reached at start: exit code 69
    /// (EX_UNAVAILABLE) with this one-line reason.
    Unavailable(String),
    /// Anything else (I/O failures at run time).
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Exit {
    fn from(error: anyhow::Error) -> Self {
        Exit::Failed(error)
    }
}
