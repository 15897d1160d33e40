//! Neighbour changes, IHave batching, the hop-count optimisation, maintenance, flood
//! mode and the per-neighbour link counts.

use super::*;

#[test]
fn neighbour_down_purges_sets_and_pending_announcers() {
    let mut s = shard(&[A, B, C, D]);
    let id = mid(9, 0);
    s.handle_frame(
        ms(0),
        A,
        Frame::IHave {
            entries: vec![IHaveEntry { id, round: 1 }],
        },
    );
    s.handle_frame(
        ms(0),
        B,
        Frame::IHave {
            entries: vec![IHaveEntry { id, round: 1 }],
        },
    );
    let t = timers(&drain(&mut s));
    assert!(s.neighbor_down(ms(1), A));
    assert!(!s.neighbors().contains(&A));
    assert!(!s.eager_peers(0).contains(&A) && !s.lazy_peers(0).contains(&A));
    s.handle_timer(ms(500), t[0].1);
    let ev = drain(&mut s);
    assert_eq!(
        sends(&ev),
        vec![(
            B,
            Frame::Graft {
                id,
                round: 1,
                request: true
            }
        )],
        "A was purged"
    );
    assert!(!s.neighbor_down(ms(1), A));
}

#[test]
fn neighbour_down_keeps_masks_consistent_for_moved_neighbour() {
    let mut s = shard(&[A, B, C, D]);
    let eager_before: Vec<NodeId> = s.eager_peers(0);
    s.neighbor_down(ms(1), A);
    let mut expect: Vec<NodeId> = eager_before.into_iter().filter(|&p| p != A).collect();
    expect.sort();
    assert_eq!(sorted(s.eager_peers(0)), expect);
    let mut all = s.eager_peers(0);
    all.extend(s.lazy_peers(0));
    assert_eq!(sorted(all), vec![B, C, D]);
}

#[test]
fn ihave_batch_size_flushes_immediately() {
    let mut s = shard_with(
        ProtocolConfig {
            eager_fanout: 1,
            ihave_batch_size: 3,
            ..cfg()
        },
        &[A, B],
    );
    let lazy = s.lazy_peers(0)[0];
    for seq in 0..3 {
        s.broadcast(
            ms(seq),
            mid(1, seq),
            Topic::default(),
            Bytes::from_static(b"x"),
        )
        .unwrap();
    }
    let ev = drain(&mut s);
    let ihaves: Vec<_> = sends(&ev)
        .into_iter()
        .filter(|(_, f)| matches!(f, Frame::IHave { .. }))
        .collect();
    assert_eq!(ihaves.len(), 1);
    assert_eq!(ihaves[0].0, lazy);
    if let Frame::IHave { entries } = &ihaves[0].1 {
        assert_eq!(entries.len(), 3);
    }
    assert_eq!(s.stats().ihave_queue, 0);
}

#[test]
fn lazy_fanout_limits_ihave_targets() {
    let peers: Vec<NodeId> = (10..20).map(NodeId).collect();
    let mut s = shard_with(
        ProtocolConfig {
            eager_fanout: 1,
            lazy_fanout: 4,
            ..cfg()
        },
        &peers,
    );
    s.broadcast(ms(0), mid(1, 0), Topic::default(), Bytes::from_static(b"x"))
        .unwrap();
    let t = timers(&drain(&mut s));
    s.handle_timer(ms(100), t[0].1);
    let ev = drain(&mut s);
    assert_eq!(sends(&ev).len(), 4);
}

