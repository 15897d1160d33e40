//! The executors' network edge: the batched UDP I/O, the socket every executor
//! sends and receives through (with its test-only fault layer) and its counters.

pub mod advertise;
pub mod io_stats;
pub mod socket;
pub mod udp;
