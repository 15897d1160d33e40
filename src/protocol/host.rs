//! The sans-IO shard host: everything between a [`Shard`] and a socket that is not
//! I/O. It filters received frames (load shedding, the stranger rule), remembers
//! which addresses speak wire version 1, routes each frame to the peer shard that
//! owns its partition, coalesces frames into datagrams, and keeps the shard's timers
//! and its periodic work (maintenance, anti-entropy, cleanup) in one [`TimerQueue`].
//! The node's shard executor and the simulator both drive it, so what a node does
//! with a frame and what the simulator measures cannot drift apart.
//!
//! Like the shard, it reads no clock: every input carries `now`, and its outputs
//! (datagrams to send, events for the application) are polled.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustc_hash::{FxHashMap, FxHashSet};

use super::gap::Gap;
use super::timer::TimerQueue;
use super::{BroadcastError, Event, Shard, Time, Timer};
use crate::ids::{MessageId, NodeId};
use crate::topic::Topic;
use crate::wire::{self, Coalescer, Datagram, Frame, Header, IHaveEntry};

/// Most version-1 addresses a host remembers (a rolling upgrade of a cluster of up
/// to this many shard sockets, per shard).
pub const MAX_V1_ADDRS: usize = 4096;
/// Cached payloads one cleanup slice may expire.
pub const CLEANUP_BUDGET: usize = 4096;
/// Period of the TTL cleanup (seen map, roots, payload cache).
pub const CLEANUP_EVERY: Duration = Duration::from_secs(1);
/// Random extra wait of each cleanup and anti-entropy period, as a fraction of it.
pub const PERIOD_JITTER: f64 = 0.1;
/// Wait before the next slice of a cleanup that did not finish in one: none, the
/// driver runs it after whatever else is due now.
pub const CLEANUP_RETRY: Duration = Duration::ZERO;

/// A peer's layout: where its shards listen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerLayout {
    pub control: SocketAddr,
    pub shards: u16,
}

impl PeerLayout {
    /// The peer shard that owns `partition`: shard `k` listens on control port + 1 + k.
    pub fn shard_addr(&self, partition: u16) -> SocketAddr {
        let k = partition as usize % self.shards.max(1) as usize;
        SocketAddr::new(
            self.control.ip(),
            self.control.port().wrapping_add(1 + k as u16),
        )
    }
}

/// What the host's timer queue holds: the shard's own timers, and its periodic work
/// as data, so intervals, jitter and budgets are decided here and nowhere else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostTimer {
    /// A timer the shard asked for ([`Event::SetTimer`]).
    Protocol(Timer),
    /// Eager-set repair ([`Shard::maintenance`]), every `maintenance_interval` plus
    /// up to `maintenance_jitter`.
    Maintenance,
    /// One anti-entropy round ([`Shard::anti_entropy`]), every
    /// `anti_entropy_interval` (0: never).
    AntiEntropy,
    /// One TTL cleanup slice of [`CLEANUP_BUDGET`], every [`CLEANUP_EVERY`]; a slice
    /// that did not finish is continued after [`CLEANUP_RETRY`].
    Cleanup,
}

/// How a host writes its datagrams.
#[derive(Clone, Copy, Debug)]
pub struct HostConfig {
    /// The header of every datagram sent (its version is lowered for version-1 peers).
    pub header: Header,
    /// Largest datagram built (less any auth trailer the driver adds).
    pub mtu: usize,
}

/// Counters the host keeps; the node exports them with its I/O counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Frames that could not be sent: to a peer with no known layout, or too large
    /// for a datagram.
    pub send_errors: u64,
    /// Datagrams from senders that are not neighbours.
    pub unknown_senders: u64,
    /// IHave and Digest frames from non-neighbours, dropped (a Graft to them could
    /// not be routed).
    pub ihave_unknown_sender: u64,
    /// Datagrams received in wire version 1.
    pub wire_v1_datagrams: u64,
    /// Version-1 addresses not remembered (the bounded set was full).
    pub wire_v1_untracked: u64,
    /// Gossip frames whose topic a version-1 peer cannot carry.
    pub topics_downgraded: u64,
    /// Frames shed while the caller reported overload: IHave and Digest.
    pub shed_ihave: u64,
    pub shed_anti_entropy: u64,
}

