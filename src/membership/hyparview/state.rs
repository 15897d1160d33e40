//! The HyParView node's state: the [`Membership`] struct and the records it keeps
//! (neighbour liveness, outstanding asks, the join in progress, lost nodes, the splice
//! in progress). Its own file so the protocol's parts (`hyparview.rs`, `lost.rs`,
//! `splice.rs`) all use it without any of them importing another's parent module.

use std::collections::VecDeque;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashMap;

use crate::ids::NodeId;
use crate::membership::config::MembershipConfig;
use crate::membership::event::{Event, Time};
use crate::membership::stats::MembershipStats;

/// What the failure detector knows about one active neighbour.
#[derive(Clone, Copy, Debug)]
pub(super) struct Liveness {
    /// Last time any message arrived from it.
    pub(super) last_heard: Time,
    /// Last time anything was sent to it (a Heartbeat is only needed after a silence).
    pub(super) last_sent: Time,
    /// Generation of the outstanding probe, if it is suspected.
    pub(super) probe: Option<u64>,
    /// Its last Heartbeat said its active view has room.
    pub(super) short: bool,
}

/// What an outstanding Neighbor-like request to a passive node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ask {
    /// A Neighbor request, first attempt.
    First,
    /// A Neighbor request sent again after no answer: the node is probably dead.
    Resent,
    /// A Splice request (answered late: it waits for a third node's reply).
    Splice,
}

/// An unfinished join.
#[derive(Debug)]
pub(super) struct Joining {
    pub(super) seeds: Vec<NodeId>,
    /// Seed the next Join goes to (index into `seeds`).
    pub(super) next: usize,
    /// Wait before the next retry.
    pub(super) backoff: Duration,
    /// Generation of the live retry timer.
    pub(super) gen: u64,
}

/// The sans-IO HyParView node. See the module and `membership` documentation.
pub struct Membership {
    pub(super) me: NodeId,
    pub(super) cfg: MembershipConfig,
    /// Active view; `live[i]` belongs to `active[i]`.
    pub(super) active: Vec<NodeId>,
    pub(super) live: Vec<Liveness>,
    pub(super) passive: Vec<NodeId>,
    /// Passive nodes sent a Neighbor or Splice request: generation of their deadline,
    /// and what was asked.
    pub(super) pending: FxHashMap<NodeId, (u64, Ask)>,
    /// Consecutive heartbeat rounds that ended with the active view short.
    pub(super) short_rounds: u32,
    /// The splice this node is in the middle of, if any (one at a time).
    pub(super) splicing: Option<SpliceJob>,
    /// Passive nodes that refused a request since the last heartbeat round: alive and
    /// full, so the best nodes to ask for a splice.
    pub(super) refused: Vec<NodeId>,
    /// Nodes asked for a splice since the last heartbeat round.
    pub(super) splice_tried: Vec<NodeId>,
    /// Nodes found dead, probed until they answer; shuffles do not bring them back.
    /// At most `passive_view` entries, never a member of either view.
    pub(super) lost: Vec<Lost>,
    /// Last join through a revived lost node.
    pub(super) last_rejoin: Option<Time>,
    /// When nodes last sent us anything, kept for one failure timeout (at most
    /// `2 x passive_view + active_view` entries): splices ask only nodes known alive.
    pub(super) heard: FxHashMap<NodeId, Time>,
    /// Passive nodes asked since the last heartbeat round (no asking twice per round).
    pub(super) tried: Vec<NodeId>,
    pub(super) joining: Option<Joining>,
    /// Seeds given to the last `join` (this node excluded): where a node with nobody
    /// left to repair from joins again.
    pub(super) seeds: Vec<NodeId>,
    /// Seeds sent a Join since the last `join` call: their accepting reply is expected.
    pub(super) join_sent: Vec<NodeId>,
    /// Nodes carried by the last shuffle we started: evicted first when its reply comes.
    pub(super) last_shuffle: Vec<NodeId>,
    pub(super) shuffle_gen: Option<u64>,
    pub(super) heartbeat_gen: Option<u64>,
    /// After `leave`, every input is ignored until the next `join`.
    pub(super) left: bool,
    pub(super) next_gen: u64,
    pub(super) rng: ChaCha8Rng,
    pub(super) events: VecDeque<Event>,
    pub(super) stats: MembershipStats,
}

/// A node found dead (see the module documentation), probed until it answers.
#[derive(Clone, Copy, Debug)]
pub(super) struct Lost {
    pub(super) id: NodeId,
    /// When it was lost: the oldest entry is forgotten when the list is full.
    pub(super) since: Time,
    /// Wait after the next probe; doubles up to `lost_probe_max`.
    pub(super) backoff: Duration,
    /// Generation of its live probe timer.
    pub(super) gen: u64,
}

/// A splice this node is carrying out as the full node in the middle.
#[derive(Clone, Debug)]
pub(super) struct SpliceJob {
    /// The short node that asked, accepted once `via` agrees.
    pub(super) requester: NodeId,
    /// The node `via` is asked to link to instead of us.
    pub(super) partner: NodeId,
    /// The neighbour offered the swap now.
    pub(super) via: NodeId,
    /// Neighbours offered so far (at most [`SPLICE_OFFERS`](super::splice::SPLICE_OFFERS)).
    pub(super) offered: Vec<NodeId>,
    pub(super) gen: u64,
}
