//! Rule-by-rule tests of the shard on hand-built inputs: feed one frame or one timer,
//! assert on the drained events (the foca style).

mod anti_entropy;
mod gaps;
mod gossip;
mod limits;
mod roots;
mod topology;
mod validator;

use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::ids::{MessageId, NodeId};
use crate::topic::Topic;
use crate::wire::{Frame, IHaveEntry};

const ME: NodeId = NodeId(1);
const A: NodeId = NodeId(2);
const B: NodeId = NodeId(3);
const C: NodeId = NodeId(4);
const D: NodeId = NodeId(5);

fn ms(v: u64) -> Time {
    Duration::from_millis(v)
}

fn cfg() -> ProtocolConfig {
    ProtocolConfig {
        partitions: 1,
        ..ProtocolConfig::default()
    }
}

fn shard_with(cfg: ProtocolConfig, peers: &[NodeId]) -> Shard {
    let mut s = Shard::new(ME, 1, cfg, 7).unwrap();
    for &p in peers {
        assert!(s.neighbor_up(ms(0), p));
    }
    drain(&mut s);
    s
}

fn shard(peers: &[NodeId]) -> Shard {
    shard_with(cfg(), peers)
}

fn drain(s: &mut Shard) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn mid(origin: u64, seq: u64) -> MessageId {
    MessageId {
        origin: NodeId(origin),
        seq,
    }
}

fn gossip(id: MessageId, round: u16) -> Frame {
    Frame::Gossip {
        id,
        round,
        topic: Topic::default(),
        payload: Bytes::from_static(b"hello"),
    }
}

fn sends(events: &[Event]) -> Vec<(NodeId, Frame)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Send { to, frame } => Some((*to, frame.clone())),
            _ => None,
        })
        .collect()
}

fn gossip_targets(events: &[Event]) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = sends(events)
        .into_iter()
        .filter(|(_, f)| matches!(f, Frame::Gossip { .. }))
        .map(|(to, _)| to)
        .collect();
    v.sort();
    v
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

fn sorted(mut v: Vec<NodeId>) -> Vec<NodeId> {
    v.sort();
    v
}

fn digests(events: &[Event]) -> Vec<(NodeId, u16, bool, Vec<MessageId>)> {
    sends(events)
        .into_iter()
        .filter_map(|(to, f)| match f {
            Frame::Digest {
                partition,
                reply,
                blocks,
            } => {
                let mut ids: Vec<MessageId> = blocks
                    .iter()
                    .flat_map(|b| crate::protocol::digest::block_ids(*b, 1))
                    .collect();
                ids.sort();
                Some((to, partition, reply, ids))
            }
            _ => None,
        })
        .collect()
}

fn grafts(events: &[Event]) -> Vec<(NodeId, MessageId)> {
    sends(events)
        .into_iter()
        .filter_map(|(to, f)| match f {
            Frame::Graft {
                id, request: true, ..
            } => Some((to, id)),
            _ => None,
        })
        .collect()
}
