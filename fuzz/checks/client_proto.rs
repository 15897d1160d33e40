//! Check of the `client_proto` fuzz target, shared with the stable corpus regression
//! test: the NATS client-protocol parser, fed a byte stream op after op under small
//! and default limits, answers with an op, "need more" or a typed error, never a
//! panic; every op takes at least one byte and no more than there are, and no PUB
//! payload is larger than the limit.

use plumcore::client::proto::{parse, ClientOp, Limits};

/// The whole target: run it on one input.
pub fn run(data: &[u8]) {
    let small = Limits {
        max_control_line: 32,
        max_payload: 8,
    };
    for limits in [small, Limits::default()] {
        let mut rest = data;
        loop {
            match parse(rest, &limits) {
                Ok(Some((op, n))) => {
                    assert!(n > 0 && n <= rest.len(), "consumed {n} of {}", rest.len());
                    if let ClientOp::Pub { payload, .. } = &op {
                        assert!(payload.len() <= limits.max_payload, "payload over limit");
                    }
                    rest = &rest[n..];
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(!e.to_string().contains('\n'), "multi-line error: {e}");
                    assert!(!e.nats_text().contains(['\'', '\r', '\n']), "bad -ERR text");
                    // A survivable error says how far to skip; go on from there.
                    match e.consumed() {
                        Some(n) if !e.closes() => {
                            assert!(n > 0 && n <= rest.len(), "skip {n} of {}", rest.len());
                            rest = &rest[n..];
                        }
                        _ => break,
                    }
                }
            }
        }
    }
}
