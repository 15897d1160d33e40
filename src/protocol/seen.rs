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
//! silent for longer than the idle retention (`seen_idle_retention`) are dropped by [`SeenMap::expire`].
//!
//! The window also knows its holes: seqs this shard owns below the highest one it
//! delivered. Each hole waits for its deadline (see `protocol::gap`); what is still
//! missing then, or what a forced slide, an eviction or an expiry forgets, is declared
//! a [`Gap`] and handed out by [`SeenMap::take_gaps`]. Seqs before first contact are
//! never holes: a late joiner reports nothing of the history it never asked for. A seq
//! more than `max_window` past the highest one delivered is a new epoch of the origin
//! (a restart: its counter starts from the wall clock), not a gap.

use std::collections::VecDeque;
use std::mem::size_of;
use std::time::Duration;

use rustc_hash::FxHashMap;

use super::gap::{Gap, GapReason, HOLE_GRACE, MAX_HOLES_PER_ORIGIN};
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
    /// Seconds since the epoch of the last insert, for the idle retention.
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
    /// Origins dropped after the idle retention.
    pub origin_expirations: u64,
    /// Window slides forced by `max_window` (holes forgotten).
    pub forced_slides: u64,
    /// Inserts older than the window's floor (reported as duplicates).
    pub below_floor: u64,
    /// Messages older than an origin's first contact, delivered late (reordering).
    pub early_accepted: u64,
    /// Seq jumps past the window read as a new epoch of the origin (not gaps).
    pub epochs: u64,
    /// Holes merged into their origin's newest one (`MAX_HOLES_PER_ORIGIN`).
    pub holes_merged: u64,
}

