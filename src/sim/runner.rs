//! The event loop of the simulator.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashMap;

use super::network::{random_overlay, LinkModel};
use super::report::SimReport;
use crate::ids::{MessageId, NodeId};
use crate::membership::driver::{MemberDriver, Output as MemberOutput};
use crate::membership::MembershipConfig;
use crate::protocol::gap::Gap;
use crate::protocol::host::{HostConfig, HostEvent, PeerLayout, ShardHost};
use crate::protocol::{Mode, ProtocolConfig, Shard, TimerQueue};
use crate::wire::{self, Frame, Header, MemberFrame};

/// Seeds each joining HyParView node is given (random earlier nodes).
const SEEDS_PER_NODE: usize = 3;
/// `--partition-heal`: when the closing round follows the heal (after the overlay
/// re-merged: `lost_probe_max` is 2 s).
const CLOSING_AFTER_HEAL: Duration = Duration::from_secs(3);

/// Where neighbours come from. HyParView is the default: it is what a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlay {
    /// A fixed random graph (ring plus chords); crashes are announced to neighbours by
    /// a simulated failure detector after `detect_delay`.
    Random,
    /// HyParView: nodes join one by one through a random earlier node, shuffle, detect
    /// failures by heartbeat and probe, and refill their views from the passive view.
    HyParView,
}

/// A simulation scenario.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// How the neighbour graph is built: fixed random, or grown by HyParView.
    pub overlay: Overlay,
    /// HyParView settings when `overlay` is [`Overlay::HyParView`].
    pub membership: MembershipConfig,
    /// HyParView: time between two nodes' joins.
    pub join_spacing: Duration,
    /// Nodes to simulate.
    pub nodes: usize,
    /// Broadcasts to issue.
    pub messages: usize,
    /// Seed of every random choice in the run.
    pub seed: u64,
    /// Average overlay degree (neighbours per node).
    pub degree: usize,
    /// Latency, loss and duplication of every link.
    pub link: LinkModel,
    /// Fraction of nodes that crash (all at one random moment mid-run).
    pub fail: f64,
    /// Split the network in two for a while, then heal it.
    pub partition_heal: bool,
    /// How long the split lasts; `None`: from 30 % to 60 % of the broadcast span.
    pub split: Option<Duration>,
    /// Time between broadcasts (each from a random live node); zero issues them all
    /// at once (a burst).
    pub interval: Duration,
    /// Broadcasts come from this many fixed random nodes (0: from any node). 1 is
    /// iroh-gossip's single-sender scenario.
    pub origins: usize,
    /// Virtual time before the first broadcast (neighbours come up).
    pub start: Duration,
    /// Virtual time after the last broadcast for repairs to finish.
    pub drain: Duration,
    /// How long failure detection takes before neighbours learn of a crash.
    pub detect_delay: Duration,
    /// The first messages of each partition, excluded from RMR and LDH while that
    /// partition's tree forms.
    pub warmup_per_partition: usize,
    /// Payload size of each broadcast, in bytes.
    pub payload: usize,
    /// Largest datagram the coalescer builds.
    pub mtu: usize,
    /// The Plumtree settings every shard runs with.
    pub protocol: ProtocolConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            overlay: Overlay::HyParView,
            membership: MembershipConfig::default(),
            join_spacing: Duration::from_millis(1),
            nodes: 1000,
            messages: 200,
            seed: 1,
            degree: 8,
            link: LinkModel {
                latency_min: Duration::from_millis(5),
                latency_max: Duration::from_millis(50),
                jitter: Duration::from_millis(5),
                loss: 0.0,
                duplicate: 0.0,
            },
            fail: 0.0,
            partition_heal: false,
            split: None,
            interval: Duration::from_millis(50),
            origins: 0,
            start: Duration::from_secs(1),
            drain: Duration::from_secs(40),
            detect_delay: Duration::from_secs(2),
            warmup_per_partition: 2,
            payload: 64,
            mtu: wire::DEFAULT_MTU,
            protocol: ProtocolConfig::default(),
        }
    }
}

/// What happens at a point of virtual time.
#[derive(Debug)]
enum What {
    Datagram {
        to: u32,
        from: u32,
        bytes: Bytes,
    },
    /// The node's host has a timer due (stale unless `at` is still the node's
    /// armed wake-up).
    Wake {
        node: u32,
        at: Duration,
    },
    Broadcast {
        k: usize,
    },
    Crash,
    NeighborDown {
        node: u32,
        peer: u32,
    },
    Join {
        node: u32,
    },
    /// One membership datagram (a node sends one frame a datagram, as the control
    /// core does); the network carries the frame, not its encoding.
    Member {
        to: u32,
        from: u32,
        frame: MemberFrame,
    },
    /// The node's membership driver has something due (stale unless `at` is still
    /// the node's armed membership wake-up).
    MemberWake {
        node: u32,
        at: Duration,
    },
    HealCheck,
    /// After a split heals: is the overlay one connected graph again?
    RemergeCheck,
    Split,
    Heal,
    /// After a heal, every origin that broadcast speaks once more: a node learns of a
    /// hole only from a delivery above it, so this makes losses at the tail of an
    /// origin's sequence visible as known gaps.
    Closing,
    /// Before the first broadcast, every origin the schedule will use speaks once:
    /// gaps count from a node's first contact with an origin, so this puts every
    /// scheduled message in scope.
    Opening,
}

