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

/// Socket-level counters a shard keeps next to its protocol counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IoStats {
    pub datagrams_received: u64,
    pub datagrams_sent: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Datagrams dropped because they failed to decode, by `DecodeError::reason()`.
    pub decode_errors_too_short: u64,
    pub decode_errors_bad_magic: u64,
    pub decode_errors_unsupported_version: u64,
    pub decode_errors_truncated: u64,
    pub decode_errors_bad_length: u64,
    pub decode_errors_no_frames: u64,
    pub decode_errors_digest_too_large: u64,
    pub decode_errors_bad_topic: u64,
    /// Datagrams dropped by cluster authentication (before decoding), by
    /// `AuthError::reason()`; always 0 without a cluster key.
    pub auth_failures_missing: u64,
    pub auth_failures_bad_mac: u64,
    pub auth_failures_stale: u64,
    pub auth_failures_replay: u64,
    /// Frames with tags this build does not know, skipped.
    pub unknown_frames: u64,
    /// Datagrams from senders that are not neighbours.
    pub unknown_senders: u64,
    /// IHave and Digest frames from senders that are not neighbours, dropped (a
    /// Graft to them could not be routed).
    pub ihave_unknown_sender: u64,
    pub send_errors: u64,
    /// Commands from the control core a shard's queue could not take (dropped; the
    /// next periodic command of the kind takes its place).
    pub command_queue_full: u64,
    /// Deliveries the delivery queue refused (the writer was behind); readers are
    /// told with a `{"lagged":N}` line and `Event::Lagged`.
    pub deliveries_lagged: u64,
    /// Rolling upgrades: datagrams received in wire version 1, Gossip frames whose
    /// topic a version-1 peer cannot carry, and version-1 addresses not remembered
    /// (the bounded map was full).
    pub wire_v1_datagrams: u64,
    pub topics_downgraded: u64,
    pub wire_v1_untracked: u64,
    /// Test-only fault layer (`--chaos`): datagrams dropped at random, duplicated,
    /// delayed, dropped by a cut link, and delays or duplicates not applied because
    /// the layer's bound was reached.
    pub chaos_dropped: u64,
    pub chaos_duplicated: u64,
    pub chaos_delayed: u64,
    pub chaos_cut: u64,
    pub chaos_overflow: u64,
    /// Datagrams dropped by the per-source flood limit; sources evicted from the
    /// limiter's bounded map; sources it tracks now (a gauge).
    pub rate_limited: u64,
    pub rate_limit_evictions: u64,
    pub rate_limit_peers: u64,
    /// Work shed while overloaded: IHave frames received, anti-entropy rounds; and
    /// backlog probes that found the shard overloaded.
    pub shed_ihave: u64,
    pub shed_anti_entropy: u64,
    pub overloaded: u64,
    /// Times the executor's receive path or timer/command loop woke from a sleep.
    pub wakeups: u64,
    /// Receive batches that found the buffer pool exhausted (served from fresh
    /// buffers).
    pub rx_buffer_exhausted: u64,
    /// Timed-out readiness waits that found datagrams waiting (lost wake-ups).
    pub rx_readiness_missed: u64,
    /// Datagrams larger than a receive buffer, truncated by the kernel and dropped.
    pub rx_oversized: u64,
    /// `sendmmsg` calls, and datagrams sent as segments of a GSO (`UDP_SEGMENT`) send.
    pub send_calls: u64,
    pub gso_segments: u64,
}