/// Seqs `first..=last` that were missing when a delivery above them opened the hole.
#[derive(Debug, Clone, Copy)]
struct Hole {
    first: u64,
    last: u64,
    /// Seconds since the epoch at which what is still missing is declared a gap.
    deadline: u32,
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
    /// Per origin with holes, the holes in seq order (disjoint, deadlines ascending).
    holes: FxHashMap<NodeId, VecDeque<Hole>>,
    /// Gaps declared and not yet taken.
    declared: Vec<Gap>,
    /// `ttl + HOLE_GRACE` in seconds.
    hole_wait_secs: u32,
    partitions: u64,
    /// `fill[r]`: bits of an aligned word whose seqs fall in partitions this shard does
    /// not own, for an origin with `origin_offset % partitions == r`.
    fill: [u64; 64],
    max_origins: usize,
    max_words: usize,
    retention_secs: u32,
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
        retention: Duration,
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
            holes: FxHashMap::default(),
            declared: Vec::new(),
            hole_wait_secs: (ttl + HOLE_GRACE).as_secs().max(1) as u32,
            partitions: p,
            fill,
            max_origins: max_origins.max(1),
            max_words: (max_window / 64).max(1) as usize,
            retention_secs: retention.max(ttl).as_secs().max(1) as u32,
            stats: SeenStats::default(),
        }
    }

    #[inline]
    fn fill_for(&self, origin: NodeId) -> u64 {
        fill_of(&self.fill, self.partitions, origin)
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

    /// Records `id`; tells whether it is new. `now` feeds the idle retention and the hole deadlines.
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
        let high = highest(w, fill);
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
        // A delivery above the highest one so far opens a hole over the owned seqs in
        // between (none when the shard owns none of them); one far past it starts a new
        // epoch, and the old epoch's holes can no longer be told apart from it.
        let from = high.map_or(w.floor, |h| h + 1);
        if id.seq > from {
            if id.seq - from > span {
                self.stats.epochs += 1;
                for h in self.holes.remove(&id.origin).unwrap_or_default() {
                    let missed = unseen(w, fill, h.first, h.last);
                    declare(&mut self.declared, id.origin, h, missed, GapReason::Window);
                }
            } else if unseen(w, fill, from, id.seq - 1) > 0 {
                let holes = self.holes.entry(id.origin).or_default();
                let hole = Hole {
                    first: from,
                    last: id.seq - 1,
                    deadline: now_s.saturating_add(self.hole_wait_secs),
                };
                let full = holes.len() >= MAX_HOLES_PER_ORIGIN;
                match holes.back_mut() {
                    Some(back) if full => {
                        back.last = hole.last;
                        back.deadline = hole.deadline;
                        self.stats.holes_merged += 1;
                    }
                    _ => holes.push_back(hole),
                }
            }
        }
        let mut word = ((id.seq - w.floor) / 64) as usize;
        if word >= max_words {
            // Slide so that `word` becomes the last allowed word; the holes it passes
            // are declared. Sliding may fold complete words too, so recompute from the
            // new floor.
            let shift = word - max_words + 1;
            self.stats.forced_slides += 1;
            if let Some(holes) = self.holes.get_mut(&id.origin) {
                let new_floor = w.floor + 64 * shift as u64;
                while let Some(h) = holes.front_mut() {
                    if h.first >= new_floor {
                        break;
                    }
                    let cut = Hole {
                        last: h.last.min(new_floor - 1),
                        ..*h
                    };
                    let missed = unseen(w, fill, cut.first, cut.last);
                    declare(
                        &mut self.declared,
                        id.origin,
                        cut,
                        missed,
                        GapReason::Window,
                    );
                    if h.last >= new_floor {
                        h.first = new_floor;
                        break;
                    }
                    holes.pop_front();
                }
            }
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
        // (Most deliveries find no holes anywhere: skip the lookup then.)
        if let Some(holes) = (!self.holes.is_empty())
            .then(|| self.holes.get_mut(&id.origin))
            .flatten()
        {
            // A reordered seq usually closes the newest hole; holes the floor passed
            // were filled.
            if holes.back().is_some_and(|h| {
                (h.first..=h.last).contains(&id.seq) && unseen(w, fill, h.first, h.last) == 0
            }) {
                holes.pop_back();
            }
            while holes.front().is_some_and(|h| h.last < w.floor) {
                holes.pop_front();
            }
            if holes.is_empty() {
                self.holes.remove(&id.origin);
            }
        }
        Seen::New
    }

    /// Declares what is still missing of every hole whose deadline passed; the gaps
    /// are then counted as delivered (seen), so a copy arriving later is a duplicate
    /// and delivered + missed stays exact.
    pub fn declare_gaps(&mut self, now: Duration) {
        let now_s = now.as_secs() as u32;
        let mut emptied = Vec::new();
        for (&origin, holes) in self.holes.iter_mut() {
            let fill = fill_of(&self.fill, self.partitions, origin);
            let Some(w) = self.windows.get_mut(&origin) else {
                emptied.push(origin);
                continue;
            };
            while holes.front().is_some_and(|h| h.deadline <= now_s) {
                let h = holes.pop_front().expect("front exists");
                let missed = unseen(w, fill, h.first, h.last);
                if missed > 0 {
                    mark_seen(w, h.first, h.last);
                    declare(&mut self.declared, origin, h, missed, GapReason::Expired);
                }
            }
            compact(w, fill);
            while holes.front().is_some_and(|h| h.last < w.floor) {
                holes.pop_front();
            }
            if holes.is_empty() {
                emptied.push(origin);
            }
        }
        for origin in emptied {
            self.holes.remove(&origin);
        }
        // Reordering opens (and closes) holes at many origins at once; give the table
        // back once it is mostly empty.
        if self.holes.capacity() > 4 * self.holes.len() + 64 {
            self.holes.shrink_to_fit();
        }
    }

    /// Gaps declared since the last call.
    pub fn take_gaps(&mut self) -> Vec<Gap> {
        std::mem::take(&mut self.declared)
    }

    /// Holes waiting for their deadline, over all origins.
    pub fn pending_holes(&self) -> usize {
        self.holes.values().map(VecDeque::len).sum()
    }

    /// Declares the holes of an origin that is being forgotten.
    fn forget_holes(&mut self, origin: NodeId, reason: GapReason) {
        let Some(holes) = self.holes.remove(&origin) else {
            return;
        };
        let Some(w) = self.windows.get(&origin) else {
            return;
        };
        let fill = fill_of(&self.fill, self.partitions, origin);
        for h in holes {
            let missed = unseen(w, fill, h.first, h.last);
            declare(&mut self.declared, origin, h, missed, reason);
        }
    }

    /// Drops origins silent for longer than the retention. Holes of a dropped origin
    /// were opened at its last delivery or before, long enough ago: they are
    /// declared expired.
    pub fn expire(&mut self, now: Duration) -> usize {
        let now_s = now.as_secs() as u32;
        let retention = self.retention_secs;
        let silent: Vec<NodeId> = self
            .windows
            .iter()
            .filter(|(_, w)| now_s.saturating_sub(w.last_active) > retention)
            .map(|(&o, _)| o)
            .collect();
        for &origin in &silent {
            self.forget_holes(origin, GapReason::Expired);
            self.windows.remove(&origin);
            self.early.remove(&origin);
        }
        self.stats.origin_expirations += silent.len() as u64;
        silent.len()
    }

    fn evict_least_recent(&mut self) {
        if let Some(victim) = self
            .windows
            .iter()
            .min_by_key(|(o, w)| (w.last_active, **o))
            .map(|(o, _)| *o)
        {
            self.forget_holes(victim, GapReason::Evicted);
            self.windows.remove(&victim);
            self.early.remove(&victim);
            self.stats.origin_evictions += 1;
        }
    }

    /// Origins tracked.
    pub fn origins(&self) -> usize {
        self.windows.len()
    }

    /// The counters so far.
    pub fn stats(&self) -> SeenStats {
        self.stats
    }

    /// Heap bytes held, from capacities: the hash table (entries plus one control byte
    /// per bucket) and every spill buffer. `tests/seen_map_memory.rs` checks it against
    /// a counting allocator.
    pub fn heap_bytes(&self) -> usize {
        let table = table_bytes(self.windows.capacity(), size_of::<(NodeId, Window)>());
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
        let holes: usize =
            table_bytes(self.holes.capacity(), size_of::<(NodeId, VecDeque<Hole>)>())
                + self
                    .holes
                    .values()
                    .map(|h| h.capacity() * size_of::<Hole>())
                    .sum::<usize>();
        table + spill + early + holes
    }
}

