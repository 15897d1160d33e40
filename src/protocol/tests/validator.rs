//! The application's validator: what is delivered, relayed, ignored or rejected.

use super::*;

fn topic_gossip(id: MessageId, topic: &str, payload: &'static [u8]) -> Frame {
    Frame::Gossip {
        id,
        round: 0,
        topic: Topic::new(topic).unwrap(),
        payload: Bytes::from_static(payload),
    }
}

#[test]
fn the_validator_decides_what_is_delivered_and_relayed() {
    let v = |m: &MessageView<'_>| match (m.topic.as_str(), m.payload) {
        (_, b"boom") => panic!("validator bug"),
        ("spam", _) => Verdict::Ignore,
        (_, b"bad") => Verdict::Reject,
        _ => Verdict::Accept,
    };
    let mut s = shard_with(cfg().validator(v), &[A, B, C]);
    let delivered = |ev: &[Event]| {
        ev.iter()
            .filter(|e| matches!(e, Event::Deliver { .. }))
            .count()
    };
    // Accepted: delivered and relayed to the others.
    s.handle_frame(ms(1), A, topic_gossip(mid(9, 1), "orders", b"good"));
    let ev = drain(&mut s);
    assert_eq!(delivered(&ev), 1);
    assert_eq!(gossip_targets(&ev), vec![B, C]);
    // Rejected, ignored, and a panicking validator: nothing leaves, nothing is
    // delivered, and the ids are seen (a later copy is a duplicate, not a retry).
    for (seq, topic, payload) in [
        (2, "orders", &b"bad"[..]),
        (3, "spam", b"x"),
        (4, "orders", b"boom"),
    ] {
        let f = Frame::Gossip {
            id: mid(9, seq),
            round: 0,
            topic: Topic::new(topic).unwrap(),
            payload: Bytes::copy_from_slice(payload),
        };
        s.handle_frame(ms(2), A, f.clone());
        let ev = drain(&mut s);
        assert_eq!(delivered(&ev), 0, "seq {seq}");
        assert!(gossip_targets(&ev).is_empty(), "seq {seq} relayed");
        assert!(s.has_seen(mid(9, seq)));
        s.handle_frame(ms(3), B, f);
        assert_eq!(delivered(&drain(&mut s)), 0);
    }
    let v = s.stats().validation;
    assert_eq!((v.accepted, v.rejected, v.ignored, v.panics), (1, 1, 2, 1));
    assert_eq!(s.stats().delivered, 1);
}
