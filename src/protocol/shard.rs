//! One shard's Plumtree state machine: the partitions it owns, their eager/lazy sets
//! over the shard's neighbours, the seen map, the payload cache, the IHave queues and
//! the graft timers.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashMap;
use thiserror::Error;

use super::cache::{CachedMessage, PayloadCache};
use super::config::{ConfigError, Mode, ProtocolConfig};
use super::digest::{block_ids, DigestBuilder};
use super::event::{Event, Time, Timer};
use super::peers::{bit, bits, remap_mask, Neighbors};
use super::roots::RootTrees;
use super::seen::{Seen, SeenMap};
use super::stats::ShardStats;
use super::validate::{MessageView, Verdict};
use crate::ids::{MessageId, NodeId};
use crate::topic::Topic;
use crate::wire::{DigestBlock, Frame, IHaveEntry};

/// How long after a prune a push from the pruned peer counts as already in flight.
const STALE_WINDOW: Duration = Duration::from_secs(1);
/// Bound on remembered prunes.
const RECENT_PRUNES_MAX: usize = 4096;

/// Why a local broadcast was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BroadcastError {
    /// The payload is larger than `max_payload`, which keeps every Gossip within one
    /// datagram.
    #[error("payload of {len} bytes exceeds max_payload {max}")]
    TooLarge {
        /// The payload's size, in bytes.
        len: usize,
        /// `max_payload`, in bytes.
        max: usize,
    },
    /// The id hashes to a partition another shard owns: the caller routed it to the
    /// wrong shard.
    #[error("partition {partition} is not owned by this shard")]
    NotOwned {
        /// The partition the id belongs to.
        partition: u16,
    },
    /// The id was broadcast or received here before: a seq counter that repeated.
    #[error("message id already used")]
    DuplicateId,
}

/// Result of one bounded cleanup slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupProgress {
    /// Seen-map origins and cache entries removed in this slice.
    pub removed: usize,
    /// False when expired entries remain: call again after yielding.
    pub done: bool,
}

/// Per-partition state. The partition's template, which a root seen for the first
/// time copies as its own tree, is the tree of the partition's designated root (the
/// lowest root id with a tree here): every node converges on the same designated
/// root, so the copies agree from node to node, and one root's tree is shaped by one
/// root's messages only, so it does not tear. Before any root has a tree here, the
/// template is the designated tree of the shard's other partitions, or else `eager`.
#[derive(Debug, Clone)]
struct Partition {
    /// Eager peers (bits index [`Neighbors`]) of the fallback template: the fanout
    /// graph neighbours come up into, pruned only by older peers' plain Prunes.
    eager: u64,
    /// The designated root, whose tree is the template.
    root: Option<NodeId>,
    /// Whether a message travelled in this partition yet. Before that, a new neighbour
    /// may replace an eager one (reservoir sampling).
    formed: bool,
    /// Duplicates received per neighbour since its last prune.
    dups: [u8; 64],
    /// Neighbours seen so far while not formed (reservoir sampling counter).
    offered: u32,
}

impl Default for Partition {
    fn default() -> Self {
        Self {
            eager: 0,
            root: None,
            formed: false,
            dups: [0; 64],
            offered: 0,
        }
    }
}

/// A message announced to us but not received yet.
#[derive(Debug)]
struct PendingGraft {
    /// Announcers in arrival order, with the round they announced.
    announcers: Vec<(NodeId, u16)>,
    /// Next announcer to graft (index into `announcers`, wrapping).
    next: usize,
    /// Grafts sent so far.
    attempts: u32,
    /// Generation of the live timer.
    gen: u32,
}

/// The sans-IO Plumtree shard. See the module and `protocol` documentation.
pub struct Shard {
    me: NodeId,
    cfg: ProtocolConfig,
    owned: u64,
    neighbors: Neighbors,
    parts: Vec<Partition>,
    /// The shard-wide designated (partition, root) tree: the template of a partition
    /// with no root of its own yet, so a partition's first message travels a tree
    /// instead of the fresh fanout graph.
    common_root: Option<(u16, NodeId)>,
    /// Per-(partition, root) trees, seeded from the partition templates.
    roots: RootTrees,
    /// Neighbours known to speak [`Frame::PruneRoot`] (they sent one); the others also
    /// get a plain Prune next to it, which is all an older node understands.
    root_aware: u64,
    /// (partition, root, peer) -> when this shard pruned the peer from that tree.
    recent_prunes: FxHashMap<(u16, NodeId, NodeId), Time>,
    /// The latest `now` an input carried (prune bookkeeping).
    last_now: Time,
    seen: SeenMap,
    cache: PayloadCache,
    pending: FxHashMap<MessageId, PendingGraft>,
    /// IHave queue per neighbour index.
    ihave: Vec<Vec<IHaveEntry>>,
    ihave_total: usize,
    ihave_timer: Option<u64>,
    /// Cache position the next anti-entropy round's digest starts from.
    ae_cursor: u64,
    /// Per neighbour, the cache position the next digest reply to it starts from (a
    /// new neighbour's replies start from the oldest cached message).
    ae_reply_cursor: FxHashMap<NodeId, u64>,
    /// The neighbour rounds go to while its digests keep showing messages missing
    /// here (None: a random neighbour each round).
    ae_partner: Option<NodeId>,
    /// Whether the current pass of `ae_cursor` found messages missing here.
    ae_found: bool,
    /// Neighbours sent a digest reply in this interval (at most
    /// `anti_entropy_max_replies`).
    ae_replied: Vec<NodeId>,
    /// Pulls left in this anti-entropy interval (refilled by each round).
    ae_pulls_left: usize,
    /// Digest replies left in this anti-entropy interval.
    ae_replies_left: usize,
    next_gen: u64,
    rng: ChaCha8Rng,
    events: VecDeque<Event>,
    stats: ShardStats,
}

