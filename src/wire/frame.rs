//! The frames a datagram carries.

use bytes::Bytes;

use super::layout::VERSION;
use crate::ids::{MessageId, NodeId};
use crate::topic::Topic;

/// Frame tags on the wire. 0x01..=0x0f are Plumtree frames; 0x10..=0x1f are reserved
/// for membership frames and 0x20..=0x2f for anti-entropy, so later protocol layers
/// share one datagram format.
pub mod tag {
    /// Eager push: `origin u64 | seq u64 | round u16 | topic_len u8 | topic | payload`.
    pub const GOSSIP: u8 = 0x01;
    /// Lazy push: `(origin u64 | seq u64 | round u16){n}`, n >= 1.
    pub const IHAVE: u8 = 0x02;
    /// Graft: `origin u64 | seq u64 | round u16 | flags u8` (bit0 = send the payload).
    pub const GRAFT: u8 = 0x03;
    /// Prune of a whole partition: `partition u16`.
    pub const PRUNE: u8 = 0x04;
    /// Prune of one root's tree (per-root trees); older nodes skip it as unknown.
    pub const PRUNE_ROOT: u8 = 0x05;
    /// HyParView Join (see [`MemberFrame`](crate::wire::MemberFrame)), with the
    /// sender's shard count.
    pub const JOIN: u8 = 0x10;
    /// HyParView Disconnect.
    pub const DISCONNECT: u8 = 0x11;
    /// HyParView ForwardJoin: `ttl u8 | contact` of the joining node.
    pub const FORWARD_JOIN: u8 = 0x12;
    /// HyParView Neighbor request: `flags u8 (bit0 = high priority) | shards u16`.
    pub const NEIGHBOR: u8 = 0x13;
    /// Answer to a Neighbor request: `flags u8 (bit0 = accepted) | shards u16`.
    pub const NEIGHBOR_REPLY: u8 = 0x14;
    /// HyParView Shuffle walk: `ttl u8 | origin contact | contact{n}`.
    pub const SHUFFLE: u8 = 0x15;
    /// The shuffle endpoint's sample: `contact{n}`.
    pub const SHUFFLE_REPLY: u8 = 0x16;
    /// Keep-alive: `flags u8 (bit0 = short)`, empty from older nodes.
    pub const HEARTBEAT: u8 = 0x17;
    /// Are you alive? Empty body.
    pub const PROBE: u8 = 0x18;
    /// Answer to a Probe. Empty body.
    pub const PROBE_REPLY: u8 = 0x19;
    /// Splice request from a short node: `partner contact`.
    pub const SPLICE: u8 = 0x1a;
    /// Splice offer to a neighbour: `new contact`.
    pub const SPLICE_OFFER: u8 = 0x1b;
    /// Answer to a SpliceOffer: `flags u8 (bit0 = accepted)`.
    pub const SPLICE_REPLY: u8 = 0x1c;
    /// Introduction of another short node: `node contact`.
    pub const INTRODUCE: u8 = 0x1d;
    /// The sender's node name (UTF-8, at most 64 bytes), riding in the same datagram
    /// as its Join, Neighbor and NeighborReply frames. Nodes that predate it skip it
    /// as an unknown tag, and a datagram without it still decodes: rolling-upgrade
    /// safe in both directions.
    pub const NODE_NAME: u8 = 0x1e;
    /// "Your name is taken": a node refused the sender's Join/Neighbor because a live
    /// node already goes by that name. Body: holder id u64 | name (UTF-8).
    pub const NAME_CONFLICT: u8 = 0x1f;
    /// First tag reserved for membership frames.
    pub const MEMBERSHIP_FIRST: u8 = 0x10;
    /// Last tag reserved for membership frames.
    pub const MEMBERSHIP_LAST: u8 = 0x1f;
    /// Anti-entropy: a digest of recently delivered ids of one partition.
    pub const DIGEST: u8 = 0x20;
    /// The sender's advertised control address (`ip [16] | port u16`), in every
    /// control datagram beside its membership frame: the address its peers must use
    /// when it differs from the datagrams' source (a port mapping, a NAT, which may
    /// also rewrite the source port of any datagram). The membership range is full, hence a tag above the reserved ranges;
    /// nodes that predate it skip it as an unknown tag.
    pub const ADVERTISE: u8 = 0x30;
}

