//! The control core: membership over the control socket (Ping/Leave, heartbeat
//! failure detection) and the node's periodic work, each a supervised [`Loop`]:
//! heartbeat, maintenance, seen-map cleanup scheduling and
//! stats aggregation. The receive path is a permanent child of a supervisor.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Receiver;
use glommio::net::UdpSocket;
use rustc_hash::{FxHashMap, FxHashSet};
use socket2::Socket;
use tracing::{debug, error, info, warn};

use super::fault::{FaultSwitch, FaultySocket};
use super::runtime::{
    build_mtu, is_timeout, unix_ms, PeerLayout, RuntimeConfig, ShardCmd, ShardReport, Shared,
};
use super::snapshot::{node_hex, IoStats, LoopInfo, PeerInfo, ShardSnapshot};
use crate::ids::NodeId;
use crate::tasks::{
    BackoffConfig, ChildSpec, Event, Loop, LoopConfig, LoopError, LoopHandle, LoopManager,
    LoopStatus, RestartIntensity, RestartType, Supervisor, TaskTracker,
};
use crate::wire::auth::{Sealer, Verifier};
use crate::wire::{self, Coalescer, Frame, Header};

/// How often stats are aggregated for the admin plane.
pub(super) const STATS_EVERY: Duration = Duration::from_millis(250);
/// How often the control core schedules a seen-map cleanup slice on every shard.
const CLEANUP_EVERY: Duration = Duration::from_secs(1);

/// What the control executor is started with.
pub(super) struct ControlCtx {
    pub cfg: RuntimeConfig,
    pub header: Header,
    pub shared: Arc<Shared>,
    pub reports: Receiver<ShardReport>,
    /// Loop names to panic once (test-only, `--chaos`).
    pub chaos: Option<Receiver<String>>,
    /// The control socket's own sealer (stream 0) and verifier when the cluster is
    /// keyed.
    pub auth: Option<(Sealer, Verifier)>,
    /// The fault layer's settings (test-only, `--chaos`).
    pub faults: Option<Arc<FaultSwitch>>,
}

struct PeerEntry {
    layout: PeerLayout,
    last_heard: Instant,
}

struct ControlState {
    ctx: ControlCtx,
    peers: FxHashMap<NodeId, PeerEntry>,
    io: IoStats,
    loops: Vec<LoopHandle>,
    shards: Vec<Option<ShardSnapshot>>,
    chaos_pending: FxHashSet<String>,
    tracker: TaskTracker,
}

/// Maps a loop runner's status to the status-page shape.
pub(super) fn loop_info(s: &LoopStatus) -> LoopInfo {
    LoopInfo {
        name: s.name.clone(),
        running: s.running,
        paused: s.paused,
        run_count: s.run_count,
        error_count: s.error_count,
        consecutive_errors: s.consecutive_errors,
        average_duration_ms: s.average_duration_ms,
        last_run_time: s.last_run_time.map(|t| (t * 1000.0) as u64),
        last_error: s.last_error.clone(),
    }
}

/// Error backoff for the node's loops: quick first retry, capped at 5 s.
pub(super) fn loop_backoff() -> BackoffConfig {
    BackoffConfig {
        initial: Duration::from_millis(50),
        max: Duration::from_secs(5),
        multiplier: 2.0,
        jitter: 0.2,
    }
}

/// The supervisor every executor runs its receive path under: a critical permanent
/// child restarted with [`loop_backoff`]; more than 20 restarts in 10 s (the count
/// resets after 30 s stable) escalates to `Shared::degrade`, which for a critical
/// child makes the node shut down and exit non-zero.
pub(super) fn executor_supervisor<F, Fut>(
    name: &str,
    child: String,
    tracker: &TaskTracker,
    seed: u64,
    shared: Arc<Shared>,
    receive: F,
) -> Supervisor
where
    F: Fn(Event) -> Fut + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + 'static,
{
    let sup = Supervisor::new(
        name,
        RestartIntensity {
            max_restarts: 20,
            within: Duration::from_secs(10),
            stable_after: Duration::from_secs(30),
        },
        tracker.clone(),
        seed,
    );
    sup.add_child(
        ChildSpec::new(child, RestartType::Permanent, receive)
            .critical(true)
            .backoff(loop_backoff()),
    );
    sup.on_escalation(move |e| {
        error!(task = %e.task, critical = e.critical, "restart intensity exceeded");
        shared.degrade(&e.task, e.critical);
    });
    sup.start();
    sup
}

