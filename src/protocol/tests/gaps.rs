//! Known gaps: holes nothing can fill are reported once, forged or filled ones never.

use super::*;

fn gaps(events: &[Event]) -> Vec<gap::Gap> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Gap(g) => Some(*g),
            _ => None,
        })
        .collect()
}

fn secs(v: u64) -> Time {
    Duration::from_secs(v)
}

#[test]
fn a_hole_nothing_fills_is_reported_once_after_the_cache_ttl() {
    let mut s = shard(&[A]);
    s.handle_frame(secs(1), A, gossip(mid(9, 0), 0));
    s.handle_frame(secs(1), A, gossip(mid(9, 3), 0));
    drain(&mut s);
    assert_eq!(s.stats().pending_holes, 1);
    // Still within message_cache_ttl (60 s) + grace: a neighbour may still have them.
    s.cleanup(secs(60), 1000);
    assert!(gaps(&drain(&mut s)).is_empty());
    s.cleanup(secs(65), 1000);
    let g = gaps(&drain(&mut s));
    assert_eq!(g.len(), 1);
    assert_eq!((g[0].origin, g[0].missed), (NodeId(9), 2));
    assert_eq!(g[0].reason, gap::GapReason::Expired);
    assert_eq!(s.stats().unrecoverable.expired, 2);
    assert_eq!(s.stats().pending_holes, 0);
    s.cleanup(secs(200), 1000);
    assert!(gaps(&drain(&mut s)).is_empty(), "reported once");
}

#[test]
fn a_gap_filled_by_a_late_digest_is_never_reported() {
    // 1 and 2 of origin 9 were lost here; 50 s later a neighbour's digest lists them,
    // this shard pulls them, and nothing is ever reported.
    let mut s = shard(&[A, B]);
    s.handle_frame(secs(1), A, gossip(mid(9, 0), 0));
    s.handle_frame(secs(1), A, gossip(mid(9, 3), 0));
    drain(&mut s);
    let mut d = crate::protocol::digest::DigestBuilder::new(1, 8);
    for seq in 0..4 {
        d.add(mid(9, seq));
    }
    let (partition, blocks) = d.finish().pop().unwrap();
    s.handle_frame(
        secs(51),
        B,
        Frame::Digest {
            partition,
            reply: false,
            blocks,
        },
    );
    let pulled = grafts(&drain(&mut s));
    assert_eq!(pulled, vec![(B, mid(9, 1)), (B, mid(9, 2))]);
    for (_, id) in pulled {
        s.handle_frame(secs(51), B, gossip(id, 3));
    }
    drain(&mut s);
    for t in [60, 65, 120, 400] {
        s.cleanup(secs(t), 1000);
        assert!(gaps(&drain(&mut s)).is_empty(), "at {t} s");
    }
    assert_eq!(s.stats().unrecoverable.total(), 0);
}

#[test]
fn a_forged_digest_never_creates_a_gap() {
    // A digest announcing ids far past anything delivered costs at most the pull
    // budget, and since only deliveries open holes, nothing is ever reported.
    let mut s = shard_with(
        ProtocolConfig {
            anti_entropy_max_pulls: 4,
            ..cfg()
        },
        &[A],
    );
    s.handle_frame(secs(1), A, gossip(mid(9, 0), 0));
    drain(&mut s);
    let blocks: Vec<crate::wire::DigestBlock> = (0..crate::wire::DIGEST_MAX_BLOCKS as u64)
        .map(|k| crate::wire::DigestBlock {
            origin: NodeId(9),
            first: 1_000_000_000 + 64 * k,
            bits: u64::MAX,
        })
        .collect();
    s.handle_frame(
        secs(2),
        A,
        Frame::Digest {
            partition: 0,
            reply: false,
            blocks,
        },
    );
    assert_eq!(grafts(&drain(&mut s)).len(), 4, "the pull budget");
    for t in [10, 70, 400] {
        s.cleanup(secs(t), 1000);
        assert!(gaps(&drain(&mut s)).is_empty(), "at {t} s");
    }
    assert_eq!(s.stats().pending_holes, 0);
    assert_eq!(s.stats().unrecoverable.total(), 0);
}

#[test]
fn rounds_walk_the_whole_cache_oldest_first() {
    let mut s = shard_with(
        ProtocolConfig {
            anti_entropy_max_blocks: 2,
            ..cfg()
        },
        &[A],
    );
    // Five origins, one block each, cached in order.
    for origin in 10..15 {
        s.handle_frame(ms(origin), A, gossip(mid(origin, 0), 0));
    }
    drain(&mut s);
    let mut covered = Vec::new();
    for round in 0..4 {
        s.anti_entropy(ms(1000 + round));
        let d = digests(&drain(&mut s));
        covered.push(d.iter().flat_map(|x| x.3.clone()).collect::<Vec<_>>());
    }
    let ids = |o: &[u64]| o.iter().map(|&o| mid(o, 0)).collect::<Vec<_>>();
    assert_eq!(covered[0], ids(&[10, 11]));
    assert_eq!(covered[1], ids(&[12, 13]));
    assert_eq!(covered[2], ids(&[14]));
    assert_eq!(covered[3], ids(&[10, 11]), "the cursor wraps to the oldest");
}

#[test]
fn a_neighbour_whose_digests_show_messages_missing_gets_the_rounds_until_they_agree() {
    let peers = [A, B, C, D];
    let mut s = shard(&peers);
    s.handle_frame(ms(0), A, gossip(mid(9, 0), 0));
    drain(&mut s);
    // C's digest lists two messages this shard lacks.
    let mut d = crate::protocol::digest::DigestBuilder::new(1, 8);
    d.add(mid(8, 0));
    d.add(mid(8, 1));
    let (partition, blocks) = d.finish().pop().unwrap();
    s.handle_frame(
        ms(900),
        C,
        Frame::Digest {
            partition,
            reply: false,
            blocks,
        },
    );
    drain(&mut s);
    // The next round goes to C, not to a random neighbour.
    s.anti_entropy(ms(1000));
    let d = digests(&drain(&mut s));
    assert_eq!(d[0].0, C);
    assert_eq!(s.stats().anti_entropy_partner_rounds, 1);
    // C's reply shows nothing more missing; once a pass of the cursor ends without
    // news from C, rounds are random again.
    let mut targets = Vec::new();
    for round in 0..40 {
        s.anti_entropy(ms(2000 + 1000 * round));
        targets.extend(digests(&drain(&mut s)).into_iter().map(|x| x.0));
    }
    assert!(targets.iter().any(|&t| t != C), "{targets:?}");
    assert!(s.stats().anti_entropy_partner_rounds <= 2);
}

#[test]
fn the_anti_entropy_window_and_the_seen_retention_are_bounded_by_the_cache_ttl() {
    let d = ProtocolConfig::default();
    assert_eq!(
        d.anti_entropy_window, d.message_cache_ttl,
        "everything cached is announced"
    );
    let e = ProtocolConfig {
        anti_entropy_window: d.message_cache_ttl + ms(1),
        ..d.clone()
    }
    .validate()
    .unwrap_err();
    assert_eq!(e.key, "anti_entropy_window");
    let e = ProtocolConfig {
        seen_idle_retention: d.message_cache_ttl - ms(1),
        ..d.clone()
    }
    .validate()
    .unwrap_err();
    assert_eq!(e.key, "seen_idle_retention");
    assert!(d.validate().is_ok());
}
