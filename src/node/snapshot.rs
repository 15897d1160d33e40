//! Read-only views of a running node, assembled by the control core from per-shard
//! snapshots and served by the admin plane. Nothing here is on the hot path.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::ids::{MessageId, NodeId};
use crate::protocol::ShardStats;
pub use crate::tasks::{TaskCounters, TaskNameCounters};
use crate::topic::Topic;

pub use super::net::io_stats::IoStats;
/// The membership driver's views and counters, defined beside it in `membership`.
pub use crate::membership::snapshot::{MemberDriverStats, MemberInfo, MembershipSnapshot};

/// Most node names a [`NameBook`] keeps (the oldest learned is forgotten first).
pub const NAME_BOOK_CAPACITY: usize = 4096;

#[derive(Debug, Default)]
struct NameBookInner {
    names: HashMap<NodeId, Arc<str>>,
    order: VecDeque<NodeId>,
    evictions: u64,
}

/// Node names learned from NodeName frames (and this node's own), shared by the
/// control core, which fills it, and the readers: the admin views and the deliveries
/// writer (`origin_name`). Bounded at [`NAME_BOOK_CAPACITY`]; evictions are counted
/// (`plumtree_node_names_evictions_total`).
#[derive(Debug, Clone, Default)]
pub struct NameBook(Arc<RwLock<NameBookInner>>);

impl NameBook {
    /// The name of `id`, if known.
    pub fn get(&self, id: NodeId) -> Option<Arc<str>> {
        let g = self.0.read().unwrap_or_else(|p| p.into_inner());
        g.names.get(&id).cloned()
    }

    /// Records `id`'s name; true when it is new or changed. Cheap (a read lock) when
    /// nothing changes, which is the common case.
    pub fn insert(&self, id: NodeId, name: &str) -> bool {
        if self.get(id).is_some_and(|n| &*n == name) {
            return false;
        }
        let mut g = self.0.write().unwrap_or_else(|p| p.into_inner());
        if g.names.insert(id, Arc::from(name)).is_none() {
            g.order.push_back(id);
            while g.names.len() > NAME_BOOK_CAPACITY {
                let Some(old) = g.order.pop_front() else {
                    break;
                };
                g.names.remove(&old);
                g.evictions += 1;
            }
        }
        true
    }

    /// Names held now, and names forgotten to stay within the bound.
    pub fn stats(&self) -> (usize, u64) {
        let g = self.0.read().unwrap_or_else(|p| p.into_inner());
        (g.names.len(), g.evictions)
    }
}

/// One shard as the control core last saw it.
#[derive(Debug, Clone, Serialize)]
pub struct ShardSnapshot {
    /// The shard's index `k` (the `shard` label of its metrics).
    pub shard: usize,
    /// Core the shard is pinned to, if pinned.
    pub core: Option<usize>,
    /// The shard's socket address (the control port + 1 + k).
    pub addr: SocketAddr,
    /// The partitions this shard owns (those `p` with `p % shards == k`).
    pub partitions: Vec<u16>,
    /// Commands waiting in the shard's inbound cross-shard queue.
    pub command_queue: usize,
    /// The shard's Plumtree counters and gauges (its `plumtree_*{shard}` series).
    pub stats: ShardStats,
    /// The shard socket's counters.
    pub io: IoStats,
    /// Per neighbour (16-hex node id): partitions of this shard where it is eager, lazy.
    pub peer_links: Vec<(String, u32, u32)>,
    /// This shard's loops.
    pub loops: Vec<LoopInfo>,
    /// This shard's task tracker counters.
    pub tasks: TaskCounters,
    /// This shard's panics and restarts by task name.
    pub task_names: Vec<TaskNameCounters>,
    /// Delivery hop-count histogram: `hops[i]` deliveries with `i` hops (last bucket
    /// collects the rest).
    pub hops: Vec<u64>,
    /// Deliveries by topic (bounded; see [`super::topic_counts`]).
    pub topics: Vec<(String, u64)>,
}

