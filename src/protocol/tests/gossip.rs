//! Eager and lazy push, prune and graft: how one message travels and how the tree
//! repairs itself when it does not arrive.

use super::*;

#[test]
fn new_neighbours_are_eager_up_to_fanout_then_lazy() {
    let s = shard(&[A, B, C, D]);
    assert_eq!(s.eager_peers(0).len(), 3);
    assert_eq!(s.lazy_peers(0).len(), 1);
    assert_eq!(s.neighbors().len(), 4);
}

#[test]
fn broadcast_gossips_to_eager_and_queues_ihave_for_lazy() {
    let mut s = shard(&[A, B, C, D]);
    let eager = sorted(s.eager_peers(0));
    let lazy = s.lazy_peers(0);
    s.broadcast(
        ms(10),
        mid(1, 0),
        Topic::default(),
        Bytes::from_static(b"x"),
    )
    .unwrap();
    let ev = drain(&mut s);
    assert_eq!(gossip_targets(&ev), eager);
    assert!(
        ev.iter().all(|e| !matches!(e, Event::Deliver { .. })),
        "own broadcast not delivered"
    );
    // IHave is not sent at once: a flush timer is armed at ihave_interval.
    assert!(sends(&ev)
        .iter()
        .all(|(_, f)| !matches!(f, Frame::IHave { .. })));
    let t = timers(&ev);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].0, ms(110));
    s.handle_timer(ms(110), t[0].1);
    let ev = drain(&mut s);
    let ih = sends(&ev);
    assert_eq!(ih.len(), 1);
    assert_eq!(ih[0].0, lazy[0]);
    assert_eq!(
        ih[0].1,
        Frame::IHave {
            entries: vec![IHaveEntry {
                id: mid(1, 0),
                round: 0
            }]
        }
    );
}

#[test]
fn received_gossip_is_delivered_once_and_forwarded_except_to_sender() {
    let mut s = shard(&[A, B, C]);
    s.handle_frame(ms(1), A, gossip(mid(9, 0), 2));
    let ev = drain(&mut s);
    let delivered: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Deliver { id, round, .. } => Some((*id, *round)),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, vec![(mid(9, 0), 3)]);
    assert_eq!(gossip_targets(&ev), vec![B, C]);
    for (_, f) in sends(&ev) {
        if let Frame::Gossip { round, .. } = f {
            assert_eq!(round, 3, "forwarded with round + 1");
        }
    }
    // The same message again: no delivery, a Prune back to the sender.
    s.handle_frame(ms(2), B, gossip(mid(9, 0), 1));
    let ev = drain(&mut s);
    assert!(ev.iter().all(|e| !matches!(e, Event::Deliver { .. })));
    // A PruneRoot for root 9, and a plain Prune since B never showed it knows
    // PruneRoot (an older node understands only that).
    assert_eq!(
        sends(&ev),
        vec![
            (
                B,
                Frame::PruneRoot {
                    partition: 0,
                    root: NodeId(9)
                }
            ),
            (B, Frame::Prune { partition: 0 })
        ]
    );
    assert_eq!(
        s.root_eager_peers(0, NodeId(9)).map(sorted),
        Some(vec![A, C])
    );
    // The template (the shared tree) follows every message's prunes.
    assert_eq!(sorted(s.eager_peers(0)), vec![A, C]);
    assert_eq!(s.lazy_peers(0), vec![B]);
    assert_eq!(s.stats().duplicates, 1);
}

#[test]
fn identical_payloads_with_distinct_ids_are_distinct_messages() {
    let mut s = shard(&[A]);
    s.handle_frame(ms(1), A, gossip(mid(9, 0), 0));
    s.handle_frame(ms(1), A, gossip(mid(9, 1), 0));
    let ev = drain(&mut s);
    let n = ev
        .iter()
        .filter(|e| matches!(e, Event::Deliver { .. }))
        .count();
    assert_eq!(n, 2);
}

#[test]
fn prune_threshold_counts_duplicates_before_pruning() {
    let mut s = shard_with(
        ProtocolConfig {
            prune_threshold: 2,
            ..cfg()
        },
        &[A, B],
    );
    s.handle_frame(ms(1), A, gossip(mid(9, 0), 0));
    s.handle_frame(ms(1), B, gossip(mid(9, 0), 0));
    drain(&mut s);
    assert!(s.eager_peers(0).contains(&B), "one duplicate is tolerated");
    s.handle_frame(ms(2), A, gossip(mid(9, 1), 0));
    s.handle_frame(ms(2), B, gossip(mid(9, 1), 0));
    let ev = drain(&mut s);
    assert_eq!(sends(&ev).last(), Some(&(B, Frame::Prune { partition: 0 })));
    assert!(!s.eager_peers(0).contains(&B));
}

#[test]
fn prune_moves_sender_to_lazy() {
    let mut s = shard(&[A, B]);
    s.handle_frame(ms(1), A, Frame::Prune { partition: 0 });
    assert_eq!(s.eager_peers(0), vec![B]);
    assert_eq!(s.lazy_peers(0), vec![A]);
    s.broadcast(ms(2), mid(1, 0), Topic::default(), Bytes::from_static(b"x"))
        .unwrap();
    let ev = drain(&mut s);
    assert_eq!(gossip_targets(&ev), vec![B]);
}

