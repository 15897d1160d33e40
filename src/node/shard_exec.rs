//! One shard's executor: its UDP socket, its `protocol::Shard`, its timers. Two tasks
//! share the state on one thread: the receive path (a permanent child of the shard's
//! supervisor) and the tick loop (commands from the control core, due timers, outgoing
//! datagrams, snapshots), run as a supervised [`Loop`].
//!
//! Nothing polls. The receive path sleeps until the socket is readable, then drains
//! it in `recvmmsg` batches and answers each batch with one `sendmmsg`. The tick loop
//! sleeps until the earliest of: a command (the control core or the admin plane rings
//! the shard's doorbell after queueing it), the earliest protocol timer (IHave flush,
//! graft), the next snapshot, or a timer armed earlier by the receive path (which
//! pokes it). Every wake-up is counted in `plumtree_shard_wakeups_total`.

use std::cell::RefCell;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Sender;
use futures_lite::future;
use glommio::net::UdpSocket;
use rustc_hash::{FxHashMap, FxHashSet};
use socket2::Socket;
use tracing::{debug, info, warn};

use super::control::{executor_supervisor, loop_backoff, loop_info};
use super::fault::{FaultSwitch, FaultySocket, Turn};
use super::overload::Overload;
use super::ratelimit::{PeerRateLimiter, RateLimitConfig};
use super::runtime::{
    build_mtu, owned_mask, unix_ms, PeerLayout, ShardCmd, ShardReport, Shared, SHARD_QUEUE,
};
use super::sink::{Delivery, SinkSender};
use super::snapshot::{IoStats, ShardSnapshot};
use super::udp::{slot_size, RX_BATCH};
use super::wake::QueueRx;
use crate::ids::NodeId;
use crate::protocol::{Event, ProtocolConfig, Shard, Time, Timer};
use crate::tasks::{
    Loop, LoopConfig, LoopError, LoopHandle, LoopManager, Notify, StopSignal, TaskTracker,
};
use crate::wire::auth::{Sealer, Verifier};
use crate::wire::{self, Coalescer, Frame, Header, IHaveEntry};

/// Receive buffers a shard's pool may own (each `udp::slot_size(mtu)` bytes, 2 KiB
/// at the default MTU: 2 MiB at most, allocated only as traffic needs them).
pub(super) const SHARD_RX_BUFFERS: usize = 1024;
/// How often shards publish their counters to the control core.
/// Most version-1 addresses a shard remembers (a rolling upgrade of a cluster of
/// up to this many shard sockets, per shard).
const MAX_V1_ADDRS: usize = 4096;
const SNAPSHOT_EVERY: Duration = Duration::from_millis(250);
/// Cleanup slice size (cached payloads expired per slice).
const CLEANUP_BUDGET: usize = 4096;
/// Hop histogram buckets (the last one collects the rest).
const HOP_BUCKETS: usize = 65;
/// Decode-error log lines per shard are limited to one per this period.
const DECODE_LOG_EVERY: Duration = Duration::from_secs(1);
/// Least time between two "graft gave up" warnings of one shard.
const GRAFT_WARN_EVERY: Duration = Duration::from_secs(10);

/// What a shard executor is started with.
pub(super) struct ShardCtx {
    pub index: usize,
    pub shards: usize,
    pub core: Option<usize>,
    pub addr: SocketAddr,
    pub header: Header,
    pub mtu: usize,
    pub protocol: ProtocolConfig,
    pub started: Instant,
    pub seed: u64,
    pub sink: SinkSender,
    pub reports: Sender<ShardReport>,
    pub shared: std::sync::Arc<Shared>,
    /// This shard socket's own sealer and verifier when the cluster is keyed (never
    /// shared: the sealer's seq stream and the replay windows are per socket).
    pub auth: Option<(Sealer, Verifier)>,
    /// The fault layer's settings (test-only, `--chaos`).
    pub faults: Option<std::sync::Arc<FaultSwitch>>,
    /// Per-source flood limit on this shard's socket.
    pub rate_limit: RateLimitConfig,
    /// Whether UDP GSO (`UDP_SEGMENT`) sends are tried.
    pub gso: bool,
}

#[derive(PartialEq, Eq)]
struct Due {
    at: Time,
    seq: u64,
    timer: Timer,
}

