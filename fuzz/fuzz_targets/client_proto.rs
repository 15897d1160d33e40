//! Feeds arbitrary bytes to the NATS client-protocol parser, op after op. It must
//! answer with an op, "need more" or a typed error — never a panic, never an op that
//! takes no bytes or more than it was given.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/client_proto.rs"]
mod check;

fuzz_target!(|data: &[u8]| check::run(data));
