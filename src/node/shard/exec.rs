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
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Sender;
use futures_lite::future;
use glommio::net::UdpSocket;
use rustc_hash::FxHashSet;
use socket2::Socket;
use tracing::{debug, info, warn};

use super::overload::Overload;
use crate::ids::owned_mask;
use crate::node::net::socket::{FaultSwitch, NodeSocket, Turn};
use crate::node::net::udp::{slot_size, RX_BATCH};
use crate::node::plan::{build_mtu, unix_ms, ShardCmd, ShardReport, Shared, SHARD_QUEUE};
use crate::node::ratelimit::{PeerRateLimiter, RateLimitConfig};
use crate::node::sink::{Delivery, SinkSender};
use crate::node::snapshot::{IoStats, ShardSnapshot};
use crate::node::supervise::{executor_supervisor, loop_backoff, loop_info};
use crate::node::wake::QueueRx;
use crate::protocol::host::{
    HostConfig, HostEvent, HostStats, HostTimer, PeerLayout, ShardHost, PERIOD_JITTER,
};
use crate::protocol::{ProtocolConfig, Shard, Time};
use crate::tasks::{
    Loop, LoopConfig, LoopError, LoopHandle, LoopManager, Notify, StopSignal, TaskTracker,
};
use crate::wire::auth::{Sealer, Verifier};
use crate::wire::Header;

/// Receive buffers a shard's pool may own (each `udp::slot_size(mtu)` bytes, 2 KiB
/// at the default MTU: 2 MiB at most, allocated only as traffic needs them).
pub(crate) const SHARD_RX_BUFFERS: usize = 1024;
/// How often shards publish their counters to the control core.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(250);
/// Hop histogram buckets (the last one collects the rest).
const HOP_BUCKETS: usize = 65;
/// Decode-error log lines per shard are limited to one per this period.
const DECODE_LOG_EVERY: Duration = Duration::from_secs(1);
/// Least time between two "graft gave up" warnings of one shard.
const GRAFT_WARN_EVERY: Duration = Duration::from_secs(10);

/// What a shard executor is started with.
pub(crate) struct ShardCtx {
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

/// The time of one batch, read once: monotonic now, and the UNIX time for the auth
/// layer read at most once, when first needed.
pub(crate) struct Clock {
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
    /// The shard with its peers, frame filters, routing, coalescing and timers.
    host: ShardHost,
    /// Deliveries by topic (bounded).
    topics: crate::node::topic_counts::TopicCounts,
    io: IoStats,
    hops: Vec<u64>,
    stopping: bool,
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

