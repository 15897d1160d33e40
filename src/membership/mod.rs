//! Sans-IO HyParView peer sampling (Leitão, Pereira, Rodrigues, DSN 2007).
//!
//! Plumtree needs a small, symmetric, connected set of neighbours that heals itself
//! when nodes fail; HyParView provides it with two views: a small *active* view (the
//! neighbours Plumtree gossips to) and a larger *passive* view (a random sample of the
//! cluster, refreshed by periodic shuffles, that the active view is repaired from).
//!
//! Like `protocol`, the [`Membership`] state machine never reads a clock, touches a
//! socket or spawns anything: every input carries `now` (time since an epoch the driver
//! picks); everything it wants done — messages to send, neighbours that came up or went
//! down, timers to arm — is queued as an [`Event`] and drained with
//! [`Membership::poll_event`]. Timers are data: a [`Timer`] carries a generation token,
//! and a timer that fires after its reason went away is ignored.
//!
//! The paper runs over TCP and uses connection failure as its failure detector. This
//! implementation runs over UDP, so it adds one: every active neighbour gets a
//! [`Message::Heartbeat`] when nothing else was sent to it for `heartbeat_interval`;
//! a neighbour silent for `failure_timeout` is sent a [`Message::Probe`], and if it does
//! not answer within `probe_timeout` it is removed and replaced from the passive view.
//!
//! Messages name peers by [`NodeId`] only; the driver maps ids to addresses. A shuffle
//! reply goes to the shuffle's origin, which need not be a neighbour, so the driver's
//! address book must cover every id that can appear in a view.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod hyparview;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::NodeId;

pub use hyparview::Membership;

/// Membership time: elapsed time since an epoch chosen by the driver (the runtime's
/// start, or the simulator's virtual zero).
pub type Time = Duration;

/// Tunables of the HyParView service. Names follow the paper (ARWL, PRWL, ...);
/// durations are serialised as milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipConfig {
    /// Largest active view: the neighbours Plumtree uses. The paper's `log(n) + c`.
    pub active_view: usize,
    /// Largest passive view: the backup sample the active view is repaired from.
    pub passive_view: usize,
    /// Active random walk length: hops a ForwardJoin travels before it must be accepted.
    pub arwl: u8,
    /// Passive random walk length: the hop at which a ForwardJoin's new node is also
    /// put into the passive view.
    pub prwl: u8,
    /// Period of the passive-view shuffle.
    #[serde(with = "millis")]
    pub shuffle_interval: Duration,
    /// Active-view members a shuffle carries (besides the sender itself).
    pub shuffle_active: usize,
    /// Passive-view members a shuffle carries.
    pub shuffle_passive: usize,
    /// Hops a shuffle random walk travels.
    pub shuffle_ttl: u8,
    /// A neighbour is sent a Heartbeat when nothing else was sent to it for this long.
    #[serde(with = "millis")]
    pub heartbeat_interval: Duration,
    /// Silence after which a neighbour is suspected and probed.
    #[serde(with = "millis")]
    pub failure_timeout: Duration,
    /// A probed neighbour (or a passive node asked to become one) that does not answer
    /// within this is dropped.
    #[serde(with = "millis")]
    pub probe_timeout: Duration,
    /// First wait before a Join is retried at the next seed; doubles each retry.
    #[serde(with = "millis")]
    pub join_retry: Duration,
    /// Cap of the doubling join retry wait.
    #[serde(with = "millis")]
    pub join_retry_max: Duration,
    /// Cap of the doubling wait between probes of a lost node (found dead; probed in
    /// case it was a partition). A healed partition re-merges within about this of
    /// the heal. Cost: at most `passive_view` lost nodes, each probed once per this
    /// interval once its backoff reached it (defaults: 30 probes of ~40 bytes every
    /// 2 s, 15 datagrams/s, for a node that lost 30 peers for good). Must be at least
    /// `join_retry`, the first wait.
    #[serde(with = "millis")]
    pub lost_probe_max: Duration,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            active_view: 5,
            passive_view: 30,
            arwl: 6,
            prwl: 3,
            shuffle_interval: Duration::from_secs(10),
            shuffle_active: 3,
            shuffle_passive: 4,
            shuffle_ttl: 6,
            heartbeat_interval: Duration::from_secs(1),
            failure_timeout: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(1),
            join_retry: Duration::from_secs(1),
            join_retry_max: Duration::from_secs(30),
            lost_probe_max: Duration::from_secs(2),
        }
    }
}

