//! Check of the `shard_frames` fuzz target, shared with the stable corpus regression
//! test. Structure-aware: feeds a protocol shard, through the `ShardHost` the node and
//! the simulator drive (the stranger rule, routing, coalescing, its timer queue), a
//! sequence of valid and invalid operations (frames from known and unknown peers,
//! timers, neighbour churn, broadcasts, cleanup) and checks its invariants after every
//! step: no panic, every bounded structure within its bound, every delivery unique,
//! every datagram decodable and sent to a neighbour.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use plumcore::ids::{MessageId, NodeId};
use plumcore::protocol::host::{HostConfig, HostEvent, HostTimer, PeerLayout, ShardHost};
use plumcore::protocol::{ProtocolConfig, Shard};
use plumcore::wire::{self, Datagram, DigestBlock, Frame, Header, IHaveEntry};

#[derive(Arbitrary, Debug)]
enum Op {
    Gossip {
        peer: u8,
        origin: u8,
        seq: u16,
        round: u8,
        len: u8,
    },
    IHave {
        peer: u8,
        ids: Vec<(u8, u16, u8)>,
    },
    Graft {
        peer: u8,
        origin: u8,
        seq: u16,
        request: bool,
    },
    Prune {
        peer: u8,
        partition: u16,
    },
    Digest {
        peer: u8,
        partition: u8,
        reply: bool,
        blocks: Vec<(u8, u16, u64)>,
    },
    Up {
        peer: u8,
    },
    Down {
        peer: u8,
    },
    Broadcast {
        len: u16,
    },
    /// Wait `index` ms, then run the host's due timers.
    FireTimer {
        index: u8,
    },
    Advance {
        ms: u16,
    },
    Maintenance,
    /// One cleanup slice of the host's budget (`_budget`, the shard's budget before
    /// the host, stays so saved inputs decode as they did).
    Cleanup {
        _budget: u8,
    },
    AntiEntropy,
    PruneRoot {
        peer: u8,
        partition: u16,
        root: u16,
    },
}

/// At most 16 origins, so the seen map (bound 16) never has to evict one: then a
/// message may be delivered again only after its origin was silent for a TTL.
fn id(origin: u8, seq: u16) -> MessageId {
    MessageId {
        origin: NodeId(u64::from(origin % 16) + 100),
        seq: u64::from(seq),
    }
}

const TTL: Duration = Duration::from_secs(60);

/// Peer `peer % 12`: node 2 to 13.
fn peer_id(peer: u8) -> NodeId {
    NodeId(u64::from(peer % 12) + 2)
}

/// Where a peer's one shard listens: 10.0.0.<id>, port 7001.
fn layout(peer: NodeId) -> PeerLayout {
    PeerLayout {
        control: SocketAddr::new(Ipv4Addr::new(10, 0, 0, peer.0 as u8).into(), 7000),
        shards: 1,
    }
}

/// One frame from `peer`, as its shard's datagram.
fn receive(h: &mut ShardHost, now: Duration, peer: u8, frame: Frame) {
    let from = peer_id(peer);
    let dg = Datagram {
        header: Header::new(from, 1),
        frames: vec![frame],
        skipped_unknown: 0,
        misrouted_member_frames: 0,
    };
    h.receive(now, layout(from).shard_addr(0), dg, false);
}

/// The whole target: decode `data` into operations the way libFuzzer's typed
/// `fuzz_target!` does, and run them.
pub fn run(data: &[u8]) {
    if let Ok(ops) = Vec::<Op>::arbitrary_take_rest(Unstructured::new(data)) {
        run_ops(ops);
    }
}

