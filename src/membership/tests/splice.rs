//! Splices: short views asking full nodes to make room, and the offers that answer.

use super::*;
use crate::membership::hyparview::SPLICE_AFTER_ROUNDS;

/// Fires `n` heartbeat rounds, one a second, answering every Neighbor request with a
/// refusal (everyone else is full); returns all events and the next heartbeat timer.
fn refused_rounds(
    m: &mut Membership,
    mut hb: (Time, Timer),
    n: usize,
) -> (Vec<Event>, (Time, Timer)) {
    let mut all = Vec::new();
    for _ in 0..n {
        m.handle_timer(hb.0, hb.1);
        let mut ev = drain(m);
        hb = last_heartbeat(&ev).expect("heartbeat re-armed");
        loop {
            let refusals: Vec<NodeId> = sends(&ev)
                .into_iter()
                .filter(|(_, msg)| matches!(msg, Message::Neighbor { .. }))
                .map(|(to, _)| to)
                .collect();
            all.append(&mut ev);
            if refusals.is_empty() {
                break;
            }
            for to in refusals {
                m.handle(
                    hb.0 - ms(500),
                    to,
                    Message::NeighborReply { accepted: false },
                );
            }
            ev = drain(m);
        }
    }
    (all, hb)
}

fn splices_sent(events: &[Event]) -> Vec<(NodeId, NodeId)> {
    sends(events)
        .into_iter()
        .filter_map(|(to, msg)| match msg {
            Message::Splice { partner } => Some((to, partner)),
            _ => None,
        })
        .collect()
}

#[test]
fn short_node_with_a_short_neighbour_asks_a_full_node_to_splice_once_stuck() {
    let (mut m, ev) = node_with(&[A, B, C, D], &[E, F]);
    m.handle(ms(1), B, Message::Heartbeat { short: true });
    let hb = last_heartbeat(&ev).unwrap();
    let (ev, hb) = refused_rounds(&mut m, hb, SPLICE_AFTER_ROUNDS as usize - 1);
    assert!(splices_sent(&ev).is_empty(), "spliced too early");
    let (ev, _) = refused_rounds(&mut m, hb, 1);
    let s = splices_sent(&ev);
    assert_eq!(s.len(), 1);
    assert!([E, F].contains(&s[0].0));
    assert_eq!(s[0].1, B, "the short neighbour is the partner");
    // The full node's acceptance comes in as an answer to a request.
    m.handle(
        hb.0 + ms(5),
        s[0].0,
        Message::NeighborReply { accepted: true },
    );
    let ev = drain(&mut m);
    assert_eq!(ups(&ev), vec![s[0].0]);
    assert_eq!(m.active().len(), 5);
}

#[test]
fn node_short_by_two_splices_itself_in() {
    let (mut m, ev) = node_with(&[A, B, C], &[E]);
    let (ev, _) = refused_rounds(
        &mut m,
        last_heartbeat(&ev).unwrap(),
        SPLICE_AFTER_ROUNDS as usize,
    );
    assert_eq!(splices_sent(&ev), vec![(E, ME)]);
}

#[test]
fn lone_short_node_or_the_higher_id_of_a_pair_never_splices() {
    // No short neighbour: when the total room is odd, one view stays short, quietly.
    let (mut m, ev) = node_with(&[A, B, C, D], &[E, F]);
    let (ev, _) = refused_rounds(&mut m, last_heartbeat(&ev).unwrap(), 10);
    assert!(splices_sent(&ev).is_empty());
    // A short neighbour with a lower id: that one asks, not us.
    let low = NodeId(0);
    let (mut m, ev) = node_with(&[A, B, C, low], &[E, F]);
    m.handle(ms(1), low, Message::Heartbeat { short: true });
    let (ev, _) = refused_rounds(&mut m, last_heartbeat(&ev).unwrap(), 10);
    assert!(splices_sent(&ev).is_empty());
}

#[test]
fn a_full_view_resets_the_short_round_count() {
    let (mut m, ev) = node_with(&[A, B, C, D], &[E, F]);
    m.handle(ms(1), B, Message::Heartbeat { short: true });
    let (_, hb) = refused_rounds(&mut m, last_heartbeat(&ev).unwrap(), 2);
    // Full for one round, short again: the count starts over.
    m.handle(
        hb.0 - ms(1),
        X,
        Message::Neighbor {
            high_priority: false,
        },
    );
    let (_, hb) = refused_rounds(&mut m, hb, 1);
    m.handle(hb.0 - ms(1), X, Message::Disconnect);
    drain(&mut m);
    let (ev, _) = refused_rounds(&mut m, hb, 2);
    assert!(splices_sent(&ev).is_empty());
}

