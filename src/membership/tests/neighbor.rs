//! Neighbour requests: priorities, rejections, resends and disconnects.

use super::*;

#[test]
fn low_priority_neighbor_is_accepted_with_room() {
    let (mut m, _) = node_with(&[A], &[]);
    m.handle(
        ms(1),
        B,
        Message::Neighbor {
            high_priority: false,
        },
    );
    let ev = drain(&mut m);
    assert_eq!(ups(&ev), vec![B]);
    assert_eq!(
        sends(&ev),
        vec![(B, Message::NeighborReply { accepted: true })]
    );
}

#[test]
fn low_priority_neighbor_is_rejected_when_full() {
    let (mut m, _) = node_with(&[A, B, C, D, E], &[]);
    m.handle(
        ms(1),
        F,
        Message::Neighbor {
            high_priority: false,
        },
    );
    let ev = drain(&mut m);
    assert!(ups(&ev).is_empty() && downs(&ev).is_empty());
    assert_eq!(
        sends(&ev),
        vec![(F, Message::NeighborReply { accepted: false })]
    );
}

#[test]
fn high_priority_neighbor_is_accepted_when_full_by_dropping_one() {
    let (mut m, _) = node_with(&[A, B, C, D, E], &[]);
    m.handle(
        ms(1),
        F,
        Message::Neighbor {
            high_priority: true,
        },
    );
    let ev = drain(&mut m);
    assert_eq!(ups(&ev), vec![F]);
    assert_eq!(downs(&ev).len(), 1);
    assert!(sends(&ev).contains(&(F, Message::NeighborReply { accepted: true })));
    assert_eq!(m.active().len(), 5);
    assert_eq!(m.passive(), downs(&ev).as_slice());
}

#[test]
fn disconnect_moves_neighbour_to_passive_and_promotes_with_low_priority() {
    let (mut m, _) = node_with(&[A, B], &[C]);
    m.handle(ms(1), A, Message::Disconnect);
    let ev = drain(&mut m);
    assert_eq!(downs(&ev), vec![A]);
    assert_eq!(
        sends(&ev),
        vec![(
            C,
            Message::Neighbor {
                high_priority: false
            }
        )]
    );
    assert!(timers(&ev).iter().any(
        |(at, t)| matches!(t, Timer::NeighborDeadline { peer, .. } if *peer == C)
            && *at == ms(1) + secs(1)
    ));
    assert_eq!(sorted(m.passive().to_vec()), vec![A, C]);
    assert_eq!(m.stats().disconnects, 1);
    // C accepts: it moves from passive to active.
    m.handle(ms(2), C, Message::NeighborReply { accepted: true });
    let ev = drain(&mut m);
    assert_eq!(ups(&ev), vec![C]);
    assert_eq!(sorted(m.active().to_vec()), vec![B, C]);
    assert_eq!(m.passive(), &[A]);
    assert_eq!(m.stats().promotions, 1);
}

#[test]
fn losing_the_last_neighbour_promotes_with_high_priority() {
    let (mut m, _) = node_with(&[A], &[C]);
    m.handle(ms(1), A, Message::Disconnect);
    let ev = drain(&mut m);
    assert_eq!(
        sends(&ev),
        vec![(
            C,
            Message::Neighbor {
                high_priority: true
            }
        )]
    );
}

#[test]
fn rejected_request_tries_another_passive_node_once_per_round() {
    let (mut m, _) = node_with(&[A], &[B, C]);
    m.handle(ms(1), A, Message::Disconnect);
    let ev = drain(&mut m);
    let (first, _) = sends(&ev)[0].clone();
    assert!(first == B || first == C);
    m.handle(ms(2), first, Message::NeighborReply { accepted: false });
    let ev = drain(&mut m);
    let s = sends(&ev);
    assert_eq!(s.len(), 1);
    let second = s[0].0;
    assert!(second != first && (second == B || second == C));
    // The rejecting node stays passive.
    assert!(m.passive().contains(&first));
    m.handle(ms(3), second, Message::NeighborReply { accepted: false });
    // Everyone was tried this round (A, which just disconnected us, included).
    assert!(sends(&drain(&mut m)).is_empty());
}

