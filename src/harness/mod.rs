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

#![warn(missing_docs)]

pub mod deliveries;
mod error;
pub mod launch;
pub mod metrics;
pub mod ports;
pub mod process;

pub use error::HarnessError;
