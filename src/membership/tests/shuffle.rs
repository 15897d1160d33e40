//! Shuffles: samples sent, walked on, answered and integrated into the passive view.

use super::*;

#[test]
fn shuffle_timer_sends_a_sample_to_a_neighbour_and_rearms() {
    let passive: Vec<NodeId> = (10..20).map(NodeId).collect();
    let (mut m, ev) = node_with(&[A, B, C, D, E], &passive);
    let (at, t) = last_shuffle(&ev).unwrap();
    m.handle_timer(at, t);
    let ev = drain(&mut m);
    let s = sends(&ev);
    assert_eq!(s.len(), 1);
    let (to, msg) = &s[0];
    assert!(m.is_active(*to));
    let Message::Shuffle { origin, ttl, nodes } = msg else {
        panic!("{msg:?}")
    };
    assert_eq!((*origin, *ttl), (ME, 6));
    assert_eq!(nodes[0], ME);
    assert_eq!(nodes.len(), 1 + 3 + 4);
    assert!(nodes[1..4].iter().all(|n| m.is_active(*n) && n != to));
    assert!(nodes[4..].iter().all(|n| m.passive().contains(n)));
    let (next, _) = last_shuffle(&ev).unwrap();
    assert_eq!(next, at + secs(10));
    assert_eq!(m.stats().shuffles_sent, 1);
    // The old generation is stale now.
    m.handle_timer(at, t);
    assert!(drain(&mut m).is_empty());
}

#[test]
fn shuffle_with_ttl_walks_on_to_another_neighbour() {
    let (mut m, _) = node_with(&[A, B], &[]);
    let nodes = vec![C, D];
    m.handle(
        ms(1),
        A,
        Message::Shuffle {
            origin: C,
            ttl: 2,
            nodes: nodes.clone(),
        },
    );
    let ev = drain(&mut m);
    assert_eq!(
        sends(&ev),
        vec![(
            B,
            Message::Shuffle {
                origin: C,
                ttl: 1,
                nodes
            }
        )]
    );
    assert!(m.passive().is_empty());
}

#[test]
fn shuffle_endpoint_replies_to_origin_and_integrates() {
    let (mut m, _) = node_with(&[A], &[E, F]);
    m.handle(
        ms(1),
        A,
        Message::Shuffle {
            origin: C,
            ttl: 3,
            nodes: vec![C, D, ME, A],
        },
    );
    let ev = drain(&mut m);
    let s = sends(&ev);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0, C);
    let Message::ShuffleReply { nodes } = &s[0].1 else {
        panic!()
    };
    assert_eq!(
        sorted(nodes.clone()),
        vec![E, F],
        "as many as it has, up to 4"
    );
    // Never itself nor an active member.
    assert_eq!(sorted(m.passive().to_vec()), vec![C, D, E, F]);
    assert_eq!(m.stats().shuffles_received, 1);
}

#[test]
fn full_passive_evicts_the_nodes_sent_away_first() {
    let c = MembershipConfig {
        passive_view: 4,
        shuffle_passive: 2,
        shuffle_active: 0,
        ..cfg()
    };
    let (mut m, ev) = node_cfg(c, &[A], &[B, C, D, E]);
    let (at, t) = last_shuffle(&ev).unwrap();
    m.handle_timer(at, t);
    let ev = drain(&mut m);
    let Message::Shuffle { nodes, .. } = &sends(&ev)[0].1 else {
        panic!()
    };
    let sent: Vec<NodeId> = nodes[1..].to_vec();
    assert_eq!(sent.len(), 2);
    m.handle(
        at,
        X,
        Message::ShuffleReply {
            nodes: vec![NodeId(50), NodeId(51)],
        },
    );
    drain(&mut m);
    let p = m.passive();
    assert_eq!(p.len(), 4);
    assert!(p.contains(&NodeId(50)) && p.contains(&NodeId(51)));
    assert!(sent.iter().all(|n| !p.contains(n)), "{p:?} kept {sent:?}");
}

#[test]
fn full_passive_without_preference_evicts_randomly_and_stays_bounded() {
    let c = MembershipConfig {
        passive_view: 3,
        ..cfg()
    };
    let (mut m, _) = node_cfg(c, &[A], &[B, C, D]);
    m.handle(
        ms(1),
        X,
        Message::ShuffleReply {
            nodes: (10..40).map(NodeId).collect(),
        },
    );
    assert_eq!(m.passive().len(), 3);
}

#[test]
fn shuffle_we_started_coming_back_is_ignored() {
    let (mut m, _) = node_with(&[A, B], &[]);
    m.handle(
        ms(1),
        A,
        Message::Shuffle {
            origin: ME,
            ttl: 0,
            nodes: vec![ME, C],
        },
    );
    assert!(drain(&mut m).is_empty());
    assert!(m.passive().is_empty());
}
