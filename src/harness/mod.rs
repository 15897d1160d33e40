//! The harness for tests and benchmarks that run real `plumcore node` processes on
//! 127.0.0.1: the integration tests (`tests/common/cluster.rs`) and the load
//! generator (`plumcore-bench`) both start their nodes through it, so a port choice,
//! a node's arguments, its readiness check, its shutdown and the files it writes are
//! read one way everywhere. Nothing in the node itself depends on this module.
//!
//! [`ports`] picks free loopback ports (checked by binding); [`launch`] builds a
//! node's command line and starts it, waiting until it answers; [`process`] is the
//! handle that kills the process when dropped and stops it with SIGTERM then SIGKILL
//! within a bound; [`metrics`] reads `/metrics`; [`deliveries`] reads a
//! `--deliveries` file.

pub mod deliveries;
pub mod launch;
pub mod metrics;
pub mod ports;
pub mod process;

use std::net::SocketAddr;
use std::path::PathBuf;

use thiserror::Error;

/// What the harness could not do.
#[derive(Debug, Error)]
pub enum HarnessError {
    /// No free loopback ports.
    #[error(transparent)]
    Ports(#[from] ports::NoFreePorts),
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