#[test]
fn ihave_for_unknown_message_grafts_after_timeout1_then_next_announcer_after_timeout2() {
    let mut s = shard(&[A, B, C]);
    let id = mid(9, 0);
    s.handle_frame(
        ms(0),
        A,
        Frame::IHave {
            entries: vec![IHaveEntry { id, round: 1 }],
        },
    );
    let ev = drain(&mut s);
    assert!(sends(&ev).is_empty(), "no graft before timeout1");
    let t = timers(&ev);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].0, ms(500));
    // A second announcer is remembered, without a second timer.
    s.handle_frame(
        ms(10),
        B,
        Frame::IHave {
            entries: vec![IHaveEntry { id, round: 2 }],
        },
    );
    assert!(timers(&drain(&mut s)).is_empty());

    s.handle_timer(ms(500), t[0].1);
    let ev = drain(&mut s);
    assert_eq!(
        sends(&ev),
        vec![(
            A,
            Frame::Graft {
                id,
                round: 1,
                request: true
            }
        )]
    );
    let t2 = timers(&ev);
    assert_eq!(
        t2[0].0,
        ms(1000),
        "timeout2 = graft_timeout for the first retry"
    );

    s.handle_timer(ms(1000), t2[0].1);
    let ev = drain(&mut s);
    assert_eq!(
        sends(&ev),
        vec![(
            B,
            Frame::Graft {
                id,
                round: 2,
                request: true
            }
        )]
    );
    assert_eq!(timers(&ev)[0].0, ms(2000), "backoff doubles");
    assert_eq!(s.stats().graft_retries, 1);
    // The grafted announcers became eager.
    assert!(s.eager_peers(0).contains(&A) && s.eager_peers(0).contains(&B));
}

#[test]
fn arrival_cancels_the_graft_timer() {
    let mut s = shard(&[A, B]);
    let id = mid(9, 0);
    s.handle_frame(
        ms(0),
        A,
        Frame::IHave {
            entries: vec![IHaveEntry { id, round: 1 }],
        },
    );
    let t = timers(&drain(&mut s));
    s.handle_frame(ms(100), B, gossip(id, 0));
    drain(&mut s);
    s.handle_timer(ms(500), t[0].1);
    let ev = drain(&mut s);
    assert!(
        sends(&ev).is_empty() && timers(&ev).is_empty(),
        "stale timer ignored"
    );
    assert_eq!(s.stats().pending_grafts, 0);
}

#[test]
fn graft_success_is_counted_when_the_grafted_message_arrives() {
    let mut s = shard(&[A]);
    let id = mid(9, 0);
    s.handle_frame(
        ms(0),
        A,
        Frame::IHave {
            entries: vec![IHaveEntry { id, round: 1 }],
        },
    );
    let t = timers(&drain(&mut s));
    s.handle_timer(ms(500), t[0].1);
    drain(&mut s);
    s.handle_frame(ms(520), A, gossip(id, 1));
    drain(&mut s);
    assert_eq!(s.stats().graft_success, 1);
}

#[test]
fn graft_gives_up_after_max_retries_with_graft_failed() {
    let mut s = shard_with(
        ProtocolConfig {
            graft_max_retries: 2,
            ..cfg()
        },
        &[A],
    );
    let id = mid(9, 0);
    s.handle_frame(
        ms(0),
        A,
        Frame::IHave {
            entries: vec![IHaveEntry { id, round: 1 }],
        },
    );
    let mut t = timers(&drain(&mut s));
    let mut grafts = 0;
    loop {
        let (at, timer) = t[0];
        s.handle_timer(at, timer);
        let ev = drain(&mut s);
        grafts += sends(&ev).len();
        if ev.contains(&Event::GraftFailed { id }) {
            break;
        }
        t = timers(&ev);
        assert_eq!(t.len(), 1);
    }
    assert_eq!(grafts, 3, "first graft plus graft_max_retries retries");
    assert_eq!(s.stats().graft_failed, 1);
    assert_eq!(s.stats().pending_grafts, 0);
}

#[test]
fn graft_wait_is_capped() {
    let mut s = shard_with(
        ProtocolConfig {
            graft_max_retries: 10,
            graft_max_backoff: ms(1500),
            ..cfg()
        },
        &[A],
    );
    let id = mid(9, 0);
    s.handle_frame(
        ms(0),
        A,
        Frame::IHave {
            entries: vec![IHaveEntry { id, round: 1 }],
        },
    );
    let mut t = timers(&drain(&mut s))[0];
    let mut waits = vec![];
    for _ in 0..5 {
        s.handle_timer(t.0, t.1);
        let next = timers(&drain(&mut s))[0];
        waits.push(next.0 - t.0);
        t = next;
    }
    assert_eq!(waits, vec![ms(500), ms(1000), ms(1500), ms(1500), ms(1500)]);
}

#[test]
fn graft_is_answered_from_cache_and_makes_the_grafter_eager() {
    let mut s = shard(&[A, B, C, D]);
    let lazy = s.lazy_peers(0)[0];
    s.broadcast(ms(0), mid(1, 0), Topic::default(), Bytes::from_static(b"p"))
        .unwrap();
    drain(&mut s);
    s.handle_frame(
        ms(5),
        lazy,
        Frame::Graft {
            id: mid(1, 0),
            round: 0,
            request: true,
        },
    );
    let ev = drain(&mut s);
    assert_eq!(
        sends(&ev),
        vec![(
            lazy,
            Frame::Gossip {
                id: mid(1, 0),
                round: 0,
                topic: Topic::default(),
                payload: Bytes::from_static(b"p")
            }
        )]
    );
    assert!(s.eager_peers(0).contains(&lazy));
    // A graft for an uncached message makes the peer eager but sends nothing.
    s.handle_frame(
        ms(6),
        lazy,
        Frame::Graft {
            id: mid(1, 99),
            round: 0,
            request: true,
        },
    );
    assert!(sends(&drain(&mut s)).is_empty());
    assert_eq!(s.stats().graft_unanswerable, 1);
}