fn run_ops(ops: Vec<Op>) {
    let cfg = ProtocolConfig {
        partitions: 4,
        max_cached_messages: 64,
        max_cached_bytes: 4096,
        max_seen_origins: 16,
        max_seen_window: 256,
        max_pending_grafts: 32,
        max_ihave_queue: 32,
        max_neighbors: 8,
        max_payload: 256,
        max_roots: 8,
        ..ProtocolConfig::default()
    };
    let shard = Shard::new(NodeId(1), 0b1111, cfg.clone(), 7).expect("valid config");
    let mut s = ShardHost::new(
        shard,
        HostConfig {
            header: Header::new(NodeId(1), 1),
            mtu: wire::DEFAULT_MTU,
        },
        7,
    );
    let mut now = Duration::ZERO;
    // id -> when delivered; origin -> every time the shard heard of it.
    let mut delivered: HashMap<MessageId, Duration> = HashMap::new();
    let mut touched: HashMap<NodeId, Vec<Duration>> = HashMap::new();
    let mut next_seq = 0u64;
    for op in ops.into_iter().take(512) {
        match op {
            Op::Gossip {
                peer,
                origin,
                seq,
                round,
                len,
            } => {
                touched.entry(id(origin, seq).origin).or_default().push(now);
                receive(
                    &mut s,
                    now,
                    peer,
                    Frame::Gossip {
                        id: id(origin, seq),
                        round: u16::from(round),
                        topic: plumcore::topic::Topic::default(),
                        payload: Bytes::from(vec![0; usize::from(len)]),
                    },
                )
            }
            Op::IHave { peer, ids } => {
                let entries: Vec<IHaveEntry> = ids
                    .into_iter()
                    .take(64)
                    .map(|(o, q, r)| IHaveEntry {
                        id: id(o, q),
                        round: u16::from(r),
                    })
                    .collect();
                receive(&mut s, now, peer, Frame::IHave { entries });
            }
            Op::Graft {
                peer,
                origin,
                seq,
                request,
            } => receive(
                &mut s,
                now,
                peer,
                Frame::Graft {
                    id: id(origin, seq),
                    round: 0,
                    request,
                },
            ),
            Op::Prune { peer, partition } => receive(&mut s, now, peer, Frame::Prune { partition }),
            // Random roots (most never seen): counted and ignored, never stored.
            Op::PruneRoot {
                peer,
                partition,
                root,
            } => receive(
                &mut s,
                now,
                peer,
                Frame::PruneRoot {
                    partition,
                    root: NodeId(u64::from(root)),
                },
            ),
            Op::Digest {
                peer,
                partition,
                reply,
                blocks,
            } => {
                let blocks: Vec<DigestBlock> = blocks
                    .into_iter()
                    .take(64)
                    .map(|(o, first, bits)| DigestBlock {
                        origin: id(o, 0).origin,
                        first: u64::from(first),
                        bits,
                    })
                    .collect();
                receive(
                    &mut s,
                    now,
                    peer,
                    Frame::Digest {
                        partition: u16::from(partition % 8),
                        reply,
                        blocks,
                    },
                )
            }
            Op::Up { peer } => {
                s.neighbor_up(now, peer_id(peer), layout(peer_id(peer)));
            }
            Op::Down { peer } => {
                s.neighbor_down(now, peer_id(peer));
            }
            Op::Broadcast { len } => {
                next_seq += 1;
                let _ = s.broadcast(
                    now,
                    MessageId {
                        origin: NodeId(1),
                        seq: next_seq,
                    },
                    plumcore::topic::Topic::default(),
                    Bytes::from(vec![1; usize::from(len) % 300]),
                );
            }
            // Timers live in the host's queue: what is due fires, earliest first (an
            // unfinished cleanup's next slice among them).
            Op::FireTimer { index } => {
                now += Duration::from_millis(u64::from(index));
                s.fire_due(now);
            }
            Op::Advance { ms } => now += Duration::from_millis(u64::from(ms)),
            Op::Maintenance => s.fire(now, HostTimer::Maintenance),
            // The host's own budget per slice; the rest waits for the next FireTimer.
            Op::Cleanup { .. } => s.fire(now, HostTimer::Cleanup),
            Op::AntiEntropy => s.fire(now, HostTimer::AntiEntropy),
        }
        s.flush();
        while let Some(e) = s.poll_event() {
            match e {
                HostEvent::Deliver { id, .. } => {
                    if let Some(first) = delivered.insert(id, now) {
                        // Forgetting is allowed only after the origin went silent for
                        // longer than the TTL at some point since the first delivery.
                        let times = touched.get(&id.origin).cloned().unwrap_or_default();
                        let since: Vec<Duration> =
                            times.into_iter().filter(|&t| t >= first).collect();
                        let gap = since.windows(2).any(|w| w[1].saturating_sub(w[0]) > TTL);
                        assert!(gap, "{id:?} delivered twice without a TTL of silence");
                    }
                }
                HostEvent::Gap(g) => {
                    // A gap counts owned seqs that were never delivered, inside its range.
                    assert!(g.first <= g.last && g.missed > 0, "{g:?}");
                    assert!(g.missed <= g.last - g.first + 1, "{g:?}");
                    for seq in g.first..=g.last.min(g.first + 4096) {
                        let id = plumcore::ids::MessageId {
                            origin: g.origin,
                            seq,
                        };
                        assert!(
                            !delivered.contains_key(&id) || g.missed < g.last - g.first + 1,
                            "{g:?} declares everything missing but {id:?} was delivered"
                        );
                    }
                }
                _ => {}
            }
        }
        // Frames go only to neighbours (to their shard's address), in datagrams a
        // peer can decode.
        while let Some((addr, bytes)) = s.poll_datagram() {
            let dg = wire::decode(&bytes).expect("the host builds decodable datagrams");
            assert_eq!(dg.header.sender, NodeId(1));
            let to = NodeId(u64::from(match addr.ip() {
                std::net::IpAddr::V4(ip) => ip.octets()[3],
                std::net::IpAddr::V6(_) => unreachable!("peers are IPv4"),
            }));
            assert!(s.peer(to).is_some(), "sent to {to:?}, not a neighbour");
            assert_eq!(addr, layout(to).shard_addr(0));
        }
        let st = s.shard().stats();
        assert!(st.cache_entries <= cfg.max_cached_messages as u64);
        assert!(st.cache_bytes <= cfg.max_cached_bytes as u64 + 300);
        assert!(st.seen_origins <= cfg.max_seen_origins as u64);
        assert!(st.pending_grafts <= cfg.max_pending_grafts as u64);
        assert!(st.ihave_queue <= cfg.max_ihave_queue as u64);
        assert!(st.neighbors <= cfg.max_neighbors as u64);
        assert!(st.roots <= cfg.max_roots as u64);
        assert!(st.pending_holes <= 64 * st.seen_origins.max(1));
    }
}
