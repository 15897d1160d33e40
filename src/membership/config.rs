//! The HyParView service's tunables and their validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Tunables of the HyParView service. Names follow the paper (ARWL, PRWL, ...);
/// durations are serialised as milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipConfig {
    /// Largest active view: the neighbours Plumtree uses. The paper's `log(n) + c`.
    pub active_view: usize,
    /// Largest passive view: the backup sample the active view is repaired from.
    pub passive_view: usize,
    /// Active random walk length: hops a ForwardJoin travels before it must be accepted.
    pub arwl: u8,
    /// Passive random walk length: the hop at which a ForwardJoin's new node is also
    /// put into the passive view.
    pub prwl: u8,
    /// Period of the passive-view shuffle.
    #[serde(with = "crate::serde_millis")]
    pub shuffle_interval: Duration,
    /// Active-view members a shuffle carries (besides the sender itself).
    pub shuffle_active: usize,
    /// Passive-view members a shuffle carries.
    pub shuffle_passive: usize,
    /// Hops a shuffle random walk travels.
    pub shuffle_ttl: u8,
    /// A neighbour is sent a Heartbeat when nothing else was sent to it for this long.
    #[serde(with = "crate::serde_millis")]
    pub heartbeat_interval: Duration,
    /// Silence after which a neighbour is suspected and probed.
    #[serde(with = "crate::serde_millis")]
    pub failure_timeout: Duration,
    /// A probed neighbour (or a passive node asked to become one) that does not answer
    /// within this is dropped.
    #[serde(with = "crate::serde_millis")]
    pub probe_timeout: Duration,
    /// First wait before a Join is retried at the next seed; doubles each retry.
    #[serde(with = "crate::serde_millis")]
    pub join_retry: Duration,
    /// Cap of the doubling join retry wait.
    #[serde(with = "crate::serde_millis")]
    pub join_retry_max: Duration,
    /// Cap of the doubling wait between probes of a lost node (found dead; probed in
    /// case it was a partition). A healed partition re-merges within about this of
    /// the heal. Cost: at most `passive_view` lost nodes, each probed once per this
    /// interval once its backoff reached it (defaults: 30 probes of ~40 bytes every
    /// 2 s, 15 datagrams/s, for a node that lost 30 peers for good). Must be at least
    /// `join_retry`, the first wait.
    #[serde(with = "crate::serde_millis")]
    pub lost_probe_max: Duration,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            active_view: 5,
            passive_view: 30,
            arwl: 6,
            prwl: 3,
            shuffle_interval: Duration::from_secs(10),
            shuffle_active: 3,
            shuffle_passive: 4,
            shuffle_ttl: 6,
            heartbeat_interval: Duration::from_secs(1),
            failure_timeout: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(1),
            join_retry: Duration::from_secs(1),
            join_retry_max: Duration::from_secs(30),
            lost_probe_max: Duration::from_secs(2),
        }
    }
}

/// A configuration value out of range; names the key so the operator can fix it.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid membership config key `{key}`: {reason}")]
pub struct ConfigError {
    /// The offending key, as spelled in the configuration file.
    pub key: &'static str,
    /// What range the key must be in.
    pub reason: String,
}

impl MembershipConfig {
    /// Checks every bound, so the state machine can rely on them (non-empty views,
    /// positive periods, a failure timeout that heartbeats can actually beat).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key, reason: &str| {
            Err(ConfigError {
                key,
                reason: reason.to_string(),
            })
        };
        if self.active_view == 0 || self.active_view > 64 {
            return err("active_view", "must be between 1 and 64");
        }
        if self.passive_view == 0 {
            return err("passive_view", "must be at least 1");
        }
        if self.prwl > self.arwl {
            return err("prwl", "must not exceed arwl");
        }
        if self.shuffle_active + self.shuffle_passive > 255 {
            return err(
                "shuffle_passive",
                "shuffle_active + shuffle_passive must be at most 255",
            );
        }
        for (key, d) in [
            ("shuffle_interval", self.shuffle_interval),
            ("heartbeat_interval", self.heartbeat_interval),
            ("probe_timeout", self.probe_timeout),
            ("join_retry", self.join_retry),
        ] {
            if d.is_zero() {
                return err(key, "must be positive");
            }
        }
        if self.failure_timeout < self.heartbeat_interval * 2 {
            return err(
                "failure_timeout",
                "must be at least twice heartbeat_interval",
            );
        }
        if self.join_retry_max < self.join_retry {
            return err("join_retry_max", "must be at least join_retry");
        }
        if self.lost_probe_max < self.join_retry {
            return err("lost_probe_max", "must be at least join_retry");
        }
        Ok(())
    }
}
