//! The NATS core client protocol, for the node's client port: what `nats` CLI,
//! async-nats and the other NATS clients speak to publish and subscribe.
//!
//! Everything here is pure (no sockets, no async, no clock), so the port's I/O loop
//! stays a thin shell and every rule is tested without a connection: `proto` parses
//! and encodes the text protocol, `subject` validates subjects and matches
//! subscription filters, `sublist` is the node's subscription table.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod proto;
pub mod subject;
pub mod sublist;
