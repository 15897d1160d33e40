//! The seen map: which message ids this shard has already delivered.
//!
//! Message ids are `(origin, seq)` with `seq` from a per-origin counter, so instead of
//! one hash entry per message the map keeps, per origin, a *sequence window*: a floor
//! below which everything counts as seen, plus a bitmap of the 64-aligned words above
//! it. A word that is completely seen is folded into the floor and costs nothing, so
//! a steady stream from one origin costs about one bit per in-flight message.
//!
//! A shard only owns some partitions, and `MessageId::partition` maps consecutive
//! sequence numbers round-robin onto partitions. Bits of sequence numbers this shard
//! will never see are pre-set when a word is opened (`fill` masks), so words still
//! fill up and fold into the floor.
//!
//! A shard's first message from an origin is not necessarily the oldest one still in
//! flight, so seqs up to `max_window` before that first contact are accepted once
//! each, tracked in a small per-origin list.
//!
//! Bounds: at most `max_origins` origins (the least recently active is evicted when a
//! new one arrives), at most `max_window` sequence numbers per origin (the window is
//! slid forward, forgetting holes, when a newer message would exceed it), and origins
//! silent for longer than the TTL are dropped by [`SeenMap::expire`].

use std::collections::VecDeque;
use std::mem::size_of;
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::ids::{origin_offset, MessageId, NodeId};

/// Most late seqs tracked per origin below its first-contact point.
const MAX_EARLY: usize = 4096;

/// Outcome of [`SeenMap::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time: deliver it.
    New,
    /// Already seen (or older than what the window remembers).
    Duplicate,
}

/// Per-origin sequence window. 32 bytes; the spill words are allocated only while
/// more than one word is open.
#[derive(Debug, Clone)]
struct Window {
    /// Multiple of 64; every seq below it counts as seen.
    floor: u64,
    /// Seen bits for `floor..floor + 64`.
    bits: u64,
    /// Seen bits for the following words, in order. Boxed so that a window with no
    /// spill costs 8 bytes here instead of an inline 32-byte `VecDeque`.
    #[allow(clippy::box_collection)]
    spill: Option<Box<VecDeque<u64>>>,
    /// Seconds since the epoch of the last insert, for the TTL.
    last_active: u32,
    /// Low [`LAG_BITS`] bits: words the floor has advanced since the window was
    /// opened (saturating at [`LAG_MAX`]: no longer known); top 6 bits: the first
    /// contact's seq within its word. Together they give the exact first-contact seq
    /// without storing it.
    opened_lag: u32,
}

/// Bits of `Window::opened_lag` that count words.
const LAG_BITS: u32 = 26;
/// Saturated word lag: the opening point is no longer representable.
const LAG_MAX: u32 = (1 << LAG_BITS) - 1;

impl Window {
    /// Where the window was opened (the first-contact seq), if still representable.
    fn opened(&self) -> Option<u64> {
        let lag = self.opened_lag & LAG_MAX;
        let offset = u64::from(self.opened_lag >> LAG_BITS);
        (lag != LAG_MAX).then(|| self.floor - 64 * u64::from(lag) + offset)
    }

    fn advance(&mut self, words: u64) {
        self.floor += 64 * words;
        let lag = (u64::from(self.opened_lag & LAG_MAX) + words).min(u64::from(LAG_MAX)) as u32;
        self.opened_lag = (self.opened_lag & !LAG_MAX) | lag;
    }
}

/// Counters the seen map owns.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SeenStats {
    /// Origins evicted to stay within `max_origins`.
    pub origin_evictions: u64,
    /// Origins dropped after a TTL of silence.
    pub origin_expirations: u64,
    /// Window slides forced by `max_window` (holes forgotten).
    pub forced_slides: u64,
    /// Inserts older than the window's floor (reported as duplicates).
    pub below_floor: u64,
    /// Messages older than an origin's first contact, delivered late (reordering).
    pub early_accepted: u64,
}