#[test]
fn two_short_neighbours_are_introduced_lower_id_first() {
    let (mut m, ev) = node_with(&[A, B, C, D, E], &[]);
    m.handle(ms(1), D, Message::Heartbeat { short: true });
    m.handle(ms(1), B, Message::Heartbeat { short: true });
    let (ev, hb) = heartbeats(&mut m, last_heartbeat(&ev).unwrap(), secs(1));
    let intro: Vec<_> = sends(&ev)
        .into_iter()
        .filter(|(_, msg)| matches!(msg, Message::Introduce { .. }))
        .collect();
    assert_eq!(intro, vec![(B, Message::Introduce { node: D })]);
    assert_eq!(m.stats().introductions, 1);
    // One short neighbour left: nobody to introduce.
    m.handle(hb.0 - ms(1), D, Message::Heartbeat { short: false });
    let (ev, _) = heartbeats(&mut m, hb, hb.0);
    assert!(!sends(&ev)
        .iter()
        .any(|(_, msg)| matches!(msg, Message::Introduce { .. })));
}

#[test]
fn introduced_node_is_asked_only_with_room_and_no_link() {
    let (mut m, _) = node_with(&[A, B], &[]);
    m.handle(ms(1), A, Message::Introduce { node: X });
    let ev = drain(&mut m);
    assert_eq!(
        sends(&ev),
        vec![(
            X,
            Message::Neighbor {
                high_priority: false
            }
        )]
    );
    m.handle(ms(2), X, Message::NeighborReply { accepted: true });
    assert_eq!(ups(&drain(&mut m)), vec![X]);
    // Already linked, or about ourselves: nothing.
    m.handle(ms(3), A, Message::Introduce { node: B });
    m.handle(ms(3), A, Message::Introduce { node: ME });
    assert!(drain(&mut m).is_empty());
    // Full: nothing.
    let mut full = full_node();
    full.handle(ms(1), A, Message::Introduce { node: X });
    assert!(drain(&mut full).is_empty());
}

/// A full node: active A..E.
fn full_node() -> Membership {
    node_with(&[A, B, C, D, E], &[]).0
}

fn offers(events: &[Event]) -> Vec<(NodeId, NodeId)> {
    sends(events)
        .into_iter()
        .filter_map(|(to, msg)| match msg {
            Message::SpliceOffer { new } => Some((to, new)),
            _ => None,
        })
        .collect()
}

#[test]
fn full_node_offers_the_swap_then_trades_that_neighbour_for_the_requester() {
    let mut m = full_node();
    m.handle(ms(10), X, Message::Splice { partner: F });
    let ev = drain(&mut m);
    let o = offers(&ev);
    assert_eq!(o.len(), 1, "{ev:?}");
    let (via, new) = o[0];
    assert_eq!(new, F);
    assert!([A, B, C, D, E].contains(&via));
    assert_eq!(sends(&ev).len(), 1, "no answer to the requester yet");
    assert!(timers(&ev)
        .iter()
        .any(|(at, t)| matches!(t, Timer::SpliceDeadline { .. })
            && *at == ms(10) + cfg().probe_timeout));
    m.handle(ms(12), via, Message::SpliceReply { accepted: true });
    let ev = drain(&mut m);
    assert_eq!(downs(&ev), vec![via]);
    assert_eq!(ups(&ev), vec![X]);
    assert_eq!(
        sends(&ev),
        vec![(X, Message::NeighborReply { accepted: true })]
    );
    assert!(m.passive().contains(&via));
    assert_eq!(m.active().len(), 5);
    assert_eq!(m.stats().splices, 1);
}

