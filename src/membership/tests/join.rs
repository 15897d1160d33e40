//! Joining: seeds, retries, rejoining when starved, and the contact node's side.

use super::*;

#[test]
fn join_sends_join_to_first_seed_and_arms_timers() {
    let mut m = Membership::new(ME, cfg(), 7).unwrap();
    m.join(ms(0), &[ME, A, B]);
    let ev = drain(&mut m);
    assert_eq!(sends(&ev), vec![(A, Message::Join)]);
    let t = timers(&ev);
    assert!(t
        .iter()
        .any(|(at, t)| matches!(t, Timer::JoinRetry { .. }) && *at == secs(1)));
    assert!(t
        .iter()
        .any(|(at, t)| matches!(t, Timer::Heartbeat { .. }) && *at == secs(1)));
    assert!(t
        .iter()
        .any(|(at, t)| matches!(t, Timer::Shuffle { .. }) && *at < secs(10)));
    assert!(m.is_joining());
}

#[test]
fn join_retries_next_seed_with_doubling_backoff_capped() {
    let c = MembershipConfig {
        join_retry_max: secs(4),
        ..cfg()
    };
    let mut m = Membership::new(ME, c, 7).unwrap();
    m.join(ms(0), &[A, B, C]);
    let mut ev = drain(&mut m);
    let mut targets = vec![];
    let mut waits = vec![];
    let mut now = ms(0);
    for _ in 0..5 {
        let (at, t) = timers(&ev)
            .into_iter()
            .find(|(_, t)| matches!(t, Timer::JoinRetry { .. }))
            .unwrap();
        waits.push(at - now);
        now = at;
        m.handle_timer(now, t);
        ev = drain(&mut m);
        for (to, msg) in sends(&ev) {
            if msg == Message::Join {
                targets.push(to);
            }
        }
    }
    assert_eq!(targets, vec![B, C, A, B, C]);
    assert_eq!(waits, vec![secs(1), secs(2), secs(4), secs(4), secs(4)]);
}

#[test]
fn join_ack_adds_seed_and_stops_retrying() {
    let mut m = Membership::new(ME, cfg(), 7).unwrap();
    m.join(ms(0), &[A, B]);
    let ev = drain(&mut m);
    let retry = timers(&ev)
        .into_iter()
        .find(|(_, t)| matches!(t, Timer::JoinRetry { .. }))
        .unwrap();
    m.handle(ms(5), A, Message::NeighborReply { accepted: true });
    let ev = drain(&mut m);
    assert_eq!(ups(&ev), vec![A]);
    assert_eq!(m.active(), &[A]);
    assert!(!m.is_joining());
    m.handle_timer(retry.0, retry.1);
    assert!(sends(&drain(&mut m)).is_empty(), "stale retry does nothing");
}

#[test]
fn join_is_retried_until_the_seed_acknowledges_even_with_neighbours() {
    let mut m = Membership::new(ME, cfg(), 7).unwrap();
    m.join(ms(0), &[A]);
    let ev = drain(&mut m);
    let (at, retry) = timers(&ev)
        .into_iter()
        .find(|(_, t)| matches!(t, Timer::JoinRetry { .. }))
        .unwrap();
    // Our Join to A was lost, but B joined through us and a walk made C our neighbour:
    // neither proves we are attached to the cluster.
    m.handle(ms(10), B, Message::Join);
    m.handle(
        ms(20),
        C,
        Message::Neighbor {
            high_priority: true,
        },
    );
    drain(&mut m);
    assert_eq!(sorted(m.active().to_vec()), vec![B, C]);
    assert!(m.is_joining());
    m.handle_timer(at, retry);
    let ev = drain(&mut m);
    assert_eq!(sends(&ev), vec![(A, Message::Join)]);
    // The seed's acknowledgement ends the join, and A becomes a neighbour.
    m.handle(at + ms(30), A, Message::NeighborReply { accepted: true });
    let ev = drain(&mut m);
    assert_eq!(ups(&ev), vec![A]);
    assert!(!m.is_joining());
}

#[test]
fn join_ack_from_a_seed_already_active_still_ends_the_join() {
    let mut m = Membership::new(ME, cfg(), 7).unwrap();
    m.join(ms(0), &[A]);
    drain(&mut m);
    // A's walk ended at A itself (it accepted us through a ForwardJoin) before its ack.
    m.handle(
        ms(10),
        A,
        Message::Neighbor {
            high_priority: true,
        },
    );
    drain(&mut m);
    assert!(m.is_joining());
    m.handle(ms(20), A, Message::NeighborReply { accepted: true });
    let ev = drain(&mut m);
    assert!(ups(&ev).is_empty());
    assert!(!m.is_joining());
}

