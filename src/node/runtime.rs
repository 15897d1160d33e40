//! The thread-per-core runtime: one glommio executor per shard, each with its own UDP
//! socket (io_uring underneath) and its own `protocol::Shard`; one control executor
//! with the control socket (membership), the background loops and the stats
//! aggregation. Threads talk over bounded crossbeam channels; nothing on the
//! per-message path takes a lock.

use std::cell::RefCell;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use glommio::net::UdpSocket;
use glommio::{LocalExecutorBuilder, Placement};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashMap;
use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tracing::{debug, info, warn};

use super::sink::{Delivery, SinkSender};
use super::snapshot::{
    node_hex, AdminBackend, BroadcastRefused, IoStats, LoopInfo, NodeSnapshot, PeerInfo,
    ShardSnapshot,
};
use crate::ids::{MessageId, NodeId};
use crate::protocol::{Event, ProtocolConfig, Shard, Time, Timer};
use crate::wire::{self, Coalescer, Frame, Header, IHaveEntry};

/// Bound of each control-to-shard command queue.
const SHARD_QUEUE: usize = 1 << 16;
/// How often an idle shard looks at its command queue and timers.
const TICK: Duration = Duration::from_millis(1);
/// How often shards publish their counters to the control core.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(250);
/// Cleanup slice size (cached payloads expired per call).
const CLEANUP_BUDGET: usize = 4096;
/// Hop histogram buckets (the last one collects the rest).
const HOP_BUCKETS: usize = 65;

/// What the runtime needs to know; built from the node config and the core map.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    pub node_id: NodeId,
    /// Control socket address; shard `k` binds port + 1 + k.
    pub bind: SocketAddr,
    pub seeds: Vec<SocketAddr>,
    /// Core of each shard (`None`: not pinned).
    pub shard_cores: Vec<Option<usize>>,
    pub control_core: Option<usize>,
    pub heartbeat_interval: Duration,
    pub failure_timeout: Duration,
    pub recv_buffer: usize,
    pub send_buffer: usize,
    pub mtu: usize,
    pub protocol: ProtocolConfig,
}

/// Why the runtime could not start.
#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start executor `{name}`: {reason}")]
    Executor { name: String, reason: String },
    #[error("{0}")]
    Config(String),
}

/// Commands the control core (or the admin plane) sends a shard.
#[derive(Debug)]
pub enum ShardCmd {
    NeighborUp {
        peer: NodeId,
        control: SocketAddr,
        shards: u16,
    },
    NeighborDown {
        peer: NodeId,
    },
    Broadcast {
        id: MessageId,
        payload: Bytes,
    },
    Maintenance,
    Cleanup,
    AntiEntropy,
    Shutdown,
}

/// What shards report back.
#[derive(Debug)]
enum ShardReport {
    Snapshot(Box<ShardSnapshot>),
}

/// State shared between the control core, the admin plane and `RunningNode`.
struct Shared {
    node_id: NodeId,
    addr: SocketAddr,
    partitions: u32,
    max_payload: usize,
    started: Instant,
    shutting_down: AtomicBool,
    next_seq: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    shard_tx: Vec<Sender<ShardCmd>>,
    snapshot: Mutex<NodeSnapshot>,
}

/// The admin plane's view of a running node.
#[derive(Clone)]
pub struct NodeBackend(Arc<Shared>);

impl AdminBackend for NodeBackend {
    fn snapshot(&self) -> NodeSnapshot {
        let mut s = self
            .0
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        s.uptime_ms = self.0.started.elapsed().as_millis() as u64;
        s.shutting_down = self.0.shutting_down.load(Ordering::Relaxed);
        s.broadcasts_accepted = self.0.accepted.load(Ordering::Relaxed);
        s.broadcasts_refused = self.0.refused.load(Ordering::Relaxed);
        s
    }

