//! One shard's executor: its UDP socket, its `protocol::Shard`, its timers. Two tasks
//! share the state on one thread: the receive path (a permanent child of the shard's
//! supervisor) and the tick loop (commands from the control core, due timers, outgoing
//! datagrams, snapshots), run as a supervised [`Loop`].

use std::cell::RefCell;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use glommio::net::UdpSocket;
use rustc_hash::{FxHashMap, FxHashSet};
use socket2::Socket;
use tracing::{debug, warn};

use super::control::{executor_supervisor, loop_backoff, loop_info};
use super::fault::{FaultSwitch, FaultySocket};
use super::overload::Overload;
use super::ratelimit::{PeerRateLimiter, RateLimitConfig};
use super::runtime::{
    build_mtu, is_timeout, owned_mask, unix_ms, PeerLayout, ShardCmd, ShardReport, Shared,
    SHARD_QUEUE,
};
use super::sink::{Delivery, SinkSender};
use super::snapshot::{node_hex, IoStats, ShardSnapshot};
use crate::ids::NodeId;
use crate::protocol::{Event, ProtocolConfig, Shard, Time, Timer};
use crate::tasks::{
    Event as StopEvent, Loop, LoopConfig, LoopError, LoopHandle, LoopManager, TaskTracker,
};
use crate::wire::auth::{Sealer, Verifier};
use crate::wire::{self, Coalescer, Frame, Header, IHaveEntry};

/// How often an idle shard looks at its command queue and timers.
const TICK: Duration = Duration::from_millis(1);
/// How often shards publish their counters to the control core.
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

/// Everything one shard owns. Lives in an `Rc<RefCell<_>>` shared by the shard's
/// receive task and tick task, on one thread.
struct ShardState {
    ctx: ShardCtx,
    shard: Shard,
    peers: FxHashMap<NodeId, PeerLayout>,
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
    /// Graft give-ups since the last warning, and when that warning was logged.
    graft_failed_unlogged: u64,
    last_graft_warn: Option<Instant>,
}

impl ShardState {
    fn now(&self) -> Time {
        self.ctx.started.elapsed()
    }

