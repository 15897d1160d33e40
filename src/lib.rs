//! plumcore: a thread-per-core Plumtree broadcast node.
//!
//! Layers, top to bottom; a layer uses only layers below it (arrows point down, no
//! import circles):
//!
//! - `node`: runs the shards and the control core on glommio executors over io_uring UDP,
//!   with the admin plane, the client port and the deliveries sink; it is what a program
//!   embeds ([`node::embed::Node`]). Uses every layer below.
//! - `sim`: the deterministic simulator; drives many `protocol` shards and `membership`
//!   services over a virtual network, through the `wire` codec.
//! - `protocol`: the sans-IO Plumtree state machine (one [`protocol::Shard`] per core);
//!   uses `wire`, `timer`, `topic` and `ids`.
//! - `membership`: the sans-IO HyParView state machine (active and passive views,
//!   failure detection) and its driver ([`membership::MemberDriver`]: address book,
//!   contact trust, seed joins), which the node and the simulator both run; uses
//!   `wire` (member frames and contacts), `timer` and `ids`.
//! - `wire`: the versioned codec every datagram travels in, and its authentication;
//!   uses `topic` and `ids`.
//! - `tasks`: the per-core supervision layer every background task of the node runs
//!   under (tracked spawns, supervisor, loops, stop signals); uses nothing in the crate.
//! - `client`: the sans-IO NATS client protocol (parser, subjects, subscription table)
//!   the node's client port speaks; uses nothing in the crate.
//! - `timer`: the pure timer queue ([`timer::TimerQueue`]) the shard host, the
//!   membership driver and the simulator keep their timers in; uses nothing in the
//!   crate.
//! - `topic` and `ids`: the topic and identifier types every layer shares; they use
//!   nothing in the crate.
//! - `serde_millis`: durations as milliseconds in the `protocol` and `membership`
//!   tunables; uses nothing in the crate.
//! - `harness` stands beside them: it starts and reads `plumcore node` processes (free
//!   ports, spawn, readiness, kill, metrics, deliveries) for the tests and benchmarks;
//!   no layer uses it.

#![warn(missing_docs)]

pub mod client;
pub mod harness;
pub mod ids;
pub mod membership;
pub mod node;
pub mod protocol;
mod serde_millis;
pub mod sim;
pub mod tasks;
pub mod timer;
pub mod topic;
pub mod wire;
