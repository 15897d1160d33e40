//! Anti-entropy: digests of recent deliveries, the pulls they trigger, and their rate
//! limits.

use super::*;

#[test]
fn anti_entropy_sends_one_neighbour_a_digest_of_recent_deliveries() {
    let mut s = shard_with(
        ProtocolConfig {
            anti_entropy_window: Duration::from_secs(10),
            ..cfg()
        },
        &[A, B],
    );
    for seq in 0..3 {
        s.handle_frame(ms(0), A, gossip(mid(9, seq), 0));
    }
    drain(&mut s);
    // Too young: left to normal dissemination.
    s.anti_entropy(ms(100));
    assert!(sends(&drain(&mut s)).is_empty());
    s.anti_entropy(ms(600));
    let d = digests(&drain(&mut s));
    assert_eq!(d.len(), 1);
    let (to, partition, reply, ids) = &d[0];
    assert!(*to == A || *to == B);
    assert_eq!(*partition, 0);
    assert!(*reply, "a round asks for the neighbour's digest back");
    assert_eq!(ids, &[mid(9, 0), mid(9, 1), mid(9, 2)]);
    // Past the window: nothing left to summarise.
    s.anti_entropy(ms(10_600));
    assert!(sends(&drain(&mut s)).is_empty());
    assert_eq!(s.stats().anti_entropy_rounds, 1);
    assert_eq!(s.stats().anti_entropy_blocks_sent, 1);
}

#[test]
fn anti_entropy_digest_is_bounded_in_blocks() {
    let mut s = shard_with(
        ProtocolConfig {
            anti_entropy_max_blocks: 2,
            ..cfg()
        },
        &[A],
    );
    // Five origins: five blocks wanted, two allowed.
    for origin in 10..15 {
        s.handle_frame(ms(0), A, gossip(mid(origin, 0), 0));
    }
    drain(&mut s);
    s.anti_entropy(ms(1000));
    let d = digests(&drain(&mut s));
    assert_eq!(d.iter().map(|x| x.3.len()).sum::<usize>(), 2);
    assert_eq!(s.stats().anti_entropy_blocks_sent, 2);
}

#[test]
fn digest_exchange_recovers_messages_missing_on_either_side() {
    // A delivered m1, B delivered m2, and neither heard of the other's (a partition,
    // or every push and IHave lost). One round started by A fixes both.
    let m1 = mid(9, 0);
    let m2 = mid(8, 0);
    let mut a = Shard::new(A, 1, cfg(), 1).unwrap();
    let mut b = Shard::new(B, 1, cfg(), 2).unwrap();
    a.handle_frame(ms(0), C, gossip(m1, 0));
    b.handle_frame(ms(0), D, gossip(m2, 0));
    a.neighbor_up(ms(0), B);
    b.neighbor_up(ms(0), A);
    drain(&mut a);
    drain(&mut b);

    a.anti_entropy(ms(1000));
    let out = sends(&drain(&mut a));
    let (to, digest) = out
        .into_iter()
        .find(|(_, f)| matches!(f, Frame::Digest { .. }))
        .unwrap();
    assert_eq!(to, B);
    b.handle_frame(ms(1001), A, digest);
    let eb = drain(&mut b);
    assert_eq!(grafts(&eb), vec![(A, m1)], "B pulls what it lacks");
    let reply = digests(&eb);
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0].0, A);
    assert!(!reply[0].2, "a reply does not ask for another");
    assert_eq!(reply[0].3, vec![m2]);

    // A serves B's pull and pulls m2 from B's reply.
    for (to, f) in sends(&eb) {
        assert_eq!(to, A);
        a.handle_frame(ms(1002), B, f);
    }
    let ea = drain(&mut a);
    assert_eq!(grafts(&ea), vec![(B, m2)]);
    for (to, f) in sends(&ea) {
        assert_eq!(to, B);
        b.handle_frame(ms(1003), A, f);
    }
    let eb = drain(&mut b);
    assert!(eb
        .iter()
        .any(|e| matches!(e, Event::Deliver { id, .. } if *id == m1)));
    for (_, f) in sends(&eb) {
        a.handle_frame(ms(1004), B, f);
    }
    assert!(drain(&mut a)
        .iter()
        .any(|e| matches!(e, Event::Deliver { id, .. } if *id == m2)));
    assert_eq!(a.stats().anti_entropy_pulls, 1);
    assert_eq!(b.stats().anti_entropy_pulls, 1);
    assert_eq!(b.stats().anti_entropy_replies, 1);
}

