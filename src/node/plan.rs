//! What the executors, the admin backend and the runtime's starter share: the
//! runtime's config, the commands and reports that cross executor threads, the
//! peer layout and the state every thread holds (`Shared`). It sits below all of
//! them, so that each executor imports it and none imports another.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Sender;

use super::client_port::ClientPortStats;
use super::net::socket::{FaultConfig, FaultSwitch};
use super::ratelimit::RateLimitConfig;
use super::retention::LogGauges;
use super::seeds::Seed;
use super::snapshot::{LoopControlRefused, LoopInfo, NameBook, NodeSnapshot, ShardSnapshot};
use super::subscribe::Subscribers;
use super::wake::{Doorbell, Queue};
use crate::ids::{MessageId, NodeId};
use crate::protocol::ProtocolConfig;
use crate::topic::Topic;
use crate::wire::auth::ClusterKeys;

/// Bound of each control-to-shard command queue.
pub(crate) const SHARD_QUEUE: usize = 1 << 16;

/// What the runtime needs to know; built from the node config and the core map.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Control socket address; shard `k` binds port + 1 + k.
    pub bind: SocketAddr,
    /// Seeds as configured; names are resolved by the control core's
    /// [`super::seeds::SeedResolver`].
    pub seeds: Vec<Seed>,
    /// Core of each shard (`None`: not pinned).
    pub shard_cores: Vec<Option<usize>>,
    /// Core of the control executor (`None`: not pinned).
    pub control_core: Option<usize>,
    /// HyParView heartbeat period, used by [`start`](super::runtime::start) (the rest of the membership
    /// tunables at their defaults); [`start_with`](super::runtime::start_with) takes a whole
    /// [`MembershipConfig`](crate::membership::MembershipConfig) instead and ignores this.
    pub heartbeat_interval: Duration,
    /// HyParView failure timeout, used by [`start`](super::runtime::start); see `heartbeat_interval`.
    pub failure_timeout: Duration,
    /// `SO_RCVBUF` asked for every UDP socket, in bytes (the kernel caps it).
    pub recv_buffer: usize,
    /// `SO_SNDBUF` asked for every UDP socket, in bytes (the kernel caps it).
    pub send_buffer: usize,
    /// Largest datagram sent, in bytes, auth trailer included; also sizes the
    /// receive buffers.
    pub mtu: usize,
    /// The Plumtree tunables every shard runs with.
    pub protocol: ProtocolConfig,
    /// Test-only fault injection (`--chaos`): lets the admin plane make a loop panic.
    pub chaos: bool,
    /// Cluster keys: when set, every datagram sent is sealed and every datagram
    /// received must verify before it is decoded. `None`: the cluster is open.
    pub cluster_keys: Option<ClusterKeys>,
    /// This node's name, sent in a NodeName frame beside its Join, Neighbor and
    /// NeighborReply frames; `None` sends none.
    pub node_name: Option<String>,
    /// The control address this node puts in its membership frames (shard `k` at
    /// its port + 1 + k). `None`: the bind address, or for a wildcard bind the
    /// address of the interface that routes to the first seed.
    pub advertise: Option<SocketAddr>,
    /// Whether the operator chose `node_name` (else it is the hostname default, which
    /// other nodes on the host share: duplicates of it are not refused).
    pub node_name_chosen: bool,
    /// Where learned names go (shared with the deliveries writer).
    pub names: NameBook,
}

/// Current UNIX time in milliseconds, for auth timestamps; only read when the cluster
/// is keyed, and never inside `wire::auth`, which stays sans-IO. The receive paths
/// read it at most once per received batch (the shard's `Clock`, the control core's
/// receive loop), the shard's sends once per outgoing batch, and the control core's
/// sends once per sealed datagram.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Largest datagram the builders may emit: the MTU, less the auth trailer when
/// datagrams are sealed, so sealed datagrams still fit the configured MTU.
pub(crate) fn build_mtu(mtu: usize, keyed: bool) -> usize {
    if keyed {
        mtu.saturating_sub(crate::wire::auth::TRAILER_LEN)
    } else {
        mtu
    }
}

/// Commands the control core (or the admin plane) sends a shard.
#[derive(Debug)]
pub enum ShardCmd {
    /// Membership gained a neighbour: the shard adds it to its eager set.
    NeighborUp {
        /// The neighbour's id.
        peer: NodeId,
        /// Its control address; its shard `k` is at port + 1 + k.
        control: SocketAddr,
        /// How many shards it runs.
        shards: u16,
    },
    /// Membership lost a neighbour: the shard drops it from its peer sets.
    NeighborDown {
        /// The neighbour's id.
        peer: NodeId,
    },
    /// Broadcast a message that originates here (the shard delivers it locally too).
    Broadcast {
        /// The id the node gave it.
        id: MessageId,
        /// Its topic.
        topic: Topic,
        /// Its payload.
        payload: Bytes,
    },
    /// Run one eager-set repair now (the control core's `maintenance` loop).
    Maintenance,
    /// Run one TTL cleanup slice now (the control core's `seen_cleanup` loop).
    Cleanup,
    /// Flush the queued IHaves and stop the shard's loops.
    Shutdown,
    /// Test-only (`--chaos`): panic the named loop once.
    ChaosPanic(String),
}

