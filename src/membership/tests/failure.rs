//! Failure detection: heartbeats, probes, and refilling the active view.

use super::*;

#[test]
fn heartbeat_goes_only_to_neighbours_nothing_else_was_sent_to() {
    let (mut m, ev) = node_with(&[A, B], &[]);
    let (at, t) = last_heartbeat(&ev).unwrap();
    assert_eq!(at, secs(1));
    // Something was just sent to A.
    m.handle(at, A, Message::Probe);
    drain(&mut m);
    m.handle_timer(at, t);
    let ev = drain(&mut m);
    assert_eq!(sends(&ev), vec![(B, Message::Heartbeat { short: true })]);
    assert_eq!(last_heartbeat(&ev).unwrap().0, secs(2));
}

#[test]
fn silent_neighbour_is_probed_then_removed_and_replaced() {
    // A full active view, so the heartbeat rounds do not ask C before A fails.
    let c = MembershipConfig {
        active_view: 2,
        ..cfg()
    };
    let (mut m, ev) = node_cfg(c, &[A, B], &[C]);
    let hb = last_heartbeat(&ev).unwrap();
    // B keeps talking; A falls silent after t = 0.
    let mut hb = hb;
    let mut probe = None;
    for s in 1..=5 {
        m.handle(secs(s) - ms(1), B, Message::Heartbeat { short: false });
        let (ev, next) = heartbeats(&mut m, hb, secs(s));
        hb = next;
        let probes: Vec<NodeId> = sends(&ev)
            .into_iter()
            .filter(|(_, msg)| *msg == Message::Probe)
            .map(|(to, _)| to)
            .collect();
        if s < 5 {
            assert!(probes.is_empty(), "probed at {s}s");
        } else {
            assert_eq!(probes, vec![A]);
            probe = timers(&ev)
                .into_iter()
                .find(|(_, t)| matches!(t, Timer::ProbeDeadline { .. }));
        }
    }
    let (at, t) = probe.unwrap();
    assert_eq!(at, secs(6));
    m.handle_timer(at, t);
    let ev = drain(&mut m);
    assert_eq!(downs(&ev), vec![A]);
    assert!(
        !m.passive().contains(&A),
        "a failed node is not kept as a backup"
    );
    assert_eq!(
        sends(&ev),
        vec![(
            C,
            Message::Neighbor {
                high_priority: false
            }
        )]
    );
    assert_eq!(m.stats().neighbor_failures, 1);
}

#[test]
fn probe_reply_clears_the_suspicion() {
    let (mut m, ev) = node_with(&[A], &[]);
    let (ev, _) = heartbeats(&mut m, last_heartbeat(&ev).unwrap(), secs(5));
    let (at, t) = timers(&ev)
        .into_iter()
        .find(|(_, t)| matches!(t, Timer::ProbeDeadline { .. }))
        .unwrap();
    m.handle(secs(5) + ms(10), A, Message::ProbeReply);
    m.handle_timer(at, t);
    let ev = drain(&mut m);
    assert!(downs(&ev).is_empty());
    assert!(m.is_active(A));
}

#[test]
fn probe_is_answered_by_a_neighbour_and_disowned_by_a_stranger() {
    let (mut m, _) = node_with(&[A], &[]);
    m.handle(ms(1), A, Message::Probe);
    assert_eq!(sends(&drain(&mut m)), vec![(A, Message::ProbeReply)]);
    m.handle(ms(1), B, Message::Probe);
    assert_eq!(sends(&drain(&mut m)), vec![(B, Message::Disconnect)]);
    m.handle(ms(1), B, Message::Heartbeat { short: false });
    assert_eq!(sends(&drain(&mut m)), vec![(B, Message::Disconnect)]);
    m.handle(ms(1), A, Message::Heartbeat { short: false });
    assert!(drain(&mut m).is_empty());
    m.handle(ms(1), B, Message::ProbeReply);
    assert!(drain(&mut m).is_empty());
}

#[test]
fn heartbeat_round_refills_an_incomplete_active_view() {
    let (mut m, ev) = node_with(&[A], &[B, C, D]);
    m.handle_timer(secs(1), last_heartbeat(&ev).unwrap().1);
    let ev = drain(&mut m);
    let asks: Vec<_> = sends(&ev)
        .into_iter()
        .filter(|(_, msg)| matches!(msg, Message::Neighbor { .. }))
        .collect();
    assert_eq!(asks.len(), 1);
    assert_eq!(
        asks[0].1,
        Message::Neighbor {
            high_priority: false
        }
    );
}
