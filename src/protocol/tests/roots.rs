//! Per-root trees: each origin's messages prune and graft their own tree, starting
//! from the partition's template.

use super::*;

#[test]
fn prune_on_one_roots_message_leaves_another_roots_tree_untouched() {
    let mut s = shard(&[A, B, C]);
    // Root 9 and root 10 both deliver through A first, so both trees exist.
    s.handle_frame(ms(1), A, gossip(mid(9, 0), 0));
    s.handle_frame(ms(1), A, gossip(mid(10, 0), 0));
    drain(&mut s);
    let before = s.root_eager_peers(0, NodeId(10)).map(sorted);
    // A duplicate of root 9's message from B prunes B in root 9's tree only.
    s.handle_frame(ms(2), B, gossip(mid(9, 0), 0));
    drain(&mut s);
    assert!(!s.root_eager_peers(0, NodeId(9)).unwrap().contains(&B));
    assert_eq!(s.root_eager_peers(0, NodeId(10)).map(sorted), before);
    assert!(before.unwrap().contains(&B));
    // And a PruneRoot from C for root 10 leaves root 9's tree alone.
    let nine = s.root_eager_peers(0, NodeId(9)).map(sorted);
    s.handle_frame(
        ms(3),
        C,
        Frame::PruneRoot {
            partition: 0,
            root: NodeId(10),
        },
    );
    assert!(!s.root_eager_peers(0, NodeId(10)).unwrap().contains(&C));
    assert_eq!(s.root_eager_peers(0, NodeId(9)).map(sorted), nine);
}

#[test]
fn a_new_root_starts_from_the_template() {
    let mut s = shard(&[A, B, C, D]);
    // Root 5 (the lowest id, so the designated root) gets a tree; B is pruned in it.
    s.handle_frame(ms(1), A, gossip(mid(5, 0), 0));
    s.handle_frame(ms(1), B, gossip(mid(5, 0), 0));
    drain(&mut s);
    let template = sorted(s.eager_peers(0));
    assert_eq!(
        s.root_eager_peers(0, NodeId(5)).map(sorted),
        Some(template.clone())
    );
    assert!(!template.contains(&B));
    // A root seen for the first time copies it: its first message goes to the
    // template's eager peers (minus the sender), and nowhere else eagerly.
    s.handle_frame(ms(2), A, gossip(mid(30, 0), 0));
    let ev = drain(&mut s);
    let mut expect: Vec<NodeId> = template.iter().copied().filter(|&p| p != A).collect();
    expect.sort();
    assert_eq!(gossip_targets(&ev), expect);
    assert_eq!(
        s.root_eager_peers(0, NodeId(30)).map(sorted),
        Some(template)
    );
    assert_eq!(s.stats().roots, 2);
}

#[test]
fn an_evicted_root_falls_back_to_the_template() {
    let mut s = shard_with(
        ProtocolConfig {
            max_roots: 2,
            ..cfg()
        },
        &[A, B, C],
    );
    s.handle_frame(ms(1), A, gossip(mid(5, 0), 0));
    s.handle_frame(ms(1), A, gossip(mid(20, 0), 0));
    s.handle_frame(ms(1), B, gossip(mid(20, 0), 0));
    drain(&mut s);
    assert!(!s.root_eager_peers(0, NodeId(20)).unwrap().contains(&B));
    // Root 5 is used again, so root 20 is the least recently used when root 21
    // needs a slot.
    s.handle_frame(ms(2), A, gossip(mid(5, 1), 0));
    s.handle_frame(ms(2), A, gossip(mid(21, 0), 0));
    drain(&mut s);
    assert_eq!(s.stats().root_evictions, 1);
    assert_eq!(s.root_eager_peers(0, NodeId(20)), None);
    // Root 20 again: its tree is the template's again (B eager).
    s.handle_frame(ms(3), C, gossip(mid(20, 1), 0));
    drain(&mut s);
    assert_eq!(
        s.root_eager_peers(0, NodeId(20)).map(sorted),
        Some(sorted(s.eager_peers(0)))
    );
    assert!(s.root_eager_peers(0, NodeId(20)).unwrap().contains(&B));
}

#[test]
fn neighbour_down_purges_every_roots_tree_and_up_joins_them_eager() {
    let mut s = shard(&[A, B, C]);
    for r in [9, 10, 11] {
        s.handle_frame(ms(1), A, gossip(mid(r, 0), 0));
    }
    drain(&mut s);
    for r in [9, 10, 11] {
        assert!(s.root_eager_peers(0, NodeId(r)).unwrap().contains(&B));
    }
    assert!(s.neighbor_down(ms(2), B));
    for r in [9, 10, 11] {
        assert!(!s.root_eager_peers(0, NodeId(r)).unwrap().contains(&B));
    }
    assert!(s.neighbor_up(ms(3), D));
    for r in [9, 10, 11] {
        assert!(s.root_eager_peers(0, NodeId(r)).unwrap().contains(&D));
    }
}