impl IoStats {
    /// All decode errors together.
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors_too_short
            + self.decode_errors_bad_magic
            + self.decode_errors_unsupported_version
            + self.decode_errors_truncated
            + self.decode_errors_bad_length
            + self.decode_errors_no_frames
            + self.decode_errors_digest_too_large
            + self.decode_errors_bad_topic
    }

    /// All authentication failures together.
    pub fn auth_failures(&self) -> u64 {
        self.auth_failures_missing
            + self.auth_failures_bad_mac
            + self.auth_failures_stale
            + self.auth_failures_replay
    }

    /// Counts one dropped unauthenticated datagram under its reason, so operators
    /// can tell misconfiguration (missing, bad_mac) from clock skew (stale) and
    /// attack traffic (replay).
    pub fn count_auth_failure(&mut self, e: crate::wire::auth::AuthError) {
        use crate::wire::auth::AuthError;
        match e {
            AuthError::Missing => self.auth_failures_missing += 1,
            AuthError::BadMac => self.auth_failures_bad_mac += 1,
            AuthError::Stale => self.auth_failures_stale += 1,
            AuthError::Replay => self.auth_failures_replay += 1,
        }
    }

    /// Copies the socket's fault-layer counters into the snapshot.
    pub fn set_fault_stats(&mut self, f: super::fault::FaultStats) {
        self.chaos_dropped = f.dropped;
        self.chaos_duplicated = f.duplicated;
        self.chaos_delayed = f.delayed;
        self.chaos_cut = f.cut;
        self.chaos_overflow = f.overflow;
    }

    /// Counts one decode failure under its reason label.
    pub fn count_decode_error(&mut self, reason: &str) {
        match reason {
            "too_short" => self.decode_errors_too_short += 1,
            "bad_magic" => self.decode_errors_bad_magic += 1,
            "unsupported_version" => self.decode_errors_unsupported_version += 1,
            "truncated" => self.decode_errors_truncated += 1,
            "bad_length" => self.decode_errors_bad_length += 1,
            "digest_too_large" => self.decode_errors_digest_too_large += 1,
            "bad_topic" => self.decode_errors_bad_topic += 1,
            _ => self.decode_errors_no_frames += 1,
        }
    }
}

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
    pub shard: usize,
    /// Core the shard is pinned to, if pinned.
    pub core: Option<usize>,
    pub addr: SocketAddr,
    pub partitions: Vec<u16>,
    /// Commands waiting in the shard's inbound cross-shard queue.
    pub command_queue: usize,
    pub stats: ShardStats,
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
    pub node_id: String,
    /// Its node name, once a NodeName frame from it arrived (`None` for nodes that
    /// predate names).
    pub name: Option<String>,
    /// The peer's control address; shard `k` listens on port + 1 + k.
    pub addr: SocketAddr,
    pub shards: u16,
    /// `active`, `suspect` or `left`.
    pub state: String,
    pub last_heard_ms_ago: u64,
    /// Partitions (over all local shards) where this peer is eager / lazy.
    pub eager_partitions: u32,
    pub lazy_partitions: u32,
}

/// One member of a HyParView view, as `GET /members` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberInfo {
    pub node_id: String,
    /// Its node name, when known.
    pub name: Option<String>,
    /// Control address; shard `k` listens on port + 1 + k.
    pub addr: Option<SocketAddr>,
    /// Shard count (0 = not known yet).
    pub shards: u16,
    /// `active` (a Plumtree neighbour), `passive` (a backup), `pending` (a passive
    /// node asked to become a neighbour) or `lost` (stopped answering; probed).
    pub state: String,
    /// Milliseconds since a datagram last came from it; `None` if it never wrote to
    /// us (known from a shuffle or a forwarded join only).
    pub last_heard_ms_ago: Option<u64>,
}

/// Counters of the membership driver (the part of the control core around the
/// sans-IO state machine): what it could not route or had to drop.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemberDriverStats {
    /// Messages for a node whose address is not in the address book, dropped.
    pub unroutable: u64,
    /// Contacts (or Join/Neighbor layouts) with no port, no address or no shard, dropped.
    pub bad_contacts: u64,
    /// Address book entries evicted to stay within its bound.
    pub address_book_evictions: u64,
    /// Timers dropped because the timer queue was full.
    pub timer_overflow: u64,
    /// Joins sent to seed addresses whose node id was not known yet.
    pub seed_joins_sent: u64,
    /// Contacts left out of a frame because their address could not work for its
    /// receiver (a wildcard, or loopback told to a node that is not on loopback).
    pub unusable_withheld: u64,
    /// Seed names that did not resolve, counted per attempt.
    pub seed_resolve_failures: u64,
}

/// The HyParView state as the control core last saw it (`GET /members`, metrics).
#[derive(Debug, Clone, Default, Serialize)]
pub struct MembershipSnapshot {
    pub active: Vec<MemberInfo>,
    pub passive: Vec<MemberInfo>,
    /// Nodes that stopped answering and are probed with backoff until they answer.
    pub lost: Vec<MemberInfo>,
    pub active_capacity: usize,
    pub passive_capacity: usize,
    pub lost_capacity: usize,
    /// A join is still unanswered (no neighbour yet).
    pub joining: bool,
    /// Configured seed addresses.
    pub seeds: Vec<SocketAddr>,
    pub address_book_size: usize,
    pub address_book_capacity: usize,
    pub timers_pending: usize,
    pub stats: crate::membership::MembershipStats,
    pub driver: MemberDriverStats,
}