/// Bounded per-shard seen map. See the module documentation.
#[derive(Debug)]
pub struct SeenMap {
    windows: FxHashMap<NodeId, Window>,
    /// Per origin, seqs below its first-contact point that were delivered late. A
    /// shard's first message from an origin is not necessarily that origin's first
    /// message in flight (partitions travel on different trees, grafts take time), so
    /// up to `max_window` seqs before first contact are tracked individually. Rare and
    /// bounded by `MAX_EARLY` per origin.
    early: FxHashMap<NodeId, Vec<u64>>,
    partitions: u64,
    /// `fill[r]`: bits of an aligned word whose seqs fall in partitions this shard does
    /// not own, for an origin with `origin_offset % partitions == r`.
    fill: [u64; 64],
    max_origins: usize,
    max_words: usize,
    ttl_secs: u32,
    stats: SeenStats,
}

impl SeenMap {
    /// `owned`: mask of partitions this shard owns; `partitions` a power of two <= 64.
    pub fn new(
        partitions: u32,
        owned: u64,
        max_origins: usize,
        max_window: u64,
        ttl: Duration,
    ) -> Self {
        let p = partitions as u64;
        let mut fill = [0u64; 64];
        for (r, f) in fill.iter_mut().enumerate().take(partitions as usize) {
            for j in 0..64u64 {
                let part = (r as u64 + j) & (p - 1);
                if owned & (1 << part) == 0 {
                    *f |= 1 << j;
                }
            }
        }
        Self {
            windows: FxHashMap::default(),
            early: FxHashMap::default(),
            partitions: p,
            fill,
            max_origins: max_origins.max(1),
            max_words: (max_window / 64).max(1) as usize,
            ttl_secs: ttl.as_secs().max(1) as u32,
            stats: SeenStats::default(),
        }
    }

    #[inline]
    fn fill_for(&self, origin: NodeId) -> u64 {
        self.fill[(origin_offset(origin) & (self.partitions - 1)) as usize]
    }

    /// Whether `seq` lies in the span tracked before first contact (so the early list
    /// decides) rather than being old or in the window.
    fn in_early_span(&self, w: &Window, seq: u64) -> bool {
        w.opened()
            .is_some_and(|opened| seq < opened && opened - seq <= self.max_words as u64 * 64)
    }

    /// Whether `id` was seen, without recording anything.
    pub fn contains(&self, id: MessageId) -> bool {
        let Some(w) = self.windows.get(&id.origin) else {
            return false;
        };
        if self.in_early_span(w, id.seq) {
            return self
                .early
                .get(&id.origin)
                .is_some_and(|e| e.contains(&id.seq));
        }
        if id.seq < w.floor {
            return true;
        }
        let off = id.seq - w.floor;
        let word = (off / 64) as usize;
        let b = 1u64 << (off % 64);
        match word {
            0 => w.bits & b != 0,
            n => w
                .spill
                .as_ref()
                .and_then(|s| s.get(n - 1))
                .is_some_and(|bits| bits & b != 0),
        }
    }

    /// Records `id`; tells whether it is new. `now` feeds the TTL.
    pub fn insert(&mut self, now: Duration, id: MessageId) -> Seen {
        let now_s = now.as_secs() as u32;
        let fill = self.fill_for(id.origin);
        if !self.windows.contains_key(&id.origin) && self.windows.len() >= self.max_origins {
            self.evict_least_recent();
        }
        let max_words = self.max_words;
        // The first contact's word starts out with the seqs below it marked: those
        // are tracked by the early list, and left open they would keep the word from
        // ever folding (an origin's first seq is rarely a multiple of 64), pinning the
        // floor until `max_window` forced a slide.
        let w = self.windows.entry(id.origin).or_insert_with(|| {
            let offset = id.seq & 63;
            Window {
                floor: id.seq & !63,
                bits: fill | ((1u64 << offset) - 1),
                spill: None,
                last_active: now_s,
                opened_lag: (offset as u32) << LAG_BITS,
            }
        });
        w.last_active = now_s;
        let span = max_words as u64 * 64;
        let early_span = w
            .opened()
            .is_some_and(|opened| id.seq < opened && opened - id.seq <= span);
        if early_span || id.seq < w.floor {
            if early_span {
                let early = self.early.entry(id.origin).or_default();
                if early.contains(&id.seq) {
                    return Seen::Duplicate;
                }
                if early.len() < MAX_EARLY {
                    early.push(id.seq);
                    self.stats.early_accepted += 1;
                    return Seen::New;
                }
            }
            self.stats.below_floor += 1;
            return Seen::Duplicate;
        }
        let mut word = ((id.seq - w.floor) / 64) as usize;
        if word >= max_words {
            // Slide so that `word` becomes the last allowed word; forget the holes.
            // Sliding may fold complete words too, so recompute from the new floor.
            let shift = word - max_words + 1;
            self.stats.forced_slides += 1;
            slide(w, shift, fill);
            if id.seq < w.floor {
                // Its word was complete: it had been seen.
                return Seen::Duplicate;
            }
            word = ((id.seq - w.floor) / 64) as usize;
        }
        let b = 1u64 << ((id.seq - w.floor) % 64);
        let slot = if word == 0 {
            &mut w.bits
        } else {
            let spill = w.spill.get_or_insert_with(Default::default);
            while spill.len() < word {
                spill.push_back(fill);
            }
            &mut spill[word - 1]
        };
        if *slot & b != 0 {
            return Seen::Duplicate;
        }
        *slot |= b;
        if word == 0 && w.bits == u64::MAX {
            compact(w, fill);
        }
        Seen::New
    }