/// Heap bytes of a hash table of `capacity` entries of `entry` bytes: hashbrown keeps
/// capacity * 8/7 buckets, rounded up to a power of two, each with a control byte.
fn table_bytes(capacity: usize, entry: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = (capacity * 8 / 7).next_power_of_two();
    buckets * (entry + 1) + 16
}

#[inline]
fn fill_of(fill: &[u64; 64], partitions: u64, origin: NodeId) -> u64 {
    fill[(origin_offset(origin) & (partitions - 1)) as usize]
}

fn declare(out: &mut Vec<Gap>, origin: NodeId, h: Hole, missed: u64, reason: GapReason) {
    if missed > 0 {
        out.push(Gap {
            origin,
            first: h.first,
            last: h.last,
            missed,
            reason,
        });
    }
}

/// The highest seq seen at or above the floor (None: everything seen is below it).
fn highest(w: &Window, fill: u64) -> Option<u64> {
    let (k, word) = match w
        .spill
        .as_ref()
        .and_then(|s| s.back().map(|&b| (s.len(), b)))
    {
        Some(last) => last,
        None => (0, w.bits),
    };
    let real = word & !fill;
    (real != 0).then(|| w.floor + 64 * k as u64 + 63 - u64::from(real.leading_zeros()))
}

/// Bits `lo..=hi` of a word.
#[inline]
fn range_mask(lo: u64, hi: u64) -> u64 {
    (u64::MAX >> (63 - hi)) & (u64::MAX << lo)
}

/// Word `k` above the floor (words past the window: nothing seen yet).
#[inline]
fn word_at(w: &Window, k: u64, fill: u64) -> u64 {
    if k == 0 {
        w.bits
    } else {
        w.spill
            .as_ref()
            .and_then(|s| s.get(k as usize - 1))
            .copied()
            .unwrap_or(fill)
    }
}

/// The words above `floor` that `first..=last` touches, each with the mask of its
/// bits in the range (seqs below the floor are left out).
fn word_masks(floor: u64, first: u64, last: u64) -> impl Iterator<Item = (u64, u64)> {
    let start = first.max(floor);
    let (k0, k1) = if start > last {
        (1, 0) // empty
    } else {
        ((start - floor) / 64, (last - floor) / 64)
    };
    (k0..=k1).map(move |k| {
        let lo = if k == k0 { (start - floor) % 64 } else { 0 };
        let hi = if k == k1 { (last - floor) % 64 } else { 63 };
        (k, range_mask(lo, hi))
    })
}

