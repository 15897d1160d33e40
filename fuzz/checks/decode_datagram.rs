//! Check of the `decode_datagram` fuzz target, shared with the stable corpus
//! regression test (`tests/fuzz_regression.rs`): arbitrary bytes decode to a datagram
//! or an error, never a panic, and whatever decodes survives a re-encode unchanged
//! (less the unknown and misrouted membership frames the decoder drops).

use bytes::Bytes;
use plumcore::wire::{decode, DatagramBuilder, HEADER_LEN, MAGIC, VERSION};

/// Largest UDP payload over IPv4: the builder's upper MTU clamp.
const MAX_MTU: usize = 65_507;

/// The whole target: run it on one input.
pub fn run(data: &[u8]) {
    check(data);
    // The same bytes behind a valid header. libFuzzer does not learn 2-byte
    // comparisons such as the magic, so without this the frame parser is only reached
    // from a seed corpus.
    let mut framed = Vec::with_capacity(HEADER_LEN + data.len());
    framed.extend_from_slice(&MAGIC);
    framed.push(VERSION);
    framed.resize(HEADER_LEN, 0);
    framed.extend_from_slice(data);
    check(&framed);
}

fn check(data: &[u8]) {
    let input = Bytes::copy_from_slice(data);
    let Ok(dg) = decode(&input) else {
        return;
    };

    let mut builder = DatagramBuilder::new(dg.header, MAX_MTU);
    let mut datagrams = Vec::new();
    let mut expected = Vec::new();
    for frame in &dg.frames {
        if !builder.try_push(frame) {
            datagrams.extend(builder.take());
            if !builder.try_push(frame) {
                // Only a frame from an input bigger than any UDP datagram can be too
                // large for an empty datagram.
                assert!(data.len() > MAX_MTU, "decoded frame does not re-encode");
                continue;
            }
        }
        expected.push(frame.clone());
    }
    datagrams.extend(builder.take());
    if data.len() <= MAX_MTU {
        // Re-encoding only drops unknown frames, so it is no longer than the input.
        assert!(datagrams.len() <= 1);
    }

    let mut again = Vec::new();
    for d in &datagrams {
        assert!(d.len() <= MAX_MTU);
        let re = decode(d).expect("re-encoded datagram decodes");
        assert_eq!(re.header, dg.header);
        assert_eq!(re.skipped_unknown, 0);
        assert_eq!(re.misrouted_member_frames, 0);
        again.extend(re.frames);
    }
    assert_eq!(again, expected);
}
