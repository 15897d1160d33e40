//! The thread-per-core runtime: one glommio executor per shard, each with its own UDP
//! socket (io_uring underneath) and its own `protocol::Shard`; one control executor
//! with the control socket (membership), the background loops and the stats
//! aggregation. Threads talk over bounded crossbeam channels; nothing on the
//! per-message path takes a lock.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{bounded, TrySendError};
use glommio::{LocalExecutorBuilder, Placement};
use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tracing::{info, warn};

use super::control::exec::run_control;
use super::control::state::ControlCtx;
use super::net::socket::FaultSwitch;
use super::plan::{build_mtu, LoopCmd, ShardReport, Shared, SHARD_QUEUE};
pub use super::plan::{Hardening, RuntimeConfig, ShardCmd};
use super::shard::exec::run_shard;
use super::shard::state::ShardCtx;
use super::sink::SinkSender;
use super::snapshot::{
    AdminBackend, BroadcastRefused, ChaosRefused, IoStats, LoopControlRefused, LoopInfo,
    NodeSnapshot,
};
use super::ticker::{TickTargets, WakeTicker};
use super::wake::{self, Doorbell};
use crate::ids::{shard_of, MessageId, NodeId};
use crate::membership::MembershipConfig;
use crate::topic::Topic;
use crate::wire::auth::{Sealer, Verifier};
use crate::wire::Header;

/// Why the runtime could not start.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// A UDP socket could not be bound (the port is taken, or the address is not
    /// this host's).
    #[error("cannot bind UDP {addr} ({role}): {source}")]
    Bind {
        /// The address it was bound to.
        addr: SocketAddr,
        /// Which socket: the control socket (`--bind`) or shard k (`--bind` port + 1 + k).
        role: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// An executor's thread (or the wake ticker's) could not be started.
    #[error("cannot start executor `{name}`: {reason}")]
    Executor {
        /// The executor's name (`control`, `shard-0`, `wake-ticker`).
        name: String,
        /// The operating system's error, as text.
        reason: String,
    },
    /// The runtime config is inconsistent; the message names the key at fault.
    #[error("{0}")]
    Config(String),
}

/// How long the admin plane waits for the control core to apply a loop command (it
/// looks at its queue every 20 ms).
const LOOP_CMD_TIMEOUT: Duration = Duration::from_secs(2);

/// The admin plane's view of a running node.
#[derive(Clone)]
pub struct NodeBackend(Arc<Shared>);

impl NodeBackend {
    /// The counters the client port keeps (shown in `/status` and `/metrics`).
    pub fn client_port_stats(&self) -> Arc<super::client_port::ClientPortStats> {
        self.0.client_port.clone()
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.0.node_id
    }

    /// Where the deliveries file's log reports (shown in `/status` and `/metrics`).
    pub fn set_delivery_log(&self, gauges: Arc<super::retention::LogGauges>) {
        let _ = self.0.delivery_log.set(gauges);
    }
}

impl AdminBackend for NodeBackend {
    fn snapshot(&self) -> NodeSnapshot {
        let mut s = self.0.snapshot().clone();
        s.uptime_ms = self.0.started.elapsed().as_millis() as u64;
        s.shutting_down = self.0.shutting_down.load(Ordering::Relaxed);
        s.broadcasts_accepted = self.0.accepted.load(Ordering::Relaxed);
        s.broadcasts_refused = self.0.refused.load(Ordering::Relaxed);
        s.client = self.0.client_port.load();
        if let Some(g) = self.0.delivery_log.get() {
            let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
            s.delivery_log = super::snapshot::DeliveryLogSnapshot {
                entries: r(&g.entries),
                bytes: r(&g.bytes),
                dropped: r(&g.dropped),
                lagged: r(&g.lagged),
            };
        }
        s.degraded = self
            .0
            .degraded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(subs) = &self.0.subscribers {
            s.subscribers = subs.count();
            s.subscriber_lagged = subs.lagged();
        }
        s
    }

    fn inject_panic(&self, loop_name: &str) -> Result<(), ChaosRefused> {
        let tx = self.0.chaos_tx.as_ref().ok_or(ChaosRefused::Disabled)?;
        // Loops, and the control core's supervised receive path (a restarted child).
        let known = loop_name == super::control::exec::CONTROL_RECEIVER
            || self.snapshot().loops.iter().any(|l| l.name == loop_name);
        if !known {
            return Err(ChaosRefused::UnknownLoop(loop_name.to_string()));
        }
        tx.try_send(loop_name.to_string())
            .map_err(|_| ChaosRefused::Disabled)
    }

    fn faults(&self) -> Result<Arc<FaultSwitch>, ChaosRefused> {
        self.0.faults.clone().ok_or(ChaosRefused::Disabled)
    }

    fn max_payload(&self) -> usize {
        self.0.max_payload
    }