/// A neighbour, as the control core tracks it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerInfo {
    /// Its node id, 16 hex digits.
    pub node_id: String,
    /// Its node name, once a NodeName frame from it arrived (`None` for nodes that
    /// predate names).
    pub name: Option<String>,
    /// The peer's control address; shard `k` listens on port + 1 + k.
    pub addr: SocketAddr,
    /// How many shards it runs.
    pub shards: u16,
    /// `active`, `suspect` or `left`.
    pub state: String,
    /// Milliseconds since a datagram last came from it; `u64::MAX` if none ever did.
    pub last_heard_ms_ago: u64,
    /// Partitions (over all local shards) where this peer is eager; a peer eager in
    /// any counts in `plumtree_eager_peers`.
    pub eager_partitions: u32,
    /// Partitions (over all local shards) where this peer is lazy; a peer lazy in
    /// any counts in `plumtree_lazy_peers`.
    pub lazy_partitions: u32,
}

/// Status of one background loop (field names from the loop-manager reference).
#[derive(Debug, Clone, Serialize)]
pub struct LoopInfo {
    /// The loop's name (the `loop` label of its metrics; `/loops/<name>/pause`).
    pub name: String,
    /// Disabled loops (an interval of 0 in the config) are listed, never started.
    pub enabled: bool,
    /// Its runner task is alive.
    pub running: bool,
    /// Paused by `POST /loops/<name>/pause`: alive but running no iterations.
    pub paused: bool,
    /// Nominal period between runs (before jitter or error backoff).
    pub interval_ms: u64,
    /// Runs made (`plumtree_loop_runs_total`).
    pub run_count: u64,
    /// Runs that failed (`plumtree_loop_errors_total`).
    pub error_count: u64,
    /// Failed runs since the last one that succeeded (drives the error backoff).
    pub consecutive_errors: u64,
    /// Runs that panicked (counted in `error_count` too).
    pub panic_count: u64,
    /// Mean duration of a run, in milliseconds.
    pub average_duration_ms: f64,
    /// End of the last run, UNIX time in milliseconds.
    pub last_run_time: Option<u64>,
    /// The last failed run's error message.
    pub last_error: Option<String>,
}

/// Everything `/status`, `/peers`, `/members` and `/metrics` show.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSnapshot {
    /// This node's id, 16 hex digits.
    pub node_id: String,
    /// The control address this node describes itself by in membership frames.
    pub advertise: Option<SocketAddr>,
    /// This node's name.
    pub node_name: Option<String>,
    /// Names held in the name book (`plumtree_node_names`).
    pub names_known: usize,
    /// Names the name book forgot to stay within its bound
    /// (`plumtree_node_names_evictions_total`).
    pub names_evicted: u64,
    /// Nodes refused because a live node already has their name
    /// (`plumtree_node_name_conflicts_total{side="refused"}`).
    pub name_conflicts_sent: u64,
    /// Refusals this node received for its own name
    /// (`plumtree_node_name_conflicts_total{side="received"}`).
    pub name_conflicts_received: u64,
    /// The control socket's bound address (`bind`).
    pub addr: SocketAddr,
    /// Milliseconds since the node started (`plumtree_uptime_seconds`).
    pub uptime_ms: u64,
    /// Shutdown has begun; no broadcast is accepted any more.
    pub shutting_down: bool,
    /// Each shard, by index.
    pub shards: Vec<ShardSnapshot>,
    /// The Plumtree neighbours (HyParView's active view with a known address), as
    /// `/peers` shows them.
    pub peers: Vec<PeerInfo>,
    /// Every loop: the control core's, then each shard's.
    pub loops: Vec<LoopInfo>,
    /// Control-socket counters (membership traffic).
    pub control_io: IoStats,
    /// Broadcasts accepted by the admin plane.
    pub broadcasts_accepted: u64,
    /// Broadcasts refused (too large, shutting down, queue full).
    pub broadcasts_refused: u64,
    /// Library subscriptions alive (`plumtree_subscribers`).
    pub subscribers: u64,
    /// Events library subscriptions were told they missed (part of
    /// `plumtree_subscriber_lagged_total`, with the client port's and the log's).
    pub subscriber_lagged: u64,
    /// Tasks whose supervisor exceeded its restart intensity (the node is degraded).
    pub degraded: Vec<String>,
    /// Task tracker counters, summed over the control core and every shard.
    pub tasks: TaskCounters,
    /// Panics and restarts by task name, over the control core and every shard.
    pub task_names: Vec<TaskNameCounters>,
    /// HyParView views and counters.
    pub membership: MembershipSnapshot,
    /// What the admin plane refused, by reason (filled in by the admin plane).
    pub admin: AdminRejected,
    /// The NATS-compatible client port's counters.
    pub client: ClientPortSnapshot,
    /// The deliveries file's retention log.
    pub delivery_log: DeliveryLogSnapshot,
}

