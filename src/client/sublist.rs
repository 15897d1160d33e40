//! The client port's subscription table: which (client, sid) pairs a published
//! subject is delivered to, with NATS queue groups and auto-unsubscribe.
//!
//! Layout: subscriptions live in a slab; literal filters are indexed by their text
//! (one hash lookup per message), wildcard filters sit in one list that every message
//! scans. Costs, with `L` the subscriptions on the published subject's literal text,
//! `W` the wildcard subscriptions and `Q` the matching queue subscriptions:
//! `route` is O(L + W·len + Q log Q), `insert` O(1) amortised, `remove` O(L) or O(W)
//! for the bucket the filter sits in, `remove_client` that per subscription it held.
//! A trie would make `W` sublinear; the scan is kept until wildcard-heavy loads show
//! it matters.

use std::collections::HashMap;
use std::sync::Arc;

use thiserror::Error;

use super::subject::Filter;

/// A connection on the client port, unique for the node's lifetime.
pub type ClientId = u64;

/// A subscription id as the client chose it (NATS sids are arbitrary tokens). Shared,
/// so routing hands it out without copying the text.
pub type SidRef = Arc<str>;

/// Why a SUB was refused.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum SubError {
    /// The client already has a subscription with this sid.
    #[error("duplicate sid {0:?}")]
    DuplicateSid(String),
    /// The client holds the most subscriptions one client may.
    #[error("client already has the maximum of {limit} subscriptions")]
    TooMany {
        /// The per-client limit.
        limit: usize,
    },
}

/// What [`SubTable::set_max`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetMax {
    /// No such subscription.
    Unknown,
    /// The subscription stays until it has had `max` deliveries in all.
    Armed,
    /// It had already had `max` deliveries, so it was removed now.
    Removed,
}

struct Sub {
    client: ClientId,
    sid: SidRef,
    filter: Filter,
    /// Index into `SubTable::groups`.
    group: Option<usize>,
    /// Auto-unsubscribe after this many deliveries in all (UNSUB with max).
    max: Option<u64>,
    delivered: u64,
}

/// A queue group name in use, shared by every subscription naming it.
struct Group {
    name: Arc<str>,
    members: usize,
    /// Round-robin cursor: the next message goes to the `next % n`-th matching member.
    next: u64,
}

/// The node's subscription table (see the module doc for its costs).
pub struct SubTable {
    max_per_client: usize,
    slots: Vec<Option<Sub>>,
    free: Vec<usize>,
    clients: HashMap<ClientId, HashMap<SidRef, usize>>,
    literal: HashMap<Box<str>, Vec<usize>>,
    wild: Vec<usize>,
    groups: Vec<Option<Group>>,
    free_groups: Vec<usize>,
    group_ids: HashMap<Arc<str>, usize>,
    len: usize,
    /// Per-route scratch, kept to save two allocations per message.
    queued: Vec<(usize, usize)>,
    expired: Vec<usize>,
}

impl SubTable {
    /// An empty table allowing each client at most `max_per_client` subscriptions.
    pub fn new(max_per_client: usize) -> SubTable {
        SubTable {
            max_per_client,
            slots: Vec::new(),
            free: Vec::new(),
            clients: HashMap::new(),
            literal: HashMap::new(),
            wild: Vec::new(),
            groups: Vec::new(),
            free_groups: Vec::new(),
            group_ids: HashMap::new(),
            len: 0,
            queued: Vec::new(),
            expired: Vec::new(),
        }
    }

    /// Adds `client`'s subscription `sid` on `filter`, in queue group `queue` if given.
    pub fn insert(
        &mut self,
        client: ClientId,
        sid: &str,
        filter: Filter,
        queue: Option<&str>,
    ) -> Result<(), SubError> {
        let sids = self.clients.entry(client).or_default();
        if sids.contains_key(sid) {
            return Err(SubError::DuplicateSid(sid.to_owned()));
        }
        if sids.len() >= self.max_per_client {
            if sids.is_empty() {
                self.clients.remove(&client);
            }
            return Err(SubError::TooMany {
                limit: self.max_per_client,
            });
        }
        let sid: SidRef = Arc::from(sid);
        let group = queue.map(|q| self.join_group(q));
        let slot = self.free.pop().unwrap_or(self.slots.len());
        if filter.is_literal() {
            self.literal
                .entry(filter.as_str().into())
                .or_default()
                .push(slot);
        } else {
            self.wild.push(slot);
        }
        let sub = Sub {
            client,
            sid: Arc::clone(&sid),
            filter,
            group,
            max: None,
            delivered: 0,
        };
        if slot == self.slots.len() {
            self.slots.push(Some(sub));
        } else {
            self.slots[slot] = Some(sub);
        }
        self.clients.entry(client).or_default().insert(sid, slot);
        self.len += 1;
        Ok(())
    }