/// Owned seqs in `first..=last` not seen (those below the floor count as seen).
fn unseen(w: &Window, fill: u64, first: u64, last: u64) -> u64 {
    word_masks(w.floor, first, last)
        .map(|(k, mask)| u64::from((!word_at(w, k, fill) & mask).count_ones()))
        .sum()
}

/// Marks `first..=last` seen, within the words the window holds.
fn mark_seen(w: &mut Window, first: u64, last: u64) {
    for (k, mask) in word_masks(w.floor, first, last) {
        if k == 0 {
            w.bits |= mask;
        } else if let Some(word) = w.spill.as_mut().and_then(|s| s.get_mut(k as usize - 1)) {
            *word |= mask;
        }
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
        SeenMap::new(
            1,
            1,
            16,
            1024,
            Duration::from_secs(60),
            Duration::from_secs(60),
        )
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
        let mut m = SeenMap::new(
            1,
            1,
            16,
            128,
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
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
        let mut m = SeenMap::new(
            1,
            1,
            16,
            128,
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
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
        let mut m = SeenMap::new(
            1,
            1,
            2,
            1024,
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
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
        let mut m = SeenMap::new(
            4,
            1 << 2,
            16,
            1024,
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
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

    // ---- known gaps ------------------------------------------------------------------

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Seen map with the default 60 s TTL: holes wait 63 s.
    fn gap_map() -> SeenMap {
        SeenMap::new(1, 1, 16, 1024, secs(60), secs(60))
    }

    #[test]
    fn a_hole_still_open_at_its_deadline_is_declared_once_with_its_count() {
        let mut m = gap_map();
        for seq in (100..110).filter(|s| ![103, 104, 107].contains(s)) {
            m.insert(secs(1), id(1, seq));
        }
        assert_eq!(m.pending_holes(), 2, "103-104 and 107");
        m.declare_gaps(secs(63));
        assert!(m.take_gaps().is_empty(), "not before ttl + grace");
        m.declare_gaps(secs(64));
        let gaps = m.take_gaps();
        let missed: u64 = gaps.iter().map(|g| g.missed).sum();
        assert_eq!(missed, 3);
        assert!(gaps.iter().all(|g| g.reason == GapReason::Expired));
        assert_eq!((gaps[0].first, gaps[0].last), (103, 104));
        assert_eq!(m.pending_holes(), 0);
        // Declared seqs now count as seen: a late copy is a duplicate, so delivered
        // plus missed stays exact, and nothing is declared twice.
        assert_eq!(m.insert(secs(65), id(1, 103)), Seen::Duplicate);
        m.declare_gaps(secs(500));
        assert!(m.take_gaps().is_empty());
    }

    #[test]
    fn a_hole_filled_before_its_deadline_is_never_reported() {
        let mut m = gap_map();
        m.insert(secs(1), id(1, 10));
        m.insert(secs(1), id(1, 20));
        assert_eq!(m.pending_holes(), 1);
        // Anti-entropy brings 11..=19 a minute later.
        for seq in 11..20 {
            assert_eq!(m.insert(secs(62), id(1, seq)), Seen::New);
        }
        m.declare_gaps(secs(100));
        assert!(m.take_gaps().is_empty());
        assert_eq!(m.pending_holes(), 0);
    }

    #[test]
    fn a_late_joiner_reports_nothing_before_its_first_contact() {
        // This shard first hears of origin 1 at seq 5000; seqs below it were the
        // origin's history, never asked for.
        let mut m = gap_map();
        for seq in 5000..5100 {
            m.insert(secs(1), id(1, seq));
        }
        m.declare_gaps(secs(1000));
        assert!(m.take_gaps().is_empty());
        // One real hole after first contact is still found.
        m.insert(secs(1000), id(1, 5102));
        m.declare_gaps(secs(1100));
        let gaps = m.take_gaps();
        assert_eq!(gaps.len(), 1);
        assert_eq!(
            (gaps[0].first, gaps[0].last, gaps[0].missed),
            (5100, 5101, 2)
        );
    }

    #[test]
    fn a_restarted_origin_is_a_new_epoch_and_its_old_holes_are_declared() {
        // Seqs start from the incarnation in microseconds: a restart jumps far past
        // the window. The old epoch's hole (1005) is declared, the jump is not a gap,
        // and holes of the new epoch are counted as usual.
        let mut m = gap_map();
        for seq in (1000..1010).filter(|&s| s != 1005) {
            m.insert(secs(1), id(1, seq));
        }
        let restart = 1_000_000_000u64;
        assert_eq!(m.insert(secs(2), id(1, restart)), Seen::New);
        assert_eq!(m.stats().epochs, 1);
        let gaps = m.take_gaps();
        assert_eq!(gaps.len(), 1);
        assert_eq!((gaps[0].first, gaps[0].missed), (1005, 1));
        assert_eq!(gaps[0].reason, GapReason::Window);
        for seq in [restart + 1, restart + 3] {
            m.insert(secs(2), id(1, seq));
        }
        m.declare_gaps(secs(100));
        let gaps = m.take_gaps();
        assert_eq!(gaps.len(), 1);
        assert_eq!((gaps[0].first, gaps[0].missed), (restart + 2, 1));
    }

    #[test]
    fn holes_count_only_the_seqs_this_shard_owns() {
        // 4 partitions, this shard owns one: it sees every 4th seq of the origin.
        let origin = NodeId(99);
        let mut m = SeenMap::new(4, 1 << 2, 16, 1024, secs(60), secs(60));
        let owned: Vec<u64> = (0..400)
            .filter(|&seq| MessageId { origin, seq }.partition(4) == 2)
            .collect();
        // Deliver all owned seqs but three.
        let skipped = [owned[10], owned[11], owned[50]];
        for &seq in owned.iter().filter(|s| !skipped.contains(s)) {
            assert_eq!(m.insert(secs(1), MessageId { origin, seq }), Seen::New);
        }
        m.declare_gaps(secs(64));
        let missed: u64 = m.take_gaps().iter().map(|g| g.missed).sum();
        assert_eq!(missed, 3);
    }

    #[test]
    fn a_forced_slide_declares_the_holes_it_passes() {
        let mut m = SeenMap::new(1, 1, 16, 128, secs(60), secs(60));
        m.insert(secs(1), id(1, 0));
        m.insert(secs(1), id(1, 3)); // holes 1, 2
                                     // 130 is within the window span of the highest seq (3) but needs a slide.
        m.insert(secs(1), id(1, 130));
        let gaps = m.take_gaps();
        let window: u64 = gaps
            .iter()
            .filter(|g| g.reason == GapReason::Window)
            .map(|g| g.missed)
            .sum();
        // 1, 2 and 4..=63 went below the floor unseen.
        assert_eq!(window, 62);
        assert_eq!(m.stats().epochs, 0);
        // 64..=129 still wait for their deadline.
        m.declare_gaps(secs(64));
        let later: u64 = m.take_gaps().iter().map(|g| g.missed).sum();
        assert_eq!(later, 66);
    }

    #[test]
    fn evicted_and_expired_origins_declare_their_open_holes() {
        let mut m = SeenMap::new(1, 1, 1, 1024, secs(60), secs(60));
        m.insert(secs(1), id(1, 0));
        m.insert(secs(1), id(1, 5));
        m.insert(secs(2), id(2, 0)); // evicts origin 1
        let gaps = m.take_gaps();
        assert_eq!(gaps.len(), 1);
        assert_eq!((gaps[0].missed, gaps[0].reason), (4, GapReason::Evicted));
        m.insert(secs(3), id(2, 9));
        assert_eq!(m.expire(secs(100)), 1);
        let gaps = m.take_gaps();
        assert_eq!((gaps[0].missed, gaps[0].reason), (8, GapReason::Expired));
        assert_eq!(m.pending_holes(), 0);
    }

    #[test]
    fn reordering_opens_holes_that_close_without_a_trace() {
        // Consecutive seqs travel different trees and often arrive out of order: the
        // holes that opens are closed as the floor passes them.
        let mut m = gap_map();
        for pair in (0..10_000u64).collect::<Vec<_>>().chunks(2) {
            m.insert(secs(1), id(1, pair[1]));
            m.insert(secs(1), id(1, pair[0]));
        }
        assert!(m.pending_holes() <= 1, "{}", m.pending_holes());
        m.declare_gaps(secs(100));
        assert!(m.take_gaps().is_empty());
    }
}
