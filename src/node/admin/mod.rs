//! The admin plane: the HTTP server, its routes and chaos routes, and the Prometheus
//! encoding of the node's snapshot it serves on `/metrics`.
//!
//! Arrows: `server` → `routes` → `chaos` → `reply`; `server` and `routes` share
//! `context` (limits, counters, the backend).

mod chaos;
mod context;
pub mod metrics;
mod reply;
mod routes;
pub mod server;
#[cfg(test)]
mod tests;

pub use super::snapshot::{AdminRejected, MAX_BROADCAST_BODY};
pub use server::{AdminLimits, AdminServer};
