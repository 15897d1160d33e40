//! The control core: HyParView membership over the control socket (driven by
//! [`MemberDriver`]) and the node's periodic work, each a supervised [`Loop`]:
//! membership timers, maintenance, seen-map cleanup scheduling and stats aggregation.
//! The receive path is a permanent child of a supervisor.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::Receiver;
use glommio::net::UdpSocket;
use rustc_hash::FxHashSet;
use socket2::Socket;
use tracing::{debug, error, info, warn};

use crate::membership::driver::{MemberDriver, Output};
use crate::membership::{MembershipConfig, Time};
use crate::node::net::socket::{FaultSwitch, NodeSocket, Turn};
use crate::node::net::udp::{slot_size, RX_BATCH};
use crate::node::plan::{
    build_mtu, unix_ms, ExecutorStop, LoopCmd, RuntimeConfig, ShardCmd, ShardReport, Shared,
};
use crate::node::seeds::SeedResolver;
use crate::node::snapshot::{
    IoStats, LoopControlRefused, LoopInfo, PeerInfo, ShardSnapshot, TaskNameCounters,
};
use crate::node::supervise::{executor_supervisor, loop_backoff, loop_info, sleep_or_wake};
use crate::protocol::host::{CLEANUP_EVERY, PERIOD_JITTER};
use crate::tasks::{
    Loop, LoopConfig, LoopError, LoopHandle, LoopManager, Notify, StopSignal, TaskTracker,
};
use crate::wire::auth::{Sealer, Verifier};
use crate::wire::{self, Header, MemberFrame};

/// How often stats are aggregated for the admin plane.
pub(crate) const STATS_EVERY: Duration = Duration::from_millis(250);
/// The longest the membership loop sleeps when no timer is armed.
const MEMBERSHIP_IDLE: Duration = Duration::from_secs(1);
/// Receive buffers of the control socket's pool.
const CONTROL_RX_BUFFERS: usize = 64;
/// Name of the control core's supervised receive path (a task name in metrics, and a
/// `--chaos` panic target).
pub(crate) const CONTROL_RECEIVER: &str = "control_receiver";
/// How often an idle receive path looks for an injected panic (`--chaos` only).
const CHAOS_POLL: Duration = Duration::from_millis(100);

/// What the control executor is started with.
pub(crate) struct ControlCtx {
    pub cfg: RuntimeConfig,
    /// The seeds' addresses, names resolved on their own thread.
    pub seeds: Arc<SeedResolver>,
    /// HyParView tunables (validated).
    pub membership: MembershipConfig,
    pub header: Header,
    pub shared: Arc<Shared>,
    pub reports: Receiver<ShardReport>,
    /// Loop names to panic once (test-only, `--chaos`).
    pub chaos: Option<Receiver<String>>,
    /// Loop pause/resume requests from the admin plane.
    pub loop_rx: Receiver<LoopCmd>,
    /// The control socket's own sealer (stream 0) and verifier when the cluster is
    /// keyed.
    pub auth: Option<(Sealer, Verifier)>,
    /// The fault layer's settings (test-only, `--chaos`).
    pub faults: Option<Arc<FaultSwitch>>,
}

struct ControlState {
    ctx: ControlCtx,
    members: MemberDriver,
    io: IoStats,
    loops: Vec<LoopHandle>,
    shards: Vec<Option<ShardSnapshot>>,
    chaos_pending: FxHashSet<String>,
    tracker: TaskTracker,
    /// Until when the membership loop sleeps (`None` while it runs); a datagram that
    /// arms an earlier timer pokes it through `wake`.
    membership_due: Option<Time>,
    wake: Notify,
    /// The resolver generation whose seed addresses the driver has.
    seed_generation: u64,
    /// Nodes refused because a live node already has their name, and refusals this
    /// node received for its own name; when the last warning about either was logged.
    name_conflicts_sent: u64,
    name_conflicts_received: u64,
    last_conflict_log: Option<std::time::Instant>,
}