    fn broadcast(&self, payload: Vec<u8>) -> Result<MessageId, BroadcastRefused> {
        let sh = &self.0;
        let refuse = |e| {
            sh.refused.fetch_add(1, Ordering::Relaxed);
            Err(e)
        };
        if sh.shutting_down.load(Ordering::Relaxed) {
            return refuse(BroadcastRefused::ShuttingDown);
        }
        if payload.len() > sh.max_payload {
            return refuse(BroadcastRefused::TooLarge {
                len: payload.len(),
                max: sh.max_payload,
            });
        }
        let id = MessageId {
            origin: sh.node_id,
            seq: sh.next_seq.fetch_add(1, Ordering::Relaxed),
        };
        let shard = id.partition(sh.partitions) as usize % sh.shard_tx.len();
        let cmd = ShardCmd::Broadcast {
            id,
            payload: Bytes::from(payload),
        };
        match sh.shard_tx[shard].try_send(cmd) {
            Ok(()) => {
                sh.accepted.fetch_add(1, Ordering::Relaxed);
                Ok(id)
            }
            Err(TrySendError::Full(_)) => refuse(BroadcastRefused::Backpressure),
            Err(TrySendError::Disconnected(_)) => refuse(BroadcastRefused::ShuttingDown),
        }
    }
}

/// A started node; dropping it without [`RunningNode::shutdown`] leaks its threads.
pub struct RunningNode {
    shared: Arc<Shared>,
    control_stop: Arc<AtomicBool>,
    threads: Vec<(String, JoinHandle<()>)>,
    shard_addrs: Vec<SocketAddr>,
}

/// What shutdown did (the statistics of the task-manager reference).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShutdownReport {
    pub status: &'static str,
    pub initial_tasks: usize,
    pub completed_tasks: usize,
    pub remaining_tasks: usize,
    pub duration_seconds: f64,
}

impl RunningNode {
    /// The admin plane's handle.
    pub fn backend(&self) -> NodeBackend {
        NodeBackend(self.shared.clone())
    }

    /// Addresses the shards listen on.
    pub fn shard_addrs(&self) -> &[SocketAddr] {
        &self.shard_addrs
    }

    /// Stops accepting broadcasts, tells neighbours we leave, flushes the shards'
    /// IHave queues and outgoing datagrams, and joins every thread in reverse start
    /// order (shards last, after the control core told them to stop).
    pub fn shutdown(self, timeout: Duration) -> ShutdownReport {
        let started = Instant::now();
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        self.control_stop.store(true, Ordering::SeqCst);
        let initial = self.threads.len();
        let mut completed = 0;
        for (name, handle) in self.threads.into_iter().rev() {
            let deadline = started + timeout;
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if handle.is_finished() {
                if handle.join().is_err() {
                    warn!(thread = %name, "thread panicked during shutdown");
                }
                completed += 1;
            } else {
                warn!(thread = %name, "thread did not stop within the shutdown timeout");
            }
        }
        ShutdownReport {
            status: if completed == initial {
                "completed"
            } else {
                "timeout"
            },
            initial_tasks: initial,
            completed_tasks: completed,
            remaining_tasks: initial - completed,
            duration_seconds: started.elapsed().as_secs_f64(),
        }
    }
}

fn bind_udp(addr: SocketAddr, rcv: usize, snd: usize) -> Result<Socket, RuntimeError> {
    let err = |source| RuntimeError::Bind { addr, source };
    let sk =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max (tuning/sysctl.sh).
    let _ = sk.set_recv_buffer_size(rcv);
    let _ = sk.set_send_buffer_size(snd);
    // No SO_REUSEPORT: a second node on the same port must fail, not split traffic.
    sk.bind(&addr.into()).map_err(err)?;
    Ok(sk)
}

/// Partitions shard `k` of `n` owns: every `n`-th one.
pub fn owned_mask(k: usize, n: usize, partitions: u32) -> u64 {
    (0..partitions as usize)
        .filter(|p| p % n == k)
        .fold(0u64, |m, p| m | 1 << p)
}