/// A node that joined through `A` (acknowledged), then lost A and every passive node:
/// its active view is empty and nothing is left to ask. Returns it and the next
/// heartbeat timer.
fn starved() -> (Membership, (Time, Timer)) {
    let mut m = Membership::new(ME, cfg(), 7).unwrap();
    m.join(ms(0), &[A]);
    let ev = drain(&mut m);
    let hb = last_heartbeat(&ev).unwrap();
    m.handle(ms(10), A, Message::NeighborReply { accepted: true });
    m.handle(ms(20), A, Message::Disconnect);
    drain(&mut m);
    assert_eq!(m.passive(), &[A]);
    // The next rounds ask A twice; it never answers, so it is dropped.
    let (ev, hb) = heartbeats(&mut m, hb, secs(1));
    let (at, t) = timers(&ev)
        .into_iter()
        .find(|(_, t)| matches!(t, Timer::NeighborDeadline { .. }))
        .unwrap();
    m.handle_timer(at, t);
    let ev = drain(&mut m);
    let (at, t) = timers(&ev)
        .into_iter()
        .find(|(_, t)| matches!(t, Timer::NeighborDeadline { .. }))
        .unwrap();
    m.handle_timer(at, t);
    drain(&mut m);
    assert!(m.active().is_empty() && m.passive().is_empty());
    assert!(!m.is_joining());
    (m, hb)
}

#[test]
fn starved_node_joins_again_through_its_seeds() {
    let (mut m, hb) = starved();
    // The next round (late, after both deadlines) finds nobody left to ask.
    m.handle_timer(secs(4), hb.1);
    let ev = drain(&mut m);
    assert!(sends(&ev).contains(&(A, Message::Join)));
    assert!(m.is_joining());
    assert_eq!(m.stats().rejoins, 1);
    // And keeps retrying until acknowledged, without starting a second join.
    let hb = last_heartbeat(&ev).unwrap();
    m.handle_timer(hb.0, hb.1);
    assert!(!sends(&drain(&mut m)).contains(&(A, Message::Join)));
    assert_eq!(m.stats().rejoins, 1);
}

#[test]
fn node_with_a_full_view_or_no_seed_does_not_rejoin() {
    // Full active view, empty passive view: nothing to repair.
    let (mut m, ev) = node_with(&[A, B, C, D, E], &[]);
    m.handle_timer(secs(1), last_heartbeat(&ev).unwrap().1);
    let ev = drain(&mut m);
    assert!(!sends(&ev).iter().any(|(_, msg)| *msg == Message::Join));
    assert_eq!(m.stats().rejoins, 0);
    // The cluster's first node has no seed to go back to.
    let (mut m, ev) = node_with(&[], &[]);
    m.handle_timer(secs(1), last_heartbeat(&ev).unwrap().1);
    assert!(sends(&drain(&mut m)).is_empty());
    assert_eq!(m.stats().rejoins, 0);
}

#[test]
fn join_with_no_seeds_starts_a_cluster() {
    let mut m = Membership::new(ME, cfg(), 7).unwrap();
    m.join(ms(0), &[]);
    let ev = drain(&mut m);
    assert!(sends(&ev).is_empty());
    assert_eq!(timers(&ev).len(), 2, "shuffle and heartbeat only");
    assert!(!m.is_joining());
}

#[test]
fn contact_adds_joiner_acks_and_starts_walks_from_every_other_neighbour() {
    let (mut m, _) = node_with(&[A, B, C], &[]);
    m.handle(ms(1), D, Message::Join);
    let ev = drain(&mut m);
    assert_eq!(ups(&ev), vec![D]);
    let s = sends(&ev);
    assert!(s.contains(&(D, Message::NeighborReply { accepted: true })));
    let walks: Vec<NodeId> = s
        .iter()
        .filter(|(_, msg)| *msg == Message::ForwardJoin { new: D, ttl: 6 })
        .map(|(to, _)| *to)
        .collect();
    assert_eq!(sorted(walks), vec![A, B, C]);
    assert_eq!(m.stats().joins, 1);
}

#[test]
fn contact_with_full_view_drops_a_random_neighbour_into_passive() {
    let (mut m, _) = node_with(&[A, B, C, D, E], &[]);
    m.handle(ms(1), F, Message::Join);
    let ev = drain(&mut m);
    let dropped = downs(&ev);
    assert_eq!(dropped.len(), 1);
    let v = dropped[0];
    assert!(sends(&ev).contains(&(v, Message::Disconnect)));
    assert!(!m.is_active(v));
    assert_eq!(m.passive(), &[v]);
    assert_eq!(m.active().len(), 5);
    assert!(m.is_active(F));
    // The dropped neighbour is not sent a walk.
    assert!(!sends(&ev)
        .iter()
        .any(|(to, msg)| *to == v && matches!(msg, Message::ForwardJoin { .. })));
}

#[test]
fn duplicate_join_is_acknowledged_again_without_new_walks() {
    let (mut m, _) = node_with(&[A, B], &[]);
    m.handle(ms(1), C, Message::Join);
    drain(&mut m);
    m.handle(ms(2), C, Message::Join);
    let ev = drain(&mut m);
    assert_eq!(
        sends(&ev),
        vec![(C, Message::NeighborReply { accepted: true })]
    );
    assert!(ups(&ev).is_empty());
}