/// A shard that has not reported once this long after the start never ran (the known
/// glommio start-up stall, docs/operations.md, "Known bug: an executor that never
/// runs"): the node fails loudly instead of serving its partitions from nowhere.
const SHARD_START_DEADLINE: Duration = Duration::from_secs(10);

/// The shards that never reported, once `since_start` has passed the deadline.
fn never_started<T>(reported: &[Option<T>], since_start: Duration) -> Vec<usize> {
    if since_start < SHARD_START_DEADLINE {
        return Vec::new();
    }
    reported
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_none())
        .map(|(k, _)| k)
        .collect()
}

/// Least time between two warnings about duplicate node names.
const CONFLICT_LOG_EVERY: Duration = Duration::from_secs(5);

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

    /// Applies a pause or resume from the admin plane to a control-core loop and
    /// republishes the loop list, so the next `/status` shows the new state.
    fn loop_command(&mut self, name: &str, pause: bool) -> Result<LoopInfo, LoopControlRefused> {
        let Some(h) = self.loops.iter().find(|h| h.name() == name) else {
            let on_shard = self
                .shards
                .iter()
                .flatten()
                .any(|s| s.loops.iter().any(|l| l.name == name));
            return Err(if on_shard {
                LoopControlRefused::NotPausable(name.to_string())
            } else {
                LoopControlRefused::Unknown(name.to_string())
            });
        };
        if pause {
            h.pause();
        } else {
            h.resume();
        }
        let info = loop_info(&h.status());
        let mut snap = self
            .ctx
            .shared
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(l) = snap.loops.iter_mut().find(|l| l.name == name) {
            *l = info.clone();
        }
        Ok(info)
    }

    /// A live node other than `sender` that goes by `name`: this node itself, or an
    /// active neighbour heard from within the failure timeout.
    fn live_holder(&self, name: &str, sender: crate::ids::NodeId) -> Option<crate::ids::NodeId> {
        let own = self.ctx.cfg.node_id;
        if sender == own {
            return None;
        }
        if self.ctx.cfg.node_name.as_deref() == Some(name) {
            return Some(own);
        }
        let now = self.now();
        let timeout = self.ctx.membership.failure_timeout;
        self.members.active().map(|(id, _, _)| id).find(|&id| {
            id != sender
                && self.ctx.cfg.names.get(id).is_some_and(|n| &*n == name)
                && self
                    .members
                    .last_heard(id)
                    .is_some_and(|t| now.saturating_sub(t) <= timeout)
        })
    }

    /// Whether a duplicate-name warning may be logged now (rate limit).
    fn conflict_log_due(&mut self) -> bool {
        let due = self
            .last_conflict_log
            .is_none_or(|t| t.elapsed() >= CONFLICT_LOG_EVERY);
        if due {
            self.last_conflict_log = Some(std::time::Instant::now());
        }
        due
    }

    fn tell_shards(&mut self, mk: impl Fn() -> ShardCmd) {
        for tx in &self.ctx.shared.shard_tx {
            if tx.try_send(mk()).is_err() {
                self.io.command_queue_full += 1;
            }
        }
    }

    /// Membership time: elapsed since the node started.
    fn now(&self) -> Time {
        self.ctx.shared.started.elapsed()
    }

    /// One datagram holding `frame`, sealed when the cluster is keyed. Frames that
    /// can make us someone's neighbour carry our NodeName frame beside them.
    fn datagram(&mut self, frame: &MemberFrame) -> Bytes {
        let mut d = wire::encode_member_datagram(&self.ctx.header, std::slice::from_ref(frame));
        // Our advertised address, in every datagram: behind a port mapping or NAT our
        // datagrams' source is not where peers reach us, and a NAT may rewrite the
        // source port of any of them (the driver's MTU leaves room for it).
        if let Some(a) = self.ctx.cfg.advertise {
            wire::member_frame::encode_advertise(a, &mut d);
        }
        if let Some(name) = &self.ctx.cfg.node_name {
            if matches!(
                frame,
                MemberFrame::Join { .. }
                    | MemberFrame::Neighbor { .. }
                    | MemberFrame::NeighborReply { .. }
            ) {
                wire::member_frame::encode_node_name_with(
                    name,
                    self.ctx.cfg.node_name_chosen,
                    &mut d,
                );
            }
        }
        match &mut self.ctx.auth {
            Some((sealer, _)) => sealer.seal_bytes(&d, unix_ms()),
            None => Bytes::from(d),
        }
    }

    /// Performs the driver's outputs that need no socket (neighbours to the shards)
    /// and returns the datagrams to send.
    fn apply(&mut self, outputs: Vec<Output>) -> Vec<(Bytes, SocketAddr)> {
        let mut sends = Vec::new();
        for o in outputs {
            match o {
                Output::Send { to, frame } => {
                    let d = self.datagram(&frame);
                    sends.push((d, to));
                }
                Output::NeighborUp {
                    peer,
                    control,
                    shards,
                } => {
                    info!(peer = %peer, %control, shards, "neighbour up");
                    self.tell_shards(|| ShardCmd::NeighborUp {
                        peer,
                        control,
                        shards,
                    });
                }
                Output::NeighborDown { peer } => {
                    info!(peer = %peer, "neighbour down");
                    self.tell_shards(|| ShardCmd::NeighborDown { peer });
                }
            }
        }
        sends
    }

    /// A datagram on the control socket (its frames are decoded from `buf`; an
    /// encrypted one is opened in a private copy, since pooled buffers are shared).
    /// Returns the datagrams to send in answer. `now` and `unix` are read once per
    /// receive batch.
    fn on_datagram(
        &mut self,
        buf: Bytes,
        src: SocketAddr,
        (now, unix): (Time, u64),
    ) -> Vec<(Bytes, SocketAddr)> {
        self.io.datagrams_received += 1;
        self.io.bytes_received += buf.len() as u64;
        // Authenticate before decoding anything; only the MAC'd part is decoded.
        let bytes = match &mut self.ctx.auth {
            Some((_, verifier)) => match verifier.open_bytes(buf, unix) {
                Ok(b) => b,
                Err(e) => {
                    self.io.count_auth_failure(e);
                    return Vec::new();
                }
            },
            None => buf,
        };
        if let Some((holder, name)) = wire::member_frame::read_name_conflict(&bytes) {
            self.name_conflicts_received += 1;
            if self.conflict_log_due() {
                error!(
                    name = %name,
                    holder = %holder,
                    refused_by = %src,
                    "this node's name is already used by a live node, so the cluster refuses it: start it with another --node-name"
                );
            }
            return Vec::new();
        }
        let dg = match wire::decode_members(&bytes) {
            Ok(dg) => dg,
            Err(e) => {
                self.io.count_decode_error(e.reason());
                return Vec::new();
            }
        };
        self.io.unknown_frames += dg.skipped_unknown as u64;
        if let Some((name, chosen)) = wire::member_frame::read_node_name_with(&bytes) {
            // Only a name the operator chose is refused when taken: the hostname
            // default is shared by every node on a host.
            let holder = chosen
                .then(|| self.live_holder(&name, dg.header.sender))
                .flatten();
            if let Some(holder) = holder {
                // The newcomer is refused: nothing it sent is processed, and it is told.
                self.name_conflicts_sent += 1;
                if self.conflict_log_due() {
                    warn!(
                        name = %name,
                        refused = %dg.header.sender,
                        from = %src,
                        holder = %holder,
                        "refusing a node whose name is already used by a live node"
                    );
                }
                let mut d = wire::encode_member_datagram(&self.ctx.header, &[]);
                wire::member_frame::encode_name_conflict(holder, &name, &mut d);
                let d = match &mut self.ctx.auth {
                    Some((sealer, _)) => sealer.seal_bytes(&d, unix_ms()),
                    None => Bytes::from(d),
                };
                return vec![(d, src)];
            }
            if self.ctx.cfg.names.insert(dg.header.sender, &name) {
                info!(peer = %dg.header.sender, name = %name, "node name learned");
            }
        }
        let advertised = wire::member_frame::read_advertise(&bytes);
        let out =
            self.members
                .on_frames_advertised(now, dg.header.sender, src, advertised, dg.frames);
        self.apply(out)
    }

    /// Wakes the membership loop if a datagram armed a timer before its wake-up.
    fn poke_membership(&self) {
        if let (Some(planned), Some(next)) = (self.membership_due, self.members.next_due()) {
            if next < planned {
                self.wake.notify_all();
            }
        }
    }

    /// Fires due membership timers.
    fn tick(&mut self) -> Vec<(Bytes, SocketAddr)> {
        let now = self.now();
        let (generation, addrs) = self.ctx.seeds.current();
        if generation != self.seed_generation {
            self.seed_generation = generation;
            self.members.set_seeds(&addrs);
        }
        let joins = self.members.seed_joins_sent();
        let out = self.members.tick(now);
        if self.members.seed_joins_sent() != joins {
            // A join attempt went out: look the names up again for the next one.
            self.ctx.seeds.kick();
        }
        self.members
            .set_seed_resolve_failures(self.ctx.seeds.failures());
        self.apply(out)
    }

    fn publish(&mut self) {
        while let Ok(ShardReport::Snapshot(s)) = self.ctx.reports.try_recv() {
            let k = s.shard;
            if k < self.shards.len() {
                self.shards[k] = Some(*s);
            }
        }
        let now = self.now();
        let stalled = never_started(&self.shards, now);
        let failed = self
            .ctx
            .shared
            .fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        if !stalled.is_empty() && !failed {
            let reason = format!(
                "shard(s) {stalled:?} never started within {SHARD_START_DEADLINE:?} (their executors did not run: the known start-up stall); restart the node"
            );
            error!("{reason}");
            self.ctx.shared.fail(reason);
        }
        let shards: Vec<ShardSnapshot> = self.shards.iter().flatten().cloned().collect();
        let peers = self
            .members
            .active()
            .filter_map(|(id, addr, n)| Some((id, addr?, n)))
            .map(|(id, addr, n)| {
                let hex = id.to_string();
                let (eager, lazy) = shards
                    .iter()
                    .flat_map(|s| s.peer_links.iter())
                    .filter(|(h, _, _)| *h == hex)
                    .fold((0, 0), |a, (_, e, l)| (a.0 + e, a.1 + l));
                PeerInfo {
                    name: self.ctx.cfg.names.get(id).map(|n| n.to_string()),
                    node_id: hex,
                    addr,
                    shards: n,
                    state: "active".into(),
                    last_heard_ms_ago: self
                        .members
                        .last_heard(id)
                        .map_or(u64::MAX, |t| now.saturating_sub(t).as_millis() as u64),
                    eager_partitions: eager,
                    lazy_partitions: lazy,
                }
            })
            .collect();
        let mut membership = self.members.snapshot(now);
        let names = &self.ctx.cfg.names;
        for m in membership
            .active
            .iter_mut()
            .chain(membership.passive.iter_mut())
            .chain(membership.lost.iter_mut())
        {
            m.name = u64::from_str_radix(&m.node_id, 16)
                .ok()
                .and_then(|id| names.get(crate::ids::NodeId(id)))
                .map(|n| n.to_string());
        }
        if let Some(own) = &self.ctx.cfg.node_name {
            // Keep our own name in the book (deliveries of our own broadcasts).
            names.insert(self.ctx.cfg.node_id, own);
        }
        let (names_known, names_evicted) = names.stats();
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
        snap.names_known = names_known;
        snap.name_conflicts_sent = self.name_conflicts_sent;
        snap.name_conflicts_received = self.name_conflicts_received;
        snap.names_evicted = names_evicted;
        snap.tasks = tasks;
        snap.task_names = merge_task_names(
            self.tracker.by_name(),
            shards.iter().flat_map(|s| s.task_names.iter()),
        );
        snap.shards = shards;
        snap.peers = peers;
        snap.membership = membership;
        snap.loops = loops;
        snap.control_io = self.io;
    }
}