/// Starts the shards and the control core. Sockets are bound before this returns,
/// so a port clash is reported here.
pub fn start(cfg: RuntimeConfig, sink: SinkSender) -> Result<RunningNode, RuntimeError> {
    let n = cfg.shard_cores.len();
    if n == 0 || n > cfg.protocol.partitions as usize {
        return Err(RuntimeError::Config(format!(
            "config key `shards`: {n} shards for {} partitions",
            cfg.protocol.partitions
        )));
    }
    let started = Instant::now();
    let incarnation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    // Sequence numbers start at the start time in microseconds, so a restarted node
    // never reuses an id its peers' seen maps still remember.
    let first_seq = incarnation.as_micros() as u64;
    let header = Header {
        sender: cfg.node_id,
        incarnation: incarnation.as_secs() as u32,
        flags: 0,
    };
    let port = |k: usize| -> Result<SocketAddr, RuntimeError> {
        let p = cfg.bind.port() as usize + 1 + k;
        u16::try_from(p)
            .map(|p| SocketAddr::new(cfg.bind.ip(), p))
            .map_err(|_| RuntimeError::Config(format!("config key `bind`: port {p} out of range")))
    };
    // Bind everything up front (std sockets), hand them to the executors.
    let control_sock = bind_udp(cfg.bind, cfg.recv_buffer, cfg.send_buffer)?;
    let bind = control_sock
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(cfg.bind);
    let mut shard_socks = Vec::with_capacity(n);
    let mut shard_addrs = Vec::with_capacity(n);
    for k in 0..n {
        let addr = if cfg.bind.port() == 0 {
            SocketAddr::new(cfg.bind.ip(), bind.port() + 1 + k as u16)
        } else {
            port(k)?
        };
        shard_socks.push(bind_udp(addr, cfg.recv_buffer, cfg.send_buffer)?);
        shard_addrs.push(addr);
    }
    let (report_tx, report_rx) = bounded::<ShardReport>(1024);
    let mut shard_tx = Vec::with_capacity(n);
    let mut shard_rx = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = bounded(SHARD_QUEUE);
        shard_tx.push(tx);
        shard_rx.push(rx);
    }
    let snapshot = NodeSnapshot {
        node_id: node_hex(cfg.node_id),
        addr: bind,
        uptime_ms: 0,
        shutting_down: false,
        shards: Vec::new(),
        peers: Vec::new(),
        loops: Vec::new(),
        control_io: IoStats::default(),
        broadcasts_accepted: 0,
        broadcasts_refused: 0,
    };
    let shared = Arc::new(Shared {
        node_id: cfg.node_id,
        addr: bind,
        partitions: cfg.protocol.partitions,
        max_payload: cfg.protocol.max_payload,
        started,
        shutting_down: AtomicBool::new(false),
        next_seq: AtomicU64::new(first_seq),
        accepted: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        shard_tx: shard_tx.clone(),
        snapshot: Mutex::new(snapshot),
    });
    let mut threads = Vec::new();
    for (k, (sock, rx)) in shard_socks.into_iter().zip(shard_rx).enumerate() {
        let ctx = ShardCtx {
            index: k,
            shards: n,
            core: cfg.shard_cores[k],
            addr: shard_addrs[k],
            header,
            mtu: cfg.mtu,
            protocol: cfg.protocol.clone(),
            started,
            seed: cfg.node_id.0 ^ (k as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            sink: sink.clone(),
            reports: report_tx.clone(),
        };
        let name = format!("shard-{k}");
        threads.push((
            name.clone(),
            spawn_executor(&name, ctx.core, move || run_shard(ctx, sock, rx))?,
        ));
    }
    let control_stop = Arc::new(AtomicBool::new(false));
    let ctx = ControlCtx {
        cfg: cfg.clone(),
        header,
        shared: shared.clone(),
        stop: control_stop.clone(),
        reports: report_rx,
        started,
    };
    threads.push((
        "control".into(),
        spawn_executor("control", cfg.control_core, move || {
            run_control(ctx, control_sock)
        })?,
    ));
    info!(node = %node_hex(cfg.node_id), %bind, shards = n, "node started");
    Ok(RunningNode {
        shared,
        control_stop,
        threads,
        shard_addrs,
    })
}