impl ControlState {
    /// Test-only fault injection: whether `name` was asked to panic (once).
    fn chaos_take(&mut self, name: &str) -> bool {
        if let Some(rx) = &self.ctx.chaos {
            while let Ok(n) = rx.try_recv() {
                match n.strip_prefix("shard-") {
                    // Shard loops: route to the shard that owns it.
                    Some(rest) => {
                        let k = rest.split('/').next().and_then(|k| k.parse::<usize>().ok());
                        if let Some(tx) = k.and_then(|k| self.ctx.shared.shard_tx.get(k)) {
                            let _ = tx.try_send(ShardCmd::ChaosPanic(n));
                        }
                    }
                    None => {
                        self.chaos_pending.insert(n);
                    }
                }
            }
        }
        self.chaos_pending.remove(name)
    }

    fn tell_shards(&mut self, mk: impl Fn() -> ShardCmd) {
        for tx in &self.ctx.shared.shard_tx {
            if tx.try_send(mk()).is_err() {
                self.io.cross_shard_backpressure += 1;
            }
        }
    }

    /// One datagram holding `frame`, sealed when the cluster is keyed.
    fn datagram(&mut self, frame: Frame) -> Bytes {
        let mtu = build_mtu(self.ctx.cfg.mtu, self.ctx.auth.is_some());
        let mut c = Coalescer::new(self.ctx.header, mtu);
        let mut out = Vec::new();
        let _ = c.push(frame, &mut out);
        c.flush(&mut out);
        let d = out.pop().unwrap_or_default();
        match &mut self.ctx.auth {
            Some((sealer, _)) => sealer.seal_bytes(&d, unix_ms()),
            None => d,
        }
    }

    fn ping(&mut self) -> Bytes {
        self.datagram(Frame::Ping {
            shards: self.ctx.cfg.shard_cores.len() as u16,
        })
    }

    /// A datagram on the control socket. Returns a reply to send, if any.
    fn on_datagram(&mut self, buf: &[u8], src: SocketAddr) -> Option<Bytes> {
        self.io.datagrams_received += 1;
        self.io.bytes_received += buf.len() as u64;
        // Authenticate before decoding anything; only the MAC'd part is decoded.
        let buf = match &mut self.ctx.auth {
            Some((_, verifier)) => match verifier.verify(buf, unix_ms()) {
                Ok(n) => &buf[..n],
                Err(e) => {
                    self.io.count_auth_failure(e);
                    return None;
                }
            },
            None => buf,
        };
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
        let mut loops: Vec<LoopInfo> = self.loops.iter().map(|h| loop_info(&h.status())).collect();
        loops.extend(shards.iter().flat_map(|s| s.loops.iter().cloned()));
        let mut snap = self
            .ctx
            .shared
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut tasks = self.tracker.counters();
        for t in shards.iter().map(|s| &s.tasks) {
            tasks.spawned += t.spawned;
            tasks.running += t.running;
            tasks.completed += t.completed;
            tasks.failed += t.failed;
            tasks.cancelled += t.cancelled;
            tasks.restarted += t.restarted;
        }
        snap.tasks = tasks;
        snap.shards = shards;
        snap.peers = peers;
        snap.loops = loops;
        snap.control_io = self.io;
    }
}

/// Panics when `--chaos` asked this loop to (checked before touching any state).
fn chaos_point(state: &RefCell<ControlState>, name: &str) {
    if state.borrow_mut().chaos_take(name) {
        panic!("chaos: injected panic in loop `{name}`");
    }
}

/// Pings every neighbour and unanswered seed; declares silent neighbours failed.
struct HeartbeatLoop {
    state: Rc<RefCell<ControlState>>,
    sock: Rc<FaultySocket>,
    interval: Duration,
}

impl Loop for HeartbeatLoop {
    fn name(&self) -> &str {
        "heartbeat"
    }
    fn interval(&self) -> Duration {
        self.interval
    }
    async fn run_once(&mut self) -> Result<(), LoopError> {
        chaos_point(&self.state, "heartbeat");
        let (ping, targets) = {
            let mut s = self.state.borrow_mut();
            s.detect_failures();
            (s.ping(), s.heartbeat_targets())
        };
        for a in targets {
            let ok = self.sock.send_to(&ping, a).await.is_ok();
            let mut s = self.state.borrow_mut();
            if ok {
                s.io.datagrams_sent += 1;
            } else {
                s.io.send_errors += 1;
            }
        }
        Ok(())
    }
}

/// A loop that sends one command to every shard each period.
struct ShardCommandLoop {
    state: Rc<RefCell<ControlState>>,
    name: &'static str,
    interval: Duration,
    command: fn() -> ShardCmd,
}