/// The deliveries file's retention log: what it holds, what it dropped, and what its
/// reader missed (told with `{"lagged":N}` lines).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DeliveryLogSnapshot {
    /// Deliveries the log holds now (`plumtree_delivery_log_entries`).
    pub entries: u64,
    /// Bytes the log holds now (`plumtree_delivery_log_bytes`).
    pub bytes: u64,
    /// Deliveries dropped by age or by the byte bound, read or not
    /// (`plumtree_delivery_log_dropped_total`).
    pub dropped: u64,
    /// Deliveries the file's reader missed (part of `plumtree_subscriber_lagged_total`).
    pub lagged: u64,
}

/// Why `POST /broadcast` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BroadcastRefused {
    /// The payload is over `max_payload` (413).
    #[error("payload of {len} bytes exceeds max_payload {max}")]
    TooLarge {
        /// The payload's length, in bytes.
        len: usize,
        /// The node's `max_payload`, in bytes.
        max: usize,
    },
    /// The payload is within `max_payload`, but with its topic the message does not
    /// fit one datagram of the node's MTU (long topics take bytes off the payload).
    #[error("payload of {payload} bytes with topic of {topic} bytes exceeds the {max} bytes a datagram carries for both")]
    DoesNotFit {
        /// The payload's length, in bytes.
        payload: usize,
        /// The topic's length, in bytes.
        topic: usize,
        /// The bytes one datagram has for topic and payload together.
        max: usize,
    },
    /// Shutdown has begun (503).
    #[error("node is shutting down")]
    ShuttingDown,
    /// The owning shard's command queue is full (503 with `Retry-After`).
    #[error("shard queue is full")]
    Backpressure,
}

/// Why `POST /loops/<name>/pause` or `/resume` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoopControlRefused {
    /// No loop has the name given (404).
    #[error("no loop named `{0}`")]
    Unknown(String),
    /// The named loop is a shard's, which cannot be paused (409).
    #[error("loop `{0}` runs on a shard executor and drives its socket; it cannot be paused")]
    NotPausable(String),
    /// The control core did not apply the command within this time (503).
    #[error("the control core did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The control core's bounded loop-command queue is full (503).
    #[error("too many loop commands waiting for the control core; retry")]
    Busy,
    /// Shutdown has begun (503).
    #[error("node is shutting down")]
    ShuttingDown,
}

/// Why `POST /chaos/panic/<loop>` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChaosRefused {
    /// The node runs without `--chaos` (403).
    #[error("fault injection is disabled (start the node with --chaos)")]
    Disabled,
    /// No loop has the name given (404).
    #[error("no loop named `{0}`")]
    UnknownLoop(String),
}