    /// Drops origins silent for longer than the TTL; returns how many.
    pub fn expire(&mut self, now: Duration) -> usize {
        let now_s = now.as_secs() as u32;
        let ttl = self.ttl_secs;
        let before = self.windows.len();
        self.windows
            .retain(|_, w| now_s.saturating_sub(w.last_active) <= ttl);
        let windows = &self.windows;
        self.early.retain(|o, _| windows.contains_key(o));
        let removed = before - self.windows.len();
        self.stats.origin_expirations += removed as u64;
        removed
    }

    fn evict_least_recent(&mut self) {
        if let Some(victim) = self
            .windows
            .iter()
            .min_by_key(|(o, w)| (w.last_active, **o))
            .map(|(o, _)| *o)
        {
            self.windows.remove(&victim);
            self.early.remove(&victim);
            self.stats.origin_evictions += 1;
        }
    }

    /// Origins tracked.
    pub fn origins(&self) -> usize {
        self.windows.len()
    }

    pub fn stats(&self) -> SeenStats {
        self.stats
    }

    /// Heap bytes held, from capacities: the hash table (entries plus one control byte
    /// per bucket) and every spill buffer. `tests/seen_map_memory.rs` checks it against
    /// a counting allocator.
    pub fn heap_bytes(&self) -> usize {
        let table = if self.windows.capacity() == 0 {
            0
        } else {
            // hashbrown keeps capacity * 8/7 buckets, rounded up to a power of two.
            let buckets = (self.windows.capacity() * 8 / 7).next_power_of_two();
            buckets * (size_of::<(NodeId, Window)>() + 1) + 16
        };
        let spill: usize = self
            .windows
            .values()
            .filter_map(|w| w.spill.as_ref())
            .map(|s| size_of::<VecDeque<u64>>() + s.capacity() * 8)
            .sum();
        let early: usize = self
            .early
            .values()
            .map(|e| e.capacity() * 8 + size_of::<(NodeId, Vec<u64>)>() + 1)
            .sum();
        table + spill + early
    }
}

/// Moves the floor `shift` words up, dropping those words.
fn slide(w: &mut Window, shift: usize, fill: u64) {
    let spill_len = w.spill.as_ref().map_or(0, |s| s.len());
    if shift > spill_len {
        w.advance(shift as u64);
        w.bits = fill;
        w.spill = None;
        return;
    }
    let spill = w.spill.as_mut().expect("spill_len > 0");
    for _ in 1..shift {
        spill.pop_front();
    }
    w.bits = spill.pop_front().unwrap_or(fill);
    w.advance(shift as u64);
    compact(w, fill);
}

