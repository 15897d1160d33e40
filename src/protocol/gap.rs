//! Known gaps: messages of an origin that this shard will never deliver, reported with
//! their count instead of being lost silently.
//!
//! Message ids are dense per origin, so a shard that delivered seq `s` of an origin
//! knows that every seq it owns between the origin's previous highest delivered seq and
//! `s` exists. Such a *hole* waits `message_cache_ttl` plus [`HOLE_GRACE`] (from the
//! delivery that opened it: by then the missing payloads have expired from every
//! cache) for Gossip, a Graft answer or anti-entropy to fill it; what is still missing
//! then is declared a [`Gap`]. Only deliveries open holes: a digest never does, so a
//! forged digest cannot make a node report anything.

use std::time::Duration;

use crate::ids::NodeId;

/// How long after `message_cache_ttl` a hole still waits: one anti-entropy round and
/// its pull, with room for a retry.
pub const HOLE_GRACE: Duration = Duration::from_secs(3);

/// Most pending holes per origin; a further hole is merged into the newest one (the
/// merged hole waits for the later deadline, so merging never reports early).
pub const MAX_HOLES_PER_ORIGIN: usize = 64;

/// Why a gap can no longer be filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GapReason {
    /// The hole outlived the payload cache everywhere (`message_cache_ttl` after the
    /// delivery that revealed it, plus [`HOLE_GRACE`]).
    Expired,
    /// `max_seen_window` forced the origin's window past the hole.
    Window,
    /// The origin was evicted from the seen map (`max_seen_origins`).
    Evicted,
}

impl GapReason {
    /// Every reason, in the order metrics list them.
    pub const ALL: [GapReason; 3] = [GapReason::Expired, GapReason::Window, GapReason::Evicted];

    /// The `reason` label of `plumtree_unrecoverable_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::Expired => "expired",
            GapReason::Window => "window",
            GapReason::Evicted => "evicted",
        }
    }
}

/// Seqs `first..=last` of `origin` held `missed` messages this shard owns and never
/// delivered (the others in the range were delivered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The node whose messages are missing.
    pub origin: NodeId,
    /// Lowest seq of the range (inclusive).
    pub first: u64,
    /// Highest seq of the range (inclusive).
    pub last: u64,
    /// Messages in the range that this shard owns and will never deliver.
    pub missed: u64,
    /// Why they can no longer be filled.
    pub reason: GapReason,
}

/// Unrecoverable messages by reason, indexed like [`GapReason::ALL`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GapCounts {
    /// Messages given up on as [`GapReason::Expired`].
    pub expired: u64,
    /// Messages given up on as [`GapReason::Window`].
    pub window: u64,
    /// Messages given up on as [`GapReason::Evicted`].
    pub evicted: u64,
}

impl GapCounts {
    /// Counts `n` more messages lost for `reason`.
    pub fn add(&mut self, reason: GapReason, n: u64) {
        match reason {
            GapReason::Expired => self.expired += n,
            GapReason::Window => self.window += n,
            GapReason::Evicted => self.evicted += n,
        }
    }

    /// Messages lost for `reason` so far.
    pub fn get(&self, reason: GapReason) -> u64 {
        match reason {
            GapReason::Expired => self.expired,
            GapReason::Window => self.window,
            GapReason::Evicted => self.evicted,
        }
    }

    /// Messages lost for any reason.
    pub fn total(&self) -> u64 {
        self.expired + self.window + self.evicted
    }
}
