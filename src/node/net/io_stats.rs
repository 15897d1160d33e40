//! The socket-level counters every executor keeps (datagrams, decode and auth
//! failures, fault-layer and flood-limit drops, batch I/O), filled by the socket and
//! the executors and published in the node's snapshot.

use serde::Serialize;

/// Socket-level counters a shard keeps next to its protocol counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IoStats {
    /// UDP datagrams received (`plumtree_datagrams_received_total`).
    pub datagrams_received: u64,
    /// UDP datagrams sent (`plumtree_datagrams_sent_total`).
    pub datagrams_sent: u64,
    /// UDP payload bytes received (`plumtree_bytes_received_total`).
    pub bytes_received: u64,
    /// UDP payload bytes sent (`plumtree_bytes_sent_total`).
    pub bytes_sent: u64,
    /// Datagrams dropped because they failed to decode, by `DecodeError::reason()`
    /// (`plumtree_decode_errors_total{reason}`): here `too_short`, shorter than the
    /// fixed header.
    pub decode_errors_too_short: u64,
    /// Decode failures `bad_magic`: not a plumcore datagram (stray traffic).
    pub decode_errors_bad_magic: u64,
    /// Decode failures `unsupported_version`: a wire version this build does not speak.
    pub decode_errors_unsupported_version: u64,
    /// Decode failures `truncated`: a frame runs past the end of the datagram.
    pub decode_errors_truncated: u64,
    /// Decode failures `bad_length`: a known frame's body length is invalid for its tag.
    pub decode_errors_bad_length: u64,
    /// Decode failures `no_frames`: a header with no frames at all (also any reason
    /// this build has no counter for).
    pub decode_errors_no_frames: u64,
    /// Decode failures `digest_too_large`: a Digest with more blocks than any sender
    /// puts in one frame.
    pub decode_errors_digest_too_large: u64,
    /// Decode failures `bad_topic`: a Gossip frame whose topic is not a valid subject.
    pub decode_errors_bad_topic: u64,
    /// Datagrams dropped by cluster authentication (before decoding), by
    /// `AuthError::reason()` (`plumtree_auth_failures_total{reason}`); always 0
    /// without a cluster key. Here `missing`: not authenticated (or MAC'd only on
    /// an encrypting node, and the other way round).
    pub auth_failures_missing: u64,
    /// Authentication failures `bad_mac`: the MAC verifies under no accepted key.
    pub auth_failures_bad_mac: u64,
    /// Authentication failures `stale`: the timestamp is outside the clock window.
    pub auth_failures_stale: u64,
    /// Authentication failures `replay`: this (sender, incarnation, seq) was
    /// already accepted, or is too old to tell.
    pub auth_failures_replay: u64,
    /// Frames with tags this build does not know, skipped.
    pub unknown_frames: u64,
    /// Datagrams from senders that are not neighbours.
    pub unknown_senders: u64,
    /// IHave and Digest frames from senders that are not neighbours, dropped (a
    /// Graft to them could not be routed).
    pub ihave_unknown_sender: u64,
    /// UDP sends that failed (`plumtree_send_errors_total`).
    pub send_errors: u64,
    /// Commands from the control core a shard's queue could not take (dropped; the
    /// next periodic command of the kind takes its place).
    pub command_queue_full: u64,
    /// Deliveries the delivery queue refused (the writer was behind); readers are
    /// told with a `{"lagged":N}` line and `Event::Lagged`.
    pub deliveries_lagged: u64,
    /// Rolling upgrades: datagrams received in wire version 1, from peers that
    /// predate topics (`plumtree_wire_v1_datagrams_total`).
    pub wire_v1_datagrams: u64,
    /// Rolling upgrades: Gossip frames of a topic other than `default` sent to a
    /// version-1 peer, which carries them as `default` (`plumtree_topics_downgraded_total`).
    pub topics_downgraded: u64,
    /// Rolling upgrades: version-1 addresses not remembered because the bounded map
    /// was full (`plumtree_wire_v1_peers_untracked_total`).
    pub wire_v1_untracked: u64,
    /// Test-only fault layer (`--chaos`): datagrams dropped at random
    /// (`plumtree_chaos_dropped_total`).
    pub chaos_dropped: u64,
    /// Fault layer: datagrams duplicated (`plumtree_chaos_duplicated_total`).
    pub chaos_duplicated: u64,
    /// Fault layer: datagrams delayed (`plumtree_chaos_delayed_total`).
    pub chaos_delayed: u64,
    /// Fault layer: datagrams dropped because their link is cut
    /// (`plumtree_chaos_cut_total`).
    pub chaos_cut: u64,
    /// Fault layer: delays and duplicates not applied because the layer's hold
    /// bound was reached (`plumtree_chaos_overflow_total`).
    pub chaos_overflow: u64,
    /// Datagrams dropped by the per-source flood limit (`plumtree_rate_limited_total`).
    pub rate_limited: u64,
    /// Sources evicted from the flood limiter's bounded map
    /// (`plumtree_rate_limit_evictions_total`).
    pub rate_limit_evictions: u64,
    /// Sources the flood limiter tracks now, a gauge bounded by `rate_limit_peers`
    /// (`plumtree_rate_limit_peers`).
    pub rate_limit_peers: u64,
    /// IHave frames received and dropped while overloaded
    /// (`plumtree_shed_total{kind="ihave"}`).
    pub shed_ihave: u64,
    /// Anti-entropy rounds skipped while overloaded
    /// (`plumtree_shed_total{kind="anti_entropy"}`).
    pub shed_anti_entropy: u64,
    /// Backlog probes that found the shard overloaded
    /// (`plumtree_overloaded_probes_total`).
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
    /// `sendmmsg` system calls made (`plumtree_send_calls_total`).
    pub send_calls: u64,
    /// Datagrams sent as segments of a GSO (`UDP_SEGMENT`) send
    /// (`plumtree_gso_segments_total`).
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
