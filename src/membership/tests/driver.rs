//! The driver's join policy, fed frames by hand: a node joins through its seeds
//! once and then stays put, except while it is not yet attached to the cluster.

use std::net::SocketAddr;

use super::*;
use crate::membership::driver::Output;
use crate::wire::{Contact, MemberFrame};

fn at(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

const MY_ADDR: u16 = 7010;
/// Seed A's and seed B's control ports; C joins through us.
const A_ADDR: u16 = 7000;
const B_ADDR: u16 = 7020;
const C_ADDR: u16 = 7030;

fn id_at(port: u16) -> NodeId {
    match port {
        A_ADDR => A,
        B_ADDR => B,
        C_ADDR => C,
        _ => panic!("no node at {port}"),
    }
}

/// Where the outputs sent a Join.
fn joins(out: &[Output]) -> Vec<SocketAddr> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send {
                to,
                frame: MemberFrame::Join { .. },
            } => Some(*to),
            _ => None,
        })
        .collect()
}

fn ups(out: &[Output]) -> Vec<NodeId> {
    out.iter()
        .filter_map(|o| match o {
            Output::NeighborUp { peer, .. } => Some(*peer),
            _ => None,
        })
        .collect()
}

fn disconnects(out: &[Output]) -> Vec<SocketAddr> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send {
                to,
                frame: MemberFrame::Disconnect,
            } => Some(*to),
            _ => None,
        })
        .collect()
}

fn accept() -> Vec<MemberFrame> {
    vec![MemberFrame::NeighborReply {
        accepted: true,
        shards: 1,
    }]
}

fn shuffle_from(port: u16) -> Vec<MemberFrame> {
    vec![MemberFrame::Shuffle {
        origin: Contact {
            id: id_at(port),
            addr: at(port),
            shards: 1,
        },
        ttl: 0,
        nodes: Vec::new(),
    }]
}

fn driver(seeds: &[u16]) -> MemberDriver {
    let seeds: Vec<SocketAddr> = seeds.iter().map(|&p| at(p)).collect();
    MemberDriver::new(ME, at(MY_ADDR), 1, 1400, cfg(), &seeds, 7).unwrap()
}

/// A node seeded with A and B that joined through the seed its first Join went to;
/// returns that seed's port and the other's.
fn joined_node() -> (MemberDriver, u16, u16) {
    let mut d = driver(&[A_ADDR, B_ADDR]);
    let out = d.start(ms(0));
    let first = joins(&out)[0].port();
    let other = if first == A_ADDR { B_ADDR } else { A_ADDR };
    let out = d.on_frames(ms(5), id_at(first), at(first), accept());
    assert_eq!(ups(&out), vec![id_at(first)]);
    (d, first, other)
}

#[test]
fn the_seeds_acknowledgement_of_our_join_by_address_sends_no_second_join() {
    let mut d = driver(&[A_ADDR, B_ADDR]);
    let out = d.start(ms(0));
    let first = joins(&out)[0].port();
    let out = d.on_frames(ms(5), id_at(first), at(first), accept());
    assert_eq!(
        joins(&out),
        Vec::<SocketAddr>::new(),
        "the join was answered"
    );
    assert_eq!(ups(&out), vec![id_at(first)]);
    assert!(disconnects(&out).is_empty());
    assert!(!d.membership().is_joining());
    // Two backups, so that the node is not starved into rejoining (a rule of its own);
    // then past the first retry's deadline, before the failure detector could drop A.
    let nodes = [(D, 7040), (E, 7050)]
        .map(|(id, port)| Contact {
            id,
            addr: at(port),
            shards: 1,
        })
        .to_vec();
    let seed = id_at(first);
    d.on_frames(
        ms(6),
        seed,
        at(first),
        vec![MemberFrame::ShuffleReply { nodes }],
    );
    for t in 1..=3 {
        assert!(joins(&d.tick(secs(t))).is_empty(), "no retry once answered");
    }
}

#[test]
fn a_second_seed_heard_after_we_joined_starts_no_join() {
    let (mut d, first, other) = joined_node();
    let out = d.on_frames(ms(500), id_at(other), at(other), shuffle_from(other));
    assert_eq!(joins(&out), Vec::<SocketAddr>::new());
    assert_eq!(d.membership().active(), &[id_at(first)]);
    assert!(!d.membership().is_joining());
}

#[test]
fn a_second_seed_acknowledging_our_join_by_address_is_let_in_not_disconnected() {
    // Seeds answer Joins by address that were sent before one of them answered (a
    // retry, or an acknowledgement that was slow): the link is real on their side.
    let (mut d, first, other) = joined_node();
    let out = d.on_frames(ms(20), id_at(other), at(other), accept());
    assert!(joins(&out).is_empty());
    assert!(disconnects(&out).is_empty());
    assert_eq!(ups(&out), vec![id_at(other)]);
    let mut active = d.membership().active().to_vec();
    active.sort();
    let mut want = vec![id_at(first), id_at(other)];
    want.sort();
    assert_eq!(active, want);
}

#[test]
fn a_node_joined_through_us_does_not_stop_us_joining_through_our_seed() {
    // C joined through us before our seed A answered: we have a neighbour but are
    // not attached to the cluster. A's answer must still make it our neighbour.
    let mut d = driver(&[A_ADDR]);
    let out = d.start(ms(0));
    assert_eq!(joins(&out), vec![at(A_ADDR)]);
    let out = d.on_frames(ms(50), C, at(C_ADDR), vec![MemberFrame::Join { shards: 1 }]);
    assert_eq!(ups(&out), vec![C]);
    let out = d.on_frames(ms(150), A, at(A_ADDR), accept());
    assert_eq!(ups(&out), vec![A]);
    assert!(disconnects(&out).is_empty());
    assert!(joins(&out).is_empty(), "A answered the Join by address");
    assert!(!d.membership().is_joining());

    // The same island, but A's first datagram is not its answer (our Join may have
    // been lost): we join through it by id at once.
    let mut d = driver(&[A_ADDR]);
    d.start(ms(0));
    d.on_frames(ms(50), C, at(C_ADDR), vec![MemberFrame::Join { shards: 1 }]);
    let out = d.on_frames(ms(150), A, at(A_ADDR), shuffle_from(A_ADDR));
    assert_eq!(joins(&out), vec![at(A_ADDR)]);
    assert!(d.membership().is_joining());
    let out = d.on_frames(ms(160), A, at(A_ADDR), accept());
    assert_eq!(ups(&out), vec![A]);
    assert!(!d.membership().is_joining());
}