/// What the admin plane needs from the running node.
pub trait AdminBackend: Send + Sync + 'static {
    /// Latest aggregated view.
    fn snapshot(&self) -> NodeSnapshot;
    /// Largest payload `POST /broadcast` accepts; larger bodies are refused (413)
    /// from their declared length, before they are read.
    fn max_payload(&self) -> usize {
        MAX_BROADCAST_BODY
    }
    /// Submits a broadcast on `topic`; returns the id it was given.
    fn broadcast(&self, topic: Topic, payload: Vec<u8>) -> Result<MessageId, BroadcastRefused>;
    /// Test-only fault injection: make a background loop panic once.
    fn inject_panic(&self, _loop_name: &str) -> Result<(), ChaosRefused> {
        Err(ChaosRefused::Disabled)
    }
    /// Pauses (`pause = true`) or resumes a loop by name; returns its status once the
    /// change is applied, so a `/status` read right after shows it.
    fn set_loop_paused(&self, name: &str, _pause: bool) -> Result<LoopInfo, LoopControlRefused> {
        Err(LoopControlRefused::Unknown(name.to_string()))
    }
    /// Test-only fault injection: the switch that sets drops, delays and cuts.
    fn faults(&self) -> Result<std::sync::Arc<super::net::socket::FaultSwitch>, ChaosRefused> {
        Err(ChaosRefused::Disabled)
    }
}

/// Message ids as the admin plane and the deliveries file print them: origin and seq,
/// 16 hex digits each.
pub fn id_hex(id: MessageId) -> String {
    format!("{:016x}{:016x}", id.origin.0, id.seq)
}

/// Most body bytes the JSON control routes (`/chaos/*`) read, and the default
/// `POST /broadcast` bound of a backend that does not name its `max_payload`.
pub const MAX_BROADCAST_BODY: usize = 64 * 1024 + 1;

/// Requests and connections the admin plane refused or cut, by reason (the series of
/// `plumtree_admin_rejected_total{reason}`), and the connections it holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AdminRejected {
    /// Request heads over `max_header_bytes` (431).
    pub header_too_large: u64,
    /// Connections that sent no complete request head within `header_timeout`
    /// (half-open, slow or idle keep-alive connections).
    pub header_timeout: u64,
    /// Bodies over the route's bound (413), declared or sent.
    pub body_too_large: u64,
    /// Bodies not sent within `body_timeout` (408).
    pub body_timeout: u64,
    /// Connections refused because `max_connections` were all inside a request.
    pub connections: u64,
    /// Connections closed, while waiting for a request, to make room for a new one.
    pub evicted: u64,
    /// Requests without the right bearer token (401).
    pub unauthorized: u64,
    /// Malformed requests hyper refused (400).
    pub bad_request: u64,
    /// Empty `POST /broadcast` bodies refused (400) without `allow_empty`.
    pub empty_payload: u64,
    /// Connections held now (a gauge, `plumtree_admin_connections`).
    pub open_connections: u64,
}

/// A copy of [`ClientPortStats`](super::client_port::ClientPortStats) for the snapshot.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ClientPortSnapshot {
    /// Where the port listens; `None` when off (or its default port was taken).
    pub listen: Option<SocketAddr>,
    /// Connections open now (`plumtree_client_connections`).
    pub connections: u64,
    /// Connections accepted since start, refused ones (over `max_clients`) included.
    pub accepted: u64,
    /// Messages clients published (`plumtree_client_messages_total{direction="in"}`).
    pub messages_in: u64,
    /// Messages written to subscribers' outboxes
    /// (`plumtree_client_messages_total{direction="out"}`).
    pub messages_out: u64,
    /// Bytes read from client connections.
    pub bytes_in: u64,
    /// Bytes written to client connections.
    pub bytes_out: u64,
    /// Messages not written to a connection because its outbox was full.
    pub lagged: u64,
    /// Times a connection was told it was a slow consumer.
    pub slow_consumers: u64,
    /// PUBs that met a full shard queue and were retried.
    pub pub_retries: u64,
    /// Subscriptions held now, over every connection (`plumtree_client_subscriptions`).
    pub subscriptions: u64,
    /// Connections closed with `-ERR`, by reason.
    pub errors: Vec<(String, u64)>,
}
