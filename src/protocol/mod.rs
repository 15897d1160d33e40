//! Sans-IO Plumtree (Leitão, Pereira, Rodrigues, SRDS 2007).
//!
//! A [`Shard`] owns a set of partitions (independent Plumtrees over the same
//! neighbours). It never reads a clock, touches a socket or spawns anything: every
//! input carries `now` (time since an epoch the driver picks), and everything it wants
//! done — frames to send, deliveries, timers to arm — is queued as an [`Event`] that the
//! driver drains with [`Shard::poll_event`]. Timers are data: a [`Timer`] carries a
//! generation token, and a timer that fires after its reason went away is ignored.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cache;
pub mod config;
mod digest;
mod event;
pub mod gap;
pub mod host;
pub mod peers;
pub mod roots;
pub mod seen;
pub mod shard;
pub mod stats;
pub mod validate;

pub use crate::timer::TimerQueue;
pub use config::{ConfigError, Mode, ProtocolConfig};
pub use event::{Event, Time, Timer};
pub use host::{HostEvent, HostTimer, ShardHost};
pub use shard::{BroadcastError, CleanupProgress, Shard};
pub use stats::ShardStats;
pub use validate::{MessageView, Validator, ValidatorHandle, Verdict};

#[cfg(test)]
mod tests;