impl Ord for Due {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// The time of one batch, read once: monotonic now, and the UNIX time for the auth
/// layer read at most once, when first needed.
pub(super) struct Clock {
    now: Time,
    keyed: bool,
    unix: Option<u64>,
}

impl Clock {
    fn unix_ms(&mut self) -> u64 {
        if !self.keyed {
            return 0;
        }
        *self.unix.get_or_insert_with(unix_ms)
    }
}

/// Everything one shard owns. Lives in an `Rc<RefCell<_>>` shared by the shard's
/// receive task and tick task, on one thread.
struct ShardState {
    ctx: ShardCtx,
    shard: Shard,
    peers: FxHashMap<NodeId, PeerLayout>,
    /// Shard addresses that sent wire version 1 (nodes that predate topics): what
    /// is sent to them is written in version 1. At most [`MAX_V1_ADDRS`].
    v1_addrs: rustc_hash::FxHashSet<SocketAddr>,
    /// Deliveries by topic (bounded).
    topics: super::topic_counts::TopicCounts,
    timers: BinaryHeap<Due>,
    timer_seq: u64,
    io: IoStats,
    hops: Vec<u64>,
    stopping: bool,
    /// A cleanup pass that did not finish in one slice continues on the next tick.
    cleanup_pending: bool,
    last_decode_log: Option<Instant>,
    /// Loop names asked to panic once (test-only, `--chaos`).
    chaos: FxHashSet<String>,
    /// This shard's loops, for its snapshot.
    loops: Vec<LoopHandle>,
    tracker: Option<TaskTracker>,
    /// Token buckets per source address (flood limit).
    limiter: PeerRateLimiter,
    /// Receive backlog / command queue levels and what was shed.
    overload: Overload,
    /// Command queue length at the last tick.
    cmd_queue: usize,
    /// Until when the tick loop sleeps (`None` while it runs); a timer armed earlier
    /// pokes it through `wake`.
    tick_due: Option<Time>,
    wake: Notify,
    /// Set by the Shutdown command.
    stopped: StopSignal,
    /// Graft give-ups since the last warning, and when that warning was logged.
    graft_failed_unlogged: u64,
    last_graft_warn: Option<Instant>,
}

impl ShardState {
    fn now(&self) -> Time {
        self.ctx.started.elapsed()
    }

    fn clock(&self) -> Clock {
        Clock {
            now: self.now(),
            keyed: self.ctx.auth.is_some(),
            unix: None,
        }
    }

