//! Check of the `shard_frames` fuzz target, shared with the stable corpus regression
//! test. Structure-aware: feeds a protocol shard a sequence of valid and invalid operations
//! (frames from known and unknown peers, timers, neighbour churn, broadcasts, cleanup)
//! and checks its invariants after every step: no panic, every bounded structure
//! within its bound, every delivery unique.

use std::collections::HashMap;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use plumcore::ids::{MessageId, NodeId};
use plumcore::protocol::{Event, ProtocolConfig, Shard, Timer};
use plumcore::wire::{DigestBlock, Frame, IHaveEntry};

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
    FireTimer {
        index: u8,
    },
    Advance {
        ms: u16,
    },
    Maintenance,
    Cleanup {
        budget: u8,
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
    let mut s = Shard::new(NodeId(1), 0b1111, cfg.clone(), 7).expect("valid config");
    let mut now = Duration::ZERO;
    let mut timers: Vec<Timer> = Vec::new();
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
                s.handle_frame(
                    now,
                    NodeId(u64::from(peer % 12) + 2),
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
                s.handle_frame(
                    now,
                    NodeId(u64::from(peer % 12) + 2),
                    Frame::IHave { entries },
                );
            }
            Op::Graft {
                peer,
                origin,
                seq,
                request,
            } => s.handle_frame(
                now,
                NodeId(u64::from(peer % 12) + 2),
                Frame::Graft {
                    id: id(origin, seq),
                    round: 0,
                    request,
                },
            ),
            Op::Prune { peer, partition } => s.handle_frame(
                now,
                NodeId(u64::from(peer % 12) + 2),
                Frame::Prune { partition },
            ),
            // Random roots (most never seen): counted and ignored, never stored.
            Op::PruneRoot {
                peer,
                partition,
                root,
            } => s.handle_frame(
                now,
                NodeId(u64::from(peer % 12) + 2),
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
                s.handle_frame(
                    now,
                    NodeId(u64::from(peer % 12) + 2),
                    Frame::Digest {
                        partition: u16::from(partition % 8),
                        reply,
                        blocks,
                    },
                )
            }
            Op::Up { peer } => {
                s.neighbor_up(now, NodeId(u64::from(peer % 12) + 2));
            }
            Op::Down { peer } => {
                s.neighbor_down(now, NodeId(u64::from(peer % 12) + 2));
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
            Op::FireTimer { index } => {
                if !timers.is_empty() {
                    let t = timers.swap_remove(usize::from(index) % timers.len());
                    s.handle_timer(now, t);
                }
            }
            Op::Advance { ms } => now += Duration::from_millis(u64::from(ms)),
            Op::Maintenance => s.maintenance(now),
            Op::Cleanup { budget } => {
                let _ = s.cleanup(now, usize::from(budget));
            }
            Op::AntiEntropy => s.anti_entropy(now),
        }
        while let Some(e) = s.poll_event() {
            match e {
                Event::SetTimer { timer, .. } if timers.len() < 1024 => timers.push(timer),
                Event::Deliver { id, .. } => {
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
                Event::Gap(g) => {
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
        let st = s.stats();
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