    /// Turns the shard's events into deliveries, timers and datagrams to send.
    fn pump(&mut self, out: &mut Vec<(SocketAddr, Bytes)>) {
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
                        Frame::Prune { partition } | Frame::Digest { partition, .. } => {
                            push(layout.shard_addr(partition), frame, &mut per_dest);
                        }
                        Frame::Ping { .. } | Frame::Leave => {}
                    }
                }
                Event::Deliver { id, round, payload } => {
                    self.hops[(round as usize).min(HOP_BUCKETS - 1)] += 1;
                    if !self.ctx.sink.try_send(Delivery {
                        id,
                        hops: round,
                        payload,
                    }) {
                        self.io.cross_shard_backpressure += 1;
                    }
                }
                Event::SetTimer { at, timer } => {
                    self.timer_seq += 1;
                    self.timers.push(Due {
                        at,
                        seq: self.timer_seq,
                        timer,
                    });
                }
                Event::GraftFailed { id } => {
                    // Counted in plumtree_graft_failed_total; a warning at most every
                    // GRAFT_WARN_EVERY, with the count since the last one.
                    debug!(?id, "graft failed after all retries");
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
        let now_ms = if per_dest.is_empty() || self.ctx.auth.is_none() {
            0
        } else {
            unix_ms()
        };
        for (addr, frames) in per_dest {
            let mut c = Coalescer::new(self.ctx.header, mtu);
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

    fn on_datagram(&mut self, buf: &mut [u8], src: SocketAddr) {
        self.io.datagrams_received += 1;
        self.io.bytes_received += buf.len() as u64;
        // Flood limit per source, before any work on the datagram.
        if self.limiter.enabled() && !self.limiter.allow(src, self.now()) {
            return;
        }
        // Authenticate before decoding anything; only the MAC'd part is decoded.
        let buf = match &mut self.ctx.auth {
            Some((_, verifier)) => match verifier.open(buf, unix_ms()) {
                Ok(n) => &buf[..n],
                Err(e) => {
                    self.io.count_auth_failure(e);
                    return;
                }
            },
            None => buf,
        };
        let bytes = Bytes::copy_from_slice(buf);
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
        let from = dg.header.sender;
        let stranger = !self.peers.contains_key(&from);
        if stranger {
            self.io.unknown_senders += 1;
        }
        let now = self.now();
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

    fn on_command(&mut self, cmd: ShardCmd) {
        let now = self.now();
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
            ShardCmd::Broadcast { id, payload } => {
                match self.shard.broadcast(now, id, payload.clone()) {
                    // The origin's own application sees its broadcast too (hops 0).
                    Ok(()) => {
                        self.hops[0] += 1;
                        if !self.ctx.sink.try_send(Delivery {
                            id,
                            hops: 0,
                            payload,
                        }) {
                            self.io.cross_shard_backpressure += 1;
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
            }
        }
    }

    /// One bounded slice; if expired entries remain, the next tick runs another.
    fn cleanup_slice(&mut self, now: Time) {
        self.cleanup_pending = !self.shard.cleanup(now, CLEANUP_BUDGET).done;
    }

    fn fire_timers(&mut self) {
        let now = self.now();
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
                .map(|(id, e, l)| (node_hex(id), e, l))
                .collect(),
            stats: self.shard.stats(),
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

async fn send_all(
    sock: &FaultySocket,
    st: &RefCell<ShardState>,
    out: &mut Vec<(SocketAddr, Bytes)>,
) {
    for (addr, d) in out.drain(..) {
        match sock.send_to(&d, addr).await {
            Ok(_) => {
                let mut s = st.borrow_mut();
                s.io.datagrams_sent += 1;
                s.io.bytes_sent += d.len() as u64;
            }
            Err(e) => {
                st.borrow_mut().io.send_errors += 1;
                debug!(%addr, error = %e, "send failed");
            }
        }
    }
}

/// The tick: commands from the control core, due timers, continued cleanup, outgoing
/// datagrams and periodic snapshots.
struct TickLoop {
    name: String,
    state: Rc<RefCell<ShardState>>,
    sock: Rc<FaultySocket>,
    rx: Receiver<ShardCmd>,
    out: Vec<(SocketAddr, Bytes)>,
    last_snapshot: Option<Instant>,
}

impl Loop for TickLoop {
    fn name(&self) -> &str {
        &self.name
    }
    fn interval(&self) -> Duration {
        TICK
    }
    async fn run_once(&mut self) -> Result<(), LoopError> {
        {
            let mut s = self.state.borrow_mut();
            if s.chaos.remove(&self.name) {
                drop(s);
                panic!("chaos: injected panic in loop `{}`", self.name);
            }
            let queue = self.rx.len();
            s.cmd_queue = queue;
            s.overload.probe(self.sock.raw_fd(), queue, SHARD_QUEUE);
            // Drain the whole batch the control core pushed since the last tick.
            while let Ok(cmd) = self.rx.try_recv() {
                s.on_command(cmd);
            }
            s.fire_timers();
            if s.cleanup_pending {
                let now = s.now();
                s.cleanup_slice(now);
            }
            s.pump(&mut self.out);
            if self
                .last_snapshot
                .is_none_or(|t| t.elapsed() >= SNAPSHOT_EVERY)
                || s.stopping
            {
                self.last_snapshot = Some(Instant::now());
                let mut snap = s.snapshot(self.rx.len());
                snap.io.set_fault_stats(self.sock.fault_stats());
                let _ = s
                    .ctx
                    .reports
                    .try_send(ShardReport::Snapshot(Box::new(snap)));
            }
        }
        send_all(&self.sock, &self.state, &mut self.out).await;
        Ok(())
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
            let now = s.now();
            // Overloaded: skip this round (counted); the next one covers it.
            if s.overload.shedding() {
                s.overload.stats.anti_entropy += 1;
            } else {
                s.shard.anti_entropy(now);
            }
            s.pump(&mut self.out);
        }
        send_all(&self.sock, &self.state, &mut self.out).await;
        Ok(())
    }
}

/// The shard socket's receive path, until `stop`.
async fn receive(
    state: Rc<RefCell<ShardState>>,
    sock: Rc<FaultySocket>,
    stop: StopEvent,
) -> Result<(), String> {
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::new();
    while !stop.is_set() {
        match sock.recv_from(&mut buf).await {
            Ok((n, from)) => {
                {
                    let mut s = state.borrow_mut();
                    let queue = s.cmd_queue;
                    s.overload.on_receive(sock.raw_fd(), queue, SHARD_QUEUE);
                    s.on_datagram(&mut buf[..n], from);
                    s.pump(&mut out);
                }
                send_all(&sock, &state, &mut out).await;
                // Under a flood recv never blocks: give the tick loop (commands,
                // timers, snapshots) its turn when our time slice is used up.
                glommio::yield_if_needed().await;
            }
            Err(e) if is_timeout(&e) => {}
            Err(e) => {
                debug!(error = %e, "recv failed");
                glommio::timer::sleep(TICK).await;
            }
        }
    }
    Ok(())
}

pub(super) async fn run_shard(ctx: ShardCtx, sock: Socket, rx: Receiver<ShardCmd>) {
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
    let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
    let sock = Rc::new(FaultySocket::new(sock, ctx.faults.clone(), seed));
    let state = Rc::new(RefCell::new(ShardState {
        ctx,
        shard,
        peers: FxHashMap::default(),
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
    while !state.borrow().stopping {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
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
