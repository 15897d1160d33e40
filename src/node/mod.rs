//! The node: wires the config, the core plan, the shards and control core (`runtime`),
//! the deliveries sink and the admin plane, and shuts them down in order.

#![warn(missing_docs)]

pub mod admin;
pub mod batch;
pub mod client_port;
pub mod config;
mod config_keys;
mod control;
pub mod embed;
pub mod net;
mod plan;
mod prepare;
pub mod ratelimit;
pub mod retention;
pub mod runtime;
pub mod seeds;
mod shard;
pub mod sink;
pub mod snapshot;
pub mod subscribe;
mod supervise;
pub mod ticker;
pub mod topic_counts;
pub mod wake;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use config::NodeConfig;
pub use prepare::{disable_thp, NodeError};
use runtime::ShutdownReport;

/// Runs a node until `stop` is set (by a signal handler), then shuts it down.
pub fn run(cfg: NodeConfig, stop: Arc<AtomicBool>) -> Result<ShutdownReport, NodeError> {
    let node = embed::Node::start(cfg)?;
    let mut fatal = None;
    while !stop.load(Ordering::Relaxed) {
        if let Some(f) = node.fatal() {
            fatal = Some(f);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    info!("shutting down");
    let report = node.shutdown();
    match fatal {
        Some(f) => Err(NodeError::Environment(f)),
        None => Ok(report),
    }
}
