//! Forward joins: the random walk that places a joiner in active and passive views.

use super::*;

#[test]
fn forward_join_with_ttl_zero_accepts_and_asks_the_new_node() {
    let (mut m, _) = node_with(&[A, B, C], &[]);
    m.handle(ms(1), A, Message::ForwardJoin { new: D, ttl: 0 });
    let ev = drain(&mut m);
    assert_eq!(ups(&ev), vec![D]);
    assert_eq!(
        sends(&ev),
        vec![(
            D,
            Message::Neighbor {
                high_priority: true
            }
        )]
    );
    // The new node's acceptance is a no-op.
    m.handle(ms(2), D, Message::NeighborReply { accepted: true });
    let ev = drain(&mut m);
    assert!(ev.is_empty(), "{ev:?}");
    assert!(m.is_active(D));
}

#[test]
fn forward_join_at_a_node_with_one_neighbour_accepts() {
    let (mut m, _) = node_with(&[A], &[]);
    m.handle(ms(1), A, Message::ForwardJoin { new: D, ttl: 5 });
    let ev = drain(&mut m);
    assert_eq!(ups(&ev), vec![D]);
    assert!(m.is_active(D));
}

#[test]
fn forward_join_at_prwl_adds_to_passive_and_walks_on_not_back() {
    let (mut m, _) = node_with(&[A, B], &[]);
    m.handle(ms(1), A, Message::ForwardJoin { new: D, ttl: 3 });
    let ev = drain(&mut m);
    assert!(ups(&ev).is_empty());
    assert_eq!(
        sends(&ev),
        vec![(B, Message::ForwardJoin { new: D, ttl: 2 })]
    );
    assert_eq!(m.passive(), &[D]);
}

#[test]
fn forward_join_off_prwl_walks_on_without_passive() {
    let (mut m, _) = node_with(&[A, B, C], &[]);
    m.handle(ms(1), A, Message::ForwardJoin { new: D, ttl: 5 });
    let ev = drain(&mut m);
    let s = sends(&ev);
    assert_eq!(s.len(), 1);
    assert!(s[0].0 == B || s[0].0 == C);
    assert_eq!(s[0].1, Message::ForwardJoin { new: D, ttl: 4 });
    assert!(m.passive().is_empty());
}

#[test]
fn forward_join_about_ourselves_or_a_neighbour_changes_nothing() {
    let (mut m, _) = node_with(&[A, B], &[]);
    m.handle(ms(1), A, Message::ForwardJoin { new: ME, ttl: 0 });
    assert!(drain(&mut m).is_empty());
    m.handle(ms(1), A, Message::ForwardJoin { new: B, ttl: 0 });
    assert!(drain(&mut m).is_empty());
    assert_eq!(sorted(m.active().to_vec()), vec![A, B]);
}
