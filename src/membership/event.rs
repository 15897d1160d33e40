//! The membership state machine's vocabulary with its driver: time, the messages it
//! exchanges, the timers it asks for and the events it queues. Its own file so the
//! state machine and its parts use these without importing their parent module.

use std::time::Duration;

use crate::ids::NodeId;

/// Membership time: elapsed time since an epoch chosen by the driver (the runtime's
/// start, or the simulator's virtual zero).
pub type Time = Duration;

/// The HyParView wire payloads: plain data, encoded by whoever carries them (the wire
/// codec owns the byte layout, as it does for Plumtree frames).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A new node asks its contact to let it in.
    Join,
    /// A Join's random walk: `new` is accepted into an active view when `ttl` reaches 0
    /// (or at a node with at most one neighbour), and into a passive view at `prwl`.
    ForwardJoin {
        /// The joining node.
        new: NodeId,
        /// Hops left in the walk.
        ttl: u8,
    },
    /// Asks the receiver to add the sender to its active view. `high_priority` requests
    /// (sent by a node with no neighbour left, or to a new node accepted through a
    /// ForwardJoin) are always accepted; others only when the active view has room.
    Neighbor {
        /// Must be accepted even by a full active view.
        high_priority: bool,
    },
    /// Answer to [`Message::Neighbor`]; an accepting reply also acknowledges a Join.
    NeighborReply {
        /// The sender added the receiver to its active view.
        accepted: bool,
    },
    /// The sender removed the receiver from its active view (view full, or leaving).
    Disconnect,
    /// A shuffle random walk carrying a sample of `origin`'s views.
    Shuffle {
        /// The node that started the shuffle; the endpoint replies to it directly.
        origin: NodeId,
        /// Hops left in the walk.
        ttl: u8,
        /// The sample: the origin itself, some active and some passive neighbours.
        nodes: Vec<NodeId>,
    },
    /// The shuffle's endpoint answers the origin with a sample of its passive view.
    ShuffleReply {
        /// The endpoint's sample, as many as it received.
        nodes: Vec<NodeId>,
    },
    /// Keep-alive to an active neighbour nothing else was sent to lately. `short` says
    /// the sender's active view has room, so a neighbour that is short as well can
    /// pair with it in a [`Message::Splice`].
    Heartbeat {
        /// The sender's active view has room.
        short: bool,
    },
    /// Are you alive? Sent to a neighbour silent for `failure_timeout`.
    Probe,
    /// Answer to [`Message::Probe`].
    ProbeReply,
    /// From a node whose view has stayed short while every node it asked was full:
    /// "break one of your links, C–D, and make it C–sender plus D–`partner`". The
    /// partner is the sender itself when it is short by two or more, or a short
    /// neighbour of the sender (two short nodes already linked can never fill by
    /// ordinary requests when everyone else is full). Each side gains one link and
    /// nobody loses one. Answered with [`Message::NeighborReply`].
    Splice {
        /// The node that takes the other end of the broken link.
        partner: NodeId,
    },
    /// From the full node working on a splice to one of its neighbours: "drop our link
    /// and ask `new` to be your neighbour instead", if that neighbour is not linked to
    /// `new` already (only it can tell).
    SpliceOffer {
        /// The node to ask instead.
        new: NodeId,
    },
    /// Answer to [`Message::SpliceOffer`]: `accepted` means the link to the sender is
    /// gone and `new` was asked.
    SpliceReply {
        /// The link is gone and `new` was asked.
        accepted: bool,
    },
    /// From a node with two short neighbours: "`node` has room, as you do; ask it".
    /// Two short nodes that do not know each other (nothing in either passive view)
    /// would otherwise wait for shuffles to meet.
    Introduce {
        /// The other short node.
        node: NodeId,
    },
}

/// A timer the state machine asked for. The driver calls
/// [`Membership::handle_timer`](super::Membership::handle_timer) with it at or after `at`; stale ones are recognised by
/// their generation and ignored, so the driver never has to cancel anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Periodic passive-view shuffle.
    Shuffle {
        /// Generation token: the timer is stale unless it matches the current one.
        gen: u64,
    },
    /// Periodic heartbeat / failure-detection / active-view repair round.
    Heartbeat {
        /// Generation token: the timer is stale unless it matches the current one.
        gen: u64,
    },
    /// The last Join got no answer: try the next seed.
    JoinRetry {
        /// Generation token: the timer is stale unless it matches the current one.
        gen: u64,
    },
    /// A probed neighbour's time to answer ran out.
    ProbeDeadline {
        /// The node the deadline is about.
        peer: NodeId,
        /// Generation token: the timer is stale unless it matches the current one.
        gen: u64,
    },
    /// A passive node asked to become a neighbour did not answer in time.
    NeighborDeadline {
        /// The node the deadline is about.
        peer: NodeId,
        /// Generation token: the timer is stale unless it matches the current one.
        gen: u64,
    },
    /// The neighbour offered a splice did not answer in time: offer another.
    SpliceDeadline {
        /// Generation token: the timer is stale unless it matches the current one.
        gen: u64,
    },
    /// A lost node is due another probe.
    LostProbe {
        /// The node the deadline is about.
        peer: NodeId,
        /// Generation token: the timer is stale unless it matches the current one.
        gen: u64,
    },
}

/// What the state machine wants its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Send a message to a peer (not necessarily a neighbour: shuffle replies go to the
    /// shuffle's origin).
    Send {
        /// The receiver.
        to: NodeId,
        /// What to send it.
        msg: Message,
    },
    /// A peer entered the active view: Plumtree should add it (`Shard::neighbor_up`).
    NeighborUp(NodeId),
    /// A peer left the active view: Plumtree should drop it (`Shard::neighbor_down`).
    NeighborDown(NodeId),
    /// Call [`Membership::handle_timer`](super::Membership::handle_timer) with `timer` at `at`.
    SetTimer {
        /// When it fires (on the driver's clock).
        at: Time,
        /// What to hand back.
        timer: Timer,
    },
}
