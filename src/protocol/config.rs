//! Protocol configuration: names and defaults follow the reference Plumtree library
//! (shared/seeds/000), plus the partitioning and bounds this implementation adds.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::MAX_PARTITIONS;

/// How a shard disseminates: the Plumtree protocol, or classic flooding (eager push to
/// every neighbour, no lazy push, no pruning) as the baseline it is measured against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Eager push along spanning trees, lazy push (IHave) to the other neighbours,
    /// Prune and Graft to repair the trees.
    #[default]
    Plumtree,
    /// Every message to every neighbour: reliable and wasteful, the baseline.
    Flood,
}

/// Tunables of one Plumtree shard. Durations are serialised as milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProtocolConfig {
    /// How messages are disseminated; `flood` is for measuring against.
    pub mode: Mode,
    /// Eager peers a partition starts with when neighbours come up; the rest are lazy.
    pub eager_fanout: usize,
    /// Lazy peers each IHave announcement goes to (chosen at random when there are more).
    pub lazy_fanout: usize,
    /// Periodic IHave flush.
    #[serde(with = "crate::serde_millis")]
    pub ihave_interval: Duration,
    /// A peer's IHave queue is flushed at once when it reaches this many entries.
    pub ihave_batch_size: usize,
    /// timeout1 of the paper: wait this long after the first IHave before grafting.
    #[serde(with = "crate::serde_millis")]
    pub graft_timeout: Duration,
    /// Grafts after the first one; the wait doubles each retry (timeout2 of the paper).
    pub graft_max_retries: u32,
    /// Cap of the doubling graft wait.
    #[serde(with = "crate::serde_millis")]
    pub graft_max_backoff: Duration,
    /// How long cached payloads live (Grafts and anti-entropy pulls are served from
    /// them). A hole in an origin's seqs waits this long plus 3 s after the delivery
    /// that revealed it before it is declared a known gap.
    #[serde(with = "crate::serde_millis")]
    pub message_cache_ttl: Duration,
    /// Maintenance loop period (the control core drives it).
    #[serde(with = "crate::serde_millis")]
    pub maintenance_interval: Duration,
    /// Random extra wait added to each maintenance period.
    #[serde(with = "crate::serde_millis")]
    pub maintenance_jitter: Duration,
    /// Hop-count optimisation: re-link to an announcer whose round is this much lower
    /// than the round the message arrived with. 0 disables it.
    pub optimization_threshold: u16,
    /// Duplicates from one eager peer (per partition) before it is pruned; 1 is the paper.
    pub prune_threshold: u8,
    /// Independent trees the message-id space is split into (power of two, at most 64).
    pub partitions: u32,
    /// Largest payload a broadcast may carry, in bytes.
    pub max_payload: usize,
    /// Upper bound on neighbours a shard tracks (at most 64).
    pub max_neighbors: usize,
    /// Bound on cached payloads (entries); the oldest are evicted first.
    pub max_cached_messages: usize,
    /// Bound on cached payload bytes.
    pub max_cached_bytes: usize,
    /// Bound on origins the seen map tracks; the least recently active is evicted.
    pub max_seen_origins: usize,
    /// Bound on the sequence window kept per origin, in messages, before forced sliding.
    /// Also the widest seq jump read as a hole: a wider one is a new epoch of the
    /// origin (a restart), not a gap.
    pub max_seen_window: u64,
    /// How long an origin's seen window outlives its last message (at least
    /// `message_cache_ttl`; `max_seen_origins` bounds the memory either way, about 40
    /// bytes per quiet origin). An origin silent through a partition shorter than this
    /// still has the messages it lost declared as known gaps when it speaks again;
    /// after a longer silence its next message is a first contact.
    #[serde(with = "crate::serde_millis")]
    pub seen_idle_retention: Duration,
    /// Bound on roots (origins) a shard keeps per-root trees for: each root has one
    /// eager set per owned partition (8 bytes and a bit), plus about 60 bytes in the
    /// root table. The least recently used root is evicted (its trees fall back to
    /// the partition template when it publishes again); a root silent for
    /// `message_cache_ttl` expires. The default holds 10,000 origins in about 5.3 MB
    /// for a shard owning all 64 partitions. Raise it when more nodes publish.
    pub max_roots: usize,
    /// Bound on messages waiting for a graft.
    pub max_pending_grafts: usize,
    /// Bound on queued IHave entries over all peers; the oldest are shed first.
    pub max_ihave_queue: usize,
    /// Announcers remembered per missing message.
    pub max_announcers: usize,
    /// Period of the anti-entropy round: a neighbour gets a digest of the next slice
    /// of this shard's payload cache and answers with a slice of its own; each side
    /// pulls what it lacks, so a message whose Gossip and IHaves were all lost on UDP,
    /// or that was broadcast on the other side of a partition, is still recovered
    /// while it is cached. The neighbour is random unless one is still showing
    /// messages missing here (or just came up): that one gets the rounds until the
    /// digests agree. 0 disables it.
    #[serde(with = "crate::serde_millis")]
    pub anti_entropy_interval: Duration,
    /// Messages younger than this are left to normal dissemination.
    #[serde(with = "crate::serde_millis")]
    pub anti_entropy_delay: Duration,
    /// Messages older than this are no longer announced. At most
    /// `message_cache_ttl` (an announced message must still be in the cache to be
    /// pulled), and by default equal to it, so that every message still cached can be
    /// recovered after a partition (a shorter window lost messages broadcast early in
    /// a 30 s split for good).
    #[serde(with = "crate::serde_millis")]
    pub anti_entropy_window: Duration,
    /// Most digest blocks (up to 64 ids each) sent per round, and per reply; also
    /// bounds the cache entries one slice scans (64 per block).
    pub anti_entropy_max_blocks: usize,
    /// Most messages pulled per round interval (received digests share it); the rest
    /// wait for a later round.
    pub anti_entropy_max_pulls: usize,
    /// Most digest replies per round interval.
    pub anti_entropy_max_replies: usize,
    /// The application's validator, run on every message received from a peer
    /// before it is delivered or relayed (see [`super::validate`]); set in code
    /// ([`ProtocolConfig::validator`]), never in a file.
    #[serde(skip)]
    pub validator: Option<super::validate::ValidatorHandle>,
}

