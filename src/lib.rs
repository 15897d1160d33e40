//! plumcore: a thread-per-core Plumtree broadcast node.
//!
//! Layers (arrows point down only): `sim` drives many `protocol` shards over a virtual
//! network; `protocol` is the sans-IO Plumtree state machine; `wire` is the codec the
//! frames travel in; `ids` are the identifiers all of them share.

pub mod ids;
pub mod membership;
pub mod node;
pub mod ports;
pub mod protocol;
pub mod sim;
pub mod tasks;
pub mod wire;