/// Status of one background loop (field names from the loop-manager reference).
#[derive(Debug, Clone, Serialize)]
pub struct LoopInfo {
    pub name: String,
    /// Disabled loops (an interval of 0 in the config) are listed, never started.
    pub enabled: bool,
    pub running: bool,
    pub paused: bool,
    /// Nominal period between runs (before jitter or error backoff).
    pub interval_ms: u64,
    pub run_count: u64,
    pub error_count: u64,
    pub consecutive_errors: u64,
    /// Runs that panicked (counted in `error_count` too).
    pub panic_count: u64,
    pub average_duration_ms: f64,
    /// End of the last run, UNIX time in milliseconds.
    pub last_run_time: Option<u64>,
    pub last_error: Option<String>,
}

/// Everything `/status`, `/peers`, `/members` and `/metrics` show.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSnapshot {
    pub node_id: String,
    /// The control address this node describes itself by in membership frames.
    pub advertise: Option<SocketAddr>,
    /// This node's name.
    pub node_name: Option<String>,
    /// Names held in the name book, and names it forgot to stay within its bound.
    pub names_known: usize,
    pub names_evicted: u64,
    /// Nodes refused because a live node already has their name, and refusals this
    /// node received for its own name.
    pub name_conflicts_sent: u64,
    pub name_conflicts_received: u64,
    pub addr: SocketAddr,
    pub uptime_ms: u64,
    pub shutting_down: bool,
    pub shards: Vec<ShardSnapshot>,
    pub peers: Vec<PeerInfo>,
    pub loops: Vec<LoopInfo>,
    /// Control-socket counters (membership traffic).
    pub control_io: IoStats,
    /// Broadcasts accepted by the admin plane.
    pub broadcasts_accepted: u64,
    /// Broadcasts refused (too large, shutting down, queue full).
    pub broadcasts_refused: u64,
    /// Library subscriptions alive, and events they were told they missed.
    pub subscribers: u64,
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
    pub admin: super::admin::AdminRejected,
    /// The NATS-compatible client port's counters.
    pub client: super::client_port::ClientPortSnapshot,
    /// The deliveries file's retention log.
    pub delivery_log: DeliveryLogSnapshot,
}

/// The deliveries file's retention log: what it holds, what it dropped, and what its
/// reader missed (told with `{"lagged":N}` lines).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DeliveryLogSnapshot {
    pub entries: u64,
    pub bytes: u64,
    pub dropped: u64,
    pub lagged: u64,
}

/// Why `POST /broadcast` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BroadcastRefused {
    #[error("payload of {len} bytes exceeds max_payload {max}")]
    TooLarge { len: usize, max: usize },
    /// The payload is within `max_payload`, but with its topic the message does not
    /// fit one datagram of the node's MTU (long topics take bytes off the payload).
    #[error("payload of {payload} bytes with topic of {topic} bytes exceeds the {max} bytes a datagram carries for both")]
    DoesNotFit {
        payload: usize,
        topic: usize,
        max: usize,
    },
    #[error("node is shutting down")]
    ShuttingDown,
    #[error("shard queue is full")]
    Backpressure,
}

/// Why `POST /loops/<name>/pause` or `/resume` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoopControlRefused {
    #[error("no loop named `{0}`")]
    Unknown(String),
    #[error("loop `{0}` runs on a shard executor and drives its socket; it cannot be paused")]
    NotPausable(String),
    #[error("the control core did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("too many loop commands waiting for the control core; retry")]
    Busy,
    #[error("node is shutting down")]
    ShuttingDown,
}

/// Why `POST /chaos/panic/<loop>` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChaosRefused {
    #[error("fault injection is disabled (start the node with --chaos)")]
    Disabled,
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
        super::admin::MAX_BROADCAST_BODY
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
    fn faults(&self) -> Result<std::sync::Arc<super::fault::FaultSwitch>, ChaosRefused> {
        Err(ChaosRefused::Disabled)
    }
}

/// Message ids as the admin plane and the deliveries file print them: origin and seq,
/// 16 hex digits each.
pub fn id_hex(id: MessageId) -> String {
    format!("{:016x}{:016x}", id.origin.0, id.seq)
}
