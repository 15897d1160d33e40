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
        /// What was being done, naming the process or file (`starting …`, `reading …`).
        what: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// An admin-plane request failed.
    #[error("GET http://{admin}{path}: {reason}")]
    Admin {
        /// The node's admin-plane address.
        admin: SocketAddr,
        /// The route requested (`/metrics`).
        path: String,
        /// Why it failed: the HTTP client's error or the body that did not parse.
        reason: String,
    },
    /// A deliveries file holds a complete line that is not a valid record.
    #[error("{}: line {line}: {reason}", path.display())]
    Deliveries {
        /// The deliveries file.
        path: PathBuf,
        /// The bad line's number, counting from 1.
        line: usize,
        /// What is wrong with it (not JSON, a bad `payload_b64`, no known field).
        reason: String,
    },
}