#[test]
fn prune_and_graft_naming_an_unknown_root_are_counted_and_ignored() {
    let mut s = shard(&[A, B]);
    for r in 0..1000u64 {
        s.handle_frame(
            ms(1),
            A,
            Frame::PruneRoot {
                partition: 0,
                root: NodeId(1000 + r),
            },
        );
        s.handle_frame(
            ms(1),
            B,
            Frame::Graft {
                id: mid(5000 + r, 0),
                round: 0,
                request: false,
            },
        );
    }
    assert_eq!(s.stats().unknown_roots, 2000);
    assert_eq!(s.stats().roots, 0, "no state for roots never seen");
    assert!(drain(&mut s).is_empty());
}

#[test]
fn a_plain_prune_from_an_older_node_covers_every_root_of_the_partition() {
    let mut s = shard(&[A, B, C]);
    s.handle_frame(ms(1), A, gossip(mid(9, 0), 0));
    s.handle_frame(ms(1), A, gossip(mid(10, 0), 0));
    drain(&mut s);
    // B never sent a PruneRoot: its Prune is an older node's "nothing of partition 0".
    s.handle_frame(ms(2), B, Frame::Prune { partition: 0 });
    for r in [9, 10] {
        assert!(!s.root_eager_peers(0, NodeId(r)).unwrap().contains(&B));
    }
    // C speaks PruneRoot: its plain Prune next to one only concerns that root.
    s.handle_frame(
        ms(3),
        C,
        Frame::PruneRoot {
            partition: 0,
            root: NodeId(9),
        },
    );
    s.handle_frame(ms(3), C, Frame::Prune { partition: 0 });
    assert!(!s.root_eager_peers(0, NodeId(9)).unwrap().contains(&C));
    assert!(s.root_eager_peers(0, NodeId(10)).unwrap().contains(&C));
    // And once C is known to speak PruneRoot, prunes to it come without the Prune.
    s.handle_frame(ms(4), A, gossip(mid(10, 1), 0));
    s.handle_frame(ms(4), C, gossip(mid(10, 1), 0));
    let ev = drain(&mut s);
    assert_eq!(
        sends(&ev).last(),
        Some(&(
            C,
            Frame::PruneRoot {
                partition: 0,
                root: NodeId(10)
            }
        ))
    );
    assert!(!sends(&ev).contains(&(C, Frame::Prune { partition: 0 })));
}

#[test]
fn silent_roots_expire_at_cleanup() {
    let mut s = shard(&[A]);
    s.handle_frame(ms(1), A, gossip(mid(9, 0), 0));
    drain(&mut s);
    assert_eq!(s.stats().roots, 1);
    let ttl = s.config().message_cache_ttl;
    s.cleanup(ttl + ms(10), 1024);
    assert_eq!(s.stats().roots, 0);
    assert_eq!(s.stats().root_expirations, 1);
}

#[test]
fn a_push_in_flight_after_a_prune_does_not_tear_the_roots_tree() {
    let mut s = shard(&[A, B, C]);
    // m1 of root 9: first from A, then from B, so B is pruned in root 9's tree.
    s.handle_frame(ms(1), A, gossip(mid(9, 0), 0));
    s.handle_frame(ms(1), B, gossip(mid(9, 0), 0));
    drain(&mut s);
    assert!(!s.root_eager_peers(0, NodeId(9)).unwrap().contains(&B));
    // m2 of root 9 was already on its way from B when B got the prune: it arrives
    // first. B does not rejoin the tree...
    s.handle_frame(ms(2), B, gossip(mid(9, 1), 0));
    drain(&mut s);
    assert!(!s.root_eager_peers(0, NodeId(9)).unwrap().contains(&B));
    // ...and the copy from A, the tree's own link, is kept: B is pruned again, A not.
    s.handle_frame(ms(3), A, gossip(mid(9, 1), 0));
    let ev = drain(&mut s);
    assert_eq!(
        sends(&ev).first(),
        Some(&(
            B,
            Frame::PruneRoot {
                partition: 0,
                root: NodeId(9)
            }
        ))
    );
    assert!(s.root_eager_peers(0, NodeId(9)).unwrap().contains(&A));
}
