//! Deterministic simulator: thousands of protocol shards in one process, on a seeded
//! RNG and a virtual clock, over a simulated network with per-link latency, loss,
//! duplication, partitions and crashes. Frames travel through the real wire codec, so
//! coalescing and decoding are exercised too. Same seed, same report.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod network;
mod report;
mod runner;

pub use network::{random_overlay, LinkModel};
pub use report::SimReport;
pub use runner::{run, Overlay, SimConfig};
