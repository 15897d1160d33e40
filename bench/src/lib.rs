//! plumcore's load generator and benchmark helpers: `blast` drives one node's shards
//! next to a raw UDP forwarding loop (`raw`), `scale` repeats it over shard counts,
//! `cluster` loads a local cluster of node processes, `compare` runs that workload on
//! plumcore, its flood mode and memberlist-plumtree; `idle` measures what a node
//! with no traffic costs; `report` holds the arithmetic.
//! The workload builders below feed the criterion benchmarks.

pub mod blast;
pub mod cluster;
pub mod compare;
pub mod idle;
pub mod machine;
pub mod memberlist;
pub mod natsserver;
pub mod nodes;
pub mod plot;
pub mod raw;
pub mod report;
pub mod scale;
pub mod soak;

use bytes::Bytes;
use plumcore::ids::{MessageId, NodeId};
use plumcore::protocol::{ProtocolConfig, Shard};
use plumcore::wire::Frame;

/// A shard owning every partition with `peers` neighbours (ids 2..), events drained.
pub fn shard_with_peers(cfg: ProtocolConfig, peers: u64) -> Shard {
    let all = if cfg.partitions == 64 {
        u64::MAX
    } else {
        (1u64 << cfg.partitions) - 1
    };
    let mut s = Shard::new(NodeId(1), all, cfg, 1).expect("valid config");
    for p in 0..peers {
        s.neighbor_up(Default::default(), NodeId(p + 2));
    }
    while s.poll_event().is_some() {}
    s
}

/// `n` Gossip frames from `origins` origins with `payload` bytes each, seqs in order.
pub fn gossip_frames(n: usize, origins: u64, payload: usize) -> Vec<Frame> {
    let body = Bytes::from(vec![0xAB; payload]);
    (0..n as u64)
        .map(|k| Frame::Gossip {
            id: MessageId {
                origin: NodeId(1000 + k % origins),
                seq: k / origins,
            },
            round: 1,
            topic: plumcore::topic::Topic::default(),
            payload: body.clone(),
        })
        .collect()
}
