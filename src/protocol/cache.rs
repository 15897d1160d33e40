//! Payload cache: answers Grafts and feeds the hop-count optimisation. Bounded by
//! entries and bytes (oldest evicted first) and by the TTL.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use rustc_hash::FxHashMap;

use crate::ids::{MessageId, NodeId};
use crate::topic::Topic;

/// A cached message.
#[derive(Debug, Clone)]
pub struct CachedMessage {
    /// The topic it was broadcast on, resent with it.
    pub topic: Topic,
    /// The application's bytes, resent to a grafting peer.
    pub payload: Bytes,
    /// Round this shard forwards the message with (0 for its own broadcasts).
    pub round: u16,
    /// Who delivered it to us (ourselves for our own broadcasts).
    pub from: NodeId,
    /// When it was delivered (or broadcast) here.
    pub at: Duration,
    /// Whether it came over a link of its root's tree here (or was our own): a copy
    /// from a peer outside the tree is a stale push still in flight after a prune.
    pub via_tree: bool,
}

/// Counters the cache owns.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Entries evicted early to respect the entry or byte bound.
    pub evictions: u64,
    /// Entries dropped after their TTL.
    pub expirations: u64,
}

/// FIFO-ordered payload cache.
#[derive(Debug)]
pub struct PayloadCache {
    map: FxHashMap<MessageId, CachedMessage>,
    /// Insertion order with insertion time; every map entry appears exactly once.
    order: VecDeque<(MessageId, Duration)>,
    /// Entries ever popped from the front of `order`: `popped + i` is the stable
    /// position of `order[i]`, which anti-entropy cursors walk.
    popped: u64,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
    stats: CacheStats,
}