/// The address a node describes itself by: `configured`, else `bind` unless that
/// is a wildcard, else the local address of the interface that routes to the first
/// seed (asked of the kernel with an unconnected-then-connected UDP socket; nothing
/// is sent), with the bind port.
pub(crate) fn advertise_addr(
    configured: Option<SocketAddr>,
    bind: SocketAddr,
    first_seed: Option<SocketAddr>,
) -> SocketAddr {
    if let Some(a) = configured {
        return a;
    }
    if !bind.ip().is_unspecified() {
        return bind;
    }
    let routed = first_seed.and_then(|seed| {
        let probe = std::net::UdpSocket::bind(SocketAddr::new(bind.ip(), 0)).ok()?;
        probe.connect(seed).ok()?;
        probe.local_addr().ok().map(|a| a.ip())
    });
    match routed {
        Some(ip) if !ip.is_unspecified() => SocketAddr::new(ip, bind.port()),
        _ => {
            tracing::warn!(%bind, "wildcard bind with no seed to route to and no --advertise: peers learn this node's address only from its datagrams' source");
            bind
        }
    }
}

/// Sums per-name task counters from several trackers (the control core's and each
/// shard's), keyed by name.
fn merge_task_names<'a>(
    mut acc: Vec<TaskNameCounters>,
    more: impl Iterator<Item = &'a TaskNameCounters>,
) -> Vec<TaskNameCounters> {
    for c in more {
        match acc.iter_mut().find(|a| a.task == c.task) {
            Some(a) => {
                a.panics += c.panics;
                a.restarts += c.restarts;
            }
            None => acc.push(c.clone()),
        }
    }
    acc.sort_by(|a, b| a.task.cmp(&b.task));
    acc
}