/// A configuration value out of range; names the key so the operator can fix it.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid membership config key `{key}`: {reason}")]
pub struct ConfigError {
    /// The offending key, as spelled in the configuration file.
    pub key: &'static str,
    /// What range the key must be in.
    pub reason: String,
}

impl MembershipConfig {
    /// Checks every bound, so the state machine can rely on them (non-empty views,
    /// positive periods, a failure timeout that heartbeats can actually beat).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key, reason: &str| {
            Err(ConfigError {
                key,
                reason: reason.to_string(),
            })
        };
        if self.active_view == 0 || self.active_view > 64 {
            return err("active_view", "must be between 1 and 64");
        }
        if self.passive_view == 0 {
            return err("passive_view", "must be at least 1");
        }
        if self.prwl > self.arwl {
            return err("prwl", "must not exceed arwl");
        }
        if self.shuffle_active + self.shuffle_passive > 255 {
            return err(
                "shuffle_passive",
                "shuffle_active + shuffle_passive must be at most 255",
            );
        }
        for (key, d) in [
            ("shuffle_interval", self.shuffle_interval),
            ("heartbeat_interval", self.heartbeat_interval),
            ("probe_timeout", self.probe_timeout),
            ("join_retry", self.join_retry),
        ] {
            if d.is_zero() {
                return err(key, "must be positive");
            }
        }
        if self.failure_timeout < self.heartbeat_interval * 2 {
            return err(
                "failure_timeout",
                "must be at least twice heartbeat_interval",
            );
        }
        if self.join_retry_max < self.join_retry {
            return err("join_retry_max", "must be at least join_retry");
        }
        if self.lost_probe_max < self.join_retry {
            return err("lost_probe_max", "must be at least join_retry");
        }
        Ok(())
    }
}

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
/// [`Membership::handle_timer`] with it at or after `at`; stale ones are recognised by
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
    /// Call [`Membership::handle_timer`] with `timer` at `at`.
    SetTimer {
        /// When it fires (on the driver's clock).
        at: Time,
        /// What to hand back.
        timer: Timer,
    },
}

/// Monotonic counters, plain `u64`s owned by the state machine (no atomics), copied
/// out by [`Membership::stats`] for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MembershipStats {
    /// Join messages received (as a contact node).
    pub joins: u64,
    /// ForwardJoin messages received.
    pub forward_joins: u64,
    /// Shuffles this node started.
    pub shuffles_sent: u64,
    /// Shuffle messages received (forwarded or answered).
    pub shuffles_received: u64,
    /// Active neighbours removed because they did not answer a probe.
    pub neighbor_failures: u64,
    /// Passive nodes that accepted a Neighbor request and entered the active view.
    pub promotions: u64,
    /// Disconnects received from an active neighbour.
    pub disconnects: u64,
    /// Joins started again because the passive view ran out with the active view
    /// not full.
    pub rejoins: u64,
    /// Probes sent to lost nodes (found dead; probed in case it was a partition).
    pub lost_probes_sent: u64,
    /// Lost nodes heard from again.
    pub lost_revived: u64,
    /// Joins through a revived lost node that was not a neighbour again (how a healed
    /// partition re-merges).
    pub lost_rejoins: u64,
    /// Lost nodes forgotten to keep the lost list within its bound.
    pub lost_evictions: u64,
    /// Splices this node carried out as the full node in the middle (it dropped one
    /// link and gained the requester; two short views each gained a link).
    pub splices: u64,
    /// Introductions sent (two short neighbours told about each other).
    pub introductions: u64,
    /// Messages queued for sending, of every kind.
    pub messages_sent: u64,
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests;
