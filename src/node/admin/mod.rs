//! The admin plane: the HTTP server and its routes, and the Prometheus encoding of
//! the node's snapshot it serves on `/metrics`.

pub mod metrics;
pub mod server;

pub use super::snapshot::{AdminRejected, MAX_BROADCAST_BODY};
pub use server::{AdminLimits, AdminServer};