impl Loop for ShardCommandLoop {
    fn name(&self) -> &str {
        self.name
    }
    fn interval(&self) -> Duration {
        self.interval
    }
    async fn run_once(&mut self) -> Result<(), LoopError> {
        chaos_point(&self.state, self.name);
        let command = self.command;
        self.state.borrow_mut().tell_shards(command);
        Ok(())
    }
}

/// Collects shard snapshots and publishes the node snapshot for the admin plane.
struct StatsLoop {
    state: Rc<RefCell<ControlState>>,
    sock: Rc<FaultySocket>,
}

impl Loop for StatsLoop {
    fn name(&self) -> &str {
        "stats"
    }
    fn interval(&self) -> Duration {
        STATS_EVERY
    }
    async fn run_once(&mut self) -> Result<(), LoopError> {
        chaos_point(&self.state, "stats");
        let mut s = self.state.borrow_mut();
        s.io.set_fault_stats(self.sock.fault_stats());
        s.publish();
        Ok(())
    }
}

/// The control socket's receive path, until `stop`.
async fn receive(
    state: Rc<RefCell<ControlState>>,
    sock: Rc<FaultySocket>,
    stop: Event,
) -> Result<(), String> {
    let mut buf = vec![0u8; 65536];
    while !stop.is_set() {
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
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    Ok(())
}

pub(super) async fn run_control(ctx: ControlCtx, sock: Socket) {
    let sock = UdpSocket::from(sock);
    let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
    let sock = Rc::new(FaultySocket::new(
        sock,
        ctx.faults.clone(),
        ctx.cfg.node_id.0,
    ));
    let n = ctx.cfg.shard_cores.len();
    let seed = ctx.cfg.node_id.0;
    let p = ctx.cfg.protocol.clone();
    let heartbeat = ctx.cfg.heartbeat_interval;
    let shared = ctx.shared.clone();
    let state = Rc::new(RefCell::new(ControlState {
        ctx,
        peers: FxHashMap::default(),
        io: IoStats::default(),
        loops: Vec::new(),
        shards: vec![None; n],
        chaos_pending: FxHashSet::default(),
        tracker: TaskTracker::default(),
    }));
    let tracker = state.borrow().tracker.clone();
    // The receive path: a permanent, critical child.
    let sup = {
        let (state, sock) = (state.clone(), sock.clone());
        executor_supervisor(
            "control",
            "control_receiver".into(),
            &tracker,
            seed,
            shared.clone(),
            move |stop| receive(state.clone(), sock.clone(), stop),
        )
    };
    let mut mgr = LoopManager::new(tracker.clone());
    let cfg = |jitter: f64| LoopConfig {
        jitter,
        error_backoff: loop_backoff(),
        seed,
        ..LoopConfig::default()
    };
    let mut handles = vec![mgr.add(
        HeartbeatLoop {
            state: state.clone(),
            sock: sock.clone(),
            interval: heartbeat,
        },
        cfg(0.0),
    )];
    let jitter = if p.maintenance_interval.is_zero() {
        0.0
    } else {
        (p.maintenance_jitter.as_secs_f64() / p.maintenance_interval.as_secs_f64()).min(1.0)
    };
    type CommandLoop = (&'static str, Duration, f64, fn() -> ShardCmd);
    let commands: [CommandLoop; 2] = [
        ("maintenance", p.maintenance_interval, jitter, || {
            ShardCmd::Maintenance
        }),
        ("seen_cleanup", CLEANUP_EVERY, 0.1, || ShardCmd::Cleanup),
    ];
    for (name, interval, jitter, command) in commands {
        if interval.is_zero() {
            continue;
        }
        handles.push(mgr.add(
            ShardCommandLoop {
                state: state.clone(),
                name,
                interval,
                command,
            },
            cfg(jitter),
        ));
    }
    handles.push(mgr.add(
        StatsLoop {
            state: state.clone(),
            sock: sock.clone(),
        },
        cfg(0.0),
    ));
    state.borrow_mut().loops = handles;
    mgr.start_all();
    while !shared.stop_requested() {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    // Shutdown: loops in reverse start order, then tell neighbours we leave, then stop
    // the shards and the receive path.
    let stopped = mgr.stop_all(Duration::from_secs(1)).await;
    debug!(stopped, "control loops stopped");
    let (leave, targets) = {
        let mut s = state.borrow_mut();
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
    let _ = sup.stop().await;
    info!("control core stopped");
}