/// A pause or resume of a control-core loop, asked by the admin plane; the control
/// core answers on `reply` once the change is applied and published.
#[derive(Debug)]
pub(crate) struct LoopCmd {
    pub name: String,
    pub pause: bool,
    pub reply: Sender<Result<LoopInfo, LoopControlRefused>>,
}

/// Tasks one executor had when shutdown began and how many of them were still
/// running at its deadline (then cancelled).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ExecutorStop {
    pub initial: usize,
    pub remaining: usize,
}

/// What shards report back.
#[derive(Debug)]
pub(crate) enum ShardReport {
    Snapshot(Box<ShardSnapshot>),
}

/// State shared between the control core, the shards' supervisors, the admin plane
/// and `RunningNode` (none of it on the per-message path).
pub(crate) struct Shared {
    pub node_id: NodeId,
    pub addr: SocketAddr,
    pub partitions: u32,
    pub max_payload: usize,
    /// Bytes one datagram has for a message's topic and payload together.
    pub max_message: usize,
    /// The client port's counters (zero while it is off).
    pub client_port: Arc<ClientPortStats>,
    /// The deliveries file's log, once the embedding node says where it is.
    pub delivery_log: std::sync::OnceLock<Arc<LogGauges>>,
    pub started: Instant,
    pub shutting_down: AtomicBool,
    /// Set by shutdown, which then rings `control_bell`.
    pub stop: AtomicBool,
    /// Wakes the control core's main task (it sleeps until `stop`).
    pub control_bell: Arc<Doorbell>,
    pub next_seq: AtomicU64,
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    /// Command queue of each shard; a send wakes the shard only if it sleeps.
    pub shard_tx: Vec<Queue<ShardCmd>>,
    pub snapshot: Mutex<NodeSnapshot>,
    /// Tasks whose supervisor gave up; a critical one makes the node exit non-zero.
    pub degraded: Mutex<Vec<String>>,
    pub fatal: Mutex<Option<String>>,
    /// Loop names to panic (only with `--chaos`).
    pub chaos_tx: Option<Sender<String>>,
    /// The fault layer's settings (only with `--chaos`).
    pub faults: Option<Arc<FaultSwitch>>,
    /// Loop pause/resume requests to the control core (bounded).
    pub loop_tx: Sender<LoopCmd>,
    /// Shutdown task counts per executor: index 0 is the control core, 1 + k shard k.
    pub stops: Mutex<Vec<Option<ExecutorStop>>>,
    /// The deliveries thread's library subscriptions, if it feeds any (for their
    /// metrics).
    pub subscribers: Option<Subscribers>,
}

impl Shared {
    /// The node snapshot the admin plane reads (a panic while it was held does not
    /// make it unreadable: the snapshot is plain data, rewritten whole each period).
    pub fn snapshot(&self) -> std::sync::MutexGuard<'_, NodeSnapshot> {
        self.snapshot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Executor `idx` (0 control, 1 + k shard k) finished its shutdown.
    pub fn note_stop(&self, idx: usize, stop: ExecutorStop) {
        let mut v = self.stops.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = v.get_mut(idx) {
            *slot = Some(stop);
        }
    }

    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Something the node cannot run without failed: the node reports it through
    /// `fatal` (the binary then exits non-zero, so systemd restarts it).
    pub fn fail(&self, reason: String) {
        let mut f = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        f.get_or_insert(reason);
    }

    /// A supervisor exceeded its restart intensity for `task`.
    pub fn degrade(&self, task: &str, critical: bool) {
        self.degraded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task.to_string());
        if critical {
            let mut f = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
            f.get_or_insert_with(|| {
                format!("critical task `{task}` exceeded its restart intensity")
            });
        }
    }
}

/// Settings of the node's defences and test-only faults, kept out of
/// [`RuntimeConfig`] so that its users that need none of them (benchmarks) are
/// unaffected; the default is the fault layer with no faults, no rate limit.
#[derive(Clone, Debug)]
pub struct Hardening {
    /// The fault layer's settings at start (only used with `RuntimeConfig::chaos`).
    pub faults: FaultConfig,
    /// Per-source flood limit on the shard sockets.
    pub rate_limit: RateLimitConfig,
}

impl Default for Hardening {
    fn default() -> Self {
        Hardening {
            faults: FaultConfig::default(),
            rate_limit: RateLimitConfig::OFF,
        }
    }
}