    /// Removes `client`'s subscription `sid`; false if there was none.
    pub fn remove(&mut self, client: ClientId, sid: &str) -> bool {
        let Some(sids) = self.clients.get_mut(&client) else {
            return false;
        };
        let Some(slot) = sids.remove(sid) else {
            return false;
        };
        if sids.is_empty() {
            self.clients.remove(&client);
        }
        self.drop_slot(slot);
        true
    }

    /// UNSUB with a maximum: the subscription goes once it has had `max` deliveries in
    /// all, counted from its SUB as nats-server counts them (so a `max` already reached,
    /// `0` included, removes it now).
    pub fn set_max(&mut self, client: ClientId, sid: &str, max: u64) -> SetMax {
        let Some(&slot) = self.clients.get(&client).and_then(|s| s.get(sid)) else {
            return SetMax::Unknown;
        };
        let Some(sub) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return SetMax::Unknown;
        };
        if sub.delivered >= max {
            self.remove(client, sid);
            SetMax::Removed
        } else {
            sub.max = Some(max);
            SetMax::Armed
        }
    }

    /// The sids of `client`'s subscriptions whose filter matches `subject`, queue
    /// groups ignored and nothing counted toward auto-unsubscribe: for the node's own
    /// notices to one connection (`$PLUMCORE.lagged`).
    pub fn client_matches(&self, client: ClientId, subject: &str) -> Vec<SidRef> {
        let Some(sids) = self.clients.get(&client) else {
            return Vec::new();
        };
        sids.iter()
            .filter(|(_, &slot)| {
                self.slots[slot]
                    .as_ref()
                    .is_some_and(|s| s.filter.matches(subject))
            })
            .map(|(sid, _)| sid.clone())
            .collect()
    }

    /// Removes every subscription of `client` (its connection closed); how many.
    pub fn remove_client(&mut self, client: ClientId) -> usize {
        let Some(sids) = self.clients.remove(&client) else {
            return 0;
        };
        let n = sids.len();
        for slot in sids.into_values() {
            self.drop_slot(slot);
        }
        n
    }

    /// Subscriptions in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the table holds no subscription.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Subscriptions `client` holds.
    pub fn client_len(&self, client: ClientId) -> usize {
        self.clients.get(&client).map_or(0, HashMap::len)
    }

    /// Appends to `out` who gets a message published on `subject` (a valid publish
    /// subject): every matching plain subscription, and one matching member per queue
    /// group name, taken round-robin in slot order (deterministic for a given history
    /// of calls). Counts the deliveries and removes subscriptions that reach their
    /// UNSUB maximum.
    pub fn route(&mut self, subject: &str, out: &mut Vec<(ClientId, SidRef)>) {
        let mut queued = std::mem::take(&mut self.queued);
        let mut expired = std::mem::take(&mut self.expired);
        queued.clear();
        expired.clear();

        let literal = self.literal.get(subject).map_or(&[][..], Vec::as_slice);
        for &slot in literal.iter().chain(self.wild.iter()) {
            let Some(sub) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if !sub.filter.is_literal() && !sub.filter.matches(subject) {
                continue;
            }
            match sub.group {
                Some(g) => queued.push((g, slot)),
                None => {
                    Self::deliver(sub, slot, out, &mut expired);
                }
            }
        }

        queued.sort_unstable();
        for run in queued.chunk_by(|a, b| a.0 == b.0) {
            let g = run[0].0;
            let Some(group) = self.groups.get_mut(g).and_then(Option::as_mut) else {
                continue;
            };
            let pick = run[(group.next % run.len() as u64) as usize].1;
            group.next = group.next.wrapping_add(1);
            if let Some(sub) = self.slots.get_mut(pick).and_then(Option::as_mut) {
                Self::deliver(sub, pick, out, &mut expired);
            }
        }

        for &slot in &expired {
            if let Some((client, sid)) = self
                .slots
                .get(slot)
                .and_then(Option::as_ref)
                .map(|s| (s.client, Arc::clone(&s.sid)))
            {
                self.remove(client, &sid);
            }
        }
        self.queued = queued;
        self.expired = expired;
    }

    fn deliver(
        sub: &mut Sub,
        slot: usize,
        out: &mut Vec<(ClientId, SidRef)>,
        expired: &mut Vec<usize>,
    ) {
        out.push((sub.client, Arc::clone(&sub.sid)));
        sub.delivered = sub.delivered.saturating_add(1);
        if sub.max.is_some_and(|m| sub.delivered >= m) {
            expired.push(slot);
        }
    }

    fn join_group(&mut self, name: &str) -> usize {
        if let Some(&g) = self.group_ids.get(name) {
            if let Some(group) = self.groups[g].as_mut() {
                group.members += 1;
            }
            return g;
        }
        let name: Arc<str> = Arc::from(name);
        let group = Group {
            name: Arc::clone(&name),
            members: 1,
            next: 0,
        };
        let g = match self.free_groups.pop() {
            Some(g) => {
                self.groups[g] = Some(group);
                g
            }
            None => {
                self.groups.push(Some(group));
                self.groups.len() - 1
            }
        };
        self.group_ids.insert(name, g);
        g
    }

    fn leave_group(&mut self, g: usize) {
        let Some(group) = self.groups.get_mut(g).and_then(Option::as_mut) else {
            return;
        };
        group.members -= 1;
        if group.members == 0 {
            self.group_ids.remove(&group.name);
            self.groups[g] = None;
            self.free_groups.push(g);
        }
    }

    /// Frees a slot already unlinked from `clients`.
    fn drop_slot(&mut self, slot: usize) {
        let Some(sub) = self.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        if sub.filter.is_literal() {
            if let Some(bucket) = self.literal.get_mut(sub.filter.as_str()) {
                if let Some(i) = bucket.iter().position(|&s| s == slot) {
                    bucket.swap_remove(i);
                }
                if bucket.is_empty() {
                    self.literal.remove(sub.filter.as_str());
                }
            }
        } else if let Some(i) = self.wild.iter().position(|&s| s == slot) {
            self.wild.swap_remove(i);
        }
        if let Some(g) = sub.group {
            self.leave_group(g);
        }
        self.free.push(slot);
        self.len -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> Filter {
        Filter::parse(s).expect("valid filter")
    }

    fn route(t: &mut SubTable, subject: &str) -> Vec<(ClientId, String)> {
        let mut out = Vec::new();
        t.route(subject, &mut out);
        let mut v: Vec<_> = out.into_iter().map(|(c, s)| (c, s.to_string())).collect();
        v.sort();
        v
    }

    fn hit(c: ClientId, s: &str) -> (ClientId, String) {
        (c, s.to_string())
    }

    #[test]
    fn plain_literal_subscriptions() {
        let mut t = SubTable::new(10);
        t.insert(1, "1", f("a.b"), None).unwrap();
        t.insert(2, "x", f("a.b"), None).unwrap();
        t.insert(2, "y", f("a.c"), None).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(route(&mut t, "a.b"), vec![hit(1, "1"), hit(2, "x")]);
        assert_eq!(route(&mut t, "a.c"), vec![hit(2, "y")]);
        assert!(route(&mut t, "a").is_empty());
        assert!(route(&mut t, "a.b.c").is_empty());
    }

    #[test]
    fn star_wildcard() {
        let mut t = SubTable::new(10);
        t.insert(1, "1", f("a.*"), None).unwrap();
        t.insert(1, "2", f("*.b"), None).unwrap();
        assert_eq!(route(&mut t, "a.b"), vec![hit(1, "1"), hit(1, "2")]);
        assert_eq!(route(&mut t, "a.c"), vec![hit(1, "1")]);
        assert!(route(&mut t, "a.b.c").is_empty());
    }

    #[test]
    fn full_wildcard() {
        let mut t = SubTable::new(10);
        t.insert(1, "1", f("a.>"), None).unwrap();
        t.insert(2, "1", f(">"), None).unwrap();
        assert_eq!(route(&mut t, "a.b.c"), vec![hit(1, "1"), hit(2, "1")]);
        assert_eq!(route(&mut t, "a"), vec![hit(2, "1")]);
    }

    #[test]
    fn queue_group_gets_exactly_one_round_robin() {
        let mut t = SubTable::new(10);
        for c in 1..=3 {
            t.insert(c, "q", f("work.*"), Some("workers")).unwrap();
        }
        t.insert(4, "q", f("work.>"), Some("workers")).unwrap();
        t.insert(5, "p", f("work.a"), None).unwrap();
        t.insert(6, "o", f("work.a"), Some("others")).unwrap();
        let mut counts = HashMap::new();
        for _ in 0..400 {
            let got = route(&mut t, "work.a");
            assert_eq!(got.len(), 3, "plain + one worker + one other: {got:?}");
            assert!(got.contains(&hit(5, "p")));
            assert!(got.contains(&hit(6, "o")));
            let workers: Vec<_> = got.iter().filter(|(c, _)| (1..=4).contains(c)).collect();
            assert_eq!(workers.len(), 1);
            *counts.entry(workers[0].0).or_insert(0) += 1;
        }
        for c in 1..=4 {
            assert_eq!(counts.get(&c), Some(&100), "even spread: {counts:?}");
        }
    }

    #[test]
    fn queue_round_robin_is_deterministic() {
        let build = || {
            let mut t = SubTable::new(10);
            for c in 1..=3 {
                t.insert(c, "q", f("x"), Some("g")).unwrap();
            }
            t
        };
        let (mut a, mut b) = (build(), build());
        for _ in 0..10 {
            assert_eq!(route(&mut a, "x"), route(&mut b, "x"));
        }
    }

    #[test]
    fn auto_unsubscribe_after_max() {
        let mut t = SubTable::new(10);
        t.insert(1, "1", f("a"), None).unwrap();
        t.insert(1, "2", f("*"), None).unwrap();
        assert_eq!(t.set_max(1, "1", 2), SetMax::Armed);
        assert_eq!(t.set_max(1, "nope", 2), SetMax::Unknown);
        assert_eq!(route(&mut t, "a").len(), 2);
        assert_eq!(route(&mut t, "a").len(), 2);
        assert_eq!(route(&mut t, "a"), vec![hit(1, "2")]);
        assert_eq!(t.client_len(1), 1);
        // Already had 3 deliveries: a max of 3 removes it at once.
        assert_eq!(t.set_max(1, "2", 3), SetMax::Removed);
        assert!(t.is_empty());
        t.insert(1, "3", f("a"), None).unwrap();
        assert_eq!(t.set_max(1, "3", 0), SetMax::Removed);
    }

    #[test]
    fn auto_unsubscribe_in_queue_group() {
        let mut t = SubTable::new(10);
        t.insert(1, "1", f("a"), Some("g")).unwrap();
        t.insert(2, "1", f("a"), Some("g")).unwrap();
        assert_eq!(t.set_max(1, "1", 1), SetMax::Armed);
        let mut total = 0;
        for _ in 0..4 {
            total += route(&mut t, "a").len();
        }
        assert_eq!(total, 4, "each message still reaches one member");
        assert_eq!(t.client_len(1), 0);
        assert_eq!(t.client_len(2), 1);
    }

    #[test]
    fn remove_and_remove_client() {
        let mut t = SubTable::new(10);
        t.insert(1, "1", f("a"), None).unwrap();
        t.insert(1, "2", f("a.*"), Some("g")).unwrap();
        t.insert(2, "1", f("a"), None).unwrap();
        assert!(t.remove(2, "1"));
        assert!(!t.remove(2, "1"));
        assert!(!t.remove(3, "1"));
        assert_eq!(t.remove_client(1), 2);
        assert_eq!(t.remove_client(1), 0);
        assert!(t.is_empty());
        assert!(route(&mut t, "a").is_empty());
        assert!(route(&mut t, "a.b").is_empty());
        // Slots and groups are reused cleanly.
        t.insert(3, "9", f("a.b"), Some("g")).unwrap();
        assert_eq!(route(&mut t, "a.b"), vec![hit(3, "9")]);
    }

    #[test]
    fn duplicate_sid_and_cap() {
        let mut t = SubTable::new(2);
        t.insert(1, "1", f("a"), None).unwrap();
        assert_eq!(
            t.insert(1, "1", f("b"), None),
            Err(SubError::DuplicateSid("1".into()))
        );
        t.insert(1, "2", f("b"), None).unwrap();
        assert_eq!(
            t.insert(1, "3", f("c"), None),
            Err(SubError::TooMany { limit: 2 })
        );
        t.insert(2, "3", f("c"), None).unwrap();
        assert_eq!(t.client_len(1), 2);
        assert_eq!(t.len(), 3);
        assert!(t.remove(1, "1"));
        t.insert(1, "3", f("c"), None).unwrap();
        let mut zero = SubTable::new(0);
        assert_eq!(
            zero.insert(1, "1", f("a"), None),
            Err(SubError::TooMany { limit: 0 })
        );
        assert_eq!(zero.client_len(1), 0);
    }
}