/// What [`Sim::gap_accounting`] found.
#[derive(Default)]
struct GapAccounting {
    reported: u64,
    missed: u64,
    unrecovered: u64,
    before_first_contact: u64,
}

/// Per-message bookkeeping.
struct Track {
    origin: u32,
    seq: u64,
    /// How many messages of the same partition were broadcast before this one.
    nth_in_partition: usize,
    sent_at: Duration,
    during_partition: bool,
    /// Payload transmissions (Gossip frames sent) for this message.
    payload_sends: u64,
    max_hop: u16,
    last_delivery: Duration,
}

struct Sim {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    queue: TimerQueue<What>,
    now: Duration,
    /// Each node's shard with the same host the node runs (filters, routing,
    /// coalescing, timers).
    hosts: Vec<ShardHost>,
    /// The earliest wake-up scheduled for each node's host timers.
    wake_at: Vec<Option<Duration>>,
    /// Each node's membership driver, the one the node's control core runs
    /// (HyParView overlay only).
    members: Vec<MemberDriver>,
    /// The earliest wake-up scheduled for each node's membership driver.
    member_wake_at: Vec<Option<Duration>>,
    alive: Vec<bool>,
    crashed_at: Option<Duration>,
    healed_at: Option<Duration>,
    /// `--partition-heal`: when the split healed, and when the overlay was one
    /// connected graph again afterwards.
    split_healed_at: Option<Duration>,
    remerged_at: Option<Duration>,
    adj: Vec<Vec<u32>>,
    side: Vec<bool>,
    split: bool,
    next_msg_seq: Vec<u64>,
    /// The nodes broadcasts come from when `origins` is set.
    origin_pool: Vec<u32>,
    /// Messages broadcast so far per partition.
    per_partition: Vec<usize>,
    tracks: Vec<Track>,
    ids: FxHashMap<MessageId, u32>,
    /// `delivered[node * stride + k]`.
    delivered: Vec<bool>,
    /// Message slots per node: the scheduled messages plus room for opening and
    /// closing ones.
    stride: usize,
    /// `--partition-heal`: the origin of each scheduled message, drawn up front so the
    /// opening round knows them.
    planned: Vec<u32>,
    opening_messages: usize,
    /// Per (node, origin), the seq of the first message delivered (first contact):
    /// gaps are only owed from there on.
    first_contact: FxHashMap<(u32, u32), u64>,
    duplicates: u64,
    /// Known gaps the shards declared, with the node that declared each.
    gaps: Vec<(u32, Gap)>,
    datagrams_sent: u64,
    datagrams_lost: u64,
    events: u64,
}

fn node_id(i: u32) -> NodeId {
    NodeId(i as u64 + 1)
}

fn index_of(id: NodeId) -> u32 {
    (id.0 - 1) as u32
}

/// A simulated node's control address: 10.x.y.z (its index), port 7000. Its one
/// shard listens on port 7001 (see [`PeerLayout::shard_addr`]).
fn layout_of(i: u32) -> PeerLayout {
    let [_, a, b, c] = i.to_be_bytes();
    PeerLayout {
        control: SocketAddr::new(Ipv4Addr::new(10, a, b, c).into(), 7000),
        shards: 1,
    }
}

/// The node a simulated address belongs to.
fn node_at(addr: SocketAddr) -> u32 {
    match addr.ip() {
        std::net::IpAddr::V4(ip) => {
            let [_, a, b, c] = ip.octets();
            u32::from_be_bytes([0, a, b, c])
        }
        std::net::IpAddr::V6(_) => unreachable!("simulated addresses are IPv4"),
    }
}

/// The host of simulated node `i`: one shard owning every partition, writing the
/// datagrams a node of the current wire version writes.
fn sim_host(i: u32, cfg: &SimConfig) -> ShardHost {
    let all = crate::ids::owned_mask(0, 1, cfg.protocol.partitions);
    let seed = cfg.seed ^ (i as u64 + 1) << 20;
    let shard = Shard::new(node_id(i), all, cfg.protocol.clone(), seed)
        .expect("protocol config validated by the caller");
    ShardHost::new(
        shard,
        HostConfig {
            header: Header::new(node_id(i), 1),
            mtu: cfg.mtu,
        },
        seed,
    )
}