/// Panics when `--chaos` asked this loop to (checked before touching any state).
fn chaos_point(state: &RefCell<ControlState>, name: &str) {
    if state.borrow_mut().chaos_take(name) {
        panic!("chaos: injected panic in loop `{name}`");
    }
}

/// Sends the datagrams the membership driver asked for, batched.
async fn send_all(
    state: &RefCell<ControlState>,
    sock: &NodeSocket,
    sends: Vec<(Bytes, SocketAddr)>,
) {
    if sends.is_empty() {
        return;
    }
    let mut items: Vec<(SocketAddr, Bytes)> = sends.into_iter().map(|(d, to)| (to, d)).collect();
    let r = sock.send_batch(&mut items).await;
    let mut s = state.borrow_mut();
    s.io.datagrams_sent += r.datagrams;
    s.io.bytes_sent += r.bytes;
    s.io.send_errors += r.errors;
}

/// Fires due HyParView timers (heartbeats, probes, shuffles, join retries) and
/// sends what they produce.
struct MembershipLoop {
    state: Rc<RefCell<ControlState>>,
    sock: Rc<NodeSocket>,
}

impl Loop for MembershipLoop {
    fn name(&self) -> &str {
        "membership"
    }
    /// The longest the loop sleeps with no timer armed.
    fn interval(&self) -> Duration {
        MEMBERSHIP_IDLE
    }
    async fn run_once(&mut self) -> Result<(), LoopError> {
        chaos_point(&self.state, "membership");
        let sends = self.state.borrow_mut().tick();
        send_all(&self.state, &self.sock, sends).await;
        Ok(())
    }
    /// Sleeps until the earliest membership timer (or join retry) is due, or until
    /// the receive path armed an earlier one.
    async fn idle(&mut self, delay: Duration, failing: bool) {
        if failing {
            glommio::timer::sleep(delay).await;
            return;
        }
        let (wait, poke) = {
            let mut s = self.state.borrow_mut();
            let now = s.now();
            let due = s
                .members
                .next_due()
                .unwrap_or(now + MEMBERSHIP_IDLE)
                .min(now + MEMBERSHIP_IDLE);
            s.membership_due = Some(due);
            (due.saturating_sub(now), s.wake.notified())
        };
        sleep_or_wake(wait, poke).await;
        let mut s = self.state.borrow_mut();
        s.membership_due = None;
        s.io.wakeups += 1;
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
    sock: Rc<NodeSocket>,
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
        s.io.wakeups += 1;
        let mut io = s.io;
        self.sock.fill_stats(&mut io);
        s.io = io;
        s.publish();
        Ok(())
    }
}

