//! The shard executor: one per core, running its `protocol::Shard` over its own
//! socket, and the overload probe that decides when it sheds work. Arrows: `exec`
//! (loops, socket) → `state` (one turn into the host and back out) → `deliver`;
//! `report` adds the snapshot to `state`.

mod deliver;
pub(crate) mod exec;
pub mod overload;
mod report;
pub(crate) mod state;