#[test]
fn refused_or_unanswered_offers_go_to_other_neighbours_then_refuse_the_requester() {
    let mut m = full_node();
    m.handle(ms(10), X, Message::Splice { partner: F });
    let (via1, _) = offers(&drain(&mut m))[0];
    // Refused (it is linked to F already): the next neighbour is offered at once.
    m.handle(ms(12), via1, Message::SpliceReply { accepted: false });
    let ev = drain(&mut m);
    let o = offers(&ev);
    assert_eq!(sends(&ev).len(), 1, "no answer to the requester yet");
    let (via2, _) = o[0];
    assert_ne!(via2, via1);
    // Unanswered: after probe_timeout, a third one.
    let (at, t) = timers(&ev)
        .into_iter()
        .find(|(_, t)| matches!(t, Timer::SpliceDeadline { .. }))
        .unwrap();
    assert_eq!(at, ms(12) + cfg().probe_timeout);
    m.handle_timer(at, t);
    let ev = drain(&mut m);
    let (via3, _) = offers(&ev)[0];
    assert!(via3 != via1 && via3 != via2);
    // The late answer of the second is ignored; the third refuses: that was the last.
    m.handle(at + ms(1), via2, Message::SpliceReply { accepted: true });
    assert!(drain(&mut m).is_empty());
    m.handle(at + ms(2), via3, Message::SpliceReply { accepted: false });
    let ev = drain(&mut m);
    assert_eq!(
        sends(&ev),
        vec![(X, Message::NeighborReply { accepted: false })]
    );
    assert!(!m.is_active(X) && m.active().len() == 5);
    assert_eq!(m.stats().splices, 0);
    // Nothing is under way any more: a new request is worked on.
    m.handle(at + ms(3), X, Message::Splice { partner: F });
    assert_eq!(offers(&drain(&mut m)).len(), 1);
}

#[test]
fn refused_splice_asks_another_full_node_preferring_those_that_refused() {
    let (mut m, ev) = node_with(&[A, B, C], &[D, E, F]);
    let (ev, _) = refused_rounds(
        &mut m,
        last_heartbeat(&ev).unwrap(),
        SPLICE_AFTER_ROUNDS as usize,
    );
    let first = splices_sent(&ev);
    assert_eq!(first.len(), 1);
    m.handle(
        secs(10),
        first[0].0,
        Message::NeighborReply { accepted: false },
    );
    let second = splices_sent(&drain(&mut m));
    assert_eq!(second.len(), 1);
    assert_ne!(second[0].0, first[0].0);
}

#[test]
fn one_splice_at_a_time_and_ordinary_acceptance_with_room() {
    let mut m = full_node();
    m.handle(ms(10), X, Message::Splice { partner: F });
    drain(&mut m);
    m.handle(ms(11), F, Message::Splice { partner: F });
    let ev = drain(&mut m);
    assert_eq!(
        sends(&ev),
        vec![(F, Message::NeighborReply { accepted: false })]
    );

    let (mut m, _) = node_with(&[A], &[]);
    m.handle(ms(10), X, Message::Splice { partner: F });
    let ev = drain(&mut m);
    assert_eq!(ups(&ev), vec![X]);
    assert_eq!(
        sends(&ev),
        vec![(X, Message::NeighborReply { accepted: true })]
    );
    assert!(offers(&ev).is_empty());
}

#[test]
fn offer_is_taken_only_from_a_neighbour_for_a_node_not_linked_yet() {
    let (mut m, _) = node_with(&[A, F], &[]);
    let refusal = |from| vec![(from, Message::SpliceReply { accepted: false })];
    m.handle(ms(1), A, Message::SpliceOffer { new: F });
    assert_eq!(sends(&drain(&mut m)), refusal(A), "already linked to F");
    m.handle(ms(1), X, Message::SpliceOffer { new: C });
    assert_eq!(sends(&drain(&mut m)), refusal(X), "X is no neighbour");
    m.handle(ms(1), A, Message::SpliceOffer { new: ME });
    assert_eq!(sends(&drain(&mut m)), refusal(A), "offered ourselves");
    m.handle(ms(2), A, Message::SpliceOffer { new: C });
    let ev = drain(&mut m);
    assert_eq!(downs(&ev), vec![A]);
    assert_eq!(
        sends(&ev),
        vec![
            (A, Message::SpliceReply { accepted: true }),
            (
                C,
                Message::Neighbor {
                    high_priority: false
                }
            )
        ]
    );
    assert!(m.passive().contains(&A));
    m.handle(ms(3), C, Message::NeighborReply { accepted: true });
    assert_eq!(ups(&drain(&mut m)), vec![C]);
}
