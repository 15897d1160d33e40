//! The HyParView state machine: active and passive views, the join random walk,
//! neighbour requests, shuffles and the heartbeat/probe failure detector.
//!
//! Choices the paper leaves open, and what this implementation does (two more rule
//! sets live in their own files: `hyparview/lost.rs`, the nodes found dead and probed in
//! case it was a partition, and `hyparview/splice.rs`, which fills views the paper's
//! rules leave short):
//! - A contact node acknowledges a Join with `NeighborReply { accepted: true }`, so the
//!   joiner learns it was let in (over UDP nothing else would tell it) and stops
//!   retrying. The joiner accepts such a reply only from a seed it sent Join to. Until
//!   that acknowledgement comes the Join is retried even if the node already has
//!   neighbours: those may be later nodes that joined *through it* while its own Join
//!   was lost, and stopping there would leave them all in an island that never meets
//!   the cluster (this is how 5 % datagram loss used to fragment a 1,000-node run).
//! - A node that accepts a ForwardJoin adds the new node to its active view and sends
//!   it `Neighbor { high_priority: true }`, which the new node always accepts, so the
//!   link is symmetric. Its reply is then a no-op at the sender.
//! - An accepting `NeighborReply` nobody asked for, and a Heartbeat or Probe from a node
//!   that is not a neighbour, are answered with `Disconnect`: the sender believes in a
//!   link we do not have, and telling it so keeps the active graph symmetric.
//! - A passive node asked to become a neighbour that does not answer within
//!   `probe_timeout` is asked once more (the request or its answer may have been
//!   lost), and only after a second silence presumed dead and dropped from the passive
//!   view: with 5 % loss one request in ten goes unanswered, and dropping live nodes
//!   that often drains passive views.
//! - A node whose active view is not full and whose passive view is exhausted (empty,
//!   nothing asked) has nobody left to repair from; it joins again through its seeds,
//!   or it would stay alone (or in a pair) for good.
//! - Besides the paper's promotion on each loss, every heartbeat round asks one more
//!   passive node while the active view is not full, so views refill even when every
//!   immediate attempt was rejected. Rejections are retried immediately with another
//!   passive node, but each node at most once per heartbeat round, which bounds the work
//!   one input can cause.
//! - A request sent again (the first went unanswered) no longer counts against the
//!   view's room: its node is probably dead, so the next passive node is asked at
//!   once instead of a `probe_timeout` later. A late acceptance that finds the view
//!   full is undone with Disconnect as usual.
//! - Promotion picks a passive node at random, as the paper does, even though the
//!   nodes heard from lately are known alive and a random one may be dead: asking the
//!   recently heard first was tried and makes the overlay local (in a 10,000-node
//!   run with half crashing, 24 nodes ended in an island of full views whose passive
//!   views held nobody outside it, for good).

use std::collections::VecDeque;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashMap;

mod lost;
mod splice;
mod state;

use super::config::{ConfigError, MembershipConfig};
use super::event::{Event, Message, Time, Timer};
use super::stats::MembershipStats;
use crate::ids::NodeId;
pub use splice::SPLICE_AFTER_ROUNDS;
pub use state::Membership;
use state::{Ask, Joining, Liveness};

