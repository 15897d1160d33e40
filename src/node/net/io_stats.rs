//! The socket-level counters every executor keeps (datagrams, decode and auth
//! failures, fault-layer and flood-limit drops, batch I/O), filled by the socket and
//! the executors and published in the node's snapshot.

use serde::Serialize;

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