/// Runs `body` on its own thread inside a glommio executor placed on `core`.
fn spawn_executor<F, Fut>(
    name: &str,
    core: Option<usize>,
    body: F,
) -> Result<JoinHandle<()>, RuntimeError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let placement = match core {
        Some(c) => Placement::Fixed(c),
        None => Placement::Unbound,
    };
    let builder = LocalExecutorBuilder::new(placement).name(name);
    let name = name.to_string();
    let err_name = name.clone();
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || match builder.make() {
            Ok(ex) => ex.run(body()),
            Err(e) => warn!(executor = %name, error = %e, "executor failed to start"),
        })
        .map_err(|e| RuntimeError::Executor {
            name: err_name,
            reason: e.to_string(),
        })
}

// ---- shards -----------------------------------------------------------------------

struct ShardCtx {
    index: usize,
    shards: usize,
    core: Option<usize>,
    addr: SocketAddr,
    header: Header,
    mtu: usize,
    protocol: ProtocolConfig,
    started: Instant,
    seed: u64,
    sink: SinkSender,
    reports: Sender<ShardReport>,
}

/// A peer's layout: where its shards listen.
#[derive(Clone, Copy, Debug)]
struct PeerLayout {
    control: SocketAddr,
    shards: u16,
}

impl PeerLayout {
    fn shard_addr(&self, partition: u16) -> SocketAddr {
        let k = partition as usize % self.shards.max(1) as usize;
        SocketAddr::new(
            self.control.ip(),
            self.control.port().wrapping_add(1 + k as u16),
        )
    }
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
                        Frame::Prune { partition } => {
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
                    debug!(?id, "graft failed after all retries");
                }
            }
        }
        for (addr, frames) in per_dest {
            let mut c = Coalescer::new(self.ctx.header, self.ctx.mtu);
            let mut dgrams = Vec::new();
            for f in frames {
                if c.push(f, &mut dgrams).is_err() {
                    self.io.send_errors += 1;
                }
            }
            c.flush(&mut dgrams);
            out.extend(dgrams.into_iter().map(|d| (addr, d)));
        }
    }

    fn on_datagram(&mut self, buf: &[u8]) {
        self.io.datagrams_received += 1;
        self.io.bytes_received += buf.len() as u64;
        let bytes = Bytes::copy_from_slice(buf);
        let dg = match wire::decode(&bytes) {
            Ok(dg) => dg,
            Err(e) => {
                self.io.count_decode_error(e.reason());
                return;
            }
        };
        self.io.unknown_frames += dg.skipped_unknown as u64;
        let from = dg.header.sender;
        if !self.peers.contains_key(&from) {
            self.io.unknown_senders += 1;
        }
        let now = self.now();
        for f in dg.frames {
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
            ShardCmd::Cleanup => {
                // Bounded slices; the next tick continues if more is due.
                let _ = self.shard.cleanup(now, CLEANUP_BUDGET);
            }
            ShardCmd::AntiEntropy => self.shard.anti_entropy(now),
            ShardCmd::Shutdown => {
                self.shard.flush_ihave_queues();
                self.stopping = true;
            }
        }
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
            io: self.io,
            hops: self.hops.clone(),
        }
    }
}