#[test]
fn a_digest_of_known_messages_pulls_nothing() {
    let mut s = shard(&[A]);
    s.handle_frame(ms(0), A, gossip(mid(9, 0), 0));
    drain(&mut s);
    let mut d = crate::protocol::digest::DigestBuilder::new(1, 8);
    d.add(mid(9, 0));
    let (partition, blocks) = d.finish().pop().unwrap();
    s.handle_frame(
        ms(1000),
        A,
        Frame::Digest {
            partition,
            reply: false,
            blocks,
        },
    );
    assert!(sends(&drain(&mut s)).is_empty());
    assert_eq!(s.stats().anti_entropy_pulls, 0);
}

#[test]
fn pulls_and_replies_are_rate_limited_per_round() {
    let mut s = shard_with(
        ProtocolConfig {
            anti_entropy_max_pulls: 3,
            anti_entropy_max_replies: 1,
            ..cfg()
        },
        &[A, B],
    );
    s.handle_frame(ms(0), A, gossip(mid(1, 0), 0));
    drain(&mut s);
    let missing = |first: u64| Frame::Digest {
        partition: 0,
        reply: true,
        blocks: vec![crate::wire::DigestBlock {
            origin: NodeId(7),
            first,
            bits: 0b11,
        }],
    };
    s.handle_frame(ms(1000), A, missing(0));
    // A round arrives as one frame per partition: one reply per sender and interval.
    s.handle_frame(ms(1000), A, missing(0));
    s.handle_frame(ms(1000), B, missing(10));
    let ev = drain(&mut s);
    assert_eq!(grafts(&ev).len(), 3, "the pull budget");
    assert_eq!(digests(&ev).len(), 1, "the reply budget");
    let st = s.stats();
    assert_eq!(st.anti_entropy_pulls, 3);
    assert_eq!(st.anti_entropy_pulls_shed, 1);
    assert_eq!(st.anti_entropy_replies_shed, 1);
    // The next round refills the budgets: the shed id is pulled when announced again.
    s.anti_entropy(ms(2000));
    drain(&mut s);
    s.handle_frame(ms(2000), A, missing(10));
    assert_eq!(grafts(&drain(&mut s)), vec![(A, mid(7, 11))]);
}

#[test]
fn a_digest_for_a_partition_not_owned_or_with_foreign_ids_is_misrouted() {
    let mut s = Shard::new(
        ME,
        0b01,
        ProtocolConfig {
            partitions: 2,
            ..ProtocolConfig::default()
        },
        1,
    )
    .unwrap();
    s.neighbor_up(ms(0), A);
    drain(&mut s);
    let block = |first| crate::wire::DigestBlock {
        origin: NodeId(3),
        first,
        bits: 1,
    };
    // Partition 1 is not ours.
    s.handle_frame(
        ms(0),
        A,
        Frame::Digest {
            partition: 1,
            reply: true,
            blocks: vec![block(0)],
        },
    );
    assert_eq!(s.stats().misrouted, 1);
    // Partition 0 is ours, but one of these two ids belongs to partition 1.
    let (own, foreign) = if mid(3, 0).partition(2) == 0 {
        (0, 1)
    } else {
        (1, 0)
    };
    s.handle_frame(
        ms(0),
        A,
        Frame::Digest {
            partition: 0,
            reply: false,
            blocks: vec![block(own), block(foreign)],
        },
    );
    assert_eq!(s.stats().misrouted, 2);
    assert_eq!(grafts(&drain(&mut s)), vec![(A, mid(3, own))]);
}