#[test]
fn unsolicited_acceptance_is_answered_with_disconnect() {
    let (mut m, _) = node_with(&[A], &[]);
    m.handle(ms(1), B, Message::NeighborReply { accepted: true });
    let ev = drain(&mut m);
    assert_eq!(sends(&ev), vec![(B, Message::Disconnect)]);
    assert!(ups(&ev).is_empty());
    assert!(!m.is_active(B));
}

#[test]
fn acceptance_after_view_filled_is_undone() {
    let (mut m, _) = node_with(&[A, B, C, D, E], &[F]);
    m.handle(ms(1), A, Message::Disconnect);
    let ev = drain(&mut m);
    assert!(sends(&ev).iter().any(|(to, _)| *to == F));
    m.handle(
        ms(2),
        X,
        Message::Neighbor {
            high_priority: false,
        },
    );
    drain(&mut m);
    assert_eq!(m.active().len(), 5);
    m.handle(ms(3), F, Message::NeighborReply { accepted: true });
    let ev = drain(&mut m);
    assert_eq!(sends(&ev), vec![(F, Message::Disconnect)]);
    assert!(!m.is_active(F));
}

#[test]
fn unanswered_request_is_sent_once_more_then_drops_the_passive_node() {
    let (mut m, _) = node_with(&[A, B], &[C, D, E]);
    m.handle(ms(1), A, Message::Disconnect);
    let ev = drain(&mut m);
    let (asked, first) = sends(&ev)[0].clone();
    let deadline = |ev: &[Event], peer: NodeId| {
        timers(ev)
            .into_iter()
            .find(|(_, t)| matches!(t, Timer::NeighborDeadline { peer: p, .. } if *p == peer))
            .unwrap()
    };
    // First silence: the same request again (it or its answer may have been lost),
    // and, since the node is probably dead, another passive node asked at once.
    let (at, t) = deadline(&ev, asked);
    m.handle_timer(at, t);
    let ev = drain(&mut m);
    let s = sends(&ev);
    assert_eq!(s.len(), 2);
    assert_eq!(s[0], (asked, first));
    let other = s[1].0;
    assert!(other != asked && other != A, "asked {other:?}");
    assert!(m.passive().contains(&asked));
    // The first deadline is stale now.
    m.handle_timer(at, t);
    assert!(drain(&mut m).is_empty());
    // Second silence: presumed dead, dropped, and the last passive node is asked.
    let (at, t) = deadline(&ev, asked);
    m.handle_timer(at, t);
    let ev = drain(&mut m);
    assert!(!m.passive().contains(&asked));
    let s = sends(&ev);
    assert_eq!(s.len(), 1);
    assert!(![asked, other, A].contains(&s[0].0));
    m.handle_timer(at, t);
    assert!(drain(&mut m).is_empty());
}

#[test]
fn answer_to_the_resent_request_is_taken() {
    let (mut m, _) = node_with(&[A, B], &[C]);
    m.handle(ms(1), A, Message::Disconnect);
    let ev = drain(&mut m);
    let (at, t) = timers(&ev)
        .into_iter()
        .find(|(_, t)| matches!(t, Timer::NeighborDeadline { peer, .. } if *peer == C))
        .unwrap();
    m.handle_timer(at, t);
    drain(&mut m);
    m.handle(at + ms(20), C, Message::NeighborReply { accepted: true });
    let ev = drain(&mut m);
    assert_eq!(ups(&ev), vec![C]);
    assert_eq!(m.stats().promotions, 1);
}

#[test]
fn disconnect_from_a_stranger_changes_nothing() {
    let (mut m, _) = node_with(&[A], &[C]);
    m.handle(ms(1), B, Message::Disconnect);
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.active(), &[A]);
    assert_eq!(m.stats().disconnects, 0);
}