/// The control socket's receive path, until `stop`: readiness, then batches.
async fn receive(
    state: Rc<RefCell<ControlState>>,
    sock: Rc<NodeSocket>,
    stop: StopSignal,
) -> Result<(), String> {
    let mut got = Vec::with_capacity(RX_BATCH);
    let mut more = false;
    while !stop.is_set() {
        // `--chaos` only: a panic here is caught by the supervisor, which restarts
        // the receive path (counted in plumtree_task_restarts_total).
        if state.borrow().ctx.chaos.is_some() {
            chaos_point(&state, CONTROL_RECEIVER);
        }
        // `--chaos` only: look at injected panics now and then, so one fires on an
        // idle socket too.
        let poll = state.borrow().ctx.chaos.is_some().then_some(CHAOS_POLL);
        match sock.receive_turn(&mut got, &mut more, &stop, poll).await {
            Turn::Stopped => break,
            Turn::Ready { woke } => {
                if woke {
                    state.borrow_mut().io.wakeups += 1;
                }
            }
        }
        if got.is_empty() {
            continue;
        }
        let sends = {
            let mut s = state.borrow_mut();
            // One clock read per batch.
            let unix = if s.ctx.auth.is_some() { unix_ms() } else { 0 };
            let now = s.now();
            let mut sends = Vec::new();
            for r in got.drain(..) {
                if r.oversized {
                    s.io.datagrams_received += 1;
                    s.io.rx_oversized += 1;
                    continue;
                }
                sends.extend(s.on_datagram(r.data, r.from, (now, unix)));
            }
            s.poke_membership();
            sends
        };
        send_all(&state, &sock, sends).await;
        glommio::yield_if_needed().await;
    }
    Ok(())
}

