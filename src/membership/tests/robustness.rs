//! Leaving and robustness: leave, messages from ourselves, stale timers, random input.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashSet;

use super::*;

#[test]
fn leave_disconnects_every_neighbour_and_then_ignores_input() {
    let (mut m, ev) = node_with(&[A, B], &[C]);
    m.leave(ms(5));
    let ev2 = drain(&mut m);
    assert_eq!(
        sorted(
            sends(&ev2)
                .into_iter()
                .filter(|(_, msg)| *msg == Message::Disconnect)
                .map(|(to, _)| to)
                .collect()
        ),
        vec![A, B]
    );
    assert_eq!(sorted(downs(&ev2)), vec![A, B]);
    assert!(m.active().is_empty());
    m.handle(ms(6), D, Message::Join);
    m.handle_timer(secs(1), last_heartbeat(&ev).unwrap().1);
    assert!(drain(&mut m).is_empty());
    // Joining again works.
    m.join(ms(7), &[C]);
    assert!(sends(&drain(&mut m)).contains(&(C, Message::Join)));
}

#[test]
fn messages_from_ourselves_are_ignored() {
    let (mut m, _) = node_with(&[A], &[]);
    for msg in [
        Message::Join,
        Message::Neighbor {
            high_priority: true,
        },
        Message::NeighborReply { accepted: true },
        Message::Disconnect,
        Message::Probe,
    ] {
        m.handle(ms(1), ME, msg);
    }
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.active(), &[A]);
}

#[test]
fn stale_timers_for_unknown_peers_are_ignored() {
    let (mut m, _) = node_with(&[A], &[]);
    m.handle_timer(ms(1), Timer::ProbeDeadline { peer: A, gen: 999 });
    m.handle_timer(ms(1), Timer::ProbeDeadline { peer: B, gen: 1 });
    m.handle_timer(ms(1), Timer::NeighborDeadline { peer: B, gen: 1 });
    m.handle_timer(ms(1), Timer::JoinRetry { gen: 1 });
    m.handle_timer(ms(1), Timer::Shuffle { gen: 999 });
    m.handle_timer(ms(1), Timer::Heartbeat { gen: 999 });
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.active(), &[A]);
}

#[test]
fn random_input_keeps_views_bounded_disjoint_and_events_exact() {
    let c = MembershipConfig {
        active_view: 3,
        passive_view: 6,
        ..cfg()
    };
    let mut m = Membership::new(ME, c, 3).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let mut up: FxHashSet<NodeId> = FxHashSet::default();
    let mut pending_timers: Vec<Timer> = Vec::new();
    m.join(ms(0), &[A, B]);
    for step in 0..20_000u64 {
        let now = ms(step);
        let peer = NodeId(rng.gen_range(0..12));
        let nodes: Vec<NodeId> = (0..rng.gen_range(0..40))
            .map(|_| NodeId(rng.gen_range(0..20)))
            .collect();
        match rng.gen_range(0..17) {
            0 => m.handle(now, peer, Message::Join),
            1 => m.handle(
                now,
                peer,
                Message::ForwardJoin {
                    new: NodeId(rng.gen_range(0..20)),
                    ttl: rng.gen(),
                },
            ),
            2 => m.handle(
                now,
                peer,
                Message::Neighbor {
                    high_priority: rng.gen(),
                },
            ),
            3 => m.handle(
                now,
                peer,
                Message::NeighborReply {
                    accepted: rng.gen(),
                },
            ),
            4 => m.handle(now, peer, Message::Disconnect),
            5 => m.handle(
                now,
                peer,
                Message::Shuffle {
                    origin: NodeId(rng.gen_range(0..20)),
                    ttl: rng.gen_range(0..3),
                    nodes,
                },
            ),
            6 => m.handle(now, peer, Message::ShuffleReply { nodes }),
            7 => m.handle(now, peer, Message::Heartbeat { short: rng.gen() }),
            8 => m.handle(now, peer, Message::Probe),
            9 => m.handle(now, peer, Message::ProbeReply),
            10 if !pending_timers.is_empty() => {
                let i = rng.gen_range(0..pending_timers.len());
                let t = pending_timers.swap_remove(i);
                m.handle_timer(now, t);
            }
            11 => m.leave(now),
            12 => m.handle(
                now,
                peer,
                Message::Splice {
                    partner: NodeId(rng.gen_range(0..20)),
                },
            ),
            13 => m.handle(
                now,
                peer,
                Message::SpliceOffer {
                    new: NodeId(rng.gen_range(0..20)),
                },
            ),
            14 => m.handle(
                now,
                peer,
                Message::SpliceReply {
                    accepted: rng.gen(),
                },
            ),
            15 => m.handle(
                now,
                peer,
                Message::Introduce {
                    node: NodeId(rng.gen_range(0..20)),
                },
            ),
            _ => m.join(now, &[peer]),
        }
        for e in drain(&mut m) {
            match e {
                Event::NeighborUp(p) => assert!(up.insert(p), "double up {p:?}"),
                Event::NeighborDown(p) => assert!(up.remove(&p), "down without up {p:?}"),
                Event::SetTimer { timer, .. } => {
                    if pending_timers.len() < 1000 {
                        pending_timers.push(timer)
                    }
                }
                Event::Send { to, .. } => assert_ne!(to, ME, "sent to itself"),
            }
        }
        let active: FxHashSet<NodeId> = m.active().iter().copied().collect();
        assert_eq!(active, up);
        assert!(m.active().len() <= 3);
        assert!(m.passive().len() <= 6);
        assert!(!active.contains(&ME) && !m.passive().contains(&ME));
        assert!(m.passive().iter().all(|p| !active.contains(p)));
        let distinct: FxHashSet<NodeId> = m.passive().iter().copied().collect();
        assert_eq!(distinct.len(), m.passive().len());
    }
}
