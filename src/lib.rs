//! plumcore: a thread-per-core Plumtree broadcast node.
//!
//! Layers (arrows point down only): `node` runs shards and the control core on
//! glommio executors (and is what a program embeds: [`node::embed::Node`]); `sim`
//! drives many `protocol` shards and `membership` services over a virtual network;
//! `protocol` is the sans-IO Plumtree state machine and `membership` the sans-IO
//! HyParView one; `wire` is the codec the frames travel in; `ids` and `topic` are the
//! identifiers all of them share; `tasks` is the supervision layer every background
//! task runs under; `client` is the sans-IO NATS client protocol (parser, subjects,
//! subscription table) the node's client port speaks. `harness` stands beside them:
//! it starts and reads `plumcore node` processes for the tests and benchmarks.

pub mod client;
pub mod harness;
pub mod ids;
pub mod membership;
pub mod node;
pub mod protocol;
pub mod sim;
pub mod tasks;
pub mod topic;
pub mod wire;
