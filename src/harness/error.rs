//! The harness's one error type, in its own file so every harness module can use it
//! without importing the parent module.

use std::net::SocketAddr;
use std::path::PathBuf;

use thiserror::Error;

/// What the harness could not do.
#[derive(Debug, Error)]
pub enum HarnessError {
    /// No free loopback ports.
    #[error(transparent)]
    Ports(#[from] super::ports::NoFreePorts),
    /// Starting, signalling or waiting for a process failed.
    #[error("{what}: {source}")]
    Process {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// An admin-plane request failed.
    #[error("GET http://{admin}{path}: {reason}")]
    Admin {
        admin: SocketAddr,
        path: String,
        reason: String,
    },
    /// A deliveries file holds a complete line that is not a valid record.
    #[error("{}: line {line}: {reason}", path.display())]
    Deliveries {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}
