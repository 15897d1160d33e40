//! The membership driver: runs the sans-IO HyParView [`Membership`] for the node's
//! control core and for the simulator, so that both drive the same code. It owns the
//! address book (node id -> control address, shard count, last heard), contact trust,
//! the timer queue, and the join through seeds that are known only by address; it
//! turns wire frames into [`Message`]s and [`Event`]s into [`Output`]s
//! (datagrams to send, neighbours for the shards). No sockets and no clock here: the
//! caller passes `now` and performs the outputs.
//!
//! Partition healing happens in the state machine (its lost list, see
//! `membership::hyparview`): nodes found dead are probed until they answer. The
//! driver keeps their addresses in the book so those probes can be sent.

use std::net::SocketAddr;
use std::time::Duration;

use rustc_hash::FxHashMap;

use super::config::{ConfigError, MembershipConfig};
use super::event::{Event, Message, Time, Timer};
use super::hyparview::Membership;
use super::snapshot::{MemberDriverStats, MemberInfo, MembershipSnapshot};
use crate::ids::NodeId;
use crate::timer::TimerQueue;
use crate::wire::member_frame::max_contacts;
use crate::wire::{Contact, MemberFrame};

/// Most timers waiting at once. The state machine keeps a handful per neighbour;
/// this is far above what it can reach and only guards against a bug.
pub(crate) const MAX_TIMERS: usize = 1 << 14;

/// Whether a node at `to` could reach `addr`: never a wildcard or port 0, and a
/// loopback address only when `to` is on loopback too (a loopback address told to
/// another host names that host itself).
pub(crate) fn usable_by(addr: SocketAddr, to: SocketAddr) -> bool {
    addr.port() != 0
        && !addr.ip().is_unspecified()
        && (!addr.ip().is_loopback() || to.ip().is_loopback())
}

/// What the driver's caller (the node's control core, or the simulator) must do
/// after an input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Encode, seal and send `frame` to `to`'s control socket.
    Send {
        /// The receiver's control address.
        to: SocketAddr,
        /// What to tell it.
        frame: MemberFrame,
    },
    /// `peer` entered the active view: every shard adds it as a Plumtree neighbour.
    NeighborUp {
        /// The new neighbour.
        peer: NodeId,
        /// Its control address; its shard `k` listens on port + 1 + k.
        control: SocketAddr,
        /// Its shard count.
        shards: u16,
    },
    /// `peer` left the active view.
    NeighborDown {
        /// The neighbour that left.
        peer: NodeId,
    },
}

#[derive(Clone, Copy, Debug)]
struct BookEntry {
    addr: SocketAddr,
    /// 0 until a frame or a contact told us.
    shards: u16,
    /// Last datagram from it; `None`: only heard of (shuffle, forwarded join).
    last_heard: Option<Time>,
    /// `addr` is the one the node advertised itself (its Advertise frame), which
    /// later datagrams' source addresses do not replace: behind a port mapping or a
    /// NAT the source is not where the node can be reached.
    announced: bool,
}

/// Node id -> where to reach it. Bounded: when full, the entry heard from longest
/// ago that is in neither view is evicted (views are always far below the bound).
struct AddressBook {
    map: FxHashMap<NodeId, BookEntry>,
    cap: usize,
}

impl AddressBook {
    fn get(&self, id: NodeId) -> Option<&BookEntry> {
        self.map.get(&id)
    }

    /// Makes room for one entry; `keep` says which ids must stay. False if nothing
    /// could be evicted.
    fn make_room(&mut self, keep: impl Fn(NodeId) -> bool, evictions: &mut u64) -> bool {
        if self.map.len() < self.cap {
            return true;
        }
        let victim = self
            .map
            .iter()
            .filter(|(id, _)| !keep(**id))
            .min_by_key(|(_, e)| e.last_heard)
            .map(|(id, _)| *id);
        match victim {
            Some(id) => {
                self.map.remove(&id);
                *evictions += 1;
                true
            }
            None => false,
        }
    }
}

/// The HyParView driver of one node. See the module documentation.
pub struct MemberDriver {
    me: NodeId,
    /// Our own control address and shard count, as put in contacts about us.
    my_addr: SocketAddr,
    my_shards: u16,
    /// Largest datagram before sealing: bounds shuffle samples.
    mtu: usize,
    m: Membership,
    book: AddressBook,
    /// The state machine's timers; equal deadlines fire in arming order.
    timers: TimerQueue<Timer>,
    /// Configured seeds (our own address excluded) and the ids learned from them.
    seeds: Vec<SocketAddr>,
    seed_ids: Vec<NodeId>,
    seed_backoff: Duration,
    next_seed_join: Time,
    left: bool,
    stats: MemberDriverStats,
    out: Vec<Output>,
}

impl MemberDriver {
    /// A driver for node `me` (control address `my_addr`, `my_shards` shards) that
    /// joins through `seeds` (addresses; their ids are learned from their answers).
    pub fn new(
        me: NodeId,
        my_addr: SocketAddr,
        my_shards: u16,
        mtu: usize,
        cfg: MembershipConfig,
        seeds: &[SocketAddr],
        seed: u64,
    ) -> Result<Self, ConfigError> {
        let cap = 4 * (cfg.active_view + cfg.passive_view) + 64;
        let backoff = cfg.join_retry;
        let m = Membership::new(me, cfg, seed)?;
        let mut s: Vec<SocketAddr> = Vec::new();
        for a in seeds {
            if *a != my_addr && !s.contains(a) {
                s.push(*a);
            }
        }
        Ok(Self {
            me,
            my_addr,
            my_shards,
            mtu,
            m,
            book: AddressBook {
                map: FxHashMap::default(),
                cap,
            },
            timers: TimerQueue::new(),
            seeds: s,
            seed_ids: Vec::new(),
            seed_backoff: backoff,
            next_seed_join: Duration::ZERO,
            left: false,
            stats: MemberDriverStats::default(),
            out: Vec::new(),
        })
    }

