//! Shard counters: plain `u64`s owned by the shard, snapshotted on demand (no atomics
//! on the hot path). Names follow the reference library's metrics
//! (`plumtree_gossip_sent_total`, ...).

use serde::Serialize;

/// Upper bounds of the IHave batch-size buckets (`ShardStats::ihave_batch_sizes`);
/// the last bucket counts batches larger than the last bound.
pub const IHAVE_BATCH_BUCKETS: [u64; 7] = [1, 2, 4, 8, 16, 32, 64];

/// Monotonic counters plus gauges filled in by [`crate::protocol::Shard::stats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ShardStats {
    // Messages.
    /// Messages this node originated through the shard ([`Shard::broadcast`](crate::protocol::Shard::broadcast)).
    pub broadcasts: u64,
    /// Received messages handed to the application (once per id; refused by the
    /// validator do not count).
    pub delivered: u64,
    /// Gossip frames for a message already seen here; what pruning works to reduce.
    pub duplicates: u64,
    /// Gossip frames received, misrouted ones included.
    pub gossip_received: u64,
    /// Gossip frames sent: eager pushes and answers to Graft requests.
    pub gossip_sent: u64,
    // Lazy push.
    /// IHave frames sent.
    pub ihave_sent: u64,
    /// Message ids announced in those frames.
    pub ihave_entries_sent: u64,
    /// IHave frames sent by batch size: `[i]` counts batches of at most
    /// `IHAVE_BATCH_BUCKETS[i]` ids (and more than the bound before); the last entry
    /// counts the larger ones.
    pub ihave_batch_sizes: [u64; IHAVE_BATCH_BUCKETS.len() + 1],
    /// Message ids received in IHave frames (one per entry, not per frame).
    pub ihave_entries_received: u64,
    /// Announcements shed because the IHave queue was full.
    pub ihave_dropped: u64,
    // Tree repair.
    /// Graft frames sent: requests for missing messages and hop-count re-links.
    pub graft_sent: u64,
    /// Of those, requests after the first for the same missing message (the last
    /// announcer did not answer within `graft_timeout`).
    pub graft_retries: u64,
    /// Missing messages that arrived after at least one Graft.
    pub graft_success: u64,
    /// Missing messages given up after `graft_max_retries`.
    pub graft_failed: u64,
    /// Graft frames received, misrouted ones included.
    pub graft_received: u64,
    /// Grafts whose message was no longer cached.
    pub graft_unanswerable: u64,
    /// Missing messages not tracked because `max_pending_grafts` was reached.
    pub pending_dropped: u64,
    /// Tree prunes sent: one per pruned link, whether it went as a PruneRoot alone or
    /// with a plain Prune for an older peer.
    pub prune_sent: u64,
    /// Prune and PruneRoot frames received (each frame counts).
    pub prune_received: u64,
    /// Hop-count optimisation re-links.
    pub optimizations: u64,
    /// Anti-entropy rounds that sent a digest.
    pub anti_entropy_rounds: u64,
    /// Of those, rounds sent to the partner whose digests showed messages missing
    /// here (pulling until the digests agree).
    pub anti_entropy_partner_rounds: u64,
    /// Digest blocks sent (rounds and replies).
    pub anti_entropy_blocks_sent: u64,
    /// Digest frames received.
    pub anti_entropy_digests_received: u64,
    /// Messages a received digest showed missing here, and pulled (Graft).
    pub anti_entropy_pulls: u64,
    /// Missing messages not pulled because the round's pull budget was spent.
    pub anti_entropy_pulls_shed: u64,
    /// Digest replies sent.
    pub anti_entropy_replies: u64,
    /// Digest replies not sent because the round's reply budget was spent.
    pub anti_entropy_replies_shed: u64,
    /// Lazy peers promoted to eager by maintenance.
    pub peer_promotions: u64,
    /// Prunes and Grafts naming a root this shard has no tree for (ignored).
    pub unknown_roots: u64,
    /// Roots evicted by `max_roots` (their trees fall back to the template).
    pub root_evictions: u64,
    /// Roots dropped after a silent `message_cache_ttl`.
    pub root_expirations: u64,
    /// Prunes not remembered for stale-push detection (the bound was full).
    pub recent_prunes_shed: u64,
    /// Frames for partitions this shard does not own, and membership Join/Disconnect
    /// frames that reached a shard socket.
    pub misrouted: u64,
    /// Neighbours refused because `max_neighbors` was reached.
    pub neighbors_rejected: u64,
    // Bounded structures.
    /// Origins the seen map evicted to stay within `max_origins` (their history is
    /// forgotten, so an old message of theirs could be delivered again).
    pub seen_origin_evictions: u64,
    /// Origins the seen map dropped after their idle retention.
    pub seen_origin_expirations: u64,
    /// Seen-window slides forced by `max_window` (the holes behind it forgotten).
    pub seen_forced_slides: u64,
    /// Seq jumps read as a new epoch of their origin (a restart), not as gaps.
    pub seen_epochs: u64,
    /// Holes merged into their origin's newest one to stay within the bound.
    pub seen_holes_merged: u64,
    /// Messages declared unrecoverable (known gaps), by reason.
    pub unrecoverable: crate::protocol::gap::GapCounts,
    /// Received messages by the validator's verdict (all zero without one).
    pub validation: crate::protocol::validate::ValidationCounts,
    /// Cached messages evicted early to stay within the entry or byte bound (a Graft
    /// for them can no longer be answered).
    pub cache_evictions: u64,
    /// Cached messages dropped after `message_cache_ttl`.
    pub cache_expirations: u64,
    // Gauges.
    /// Neighbours the shard currently has.
    pub neighbors: u64,
    /// Sum over owned partitions of eager peers.
    pub eager_links: u64,
    /// Sum over owned partitions of lazy peers.
    pub lazy_links: u64,
    /// Origins the seen map tracks.
    pub seen_origins: u64,
    /// Heap bytes the seen map holds (from capacities).
    pub seen_map_bytes: u64,
    /// Holes waiting to be filled or declared.
    pub pending_holes: u64,
    /// Announced messages missing here and waiting for their graft timer.
    pub pending_grafts: u64,
    /// IHave entries queued for all peers, not yet flushed (bounded by
    /// `max_ihave_queue`).
    pub ihave_queue: u64,
    /// Messages in the cache (kept to answer Grafts).
    pub cache_entries: u64,
    /// Payload bytes in the cache.
    pub cache_bytes: u64,
    /// Roots (origins) with per-root trees in this shard.
    pub roots: u64,
    /// Heap bytes of the per-root trees.
    pub roots_bytes: u64,
}

impl ShardStats {
    /// Counts one IHave frame of `n` ids in [`ShardStats::ihave_batch_sizes`].
    pub fn count_ihave_batch(&mut self, n: usize) {
        let i = IHAVE_BATCH_BUCKETS
            .iter()
            .position(|&b| n as u64 <= b)
            .unwrap_or(IHAVE_BATCH_BUCKETS.len());
        self.ihave_batch_sizes[i] += 1;
    }
}
