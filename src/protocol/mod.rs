//! Sans-IO Plumtree (Leitão, Pereira, Rodrigues, SRDS 2007).
//!
//! A [`Shard`] owns a set of partitions (independent Plumtrees over the same
//! neighbours). It never reads a clock, touches a socket or spawns anything: every
//! input carries `now` (time since an epoch the driver picks), and everything it wants
//! done — frames to send, deliveries, timers to arm — is queued as an [`Event`] that the
//! driver drains with [`Shard::poll_event`]. Timers are data: a [`Timer`] carries a
//! generation token, and a timer that fires after its reason went away is ignored.

#![forbid(unsafe_code)]

pub mod cache;
pub mod config;
mod digest;
pub mod gap;
pub mod peers;
pub mod roots;
pub mod seen;
pub mod shard;
pub mod stats;
pub mod validate;

use std::time::Duration;

use bytes::Bytes;

pub use config::{ConfigError, Mode, ProtocolConfig};
pub use shard::{BroadcastError, CleanupProgress, Shard};
pub use stats::ShardStats;
pub use validate::{MessageView, Validator, ValidatorHandle, Verdict};

use crate::ids::{MessageId, NodeId};
use crate::topic::Topic;
use crate::wire::Frame;

/// Protocol time: elapsed time since an epoch chosen by the driver (the runtime's start,
/// or the simulator's virtual zero).
pub type Time = Duration;

/// A timer the shard asked for. The driver calls [`Shard::handle_timer`] with it at or
/// after `at`; stale ones are recognised by their generation and ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Flush every peer's IHave queue.
    IHaveFlush { gen: u64 },
    /// A missing message's graft wait ran out.
    Graft { id: MessageId, gen: u32 },
}

/// What the shard wants its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Send a frame to a neighbour. Consecutive frames to the same peer should be
    /// coalesced into one datagram (see `wire::Coalescer`).
    Send { to: NodeId, frame: Frame },
    /// Hand a message to the application, exactly once per message id.
    Deliver {
        id: MessageId,
        round: u16,
        topic: Topic,
        payload: Bytes,
    },
    /// Call [`Shard::handle_timer`] with `timer` at `at`.
    SetTimer { at: Time, timer: Timer },
    /// Every graft for this message failed (`graft_max_retries` exhausted); the
    /// `on_graft_failed` outcome of the reference library.
    GraftFailed { id: MessageId },
    /// Messages of an origin this shard will never deliver (see [`gap`]): tell the
    /// application, which would otherwise never learn they existed.
    Gap(gap::Gap),
}
#[cfg(test)]
mod tests;