impl Membership {
    /// A membership service for node `me`. `seed` drives every random choice, so a run
    /// is reproducible. Nothing happens until [`Membership::join`] or the first message.
    pub fn new(me: NodeId, cfg: MembershipConfig, seed: u64) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Self {
            me,
            active: Vec::with_capacity(cfg.active_view),
            live: Vec::with_capacity(cfg.active_view),
            passive: Vec::with_capacity(cfg.passive_view),
            pending: FxHashMap::default(),
            short_rounds: 0,
            splicing: None,
            refused: Vec::new(),
            splice_tried: Vec::new(),
            lost: Vec::new(),
            last_rejoin: None,
            heard: FxHashMap::default(),
            tried: Vec::new(),
            joining: None,
            seeds: Vec::new(),
            join_sent: Vec::new(),
            last_shuffle: Vec::new(),
            shuffle_gen: None,
            heartbeat_gen: None,
            left: false,
            next_gen: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            events: VecDeque::new(),
            stats: MembershipStats::default(),
            cfg,
        })
    }

    /// Next thing for the driver to do.
    #[inline]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.me
    }

    /// The configuration this node runs with.
    pub fn config(&self) -> &MembershipConfig {
        &self.cfg
    }

    /// The active view: the neighbours Plumtree should gossip with.
    pub fn active(&self) -> &[NodeId] {
        &self.active
    }

    /// The passive view: the backup sample the active view is repaired from.
    pub fn passive(&self) -> &[NodeId] {
        &self.passive
    }

    /// Whether `peer` is in the active view.
    pub fn is_active(&self, peer: NodeId) -> bool {
        self.active.contains(&peer)
    }

    /// The lost list: nodes found dead and probed until they answer (for status pages).
    pub fn lost(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.lost.iter().map(|l| l.id)
    }

    /// Whether `peer` is on the lost list.
    fn is_lost(&self, peer: NodeId) -> bool {
        self.lost.iter().any(|l| l.id == peer)
    }

    /// Whether a join is still unanswered (for status pages).
    pub fn is_joining(&self) -> bool {
        self.joining.is_some()
    }

    /// Counters.
    pub fn stats(&self) -> MembershipStats {
        self.stats
    }

    // ---- driver inputs ------------------------------------------------------------

    /// Starts the node and joins the cluster through `seeds`: a Join goes to the first
    /// seed, and until a seed acknowledges it is retried at the next seed with a
    /// doubling wait. The seeds are remembered for a later rejoin. With no seed (other than this node) it starts a new cluster and
    /// waits for others to join it. Also undoes [`Membership::leave`].
    pub fn join(&mut self, now: Time, seeds: &[NodeId]) {
        self.left = false;
        self.ensure_started(now);
        let mut list: Vec<NodeId> = Vec::new();
        for &s in seeds {
            if s != self.me && !list.contains(&s) {
                list.push(s);
            }
        }
        self.seeds = list;
        self.start_joining(now);
    }

    /// Remembers `seed` as one more node a later rejoin may go through; starts
    /// nothing. For a seed learned after the node has joined: joining again through
    /// it would churn views that are already good.
    pub fn add_seed(&mut self, seed: NodeId) {
        if seed != self.me && !self.seeds.contains(&seed) {
            self.seeds.push(seed);
        }
    }

    /// Records that a Join already went to `seed` outside the state machine (the
    /// driver's Join by address, sent before the seed's id was known), so that the
    /// seed's acknowledgement ends the join as if we had sent it. Sends nothing now:
    /// a second Join would make the seed start a second set of random walks. Until the
    /// acknowledgement comes the join is retried along the remembered seeds, `seed`
    /// first remembered if it was not.
    pub fn join_sent_to(&mut self, now: Time, seed: NodeId) {
        if self.left || seed == self.me {
            return;
        }
        self.ensure_started(now);
        self.add_seed(seed);
        let seeds = self.seeds.clone();
        let next = seeds.iter().position(|&s| s == seed).unwrap_or(0);
        self.joining = Some(Joining {
            seeds,
            next,
            backoff: self.cfg.join_retry,
            gen: 0,
        });
        self.arm_join_retry(now);
    }

    /// Sends a Join to the first remembered seed and retries until one acknowledges.
    fn start_joining(&mut self, now: Time) {
        let seeds = self.seeds.clone();
        self.start_joining_through(now, seeds);
    }

    /// Sends a Join to the first of `seeds` and retries along them until one
    /// acknowledges.
    fn start_joining_through(&mut self, now: Time, seeds: Vec<NodeId>) {
        self.join_sent.clear();
        if seeds.is_empty() {
            self.joining = None;
            return;
        }
        self.joining = Some(Joining {
            seeds,
            next: 0,
            backoff: self.cfg.join_retry,
            gen: 0,
        });
        self.send_join(now);
    }

    /// Leaves the cluster: every active neighbour is sent Disconnect (so it repairs at
    /// once instead of waiting for the failure detector) and reported down. Afterwards
    /// every input is ignored until the next [`Membership::join`].
    pub fn leave(&mut self, now: Time) {
        let peers = std::mem::take(&mut self.active);
        self.live.clear();
        for p in peers {
            self.send(now, p, Message::Disconnect);
            self.events.push_back(Event::NeighborDown(p));
        }
        self.pending.clear();
        self.splicing = None;
        self.lost.clear();
        self.short_rounds = 0;
        self.refused.clear();
        self.splice_tried.clear();
        self.tried.clear();
        self.joining = None;
        self.join_sent.clear();
        self.shuffle_gen = None;
        self.heartbeat_gen = None;
        self.left = true;
    }

    /// Processes one message from `from`. Any message from an active neighbour proves
    /// it alive. Messages from this node itself are ignored.
    pub fn handle(&mut self, now: Time, from: NodeId, msg: Message) {
        if self.left || from == self.me {
            return;
        }
        self.ensure_started(now);
        if let Some(i) = self.index_of(from) {
            self.live[i].last_heard = now;
            self.live[i].probe = None;
        }
        let cap = 2 * self.cfg.passive_view + self.cfg.active_view;
        if self.heard.len() < cap || self.heard.contains_key(&from) {
            self.heard.insert(from, now);
        }
        match msg {
            Message::Join => self.on_join(now, from),
            Message::ForwardJoin { new, ttl } => self.on_forward_join(now, from, new, ttl),
            Message::Neighbor { high_priority } => self.on_neighbor(now, from, high_priority),
            Message::NeighborReply { accepted } => self.on_neighbor_reply(now, from, accepted),
            Message::Disconnect => self.on_disconnect(now, from),
            Message::Shuffle { origin, ttl, nodes } => {
                self.on_shuffle(now, from, origin, ttl, nodes)
            }
            Message::ShuffleReply { nodes } => {
                let prefer = std::mem::take(&mut self.last_shuffle);
                self.integrate(&nodes, prefer);
            }
            Message::Heartbeat { short } => {
                if let Some(i) = self.index_of(from) {
                    self.live[i].short = short;
                }
                self.check_link(now, from)
            }
            Message::Probe => {
                if self.is_active(from) {
                    self.send(now, from, Message::ProbeReply);
                } else {
                    self.check_link(now, from);
                }
            }
            // Refreshing `last_heard` above was all a reply had to do.
            Message::ProbeReply => {}
            Message::Splice { partner } => self.on_splice(now, from, partner),
            Message::SpliceOffer { new } => self.on_splice_offer(now, from, new),
            Message::SpliceReply { accepted } => self.on_splice_reply(now, from, accepted),
            Message::Introduce { node } => self.on_introduce(now, node),
        }
        self.revive(now, from);
    }

    /// Processes a timer armed by an earlier [`Event::SetTimer`]; stale ones do nothing.
    pub fn handle_timer(&mut self, now: Time, timer: Timer) {
        if self.left {
            return;
        }
        match timer {
            Timer::Shuffle { gen } if self.shuffle_gen == Some(gen) => self.on_shuffle_timer(now),
            Timer::Heartbeat { gen } if self.heartbeat_gen == Some(gen) => {
                self.on_heartbeat_timer(now)
            }
            Timer::JoinRetry { gen } => {
                // Neighbours alone do not end a join (they may be nodes that joined
                // through us while our own Join was lost): only the seed's
                // acknowledgement proves we are attached to the cluster.
                if self.joining.as_ref().is_some_and(|j| j.gen == gen) {
                    self.send_join(now);
                }
            }
            Timer::ProbeDeadline { peer, gen } => {
                if let Some(i) = self.index_of(peer) {
                    if self.live[i].probe == Some(gen) {
                        self.remove_active_at(i);
                        self.stats.neighbor_failures += 1;
                        self.lose(now, peer);
                        self.promote(now);
                    }
                }
            }
            Timer::NeighborDeadline { peer, gen } => {
                let Some(&(pending_gen, ask)) = self.pending.get(&peer) else {
                    return;
                };
                if pending_gen != gen {
                    return;
                }
                match ask {
                    // Once more: over UDP the request or its answer may just be lost.
                    // The resent request no longer holds a slot, so ask another too.
                    Ask::First => {
                        self.send_neighbor(now, peer, Ask::Resent);
                        self.promote(now);
                    }
                    Ask::Resent => {
                        self.pending.remove(&peer);
                        // No answer: presumed dead, so stop offering it as a backup.
                        self.passive.retain(|&n| n != peer);
                        self.lose(now, peer);
                        self.promote(now);
                    }
                    // A splice needs a third node; it is tried again some later round.
                    Ask::Splice => {
                        self.pending.remove(&peer);
                    }
                }
            }
            Timer::SpliceDeadline { gen } => self.on_splice_deadline(now, gen),
            Timer::LostProbe { peer, gen } => self.probe_lost(now, peer, gen),
            Timer::Shuffle { .. } | Timer::Heartbeat { .. } => {}
        }
    }

    // ---- message rules --------------------------------------------------------------

    fn on_join(&mut self, now: Time, new: NodeId) {
        self.stats.joins += 1;
        if self.is_active(new) {
            // A retried Join whose acknowledgement was lost: acknowledge again, but the
            // random walks already went out.
            self.send(now, new, Message::NeighborReply { accepted: true });
            return;
        }
        self.add_active(now, new);
        self.send(now, new, Message::NeighborReply { accepted: true });
        let ttl = self.cfg.arwl;
        let others: Vec<NodeId> = self.active.iter().copied().filter(|&n| n != new).collect();
        for n in others {
            self.send(now, n, Message::ForwardJoin { new, ttl });
        }
    }

    fn on_forward_join(&mut self, now: Time, from: NodeId, new: NodeId, ttl: u8) {
        self.stats.forward_joins += 1;
        if new == self.me {
            return;
        }
        if ttl > 0 && self.active.len() > 1 {
            if ttl == self.cfg.prwl {
                self.add_passive(new);
            }
            let next = self.random_active_except(&[from, new]);
            if let Some(next) = next {
                self.send(now, next, Message::ForwardJoin { new, ttl: ttl - 1 });
                return;
            }
        }
        // The walk ends here: accept the new node and tell it, so the link is symmetric.
        if !self.is_active(new) {
            self.add_active(now, new);
            self.send(
                now,
                new,
                Message::Neighbor {
                    high_priority: true,
                },
            );
        }
    }

    fn on_neighbor(&mut self, now: Time, from: NodeId, high_priority: bool) {
        let accepted = if self.is_active(from) {
            true
        } else if high_priority || self.active.len() < self.cfg.active_view {
            self.add_active(now, from);
            true
        } else {
            false
        };
        self.send(now, from, Message::NeighborReply { accepted });
    }

    fn on_neighbor_reply(&mut self, now: Time, from: NodeId, accepted: bool) {
        let asked = self.pending.remove(&from);
        let join_ack = self.join_sent.contains(&from);
        if accepted && join_ack {
            self.joining = None;
        }
        if !accepted {
            // It stays in the passive view; ask someone else.
            if let Some((_, ask)) = asked {
                if !self.refused.contains(&from) {
                    self.refused.push(from);
                }
                if ask == Ask::Splice {
                    self.try_splice(now);
                } else {
                    self.promote(now);
                }
            }
            return;
        }
        if self.is_active(from) {
            return;
        }
        let room = self.active.len() < self.cfg.active_view;
        if (asked.is_some() && room) || join_ack {
            self.add_active(now, from);
            if asked.is_some() {
                self.stats.promotions += 1;
            }
        } else {
            // Unsolicited, or the view filled up meanwhile: undo the sender's half link.
            self.send(now, from, Message::Disconnect);
        }
    }

    fn on_disconnect(&mut self, now: Time, from: NodeId) {
        // If we had asked it, this is as good as a refusal.
        self.pending.remove(&from);
        if let Some(i) = self.index_of(from) {
            self.remove_active_at(i);
            self.stats.disconnects += 1;
            // It just refused us: keep it as a backup, but do not ask it this round.
            self.add_passive(from);
            if !self.tried.contains(&from) {
                self.tried.push(from);
            }
            self.promote(now);
        }
    }

    fn on_shuffle(&mut self, now: Time, from: NodeId, origin: NodeId, ttl: u8, nodes: Vec<NodeId>) {
        self.stats.shuffles_received += 1;
        if origin == self.me {
            return;
        }
        let mut nodes = nodes;
        nodes.truncate(self.shuffle_cap());
        if ttl > 0 && self.active.len() > 1 {
            if let Some(next) = self.random_active_except(&[from, origin]) {
                self.send(
                    now,
                    next,
                    Message::Shuffle {
                        origin,
                        ttl: ttl - 1,
                        nodes,
                    },
                );
                return;
            }
        }
        let reply: Vec<NodeId> = self
            .passive
            .choose_multiple(&mut self.rng, nodes.len())
            .copied()
            .collect();
        self.send(
            now,
            origin,
            Message::ShuffleReply {
                nodes: reply.clone(),
            },
        );
        self.integrate(&nodes, reply);
    }

    /// A Heartbeat or Probe from `from`: fine from a neighbour; from anyone else (except
    /// a node we just asked, whose answer may be overtaken) it means the sender holds a
    /// link we do not, so tell it.
    fn check_link(&mut self, now: Time, from: NodeId) {
        if !self.is_active(from) && !self.pending.contains_key(&from) {
            self.send(now, from, Message::Disconnect);
        }
    }

    // ---- timers ---------------------------------------------------------------------

    fn ensure_started(&mut self, now: Time) {
        if self.shuffle_gen.is_none() {
            let gen = self.gen();
            self.shuffle_gen = Some(gen);
            // A random first delay, so nodes started together do not shuffle in step.
            let jitter = self
                .rng
                .gen_range(0..self.cfg.shuffle_interval.as_micros().max(1));
            let at = now + Duration::from_micros(jitter as u64);
            self.set_timer(at, Timer::Shuffle { gen });
        }
        if self.heartbeat_gen.is_none() {
            let gen = self.gen();
            self.heartbeat_gen = Some(gen);
            self.set_timer(now + self.cfg.heartbeat_interval, Timer::Heartbeat { gen });
        }
    }

    fn on_shuffle_timer(&mut self, now: Time) {
        let gen = self.gen();
        self.shuffle_gen = Some(gen);
        self.set_timer(now + self.cfg.shuffle_interval, Timer::Shuffle { gen });
        let Some(&target) = self.active.choose(&mut self.rng) else {
            return;
        };
        let mut sample: Vec<NodeId> = self
            .active
            .iter()
            .copied()
            .filter(|&n| n != target)
            .collect::<Vec<_>>()
            .choose_multiple(&mut self.rng, self.cfg.shuffle_active)
            .copied()
            .collect();
        sample.extend(
            self.passive
                .choose_multiple(&mut self.rng, self.cfg.shuffle_passive)
                .copied(),
        );
        self.last_shuffle = sample.clone();
        let mut nodes = Vec::with_capacity(sample.len() + 1);
        nodes.push(self.me);
        nodes.extend(sample);
        self.stats.shuffles_sent += 1;
        let ttl = self.cfg.shuffle_ttl;
        self.send(
            now,
            target,
            Message::Shuffle {
                origin: self.me,
                ttl,
                nodes,
            },
        );
    }

    fn on_heartbeat_timer(&mut self, now: Time) {
        let gen = self.gen();
        self.heartbeat_gen = Some(gen);
        self.set_timer(now + self.cfg.heartbeat_interval, Timer::Heartbeat { gen });
        self.tried.clear();
        self.splice_tried.clear();
        let horizon = self.cfg.failure_timeout;
        self.heard
            .retain(|_, &mut at| now.saturating_sub(at) < horizon);
        for i in 0..self.active.len() {
            let peer = self.active[i];
            let l = self.live[i];
            if l.probe.is_none() && now.saturating_sub(l.last_heard) >= self.cfg.failure_timeout {
                let gen = self.gen();
                self.live[i].probe = Some(gen);
                self.send(now, peer, Message::Probe);
                self.set_timer(
                    now + self.cfg.probe_timeout,
                    Timer::ProbeDeadline { peer, gen },
                );
            } else if now.saturating_sub(l.last_sent) >= self.cfg.heartbeat_interval {
                let short = self.active.len() < self.cfg.active_view;
                self.send(now, peer, Message::Heartbeat { short });
            }
        }
        // The splice first: it wants a full passive node, which promotion may be
        // about to ask (and hold as pending) once more.
        self.splice_if_stuck(now);
        self.introduce_short_neighbours(now);
        self.refused.clear();
        self.promote(now);
        self.rejoin_if_starved(now);
    }

    /// Joins again through the seeds when the active view has room and the passive view
    /// offers nobody to ask: nothing else could ever bring this node a new neighbour.
    fn rejoin_if_starved(&mut self, now: Time) {
        if self.joining.is_none()
            && self.active.len() < self.cfg.active_view
            && self.passive.is_empty()
            && self.pending.is_empty()
            && !self.seeds.is_empty()
        {
            self.stats.rejoins += 1;
            self.start_joining(now);
        }
    }

    fn send_join(&mut self, now: Time) {
        if let Some(seed) = self.arm_join_retry(now) {
            self.send(now, seed, Message::Join);
        }
    }

    /// Moves the join on to its next seed, which then counts as sent to: arms the
    /// retry at the current backoff and doubles it. Returns that seed.
    fn arm_join_retry(&mut self, now: Time) -> Option<NodeId> {
        let gen = self.gen();
        let max = self.cfg.join_retry_max;
        let j = self.joining.as_mut()?;
        let seed = j.seeds[j.next % j.seeds.len()];
        j.next = (j.next + 1) % j.seeds.len();
        let at = now + j.backoff;
        j.backoff = (j.backoff * 2).min(max);
        j.gen = gen;
        if !self.join_sent.contains(&seed) {
            self.join_sent.push(seed);
        }
        self.set_timer(at, Timer::JoinRetry { gen });
        Some(seed)
    }

    // ---- views ----------------------------------------------------------------------

    /// Puts `peer` into the active view (dropping a random member if it is full) and
    /// reports it up. The only place a node enters the active view.
    fn add_active(&mut self, now: Time, peer: NodeId) {
        if peer == self.me || self.is_active(peer) {
            return;
        }
        self.lost.retain(|l| l.id != peer);
        if self.active.len() >= self.cfg.active_view {
            let i = self.rng.gen_range(0..self.active.len());
            let victim = self.remove_active_at(i);
            self.send(now, victim, Message::Disconnect);
            self.add_passive(victim);
        }
        self.passive.retain(|&n| n != peer);
        self.pending.remove(&peer);
        self.active.push(peer);
        self.live.push(Liveness {
            last_heard: now,
            last_sent: now,
            probe: None,
            short: false,
        });
        self.events.push_back(Event::NeighborUp(peer));
    }

    /// Removes the active member at `i` and reports it down. The only place a node
    /// leaves the active view (besides `leave`).
    fn remove_active_at(&mut self, i: usize) -> NodeId {
        let peer = self.active.swap_remove(i);
        self.live.swap_remove(i);
        self.events.push_back(Event::NeighborDown(peer));
        peer
    }

    /// Adds `peer` to the passive view, evicting a random member if it is full.
    fn add_passive(&mut self, peer: NodeId) {
        if peer == self.me || self.is_active(peer) || self.passive.contains(&peer) {
            return;
        }
        if self.passive.len() >= self.cfg.passive_view {
            let i = self.rng.gen_range(0..self.passive.len());
            self.passive.swap_remove(i);
        }
        self.passive.push(peer);
    }

    /// Merges shuffled `nodes` into the passive view; when it is full, members in
    /// `prefer` (the ones just sent away, so still known elsewhere) are evicted first.
    fn integrate(&mut self, nodes: &[NodeId], mut prefer: Vec<NodeId>) {
        for &n in nodes.iter().take(self.shuffle_cap()) {
            if n == self.me || self.is_active(n) || self.passive.contains(&n) || self.is_lost(n) {
                continue;
            }
            if self.passive.len() >= self.cfg.passive_view {
                let mut evicted = false;
                while let Some(x) = prefer.pop() {
                    if let Some(pos) = self.passive.iter().position(|&p| p == x) {
                        self.passive.swap_remove(pos);
                        evicted = true;
                        break;
                    }
                }
                if !evicted {
                    let i = self.rng.gen_range(0..self.passive.len());
                    self.passive.swap_remove(i);
                }
            }
            self.passive.push(n);
        }
    }

    /// Asks one passive node to become a neighbour, if the active view (counting
    /// requests in flight) has room. High priority only when we have no neighbour.
    fn promote(&mut self, now: Time) {
        // Neither a resent request (its node is probably dead) nor a splice (it is
        // asked of a full node, and the view keeps looking for ordinary room meanwhile)
        // holds a slot.
        let asking = self
            .pending
            .values()
            .filter(|(_, a)| *a == Ask::First)
            .count();
        if self.active.len() + asking >= self.cfg.active_view {
            return;
        }
        if self.tried.len() >= self.cfg.passive_view * 2 {
            self.tried.clear();
        }
        let candidates: Vec<NodeId> = self
            .passive
            .iter()
            .copied()
            .filter(|n| !self.pending.contains_key(n) && !self.tried.contains(n))
            .collect();
        let Some(&peer) = candidates.choose(&mut self.rng) else {
            return;
        };
        self.tried.push(peer);
        self.send_neighbor(now, peer, Ask::First);
    }

    /// Sends `peer` a Neighbor request (high priority only when we have no neighbour)
    /// and arms its deadline; `ask` says whether this is the first or the last attempt.
    fn send_neighbor(&mut self, now: Time, peer: NodeId, ask: Ask) {
        let gen = self.gen();
        self.pending.insert(peer, (gen, ask));
        let high_priority = self.active.is_empty();
        self.send(now, peer, Message::Neighbor { high_priority });
        self.set_timer(
            now + self.cfg.probe_timeout,
            Timer::NeighborDeadline { peer, gen },
        );
    }

    // ---- helpers --------------------------------------------------------------------

    fn index_of(&self, peer: NodeId) -> Option<usize> {
        self.active.iter().position(|&n| n == peer)
    }

    fn random_active_except(&mut self, except: &[NodeId]) -> Option<NodeId> {
        let candidates: Vec<NodeId> = self
            .active
            .iter()
            .copied()
            .filter(|n| !except.contains(n))
            .collect();
        candidates.choose(&mut self.rng).copied()
    }

    /// Most nodes taken from one shuffle: what a well-configured peer sends, and never
    /// more than the passive view can hold, so a hostile list costs nothing.
    fn shuffle_cap(&self) -> usize {
        (1 + self.cfg.shuffle_active + self.cfg.shuffle_passive).min(self.cfg.passive_view)
    }

    fn gen(&mut self) -> u64 {
        self.next_gen += 1;
        self.next_gen
    }

    fn set_timer(&mut self, at: Time, timer: Timer) {
        self.events.push_back(Event::SetTimer { at, timer });
    }

    fn send(&mut self, now: Time, to: NodeId, msg: Message) {
        if let Some(i) = self.index_of(to) {
            self.live[i].last_sent = now;
        }
        self.stats.messages_sent += 1;
        self.events.push_back(Event::Send { to, msg });
    }
}