/// What the application hears from the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostEvent {
    /// A message received from a peer, for the application (once per id).
    Deliver {
        id: MessageId,
        round: u16,
        topic: Topic,
        payload: Bytes,
    },
    /// Messages of an origin that will never be delivered.
    Gap(Gap),
    /// Every graft for this message failed.
    GraftFailed { id: MessageId },
}

/// A [`Shard`] with its peers, filters, routing, coalescing and timers.
pub struct ShardHost {
    shard: Shard,
    cfg: HostConfig,
    peers: FxHashMap<NodeId, PeerLayout>,
    /// Shard addresses that sent wire version 1 (nodes that predate topics): what is
    /// sent to them is written in version 1. At most [`MAX_V1_ADDRS`].
    v1_addrs: FxHashSet<SocketAddr>,
    timers: TimerQueue<HostTimer>,
    /// Whether the host re-arms its periodic timers itself (see
    /// [`ShardHost::start_periodic`]); otherwise the driver fires them.
    periodic: bool,
    /// Jitter of the periodic timers.
    rng: ChaCha8Rng,
    stats: HostStats,
    events: VecDeque<HostEvent>,
    datagrams: VecDeque<(SocketAddr, Bytes)>,
}

impl ShardHost {
    pub fn new(shard: Shard, cfg: HostConfig, seed: u64) -> Self {
        Self {
            shard,
            cfg,
            peers: FxHashMap::default(),
            v1_addrs: FxHashSet::default(),
            timers: TimerQueue::new(),
            periodic: false,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x686f_7374),
            stats: HostStats::default(),
            events: VecDeque::new(),
            datagrams: VecDeque::new(),
        }
    }

    pub fn shard(&self) -> &Shard {
        &self.shard
    }

    pub fn stats(&self) -> HostStats {
        self.stats
    }

    /// Where a neighbour's shards listen (`None`: not a neighbour).
    pub fn peer(&self, id: NodeId) -> Option<&PeerLayout> {
        self.peers.get(&id)
    }

    /// Timers armed (the shard's and the periodic ones).
    pub fn timers_armed(&self) -> usize {
        self.timers.len()
    }

    /// When the driver must call [`ShardHost::fire_due`] next (`None`: nothing armed).
    pub fn next_timeout(&self) -> Option<Time> {
        self.timers.next_due()
    }

    pub fn neighbor_up(&mut self, now: Time, peer: NodeId, layout: PeerLayout) {
        self.peers.insert(peer, layout);
        self.shard.neighbor_up(now, peer);
    }

    pub fn neighbor_down(&mut self, now: Time, peer: NodeId) {
        self.peers.remove(&peer);
        self.shard.neighbor_down(now, peer);
    }

    /// A broadcast from this node. Its own delivery (hops 0) is the caller's: the
    /// shard does not deliver what it originates.
    pub fn broadcast(
        &mut self,
        now: Time,
        id: MessageId,
        topic: Topic,
        payload: Bytes,
    ) -> Result<(), BroadcastError> {
        self.shard.broadcast(now, id, topic, payload)
    }

    /// One decoded datagram from `src`. `shedding`: the caller is overloaded, so
    /// IHave (lazy repair) and Digest (anti-entropy) frames go first; Gossip, Graft
    /// and Prune stay.
    pub fn receive(&mut self, now: Time, src: SocketAddr, dg: Datagram, shedding: bool) {
        self.note_version(src, dg.header.version);
        let from = dg.header.sender;
        let stranger = !self.peers.contains_key(&from);
        if stranger {
            self.stats.unknown_senders += 1;
        }
        for f in dg.frames {
            if shedding {
                match f {
                    Frame::IHave { .. } => {
                        self.stats.shed_ihave += 1;
                        continue;
                    }
                    Frame::Digest { .. } => {
                        self.stats.shed_anti_entropy += 1;
                        continue;
                    }
                    _ => {}
                }
            }
            // A Graft for an IHave or Digest from a non-neighbour could never be sent
            // (no address for it), yet it would hold a pending-graft slot: a flood of
            // such frames would fill the table and stall real repairs.
            if stranger && matches!(f, Frame::IHave { .. } | Frame::Digest { .. }) {
                self.stats.ihave_unknown_sender += 1;
                continue;
            }
            self.shard.handle_frame(now, from, f);
        }
    }

    /// Remembers which addresses speak wire version 1, to answer them in it.
    fn note_version(&mut self, src: SocketAddr, version: u8) {
        if version >= wire::VERSION {
            if !self.v1_addrs.is_empty() {
                self.v1_addrs.remove(&src);
            }
            return;
        }
        self.stats.wire_v1_datagrams += 1;
        if !self.v1_addrs.contains(&src) {
            if self.v1_addrs.len() < MAX_V1_ADDRS {
                self.v1_addrs.insert(src);
            } else {
                self.stats.wire_v1_untracked += 1;
            }
        }
    }

    /// Arms the periodic timers at random phases, and from then on re-arms each
    /// after it fires. A driver that schedules the periodic work itself (the node's
    /// control core and anti-entropy loop, which the admin plane can pause) does not
    /// call this and fires [`HostTimer`]s with [`ShardHost::fire`] instead.
    pub fn start_periodic(&mut self, now: Time) {
        self.periodic = true;
        let m = self.shard.config().maintenance_interval;
        if !m.is_zero() {
            let phase = self.rng.gen_range(Duration::ZERO..m);
            self.timers.insert(now + phase, HostTimer::Maintenance);
        }
        let phase = self.rng.gen_range(Duration::ZERO..CLEANUP_EVERY);
        self.timers.insert(now + phase, HostTimer::Cleanup);
        let ae = self.shard.config().anti_entropy_interval;
        if !ae.is_zero() {
            let phase = self.rng.gen_range(Duration::ZERO..ae);
            self.timers.insert(now + phase, HostTimer::AntiEntropy);
        }
    }

    /// Fires every timer due at `now`, earliest first.
    pub fn fire_due(&mut self, now: Time) {
        while let Some(t) = self.timers.pop_due(now) {
            self.fire(now, t);
        }
    }

    /// Runs one timer now (a due one, or periodic work the driver scheduled).
    pub fn fire(&mut self, now: Time, timer: HostTimer) {
        match timer {
            HostTimer::Protocol(t) => self.shard.handle_timer(now, t),
            HostTimer::Maintenance => {
                self.shard.maintenance(now);
                if self.periodic {
                    let c = self.shard.config();
                    let (every, jitter) = (c.maintenance_interval, c.maintenance_jitter);
                    let extra = if jitter.is_zero() {
                        Duration::ZERO
                    } else {
                        self.rng.gen_range(Duration::ZERO..=jitter)
                    };
                    self.timers
                        .insert(now + every + extra, HostTimer::Maintenance);
                }
            }
            HostTimer::AntiEntropy => {
                self.shard.anti_entropy(now);
                if self.periodic {
                    let every = self.shard.config().anti_entropy_interval;
                    let next = now + self.jittered(every);
                    self.timers.insert(next, HostTimer::AntiEntropy);
                }
            }
            HostTimer::Cleanup => {
                let done = self.shard.cleanup(now, CLEANUP_BUDGET).done;
                if !done {
                    self.timers.insert(now + CLEANUP_RETRY, HostTimer::Cleanup);
                } else if self.periodic {
                    let next = now + self.jittered(CLEANUP_EVERY);
                    self.timers.insert(next, HostTimer::Cleanup);
                }
            }
        }
    }

    /// `every` plus a random extra wait of up to [`PERIOD_JITTER`] of it.
    fn jittered(&mut self, every: Duration) -> Duration {
        every + every.mul_f64(self.rng.gen_range(0.0..=PERIOD_JITTER))
    }

    /// Shutdown: every queued IHave goes out now.
    pub fn flush_ihave_queues(&mut self) {
        self.shard.flush_ihave_queues();
    }

    /// Moves what the shard produced into the host's outputs: timers into the queue,
    /// frames routed to the peer shard owning each and coalesced into datagrams (one
    /// group per destination address, in first-send order), the rest as events.
    /// The driver calls it once per batch of inputs, so frames of a batch share
    /// datagrams.
    pub fn flush(&mut self) {
        let partitions = self.shard.config().partitions;
        let mut per_dest: Vec<(SocketAddr, Vec<Frame>)> = Vec::new();
        let push = |addr: SocketAddr, f: Frame, per_dest: &mut Vec<(SocketAddr, Vec<Frame>)>| {
            match per_dest.iter_mut().find(|(a, _)| *a == addr) {
                Some((_, v)) => v.push(f),
                None => per_dest.push((addr, vec![f])),
            }
        };
        while let Some(ev) = self.shard.poll_event() {
            match ev {
                Event::Send { to, frame } => {
                    let Some(layout) = self.peers.get(&to).copied() else {
                        self.stats.send_errors += 1;
                        continue;
                    };
                    match frame {
                        Frame::IHave { entries } => {
                            // Entries go to whichever of the peer's shards owns them.
                            let mut split: Vec<(SocketAddr, Vec<IHaveEntry>)> = Vec::new();
                            for e in entries {
                                let a = layout.shard_addr(e.id.partition(partitions));
                                match split.iter_mut().find(|(x, _)| *x == a) {
                                    Some((_, v)) => v.push(e),
                                    None => split.push((a, vec![e])),
                                }
                            }
                            for (a, entries) in split {
                                push(a, Frame::IHave { entries }, &mut per_dest);
                            }
                        }
                        Frame::Gossip { ref id, .. } | Frame::Graft { ref id, .. } => {
                            let a = layout.shard_addr(id.partition(partitions));
                            push(a, frame, &mut per_dest);
                        }
                        Frame::Prune { partition }
                        | Frame::PruneRoot { partition, .. }
                        | Frame::Digest { partition, .. } => {
                            push(layout.shard_addr(partition), frame, &mut per_dest);
                        }
                        Frame::Ping { .. } | Frame::Leave => {}
                    }
                }
                Event::Deliver {
                    id,
                    round,
                    topic,
                    payload,
                } => self.events.push_back(HostEvent::Deliver {
                    id,
                    round,
                    topic,
                    payload,
                }),
                Event::SetTimer { at, timer } => {
                    self.timers.insert(at, HostTimer::Protocol(timer));
                }
                Event::Gap(gap) => self.events.push_back(HostEvent::Gap(gap)),
                Event::GraftFailed { id } => self.events.push_back(HostEvent::GraftFailed { id }),
            }
        }
        for (addr, frames) in per_dest {
            let header = if self.v1_addrs.contains(&addr) {
                let downgraded = frames
                    .iter()
                    .filter(|f| matches!(f, Frame::Gossip { topic, .. } if !topic.is_default()));
                self.stats.topics_downgraded += downgraded.count() as u64;
                Header {
                    version: wire::MIN_VERSION,
                    ..self.cfg.header
                }
            } else {
                self.cfg.header
            };
            let mut c = Coalescer::new(header, self.cfg.mtu);
            let mut dgrams = Vec::new();
            for f in frames {
                if c.push(f, &mut dgrams).is_err() {
                    self.stats.send_errors += 1;
                }
            }
            c.flush(&mut dgrams);
            self.datagrams.extend(dgrams.into_iter().map(|d| (addr, d)));
        }
    }

    /// The next datagram to send (unsealed), in the order they were built.
    pub fn poll_datagram(&mut self) -> Option<(SocketAddr, Bytes)> {
        self.datagrams.pop_front()
    }

    /// Whether datagrams wait to be polled.
    pub fn has_datagrams(&self) -> bool {
        !self.datagrams.is_empty()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<HostEvent> {
        self.events.pop_front()
    }
}
