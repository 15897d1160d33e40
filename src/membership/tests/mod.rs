//! Rule-by-rule tests of the HyParView state machine on hand-built inputs (feed one
//! message or one timer, assert on the drained events and the views), then a small
//! simulation of 200 nodes joining, shuffling and losing half their peers. One file per
//! section of the state machine; the fixtures and event filters they share live here.

mod config;
mod driver;
mod failure;
mod forward_join;
mod join;
mod lost;
mod neighbor;
mod robustness;
mod shuffle;
mod sim;
mod splice;

use std::time::Duration;

use super::*;
use crate::ids::NodeId;

const ME: NodeId = NodeId(1);
const A: NodeId = NodeId(2);
const B: NodeId = NodeId(3);
const C: NodeId = NodeId(4);
const D: NodeId = NodeId(5);
const E: NodeId = NodeId(6);
const F: NodeId = NodeId(7);
const X: NodeId = NodeId(100);

fn ms(v: u64) -> Time {
    Duration::from_millis(v)
}

fn secs(v: u64) -> Time {
    Duration::from_secs(v)
}

fn cfg() -> MembershipConfig {
    MembershipConfig::default()
}

fn drain(m: &mut Membership) -> Vec<Event> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

fn sends(events: &[Event]) -> Vec<(NodeId, Message)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Send { to, msg } => Some((*to, msg.clone())),
            _ => None,
        })
        .collect()
}

fn ups(events: &[Event]) -> Vec<NodeId> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::NeighborUp(p) => Some(*p),
            _ => None,
        })
        .collect()
}

fn downs(events: &[Event]) -> Vec<NodeId> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::NeighborDown(p) => Some(*p),
            _ => None,
        })
        .collect()
}

fn timers(events: &[Event]) -> Vec<(Time, Timer)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::SetTimer { at, timer } => Some((*at, *timer)),
            _ => None,
        })
        .collect()
}

fn last_heartbeat(events: &[Event]) -> Option<(Time, Timer)> {
    timers(events)
        .into_iter()
        .rfind(|(_, t)| matches!(t, Timer::Heartbeat { .. }))
}

fn last_shuffle(events: &[Event]) -> Option<(Time, Timer)> {
    timers(events)
        .into_iter()
        .rfind(|(_, t)| matches!(t, Timer::Shuffle { .. }))
}

fn sorted(mut v: Vec<NodeId>) -> Vec<NodeId> {
    v.sort();
    v
}

/// A started node whose active view is exactly `active` and whose passive view holds
/// `passive`; returns the setup events too (they hold the periodic timers).
fn node_with(active: &[NodeId], passive: &[NodeId]) -> (Membership, Vec<Event>) {
    node_cfg(cfg(), active, passive)
}

fn node_cfg(
    cfg: MembershipConfig,
    active: &[NodeId],
    passive: &[NodeId],
) -> (Membership, Vec<Event>) {
    let mut m = Membership::new(ME, cfg, 7).unwrap();
    m.join(ms(0), &[]);
    for &p in active {
        m.handle(
            ms(0),
            p,
            Message::Neighbor {
                high_priority: true,
            },
        );
    }
    for chunk in passive.chunks(1) {
        m.handle(
            ms(0),
            X,
            Message::ShuffleReply {
                nodes: chunk.to_vec(),
            },
        );
    }
    let ev = drain(&mut m);
    assert_eq!(sorted(m.active().to_vec()), sorted(active.to_vec()));
    assert_eq!(sorted(m.passive().to_vec()), sorted(passive.to_vec()));
    (m, ev)
}

/// Fires heartbeat rounds every second from `from` to `to` (inclusive), returning all
/// events and the next heartbeat timer.
fn heartbeats(m: &mut Membership, mut hb: (Time, Timer), to: Time) -> (Vec<Event>, (Time, Timer)) {
    let mut all = Vec::new();
    while hb.0 <= to {
        m.handle_timer(hb.0, hb.1);
        let ev = drain(m);
        hb = last_heartbeat(&ev).expect("heartbeat re-armed");
        all.extend(ev);
    }
    (all, hb)
}