    fn set_loop_paused(&self, name: &str, pause: bool) -> Result<LoopInfo, LoopControlRefused> {
        if self.0.stop.load(Ordering::Relaxed) {
            return Err(LoopControlRefused::ShuttingDown);
        }
        let (reply, answer) = bounded(1);
        let cmd = LoopCmd {
            name: name.to_string(),
            pause,
            reply,
        };
        match self.0.loop_tx.try_send(cmd) {
            // The control core sleeps between timers: wake it for the command.
            Ok(()) => self.0.control_bell.ring(),
            Err(TrySendError::Full(_)) => return Err(LoopControlRefused::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(LoopControlRefused::ShuttingDown),
        }
        answer
            .recv_timeout(LOOP_CMD_TIMEOUT)
            .map_err(|_| LoopControlRefused::Timeout(LOOP_CMD_TIMEOUT))?
    }

    fn broadcast(&self, topic: Topic, payload: Vec<u8>) -> Result<MessageId, BroadcastRefused> {
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
        if payload.len() + topic.len() > sh.max_message {
            return refuse(BroadcastRefused::DoesNotFit {
                payload: payload.len(),
                topic: topic.len(),
                max: sh.max_message,
            });
        }
        let id = MessageId {
            origin: sh.node_id,
            seq: sh.next_seq.fetch_add(1, Ordering::Relaxed),
        };
        let shard = shard_of(id.partition(sh.partitions), sh.shard_tx.len());
        let cmd = ShardCmd::Broadcast {
            id,
            topic,
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
    threads: Vec<(String, JoinHandle<()>)>,
    shard_addrs: Vec<SocketAddr>,
    /// Guards every executor against a lost wake-up (see [`super::ticker`]); stops
    /// when the node is dropped, after the executors.
    _ticker: WakeTicker,
}

/// What shutdown did (the statistics of the task-manager reference): tasks (loop
/// runners, supervisors and their children) over every executor, not threads.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ShutdownReport {
    /// `completed` when every task finished and every thread was joined in time,
    /// else `timeout`.
    pub status: &'static str,
    /// Tasks running when shutdown began.
    pub initial_tasks: usize,
    /// Of those, the tasks that finished before their executor's deadline.
    pub completed_tasks: usize,
    /// Of those, the tasks still running at the deadline (cancelled).
    pub remaining_tasks: usize,
    /// How long shutdown took, in seconds.
    pub duration_seconds: f64,
}

impl RunningNode {
    /// The admin plane's handle.
    pub fn backend(&self) -> NodeBackend {
        NodeBackend(self.shared.clone())
    }

    /// Set when a critical task exceeded its restart intensity: the node should stop
    /// and exit non-zero rather than run half-dead.
    pub fn fatal(&self) -> Option<String> {
        self.shared
            .fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
        // Tasks each executor runs now, in case one never reports its own count.
        let running: Vec<u64> = {
            let snap = self.shared.snapshot();
            let control = snap.tasks.running
                - snap
                    .shards
                    .iter()
                    .map(|s| s.tasks.running)
                    .sum::<u64>()
                    .min(snap.tasks.running);
            let mut v = vec![control];
            v.resize(self.threads.len(), 0);
            for s in &snap.shards {
                if let Some(slot) = v.get_mut(1 + s.shard) {
                    *slot = s.tasks.running;
                }
            }
            v
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.control_bell.ring();
        let threads = self.threads.len();
        let mut joined = 0;
        for (name, handle) in self.threads.into_iter().rev() {
            let deadline = started + timeout;
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if handle.is_finished() {
                if handle.join().is_err() {
                    warn!(thread = %name, "thread panicked during shutdown");
                }
                joined += 1;
            } else {
                warn!(thread = %name, "thread did not stop within the shutdown timeout");
            }
        }
        let stops = self
            .shared
            .stops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (mut initial, mut remaining) = (0usize, 0usize);
        for (i, stop) in stops.iter().enumerate() {
            match stop {
                Some(s) => {
                    initial += s.initial;
                    remaining += s.remaining.min(s.initial);
                }
                // An executor that never finished its shutdown: all its tasks remain.
                None => {
                    let n = running.get(i).copied().unwrap_or(0) as usize;
                    initial += n;
                    remaining += n;
                }
            }
        }
        ShutdownReport {
            status: if remaining == 0 && joined == threads {
                "completed"
            } else {
                "timeout"
            },
            initial_tasks: initial,
            completed_tasks: initial - remaining,
            remaining_tasks: remaining,
            duration_seconds: started.elapsed().as_secs_f64(),
        }
    }
}

fn bind_udp(addr: SocketAddr, role: &str, rcv: usize, snd: usize) -> Result<Socket, RuntimeError> {
    let err = |source| RuntimeError::Bind {
        addr,
        role: role.to_string(),
        source,
    };
    let sk =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max (tuning/sysctl.sh).
    let _ = sk.set_recv_buffer_size(rcv);
    let _ = sk.set_send_buffer_size(snd);
    // Bound here with socket2, not with glommio's `UdpSocket::bind`, which sets
    // SO_REUSEPORT; the executors take this socket over as it is (`UdpSocket::from`).
    // Without SO_REUSEPORT a second node on the same port fails to bind here instead
    // of silently splitting the port's traffic.
    sk.bind(&addr.into()).map_err(err)?;
    Ok(sk)
}

/// Starts the shards and the control core with the default membership tunables, except
/// `cfg.heartbeat_interval` and `cfg.failure_timeout`, and default [`Hardening`].
/// Sockets are bound before this returns, so a port clash is reported here.
pub fn start(cfg: RuntimeConfig, sink: SinkSender) -> Result<RunningNode, RuntimeError> {
    let membership = MembershipConfig {
        heartbeat_interval: cfg.heartbeat_interval,
        failure_timeout: cfg.failure_timeout,
        ..MembershipConfig::default()
    };
    start_with(cfg, membership, Hardening::default(), sink)
}

/// Starts the shards and the control core, which runs HyParView with `membership`,
/// with the [`Hardening`] settings.
pub fn start_with(
    cfg: RuntimeConfig,
    membership: MembershipConfig,
    hardening: Hardening,
    sink: SinkSender,
) -> Result<RunningNode, RuntimeError> {
    membership.validate().map_err(|e| {
        RuntimeError::Config(format!("config key `membership.{}`: {}", e.key, e.reason))
    })?;
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
    let header = Header::new(cfg.node_id, incarnation.as_secs() as u32);
    let port = |k: usize| -> Result<SocketAddr, RuntimeError> {
        let p = cfg.bind.port() as usize + 1 + k;
        u16::try_from(p)
            .map(|p| SocketAddr::new(cfg.bind.ip(), p))
            .map_err(|_| RuntimeError::Config(format!("config key `bind`: port {p} out of range")))
    };
    // Bind everything up front (std sockets), hand them to the executors.
    let control_sock = bind_udp(
        cfg.bind,
        "the control socket, --bind",
        cfg.recv_buffer,
        cfg.send_buffer,
    )?;
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
        let role = format!("shard {k}'s socket, --bind port + {}", k + 1);
        shard_socks.push(bind_udp(addr, &role, cfg.recv_buffer, cfg.send_buffer)?);
        shard_addrs.push(addr);
    }
    let (report_tx, report_rx) = bounded::<ShardReport>(1024);
    let mut shard_tx = Vec::with_capacity(n);
    let mut shard_rx = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = wake::queue(SHARD_QUEUE);
        shard_tx.push(tx);
        shard_rx.push(rx);
    }
    if let Some(name) = &cfg.node_name {
        cfg.names.insert(cfg.node_id, name);
    }
    // Decided once, before any executor runs, so /status shows it from the start.
    let seeds = Arc::new(super::seeds::SeedResolver::start(&cfg.seeds));
    let first_seed = if cfg.advertise.is_none() && bind.ip().is_unspecified() {
        seeds.first_addr(&cfg.seeds, Duration::from_secs(2))
    } else {
        None
    };
    let advertise = super::net::advertise::advertise_addr(cfg.advertise, bind, first_seed);
    let snapshot = NodeSnapshot {
        node_id: cfg.node_id.to_string(),
        node_name: cfg.node_name.clone(),
        advertise: Some(advertise),
        names_known: 0,
        names_evicted: 0,
        name_conflicts_sent: 0,
        name_conflicts_received: 0,
        addr: bind,
        uptime_ms: 0,
        shutting_down: false,
        shards: Vec::new(),
        peers: Vec::new(),
        loops: Vec::new(),
        control_io: IoStats::default(),
        broadcasts_accepted: 0,
        broadcasts_refused: 0,
        subscribers: 0,
        subscriber_lagged: 0,
        degraded: Vec::new(),
        tasks: Default::default(),
        task_names: Vec::new(),
        membership: Default::default(),
        admin: Default::default(),
        client: Default::default(),
        delivery_log: Default::default(),
    };
    let (loop_tx, loop_rx) = bounded(16);
    let (chaos_tx, chaos_rx) = if cfg.chaos {
        let (tx, rx) = bounded(64);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let shared = Arc::new(Shared {
        node_id: cfg.node_id,
        addr: bind,
        partitions: cfg.protocol.partitions,
        max_payload: cfg.protocol.max_payload,
        max_message: build_mtu(cfg.mtu, cfg.cluster_keys.is_some()).saturating_sub(
            crate::wire::HEADER_LEN
                + crate::wire::FRAME_PREFIX_LEN
                + crate::wire::GOSSIP_FIXED_LEN
                + 1,
        ),
        client_port: Default::default(),
        delivery_log: Default::default(),
        started,
        shutting_down: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        control_bell: Doorbell::new(),
        next_seq: AtomicU64::new(first_seq),
        accepted: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        shard_tx: shard_tx.clone(),
        snapshot: Mutex::new(snapshot),
        degraded: Mutex::new(Vec::new()),
        fatal: Mutex::new(None),
        chaos_tx,
        faults: cfg
            .chaos
            .then(|| Arc::new(FaultSwitch::new(hardening.faults.clone()))),
        loop_tx,
        stops: Mutex::new(vec![None; n + 1]),
        subscribers: sink.subscribers().cloned(),
    });
    let ticker = WakeTicker::start().map_err(|e| RuntimeError::Executor {
        name: "wake-ticker".into(),
        reason: e.to_string(),
    })?;
    // Benchmark knob: PLUMCORE_UDP_GSO=0 sends every datagram as its own message.
    let gso = std::env::var_os("PLUMCORE_UDP_GSO").is_none_or(|v| v != "0");
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
            shared: shared.clone(),
            // Stream k + 1 (control is 0); see `wire::auth::Sealer::new`.
            auth: cfg.cluster_keys.clone().map(|keys| {
                (
                    Sealer::new(keys.clone(), k as u8 + 1, first_seq),
                    Verifier::new(keys),
                )
            }),
            faults: shared.faults.clone(),
            rate_limit: hardening.rate_limit,
            gso,
        };
        let name = format!("shard-{k}");
        threads.push((
            name.clone(),
            spawn_executor(&name, ctx.core, ticker.targets(), move || {
                run_shard(ctx, sock, rx)
            })?,
        ));
    }
    let ctx = ControlCtx {
        auth: cfg
            .cluster_keys
            .clone()
            .map(|keys| (Sealer::new(keys.clone(), 0, first_seq), Verifier::new(keys))),
        cfg: RuntimeConfig {
            advertise: Some(advertise),
            ..cfg.clone()
        },
        membership,
        seeds,
        // Membership frames are the same in every wire version: sent as the oldest,
        // so a node that predates topics joins through this one and back.
        header: Header {
            version: crate::wire::MIN_VERSION,
            ..header
        },
        shared: shared.clone(),
        reports: report_rx,
        chaos: chaos_rx,
        loop_rx,
        faults: shared.faults.clone(),
    };
    threads.push((
        "control".into(),
        spawn_executor("control", cfg.control_core, ticker.targets(), move || {
            run_control(ctx, control_sock)
        })?,
    ));
    info!(node = %cfg.node_id, %bind, shards = n, "node started");
    Ok(RunningNode {
        shared,
        threads,
        shard_addrs,
        _ticker: ticker,
    })
}