pub(crate) async fn run_control(ctx: ControlCtx, sock: Socket) {
    let sock = UdpSocket::from(sock);
    let sock = Rc::new(NodeSocket::new(
        sock,
        ctx.faults.clone(),
        ctx.cfg.node_id.0,
        (slot_size(ctx.cfg.mtu), CONTROL_RX_BUFFERS, true),
    ));
    let n = ctx.cfg.shard_cores.len();
    let seed = ctx.cfg.node_id.0;
    let p = ctx.cfg.protocol.clone();
    let shared = ctx.shared.clone();
    let (seed_generation, seed_addrs) = ctx.seeds.current();
    // Decided by the runtime before any executor started (`advertise_addr`).
    let advertise = ctx.cfg.advertise.unwrap_or(shared.addr);
    info!(%advertise, bind = %shared.addr, "advertising control address");
    let members = match MemberDriver::new(
        ctx.cfg.node_id,
        advertise,
        n as u16,
        build_mtu(ctx.cfg.mtu, ctx.auth.is_some())
            .saturating_sub(wire::member_frame::ADVERTISE_FRAME_LEN),
        ctx.membership.clone(),
        &seed_addrs,
        seed ^ 0x6d65_6d62_6572_7321,
    ) {
        Ok(m) => m,
        Err(e) => {
            // Validated at start-up; reaching this is a bug, so stop the node loudly.
            error!(error = %e, "membership config rejected");
            shared.degrade("membership", true);
            return;
        }
    };
    let state = Rc::new(RefCell::new(ControlState {
        ctx,
        members,
        io: IoStats::default(),
        loops: Vec::new(),
        shards: vec![None; n],
        chaos_pending: FxHashSet::default(),
        name_conflicts_sent: 0,
        name_conflicts_received: 0,
        last_conflict_log: None,
        tracker: TaskTracker::default(),
        membership_due: None,
        wake: Notify::new(),
        seed_generation,
    }));
    let tracker = state.borrow().tracker.clone();
    // The receive path: a permanent, critical child.
    let sup = {
        let (state, sock) = (state.clone(), sock.clone());
        executor_supervisor(
            "control",
            CONTROL_RECEIVER.into(),
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
    let first = {
        let mut s = state.borrow_mut();
        let now = s.now();
        let out = s.members.start(now);
        s.apply(out)
    };
    send_all(&state, &sock, first).await;
    let mut handles = vec![mgr.add(
        MembershipLoop {
            state: state.clone(),
            sock: sock.clone(),
        },
        cfg(0.0),
    )];
    // Each maintenance period is `maintenance_interval + random(0, maintenance_jitter)`
    // (LoopConfig::jitter is that extra wait as a fraction of the interval).
    let jitter = if p.maintenance_interval.is_zero() {
        0.0
    } else {
        p.maintenance_jitter.as_secs_f64() / p.maintenance_interval.as_secs_f64()
    };
    type CommandLoop = (&'static str, Duration, f64, fn() -> ShardCmd);
    let commands: [CommandLoop; 2] = [
        ("maintenance", p.maintenance_interval, jitter, || {
            ShardCmd::Maintenance
        }),
        // Every shard host's cleanup cadence, as the simulator's hosts run it.
        ("seen_cleanup", CLEANUP_EVERY, PERIOD_JITTER, || {
            ShardCmd::Cleanup
        }),
    ];
    for (name, interval, jitter, command) in commands {
        // An interval of 0 disables the loop: it is listed (enabled: false), never run.
        let enabled = !interval.is_zero();
        handles.push(mgr.add(
            ShardCommandLoop {
                state: state.clone(),
                name,
                interval,
                command,
            },
            LoopConfig {
                enabled,
                ..cfg(jitter)
            },
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
    // Sleeps until `RunningNode::shutdown` sets `stop` or the admin plane queues a
    // loop command; both ring the doorbell.
    loop {
        shared
            .control_bell
            .wait(|| shared.stop_requested() || !state.borrow().ctx.loop_rx.is_empty())
            .await;
        if shared.stop_requested() {
            break;
        }
        let cmds: Vec<LoopCmd> = state.borrow().ctx.loop_rx.try_iter().collect();
        for cmd in cmds {
            let answer = state.borrow_mut().loop_command(&cmd.name, cmd.pause);
            if let Ok(info) = &answer {
                info!(loop_name = %info.name, paused = info.paused, "loop state changed over the admin plane");
            }
            let _ = cmd.reply.try_send(answer);
        }
    }
    let initial_tasks = tracker.active_count();
    // Shutdown: loops in reverse start order, then leave the cluster (Disconnect to
    // every active neighbour, so they repair at once), then stop the shards and the
    // receive path.
    let stopped = mgr.stop_all(Duration::from_secs(1)).await;
    debug!(stopped, "control loops stopped");
    let leave = {
        let mut s = state.borrow_mut();
        let now = s.now();
        let out = s.members.leave(now);
        s.apply(out)
    };
    info!(neighbours = leave.len(), "leaving the cluster");
    send_all(&state, &sock, leave).await;
    state.borrow_mut().tell_shards(|| ShardCmd::Shutdown);
    let _ = sup.stop().await;
    // Whatever did not stop with its loop or supervisor is cancelled here.
    let drained = tracker.shutdown(Duration::from_millis(200)).await;
    shared.note_stop(
        0,
        ExecutorStop {
            initial: initial_tasks,
            remaining: drained.remaining_tasks,
        },
    );
    info!("control core stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_silent_past_the_start_deadline_never_started() {
        let reported = [Some(()), None, Some(()), None];
        assert!(never_started(&reported, Duration::from_secs(9)).is_empty());
        assert_eq!(never_started(&reported, SHARD_START_DEADLINE), vec![1, 3]);
        assert!(never_started(&[Some(()), Some(())], Duration::from_secs(60)).is_empty());
    }
}