impl Shard {
    /// A shard of node `me` owning the partitions in mask `owned`. `seed` drives every
    /// random choice, so a run is reproducible.
    pub fn new(
        me: NodeId,
        owned: u64,
        cfg: ProtocolConfig,
        seed: u64,
    ) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let all = if cfg.partitions == 64 {
            u64::MAX
        } else {
            (1u64 << cfg.partitions) - 1
        };
        if owned & all == 0 || owned & !all != 0 {
            return Err(ConfigError {
                key: "partitions",
                reason: format!("owned partition mask {owned:#x} is empty or out of range"),
            });
        }
        Ok(Self {
            me,
            owned,
            neighbors: Neighbors::default(),
            parts: vec![Partition::default(); cfg.partitions as usize],
            common_root: None,
            roots: RootTrees::new(cfg.partitions, cfg.max_roots),
            root_aware: 0,
            recent_prunes: FxHashMap::default(),
            last_now: Time::ZERO,
            seen: SeenMap::new(
                cfg.partitions,
                owned,
                cfg.max_seen_origins,
                cfg.max_seen_window,
                cfg.message_cache_ttl,
                cfg.seen_idle_retention,
            ),
            cache: PayloadCache::new(cfg.max_cached_messages, cfg.max_cached_bytes),
            pending: FxHashMap::default(),
            ihave: Vec::new(),
            ihave_total: 0,
            ihave_timer: None,
            ae_cursor: 0,
            ae_reply_cursor: FxHashMap::default(),
            ae_partner: None,
            ae_found: false,
            ae_replied: Vec::new(),
            ae_pulls_left: cfg.anti_entropy_max_pulls,
            ae_replies_left: cfg.anti_entropy_max_replies,
            next_gen: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            events: VecDeque::new(),
            stats: ShardStats::default(),
            cfg,
        })
    }

    /// Next thing for the driver to do.
    #[inline]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// This shard's node id.
    pub fn id(&self) -> NodeId {
        self.me
    }

    /// The tunables it was built with.
    pub fn config(&self) -> &ProtocolConfig {
        &self.cfg
    }

    /// Mask of owned partitions.
    pub fn owned_partitions(&self) -> u64 {
        self.owned
    }

    /// Current neighbours, in index order (a removal swaps the last one in).
    pub fn neighbors(&self) -> &[NodeId] {
        self.neighbors.ids()
    }

    /// Eager peers of a partition, for status pages and tests.
    pub fn eager_peers(&self, partition: u16) -> Vec<NodeId> {
        let m = self.template_view(partition) & self.neighbors.all_mask();
        bits(m).map(|i| self.neighbors.get(i)).collect()
    }

    /// Eager peers of `root`'s tree in a partition, if that tree exists.
    pub fn root_eager_peers(&mut self, partition: u16, root: NodeId) -> Option<Vec<NodeId>> {
        let m = self.roots.peek(partition, root)?;
        Some(bits(m).map(|i| self.neighbors.get(i)).collect())
    }

    /// Lazy peers of a partition.
    pub fn lazy_peers(&self, partition: u16) -> Vec<NodeId> {
        let m = self.neighbors.all_mask() & !self.template_view(partition);
        bits(m).map(|i| self.neighbors.get(i)).collect()
    }

    /// Per neighbour, in how many owned partitions it is eager and lazy (status pages).
    pub fn peer_links(&self) -> Vec<(NodeId, u32, u32)> {
        let mut out: Vec<(NodeId, u32, u32)> =
            self.neighbors.ids().iter().map(|&id| (id, 0, 0)).collect();
        for p in bits(self.owned) {
            let eager = self.template_view(p as u16);
            for (i, row) in out.iter_mut().enumerate() {
                if eager & bit(i) != 0 {
                    row.1 += 1;
                } else {
                    row.2 += 1;
                }
            }
        }
        out
    }

    /// Whether `id` has been delivered (or broadcast) here.
    pub fn has_seen(&self, id: MessageId) -> bool {
        self.seen.contains(id)
    }

    /// Counters plus current gauges.
    pub fn stats(&self) -> ShardStats {
        let mut s = self.stats;
        let seen = self.seen.stats();
        s.seen_origin_evictions = seen.origin_evictions;
        s.seen_origin_expirations = seen.origin_expirations;
        s.seen_forced_slides = seen.forced_slides;
        s.seen_epochs = seen.epochs;
        s.seen_holes_merged = seen.holes_merged;
        s.pending_holes = self.seen.pending_holes() as u64;
        let cache = self.cache.stats();
        s.cache_evictions = cache.evictions;
        s.cache_expirations = cache.expirations;
        s.neighbors = self.neighbors.len() as u64;
        let all = self.neighbors.all_mask();
        for p in bits(self.owned) {
            let e = self.template_view(p as u16) & all;
            s.eager_links += e.count_ones() as u64;
            s.lazy_links += (all & !e).count_ones() as u64;
        }
        s.seen_origins = self.seen.origins() as u64;
        s.seen_map_bytes = self.seen.heap_bytes() as u64;
        s.pending_grafts = self.pending.len() as u64;
        s.ihave_queue = self.ihave_total as u64;
        s.cache_entries = self.cache.len() as u64;
        s.cache_bytes = self.cache.bytes() as u64;
        s.roots = self.roots.len() as u64;
        s.roots_bytes = self.roots.heap_bytes() as u64;
        s.root_evictions = self.roots.evictions();
        s.root_expirations = self.roots.expirations();
        s
    }

    #[inline]
    fn owns(&self, partition: u16) -> bool {
        self.owned & (1u64 << partition) != 0
    }

    #[inline]
    fn partition_of(&self, id: MessageId) -> u16 {
        id.partition(self.cfg.partitions)
    }

    fn gen(&mut self) -> u64 {
        self.next_gen += 1;
        self.next_gen
    }

    #[inline]
    fn send(&mut self, to: NodeId, frame: Frame) {
        self.events.push_back(Event::Send { to, frame });
    }

    // ---- neighbours -------------------------------------------------------------

    /// A neighbour came up (membership said so). It becomes eager in partitions with
    /// fewer than `eager_fanout` eager peers, lazy elsewhere, and the anti-entropy
    /// partner. Returns false if it was already known or `max_neighbors` is reached.
    pub fn neighbor_up(&mut self, _now: Time, peer: NodeId) -> bool {
        if peer == self.me || self.neighbors.index_of(peer).is_some() {
            return false;
        }
        if self.neighbors.len() >= self.cfg.max_neighbors {
            self.stats.neighbors_rejected += 1;
            return false;
        }
        let i = self.neighbors.push(peer);
        self.ihave.push(Vec::new());
        self.root_aware &= !bit(i);
        // A new neighbour is often the other side of a healed partition: the next
        // anti-entropy round goes to it, from the oldest cached message (the first to
        // expire), and keeps going to it for a whole pass.
        self.ae_partner = Some(peer);
        self.ae_cursor = 0;
        self.ae_found = true;
        let fanout = self.cfg.eager_fanout;
        let owned = self.owned;
        for p in bits(owned) {
            offer_neighbor(&mut self.parts[p], i, fanout, &mut self.rng);
        }
        // Existing roots take the newcomer eager: it gets their messages at once
        // instead of a graft_timeout later through IHave, and the first duplicate on
        // the new link prunes whichever copy came second.
        self.roots.for_each_tree(owned, |_, m| *m |= bit(i));
        true
    }

    /// A neighbour failed or left: it is removed from every eager and lazy set and from
    /// every pending graft's announcers; its queued IHaves are dropped.
    pub fn neighbor_down(&mut self, _now: Time, peer: NodeId) -> bool {
        let Some(r) = self.neighbors.remove(peer) else {
            return false;
        };
        for p in bits(self.owned) {
            remove_neighbor(&mut self.parts[p], r);
        }
        self.roots.neighbor_removed(self.owned, r);
        self.root_aware = remap_mask(self.root_aware, r);
        let dropped = self.ihave.swap_remove(r.index);
        self.ihave_total -= dropped.len();
        self.ae_reply_cursor.remove(&peer);
        for pg in self.pending.values_mut() {
            pg.announcers.retain(|&(a, _)| a != peer);
        }
        true
    }

    // ---- local broadcast ----------------------------------------------------------

    /// Broadcasts a payload under `id` (allocated by the node: origin = this node, seq
    /// from its counter). Not delivered locally.
    pub fn broadcast(
        &mut self,
        now: Time,
        id: MessageId,
        topic: Topic,
        payload: Bytes,
    ) -> Result<(), BroadcastError> {
        if payload.len() > self.cfg.max_payload {
            return Err(BroadcastError::TooLarge {
                len: payload.len(),
                max: self.cfg.max_payload,
            });
        }
        let p = self.partition_of(id);
        if !self.owns(p) {
            return Err(BroadcastError::NotOwned { partition: p });
        }
        if self.seen.insert(now, id) == Seen::Duplicate {
            return Err(BroadcastError::DuplicateId);
        }
        self.emit_gaps();
        self.stats.broadcasts += 1;
        self.cache.insert(
            now,
            id,
            CachedMessage {
                topic: topic.clone(),
                payload: payload.clone(),
                round: 0,
                from: self.me,
                at: now,
                via_tree: true,
            },
        );
        let tree = self.tree(now, p, id.origin);
        self.forward(now, tree, id, 0, topic, payload, None);
        Ok(())
    }

    // ---- incoming frames ------------------------------------------------------------

    /// Processes one frame from `from`.
    pub fn handle_frame(&mut self, now: Time, from: NodeId, frame: Frame) {
        self.last_now = now;
        match frame {
            Frame::Gossip {
                id,
                round,
                topic,
                payload,
            } => self.on_gossip(now, from, id, round, topic, payload),
            Frame::IHave { entries } => {
                for e in entries {
                    self.on_ihave(now, from, e);
                }
            }
            Frame::Graft { id, round, request } => self.on_graft(now, from, id, round, request),
            Frame::Prune { partition } => self.on_prune(from, partition),
            Frame::PruneRoot { partition, root } => self.on_prune_root(now, from, partition, root),
            Frame::Digest {
                partition,
                reply,
                blocks,
            } => self.on_digest(now, from, partition, reply, blocks),
        }
    }

    /// Counts `n` frames the decoder dropped because they belong to the control core
    /// (see [`Datagram::misrouted_member_frames`](crate::wire::Datagram::misrouted_member_frames)),
    /// as misrouted like the frames for partitions this shard does not own.
    pub fn count_misrouted(&mut self, n: u32) {
        self.stats.misrouted += u64::from(n);
    }

    fn on_gossip(
        &mut self,
        now: Time,
        from: NodeId,
        id: MessageId,
        round: u16,
        topic: Topic,
        payload: Bytes,
    ) {
        self.stats.gossip_received += 1;
        let p = self.partition_of(id);
        if !self.owns(p) {
            self.stats.misrouted += 1;
            return;
        }
        let from_idx = self.neighbors.index_of(from);
        let seen = self.seen.insert(now, id);
        self.emit_gaps();
        match seen {
            Seen::New => {
                if let Some(v) = &self.cfg.validator {
                    let view = MessageView {
                        id,
                        topic: &topic,
                        payload: &payload,
                        hops: round.saturating_add(1),
                    };
                    let (verdict, panicked) = v.check(&view);
                    self.stats.validation.count(verdict, panicked);
                    if verdict != Verdict::Accept {
                        // Seen (nobody is asked for it again), not delivered, cached
                        // or relayed; its graft, if one waited, is done.
                        self.pending.remove(&id);
                        return;
                    }
                }
                self.stats.delivered += 1;
                if let Some(pg) = self.pending.remove(&id) {
                    if pg.attempts > 0 {
                        self.stats.graft_success += 1;
                    }
                }
                let fwd_round = round.saturating_add(1);
                let mut tree = self.tree(now, p, id.origin);
                // The paper makes whoever delivered the message eager, in the root's
                // tree. Not a peer this node pruned from that tree moments ago: its
                // copy is a push still in flight, the peer has already dropped this
                // node, and re-linking it would leave this node without a parent.
                let stale = from_idx.is_some_and(|i| {
                    tree & bit(i) == 0 && self.recently_pruned(now, p, id.origin, i)
                });
                if let (Some(i), Mode::Plumtree, false) = (from_idx, self.cfg.mode, stale) {
                    tree |= bit(i);
                    self.roots.set(p, id.origin, tree);
                    self.parts[p as usize].dups[i] = 0;
                }
                let via_tree = !stale;
                self.cache.insert(
                    now,
                    id,
                    CachedMessage {
                        topic: topic.clone(),
                        payload: payload.clone(),
                        round: fwd_round,
                        from,
                        at: now,
                        via_tree,
                    },
                );
                self.events.push_back(Event::Deliver {
                    id,
                    round: fwd_round,
                    topic: topic.clone(),
                    payload: payload.clone(),
                });
                self.forward(now, tree, id, fwd_round, topic, payload, from_idx);
            }
            Seen::Duplicate => {
                self.stats.duplicates += 1;
                if self.cfg.mode == Mode::Flood {
                    return;
                }
                let Some(i) = from_idx else { return };
                let tree = self.tree(now, p, id.origin);
                // The first copy came over a stale link and this one over the tree:
                // the tree link is the one to keep; the stale one is pruned (again).
                let stale = match self.cache.get_mut(&id) {
                    Some(c) if !c.via_tree && tree & bit(i) != 0 => {
                        c.via_tree = true;
                        self.neighbors.index_of(c.from).filter(|&j| j != i)
                    }
                    _ => None,
                };
                if let Some(j) = stale {
                    self.roots.set(p, id.origin, tree & !bit(j));
                    self.send_prune(j, p, id.origin);
                    return;
                }
                let threshold = self.cfg.prune_threshold;
                let part = &mut self.parts[p as usize];
                part.dups[i] = part.dups[i].saturating_add(1);
                if part.dups[i] >= threshold {
                    part.dups[i] = 0;
                    self.roots.set(p, id.origin, tree & !bit(i));
                    self.send_prune(i, p, id.origin);
                }
            }
        }
    }

    /// The eager set of `root`'s tree in partition `p`, created from the partition's
    /// template if the root is new here (and the template from the common tree if the
    /// partition is new).
    fn tree(&mut self, now: Time, p: u16, root: NodeId) -> u64 {
        let all = self.neighbors.all_mask();
        if let Some(m) = self.roots.get(now, p, root) {
            return m & all;
        }
        let template = self.template(p) & all;
        let m = self.roots.get_or_seed(now, p, root, template);
        let part = &mut self.parts[p as usize];
        part.formed = true;
        if part.root.is_none_or(|r| root < r) {
            part.root = Some(root);
        }
        if self.common_root.is_none_or(|(_, r)| root < r) {
            self.common_root = Some((p, root));
        }
        m & all
    }

    /// [`Self::template`] without its bookkeeping, for status pages.
    fn template_view(&self, p: u16) -> u64 {
        let designated = self.parts[p as usize]
            .root
            .and_then(|r| self.roots.peek(p, r))
            .or_else(|| {
                self.common_root
                    .and_then(|(cp, cr)| self.roots.peek(cp, cr))
            });
        designated.unwrap_or(self.parts[p as usize].eager)
    }

    /// Partition `p`'s template: its designated root's tree, else the shard's
    /// designated tree, else the fallback fanout graph. A designated root whose tree
    /// was evicted or expired is forgotten, so the next root to get a tree is
    /// designated.
    fn template(&mut self, p: u16) -> u64 {
        let part = &mut self.parts[p as usize];
        if part.root.is_some_and(|r| self.roots.peek(p, r).is_none()) {
            part.root = None;
        }
        if self
            .common_root
            .is_some_and(|(cp, cr)| self.roots.peek(cp, cr).is_none())
        {
            self.common_root = None;
        }
        self.template_view(p)
    }

    /// Prunes `root`'s tree at neighbour `i`: a PruneRoot, plus a plain Prune unless
    /// the neighbour is known to understand PruneRoot (an older node skips the
    /// unknown frame and obeys the Prune).
    fn send_prune(&mut self, i: usize, p: u16, root: NodeId) {
        let to = self.neighbors.get(i);
        self.note_prune(p, root, to);
        self.stats.prune_sent += 1;
        self.send(to, Frame::PruneRoot { partition: p, root });
        if self.root_aware & bit(i) == 0 {
            self.send(to, Frame::Prune { partition: p });
        }
    }

    /// Remembers that `peer` was pruned from `root`'s tree in `p` (bounded; pushes the
    /// peer had in flight are recognised for `STALE_WINDOW`).
    fn note_prune(&mut self, p: u16, root: NodeId, peer: NodeId) {
        let now = self.last_now;
        if self.recent_prunes.len() >= RECENT_PRUNES_MAX {
            self.recent_prunes
                .retain(|_, &mut at| now.saturating_sub(at) <= STALE_WINDOW);
            if self.recent_prunes.len() >= RECENT_PRUNES_MAX {
                self.stats.recent_prunes_shed += 1;
                return;
            }
        }
        self.recent_prunes.insert((p, root, peer), now);
    }

    fn recently_pruned(&self, now: Time, p: u16, root: NodeId, i: usize) -> bool {
        let peer = self.neighbors.get(i);
        self.recent_prunes
            .get(&(p, root, peer))
            .is_some_and(|&at| now.saturating_sub(at) <= STALE_WINDOW)
    }

    /// Eager push to the root tree's eager peers (`tree`), lazy push (queued IHave) to
    /// up to `lazy_fanout` lazy peers; never back to `exclude`. (The message's parts
    /// travel as separate cheap handles, hence the argument count.)
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        now: Time,
        tree: u64,
        id: MessageId,
        round: u16,
        topic: Topic,
        payload: Bytes,
        exclude: Option<usize>,
    ) {
        let all = self.neighbors.all_mask();
        let excl = exclude.map_or(0, bit);
        let (eager, lazy) = match self.cfg.mode {
            Mode::Plumtree => {
                let e = tree & all;
                (e & !excl, all & !e & !excl)
            }
            Mode::Flood => (all & !excl, 0),
        };
        for i in bits(eager) {
            let to = self.neighbors.get(i);
            self.stats.gossip_sent += 1;
            self.send(
                to,
                Frame::Gossip {
                    id,
                    round,
                    topic: topic.clone(),
                    payload: payload.clone(),
                },
            );
        }
        if lazy == 0 {
            return;
        }
        let n = lazy.count_ones() as usize;
        let entry = IHaveEntry { id, round };
        if n <= self.cfg.lazy_fanout {
            for i in bits(lazy) {
                self.queue_ihave(now, i, entry);
            }
        } else {
            let candidates: Vec<usize> = bits(lazy).collect();
            let picked = sample(&mut self.rng, n, self.cfg.lazy_fanout);
            for k in picked.iter() {
                self.queue_ihave(now, candidates[k], entry);
            }
        }
    }

    fn queue_ihave(&mut self, now: Time, i: usize, entry: IHaveEntry) {
        if self.ihave_total >= self.cfg.max_ihave_queue {
            self.stats.ihave_dropped += 1;
            return;
        }
        self.ihave[i].push(entry);
        self.ihave_total += 1;
        if self.ihave[i].len() >= self.cfg.ihave_batch_size {
            self.flush_ihave(i);
        }
        if self.ihave_total > 0 && self.ihave_timer.is_none() {
            let gen = self.gen();
            self.ihave_timer = Some(gen);
            self.events.push_back(Event::SetTimer {
                at: now + self.cfg.ihave_interval,
                timer: Timer::IHaveFlush { gen },
            });
        }
    }

    fn flush_ihave(&mut self, i: usize) {
        let entries = std::mem::take(&mut self.ihave[i]);
        if entries.is_empty() {
            return;
        }
        self.ihave_total -= entries.len();
        self.stats.ihave_sent += 1;
        self.stats.ihave_entries_sent += entries.len() as u64;
        self.stats.count_ihave_batch(entries.len());
        let to = self.neighbors.get(i);
        self.send(to, Frame::IHave { entries });
    }

    fn on_ihave(&mut self, now: Time, from: NodeId, e: IHaveEntry) {
        self.stats.ihave_entries_received += 1;
        let p = self.partition_of(e.id);
        if !self.owns(p) {
            self.stats.misrouted += 1;
            return;
        }
        if self.seen.contains(e.id) {
            self.maybe_optimize(now, from, p, e);
            return;
        }
        if let Some(pg) = self.pending.get_mut(&e.id) {
            if pg.announcers.len() < self.cfg.max_announcers
                && !pg.announcers.iter().any(|&(a, _)| a == from)
            {
                pg.announcers.push((from, e.round));
            }
            return;
        }
        if self.pending.len() >= self.cfg.max_pending_grafts {
            self.stats.pending_dropped += 1;
            return;
        }
        let gen = self.gen() as u32;
        self.pending.insert(
            e.id,
            PendingGraft {
                announcers: vec![(from, e.round)],
                next: 0,
                attempts: 0,
                gen,
            },
        );
        self.events.push_back(Event::SetTimer {
            at: now + self.cfg.graft_timeout,
            timer: Timer::Graft { id: e.id, gen },
        });
    }

    /// The paper's optimisation: an announcer much closer to the origin than the peer
    /// that delivered the message replaces it in the eager set.
    /// Only announcements from the same dissemination wave count as evidence: an IHave
    /// arriving later than `anti_entropy_delay` after delivery is an anti-entropy
    /// repeat (or a straggler) and says nothing about a shorter path.
    fn maybe_optimize(&mut self, now: Time, from: NodeId, p: u16, e: IHaveEntry) {
        let threshold = self.cfg.optimization_threshold;
        if threshold == 0 || self.cfg.mode == Mode::Flood {
            return;
        }
        let Some(cached) = self.cache.get_mut(&e.id) else {
            return;
        };
        // cached.round = hops via the delivering peer; via `from` it would be e.round + 1.
        if now.saturating_sub(cached.at) > self.cfg.anti_entropy_delay
            || cached.from == from
            || cached.from == self.me
            || cached.round < e.round.saturating_add(1).saturating_add(threshold)
        {
            return;
        }
        let (Some(q), Some(old)) = (
            self.neighbors.index_of(from),
            self.neighbors.index_of(cached.from),
        ) else {
            return;
        };
        cached.from = from;
        cached.round = e.round.saturating_add(1);
        cached.via_tree = true;
        // A re-link is about this root's distances only: its tree changes, the shared
        // ones do not.
        let tree = self.tree(now, p, e.id.origin);
        self.roots.set(p, e.id.origin, (tree | bit(q)) & !bit(old));
        self.stats.optimizations += 1;
        self.stats.graft_sent += 1;
        self.send(
            from,
            Frame::Graft {
                id: e.id,
                round: e.round,
                request: false,
            },
        );
        self.send_prune(old, p, e.id.origin);
    }

    fn on_graft(&mut self, now: Time, from: NodeId, id: MessageId, _round: u16, request: bool) {
        self.stats.graft_received += 1;
        let p = self.partition_of(id);
        if !self.owns(p) {
            self.stats.misrouted += 1;
            return;
        }
        if let Some(i) = self.neighbors.index_of(from) {
            // The root's tree gains the grafter; a root this shard never saw (no tree,
            // nothing cached) is counted and leaves no state behind.
            let known = self.roots.peek(p, id.origin).is_some() || self.cache.get(&id).is_some();
            if known {
                let tree = self.tree(now, p, id.origin);
                self.roots.set(p, id.origin, tree | bit(i));
                self.parts[p as usize].dups[i] = 0;
            } else {
                self.stats.unknown_roots += 1;
            }
        }
        if !request {
            return;
        }
        match self.cache.get(&id) {
            Some(m) => {
                let frame = Frame::Gossip {
                    id,
                    round: m.round,
                    topic: m.topic.clone(),
                    payload: m.payload.clone(),
                };
                self.stats.gossip_sent += 1;
                self.send(from, frame);
            }
            None => self.stats.graft_unanswerable += 1,
        }
    }

    /// A plain Prune. From a peer that speaks PruneRoot it only accompanies one (the
    /// shared trees, already pruned by it); from an older node it means "nothing of
    /// this partition", so every root's tree of the partition drops the peer.
    fn on_prune(&mut self, from: NodeId, partition: u16) {
        self.stats.prune_received += 1;
        if partition as u32 >= self.cfg.partitions || !self.owns(partition) {
            self.stats.misrouted += 1;
            return;
        }
        if let Some(i) = self.neighbors.index_of(from) {
            if self.root_aware & bit(i) == 0 {
                self.parts[partition as usize].eager &= !bit(i);
                self.roots
                    .for_each_tree(1u64 << partition, |_, m| *m &= !bit(i));
            }
        }
    }

    /// A prune of `root`'s tree: that tree and the shared ones drop the peer. A root
    /// with no tree here is counted and ignored (a flood of random roots allocates
    /// nothing).
    fn on_prune_root(&mut self, now: Time, from: NodeId, partition: u16, root: NodeId) {
        self.stats.prune_received += 1;
        if partition as u32 >= self.cfg.partitions || !self.owns(partition) {
            self.stats.misrouted += 1;
            return;
        }
        let Some(i) = self.neighbors.index_of(from) else {
            return;
        };
        self.root_aware |= bit(i);
        match self.roots.get(now, partition, root) {
            Some(tree) => self.roots.set(partition, root, tree & !bit(i)),
            None => self.stats.unknown_roots += 1,
        }
    }

    /// Sends every queued IHave now (before shutdown, so lazy peers still learn of the
    /// last messages).
    pub fn flush_ihave_queues(&mut self) {
        for i in 0..self.ihave.len() {
            self.flush_ihave(i);
        }
        self.ihave_timer = None;
    }

    // ---- timers -------------------------------------------------------------------

    /// A timer the shard asked for has come due.
    pub fn handle_timer(&mut self, now: Time, timer: Timer) {
        self.last_now = now;
        match timer {
            Timer::IHaveFlush { gen } => {
                if self.ihave_timer != Some(gen) {
                    return;
                }
                self.flush_ihave_queues();
            }
            Timer::Graft { id, gen } => self.on_graft_timer(now, id, gen),
        }
    }

    fn graft_wait(&self, attempts: u32) -> Duration {
        let factor = 1u32 << attempts.saturating_sub(1).min(16);
        (self.cfg.graft_timeout * factor).min(self.cfg.graft_max_backoff)
    }

    fn on_graft_timer(&mut self, now: Time, id: MessageId, gen: u32) {
        let Some(pg) = self.pending.get(&id) else {
            return;
        };
        if pg.gen != gen {
            return;
        }
        if pg.attempts > self.cfg.graft_max_retries {
            self.pending.remove(&id);
            self.stats.graft_failed += 1;
            self.events.push_back(Event::GraftFailed { id });
            return;
        }
        let new_gen = self.gen() as u32;
        let pg = self.pending.get_mut(&id).expect("checked above");
        pg.gen = new_gen;
        let target = if pg.announcers.is_empty() {
            None
        } else {
            let k = pg.next % pg.announcers.len();
            pg.next = k + 1;
            Some(pg.announcers[k])
        };
        pg.attempts += 1;
        let attempts = pg.attempts;
        if let Some((peer, round)) = target {
            if attempts > 1 {
                self.stats.graft_retries += 1;
            }
            let p = self.partition_of(id);
            if let Some(i) = self.neighbors.index_of(peer) {
                let tree = self.tree(now, p, id.origin);
                self.roots.set(p, id.origin, tree | bit(i));
            }
            self.stats.graft_sent += 1;
            self.send(
                peer,
                Frame::Graft {
                    id,
                    round,
                    request: true,
                },
            );
        }
        let at = now + self.graft_wait(attempts);
        self.events.push_back(Event::SetTimer {
            at,
            timer: Timer::Graft { id, gen: new_gen },
        });
    }

    // ---- background work ------------------------------------------------------------

    /// Maintenance: a partition left without eager peers (its tree parent failed)
    /// promotes a random lazy peer, so pushes resume before the next graft.
    pub fn maintenance(&mut self, _now: Time) {
        if self.cfg.mode == Mode::Flood {
            return;
        }
        let all = self.neighbors.all_mask();
        if all == 0 {
            return;
        }
        let candidates: Vec<usize> = bits(all).collect();
        for p in bits(self.owned) {
            if self.parts[p].eager & all == 0 {
                let i = candidates[self.rng.gen_range(0..candidates.len())];
                self.parts[p].eager |= bit(i);
                self.stats.peer_promotions += 1;
            }
        }
        let (rng, promotions) = (&mut self.rng, &mut self.stats.peer_promotions);
        self.roots.for_each_tree(self.owned, |_, m| {
            if *m & all == 0 {
                *m |= bit(candidates[rng.gen_range(0..candidates.len())]);
                *promotions += 1;
            }
        });
    }

    /// One anti-entropy round: send a neighbour a digest of the next slice of the
    /// payload cache (messages cached between `anti_entropy_window` and
    /// `anti_entropy_delay` ago, walked oldest first by a cursor, at most
    /// `anti_entropy_max_blocks` blocks, one Digest frame per partition) asking for
    /// its digest back. Each side then pulls what the other's digest shows it lacks.
    ///
    /// The neighbour is random, unless the last exchanges showed this shard lacking
    /// messages: then it is that neighbour again, round after round, until a whole
    /// pass of the cursor brought nothing more from it (after a heal, the two sides
    /// pull from each other until their digests agree). Also refills the pull and
    /// reply budgets, which rate-limits the work digests from any number of peers can
    /// cause. The driver calls this every `anti_entropy_interval`.
    pub fn anti_entropy(&mut self, now: Time) {
        self.ae_pulls_left = self.cfg.anti_entropy_max_pulls;
        self.ae_replies_left = self.cfg.anti_entropy_max_replies;
        self.ae_replied.clear();
        if self.neighbors.is_empty() || self.cfg.anti_entropy_interval.is_zero() {
            return;
        }
        if self
            .ae_partner
            .is_some_and(|p| self.neighbors.index_of(p).is_none())
        {
            self.ae_partner = None;
        }
        let mut cursor = self.ae_cursor;
        let (digest, wrapped) = self.digest_slice(now, &mut cursor);
        self.ae_cursor = cursor;
        if wrapped {
            // A pass over the cache ended: a partner that showed nothing missing in
            // it agrees with this shard.
            if !self.ae_found {
                self.ae_partner = None;
            }
            self.ae_found = false;
        }
        let Some(digest) = digest else {
            return;
        };
        let to = match self.ae_partner {
            Some(p) => {
                self.stats.anti_entropy_partner_rounds += 1;
                p
            }
            None => self
                .neighbors
                .get(self.rng.gen_range(0..self.neighbors.len())),
        };
        self.stats.anti_entropy_rounds += 1;
        self.send_digest(to, digest, true);
    }

    /// The next slice of cached messages eligible for a digest, from `cursor` (a
    /// cache position; see `PayloadCache::position_after`), which is left after the
    /// slice. Returns the digest
    /// (`None` when nothing is eligible) and whether the cursor wrapped to the oldest
    /// eligible message. Scans at most 64 ids per block allowed, so a slice costs
    /// bounded work however many messages are cached.
    fn digest_slice(&self, now: Time, cursor: &mut u64) -> (Option<DigestBuilder>, bool) {
        let oldest = now.checked_sub(self.cfg.anti_entropy_window);
        let lo = oldest.map_or(self.cache.first_position(), |t| {
            self.cache.position_after(t)
        });
        let Some(young) = now.checked_sub(self.cfg.anti_entropy_delay) else {
            return (None, false);
        };
        let hi = self.cache.position_after(young);
        if lo >= hi {
            return (None, false);
        }
        let mut wrapped = false;
        let mut pos = (*cursor).max(lo);
        if pos >= hi {
            pos = lo;
            wrapped = true;
        }
        let max_blocks = self.cfg.anti_entropy_max_blocks;
        let mut digest = DigestBuilder::new(self.cfg.partitions, max_blocks);
        let scan_end = hi.min(pos.saturating_add(64 * max_blocks as u64));
        while pos < scan_end {
            let Some(id) = self.cache.id_at(pos) else {
                break;
            };
            if !digest.add(id) {
                break;
            }
            pos += 1;
        }
        *cursor = pos;
        ((digest.len() > 0).then_some(digest), wrapped)
    }

    fn send_digest(&mut self, to: NodeId, digest: DigestBuilder, reply: bool) {
        self.stats.anti_entropy_blocks_sent += digest.len() as u64;
        for (partition, blocks) in digest.finish() {
            self.send(
                to,
                Frame::Digest {
                    partition,
                    reply,
                    blocks,
                },
            );
        }
    }

    /// A neighbour's digest: pull (Graft at once) every listed message this shard has
    /// neither delivered nor already awaits, within the pull budget; answer with this
    /// shard's own digest of the partition when asked and the reply budget allows.
    fn on_digest(
        &mut self,
        now: Time,
        from: NodeId,
        partition: u16,
        reply: bool,
        blocks: Vec<DigestBlock>,
    ) {
        self.stats.anti_entropy_digests_received += 1;
        if !self.owns(partition) {
            self.stats.misrouted += 1;
            return;
        }
        if self.cfg.anti_entropy_interval.is_zero() {
            return;
        }
        let mut missing = false;
        for block in blocks {
            for id in block_ids(block, self.cfg.partitions) {
                if self.partition_of(id) != partition {
                    self.stats.misrouted += 1;
                    continue;
                }
                if !self.seen.contains(id) {
                    missing = true;
                    self.pull(now, from, id);
                }
            }
        }
        if missing && self.neighbors.index_of(from).is_some() {
            // This neighbour has messages this shard lacks: keep exchanging with it.
            self.ae_partner = Some(from);
            self.ae_found = true;
        }
        if !reply {
            return;
        }
        // A round arrives as one frame per partition; the reply is one slice of this
        // shard's whole cache (all its partitions), once per sender and interval.
        if self.ae_replied.contains(&from) {
            return;
        }
        if self.ae_replies_left == 0 {
            self.stats.anti_entropy_replies_shed += 1;
            return;
        }
        let mut cursor = self.ae_reply_cursor.get(&from).copied().unwrap_or(0);
        let (digest, _) = self.digest_slice(now, &mut cursor);
        if self.neighbors.index_of(from).is_some() {
            self.ae_reply_cursor.insert(from, cursor);
        }
        if let Some(digest) = digest {
            self.ae_replies_left -= 1;
            self.ae_replied.push(from);
            self.stats.anti_entropy_replies += 1;
            self.send_digest(from, digest, false);
        }
    }

    /// Requests `id` from `from` now (anti-entropy found it missing): the graft retry
    /// timer and announcer rotation then work as after an IHave.
    fn pull(&mut self, now: Time, from: NodeId, id: MessageId) {
        if self.seen.contains(id) {
            return;
        }
        if let Some(pg) = self.pending.get_mut(&id) {
            if pg.announcers.len() < self.cfg.max_announcers
                && !pg.announcers.iter().any(|&(a, _)| a == from)
            {
                pg.announcers.push((from, 0));
            }
            return;
        }
        if self.ae_pulls_left == 0 {
            self.stats.anti_entropy_pulls_shed += 1;
            return;
        }
        if self.pending.len() >= self.cfg.max_pending_grafts {
            self.stats.pending_dropped += 1;
            return;
        }
        self.ae_pulls_left -= 1;
        self.stats.anti_entropy_pulls += 1;
        let gen = self.gen() as u32;
        self.pending.insert(
            id,
            PendingGraft {
                announcers: vec![(from, 0)],
                next: 0,
                attempts: 0,
                gen,
            },
        );
        // Grafts the announcer at once and arms the retry timer.
        self.on_graft_timer(now, id, gen);
    }

    /// Hands the seen map's declared gaps to the driver, counted by reason.
    fn emit_gaps(&mut self) {
        for gap in self.seen.take_gaps() {
            self.stats.unrecoverable.add(gap.reason, gap.missed);
            self.events.push_back(Event::Gap(gap));
        }
    }

    /// One bounded slice of TTL cleanup: expired seen-map origins and up to `budget`
    /// expired cached payloads.
    pub fn cleanup(&mut self, now: Time, budget: usize) -> CleanupProgress {
        let ttl = self.cfg.message_cache_ttl;
        self.recent_prunes
            .retain(|_, &mut at| now.saturating_sub(at) <= STALE_WINDOW);
        self.seen.declare_gaps(now);
        let removed = self.seen.expire(now)
            + self.roots.expire(now, ttl)
            + self.cache.expire(now, ttl, budget);
        self.emit_gaps();
        CleanupProgress {
            removed,
            done: !self.cache.has_expired(now, ttl),
        }
    }
}

/// A neighbour came up at index `i`: eager in a shared tree with fewer than `fanout`
/// eager peers, lazy elsewhere; before the tree's first message it may replace an
/// eager peer (reservoir sampling, so every neighbour ends up eager with equal odds).
fn offer_neighbor(part: &mut Partition, i: usize, fanout: usize, rng: &mut ChaCha8Rng) {
    part.dups[i] = 0;
    if (part.eager.count_ones() as usize) < fanout {
        part.eager |= bit(i);
        part.offered += 1;
    } else if !part.formed {
        part.offered += 1;
        let k = rng.gen_range(0..part.offered) as usize;
        if k < fanout {
            let victims: Vec<usize> = bits(part.eager).collect();
            let v = victims[k % victims.len()];
            part.eager = (part.eager & !bit(v)) | bit(i);
        }
    }
}

/// A neighbour was removed: a shared tree's mask and counters follow the index change.
fn remove_neighbor(part: &mut Partition, r: super::peers::Removed) {
    part.eager = remap_mask(part.eager, r);
    if let Some(from) = r.moved_from {
        part.dups[r.index] = part.dups[from];
    }
}