/// Entries of each of an executor's io_uring rings (glommio's default: 128). An
/// executor has at most a handful of operations in flight (one readiness receive per
/// socket, a timer, the odd awaited send when the send buffer is full); the batches
/// themselves go through `recvmmsg`/`sendmmsg`, not the ring.
const EXECUTOR_RING_DEPTH: usize = 64;
/// Memory glommio pre-allocates and registers for its DMA buffers (default 10 MiB per
/// executor, all of it resident and locked). The node's socket I/O only uses these
/// buffers for the one-byte readiness peeks and for awaited sends when a send buffer
/// is full (larger requests fall back to the allocator), so glommio's minimum does.
const EXECUTOR_IO_MEMORY: usize = 64 << 10;
/// How long a task may run before `yield_if_needed` yields (glommio's default: 100
/// ms). Under a flood the receive path never runs out of datagrams; this bounds how
/// long a command (a broadcast) or a due timer waits for the tick loop. The timer is
/// only armed while tasks run, so an idle executor does not wake for it.
const EXECUTOR_PREEMPT: Duration = Duration::from_millis(1);

/// Runs `body` on its own thread inside a glommio executor placed on `core`.
fn spawn_executor<F, Fut>(
    name: &str,
    core: Option<usize>,
    guard: TickTargets,
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
    let builder = LocalExecutorBuilder::new(placement)
        .name(name)
        .ring_depth(EXECUTOR_RING_DEPTH)
        .io_memory(EXECUTOR_IO_MEMORY)
        .preempt_timer(EXECUTOR_PREEMPT);
    let name = name.to_string();
    let err_name = name.clone();
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || match builder.make() {
            Ok(ex) => ex.run(async move {
                glommio::spawn_local(super::ticker::serve(guard)).detach();
                body().await
            }),
            Err(e) => warn!(executor = %name, error = %e, "executor failed to start"),
        })
        .map_err(|e| RuntimeError::Executor {
            name: err_name,
            reason: e.to_string(),
        })
}
