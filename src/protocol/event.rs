//! The shard's vocabulary with its driver: protocol time, the timers it asks for and
//! the events it queues. Its own file so the shard, the host and the timer queue share
//! these without importing their parent module.

use std::time::Duration;

use bytes::Bytes;

use crate::ids::{MessageId, NodeId};
use crate::topic::Topic;
use crate::wire::Frame;

use super::gap;

/// Protocol time: elapsed time since an epoch chosen by the driver (the runtime's start,
/// or the simulator's virtual zero).
pub type Time = Duration;

/// A timer the shard asked for. The driver calls [`Shard::handle_timer`](super::Shard::handle_timer) with it at or
/// after `at`; stale ones are recognised by their generation and ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Flush every peer's IHave queue.
    IHaveFlush {
        /// Generation token: the timer is stale unless it matches the current one.
        gen: u64,
    },
    /// A missing message's graft wait ran out.
    Graft {
        /// The missing message.
        id: MessageId,
        /// Generation token: stale unless it matches the message's pending graft.
        gen: u32,
    },
}

/// What the shard wants its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Send a frame to a neighbour. Consecutive frames to the same peer should be
    /// coalesced into one datagram (see `wire::Coalescer`).
    Send {
        /// The neighbour.
        to: NodeId,
        /// What to send it.
        frame: Frame,
    },
    /// Hand a message to the application, exactly once per message id.
    Deliver {
        /// The message.
        id: MessageId,
        /// Hops from the origin to here (1 for a neighbour's own broadcast).
        round: u16,
        /// The topic it was broadcast on.
        topic: Topic,
        /// The application's bytes.
        payload: Bytes,
    },
    /// Call [`Shard::handle_timer`](super::Shard::handle_timer) with `timer` at `at`.
    SetTimer {
        /// When it fires (on the driver's clock).
        at: Time,
        /// What to hand back.
        timer: Timer,
    },
    /// Every graft for this message failed (`graft_max_retries` exhausted); the
    /// `on_graft_failed` outcome of the reference library.
    GraftFailed {
        /// The message given up on.
        id: MessageId,
    },
    /// Messages of an origin this shard will never deliver (see [`gap`](super::gap)): tell the
    /// application, which would otherwise never learn they existed.
    Gap(gap::Gap),
}
