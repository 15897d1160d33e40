//! The binary's subcommands, one file each; `main.rs` parses the command line and
//! hands each subcommand to its `run`. Nothing here is part of the library.

pub mod bench;
pub mod check_core_map;
pub mod log;
pub mod members;
pub mod node;
pub mod pubsub;
pub mod sim;
