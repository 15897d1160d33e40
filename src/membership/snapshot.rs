//! Read-only views of a [`MemberDriver`](super::driver::MemberDriver): its views,
//! address book and counters, as `GET /members` and the metrics show them. They live
//! beside the driver that builds them; the node's snapshot re-exports them.

use std::net::SocketAddr;

use serde::Serialize;

use super::stats::MembershipStats;

/// One member of a HyParView view, as `GET /members` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberInfo {
    /// Its node id, 16 hex digits.
    pub node_id: String,
    /// Its node name, when known.
    pub name: Option<String>,
    /// Control address; shard `k` listens on port + 1 + k.
    pub addr: Option<SocketAddr>,
    /// Shard count (0 = not known yet).
    pub shards: u16,
    /// `active` (a Plumtree neighbour), `passive` (a backup), `pending` (a passive
    /// node asked to become a neighbour) or `lost` (stopped answering; probed).
    pub state: String,
    /// Milliseconds since a datagram last came from it; `None` if it never wrote to
    /// us (known from a shuffle or a forwarded join only).
    pub last_heard_ms_ago: Option<u64>,
}

/// Counters of the membership driver (the part around the sans-IO state machine):
/// what it could not route or had to drop.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemberDriverStats {
    /// Messages for a node whose address is not in the address book, dropped.
    pub unroutable: u64,
    /// Contacts (or Join/Neighbor layouts) with no port, no address or no shard, dropped.
    pub bad_contacts: u64,
    /// Address book entries evicted to stay within its bound.
    pub address_book_evictions: u64,
    /// Timers dropped because the timer queue was full.
    pub timer_overflow: u64,
    /// Joins sent to seed addresses whose node id was not known yet.
    pub seed_joins_sent: u64,
    /// Contacts left out of a frame because their address could not work for its
    /// receiver (a wildcard, or loopback told to a node that is not on loopback).
    pub unusable_withheld: u64,
    /// Seed names that did not resolve, counted per attempt.
    pub seed_resolve_failures: u64,
}

/// The HyParView state as the control core last saw it (`GET /members`, metrics).
#[derive(Debug, Clone, Default, Serialize)]
pub struct MembershipSnapshot {
    /// The active view: the Plumtree neighbours.
    pub active: Vec<MemberInfo>,
    /// The passive view: the backups the active view is repaired from.
    pub passive: Vec<MemberInfo>,
    /// Nodes that stopped answering and are probed with backoff until they answer.
    pub lost: Vec<MemberInfo>,
    /// Most members the active view holds.
    pub active_capacity: usize,
    /// Most members the passive view holds.
    pub passive_capacity: usize,
    /// Most nodes the lost list holds.
    pub lost_capacity: usize,
    /// A join is still unanswered (no neighbour yet).
    pub joining: bool,
    /// Configured seed addresses.
    pub seeds: Vec<SocketAddr>,
    /// Entries in the address book now.
    pub address_book_size: usize,
    /// Most entries the address book holds.
    pub address_book_capacity: usize,
    /// Membership timers armed now.
    pub timers_pending: usize,
    /// The state machine's counters.
    pub stats: MembershipStats,
    /// The driver's counters.
    pub driver: MemberDriverStats,
}
