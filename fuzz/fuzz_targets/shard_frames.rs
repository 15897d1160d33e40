//! Structure-aware: feeds a protocol shard a sequence of valid and invalid operations
//! and checks its invariants after every step (see `checks/shard_frames.rs`).

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/shard_frames.rs"]
mod check;

fuzz_target!(|data: &[u8]| check::run(data));