    /// Turns the host's output into deliveries and sealed datagrams to send, and
    /// pokes the sleeping tick loop when a timer earlier than its wake-up was armed.
    fn pump(&mut self, out: &mut Vec<(SocketAddr, Bytes)>, clock: &mut Clock) {
        self.host.flush();
        if let (Some(due), Some(next)) = (self.tick_due, self.host.next_timeout()) {
            if next < due {
                self.wake.notify_all();
            }
        }
        while let Some(ev) = self.host.poll_event() {
            match ev {
                HostEvent::Deliver {
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
                HostEvent::Gap(gap) => {
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
                HostEvent::GraftFailed { id } => {
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
        // One clock read for the whole batch.
        let now_ms = if self.host.has_datagrams() {
            clock.unix_ms()
        } else {
            0
        };
        while let Some((addr, d)) = self.host.poll_datagram() {
            match &mut self.ctx.auth {
                Some((sealer, _)) => out.push((addr, sealer.seal_bytes(&d, now_ms))),
                None => out.push((addr, d)),
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
        let shedding = self.overload.shedding();
        match self.host.receive_bytes(clock.now, src, &bytes, shedding) {
            Ok(skipped) => self.io.unknown_frames += skipped as u64,
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
                self.host
                    .neighbor_up(now, peer, PeerLayout { control, shards });
            }
            ShardCmd::NeighborDown { peer } => {
                self.host.neighbor_down(now, peer);
            }
            ShardCmd::Broadcast { id, topic, payload } => {
                match self.host.broadcast(now, id, topic.clone(), payload.clone()) {
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
            // The control core schedules these (its loops can be paused over the
            // admin plane); they run as the host's periodic timers do.
            ShardCmd::Maintenance => self.host.fire(now, HostTimer::Maintenance),
            ShardCmd::Cleanup => self.host.fire(now, HostTimer::Cleanup),
            ShardCmd::ChaosPanic(name) => {
                self.chaos.insert(name);
            }
            ShardCmd::Shutdown => {
                self.host.flush_ihave_queues();
                self.stopping = true;
                self.stopped.set();
            }
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
                .host
                .shard()
                .peer_links()
                .into_iter()
                .map(|(id, e, l)| (id.to_string(), e, l))
                .collect(),
            stats: self.host.shard().stats(),
            topics: self.topics.series(),
            io: {
                let mut io = self.io;
                add_host_stats(&mut io, &self.host.stats());
                let l = self.limiter.stats();
                io.rate_limited = l.limited;
                io.rate_limit_evictions = l.evictions;
                io.rate_limit_peers = l.peers;
                io.shed_ihave += self.overload.stats.ihave;
                io.shed_anti_entropy += self.overload.stats.anti_entropy;
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

/// The host's counters, exported with the shard's I/O counters (send errors add up
/// with the socket's; the host counts the anti-entropy frames it shed, the
/// executor the rounds it skipped).
fn add_host_stats(io: &mut IoStats, h: &HostStats) {
    io.send_errors += h.send_errors;
    io.unknown_senders += h.unknown_senders;
    io.ihave_unknown_sender += h.ihave_unknown_sender;
    io.wire_v1_datagrams += h.wire_v1_datagrams;
    io.wire_v1_untracked += h.wire_v1_untracked;
    io.topics_downgraded += h.topics_downgraded;
    io.shed_ihave += h.shed_ihave;
    io.shed_anti_entropy += h.shed_anti_entropy;
}

/// Sends what a pump produced, in as few system calls as possible.
async fn send_all(sock: &NodeSocket, st: &RefCell<ShardState>, out: &mut Vec<(SocketAddr, Bytes)>) {
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
    sock: Rc<NodeSocket>,
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
            s.host.fire_due(clock.now);
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
            if let Some(at) = s.host.next_timeout() {
                due = due.min(at);
            }
            // Stopping: the runner's stop interrupts this wait; snapshots need not
            // wait for the period any more, but there is no reason to spin either.
            if s.stopping {
                due = due.max(now + SNAPSHOT_EVERY);
            }
            if !self.rx.rx.is_empty() {
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
    sock: Rc<NodeSocket>,
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
                s.host.fire(clock.now, HostTimer::AntiEntropy);
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
    sock: Rc<NodeSocket>,
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

pub(crate) async fn run_shard(ctx: ShardCtx, sock: Socket, rx: QueueRx<ShardCmd>) {
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
    let sock = Rc::new(NodeSocket::new(
        sock,
        ctx.faults.clone(),
        seed,
        (rx_slot, SHARD_RX_BUFFERS, ctx.gso),
    ));
    let host = ShardHost::new(
        shard,
        HostConfig {
            header: ctx.header,
            mtu: build_mtu(ctx.mtu, ctx.auth.is_some()),
        },
        seed,
    );
    let state = Rc::new(RefCell::new(ShardState {
        ctx,
        host,
        topics: Default::default(),
        io: IoStats::default(),
        hops: vec![0; HOP_BUCKETS],
        stopping: false,
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
                jitter: PERIOD_JITTER,
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
        crate::node::plan::ExecutorStop {
            initial,
            remaining: drained.remaining_tasks,
        },
    );
}
