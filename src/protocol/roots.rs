//! Per-root trees: for every (partition, root) a shard has seen messages of, the eager
//! set of that root's tree, so a prune decided on one origin's message only shapes
//! that origin's tree (riak_core broadcast, Partisan). A root seen for the first time
//! starts from a copy of its partition's template (the shared tree).
//!
//! Memory: roots are interned once per shard into a slot (an LRU entry, about 60
//! bytes), and each owned partition keeps one `u64` eager mask per slot plus one valid
//! bit, so 10,000 roots over 64 partitions take about 5.3 MB. The number of roots is
//! bounded by `max_roots`: the least recently used root is evicted (its trees fall back
//! to the template when it is seen again), and roots silent for the cache TTL expire.

use std::num::NonZeroUsize;

use lru::LruCache;

use super::event::Time;
use super::peers::{remap_mask, Removed};
use crate::ids::NodeId;

/// A root's slot and when a message of it was last handled.
#[derive(Clone, Copy, Debug)]
struct Entry {
    slot: u32,
    last_used: Time,
}

/// One partition's trees, indexed by root slot.
#[derive(Clone, Debug, Default)]
struct PartitionTrees {
    eager: Vec<u64>,
    /// Bit per slot: the tree exists (else the root's next message copies the template).
    valid: Vec<u64>,
}

impl PartitionTrees {
    fn is_valid(&self, slot: u32) -> bool {
        let (w, b) = (slot as usize / 64, slot % 64);
        self.valid.get(w).is_some_and(|v| v & (1 << b) != 0)
    }

    fn set_valid(&mut self, slot: u32, on: bool) {
        let (w, b) = (slot as usize / 64, slot % 64);
        if self.valid.len() <= w {
            if !on {
                return;
            }
            self.valid.resize(w + 1, 0);
        }
        if on {
            self.valid[w] |= 1 << b;
        } else {
            self.valid[w] &= !(1 << b);
        }
    }
}

/// The per-root trees of one shard. Eager sets are neighbour-index masks (see
/// [`super::peers`]); the shard keeps them in step with its neighbour table.
pub struct RootTrees {
    roots: LruCache<NodeId, Entry>,
    free: Vec<u32>,
    next_slot: u32,
    /// Indexed by partition number; only owned partitions are ever touched.
    parts: Vec<PartitionTrees>,
    evictions: u64,
    expirations: u64,
}

impl RootTrees {
    /// Tables for `partitions` partitions and at most `max_roots` roots.
    pub fn new(partitions: u32, max_roots: usize) -> Self {
        Self {
            roots: LruCache::new(NonZeroUsize::new(max_roots.max(1)).expect("at least 1")),
            free: Vec::new(),
            next_slot: 0,
            parts: vec![PartitionTrees::default(); partitions as usize],
            evictions: 0,
            expirations: 0,
        }
    }

    /// Roots tracked.
    pub fn len(&self) -> usize {
        self.roots.len()
    }

    /// Whether no root is tracked.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// Roots evicted by the `max_roots` bound.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Roots expired after a silent TTL.
    pub fn expirations(&self) -> u64 {
        self.expirations
    }

    /// Heap bytes of the tables (for the bytes-per-root figure in
    /// bench/results/HISTORY.md, and tests).
    pub fn heap_bytes(&self) -> usize {
        let lru = self.roots.cap().get()
            * (std::mem::size_of::<NodeId>() + std::mem::size_of::<Entry>() + 2 * 8 + 8);
        let parts: usize = self
            .parts
            .iter()
            .map(|p| p.eager.capacity() * 8 + p.valid.capacity() * 8)
            .sum();
        lru + parts + self.free.capacity() * 4
    }

    /// The eager mask of `root`'s tree in `partition`, if that tree exists; marks the
    /// root used.
    pub fn get(&mut self, now: Time, partition: u16, root: NodeId) -> Option<u64> {
        let e = self.roots.get_mut(&root)?;
        e.last_used = now;
        let slot = e.slot;
        let part = &self.parts[partition as usize];
        part.is_valid(slot).then(|| part.eager[slot as usize])
    }

    /// The eager mask of `root`'s tree in `partition`, if it exists, without marking
    /// the root used.
    pub fn peek(&self, partition: u16, root: NodeId) -> Option<u64> {
        let slot = self.roots.peek(&root)?.slot;
        let part = &self.parts[partition as usize];
        part.is_valid(slot).then(|| part.eager[slot as usize])
    }

    /// The eager mask of `root`'s tree in `partition`, created from `template` when the
    /// root or its tree in this partition is new (evicting the least recently used
    /// root at the bound).
    pub fn get_or_seed(&mut self, now: Time, partition: u16, root: NodeId, template: u64) -> u64 {
        let slot = self.slot(now, root);
        let part = &mut self.parts[partition as usize];
        if !part.is_valid(slot) {
            let need = slot as usize + 1;
            if part.eager.len() < need {
                // Grow by an eighth, not double: 64 of these per shard dominate the
                // memory of the per-root trees.
                if part.eager.capacity() < need {
                    let more = (part.eager.capacity() / 8)
                        .max(64)
                        .max(need - part.eager.len());
                    part.eager.reserve_exact(more);
                }
                part.eager.resize(need, 0);
            }
            part.eager[slot as usize] = template;
            part.set_valid(slot, true);
        }
        part.eager[slot as usize]
    }

