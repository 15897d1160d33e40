//! Hot-path micro-benchmarks of the sans-IO core, each next to a baseline measured in
//! the same run:
//! - seen map vs a plain `FxHashSet<MessageId>` (the usual dedupe set);
//! - a shard handling Gossip in Plumtree mode vs flood mode.

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use plumcore::ids::{MessageId, NodeId};
use plumcore::protocol::seen::SeenMap;
use plumcore::protocol::{Mode, ProtocolConfig};
use plumcore_bench::{gossip_frames, shard_with_peers};
use rustc_hash::FxHashSet;

const N: u64 = 100_000;

fn ids(origins: u64) -> Vec<MessageId> {
    (0..N)
        .map(|k| MessageId {
            origin: NodeId(1000 + k % origins),
            seq: k / origins,
        })
        .collect()
}

fn seen(c: &mut Criterion) {
    let mut g = c.benchmark_group("seen_insert");
    g.throughput(Throughput::Elements(N));
    let ids = ids(100);
    g.bench_function("seen_map", |b| {
        b.iter_batched(
            || {
                SeenMap::new(
                    1,
                    1,
                    1 << 16,
                    1 << 16,
                    Duration::from_secs(60),
                    Duration::from_secs(60),
                )
            },
            |mut m| {
                for &id in &ids {
                    black_box(m.insert(Duration::from_secs(1), id));
                }
                m
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("baseline_fxhashset", |b| {
        b.iter_batched(
            FxHashSet::<MessageId>::default,
            |mut m| {
                for &id in &ids {
                    black_box(m.insert(id));
                }
                m
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn shard_gossip(c: &mut Criterion) {
    let mut g = c.benchmark_group("shard_gossip");
    let frames = gossip_frames(10_000, 50, 64);
    g.throughput(Throughput::Elements(frames.len() as u64));
    for (name, mode) in [
        ("plumtree", Mode::Plumtree),
        ("baseline_flood", Mode::Flood),
    ] {
        let cfg = ProtocolConfig {
            mode,
            ..ProtocolConfig::default()
        };
        g.bench_function(name, |b| {
            b.iter_batched(
                || (shard_with_peers(cfg.clone(), 8), frames.clone()),
                |(mut s, frames)| {
                    let now = Duration::from_secs(1);
                    for f in frames {
                        s.handle_frame(now, NodeId(2), f);
                        while let Some(e) = s.poll_event() {
                            black_box(e);
                        }
                    }
                    s
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, seen, shard_gossip);
criterion_main!(benches);
