//! Feeds arbitrary text to the node config parser and the core-map parser. Both must
//! answer with a value or a typed, one-line error — never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/config_parsers.rs"]
mod check;

fuzz_target!(|data: &[u8]| check::run(data));