impl PayloadCache {
    /// An empty cache holding at most `max_entries` messages (at least one) and
    /// `max_bytes` payload bytes (one message is kept even if it alone is larger).
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            map: FxHashMap::default(),
            order: VecDeque::new(),
            popped: 0,
            bytes: 0,
            max_entries: max_entries.max(1),
            max_bytes,
            stats: CacheStats::default(),
        }
    }

    /// Caches a newly delivered message, evicting the oldest ones past the bounds.
    pub fn insert(&mut self, now: Duration, id: MessageId, msg: CachedMessage) {
        let len = msg.payload.len();
        match self.map.insert(id, msg) {
            // The seen map forgot the id (TTL, eviction) while the payload was still
            // cached: replace it, keeping the byte count exact; its place in the
            // expiry order stays where it was.
            Some(old) => self.bytes = self.bytes - old.payload.len() + len,
            None => {
                self.order.push_back((id, now));
                self.bytes += len;
            }
        }
        while self.map.len() > self.max_entries
            || (self.bytes > self.max_bytes && self.map.len() > 1)
        {
            if !self.pop_oldest() {
                break;
            }
            self.stats.evictions += 1;
        }
    }

    /// The cached message `id`, if it is still here.
    pub fn get(&self, id: &MessageId) -> Option<&CachedMessage> {
        self.map.get(id)
    }

    /// The cached message `id` to update (its sender and round after a re-link).
    pub fn get_mut(&mut self, id: &MessageId) -> Option<&mut CachedMessage> {
        self.map.get_mut(id)
    }

    /// Drops entries older than `ttl`, at most `budget` of them; returns how many.
    pub fn expire(&mut self, now: Duration, ttl: Duration, budget: usize) -> usize {
        let mut n = 0;
        while n < budget {
            match self.order.front() {
                Some(&(_, at)) if now.saturating_sub(at) > ttl => {
                    self.pop_oldest();
                    n += 1;
                }
                _ => break,
            }
        }
        self.stats.expirations += n as u64;
        n
    }

    /// Whether entries past `ttl` remain.
    pub fn has_expired(&self, now: Duration, ttl: Duration) -> bool {
        self.order
            .front()
            .is_some_and(|&(_, at)| now.saturating_sub(at) > ttl)
    }

    fn pop_oldest(&mut self) -> bool {
        let Some((id, _)) = self.order.pop_front() else {
            return false;
        };
        self.popped += 1;
        if let Some(m) = self.map.remove(&id) {
            self.bytes -= m.payload.len();
        }
        true
    }

    /// The position of the first entry cached after `t` (positions count every entry
    /// ever cached, so they stay valid as old entries leave).
    pub fn position_after(&self, t: Duration) -> u64 {
        self.popped + self.order.partition_point(|&(_, at)| at <= t) as u64
    }

    /// The position of the oldest entry still cached.
    pub fn first_position(&self) -> u64 {
        self.popped
    }

    /// The id cached at `position`, if it is still cached.
    pub fn id_at(&self, position: u64) -> Option<MessageId> {
        let i = position.checked_sub(self.popped)?;
        self.order.get(usize::try_from(i).ok()?).map(|&(id, _)| id)
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no message is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Payload bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The counters so far.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seq: u64) -> MessageId {
        MessageId {
            origin: NodeId(1),
            seq,
        }
    }

    fn msg(len: usize) -> CachedMessage {
        CachedMessage {
            topic: Topic::default(),
            payload: Bytes::from(vec![0u8; len]),
            round: 1,
            from: NodeId(2),
            at: Duration::ZERO,
            via_tree: true,
        }
    }

    #[test]
    fn reinserting_an_id_keeps_byte_accounting_exact() {
        let mut c = PayloadCache::new(10, 1 << 20);
        c.insert(Duration::ZERO, id(1), msg(10));
        c.insert(Duration::ZERO, id(1), msg(30));
        assert_eq!(c.len(), 1);
        assert_eq!(c.bytes(), 30);
        assert_eq!(
            c.expire(Duration::from_secs(100), Duration::from_secs(60), 10),
            1
        );
        assert_eq!(c.bytes(), 0);
        assert!(c.is_empty());
    }

    #[test]
    fn entry_bound_evicts_oldest() {
        let mut c = PayloadCache::new(2, 1 << 20);
        for s in 0..3 {
            c.insert(Duration::ZERO, id(s), msg(10));
        }
        assert_eq!(c.len(), 2);
        assert!(c.get(&id(0)).is_none());
        assert!(c.get(&id(2)).is_some());
        assert_eq!(c.stats().evictions, 1);
        assert_eq!(c.bytes(), 20);
    }

    #[test]
    fn byte_bound_evicts_oldest() {
        let mut c = PayloadCache::new(100, 25);
        for s in 0..3 {
            c.insert(Duration::ZERO, id(s), msg(10));
        }
        assert_eq!(c.len(), 2);
        assert_eq!(c.bytes(), 20);
    }

    #[test]
    fn ttl_expiry_is_budgeted() {
        let mut c = PayloadCache::new(100, 1 << 20);
        for s in 0..5 {
            c.insert(Duration::from_secs(s), id(s), msg(1));
        }
        let now = Duration::from_secs(70);
        let ttl = Duration::from_secs(60);
        assert_eq!(c.expire(now, ttl, 2), 2);
        assert!(c.has_expired(now, ttl));
        assert_eq!(c.expire(now, ttl, 100), 3);
        assert!(c.is_empty());
        assert_eq!(c.stats().expirations, 5);
    }

    #[test]
    fn positions_stay_valid_as_old_entries_leave() {
        let mut c = PayloadCache::new(3, 1 << 20);
        for s in 0..5 {
            c.insert(Duration::from_secs(s), id(s), msg(1));
        }
        // Entries 0 and 1 were evicted; positions keep counting from the first insert.
        assert_eq!(c.first_position(), 2);
        assert_eq!(c.id_at(1), None);
        assert_eq!(c.id_at(2), Some(id(2)));
        assert_eq!(c.id_at(4), Some(id(4)));
        assert_eq!(c.id_at(5), None);
        assert_eq!(c.position_after(Duration::from_secs(2)), 3);
        assert_eq!(c.position_after(Duration::from_secs(99)), 5);
        assert_eq!(c.position_after(Duration::ZERO), 2);
    }
}
