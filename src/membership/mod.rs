//! Sans-IO HyParView peer sampling (Leitão, Pereira, Rodrigues, DSN 2007).
//!
//! Plumtree needs a small, symmetric, connected set of neighbours that heals itself
//! when nodes fail; HyParView provides it with two views: a small *active* view (the
//! neighbours Plumtree gossips to) and a larger *passive* view (a random sample of the
//! cluster, refreshed by periodic shuffles, that the active view is repaired from).
//!
//! Like `protocol`, the [`Membership`] state machine never reads a clock, touches a
//! socket or spawns anything: every input carries `now` (time since an epoch the driver
//! picks); everything it wants done — messages to send, neighbours that came up or went
//! down, timers to arm — is queued as an [`Event`] and drained with
//! [`Membership::poll_event`]. Timers are data: a [`Timer`] carries a generation token,
//! and a timer that fires after its reason went away is ignored.
//!
//! The paper runs over TCP and uses connection failure as its failure detector. This
//! implementation runs over UDP, so it adds one: every active neighbour gets a
//! [`Message::Heartbeat`] when nothing else was sent to it for `heartbeat_interval`;
//! a neighbour silent for `failure_timeout` is sent a [`Message::Probe`], and if it does
//! not answer within `probe_timeout` it is removed and replaced from the passive view.
//!
//! Messages name peers by [`NodeId`](crate::ids::NodeId) only; the driver
//! ([`MemberDriver`], which the node and the simulator both run) maps ids to
//! addresses and messages to wire frames. A shuffle reply goes to the shuffle's
//! origin, which need not be a neighbour, so the driver's address book must cover
//! every id that can appear in a view.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
pub mod driver;
mod event;
pub mod hyparview;
pub mod snapshot;
mod stats;

pub use config::{ConfigError, MembershipConfig};
pub use driver::MemberDriver;
pub use event::{Event, Message, Time, Timer};
pub use hyparview::Membership;
pub use stats::MembershipStats;

#[cfg(test)]
mod tests;
