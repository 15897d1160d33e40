//! What the membership state machine counts.

use serde::Serialize;

/// Monotonic counters, plain `u64`s owned by the state machine (no atomics), copied
/// out by [`Membership::stats`](super::Membership::stats) for metrics and tests.
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
