//! The lost list: failed neighbours probed with backoff and kept out of shuffles.

use super::*;

fn lost(m: &Membership) -> Vec<NodeId> {
    sorted(m.lost().collect())
}

fn probes_to(events: &[Event], peer: NodeId) -> usize {
    sends(events)
        .iter()
        .filter(|(to, msg)| *to == peer && *msg == Message::Probe)
        .count()
}

#[test]
fn failed_neighbour_is_lost_and_probed_with_doubling_capped_waits() {
    // The lost probes' cap is their own key, not the join retry's.
    let c = MembershipConfig {
        join_retry: ms(100),
        join_retry_max: ms(30_000),
        lost_probe_max: ms(400),
        ..cfg()
    };
    let (mut m, ev) = node_cfg(c, &[A], &[]);
    // Silent: probed at the 5 s round, removed at its deadline.
    let (ev, _) = heartbeats(&mut m, last_heartbeat(&ev).unwrap(), secs(5));
    let dl = timers(&ev)
        .into_iter()
        .find(|(_, t)| matches!(t, Timer::ProbeDeadline { peer, .. } if *peer == A));
    let (at, t) = dl.unwrap();
    m.handle_timer(at, t);
    let ev = drain(&mut m);
    assert_eq!(downs(&ev), vec![A]);
    assert_eq!(lost(&m), vec![A]);
    assert!(!m.passive().contains(&A));
    // Probes at +100, then waits of 100, 200, 400, 400 ms.
    let mut probe = timers(&ev)
        .into_iter()
        .find(|(_, t)| matches!(t, Timer::LostProbe { .. }))
        .unwrap();
    assert_eq!(probe.0, at + ms(100));
    let mut gaps = Vec::new();
    for _ in 0..5 {
        m.handle_timer(probe.0, probe.1);
        let ev = drain(&mut m);
        assert_eq!(probes_to(&ev, A), 1);
        let next = timers(&ev)
            .into_iter()
            .find(|(_, t)| matches!(t, Timer::LostProbe { .. }))
            .unwrap();
        gaps.push((next.0 - probe.0).as_millis());
        // The old timer is stale now.
        m.handle_timer(probe.0, probe.1);
        assert!(drain(&mut m).is_empty());
        probe = next;
    }
    assert_eq!(gaps, vec![100, 200, 400, 400, 400]);
    assert_eq!(m.stats().lost_probes_sent, 5);
}

#[test]
fn lost_nodes_stay_out_of_shuffles_and_the_list_is_bounded() {
    let c = MembershipConfig {
        passive_view: 4,
        ..cfg()
    };
    let (mut m, _) = node_cfg(c, &[A], &[]);
    for k in 0..12u64 {
        m.lose(ms(k), NodeId(100 + k));
    }
    assert_eq!(
        lost(&m),
        (108..112).map(NodeId).collect::<Vec<_>>(),
        "the newest four"
    );
    assert_eq!(m.stats().lost_evictions, 8);
    // Losing a node twice keeps one entry.
    m.lose(ms(20), NodeId(111));
    assert_eq!(m.lost().count(), 4);
    // A shuffle naming lost nodes adds only the others.
    m.handle(
        ms(30),
        A,
        Message::ShuffleReply {
            nodes: vec![NodeId(110), C, NodeId(111), D],
        },
    );
    assert_eq!(sorted(m.passive().to_vec()), vec![C, D]);
}

#[test]
fn revived_lost_node_is_joined_through_at_most_once_per_shuffle_period() {
    let (mut m, _) = node_with(&[A], &[]);
    let t = secs(1);
    m.lose(t, B);
    m.lose(t, C);
    drain(&mut m);
    // B answers a probe (it has no link to us, so it says Disconnect): join through it.
    m.handle(t, B, Message::Disconnect);
    let ev = drain(&mut m);
    assert_eq!(sends(&ev), vec![(B, Message::Join)]);
    assert_eq!((m.stats().lost_rejoins, m.stats().lost_revived), (1, 1));
    assert!(m.is_joining());
    // C answers 100 ms later: too soon; it is probed again one shuffle period later.
    let t2 = t + ms(100);
    m.handle(t2, C, Message::Disconnect);
    let ev = drain(&mut m);
    assert!(sends(&ev).is_empty());
    assert_eq!(lost(&m), vec![C]);
    let (at, timer) = timers(&ev)
        .into_iter()
        .find(|(_, t)| matches!(t, Timer::LostProbe { .. }))
        .unwrap();
    assert_eq!(at, t2 + cfg().shuffle_interval);
    m.handle_timer(at, timer);
    assert_eq!(probes_to(&drain(&mut m), C), 1);
    m.handle(at + ms(1), C, Message::Disconnect);
    assert_eq!(sends(&drain(&mut m)), vec![(C, Message::Join)]);
    assert_eq!(m.stats().lost_rejoins, 2);
    assert!(lost(&m).is_empty());
    // The join through C ends with C's acknowledgement.
    m.handle(at + ms(2), C, Message::NeighborReply { accepted: true });
    drain(&mut m);
    assert!(!m.is_joining() && m.is_active(C));
}

#[test]
fn lost_node_that_becomes_a_neighbour_leaves_the_list_without_a_rejoin() {
    let (mut m, _) = node_with(&[A], &[]);
    m.lose(secs(1), B);
    drain(&mut m);
    m.handle(
        secs(2),
        B,
        Message::Neighbor {
            high_priority: false,
        },
    );
    let ev = drain(&mut m);
    assert_eq!(ups(&ev), vec![B]);
    assert!(lost(&m).is_empty());
    assert_eq!(m.stats().lost_rejoins, 0);
}