/// The membership driver of simulated node `i`, as its control core builds it: its
/// control address, one shard, no seeds until it joins.
fn sim_member(i: u32, cfg: &SimConfig) -> MemberDriver {
    MemberDriver::new(
        node_id(i),
        layout_of(i).control,
        layout_of(i).shards,
        cfg.mtu
            .saturating_sub(wire::member_frame::ADVERTISE_FRAME_LEN),
        cfg.membership.clone(),
        &[],
        cfg.seed ^ (i as u64) << 24,
    )
    .expect("membership config validated by the caller")
}

/// Runs one scenario to completion and reports.
pub fn run(cfg: &SimConfig) -> SimReport {
    let wall = Instant::now();
    let mut sim = Sim::new(cfg.clone());
    sim.run();
    let mut r = sim.report();
    r.wall_seconds = Some(wall.elapsed().as_secs_f64());
    r
}

impl Sim {
    fn new(cfg: SimConfig) -> Self {
        let n = cfg.nodes;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let adj = random_overlay(n, cfg.degree, &mut rng);
        let hosts = (0..n as u32).map(|i| sim_host(i, &cfg)).collect();
        let members = match cfg.overlay {
            Overlay::Random => Vec::new(),
            Overlay::HyParView => (0..n as u32).map(|i| sim_member(i, &cfg)).collect(),
        };
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.shuffle(&mut rng);
        let mut side = vec![false; n];
        for &i in &order[..n / 2] {
            side[i as usize] = true;
        }
        Self {
            rng,
            queue: TimerQueue::new(),
            now: Duration::ZERO,
            hosts,
            wake_at: vec![None; n],
            members,
            member_wake_at: vec![None; n],
            alive: vec![true; n],
            crashed_at: None,
            healed_at: None,
            split_healed_at: None,
            remerged_at: None,
            adj,
            side,
            split: false,
            next_msg_seq: vec![0; n],
            origin_pool: {
                // Its own random stream, so runs without --origins are unchanged.
                let mut r = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6f72_6967_696e);
                let mut all: Vec<u32> = (0..n as u32).collect();
                all.shuffle(&mut r);
                all.truncate(cfg.origins.min(n));
                all
            },
            per_partition: vec![0; cfg.protocol.partitions as usize],
            tracks: Vec::with_capacity(cfg.messages),
            ids: FxHashMap::default(),
            delivered: vec![false; n * Self::stride_for(&cfg)],
            stride: Self::stride_for(&cfg),
            planned: Vec::new(),
            opening_messages: 0,
            first_contact: FxHashMap::default(),
            duplicates: 0,
            gaps: Vec::new(),
            datagrams_sent: 0,
            datagrams_lost: 0,
            events: 0,
            cfg,
        }
    }

    fn stride_for(cfg: &SimConfig) -> usize {
        if cfg.partition_heal {
            cfg.messages + 2 * cfg.messages.min(cfg.nodes)
        } else {
            cfg.messages
        }
    }

    fn at(&mut self, at: Duration, what: What) {
        self.queue.insert(at, what);
    }

    /// When broadcasts begin: after every node joined and views settled (HyParView).
    fn first_broadcast(&self) -> Duration {
        match self.cfg.overlay {
            Overlay::Random => self.cfg.start,
            Overlay::HyParView => {
                self.cfg.start
                    + self.cfg.join_spacing * self.cfg.nodes as u32
                    + self.cfg.membership.shuffle_interval
            }
        }
    }

    /// Time between broadcasts. A HyParView run with crashes needs its broadcasts to
    /// outlast the healing (failure timeout, probe, refill), or no message would follow
    /// it: the period is stretched to at least four failure-detection times.
    fn broadcast_interval(&self) -> Duration {
        if self.cfg.overlay == Overlay::HyParView && self.cfg.fail > 0.0 && self.cfg.messages > 0 {
            let m = &self.cfg.membership;
            let span = (m.failure_timeout + m.probe_timeout) * 4;
            self.cfg.interval.max(span / self.cfg.messages as u32)
        } else {
            self.cfg.interval
        }
    }

    fn broadcast_end(&self) -> Duration {
        self.first_broadcast() + self.broadcast_interval() * self.cfg.messages as u32
    }

    fn run(&mut self) {
        let n = self.cfg.nodes as u32;
        // Neighbours come up (all at once, or by joining); each host arms its periodic
        // work at random phases.
        for i in 0..n {
            match self.cfg.overlay {
                Overlay::Random => {
                    for k in 0..self.adj[i as usize].len() {
                        let peer = self.adj[i as usize][k];
                        self.hosts[i as usize].neighbor_up(
                            Duration::ZERO,
                            node_id(peer),
                            layout_of(peer),
                        );
                    }
                    self.pump(i);
                }
                Overlay::HyParView => {
                    let at = self.cfg.join_spacing * i;
                    self.at(at, What::Join { node: i });
                }
            }
            self.hosts[i as usize].start_periodic(Duration::ZERO);
            self.arm_wake(i);
        }
        let first = self.first_broadcast();
        if self.cfg.partition_heal && self.cfg.fail == 0.0 {
            let mut plan = ChaCha8Rng::seed_from_u64(self.cfg.seed ^ 0x706c_616e);
            let n = self.cfg.nodes as u32;
            self.planned = (0..self.cfg.messages)
                .map(|_| {
                    if self.origin_pool.is_empty() {
                        plan.gen_range(0..n)
                    } else {
                        self.origin_pool[plan.gen_range(0..self.origin_pool.len())]
                    }
                })
                .collect();
            self.at(
                first.saturating_sub(Duration::from_millis(500)),
                What::Opening,
            );
        }
        for k in 0..self.cfg.messages {
            let t = first + self.broadcast_interval() * k as u32;
            self.at(t, What::Broadcast { k });
        }
        let span = self.broadcast_end() - first;
        if self.cfg.fail > 0.0 {
            // HyParView heals by itself: crash early enough that messages follow the
            // healing; the random overlay keeps the old random moment.
            let f = match self.cfg.overlay {
                Overlay::Random => self.rng.gen_range(0.25..0.75),
                Overlay::HyParView => 0.2,
            };
            self.at(first + span.mul_f64(f), What::Crash);
        }
        let mut heal_end = Duration::ZERO;
        if self.cfg.partition_heal {
            let start = first + span.mul_f64(0.3);
            let heal = self
                .cfg
                .split
                .map_or(first + span.mul_f64(0.6), |d| start + d);
            self.at(start, What::Split);
            self.at(heal, What::Heal);
            let closing = heal + CLOSING_AFTER_HEAL;
            self.at(closing, What::Closing);
            // A split outlasting the broadcasts still heals, and gets its drain; the
            // run lasts until holes the closing round opened are declared.
            let declared = closing
                + self.cfg.protocol.message_cache_ttl
                + crate::protocol::gap::HOLE_GRACE
                + Duration::from_secs(6);
            heal_end = (heal + self.cfg.drain).max(declared);
        }
        let end = (self.broadcast_end() + self.cfg.drain).max(heal_end);
        while let Some((at, what)) = self.queue.pop_next() {
            if at > end {
                break;
            }
            self.now = at;
            self.events += 1;
            self.dispatch(what);
        }
        self.now = end;
    }

    fn dispatch(&mut self, what: What) {
        let now = self.now;
        match what {
            What::Datagram { to, from, bytes } => {
                if !self.alive[to as usize] {
                    return;
                }
                // The node's receive path, less what is I/O (flood limit, auth).
                let src = layout_of(from).shard_addr(0);
                self.hosts[to as usize]
                    .receive_bytes(now, src, &bytes, false)
                    .expect("the simulated hosts build decodable datagrams");
                self.pump(to);
            }
            What::Wake { node, at } => {
                if self.alive[node as usize] && self.wake_at[node as usize] == Some(at) {
                    self.wake_at[node as usize] = None;
                    self.hosts[node as usize].fire_due(now);
                    self.pump(node);
                }
            }
            What::Broadcast { k } => self.broadcast(k),
            What::Opening => {
                let mut seen = FxHashMap::default();
                let origins: Vec<u32> = self
                    .planned
                    .iter()
                    .copied()
                    .filter(|&o| seen.insert(o, ()).is_none())
                    .collect();
                for (j, o) in origins.into_iter().enumerate() {
                    if self.tracks.len() < self.stride {
                        self.broadcast_from(o, self.cfg.messages + j);
                        self.opening_messages += 1;
                    }
                }
            }
            What::Closing => {
                let origins: Vec<u32> = (0..self.cfg.nodes as u32)
                    .filter(|&o| self.next_msg_seq[o as usize] > 0 && self.alive[o as usize])
                    .collect();
                for (j, o) in origins.into_iter().enumerate() {
                    if self.tracks.len() < self.stride {
                        self.broadcast_from(o, self.cfg.messages + j);
                    }
                }
            }
            What::Crash => self.crash(),
            What::NeighborDown { node, peer } => {
                if self.alive[node as usize] {
                    self.hosts[node as usize].neighbor_down(now, node_id(peer));
                    self.pump(node);
                }
            }
            What::Split => self.split = true,
            What::Heal => {
                self.split = false;
                self.split_healed_at = Some(now);
                if self.cfg.overlay == Overlay::HyParView {
                    self.at(now, What::RemergeCheck);
                }
            }
            What::RemergeCheck => {
                if self.overlay_healed() {
                    self.remerged_at = Some(now);
                } else {
                    self.at(now + Duration::from_millis(50), What::RemergeCheck);
                }
            }
            What::Join { node } => {
                // Up to three random earlier nodes' control addresses, as an operator
                // lists a few seeds: the driver asks each until one answers, and keeps
                // them for rejoins.
                let k = (node as usize).min(SEEDS_PER_NODE);
                let seeds: Vec<SocketAddr> =
                    rand::seq::index::sample(&mut self.rng, node as usize, k)
                        .iter()
                        .map(|i| layout_of(i as u32).control)
                        .collect();
                self.members[node as usize].set_seeds(&seeds);
                let out = self.members[node as usize].start(now);
                self.pump_member(node, out);
            }
            What::Member { to, from, frame } => {
                if self.alive[to as usize] {
                    let src = layout_of(from).control;
                    let out =
                        self.members[to as usize].on_frames(now, node_id(from), src, vec![frame]);
                    self.pump_member(to, out);
                }
            }
            What::MemberWake { node, at } => {
                if self.alive[node as usize] && self.member_wake_at[node as usize] == Some(at) {
                    self.member_wake_at[node as usize] = None;
                    let out = self.members[node as usize].tick(now);
                    self.pump_member(node, out);
                }
            }
            What::HealCheck => {
                if self.overlay_healed() {
                    self.healed_at = Some(now);
                } else {
                    self.at(now + Duration::from_millis(250), What::HealCheck);
                }
            }
        }
    }

    fn broadcast(&mut self, k: usize) {
        if let Some(&o) = self.planned.get(k) {
            if self.alive[o as usize] {
                self.broadcast_from(o, k);
                return;
            }
        }
        let n = self.cfg.nodes as u32;
        let pool: Vec<u32> = self
            .origin_pool
            .iter()
            .copied()
            .filter(|&o| self.alive[o as usize])
            .collect();
        let origin = if pool.is_empty() {
            loop {
                let o = self.rng.gen_range(0..n);
                if self.alive[o as usize] {
                    break o;
                }
            }
        } else {
            pool[self.rng.gen_range(0..pool.len())]
        };
        self.broadcast_from(origin, k);
    }

    /// Broadcasts message `label` (the payload says which) from `origin`; it takes
    /// the next message slot (closing broadcasts interleave with scheduled ones).
    fn broadcast_from(&mut self, origin: u32, label: usize) {
        let k = self.tracks.len();
        let seq = self.next_msg_seq[origin as usize];
        self.next_msg_seq[origin as usize] += 1;
        let id = MessageId {
            origin: node_id(origin),
            seq,
        };
        self.ids.insert(id, k as u32);
        let part = id.partition(self.cfg.protocol.partitions) as usize;
        let nth_in_partition = self.per_partition[part];
        self.per_partition[part] += 1;
        self.first_contact.entry((origin, origin)).or_insert(seq);
        self.tracks.push(Track {
            origin,
            seq,
            nth_in_partition,
            sent_at: self.now,
            during_partition: self.split,
            payload_sends: 0,
            max_hop: 0,
            last_delivery: self.now,
        });
        self.delivered[origin as usize * self.stride + k] = true;
        let mut payload = vec![0u8; self.cfg.payload];
        for (j, b) in (label as u64)
            .to_le_bytes()
            .iter()
            .enumerate()
            .take(payload.len())
        {
            payload[j] = *b;
        }
        self.hosts[origin as usize]
            .broadcast(
                self.now,
                id,
                crate::topic::Topic::default(),
                Bytes::from(payload),
            )
            .expect("simulated broadcast is valid");
        self.pump(origin);
    }

    fn crash(&mut self) {
        let n = self.cfg.nodes;
        let count = ((n as f64) * self.cfg.fail).round() as usize;
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.shuffle(&mut self.rng);
        self.crashed_at = Some(self.now);
        if self.cfg.overlay == Overlay::HyParView {
            for &dead in &order[..count.min(n.saturating_sub(1))] {
                self.alive[dead as usize] = false;
            }
            self.at(self.now + Duration::from_millis(250), What::HealCheck);
            return;
        }
        for &dead in &order[..count.min(n.saturating_sub(1))] {
            self.alive[dead as usize] = false;
            for k in 0..self.adj[dead as usize].len() {
                let peer = self.adj[dead as usize][k];
                let d = self.cfg.detect_delay;
                let extra = self.rng.gen_range(0..=d.as_millis() as u64);
                let at = self.now + d + Duration::from_millis(extra);
                self.at(
                    at,
                    What::NeighborDown {
                        node: peer,
                        peer: dead,
                    },
                );
            }
        }
    }

    /// Performs a node's membership outputs as its control core does: frames go over
    /// the simulated links (same latency, loss and partitions as datagrams), view
    /// changes go to its shard host with the layout the driver learned; then the
    /// driver's next wake-up is armed.
    fn pump_member(&mut self, node: u32, out: Vec<MemberOutput>) {
        for o in out {
            match o {
                MemberOutput::Send { to, frame } => {
                    let to = node_at(to);
                    if self.split && self.side[node as usize] != self.side[to as usize] {
                        continue;
                    }
                    for d in self.cfg.link.delays(node, to, &mut self.rng) {
                        let at = self.now + d;
                        self.at(
                            at,
                            What::Member {
                                to,
                                from: node,
                                frame: frame.clone(),
                            },
                        );
                    }
                }
                MemberOutput::NeighborUp {
                    peer,
                    control,
                    shards,
                } => {
                    self.hosts[node as usize].neighbor_up(
                        self.now,
                        peer,
                        PeerLayout { control, shards },
                    );
                    self.pump(node);
                }
                MemberOutput::NeighborDown { peer } => {
                    self.hosts[node as usize].neighbor_down(self.now, peer);
                    self.pump(node);
                }
            }
        }
        self.arm_member_wake(node);
    }

    /// Schedules a wake-up for a node's membership driver at its `next_due` (never in
    /// the past: an overdue seed retry runs now), unless one at or before it is
    /// scheduled already.
    fn arm_member_wake(&mut self, node: u32) {
        let Some(at) = self.members[node as usize].next_due() else {
            return;
        };
        let at = at.max(self.now);
        if self.member_wake_at[node as usize].is_none_or(|w| at < w) {
            self.member_wake_at[node as usize] = Some(at);
            self.at(at, What::MemberWake { node, at });
        }
    }

    /// After a crash: every live node has a live neighbour and no dead one, and the
    /// live nodes' active views form one connected graph.
    fn overlay_healed(&self) -> bool {
        let n = self.cfg.nodes;
        let live: Vec<usize> = (0..n).filter(|&i| self.alive[i]).collect();
        for &i in &live {
            let act = self.members[i].membership().active();
            if act.is_empty() || act.iter().any(|&p| !self.alive[index_of(p) as usize]) {
                return false;
            }
        }
        let Some(&start) = live.first() else {
            return true;
        };
        let mut seen = vec![false; n];
        let mut stack = vec![start];
        seen[start] = true;
        let mut count = 1;
        while let Some(i) = stack.pop() {
            for &p in self.members[i].membership().active() {
                let j = index_of(p) as usize;
                if !seen[j] {
                    seen[j] = true;
                    count += 1;
                    stack.push(j);
                }
            }
        }
        count == live.len()
    }

    /// Drains a node's host: records deliveries and gaps, puts its datagrams on the
    /// links, and schedules a wake-up for its earliest timer.
    fn pump(&mut self, node: u32) {
        // Frames for a node that is no longer a neighbour (a Prune answering a
        // stranger's Gossip) are not sent: the host counts them, as a node does.
        self.hosts[node as usize].flush();
        while let Some(ev) = self.hosts[node as usize].poll_event() {
            match ev {
                HostEvent::Deliver { id, round, .. } => self.record_delivery(node, id, round),
                HostEvent::GraftFailed { .. } => {}
                HostEvent::Gap(gap) => self.gaps.push((node, gap)),
            }
        }
        while let Some((addr, bytes)) = self.hosts[node as usize].poll_datagram() {
            self.count_payload_sends(&bytes);
            self.transmit(node, node_at(addr), bytes);
        }
        self.arm_wake(node);
    }

    /// Payload transmissions (RMR): the Gossip frames of a datagram sent, lost or not.
    fn count_payload_sends(&mut self, bytes: &Bytes) {
        let dg = wire::decode(bytes).expect("the host builds decodable datagrams");
        for f in &dg.frames {
            if let Frame::Gossip { id, .. } = f {
                if let Some(&k) = self.ids.get(id) {
                    self.tracks[k as usize].payload_sends += 1;
                }
            }
        }
    }

    /// Schedules a wake-up for a node's earliest host timer, unless one at or before
    /// it is scheduled already.
    fn arm_wake(&mut self, node: u32) {
        let Some(at) = self.hosts[node as usize].next_timeout() else {
            return;
        };
        if self.wake_at[node as usize].is_none_or(|w| at < w) {
            self.wake_at[node as usize] = Some(at);
            self.at(at, What::Wake { node, at });
        }
    }

    fn transmit(&mut self, from: u32, to: u32, bytes: Bytes) {
        self.datagrams_sent += 1;
        if self.split && self.side[from as usize] != self.side[to as usize] {
            self.datagrams_lost += 1;
            return;
        }
        let delays = self.cfg.link.delays(from, to, &mut self.rng);
        if delays.is_empty() {
            self.datagrams_lost += 1;
        }
        for d in delays {
            let at = self.now + d;
            self.at(
                at,
                What::Datagram {
                    to,
                    from,
                    bytes: bytes.clone(),
                },
            );
        }
    }

    fn record_delivery(&mut self, node: u32, id: MessageId, round: u16) {
        let Some(&k) = self.ids.get(&id) else {
            return;
        };
        let slot = &mut self.delivered[node as usize * self.stride + k as usize];
        if *slot {
            self.duplicates += 1;
            return;
        }
        *slot = true;
        let origin = index_of(id.origin);
        self.first_contact.entry((node, origin)).or_insert(id.seq);
        let t = &mut self.tracks[k as usize];
        t.max_hop = t.max_hop.max(round);
        t.last_delivery = self.now;
    }

    /// Every (live node, message) pair not delivered is either inside a gap that node
    /// reported, before the node's first contact with the origin (out of scope: a
    /// node reports nothing of an origin's history before it first heard of it), or
    /// unrecovered (a loss nothing reported).
    fn gap_accounting(&self, live: &[usize]) -> GapAccounting {
        let mut ranges: FxHashMap<(u32, u32), Vec<(u64, u64)>> = FxHashMap::default();
        let mut acc = GapAccounting::default();
        for (node, g) in &self.gaps {
            acc.missed += g.missed;
            ranges
                .entry((*node, index_of(g.origin)))
                .or_default()
                .push((g.first, g.last));
        }
        for (k, t) in self.tracks.iter().enumerate() {
            for &i in live {
                if self.delivered[i * self.stride + k] {
                    continue;
                }
                let key = (i as u32, t.origin);
                let covered = ranges
                    .get(&key)
                    .is_some_and(|r| r.iter().any(|&(a, b)| (a..=b).contains(&t.seq)));
                if covered {
                    acc.reported += 1;
                } else if self.first_contact.get(&key).is_some_and(|&f| f <= t.seq) {
                    acc.unrecovered += 1;
                } else {
                    acc.before_first_contact += 1;
                }
            }
        }
        acc
    }

    fn report(&self) -> SimReport {
        let n = self.cfg.nodes;
        let m = self.tracks.len();
        let live: Vec<usize> = (0..n).filter(|&i| self.alive[i]).collect();
        let delivered_live = |k: usize| {
            live.iter()
                .filter(|&&i| self.delivered[i * self.stride + k])
                .count()
        };
        let warmup = self
            .tracks
            .iter()
            .filter(|t| t.nth_in_partition < self.cfg.warmup_per_partition)
            .count();
        let (mut counted, mut incomplete, mut got, mut want) = (0, 0, 0usize, 0usize);
        let (mut dead_msgs, mut dead_got) = (0, 0usize);
        let (mut part_msgs, mut part_got) = (0, 0usize);
        let (mut heal_msgs, mut heal_got) = (0, 0usize);
        let healing = |t: &Track| {
            self.cfg.overlay == Overlay::HyParView
                && self.crashed_at.is_some_and(|c| t.sent_at >= c)
                && self.healed_at.is_none_or(|h| t.sent_at < h)
        };
        let (mut rmr_sum, mut rmr_n, mut ldh_sum, mut ldh_max, mut last_ms) =
            (0.0, 0usize, 0.0, 0u16, 0.0);
        let mut measured = 0usize;
        let (mut rmr_all_sum, mut rmr_all_n) = (0.0, 0usize);
        for (k, t) in self.tracks.iter().enumerate() {
            let d = delivered_live(k);
            if !self.alive[t.origin as usize] {
                dead_msgs += 1;
                dead_got += d;
                continue;
            }
            if t.during_partition {
                part_msgs += 1;
                part_got += d;
                continue;
            }
            if healing(t) {
                heal_msgs += 1;
                heal_got += d;
                continue;
            }
            counted += 1;
            got += d;
            want += live.len();
            if d < live.len() {
                incomplete += 1;
            }
            let receivers = (0..n)
                .filter(|&i| self.delivered[i * self.stride + k])
                .count();
            let rmr_k =
                (receivers > 1).then(|| t.payload_sends as f64 / (receivers - 1) as f64 - 1.0);
            if let Some(r) = rmr_k {
                rmr_all_sum += r;
                rmr_all_n += 1;
            }
            if t.nth_in_partition >= self.cfg.warmup_per_partition {
                if let Some(r) = rmr_k {
                    rmr_sum += r;
                    rmr_n += 1;
                }
                measured += 1;
                ldh_sum += t.max_hop as f64;
                ldh_max = ldh_max.max(t.max_hop);
                last_ms += (t.last_delivery - t.sent_at).as_secs_f64() * 1000.0;
            }
        }
        let gaps = self.gap_accounting(&live);
        let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
        let stats =
            self.hosts
                .iter()
                .map(|h| h.shard().stats())
                .fold((0, 0, 0, 0, 0, 0, 0), |acc, s| {
                    (
                        acc.0 + s.gossip_sent,
                        acc.1 + s.ihave_sent,
                        acc.2 + s.graft_sent,
                        acc.3 + s.prune_sent,
                        acc.4 + s.graft_failed,
                        acc.5 + s.optimizations,
                        acc.6 + s.delivered,
                    )
                });
        let avg = |sum: f64| if rmr_n == 0 { 0.0 } else { sum / rmr_n as f64 };
        let measured = measured.max(1);
        SimReport {
            mode: match self.cfg.protocol.mode {
                Mode::Plumtree => "plumtree".into(),
                Mode::Flood => "flood".into(),
            },
            nodes: n,
            messages: m,
            seed: self.cfg.seed,
            loss: self.cfg.link.loss,
            fail: self.cfg.fail,
            partitions: self.cfg.protocol.partitions,
            live_nodes: live.len(),
            crashed_nodes: n - live.len(),
            reliability: ratio(got, want),
            messages_counted: counted,
            messages_incomplete: incomplete,
            dead_origin_messages: dead_msgs,
            dead_origin_reliability: ratio(dead_got, dead_msgs * live.len()),
            partition_messages: part_msgs,
            partition_reliability: ratio(part_got, part_msgs * live.len()),
            overlay: match self.cfg.overlay {
                Overlay::Random => "random".into(),
                Overlay::HyParView => "hyparview".into(),
            },
            heal_seconds: match (self.crashed_at, self.healed_at) {
                (Some(c), Some(h)) if self.cfg.overlay == Overlay::HyParView => {
                    Some((h - c).as_secs_f64())
                }
                _ => None,
            },
            remerge_seconds: match (self.split_healed_at, self.remerged_at) {
                (Some(h), Some(r)) => Some((r - h).as_secs_f64()),
                _ => None,
            },
            healing_messages: heal_msgs,
            healing_reliability: ratio(heal_got, heal_msgs * live.len()),
            neighbor_failures: self
                .members
                .iter()
                .map(|m| m.membership().stats().neighbor_failures)
                .sum(),
            promotions: self
                .members
                .iter()
                .map(|m| m.membership().stats().promotions)
                .sum(),
            shuffles: self
                .members
                .iter()
                .map(|m| m.membership().stats().shuffles_sent)
                .sum(),
            splices: self
                .members
                .iter()
                .map(|m| m.membership().stats().splices)
                .sum(),
            lost_rejoins: self
                .members
                .iter()
                .map(|m| m.membership().stats().lost_rejoins)
                .sum(),
            lost_probes: self
                .members
                .iter()
                .map(|m| m.membership().stats().lost_probes_sent)
                .sum(),
            lost_probe_seconds: self
                .crashed_at
                .map_or(0.0, |c| self.now.saturating_sub(c).as_secs_f64()),
            mean_active_view: if live.is_empty() || self.members.is_empty() {
                0.0
            } else {
                live.iter()
                    .map(|&i| self.members[i].membership().active().len())
                    .sum::<usize>() as f64
                    / live.len() as f64
            },
            duplicate_deliveries: self.duplicates,
            opening_messages: self.opening_messages,
            closing_messages: self
                .tracks
                .len()
                .saturating_sub(self.cfg.messages + self.opening_messages),
            gap_reported: gaps.reported,
            gap_missed: gaps.missed,
            false_gaps: gaps.missed.saturating_sub(gaps.reported),
            unrecovered: gaps.unrecovered,
            before_first_contact: gaps.before_first_contact,
            rmr: avg(rmr_sum),
            rmr_all: if rmr_all_n == 0 {
                0.0
            } else {
                rmr_all_sum / rmr_all_n as f64
            },
            grafts_per_delivery: if stats.6 == 0 {
                0.0
            } else {
                stats.2 as f64 / stats.6 as f64
            },
            origins: self.cfg.origins,
            rmr_messages: rmr_n,
            warmup_messages: warmup,
            ldh: ldh_sum / measured as f64,
            ldh_max,
            last_delivery_ms: last_ms / measured as f64,
            gossip_sent: stats.0,
            ihave_sent: stats.1,
            graft_sent: stats.2,
            prune_sent: stats.3,
            graft_failed: stats.4,
            optimizations: stats.5,
            datagrams_sent: self.datagrams_sent,
            datagrams_lost: self.datagrams_lost,
            virtual_seconds: self.now.as_secs_f64(),
            events: self.events,
            wall_seconds: None,
            baseline: None,
            flood_ldh: None,
            flood_last_delivery_ms: None,
        }
    }
}