/// 64 message ids of one origin in one partition, as a bitmap: bit `i` stands for
/// seq `first + i * partitions`. One partition sees every `partitions`-th seq of an
/// origin, so a steady stream needs one block per 64 messages (24 bytes) instead of
/// one 18-byte IHave entry per message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigestBlock {
    /// The origin whose seqs the block covers.
    pub origin: NodeId,
    /// The seq bit 0 stands for.
    pub first: u64,
    /// Bit `i` set: seq `first + i * partitions` was delivered by the sender.
    pub bits: u64,
}

/// One announced message in an IHave batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IHaveEntry {
    /// The announced message.
    pub id: MessageId,
    /// Hop count the announcer would forward the message with.
    pub round: u16,
}

/// A protocol frame. Several frames for the same peer share one datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Eager push of a message payload.
    Gossip {
        /// The message.
        id: MessageId,
        /// Hop count: 0 when sent by the origin, +1 per forward.
        round: u16,
        /// The message's subject (wire version 2; `default` from version 1 peers).
        topic: Topic,
        /// The application's bytes.
        payload: Bytes,
    },
    /// Lazy push: ids of messages the sender has, batched.
    IHave {
        /// The announcements, at least one.
        entries: Vec<IHaveEntry>,
    },
    /// "Make me eager for this message's partition"; with `request` also "send me the
    /// payload". Without `request` it is the hop-count optimisation's re-link.
    Graft {
        /// The message whose root's tree the sender joins.
        id: MessageId,
        /// The round the message was announced with (informational).
        round: u16,
        /// Also send the payload: the sender is missing the message.
        request: bool,
    },
    /// "Stop eager-pushing to me in this partition". From a node without per-root
    /// trees it covers every root of the partition; a node with them sends it only
    /// next to a [`Frame::PruneRoot`], for peers that may not know that frame.
    Prune {
        /// The partition whose trees drop the sender.
        partition: u16,
    },
    /// "Stop eager-pushing to me the messages of `root` (their origin) in this
    /// partition": a prune of one root's tree, so a prune decided on one origin's
    /// message does not reshape the trees of the others.
    PruneRoot {
        /// The partition the root's messages belong to.
        partition: u16,
        /// The origin whose tree drops the sender.
        root: NodeId,
    },
    /// Anti-entropy: "of `partition`, I delivered these recently". The receiver pulls
    /// (Grafts) what it lacks and, when `reply` is set, answers with its own digest so
    /// the exchange goes both ways.
    Digest {
        /// The partition summarised.
        partition: u16,
        /// Answer with a digest of your own (unset in answers, so it ends there).
        reply: bool,
        /// The sender's recent (still cached) ids, at most [`DIGEST_MAX_BLOCKS`](super::layout::DIGEST_MAX_BLOCKS).
        blocks: Vec<DigestBlock>,
    },
}

/// Datagram header: who sent it and in which life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The sending node.
    pub sender: NodeId,
    /// Bumped on every restart so peers can tell a rebooted node from a stale one.
    pub incarnation: u32,
    /// Flag bits: 0x01 = authenticated ([`auth::FLAG_AUTH`](super::auth::FLAG_AUTH));
    /// the others are reserved (compressed, ...) and 0. The decoder ignores them.
    pub flags: u8,
    /// Wire version of the datagram ([`MIN_VERSION`](super::layout::MIN_VERSION)..=
    /// [`VERSION`](super::layout::VERSION)): what the sender speaks, and so what a reply to it
    /// must be written in.
    pub version: u8,
}

impl Header {
    /// The header a node of this build writes before sealing: the current
    /// [`VERSION`], no flags (the sealer sets its own when it authenticates).
    pub fn new(sender: NodeId, incarnation: u32) -> Self {
        Self {
            sender,
            incarnation,
            flags: 0,
            version: VERSION,
        }
    }
}