    /// Stores `eager` as `root`'s tree in `partition` (the tree must exist).
    pub fn set(&mut self, partition: u16, root: NodeId, eager: u64) {
        if let Some(e) = self.roots.peek(&root) {
            let slot = e.slot as usize;
            let part = &mut self.parts[partition as usize];
            if part.is_valid(e.slot) {
                part.eager[slot] = eager;
            }
        }
    }

    /// Applies `f` to every existing tree of every partition in `owned`.
    pub fn for_each_tree(&mut self, owned: u64, mut f: impl FnMut(u16, &mut u64)) {
        for p in super::peers::bits(owned) {
            let part = &mut self.parts[p];
            for (w, &valid) in part.valid.iter().enumerate() {
                for b in super::peers::bits(valid) {
                    f(p as u16, &mut part.eager[w * 64 + b]);
                }
            }
        }
    }

    /// A neighbour was removed: every tree's mask follows the index change.
    pub fn neighbor_removed(&mut self, owned: u64, r: Removed) {
        self.for_each_tree(owned, |_, m| *m = remap_mask(*m, r));
    }

    /// Drops roots silent for longer than `ttl`; returns how many.
    pub fn expire(&mut self, now: Time, ttl: Time) -> usize {
        let mut n = 0;
        while let Some((_, e)) = self.roots.peek_lru() {
            if now.saturating_sub(e.last_used) <= ttl {
                break;
            }
            let (_, e) = self.roots.pop_lru().expect("peeked");
            self.release(e.slot);
            self.expirations += 1;
            n += 1;
        }
        n
    }

    fn slot(&mut self, now: Time, root: NodeId) -> u32 {
        if let Some(e) = self.roots.get_mut(&root) {
            e.last_used = now;
            return e.slot;
        }
        if self.roots.len() == self.roots.cap().get() {
            if let Some((_, e)) = self.roots.pop_lru() {
                self.release(e.slot);
                self.evictions += 1;
            }
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.next_slot += 1;
            self.next_slot - 1
        });
        self.roots.put(
            root,
            Entry {
                slot,
                last_used: now,
            },
        );
        slot
    }

    fn release(&mut self, slot: u32) {
        for part in &mut self.parts {
            part.set_valid(slot, false);
        }
        self.free.push(slot);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn new_root_copies_template_and_keeps_its_own_mask() {
        let mut t = RootTrees::new(4, 8);
        assert_eq!(t.get(Duration::ZERO, 1, NodeId(7)), None);
        assert_eq!(t.get_or_seed(Duration::ZERO, 1, NodeId(7), 0b101), 0b101);
        t.set(1, NodeId(7), 0b001);
        // The template changing later does not touch an existing tree.
        assert_eq!(t.get_or_seed(Duration::ZERO, 1, NodeId(7), 0b111), 0b001);
        // Another partition of the same root is its own tree.
        assert_eq!(t.get(Duration::ZERO, 2, NodeId(7)), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn least_recently_used_root_is_evicted_back_to_the_template() {
        let mut t = RootTrees::new(1, 2);
        let z = Duration::ZERO;
        t.get_or_seed(z, 0, NodeId(1), 0b1);
        t.set(0, NodeId(1), 0b10);
        t.get_or_seed(z, 0, NodeId(2), 0b1);
        // Root 1 used again, so root 2 is the least recently used.
        assert_eq!(t.get(z, 0, NodeId(1)), Some(0b10));
        t.get_or_seed(z, 0, NodeId(3), 0b1);
        assert_eq!(t.evictions(), 1);
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(z, 0, NodeId(2)), None);
        assert_eq!(t.get(z, 0, NodeId(1)), Some(0b10));
        // Root 2 comes back: it starts from the template again.
        assert_eq!(t.get_or_seed(z, 0, NodeId(2), 0b100), 0b100);
        assert_eq!(t.get(z, 0, NodeId(3)), None, "root 3 was the LRU now");
    }

    #[test]
    fn silent_roots_expire() {
        let mut t = RootTrees::new(1, 8);
        t.get_or_seed(Duration::from_secs(1), 0, NodeId(1), 1);
        t.get_or_seed(Duration::from_secs(50), 0, NodeId(2), 1);
        assert_eq!(
            t.expire(Duration::from_secs(70), Duration::from_secs(60)),
            1
        );
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(Duration::from_secs(70), 0, NodeId(1)), None);
        assert!(t.get(Duration::from_secs(70), 0, NodeId(2)).is_some());
        assert_eq!(t.expirations(), 1);
    }

    #[test]
    fn random_roots_cannot_grow_past_the_bound() {
        let mut t = RootTrees::new(64, 100);
        for r in 0..100_000u64 {
            t.get_or_seed(Duration::ZERO, (r % 64) as u16, NodeId(r), 1);
        }
        assert_eq!(t.len(), 100);
        assert!(t.next_slot <= 100, "slots are reused: {}", t.next_slot);
    }
}