#[test]
fn hop_count_optimisation_relinks_to_closer_announcer() {
    let mut s = shard_with(
        ProtocolConfig {
            optimization_threshold: 2,
            ..cfg()
        },
        &[A, B],
    );
    let id = mid(9, 0);
    // Delivered by A after 6 hops (frame round 5).
    s.handle_frame(ms(0), A, gossip(id, 5));
    drain(&mut s);
    // B announces round 1: via B we would be 2 hops away; 6 - 2 >= threshold.
    s.handle_frame(
        ms(1),
        B,
        Frame::IHave {
            entries: vec![IHaveEntry { id, round: 1 }],
        },
    );
    let ev = drain(&mut s);
    assert_eq!(
        sends(&ev),
        vec![
            (
                B,
                Frame::Graft {
                    id,
                    round: 1,
                    request: false
                }
            ),
            (
                A,
                Frame::PruneRoot {
                    partition: 0,
                    root: NodeId(9)
                }
            ),
            (A, Frame::Prune { partition: 0 }),
        ]
    );
    // Only root 9's tree is re-linked (root 9 is also the designated root here, so
    // the template, which is its tree, shows the same).
    assert_eq!(s.root_eager_peers(0, NodeId(9)), Some(vec![B]));
    assert_eq!(s.eager_peers(0), vec![B]);
    assert_eq!(s.stats().optimizations, 1);
    // Not below the threshold: nothing happens.
    let id2 = mid(9, 1);
    s.handle_frame(ms(2), B, gossip(id2, 2));
    drain(&mut s);
    s.handle_frame(
        ms(3),
        A,
        Frame::IHave {
            entries: vec![IHaveEntry { id: id2, round: 1 }],
        },
    );
    assert!(sends(&drain(&mut s)).is_empty());
}

#[test]
fn graft_without_request_only_relinks() {
    let mut s = shard_with(
        ProtocolConfig {
            eager_fanout: 1,
            ..cfg()
        },
        &[A, B],
    );
    let lazy = s.lazy_peers(0)[0];
    s.broadcast(ms(0), mid(1, 0), Topic::default(), Bytes::from_static(b"x"))
        .unwrap();
    drain(&mut s);
    s.handle_frame(
        ms(1),
        lazy,
        Frame::Graft {
            id: mid(1, 0),
            round: 0,
            request: false,
        },
    );
    let ev = drain(&mut s);
    assert!(sends(&ev).is_empty());
    assert!(s.eager_peers(0).contains(&lazy));
}

#[test]
fn maintenance_promotes_a_lazy_peer_when_eager_set_is_empty() {
    let mut s = shard(&[A, B]);
    s.handle_frame(ms(0), A, Frame::Prune { partition: 0 });
    s.handle_frame(ms(0), B, Frame::Prune { partition: 0 });
    assert!(s.eager_peers(0).is_empty());
    s.maintenance(ms(2000));
    assert_eq!(s.eager_peers(0).len(), 1);
    assert_eq!(s.stats().peer_promotions, 1);
    s.maintenance(ms(4000));
    assert_eq!(s.stats().peer_promotions, 1, "nothing to repair");
}

#[test]
fn flood_mode_pushes_to_every_neighbour_and_never_prunes() {
    let mut s = shard_with(
        ProtocolConfig {
            mode: Mode::Flood,
            ..cfg()
        },
        &[A, B, C, D],
    );
    s.handle_frame(ms(0), A, gossip(mid(9, 0), 0));
    let ev = drain(&mut s);
    assert_eq!(gossip_targets(&ev), vec![B, C, D]);
    assert!(timers(&ev).is_empty(), "no lazy push");
    s.handle_frame(ms(1), B, gossip(mid(9, 0), 0));
    assert!(sends(&drain(&mut s)).is_empty());
}

#[test]
fn peer_links_count_eager_and_lazy_partitions_per_neighbour() {
    let mut s = Shard::new(
        ME,
        0b1111,
        ProtocolConfig {
            partitions: 4,
            eager_fanout: 1,
            ..ProtocolConfig::default()
        },
        1,
    )
    .unwrap();
    s.neighbor_up(ms(0), A);
    s.neighbor_up(ms(0), B);
    let links = s.peer_links();
    assert_eq!(links.len(), 2);
    for &(_, eager, lazy) in &links {
        assert_eq!(eager + lazy, 4);
    }
    // One eager peer per partition.
    assert_eq!(links.iter().map(|l| l.1).sum::<u32>(), 4);
}