impl ProtocolConfig {
    /// Sets the validator: `cfg.validator(|m: &MessageView| Verdict::Accept)`.
    pub fn validator(mut self, v: impl super::validate::Validator) -> Self {
        self.validator = Some(super::validate::ValidatorHandle::new(v));
        self
    }
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Plumtree,
            eager_fanout: 3,
            lazy_fanout: 6,
            ihave_interval: Duration::from_millis(100),
            ihave_batch_size: 16,
            graft_timeout: Duration::from_millis(500),
            graft_max_retries: 5,
            graft_max_backoff: Duration::from_secs(4),
            message_cache_ttl: Duration::from_secs(60),
            maintenance_interval: Duration::from_secs(2),
            maintenance_jitter: Duration::from_millis(500),
            optimization_threshold: 8,
            prune_threshold: 1,
            partitions: 64,
            max_payload: 1200,
            max_neighbors: 64,
            max_cached_messages: 1 << 20,
            max_cached_bytes: 256 << 20,
            max_seen_origins: 1 << 16,
            max_seen_window: 1 << 16,
            seen_idle_retention: Duration::from_secs(600),
            max_roots: 10_000,
            max_pending_grafts: 1 << 16,
            max_ihave_queue: 1 << 16,
            max_announcers: 8,
            anti_entropy_interval: Duration::from_secs(1),
            anti_entropy_delay: Duration::from_millis(500),
            anti_entropy_window: Duration::from_secs(60),
            anti_entropy_max_blocks: 64,
            anti_entropy_max_pulls: 256,
            anti_entropy_max_replies: 8,
            validator: None,
        }
    }
}

/// A configuration value out of range; names the key so the operator can fix it.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid config key `{key}`: {reason}")]
pub struct ConfigError {
    /// The config key, as written in the config file (`partitions`, ...).
    pub key: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

impl ProtocolConfig {
    /// Checks every bound; the node exits 2 with this message on failure.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key, reason: &str| {
            Err(ConfigError {
                key,
                reason: reason.to_string(),
            })
        };
        if !self.partitions.is_power_of_two() || self.partitions > MAX_PARTITIONS {
            return err("partitions", "must be a power of two between 1 and 64");
        }
        if self.eager_fanout == 0 {
            return err("eager_fanout", "must be at least 1");
        }
        if self.ihave_batch_size == 0 {
            return err("ihave_batch_size", "must be at least 1");
        }
        if self.ihave_interval.is_zero() {
            return err("ihave_interval", "must be positive");
        }
        if self.graft_timeout.is_zero() {
            return err("graft_timeout", "must be positive");
        }
        if self.graft_max_backoff < self.graft_timeout {
            return err("graft_max_backoff", "must be at least graft_timeout");
        }
        if self.message_cache_ttl.is_zero() {
            return err("message_cache_ttl", "must be positive");
        }
        if self.prune_threshold == 0 {
            return err("prune_threshold", "must be at least 1");
        }
        if self.max_payload == 0 || self.max_payload > crate::wire::MAX_GOSSIP_PAYLOAD {
            return err(
                "max_payload",
                "must be between 1 and the largest payload a datagram can carry",
            );
        }
        if self.max_neighbors == 0 || self.max_neighbors > 64 {
            return err("max_neighbors", "must be between 1 and 64");
        }
        if self.anti_entropy_window < self.anti_entropy_delay {
            return err("anti_entropy_window", "must be at least anti_entropy_delay");
        }
        if self.anti_entropy_window > self.message_cache_ttl {
            return err(
                "anti_entropy_window",
                "must be at most message_cache_ttl (older messages are no longer cached)",
            );
        }
        if self.seen_idle_retention < self.message_cache_ttl {
            return err(
                "seen_idle_retention",
                "must be at least message_cache_ttl (a forgotten origin's cached messages would be delivered twice)",
            );
        }
        if self.max_seen_window < 64 {
            return err("max_seen_window", "must be at least 64");
        }
        for (key, v) in [
            ("max_cached_messages", self.max_cached_messages),
            ("max_cached_bytes", self.max_cached_bytes),
            ("max_seen_origins", self.max_seen_origins),
            ("max_roots", self.max_roots),
            ("max_pending_grafts", self.max_pending_grafts),
            ("max_ihave_queue", self.max_ihave_queue),
            ("max_announcers", self.max_announcers),
            ("anti_entropy_max_blocks", self.anti_entropy_max_blocks),
            ("anti_entropy_max_pulls", self.anti_entropy_max_pulls),
            ("anti_entropy_max_replies", self.anti_entropy_max_replies),
        ] {
            if v == 0 {
                return err(key, "must be at least 1");
            }
        }
        Ok(())
    }
}