    /// Replaces the seed addresses (names resolved anew; our own address left out).
    /// Seeds already heard from stay known by id.
    pub fn set_seeds(&mut self, addrs: &[SocketAddr]) {
        self.seeds.clear();
        for a in addrs {
            if *a != self.my_addr && !self.seeds.contains(a) {
                self.seeds.push(*a);
            }
        }
    }

    /// Joins sent to seed addresses so far.
    pub fn seed_joins_sent(&self) -> u64 {
        self.stats.seed_joins_sent
    }

    /// Records the resolver's failure count, for the snapshot.
    pub fn set_seed_resolve_failures(&mut self, n: u64) {
        self.stats.seed_resolve_failures = n;
    }

    /// Starts the state machine's timers and the first join attempt.
    pub fn start(&mut self, now: Time) -> Vec<Output> {
        self.m.join(now, &[]);
        self.drain(now);
        self.tick(now)
    }

    /// The state machine it drives (views, counters), read-only: the simulator
    /// checks the overlay and sums the counters through it.
    pub fn membership(&self) -> &Membership {
        &self.m
    }

    /// The active view's members with their layouts (for `/peers`).
    pub fn active(&self) -> impl Iterator<Item = (NodeId, Option<SocketAddr>, u16)> + '_ {
        self.m.active().iter().map(|&id| {
            let e = self.book.get(id);
            (id, e.map(|e| e.addr), e.map_or(0, |e| e.shards))
        })
    }

    /// Last time `id` was heard from, if ever.
    pub fn last_heard(&self, id: NodeId) -> Option<Time> {
        self.book.get(id).and_then(|e| e.last_heard)
    }

    /// Records a datagram from `id` at `addr`; `shards` when the frame told it.
    fn heard(
        &mut self,
        id: NodeId,
        addr: SocketAddr,
        announced: Option<SocketAddr>,
        shards: u16,
        now: Time,
    ) {
        if let Some(e) = self.book.map.get_mut(&id) {
            match announced {
                Some(a) => {
                    e.addr = a;
                    e.announced = true;
                }
                None if !e.announced => e.addr = addr,
                None => {}
            }
            e.last_heard = Some(now);
            if shards > 0 {
                e.shards = shards;
            }
            return;
        }
        self.insert(
            id,
            BookEntry {
                addr: announced.unwrap_or(addr),
                shards,
                last_heard: Some(now),
                announced: announced.is_some(),
            },
        );
    }

    /// Adds a new entry, evicting one if the book is full; false if it is full of
    /// view members (cannot happen with the bound `new` sets).
    fn insert(&mut self, id: NodeId, e: BookEntry) -> bool {
        let keep: Vec<NodeId> = self
            .m
            .active()
            .iter()
            .chain(self.m.passive())
            .chain(&self.seed_ids)
            .copied()
            .chain(self.m.lost())
            .collect();
        let ok = self.book.make_room(
            |n| keep.contains(&n),
            &mut self.stats.address_book_evictions,
        );
        if ok {
            self.book.map.insert(id, e);
        }
        ok
    }

    /// Records a contact learned second hand. An entry we heard from directly wins:
    /// its source address is better evidence than a third party's report.
    fn learn(&mut self, c: &Contact) -> bool {
        if !c.is_usable() {
            self.stats.bad_contacts += 1;
            return false;
        }
        if c.id == self.me {
            return true;
        }
        match self.book.map.get_mut(&c.id) {
            Some(e) if e.last_heard.is_some() => {
                if e.shards == 0 {
                    e.shards = c.shards;
                }
            }
            Some(e) => {
                e.addr = c.addr;
                e.shards = c.shards;
            }
            None => {
                return self.insert(
                    c.id,
                    BookEntry {
                        addr: c.addr,
                        shards: c.shards,
                        last_heard: None,
                        announced: false,
                    },
                );
            }
        }
        true
    }

    fn contact(&self, id: NodeId) -> Option<Contact> {
        if id == self.me {
            return Some(Contact {
                id,
                addr: self.my_addr,
                shards: self.my_shards,
            });
        }
        let e = self.book.get(id)?;
        (e.shards > 0).then_some(Contact {
            id,
            addr: e.addr,
            shards: e.shards,
        })
    }

    /// The contact for `id` as it may be told to a node at `to`: `None` (counted in
    /// `unroutable` or `unusable_withheld`) when we cannot describe it, or when its
    /// address could not work for the receiver: a wildcard, or a loopback address
    /// told to a node that is not on loopback (it would reach itself, not `id`).
    fn contact_for(&mut self, id: NodeId, to: SocketAddr) -> Option<Contact> {
        let Some(c) = self.contact(id) else {
            self.stats.unroutable += 1;
            return None;
        };
        if !usable_by(c.addr, to) {
            self.stats.unusable_withheld += 1;
            return None;
        }
        Some(c)
    }

    /// Contacts for `ids` that we can describe to a node at `to`, at most `max`.
    fn contacts(&mut self, ids: &[NodeId], max: usize, to: SocketAddr) -> Vec<Contact> {
        let mut v = Vec::with_capacity(ids.len().min(max));
        for &id in ids {
            if v.len() >= max {
                break;
            }
            if let Some(c) = self.contact_for(id, to) {
                v.push(c);
            }
        }
        v
    }

    /// One decoded control datagram from `from` (header sender) at `src`, without
    /// an Advertise frame.
    pub fn on_frames(
        &mut self,
        now: Time,
        from: NodeId,
        src: SocketAddr,
        frames: Vec<MemberFrame>,
    ) -> Vec<Output> {
        self.on_frames_advertised(now, from, src, None, frames)
    }

    /// [`on_frames`](Self::on_frames) for a datagram that carried the sender's
    /// advertised control address (its Advertise frame): that address, not `src`,
    /// is where the sender is reached from now on.
    pub fn on_frames_advertised(
        &mut self,
        now: Time,
        from: NodeId,
        src: SocketAddr,
        advertised: Option<SocketAddr>,
        frames: Vec<MemberFrame>,
    ) -> Vec<Output> {
        if self.left || from == self.me {
            return Vec::new();
        }
        let shards = frames
            .iter()
            .find_map(|f| match f {
                MemberFrame::Join { shards }
                | MemberFrame::Neighbor { shards, .. }
                | MemberFrame::NeighborReply { shards, .. } => Some(*shards),
                _ => None,
            })
            .unwrap_or(0);
        self.heard(from, src, advertised, shards, now);
        // Where `from` is reached: what it advertised, else its datagrams' source.
        let reach = self.book.get(from).map_or(src, |e| e.addr);
        if self.seeds.contains(&src) && !self.seed_ids.contains(&from) {
            self.seed_learned(now, from, &frames);
        }
        for f in frames {
            let msg = match f {
                MemberFrame::Join { shards } => {
                    if shards == 0 {
                        self.stats.bad_contacts += 1;
                        continue;
                    }
                    Message::Join
                }
                MemberFrame::Disconnect => Message::Disconnect,
                MemberFrame::ForwardJoin { new, ttl } => {
                    if !self.learn(&new) {
                        continue;
                    }
                    Message::ForwardJoin { new: new.id, ttl }
                }
                MemberFrame::Neighbor {
                    high_priority,
                    shards,
                } => {
                    if shards == 0 {
                        self.stats.bad_contacts += 1;
                        continue;
                    }
                    Message::Neighbor { high_priority }
                }
                MemberFrame::NeighborReply { accepted, shards } => {
                    if shards == 0 {
                        self.stats.bad_contacts += 1;
                        continue;
                    }
                    Message::NeighborReply { accepted }
                }
                MemberFrame::Shuffle {
                    mut origin,
                    ttl,
                    nodes,
                } => {
                    // The origin's own datagram: what we know of it directly (its
                    // advertised address, else its source) beats what it says.
                    if origin.id == from {
                        origin.addr = reach;
                    }
                    if !self.learn(&origin) {
                        continue;
                    }
                    let nodes = nodes
                        .iter()
                        .filter(|c| self.learn(c))
                        .map(|c| c.id)
                        .collect();
                    Message::Shuffle {
                        origin: origin.id,
                        ttl,
                        nodes,
                    }
                }
                MemberFrame::ShuffleReply { nodes } => Message::ShuffleReply {
                    nodes: nodes
                        .iter()
                        .filter(|c| self.learn(c))
                        .map(|c| c.id)
                        .collect(),
                },
                MemberFrame::Heartbeat { short } => Message::Heartbeat { short },
                MemberFrame::Probe => Message::Probe,
                MemberFrame::ProbeReply => Message::ProbeReply,
                MemberFrame::Splice { mut partner } => {
                    // The requester naming itself: what we know of it directly beats
                    // what it says.
                    if partner.id == from {
                        partner.addr = reach;
                    }
                    if !self.learn(&partner) {
                        continue;
                    }
                    Message::Splice {
                        partner: partner.id,
                    }
                }
                MemberFrame::SpliceOffer { new } => {
                    if !self.learn(&new) {
                        continue;
                    }
                    Message::SpliceOffer { new: new.id }
                }
                MemberFrame::SpliceReply { accepted } => Message::SpliceReply { accepted },
                MemberFrame::Introduce { node } => {
                    if !self.learn(&node) {
                        continue;
                    }
                    Message::Introduce { node: node.id }
                }
            };
            self.m.handle(now, from, msg);
            self.drain(now);
        }
        std::mem::take(&mut self.out)
    }

    /// A seed we knew only by address wrote to us for the first time: from now on
    /// the state machine knows it by id. Each new join makes contact nodes start random
    /// walks that end in forced links, which knock members out of full views all over
    /// the overlay, so this starts one only while the node is not yet attached.
    fn seed_learned(&mut self, now: Time, from: NodeId, frames: &[MemberFrame]) {
        let joined = self.joined();
        self.seed_ids.push(from);
        let acked = frames
            .iter()
            .any(|f| matches!(f, MemberFrame::NeighborReply { accepted: true, .. }));
        if acked {
            // Its answer to our Join by address: it already holds us and sent its
            // walks. Count the reply as the join's answer without asking again.
            self.m.join_sent_to(now, from);
        } else if joined {
            // A shuffle or a walk's end, long after we joined: kept for rejoins only.
            self.m.add_seed(from);
        } else {
            // Not attached yet, even with neighbours: a node joined *through us* before
            // our own seed answered would otherwise leave us on an island with it. Our
            // Join by address may have been lost, so join through it by id now.
            let mut ids = vec![from];
            ids.extend(self.seed_ids.iter().copied().filter(|&s| s != from));
            self.m.join(now, &ids);
        }
        self.drain(now);
    }

    /// Whether a seed has acknowledged our join and we still have a neighbour: only
    /// then is a seed heard from later not a way into the cluster we still need.
    fn joined(&self) -> bool {
        !self.seed_ids.is_empty() && !self.m.is_joining() && !self.m.active().is_empty()
    }

    /// When [`MemberDriver::tick`] next has something to do: the earliest armed
    /// timer, or the next join retry while one is needed. `None`: nothing is armed.
    pub fn next_due(&self) -> Option<Time> {
        if self.left {
            return None;
        }
        let timer = self.timers.next_due();
        let need =
            !self.seeds.is_empty() && (self.seed_ids.is_empty() || self.m.active().is_empty());
        let join = need.then_some(self.next_seed_join);
        match (timer, join) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires due timers and retries the join at seed
    /// addresses until one answers (and while we have no neighbour). Called by the
    /// control core at [`MemberDriver::next_due`] and after each datagram batch.
    pub fn tick(&mut self, now: Time) -> Vec<Output> {
        if self.left {
            return Vec::new();
        }
        while let Some(t) = self.timers.pop_due(now) {
            self.m.handle_timer(now, t);
            self.drain(now);
        }
        let cfg = self.m.config();
        let (retry, retry_max) = (cfg.join_retry, cfg.join_retry_max);
        // Join through seed addresses until one answered, and again whenever the node
        // is left with no neighbour at all.
        let need =
            !self.seeds.is_empty() && (self.seed_ids.is_empty() || self.m.active().is_empty());
        if !need {
            self.seed_backoff = retry;
        } else if now >= self.next_seed_join {
            // Seeds may be down or not started yet: ask every one by address, with a
            // doubling wait. The state machine retries the ones whose id we know.
            // All at once rather than one per attempt: measured on the simulator
            // (bench/results/sim/host-migration.md, "Fixing the join policy"), one at
            // a time halves promotions but leaves views short (about 54 splices a run
            // against 2) and trees deeper (mean LDH 20.4 against 16.6, more grafts and
            // optimizations), and a node whose first seed is down waits a `join_retry`.
            for &a in &self.seeds {
                self.out.push(Output::Send {
                    to: a,
                    frame: MemberFrame::Join {
                        shards: self.my_shards,
                    },
                });
                self.stats.seed_joins_sent += 1;
            }
            self.next_seed_join = now + self.seed_backoff;
            self.seed_backoff = (self.seed_backoff * 2).min(retry_max);
            if !self.seed_ids.is_empty() && !self.m.is_joining() {
                let ids = self.seed_ids.clone();
                self.m.join(now, &ids);
                self.drain(now);
            }
        }
        std::mem::take(&mut self.out)
    }

    /// Leaves the cluster: Disconnect to every active neighbour, every neighbour
    /// reported down; afterwards every input is ignored.
    pub fn leave(&mut self, now: Time) -> Vec<Output> {
        if self.left {
            return Vec::new();
        }
        self.m.leave(now);
        self.drain(now);
        self.left = true;
        self.timers.clear();
        std::mem::take(&mut self.out)
    }

    /// Drains the state machine's events into outputs and the timer queue.
    fn drain(&mut self, _now: Time) {
        while let Some(ev) = self.m.poll_event() {
            match ev {
                Event::Send { to, msg } => self.send(to, msg),
                Event::NeighborUp(peer) => match self.book.get(peer) {
                    Some(e) if e.shards > 0 => self.out.push(Output::NeighborUp {
                        peer,
                        control: e.addr,
                        shards: e.shards,
                    }),
                    _ => self.stats.unroutable += 1,
                },
                Event::NeighborDown(peer) => self.out.push(Output::NeighborDown { peer }),
                Event::SetTimer { at, timer } => {
                    if self.timers.len() >= MAX_TIMERS {
                        self.stats.timer_overflow += 1;
                        continue;
                    }
                    self.timers.insert(at, timer);
                }
            }
        }
    }

    /// Turns one message into a frame, with contacts for the nodes it names.
    fn send(&mut self, to: NodeId, msg: Message) {
        let Some(addr) = self.book.get(to).map(|e| e.addr) else {
            self.stats.unroutable += 1;
            return;
        };
        let shards = self.my_shards;
        let frame = match msg {
            Message::Join => MemberFrame::Join { shards },
            Message::ForwardJoin { new, ttl } => match self.contact_for(new, addr) {
                Some(new) => MemberFrame::ForwardJoin { new, ttl },
                None => return,
            },
            Message::Neighbor { high_priority } => MemberFrame::Neighbor {
                high_priority,
                shards,
            },
            Message::NeighborReply { accepted } => MemberFrame::NeighborReply { accepted, shards },
            Message::Disconnect => MemberFrame::Disconnect,
            Message::Shuffle { origin, ttl, nodes } => {
                let Some(origin) = self.contact_for(origin, addr) else {
                    return;
                };
                let nodes = self.contacts(&nodes, max_contacts(self.mtu, true), addr);
                MemberFrame::Shuffle { origin, ttl, nodes }
            }
            Message::ShuffleReply { nodes } => MemberFrame::ShuffleReply {
                nodes: self.contacts(&nodes, max_contacts(self.mtu, false), addr),
            },
            Message::Heartbeat { short } => MemberFrame::Heartbeat { short },
            Message::Probe => MemberFrame::Probe,
            Message::ProbeReply => MemberFrame::ProbeReply,
            Message::Splice { partner } => match self.contact_for(partner, addr) {
                Some(partner) => MemberFrame::Splice { partner },
                None => return,
            },
            Message::SpliceOffer { new } => match self.contact_for(new, addr) {
                Some(new) => MemberFrame::SpliceOffer { new },
                None => return,
            },
            Message::SpliceReply { accepted } => MemberFrame::SpliceReply { accepted },
            Message::Introduce { node } => match self.contact_for(node, addr) {
                Some(node) => MemberFrame::Introduce { node },
                None => return,
            },
        };
        self.out.push(Output::Send { to: addr, frame });
    }

    /// The views and counters for `/members` and metrics.
    pub fn snapshot(&self, now: Time) -> MembershipSnapshot {
        let info = |id: NodeId, state: &str| {
            let e = self.book.get(id);
            MemberInfo {
                node_id: id.to_string(),
                name: None,
                addr: e.map(|e| e.addr),
                shards: e.map_or(0, |e| e.shards),
                state: state.to_string(),
                last_heard_ms_ago: e
                    .and_then(|e| e.last_heard)
                    .map(|t| now.saturating_sub(t).as_millis() as u64),
            }
        };
        let cfg = self.m.config();
        MembershipSnapshot {
            active: self
                .m
                .active()
                .iter()
                .map(|&id| info(id, "active"))
                .collect(),
            passive: self
                .m
                .passive()
                .iter()
                .map(|&id| info(id, "passive"))
                .collect(),
            lost: self.m.lost().map(|id| info(id, "lost")).collect(),
            active_capacity: cfg.active_view,
            passive_capacity: cfg.passive_view,
            lost_capacity: cfg.passive_view,
            joining: self.m.is_joining()
                || (!self.seeds.is_empty()
                    && (self.seed_ids.is_empty() || self.m.active().is_empty())),
            seeds: self.seeds.clone(),
            address_book_size: self.book.map.len(),
            address_book_capacity: self.book.cap,
            timers_pending: self.timers.len(),
            stats: self.m.stats(),
            driver: self.stats,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use bytes::Bytes;

    use super::*;
    use crate::wire::{decode_members, encode_member_datagram, Header};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn cfg() -> MembershipConfig {
        MembershipConfig {
            heartbeat_interval: Duration::from_millis(100),
            failure_timeout: Duration::from_millis(500),
            probe_timeout: Duration::from_millis(200),
            shuffle_interval: Duration::from_millis(300),
            join_retry: Duration::from_millis(100),
            join_retry_max: Duration::from_millis(800),
            lost_probe_max: Duration::from_millis(800),
            ..MembershipConfig::default()
        }
    }

    /// Drivers wired through the real codec; datagrams to an address with no live
    /// driver are lost.
    struct Net {
        nodes: Vec<(NodeId, SocketAddr, MemberDriver, bool)>,
        queue: VecDeque<(usize, SocketAddr, MemberFrame)>,
        /// (node index, neighbour up/down output) in order.
        links: Vec<(usize, Output)>,
        /// Probes sent: (time, sender index, to).
        probes: Vec<(Time, usize, SocketAddr)>,
        /// A partition: node `i` is on side `sides[i]`; datagrams between sides are lost.
        sides: Option<Vec<u8>>,
        now: Time,
    }

    impl Net {
        fn new() -> Self {
            Net {
                nodes: Vec::new(),
                queue: VecDeque::new(),
                links: Vec::new(),
                probes: Vec::new(),
                sides: None,
                now: Duration::ZERO,
            }
        }

        fn add(&mut self, id: u64, port: u16, shards: u16, seeds: &[SocketAddr]) -> usize {
            self.add_with(id, port, shards, seeds, cfg())
        }

        fn add_with(
            &mut self,
            id: u64,
            port: u16,
            shards: u16,
            seeds: &[SocketAddr],
            cfg: MembershipConfig,
        ) -> usize {
            let d =
                MemberDriver::new(NodeId(id), addr(port), shards, 1400, cfg, seeds, id).unwrap();
            self.nodes.push((NodeId(id), addr(port), d, false));
            self.nodes.len() - 1
        }

        fn start(&mut self, i: usize) {
            self.nodes[i].3 = true;
            let out = self.nodes[i].2.start(self.now);
            self.push(i, out);
        }

        fn push(&mut self, i: usize, out: Vec<Output>) {
            for o in out {
                match o {
                    Output::Send { to, frame } => {
                        if frame == MemberFrame::Probe {
                            self.probes.push((self.now, i, to));
                        }
                        self.queue.push_back((i, to, frame))
                    }
                    other => self.links.push((i, other)),
                }
            }
        }

        /// Delivers everything queued (and what it causes).
        fn flush(&mut self) {
            while let Some((from, to, frame)) = self.queue.pop_front() {
                let (id, src) = (self.nodes[from].0, self.nodes[from].1);
                let h = Header {
                    sender: id,
                    incarnation: 1,
                    flags: 0,
                    version: crate::wire::VERSION,
                };
                let raw = Bytes::from(encode_member_datagram(&h, &[frame]));
                let dg = decode_members(&raw).unwrap();
                let Some(j) = self.nodes.iter().position(|n| n.1 == to && n.3) else {
                    continue;
                };
                if self.sides.as_ref().is_some_and(|s| s[from] != s[j]) {
                    continue;
                }
                let out = self.nodes[j]
                    .2
                    .on_frames(self.now, dg.header.sender, src, dg.frames);
                self.push(j, out);
            }
        }

        /// Advances time in 10 ms ticks up to `until`, delivering as it goes.
        fn run(&mut self, until: Time) {
            while self.now < until {
                self.now += Duration::from_millis(10);
                for i in 0..self.nodes.len() {
                    if self.nodes[i].3 {
                        let out = self.nodes[i].2.tick(self.now);
                        self.push(i, out);
                    }
                }
                self.flush();
            }
        }

        fn active(&self, i: usize) -> Vec<NodeId> {
            self.nodes[i].2.m.active().to_vec()
        }

        /// Why the active views of `members` are not one symmetric, connected overlay
        /// of exactly those nodes; `None` when they are.
        fn overlay_problem(&self, members: &[usize]) -> Option<String> {
            let ids: Vec<NodeId> = members.iter().map(|&i| self.nodes[i].0).collect();
            let index = |id: NodeId| members[ids.iter().position(|&x| x == id).unwrap()];
            for &i in members {
                let view = self.active(i);
                if view.is_empty() {
                    return Some(format!("node {i} has no neighbour"));
                }
                for p in view {
                    if !ids.contains(&p) {
                        return Some(format!("node {i} lists {p:?}, outside the overlay"));
                    }
                    if !self.active(index(p)).contains(&self.nodes[i].0) {
                        return Some(format!("node {i} lists {p:?}, not the other way round"));
                    }
                }
            }
            let mut seen = vec![members[0]];
            let mut todo = vec![members[0]];
            while let Some(i) = todo.pop() {
                for p in self.active(i) {
                    let j = index(p);
                    if !seen.contains(&j) {
                        seen.push(j);
                        todo.push(j);
                    }
                }
            }
            (seen.len() < members.len()).then(|| format!("only {seen:?} connected"))
        }
    }

    /// Six nodes, each seeded with every node started before it (as the chaos test
    /// starts them), with active views of 2: each side of a 3 | 3 cut can fill its
    /// views on its own, so no node is ever starved into rejoining through its seeds
    /// and only the lost-node rule can bring the sides together again.
    fn six_seeded_by_their_elders() -> Net {
        let mut net = Net::new();
        let mut seeds = Vec::new();
        let cfg = MembershipConfig {
            active_view: 2,
            ..cfg()
        };
        for k in 0..6u16 {
            let port = 7000 + 10 * k;
            let i = net.add_with(u64::from(k) + 1, port, 1, &seeds, cfg.clone());
            seeds.push(addr(port));
            net.start(i);
        }
        net
    }

    #[test]
    fn a_healed_partition_re_merges_through_the_lost_nodes() {
        let mut net = six_seeded_by_their_elders();
        net.run(Duration::from_secs(3));
        let all = [0, 1, 2, 3, 4, 5];
        assert_eq!(net.overlay_problem(&all), None);
        // Cut 3 | 3 long enough for each side to drop the other from both views.
        net.sides = Some(vec![0, 0, 0, 1, 1, 1]);
        net.run(Duration::from_secs(8));
        for (side, members) in [(0u64, [0, 1, 2]), (1, [3, 4, 5])] {
            assert_eq!(net.overlay_problem(&members), None, "side {side}");
            for i in members {
                let m = &net.nodes[i].2.m;
                // Full views: nobody asks a passive node, so none is ever promoted
                // across the healed cut (passive views may still name the other side).
                assert_eq!(m.active().len(), 2, "node {i}: views full on each side");
            }
        }
        // The views forgot the other side; the lost lists did not.
        let lost: usize = net.nodes.iter().map(|n| n.2.m.lost().count()).sum();
        assert!(lost > 0);
        let probes_during = net.probes.len();
        assert!(probes_during > 0, "lost nodes are probed during the cut");
        // Heal: the first answered probe makes a node join through the other side.
        net.sides = None;
        let healed = net.now;
        net.run(healed + Duration::from_secs(3));
        assert_eq!(net.overlay_problem(&all), None);
        let rejoins: u64 = net.nodes.iter().map(|n| n.2.m.stats().lost_rejoins).sum();
        let revived: u64 = net.nodes.iter().map(|n| n.2.m.stats().lost_revived).sum();
        assert!(rejoins >= 1 && revived >= rejoins, "{rejoins} {revived}");
        // Rejoins are spaced one shuffle period apart per node.
        for n in &net.nodes {
            assert!(
                n.2.m.stats().lost_rejoins <= 1 + 3000 / 300,
                "{}",
                n.2.m.stats().lost_rejoins
            );
        }
    }

    #[test]
    fn a_dead_neighbour_is_probed_with_capped_backoff_until_it_answers() {
        let mut net = Net::new();
        let a = net.add(1, 7000, 1, &[]);
        let b = net.add(2, 7010, 1, &[addr(7000)]);
        net.start(a);
        net.start(b);
        net.run(Duration::from_millis(500));
        assert_eq!(net.active(a), vec![NodeId(2)]);
        // B dies: A's failure detector drops it (failure_timeout 500 + probe 200).
        net.nodes[b].3 = false;
        let died = net.now;
        net.run(died + Duration::from_secs(10));
        assert!(net.active(a).is_empty());
        assert_eq!(net.nodes[a].2.m.lost().collect::<Vec<_>>(), vec![NodeId(2)]);
        let lost_probes: Vec<Time> = net
            .probes
            .iter()
            .filter(|(t, i, to)| *i == a && *to == addr(7010) && *t > died)
            .map(|(t, _, _)| *t)
            .collect();
        // The failure detector's Probe, its 200 ms deadline, then join_retry.
        assert_eq!(lost_probes[1] - lost_probes[0], Duration::from_millis(300));
        let gaps: Vec<u128> = lost_probes[1..]
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis())
            .collect();
        // join_retry 100 ms doubling to lost_probe_max 800 ms (10 ms ticks).
        assert_eq!(&gaps[..4], &[100, 200, 400, 800], "{gaps:?}");
        assert!(gaps[4..].iter().all(|&g| g == 800), "{gaps:?}");
        // The first is the failure detector's own Probe, then the lost-list ones.
        assert_eq!(
            net.nodes[a].2.m.stats().lost_probes_sent,
            lost_probes.len() as u64 - 1
        );
        // B comes back (a new process): its answer makes A join through it.
        net.nodes[b].2 = MemberDriver::new(NodeId(2), addr(7010), 1, 1400, cfg(), &[], 2).unwrap();
        net.start(b);
        net.run(net.now + Duration::from_secs(2));
        assert_eq!(net.active(a), vec![NodeId(2)]);
        assert_eq!(net.active(b), vec![NodeId(1)]);
        assert_eq!(net.nodes[a].2.m.stats().lost_rejoins, 1);
        assert_eq!(net.nodes[a].2.m.lost().count(), 0);
        let s = net.nodes[a].2.snapshot(net.now);
        assert!(s.lost.is_empty() && s.lost_capacity == cfg().passive_view);
    }

    #[test]
    fn joins_through_a_seed_known_only_by_address() {
        let mut net = Net::new();
        let a = net.add(1, 7000, 2, &[]);
        let b = net.add(2, 7010, 3, &[addr(7000)]);
        net.start(a);
        net.start(b);
        net.run(Duration::from_millis(200));
        assert_eq!(net.active(a), vec![NodeId(2)]);
        assert_eq!(net.active(b), vec![NodeId(1)]);
        // The shards are told where the neighbour's shards listen.
        assert!(net.links.contains(&(
            a,
            Output::NeighborUp {
                peer: NodeId(2),
                control: addr(7010),
                shards: 3
            }
        )));
        assert!(net.links.contains(&(
            b,
            Output::NeighborUp {
                peer: NodeId(1),
                control: addr(7000),
                shards: 2
            }
        )));
        let s = net.nodes[b].2.snapshot(net.now);
        assert!(!s.joining);
        assert_eq!(s.active[0].addr, Some(addr(7000)));
    }

    #[test]
    fn a_seed_that_is_down_is_retried_with_backoff_until_it_answers() {
        let mut net = Net::new();
        let a = net.add(1, 7000, 1, &[]);
        let b = net.add(2, 7010, 1, &[addr(7000)]);
        net.start(b);
        net.run(Duration::from_millis(1000));
        // Sent at 0, 100, 300, 700 ms (doubling from join_retry = 100).
        let sent = net.nodes[b].2.stats.seed_joins_sent;
        assert_eq!(sent, 4);
        assert!(net.nodes[b].2.snapshot(net.now).joining);
        net.start(a);
        net.run(Duration::from_millis(2600));
        assert_eq!(net.active(b), vec![NodeId(1)]);
        let after = net.nodes[b].2.stats.seed_joins_sent;
        net.run(Duration::from_millis(5000));
        assert_eq!(
            net.nodes[b].2.stats.seed_joins_sent, after,
            "stops once joined"
        );
    }

    #[test]
    fn a_node_joined_through_us_before_our_seed_answered_does_not_make_an_island() {
        let mut net = Net::new();
        let a = net.add(1, 7000, 1, &[]);
        let b = net.add(2, 7010, 1, &[addr(7000)]);
        let c = net.add(3, 7020, 1, &[addr(7010)]);
        // B and C first; A (B's seed) comes up later.
        net.start(b);
        net.start(c);
        net.run(Duration::from_millis(300));
        assert_eq!(net.active(b), vec![NodeId(3)]);
        net.start(a);
        net.run(Duration::from_millis(3000));
        let mut ab = net.active(a);
        ab.sort();
        assert_eq!(ab, vec![NodeId(2), NodeId(3)]);
        assert!(net.active(b).contains(&NodeId(1)));
    }

    #[test]
    fn leave_disconnects_every_active_neighbour() {
        let mut net = Net::new();
        let a = net.add(1, 7000, 1, &[]);
        let b = net.add(2, 7010, 1, &[addr(7000)]);
        let c = net.add(3, 7020, 1, &[addr(7000)]);
        for i in [a, b, c] {
            net.start(i);
        }
        net.run(Duration::from_millis(500));
        assert_eq!(net.active(a).len(), 2);
        let out = net.nodes[a].2.leave(net.now);
        let disconnects: Vec<SocketAddr> = out
            .iter()
            .filter_map(|o| match o {
                Output::Send {
                    to,
                    frame: MemberFrame::Disconnect,
                } => Some(*to),
                _ => None,
            })
            .collect();
        assert_eq!(disconnects.len(), 2);
        assert!(disconnects.contains(&addr(7010)) && disconnects.contains(&addr(7020)));
        assert_eq!(
            out.iter()
                .filter(|o| matches!(o, Output::NeighborDown { .. }))
                .count(),
            2
        );
        // Inputs after leaving are ignored.
        assert!(net.nodes[a]
            .2
            .tick(net.now + Duration::from_secs(9))
            .is_empty());
        net.push(a, out);
        net.nodes[a].3 = false;
        net.flush();
        assert_eq!(net.active(b), vec![NodeId(3)]);
    }

    #[test]
    fn an_advertised_address_beats_the_datagrams_source() {
        let mut d = MemberDriver::new(NodeId(1), addr(7000), 1, 1400, cfg(), &[], 1).unwrap();
        d.start(Duration::ZERO);
        // Node 2 sits behind a port mapping: it is reached at 27000, but its datagrams
        // leave from 27915 (a NAT's choice).
        let (advertised, source) = (addr(27000), addr(27915));
        let out = d.on_frames_advertised(
            Duration::from_millis(5),
            NodeId(2),
            source,
            Some(advertised),
            vec![MemberFrame::Join { shards: 2 }],
        );
        assert!(
            out.iter().any(
                |o| matches!(o, Output::NeighborUp { peer: NodeId(2), control, shards: 2 }
                if *control == advertised)
            ),
            "{out:?}"
        );
        for o in &out {
            if let Output::Send { to, .. } = o {
                assert_ne!(
                    *to, source,
                    "sent to the source, not the advertised address"
                );
            }
        }
        let peer = |d: &MemberDriver| d.active().find(|(id, ..)| *id == NodeId(2));
        assert_eq!(peer(&d), Some((NodeId(2), Some(advertised), 2)));
        // Later datagrams without the frame (heartbeats, its own shuffle naming its
        // source) do not move it back to the source address.
        d.on_frames(
            Duration::from_millis(10),
            NodeId(2),
            source,
            vec![MemberFrame::Heartbeat { short: false }],
        );
        let me = Contact {
            id: NodeId(2),
            addr: source,
            shards: 2,
        };
        d.on_frames(
            Duration::from_millis(15),
            NodeId(2),
            source,
            vec![MemberFrame::Shuffle {
                origin: me,
                ttl: 0,
                nodes: vec![],
            }],
        );
        assert_eq!(peer(&d), Some((NodeId(2), Some(advertised), 2)));
        // A node that sends no Advertise frame (it predates it) is reached at its
        // source, as before.
        d.on_frames(
            Duration::from_millis(20),
            NodeId(3),
            addr(7030),
            vec![MemberFrame::Join { shards: 1 }],
        );
        let three = d.active().find(|(id, ..)| *id == NodeId(3));
        assert_eq!(three, Some((NodeId(3), Some(addr(7030)), 1)));
        // First heard through a frame that makes no neighbour (a ShuffleReply whose
        // source port a NAT rewrote): the Advertise frame in it still wins.
        d.on_frames_advertised(
            Duration::from_millis(25),
            NodeId(4),
            addr(26462),
            Some(addr(7040)),
            vec![MemberFrame::ShuffleReply { nodes: vec![] }],
        );
        assert_eq!(d.book.get(NodeId(4)).map(|e| e.addr), Some(addr(7040)));
        assert_eq!(d.stats.bad_contacts, 0);
    }

    #[test]
    fn bad_contacts_and_layouts_are_dropped_and_counted() {
        let mut d = MemberDriver::new(NodeId(1), addr(7000), 1, 1400, cfg(), &[], 1).unwrap();
        d.start(Duration::ZERO);
        let bad = Contact {
            id: NodeId(9),
            addr: addr(0),
            shards: 1,
        };
        let t = Duration::from_millis(5);
        let out = d.on_frames(
            t,
            NodeId(2),
            addr(7010),
            vec![
                MemberFrame::ForwardJoin { new: bad, ttl: 0 },
                MemberFrame::Join { shards: 0 },
                MemberFrame::ShuffleReply { nodes: vec![bad] },
            ],
        );
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(d.stats.bad_contacts, 3);
        assert!(d.m.active().is_empty() && d.m.passive().is_empty());
    }

    #[test]
    fn a_loopback_or_wildcard_address_is_never_told_to_another_host() {
        let ip = |s: &str| -> SocketAddr { s.parse().unwrap() };
        assert!(usable_by(ip("127.0.0.1:7000"), ip("127.0.0.1:7010")));
        assert!(usable_by(ip("198.18.0.3:7000"), ip("127.0.0.1:7010")));
        assert!(!usable_by(ip("127.0.0.1:7000"), ip("198.18.0.2:7000")));
        assert!(!usable_by(ip("0.0.0.0:7000"), ip("127.0.0.1:7010")));
        assert!(!usable_by(ip("198.18.0.3:0"), ip("198.18.0.2:7000")));

        let mut d =
            MemberDriver::new(NodeId(1), ip("198.18.0.1:7000"), 1, 1400, cfg(), &[], 1).unwrap();
        d.start(Duration::ZERO);
        let t = Duration::from_millis(5);
        let remote = ip("198.18.0.2:7000");
        let local = ip("127.0.0.1:7003");
        d.on_frames(t, NodeId(2), remote, vec![MemberFrame::Join { shards: 1 }]);
        // A node on this host joins over loopback: its random walk must not reach the
        // remote node naming 127.0.0.1, which would mean the remote host itself.
        let out = d.on_frames(t, NodeId(3), local, vec![MemberFrame::Join { shards: 1 }]);
        let told_remote: Vec<&Output> = out
            .iter()
            .filter(|o| matches!(o, Output::Send { to, frame: MemberFrame::ForwardJoin { .. } } if *to == remote))
            .collect();
        assert!(told_remote.is_empty(), "{told_remote:?}");
        assert_eq!(d.stats.unusable_withheld, 1);
        // The local node may be told about the remote one.
        let told_local = out.iter().any(|o| {
            matches!(o, Output::Send { to, frame: MemberFrame::Neighbor { .. } | MemberFrame::NeighborReply { .. } } if *to == local)
        });
        assert!(told_local, "{out:?}");
        // Shuffles to the remote node leave the loopback contact out, too.
        let shuffle = d.on_frames(
            t,
            NodeId(2),
            remote,
            vec![MemberFrame::Shuffle {
                origin: Contact {
                    id: NodeId(2),
                    addr: remote,
                    shards: 1,
                },
                ttl: 0,
                nodes: vec![],
            }],
        );
        for o in &shuffle {
            if let Output::Send {
                to,
                frame: MemberFrame::ShuffleReply { nodes },
            } = o
            {
                assert_eq!(*to, remote);
                assert!(
                    nodes.iter().all(|c| !c.addr.ip().is_loopback()),
                    "{nodes:?}"
                );
            }
        }
    }

    #[test]
    fn the_address_book_is_bounded() {
        let mut d = MemberDriver::new(NodeId(1), addr(7000), 1, 1400, cfg(), &[], 1).unwrap();
        d.start(Duration::ZERO);
        let cap = d.book.cap;
        for k in 0..(cap as u64 * 3) {
            let c = Contact {
                id: NodeId(1000 + k),
                addr: addr(10_000 + k as u16),
                shards: 1,
            };
            d.on_frames(
                Duration::from_millis(k),
                NodeId(2),
                addr(7010),
                vec![MemberFrame::ShuffleReply { nodes: vec![c] }],
            );
        }
        assert!(d.book.map.len() <= cap);
        assert!(d.stats.address_book_evictions > 0);
        // Every passive member is still routable.
        for p in d.m.passive() {
            assert!(d.book.get(*p).is_some(), "{p:?} lost its address");
        }
    }
}