/// Folds completely seen leading words into the floor.
fn compact(w: &mut Window, fill: u64) {
    while w.bits == u64::MAX {
        w.advance(1);
        match w.spill.as_mut().and_then(|s| s.pop_front()) {
            Some(next) => w.bits = next,
            None => {
                w.bits = fill;
                w.spill = None;
                // fill is never all ones: every partition occurs in any 64 consecutive
                // seqs and the shard owns at least one, so this loop ends.
                debug_assert_ne!(fill, u64::MAX);
                break;
            }
        }
    }
    if w.spill.as_ref().is_some_and(|s| s.is_empty()) {
        w.spill = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(origin: u64, seq: u64) -> MessageId {
        MessageId {
            origin: NodeId(origin),
            seq,
        }
    }

    fn map() -> SeenMap {
        SeenMap::new(1, 1, 16, 1024, Duration::from_secs(60))
    }

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn first_insert_is_new_second_is_duplicate() {
        let mut m = map();
        assert_eq!(m.insert(T, id(1, 5)), Seen::New);
        assert!(m.contains(id(1, 5)));
        assert!(!m.contains(id(1, 6)));
        assert_eq!(m.insert(T, id(1, 5)), Seen::Duplicate);
        assert_eq!(m.insert(T, id(2, 5)), Seen::New, "origins are independent");
    }

    #[test]
    fn out_of_order_within_window_is_accepted() {
        let mut m = map();
        for seq in [5, 300, 10, 299, 64, 0, 1000] {
            assert_eq!(m.insert(T, id(7, seq)), Seen::New, "seq {seq}");
        }
        for seq in [5, 300, 10, 299, 64, 0, 1000] {
            assert_eq!(m.insert(T, id(7, seq)), Seen::Duplicate, "seq {seq}");
        }
    }

    #[test]
    fn messages_older_than_first_contact_are_delivered_once() {
        // A shard that first hears of an origin at seq 300 (its earlier messages travel
        // on slower trees) still takes 255, 10, ... once each.
        let mut m = map();
        assert_eq!(m.insert(T, id(7, 300)), Seen::New);
        assert_eq!(m.insert(T, id(7, 256)), Seen::New);
        assert!(!m.contains(id(7, 255)));
        assert_eq!(m.insert(T, id(7, 255)), Seen::New);
        assert!(m.contains(id(7, 255)));
        assert_eq!(m.insert(T, id(7, 255)), Seen::Duplicate);
        assert_eq!(m.insert(T, id(7, 10)), Seen::New);
        assert_eq!(m.insert(T, id(7, 10)), Seen::Duplicate);
        // 256 (same word as 300, but before it), 255 and 10.
        assert_eq!(m.stats().early_accepted, 3);
        // Even after the floor moves on, the early span stays anchored at first contact.
        for seq in 256..2000 {
            m.insert(T, id(7, seq));
        }
        assert_eq!(m.insert(T, id(7, 11)), Seen::New);
        assert_eq!(m.insert(T, id(7, 10)), Seen::Duplicate);
        assert_eq!(m.insert(T, id(7, 1500)), Seen::Duplicate);
    }

    #[test]
    fn the_early_span_is_bounded_by_the_window() {
        // max_window 1024: seqs more than 1024 before first contact are simply old.
        let mut m = map();
        assert_eq!(m.insert(T, id(7, 10_000)), Seen::New);
        assert_eq!(m.insert(T, id(7, 10_000 - 1024)), Seen::New);
        assert_eq!(m.insert(T, id(7, 10_000 - 1025)), Seen::Duplicate);
        assert!(m.contains(id(7, 5)));
    }

    #[test]
    fn dense_stream_folds_into_floor_and_frees_spill() {
        let mut m = map();
        for seq in 0..10_000 {
            assert_eq!(m.insert(T, id(1, seq)), Seen::New);
        }
        let w = &m.windows[&NodeId(1)];
        assert_eq!(w.floor, 9984);
        assert!(w.spill.is_none());
        assert!(m.contains(id(1, 0)) && m.contains(id(1, 9999)));
        assert!(!m.contains(id(1, 10_000)));
    }

    #[test]
    fn a_stream_first_met_mid_word_still_folds() {
        // Found by the soak benchmark: an origin's seqs start at its start time in
        // microseconds, so first contact is mid-word. The seqs below it in that word
        // never come, and used to pin the floor until max_window forced a slide, so
        // every origin's window grew to the bound.
        let mut m = map();
        let first = 1_000_037;
        for seq in first..first + 10_000 {
            assert_eq!(m.insert(T, id(1, seq)), Seen::New);
        }
        let w = &m.windows[&NodeId(1)];
        assert_eq!(w.floor, (first + 10_000) & !63);
        assert!(w.spill.is_none());
        assert_eq!(m.stats().forced_slides, 0);
        // The seqs of the first word below first contact are still delivered once,
        // late (the early list), like any seq before first contact.
        assert!(!m.contains(id(1, first - 1)));
        assert_eq!(m.insert(T, id(1, first - 1)), Seen::New);
        assert_eq!(m.insert(T, id(1, first - 1)), Seen::Duplicate);
        assert_eq!(m.insert(T, id(1, first & !63)), Seen::New);
        assert_eq!(m.stats().early_accepted, 2);
    }

    #[test]
    fn window_bound_forces_slide_and_forgets_holes() {
        let mut m = SeenMap::new(1, 1, 16, 128, Duration::from_secs(60));
        assert_eq!(m.insert(T, id(1, 0)), Seen::New);
        // seq 1 is a hole; 200 is beyond 2 words from floor 0 -> slide.
        assert_eq!(m.insert(T, id(1, 200)), Seen::New);
        assert_eq!(m.stats().forced_slides, 1);
        // The hole is now below the floor and reported as duplicate.
        assert_eq!(m.insert(T, id(1, 1)), Seen::Duplicate);
        assert_eq!(m.stats().below_floor, 1);
        assert_eq!(m.insert(T, id(1, 200)), Seen::Duplicate);
    }

    #[test]
    fn slide_that_folds_complete_words_keeps_bits_aligned() {
        // Window of 2 words. Fill word 1 completely and leave a hole in word 0.
        let mut m = SeenMap::new(1, 1, 16, 128, Duration::from_secs(60));
        for seq in (0..128).filter(|&s| s != 5) {
            assert_eq!(m.insert(T, id(1, seq)), Seen::New);
        }
        // seq 130 needs word 2: slide by one word (forgetting hole 5), which makes the
        // complete word 1 fold into the floor too.
        assert_eq!(m.insert(T, id(1, 130)), Seen::New);
        // Every other seq in 128..192 is still new, and 130 is now a duplicate.
        for seq in (128..192).filter(|&s| s != 130) {
            assert_eq!(m.insert(T, id(1, seq)), Seen::New, "seq {seq}");
        }
        assert_eq!(m.insert(T, id(1, 130)), Seen::Duplicate);
        assert_eq!(m.insert(T, id(1, 5)), Seen::Duplicate, "forgotten hole");
    }

    #[test]
    fn origin_bound_evicts_least_recently_active() {
        let mut m = SeenMap::new(1, 1, 2, 1024, Duration::from_secs(60));
        m.insert(Duration::from_secs(1), id(1, 0));
        m.insert(Duration::from_secs(2), id(2, 0));
        m.insert(Duration::from_secs(3), id(3, 0));
        assert_eq!(m.origins(), 2);
        assert_eq!(m.stats().origin_evictions, 1);
        assert!(!m.contains(id(1, 0)));
        assert!(m.contains(id(2, 0)) && m.contains(id(3, 0)));
    }

    #[test]
    fn ttl_expires_silent_origins() {
        let mut m = map();
        m.insert(Duration::from_secs(1), id(1, 0));
        m.insert(Duration::from_secs(50), id(2, 0));
        assert_eq!(m.expire(Duration::from_secs(62)), 1);
        assert!(!m.contains(id(1, 0)));
        assert!(m.contains(id(2, 0)));
        assert_eq!(m.stats().origin_expirations, 1);
    }

    #[test]
    fn unowned_partitions_are_prefilled_so_words_fold() {
        // 4 partitions, this shard owns partition 2 only: it sees every 4th seq.
        let mut m = SeenMap::new(4, 1 << 2, 16, 1024, Duration::from_secs(60));
        let origin = NodeId(99);
        let mut owned = 0;
        for seq in 0..4096u64 {
            let mid = MessageId { origin, seq };
            if mid.partition(4) == 2 {
                assert_eq!(m.insert(T, mid), Seen::New);
                owned += 1;
            }
        }
        assert_eq!(owned, 1024);
        let w = &m.windows[&origin];
        assert_eq!(w.floor, 4096, "every word folded");
        assert!(w.spill.is_none());
    }
}
