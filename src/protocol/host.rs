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

use super::event::{Event, Time, Timer};
use super::gap::Gap;
use super::shard::{BroadcastError, Shard};
use crate::ids::{MessageId, NodeId};
use crate::timer::TimerQueue;
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
    /// The peer's control socket (membership); its shard sockets follow it.
    pub control: SocketAddr,
    /// How many shard sockets the peer runs, as its membership frames announce.
    pub shards: u16,
}

impl PeerLayout {
    /// The peer shard that owns `partition`: shard `k` listens on control port + 1 + k.
    pub fn shard_addr(&self, partition: u16) -> SocketAddr {
        let k = crate::ids::shard_of(partition, self.shards as usize);
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
    /// Digest frames shed while the caller reported overload.
    pub shed_anti_entropy: u64,
}

/// What the application hears from the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostEvent {
    /// A message received from a peer, for the application (once per id).
    Deliver {
        /// The message.
        id: MessageId,
        /// Hops from the origin to here.
        round: u16,
        /// The topic it was broadcast on.
        topic: Topic,
        /// The application's bytes.
        payload: Bytes,
    },
    /// Messages of an origin that will never be delivered.
    Gap(Gap),
    /// Every graft for this message failed.
    GraftFailed {
        /// The message given up on.
        id: MessageId,
    },
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
    /// Scratch list of the timers one [`ShardHost::fire_due`] runs.
    due: Vec<HostTimer>,
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
    /// A host around `shard`, with no peer and no timer armed; `seed` drives the
    /// jitter of the periodic timers.
    pub fn new(shard: Shard, cfg: HostConfig, seed: u64) -> Self {
        Self {
            shard,
            cfg,
            peers: FxHashMap::default(),
            v1_addrs: FxHashSet::default(),
            timers: TimerQueue::new(),
            due: Vec::new(),
            periodic: false,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x686f_7374),
            stats: HostStats::default(),
            events: VecDeque::new(),
            datagrams: VecDeque::new(),
        }
    }

    /// The protocol state, for stats and inspection.
    pub fn shard(&self) -> &Shard {
        &self.shard
    }

    /// The host's counters so far (the shard's are in [`Shard::stats`]).
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

    /// Membership added `peer`: its layout is remembered for routing (replacing an
    /// older one) and the shard takes it as a neighbour.
    pub fn neighbor_up(&mut self, now: Time, peer: NodeId, layout: PeerLayout) {
        self.peers.insert(peer, layout);
        self.shard.neighbor_up(now, peer);
    }

    /// Membership dropped `peer`: its layout is forgotten and the shard removes it.
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

    /// One received datagram's bytes from `src` (already authenticated, if the
    /// cluster is keyed): decoded, then filtered and handed to the shard as
    /// [`ShardHost::receive`] does. The node's receive path and the simulator both
    /// enter here, so a datagram is decoded and filtered the same way in both.
    /// Returns how many frames of unknown types were skipped; an undecodable datagram
    /// changes nothing and is the caller's to count.
    pub fn receive_bytes(
        &mut self,
        now: Time,
        src: SocketAddr,
        bytes: &Bytes,
        shedding: bool,
    ) -> Result<u32, wire::DecodeError> {
        let dg = wire::decode(bytes)?;
        let skipped = dg.skipped_unknown;
        self.receive(now, src, dg, shedding);
        Ok(skipped)
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
        self.shard.count_misrouted(dg.misrouted_member_frames);
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

    /// Fires every timer due at `now`, earliest first. One armed while they run
    /// (a cleanup's next slice) waits for the next call, so a long cleanup is done
    /// in slices with the driver's other work between them.
    pub fn fire_due(&mut self, now: Time) {
        let mut due = std::mem::take(&mut self.due);
        while let Some(t) = self.timers.pop_due(now) {
            due.push(t);
        }
        for t in due.drain(..) {
            self.fire(now, t);
        }
        self.due = due;
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

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::protocol::ProtocolConfig;

    const ME: NodeId = NodeId(1);

    fn layout(i: u8, shards: u16) -> PeerLayout {
        PeerLayout {
            control: SocketAddr::new(Ipv4Addr::new(10, 0, 0, i).into(), 7000),
            shards,
        }
    }

    fn host(cfg: ProtocolConfig) -> ShardHost {
        let shard = Shard::new(ME, u64::MAX, cfg, 7).expect("valid config");
        ShardHost::new(
            shard,
            HostConfig {
                header: Header::new(ME, 1),
                mtu: wire::DEFAULT_MTU,
            },
            7,
        )
    }

    fn datagram(sender: NodeId, version: u8, frames: Vec<Frame>) -> Datagram {
        Datagram {
            header: Header {
                version,
                ..Header::new(sender, 1)
            },
            frames,
            skipped_unknown: 0,
            misrouted_member_frames: 0,
        }
    }

    fn ihave(origin: u64, seq: u64) -> Frame {
        Frame::IHave {
            entries: vec![IHaveEntry {
                id: MessageId {
                    origin: NodeId(origin),
                    seq,
                },
                round: 1,
            }],
        }
    }

    fn gossip(origin: u64, seq: u64, topic: Topic) -> Frame {
        Frame::Gossip {
            id: MessageId {
                origin: NodeId(origin),
                seq,
            },
            round: 0,
            topic,
            payload: Bytes::from_static(b"x"),
        }
    }

    fn drain(h: &mut ShardHost) -> (Vec<(SocketAddr, Bytes)>, Vec<HostEvent>) {
        h.flush();
        let mut d = Vec::new();
        while let Some(x) = h.poll_datagram() {
            d.push(x);
        }
        let mut e = Vec::new();
        while let Some(x) = h.poll_event() {
            e.push(x);
        }
        (d, e)
    }

    #[test]
    fn strangers_ihave_and_digest_are_dropped_and_counted() {
        let mut h = host(ProtocolConfig::default());
        let now = Duration::from_secs(1);
        h.neighbor_up(now, NodeId(2), layout(2, 1));
        let stranger = NodeId(9);
        let digest = Frame::Digest {
            partition: 0,
            reply: false,
            blocks: Vec::new(),
        };
        let src = layout(9, 1).shard_addr(0);
        h.receive(
            now,
            src,
            datagram(
                stranger,
                wire::VERSION,
                vec![ihave(5, 0), digest, gossip(9, 0, Topic::default())],
            ),
            false,
        );
        let s = h.stats();
        assert_eq!(s.unknown_senders, 1);
        assert_eq!(s.ihave_unknown_sender, 2);
        // The Gossip is not filtered: it is delivered.
        let (_, events) = drain(&mut h);
        assert!(matches!(events[..], [HostEvent::Deliver { .. }]));
        // No graft wait was armed for the stranger's announcement.
        let armed = h.timers_armed();
        // A neighbour's IHave is kept: the missing message arms a graft wait.
        h.receive(
            now,
            layout(2, 1).shard_addr(0),
            datagram(NodeId(2), wire::VERSION, vec![ihave(5, 0)]),
            false,
        );
        drain(&mut h);
        assert_eq!(h.stats().ihave_unknown_sender, 2);
        assert_eq!(h.stats().unknown_senders, 1);
        assert!(h.timers_armed() > armed);
    }

    #[test]
    fn membership_frames_on_a_shard_socket_count_as_misrouted() {
        let mut h = host(ProtocolConfig::default());
        let now = Duration::from_secs(1);
        h.neighbor_up(now, NodeId(2), layout(2, 1));
        let header = Header::new(NodeId(2), 1);
        let join = wire::MemberFrame::Join { shards: 1 };
        let raw = wire::encode_member_datagram(&header, &[join, wire::MemberFrame::Disconnect]);
        let dg = wire::decode(&Bytes::from(raw)).expect("decodes");
        h.receive(now, layout(2, 1).shard_addr(0), dg, false);
        assert_eq!(h.shard().stats().misrouted, 2);
        assert!(drain(&mut h).0.is_empty());
    }

    #[test]
    fn shedding_drops_ihave_and_digest_only() {
        let mut h = host(ProtocolConfig::default());
        let now = Duration::from_secs(1);
        h.neighbor_up(now, NodeId(2), layout(2, 1));
        let digest = Frame::Digest {
            partition: 0,
            reply: false,
            blocks: Vec::new(),
        };
        h.receive(
            now,
            layout(2, 1).shard_addr(0),
            datagram(
                NodeId(2),
                wire::VERSION,
                vec![ihave(5, 0), digest, gossip(2, 0, Topic::default())],
            ),
            true,
        );
        let s = h.stats();
        assert_eq!((s.shed_ihave, s.shed_anti_entropy), (1, 1));
        assert_eq!(s.ihave_unknown_sender, 0);
        let (_, events) = drain(&mut h);
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn ihave_entries_go_to_the_peer_shard_owning_their_partition() {
        let cfg = ProtocolConfig {
            eager_fanout: 1,
            ..ProtocolConfig::default()
        };
        let mut h = host(cfg);
        let now = Duration::from_secs(1);
        let peers = [(NodeId(2), layout(2, 2)), (NodeId(3), layout(3, 2))];
        for (id, l) in peers {
            h.neighbor_up(now, id, l);
        }
        for seq in 0..64 {
            let id = MessageId { origin: ME, seq };
            h.broadcast(now, id, Topic::default(), Bytes::from_static(b"m"))
                .expect("valid broadcast");
        }
        h.flush_ihave_queues();
        let (dgrams, _) = drain(&mut h);
        let mut ports = FxHashSet::default();
        let mut entries = 0;
        for (addr, bytes) in &dgrams {
            let l = peers
                .iter()
                .find(|(_, l)| l.control.ip() == addr.ip())
                .expect("sent to a neighbour")
                .1;
            let k = addr.port() - l.control.port() - 1;
            for f in wire::decode(bytes).expect("decodable").frames {
                if let Frame::IHave { entries: es } = f {
                    ports.insert(*addr);
                    for e in es {
                        entries += 1;
                        assert_eq!(e.id.partition(64) % 2, k, "entry sent to the wrong shard");
                    }
                }
            }
        }
        assert!(entries > 0);
        // A lazy peer's two shards each got their share of its IHaves.
        let lazy: FxHashSet<_> = ports.iter().map(|a| a.ip()).collect();
        assert_eq!(
            ports.len(),
            2 * lazy.len(),
            "IHaves were not split: {ports:?}"
        );
    }

    #[test]
    fn version_1_addresses_are_answered_in_version_1() {
        let mut h = host(ProtocolConfig::default());
        let now = Duration::from_secs(1);
        let old = layout(2, 1);
        h.neighbor_up(now, NodeId(2), old);
        let src = old.shard_addr(0);
        h.receive(
            now,
            src,
            datagram(NodeId(2), wire::MIN_VERSION, vec![ihave(5, 0)]),
            false,
        );
        assert_eq!(h.stats().wire_v1_datagrams, 1);
        let topic = Topic::new("news").expect("valid topic");
        let id = MessageId { origin: ME, seq: 0 };
        h.broadcast(now, id, topic, Bytes::from_static(b"m"))
            .expect("valid broadcast");
        let (dgrams, _) = drain(&mut h);
        let (addr, bytes) = dgrams
            .iter()
            .find(|(_, b)| {
                wire::decode(b)
                    .expect("decodable")
                    .frames
                    .iter()
                    .any(|f| matches!(f, Frame::Gossip { .. }))
            })
            .expect("the broadcast was pushed");
        assert_eq!(*addr, src);
        assert_eq!(
            wire::decode(bytes).expect("decodable").header.version,
            wire::MIN_VERSION
        );
        assert_eq!(h.stats().topics_downgraded, 1);
        // A version-2 datagram from the same address forgets the downgrade.
        h.receive(
            now,
            src,
            datagram(NodeId(2), wire::VERSION, Vec::new()),
            false,
        );
        let id = MessageId { origin: ME, seq: 1 };
        h.broadcast(now, id, Topic::default(), Bytes::from_static(b"m"))
            .expect("valid broadcast");
        let (dgrams, _) = drain(&mut h);
        assert!(dgrams
            .iter()
            .all(|(_, b)| wire::decode(b).expect("decodable").header.version == wire::VERSION));
    }

    #[test]
    fn unknown_peer_sends_count_as_send_errors() {
        let mut h = host(ProtocolConfig::default());
        let now = Duration::from_secs(1);
        h.neighbor_up(now, NodeId(2), layout(2, 1));
        h.neighbor_down(now, NodeId(2));
        assert!(h.peer(NodeId(2)).is_none());
        let id = MessageId { origin: ME, seq: 0 };
        h.broadcast(now, id, Topic::default(), Bytes::from_static(b"m"))
            .expect("valid broadcast");
        let (dgrams, _) = drain(&mut h);
        assert!(dgrams.is_empty());
    }

    #[test]
    fn periodic_work_rearms_itself_within_its_period() {
        let cfg = ProtocolConfig::default();
        let (m, j, ae) = (
            cfg.maintenance_interval,
            cfg.maintenance_jitter,
            cfg.anti_entropy_interval,
        );
        let mut h = host(cfg);
        let start = Duration::from_secs(10);
        h.start_periodic(start);
        assert_eq!(h.timers_armed(), 3);
        let first = h.next_timeout().expect("armed");
        assert!(first >= start && first < start + m.max(ae).max(CLEANUP_EVERY));
        // A driver that did not start them fires them itself, once each.
        let mut other = host(ProtocolConfig::default());
        other.fire(start, HostTimer::Maintenance);
        other.fire(start, HostTimer::AntiEntropy);
        other.fire(start, HostTimer::Cleanup);
        assert_eq!(other.timers_armed(), 0);
        // Started: after a whole period every kind fired and is armed again, each
        // within its period (plus jitter) of when it fired.
        let mut now = start;
        let end = start
            + (m + j)
                .max(ae.mul_f64(1.0 + PERIOD_JITTER))
                .max(CLEANUP_EVERY)
                * 3;
        while let Some(at) = h.next_timeout().filter(|&at| at <= end) {
            now = at;
            h.fire_due(now);
            h.flush();
        }
        assert!(now > start);
        assert_eq!(h.timers_armed(), 3);
        let latest = (m + j)
            .max(ae.mul_f64(1.0 + PERIOD_JITTER))
            .max(CLEANUP_EVERY.mul_f64(1.0 + PERIOD_JITTER));
        assert!(h.next_timeout().expect("armed") <= end + latest);
    }
}