    /// Turns the shard's events into deliveries, timers and datagrams to send.
    fn pump(&mut self, out: &mut Vec<(SocketAddr, Bytes)>, clock: &mut Clock) {
        let partitions = self.ctx.protocol.partitions;
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
                        self.io.send_errors += 1;
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
                } => {
                    self.hops[(round as usize).min(HOP_BUCKETS - 1)] += 1;
                    self.topics.count(&topic);
                    if !self.ctx.sink.try_send(Delivery {
                        id,
                        hops: round,
                        topic,
                        payload,
                    }) {
                        self.io.deliveries_lagged += 1;
                    }
                }
                Event::SetTimer { at, timer } => {
                    if self.tick_due.is_some_and(|d| at < d) {
                        self.wake.notify_all();
                    }
                    self.timer_seq += 1;
                    self.timers.push(Due {
                        at,
                        seq: self.timer_seq,
                        timer,
                    });
                }
                Event::Gap(gap) => {
                    // Counted in plumtree_unrecoverable_total; the deliveries file and
                    // every subscriber get it (a full queue reports it as lagged).
                    info!(
                        shard = self.ctx.index,
                        origin = %gap.origin,
                        missed = gap.missed,
                        reason = gap.reason.as_str(),
                        "known gap: messages that can no longer be recovered"
                    );
                    let _ = self.ctx.sink.try_send_gap(gap);
                }
                Event::GraftFailed { id } => {
                    // Counted in plumtree_graft_failed_total; a warning at most every
                    // GRAFT_WARN_EVERY, with the count since the last one.
                    debug!(?id, "graft failed after all retries");
                    // Library subscribers hear of it; a full queue is reported to
                    // them as lagged.
                    let _ = self.ctx.sink.try_send_graft_failed(id);
                    self.graft_failed_unlogged += 1;
                    if self
                        .last_graft_warn
                        .is_none_or(|t| t.elapsed() >= GRAFT_WARN_EVERY)
                    {
                        warn!(
                            shard = self.ctx.index,
                            gave_up = self.graft_failed_unlogged,
                            last = ?id,
                            "missing messages given up after the last graft retry"
                        );
                        self.graft_failed_unlogged = 0;
                        self.last_graft_warn = Some(Instant::now());
                    }
                }
            }
        }
        let mtu = build_mtu(self.ctx.mtu, self.ctx.auth.is_some());
        // One clock read for the whole batch.
        let now_ms = if per_dest.is_empty() {
            0
        } else {
            clock.unix_ms()
        };
        for (addr, frames) in per_dest {
            let header = if self.v1_addrs.contains(&addr) {
                let downgraded = frames
                    .iter()
                    .filter(|f| matches!(f, Frame::Gossip { topic, .. } if !topic.is_default()));
                self.io.topics_downgraded += downgraded.count() as u64;
                Header {
                    version: wire::MIN_VERSION,
                    ..self.ctx.header
                }
            } else {
                self.ctx.header
            };
            let mut c = Coalescer::new(header, mtu);
            let mut dgrams = Vec::new();
            for f in frames {
                if c.push(f, &mut dgrams).is_err() {
                    self.io.send_errors += 1;
                }
            }
            c.flush(&mut dgrams);
            match &mut self.ctx.auth {
                Some((sealer, _)) => out.extend(
                    dgrams
                        .into_iter()
                        .map(|d| (addr, sealer.seal_bytes(&d, now_ms))),
                ),
                None => out.extend(dgrams.into_iter().map(|d| (addr, d))),
            }
        }
    }

    /// One received datagram; its payloads stay slices of `buf` (no copy).
    fn on_datagram(&mut self, buf: Bytes, src: SocketAddr, clock: &mut Clock) {
        self.io.datagrams_received += 1;
        self.io.bytes_received += buf.len() as u64;
        // Flood limit per source, before any work on the datagram.
        if self.limiter.enabled() && !self.limiter.allow(src, clock.now) {
            return;
        }
        // Authenticate before decoding anything; only the MAC'd part is decoded.
        let bytes = match &mut self.ctx.auth {
            Some((_, verifier)) => {
                let ms = clock.unix_ms();
                match verifier.open_bytes(buf, ms) {
                    Ok(b) => b,
                    Err(e) => {
                        self.io.count_auth_failure(e);
                        return;
                    }
                }
            }
            None => buf,
        };
        let dg = match wire::decode(&bytes) {
            Ok(dg) => dg,
            Err(e) => {
                self.io.count_decode_error(e.reason());
                if self
                    .last_decode_log
                    .is_none_or(|t| t.elapsed() >= DECODE_LOG_EVERY)
                {
                    self.last_decode_log = Some(Instant::now());
                    warn!(
                        shard = self.ctx.index,
                        reason = e.reason(),
                        total = self.io.decode_errors(),
                        "dropping undecodable datagram (logged at most once a second)"
                    );
                }
                return;
            }
        };
        self.io.unknown_frames += dg.skipped_unknown as u64;
        self.note_version(src, dg.header.version);
        let from = dg.header.sender;
        let stranger = !self.peers.contains_key(&from);
        if stranger {
            self.io.unknown_senders += 1;
        }
        let now = clock.now;
        let shedding = self.overload.shedding();
        for f in dg.frames {
            // Overloaded: IHave (lazy repair) and Digest (anti-entropy) go first;
            // Gossip, Graft, Prune stay.
            if shedding {
                match f {
                    Frame::IHave { .. } => {
                        self.overload.stats.ihave += 1;
                        continue;
                    }
                    Frame::Digest { .. } => {
                        self.overload.stats.anti_entropy += 1;
                        continue;
                    }
                    _ => {}
                }
            }
            // A Graft for an IHave or Digest from a non-neighbour could never be sent
            // (no address for it), yet it would hold a pending-graft slot: a flood of
            // such frames would fill the table and stall real repairs.
            if stranger && matches!(f, Frame::IHave { .. } | Frame::Digest { .. }) {
                self.io.ihave_unknown_sender += 1;
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
        self.io.wire_v1_datagrams += 1;
        if !self.v1_addrs.contains(&src) {
            if self.v1_addrs.len() < MAX_V1_ADDRS {
                self.v1_addrs.insert(src);
            } else {
                self.io.wire_v1_untracked += 1;
            }
        }
    }

    fn on_command(&mut self, cmd: ShardCmd, now: Time) {
        match cmd {
            ShardCmd::NeighborUp {
                peer,
                control,
                shards,
            } => {
                self.peers.insert(peer, PeerLayout { control, shards });
                self.shard.neighbor_up(now, peer);
            }
            ShardCmd::NeighborDown { peer } => {
                self.peers.remove(&peer);
                self.shard.neighbor_down(now, peer);
            }
            ShardCmd::Broadcast { id, topic, payload } => {
                match self
                    .shard
                    .broadcast(now, id, topic.clone(), payload.clone())
                {
                    // The origin's own application sees its broadcast too (hops 0).
                    Ok(()) => {
                        self.hops[0] += 1;
                        self.topics.count(&topic);
                        if !self.ctx.sink.try_send(Delivery {
                            id,
                            hops: 0,
                            topic,
                            payload,
                        }) {
                            self.io.deliveries_lagged += 1;
                        }
                    }
                    Err(e) => warn!(error = %e, "broadcast refused by shard"),
                }
            }
            ShardCmd::Maintenance => self.shard.maintenance(now),
            ShardCmd::Cleanup => self.cleanup_slice(now),
            ShardCmd::ChaosPanic(name) => {
                self.chaos.insert(name);
            }
            ShardCmd::Shutdown => {
                self.shard.flush_ihave_queues();
                self.stopping = true;
                self.stopped.set();
            }
        }
    }

    /// One bounded slice; if expired entries remain, the next tick runs another.
    fn cleanup_slice(&mut self, now: Time) {
        self.cleanup_pending = !self.shard.cleanup(now, CLEANUP_BUDGET).done;
    }

    fn fire_timers(&mut self, now: Time) {
        while self.timers.peek().is_some_and(|d| d.at <= now) {
            let d = self.timers.pop().expect("peeked");
            self.shard.handle_timer(now, d.timer);
        }
    }

    fn snapshot(&self, queue: usize) -> ShardSnapshot {
        ShardSnapshot {
            shard: self.ctx.index,
            core: self.ctx.core,
            addr: self.ctx.addr,
            partitions: (0..self.ctx.protocol.partitions as u16)
                .filter(|p| *p as usize % self.ctx.shards == self.ctx.index)
                .collect(),
            command_queue: queue,
            peer_links: self
                .shard
                .peer_links()
                .into_iter()
                .map(|(id, e, l)| (id.to_string(), e, l))
                .collect(),
            stats: self.shard.stats(),
            topics: self.topics.series(),
            io: {
                let mut io = self.io;
                let l = self.limiter.stats();
                io.rate_limited = l.limited;
                io.rate_limit_evictions = l.evictions;
                io.rate_limit_peers = l.peers;
                io.shed_ihave = self.overload.stats.ihave;
                io.shed_anti_entropy = self.overload.stats.anti_entropy;
                io.overloaded = self.overload.stats.overloaded;
                io
            },
            hops: self.hops.clone(),
            loops: self.loops.iter().map(|h| loop_info(&h.status())).collect(),
            tasks: self
                .tracker
                .as_ref()
                .map(|t| t.counters())
                .unwrap_or_default(),
            task_names: self
                .tracker
                .as_ref()
                .map(|t| t.by_name())
                .unwrap_or_default(),
        }
    }
}

/// Sends what a pump produced, in as few system calls as possible.
async fn send_all(
    sock: &FaultySocket,
    st: &RefCell<ShardState>,
    out: &mut Vec<(SocketAddr, Bytes)>,
) {
    if out.is_empty() {
        return;
    }
    let r = sock.send_batch(out).await;
    let mut s = st.borrow_mut();
    s.io.datagrams_sent += r.datagrams;
    s.io.bytes_sent += r.bytes;
    s.io.send_errors += r.errors;
}

/// The tick: commands from the control core, due timers, continued cleanup, outgoing
/// datagrams and periodic snapshots. It runs when there is something to do (see
/// [`TickLoop::idle`]), never on a fixed period.
struct TickLoop {
    name: String,
    state: Rc<RefCell<ShardState>>,
    sock: Rc<FaultySocket>,
    rx: QueueRx<ShardCmd>,
    out: Vec<(SocketAddr, Bytes)>,
    last_snapshot: Option<Instant>,
}

impl Loop for TickLoop {
    fn name(&self) -> &str {
        &self.name
    }
    /// The longest the loop sleeps with nothing to do (the snapshot period).
    fn interval(&self) -> Duration {
        SNAPSHOT_EVERY
    }
    async fn run_once(&mut self) -> Result<(), LoopError> {
        {
            let mut s = self.state.borrow_mut();
            if s.chaos.remove(&self.name) {
                drop(s);
                panic!("chaos: injected panic in loop `{}`", self.name);
            }
            let queue = self.rx.rx.len();
            s.cmd_queue = queue;
            s.overload.probe(self.sock.raw_fd(), queue, SHARD_QUEUE);
            let mut clock = s.clock();
            // Drain the whole batch queued since the last run.
            while let Ok(cmd) = self.rx.rx.try_recv() {
                s.on_command(cmd, clock.now);
            }
            s.fire_timers(clock.now);
            if s.cleanup_pending {
                s.cleanup_slice(clock.now);
            }
            s.pump(&mut self.out, &mut clock);
            if self
                .last_snapshot
                .is_none_or(|t| t.elapsed() >= SNAPSHOT_EVERY)
                || s.stopping
            {
                self.last_snapshot = Some(Instant::now());
                let mut snap = s.snapshot(self.rx.rx.len());
                self.sock.fill_stats(&mut snap.io);
                let _ = s
                    .ctx
                    .reports
                    .try_send(ShardReport::Snapshot(Box::new(snap)));
            }
        }
        send_all(&self.sock, &self.state, &mut self.out).await;
        Ok(())
    }

    /// Sleeps until a command arrives, the earliest protocol timer or the next
    /// snapshot is due, or the receive path armed an earlier timer.
    async fn idle(&mut self, delay: Duration, failing: bool) {
        if failing {
            glommio::timer::sleep(delay).await;
            return;
        }
        let (wait, poke) = {
            let mut s = self.state.borrow_mut();
            let now = s.now();
            let snap = self.last_snapshot.map_or(Duration::ZERO, |t| {
                SNAPSHOT_EVERY.saturating_sub(t.elapsed())
            });
            let mut due = now + snap;
            if let Some(d) = s.timers.peek() {
                due = due.min(d.at);
            }
            // Stopping: the runner's stop interrupts this wait; snapshots need not
            // wait for the period any more, but there is no reason to spin either.
            if s.stopping {
                due = due.max(now + SNAPSHOT_EVERY);
            }
            if s.cleanup_pending || !self.rx.rx.is_empty() {
                due = now;
            }
            s.tick_due = Some(due);
            (due.saturating_sub(now), s.wake.notified())
        };
        if wait.is_zero() {
            // More to do at once (a cleanup slice, queued commands): let the receive
            // path run first, so that neither starves the other.
            future::yield_now().await;
        } else {
            future::or(
                self.rx.readable(),
                future::or(glommio::timer::sleep(wait), poke),
            )
            .await;
        }
        let mut s = self.state.borrow_mut();
        s.tick_due = None;
        s.io.wakeups += 1;
    }
}

/// Anti-entropy: every `anti_entropy_interval` a digest of recent deliveries goes to
/// one random neighbour (see `Shard::anti_entropy`). Its own loop so it can be paused,
/// observed and restarted apart from the tick.
struct AntiEntropyLoop {
    name: String,
    state: Rc<RefCell<ShardState>>,
    sock: Rc<FaultySocket>,
    interval: Duration,
    out: Vec<(SocketAddr, Bytes)>,
}

impl Loop for AntiEntropyLoop {
    fn name(&self) -> &str {
        &self.name
    }
    fn interval(&self) -> Duration {
        self.interval
    }
    async fn run_once(&mut self) -> Result<(), LoopError> {
        {
            let mut s = self.state.borrow_mut();
            if s.chaos.remove(&self.name) {
                drop(s);
                panic!("chaos: injected panic in loop `{}`", self.name);
            }
            s.io.wakeups += 1;
            let mut clock = s.clock();
            // Overloaded: skip this round (counted); the next one covers it.
            if s.overload.shedding() {
                s.overload.stats.anti_entropy += 1;
            } else {
                s.shard.anti_entropy(clock.now);
            }
            s.pump(&mut self.out, &mut clock);
        }
        send_all(&self.sock, &self.state, &mut self.out).await;
        Ok(())
    }
}

/// The shard socket's receive path, until `stop`: wait for readiness, drain the
/// socket in batches, one pump and one batched send per batch.
async fn receive(
    state: Rc<RefCell<ShardState>>,
    sock: Rc<FaultySocket>,
    stop: StopSignal,
) -> Result<(), String> {
    let mut got = Vec::with_capacity(RX_BATCH);
    let mut out = Vec::new();
    // The last batch was full: more may be waiting, no need to wait for readiness.
    let mut more = false;
    while !stop.is_set() {
        match sock.receive_turn(&mut got, &mut more, &stop, None).await {
            Turn::Stopped => break,
            Turn::Ready { woke } => {
                if woke {
                    state.borrow_mut().io.wakeups += 1;
                }
            }
        }
        if !got.is_empty() {
            let mut s = state.borrow_mut();
            let mut clock = s.clock();
            let queue = s.cmd_queue;
            for r in got.drain(..) {
                s.overload.on_receive(sock.raw_fd(), queue, SHARD_QUEUE);
                if r.oversized {
                    s.io.datagrams_received += 1;
                    s.io.rx_oversized += 1;
                    continue;
                }
                s.on_datagram(r.data, r.from, &mut clock);
            }
            s.pump(&mut out, &mut clock);
        }
        send_all(&sock, &state, &mut out).await;
        // Under a flood the socket never runs dry: give the tick loop (commands,
        // timers, snapshots) its turn when our time slice is used up.
        glommio::yield_if_needed().await;
    }
    Ok(())
}

pub(super) async fn run_shard(ctx: ShardCtx, sock: Socket, rx: QueueRx<ShardCmd>) {
    let owned = owned_mask(ctx.index, ctx.shards, ctx.protocol.partitions);
    let shard = match Shard::new(ctx.header.sender, owned, ctx.protocol.clone(), ctx.seed) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "shard config rejected");
            return;
        }
    };
    let index = ctx.index;
    let seed = ctx.seed;
    let rate_limit = ctx.rate_limit;
    let shared = ctx.shared.clone();
    let sock = UdpSocket::from(sock);
    let rx_slot = slot_size(ctx.mtu);
    let sock = Rc::new(FaultySocket::new(
        sock,
        ctx.faults.clone(),
        seed,
        (rx_slot, SHARD_RX_BUFFERS, ctx.gso),
    ));
    let state = Rc::new(RefCell::new(ShardState {
        ctx,
        shard,
        peers: FxHashMap::default(),
        v1_addrs: Default::default(),
        topics: Default::default(),
        timers: BinaryHeap::new(),
        timer_seq: 0,
        io: IoStats::default(),
        hops: vec![0; HOP_BUCKETS],
        stopping: false,
        cleanup_pending: false,
        last_decode_log: None,
        chaos: FxHashSet::default(),
        loops: Vec::new(),
        tracker: None,
        limiter: PeerRateLimiter::new(rate_limit, seed),
        overload: Overload::default(),
        cmd_queue: 0,
        tick_due: None,
        wake: Notify::new(),
        stopped: StopSignal::new(),
        graft_failed_unlogged: 0,
        last_graft_warn: None,
    }));
    let tracker = TaskTracker::default();
    state.borrow_mut().tracker = Some(tracker.clone());
    let sup = {
        let (state, sock) = (state.clone(), sock.clone());
        executor_supervisor(
            &format!("shard-{index}"),
            format!("shard-{index}/receiver"),
            &tracker,
            seed,
            shared,
            move |stop| receive(state.clone(), sock.clone(), stop),
        )
    };
    let mut mgr = LoopManager::new(tracker.clone());
    let tick = mgr.add(
        TickLoop {
            name: format!("shard-{index}/tick"),
            state: state.clone(),
            sock: sock.clone(),
            rx,
            out: Vec::new(),
            last_snapshot: None,
        },
        LoopConfig {
            jitter: 0.0,
            error_backoff: loop_backoff(),
            seed,
            ..LoopConfig::default()
        },
    );
    let mut loops = vec![tick];
    let ae_interval = state.borrow().ctx.protocol.anti_entropy_interval;
    {
        // An interval of 0 disables it: listed with enabled: false, never run.
        loops.push(mgr.add(
            AntiEntropyLoop {
                name: format!("shard-{index}/anti_entropy"),
                state: state.clone(),
                sock: sock.clone(),
                interval: ae_interval,
                out: Vec::new(),
            },
            LoopConfig {
                enabled: !ae_interval.is_zero(),
                jitter: 0.1,
                error_backoff: loop_backoff(),
                seed: seed ^ 0xae,
            },
        ));
    }
    state.borrow_mut().loops = loops;
    mgr.start_all();
    let stopped = state.borrow().stopped.clone();
    stopped.wait().await;
    // The tick that saw Shutdown already flushed the IHave queues and sent them.
    let initial = tracker.active_count();
    mgr.stop_all(Duration::from_secs(1)).await;
    let _ = sup.stop().await;
    let drained = tracker.shutdown(Duration::from_millis(200)).await;
    state.borrow().ctx.shared.note_stop(
        1 + index,
        super::runtime::ExecutorStop {
            initial,
            remaining: drained.remaining_tasks,
        },
    );
}
