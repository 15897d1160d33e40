//! The shard executor: one per core, running its `protocol::Shard` over its own
//! socket, and the overload probe that decides when it sheds work.

pub(crate) mod exec;
pub mod overload;