async fn send_all(sock: &UdpSocket, st: &RefCell<ShardState>, out: &mut Vec<(SocketAddr, Bytes)>) {
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

async fn run_shard(ctx: ShardCtx, sock: Socket, rx: Receiver<ShardCmd>) {
    let owned = owned_mask(ctx.index, ctx.shards, ctx.protocol.partitions);
    let shard = match Shard::new(ctx.header.sender, owned, ctx.protocol.clone(), ctx.seed) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "shard config rejected");
            return;
        }
    };
    let sock = Rc::new(UdpSocket::from(sock));
    let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
    let state = Rc::new(RefCell::new(ShardState {
        ctx,
        shard,
        peers: FxHashMap::default(),
        timers: BinaryHeap::new(),
        timer_seq: 0,
        io: IoStats::default(),
        hops: vec![0; HOP_BUCKETS],
        stopping: false,
    }));
    let recv = {
        let (sock, state) = (sock.clone(), state.clone());
        glommio::spawn_local(async move {
            let mut buf = vec![0u8; 65536];
            let mut out = Vec::new();
            loop {
                if state.borrow().stopping {
                    break;
                }
                match sock.recv_from(&mut buf).await {
                    Ok((n, _from)) => {
                        {
                            let mut s = state.borrow_mut();
                            s.on_datagram(&buf[..n]);
                            s.pump(&mut out);
                        }
                        send_all(&sock, &state, &mut out).await;
                        // Under a flood recv never blocks: give the tick task (commands,
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
        })
    };
    let mut out = Vec::new();
    let mut last_snapshot = Instant::now() - SNAPSHOT_EVERY;
    loop {
        {
            let mut s = state.borrow_mut();
            // Drain the whole batch the control core pushed since the last tick.
            while let Ok(cmd) = rx.try_recv() {
                s.on_command(cmd);
            }
            s.fire_timers();
            s.pump(&mut out);
            if last_snapshot.elapsed() >= SNAPSHOT_EVERY || s.stopping {
                last_snapshot = Instant::now();
                let snap = s.snapshot(rx.len());
                let _ = s
                    .ctx
                    .reports
                    .try_send(ShardReport::Snapshot(Box::new(snap)));
            }
        }
        send_all(&sock, &state, &mut out).await;
        if state.borrow().stopping {
            break;
        }
        glommio::timer::sleep(TICK).await;
    }
    recv.await;
}

fn is_timeout(e: &glommio::GlommioError<()>) -> bool {
    matches!(e, glommio::GlommioError::TimedOut(_))
        || matches!(e, glommio::GlommioError::IoError(io) if io.kind() == std::io::ErrorKind::TimedOut || io.kind() == std::io::ErrorKind::WouldBlock)
}

// ---- control core -----------------------------------------------------------------

struct ControlCtx {
    cfg: RuntimeConfig,
    header: Header,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    reports: Receiver<ShardReport>,
    started: Instant,
}

struct PeerEntry {
    layout: PeerLayout,
    last_heard: Instant,
}

/// A background loop's bookkeeping for `/status`.
#[derive(Clone)]
struct LoopStat {
    name: &'static str,
    interval: Duration,
    next: Instant,
    runs: u64,
    total: Duration,
    last_run: Option<Instant>,
}

struct ControlState {
    ctx: ControlCtx,
    peers: FxHashMap<NodeId, PeerEntry>,
    io: IoStats,
    loops: Vec<LoopStat>,
    shards: Vec<Option<ShardSnapshot>>,
    rng: ChaCha8Rng,
}

impl ControlState {
    fn tell_shards(&mut self, mk: impl Fn() -> ShardCmd) {
        for tx in &self.ctx.shared.shard_tx {
            if tx.try_send(mk()).is_err() {
                self.io.cross_shard_backpressure += 1;
            }
        }
    }

    fn datagram(&self, frame: Frame) -> Bytes {
        let mut c = Coalescer::new(self.ctx.header, self.ctx.cfg.mtu);
        let mut out = Vec::new();
        let _ = c.push(frame, &mut out);
        c.flush(&mut out);
        out.pop().unwrap_or_default()
    }

    fn ping(&self) -> Bytes {
        self.datagram(Frame::Ping {
            shards: self.ctx.cfg.shard_cores.len() as u16,
        })
    }

    /// A datagram on the control socket. Returns a reply to send, if any.
    fn on_datagram(&mut self, buf: &[u8], src: SocketAddr) -> Option<Bytes> {
        self.io.datagrams_received += 1;
        self.io.bytes_received += buf.len() as u64;
        let bytes = Bytes::copy_from_slice(buf);
        let dg = match wire::decode(&bytes) {
            Ok(dg) => dg,
            Err(e) => {
                self.io.count_decode_error(e.reason());
                return None;
            }
        };
        self.io.unknown_frames += dg.skipped_unknown as u64;
        let from = dg.header.sender;
        if from == self.ctx.cfg.node_id {
            return None;
        }
        let mut reply = None;
        for f in dg.frames {
            match f {
                Frame::Ping { shards } if shards > 0 => {
                    let layout = PeerLayout {
                        control: src,
                        shards,
                    };
                    match self.peers.get_mut(&from) {
                        Some(p) => p.last_heard = Instant::now(),
                        None => {
                            info!(peer = %node_hex(from), %src, shards, "neighbour up");
                            self.peers.insert(
                                from,
                                PeerEntry {
                                    layout,
                                    last_heard: Instant::now(),
                                },
                            );
                            self.tell_shards(|| ShardCmd::NeighborUp {
                                peer: from,
                                control: src,
                                shards,
                            });
                            // Answer at once so the joiner learns our layout.
                            reply = Some(self.ping());
                        }
                    }
                }
                Frame::Leave if self.peers.remove(&from).is_some() => {
                    info!(peer = %node_hex(from), "neighbour left");
                    self.tell_shards(|| ShardCmd::NeighborDown { peer: from });
                }
                _ => {}
            }
        }
        reply
    }

    /// Neighbours silent for longer than the failure timeout are declared down.
    fn detect_failures(&mut self) {
        let timeout = self.ctx.cfg.failure_timeout;
        let dead: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.last_heard.elapsed() > timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.peers.remove(&id);
            warn!(peer = %node_hex(id), "neighbour failed (silent past failure timeout)");
            self.tell_shards(|| ShardCmd::NeighborDown { peer: id });
        }
    }

    /// Where to send heartbeats: every neighbour, and seeds we have no neighbour at.
    fn heartbeat_targets(&self) -> Vec<SocketAddr> {
        let mut t: Vec<SocketAddr> = self.peers.values().map(|p| p.layout.control).collect();
        for s in &self.ctx.cfg.seeds {
            if !t.contains(s) && *s != self.ctx.shared.addr {
                t.push(*s);
            }
        }
        t
    }

    fn publish(&mut self) {
        while let Ok(ShardReport::Snapshot(s)) = self.ctx.reports.try_recv() {
            let k = s.shard;
            if k < self.shards.len() {
                self.shards[k] = Some(*s);
            }
        }
        let start = self.ctx.started;
        let shards: Vec<ShardSnapshot> = self.shards.iter().flatten().cloned().collect();
        let peers = self
            .peers
            .iter()
            .map(|(id, p)| {
                let hex = node_hex(*id);
                let (eager, lazy) = shards
                    .iter()
                    .flat_map(|s| s.peer_links.iter())
                    .filter(|(h, _, _)| *h == hex)
                    .fold((0, 0), |a, (_, e, l)| (a.0 + e, a.1 + l));
                PeerInfo {
                    node_id: hex,
                    addr: p.layout.control,
                    shards: p.layout.shards,
                    state: "active".into(),
                    last_heard_ms_ago: p.last_heard.elapsed().as_millis() as u64,
                    eager_partitions: eager,
                    lazy_partitions: lazy,
                }
            })
            .collect();
        let loops = self
            .loops
            .iter()
            .map(|l| LoopInfo {
                name: l.name.into(),
                running: !self.ctx.stop.load(Ordering::Relaxed),
                paused: false,
                run_count: l.runs,
                error_count: 0,
                consecutive_errors: 0,
                average_duration_ms: if l.runs == 0 {
                    0.0
                } else {
                    l.total.as_secs_f64() * 1000.0 / l.runs as f64
                },
                last_run_time: l.last_run.map(|t| (t - start).as_millis() as u64),
                last_error: None,
            })
            .collect();
        let mut snap = self
            .ctx
            .shared
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        snap.shards = shards;
        snap.peers = peers;
        snap.loops = loops;
        snap.control_io = self.io;
    }

    /// Runs whichever periodic loops are due; returns the datagrams to send.
    fn run_loops(&mut self) -> Vec<(SocketAddr, Bytes)> {
        let mut out = Vec::new();
        let now = Instant::now();
        for i in 0..self.loops.len() {
            if self.loops[i].next > now {
                continue;
            }
            let t0 = Instant::now();
            match self.loops[i].name {
                "heartbeat" => {
                    self.detect_failures();
                    let ping = self.ping();
                    out.extend(
                        self.heartbeat_targets()
                            .into_iter()
                            .map(|a| (a, ping.clone())),
                    );
                }
                "maintenance" => self.tell_shards(|| ShardCmd::Maintenance),
                "seen_cleanup" => self.tell_shards(|| ShardCmd::Cleanup),
                "anti_entropy" => self.tell_shards(|| ShardCmd::AntiEntropy),
                "stats" => self.publish(),
                _ => {}
            }
            let jitter = if self.loops[i].name == "maintenance" {
                let j = self.ctx.cfg.protocol.maintenance_jitter.as_millis() as u64;
                Duration::from_millis(if j == 0 { 0 } else { self.rng.gen_range(0..=j) })
            } else {
                Duration::ZERO
            };
            let l = &mut self.loops[i];
            l.runs += 1;
            l.total += t0.elapsed();
            l.last_run = Some(t0);
            l.next = now + l.interval + jitter;
        }
        out
    }
}

async fn run_control(ctx: ControlCtx, sock: Socket) {
    let sock = Rc::new(UdpSocket::from(sock));
    let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
    let p = &ctx.cfg.protocol;
    let now = Instant::now();
    let mut loops = vec![
        ("heartbeat", ctx.cfg.heartbeat_interval),
        ("maintenance", p.maintenance_interval),
        ("seen_cleanup", Duration::from_secs(1)),
        ("anti_entropy", p.anti_entropy_interval),
        ("stats", SNAPSHOT_EVERY),
    ];
    loops.retain(|(_, i)| !i.is_zero());
    let loops = loops
        .into_iter()
        .map(|(name, interval)| LoopStat {
            name,
            interval,
            next: now,
            runs: 0,
            total: Duration::ZERO,
            last_run: None,
        })
        .collect();
    let n = ctx.cfg.shard_cores.len();
    let seed = ctx.cfg.node_id.0;
    let state = Rc::new(RefCell::new(ControlState {
        ctx,
        peers: FxHashMap::default(),
        io: IoStats::default(),
        loops,
        shards: vec![None; n],
        rng: ChaCha8Rng::seed_from_u64(seed),
    }));
    let recv = {
        let (sock, state) = (sock.clone(), state.clone());
        glommio::spawn_local(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                if state.borrow().ctx.stop.load(Ordering::Relaxed) {
                    break;
                }
                match sock.recv_from(&mut buf).await {
                    Ok((len, src)) => {
                        let reply = state.borrow_mut().on_datagram(&buf[..len], src);
                        if let Some(r) = reply {
                            let _ = sock.send_to(&r, src).await;
                        }
                    }
                    Err(e) if is_timeout(&e) => {}
                    Err(e) => {
                        debug!(error = %e, "control recv failed");
                        glommio::timer::sleep(TICK).await;
                    }
                }
            }
        })
    };
    loop {
        let out = state.borrow_mut().run_loops();
        for (addr, d) in out {
            if sock.send_to(&d, addr).await.is_ok() {
                state.borrow_mut().io.datagrams_sent += 1;
            } else {
                state.borrow_mut().io.send_errors += 1;
            }
        }
        if state.borrow().ctx.stop.load(Ordering::Relaxed) {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    // Shutdown: tell neighbours we leave, then stop the shards.
    let (leave, targets) = {
        let s = state.borrow();
        (
            s.datagram(Frame::Leave),
            s.peers
                .values()
                .map(|p| p.layout.control)
                .collect::<Vec<_>>(),
        )
    };
    for a in targets {
        let _ = sock.send_to(&leave, a).await;
    }
    state.borrow_mut().tell_shards(|| ShardCmd::Shutdown);
    recv.await;
    info!("control core stopped");
}
