//! Decodes arbitrary bytes as a datagram. Decoding must never panic; whatever
//! decodes must survive a re-encode through `DatagramBuilder` unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/decode_datagram.rs"]
mod check;

fuzz_target!(|data: &[u8]| check::run(data));
