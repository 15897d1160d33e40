//! Hot-path micro-benchmarks of the sans-IO core, each next to a baseline measured in
//! the same run:
//! - seen map vs a plain `FxHashSet<MessageId>` (the usual dedupe set);
//! - a shard handling Gossip in Plumtree mode vs flood mode;
//! - anti-entropy at 10,000 messages/s (a cache holding 60 s of them): one round and
//!   one reply, against handling one second of that traffic (10,000 Gossip frames).

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

/// A shard that delivered 60 s of 10,000 messages/s from 4 origins (64-byte
/// payloads): 600,000 cached, as anti-entropy sees it at steady state.
fn loaded_shard() -> (plumcore::protocol::Shard, Duration) {
    let mut s = shard_with_peers(ProtocolConfig::default(), 8);
    let frames = gossip_frames(600_000, 4, 64);
    let mut now = Duration::from_secs(1);
    for f in frames {
        s.handle_frame(now, NodeId(2), f);
        while s.poll_event().is_some() {}
        now += Duration::from_micros(100);
    }
    (s, now)
}

fn anti_entropy(c: &mut Criterion) {
    let mut g = c.benchmark_group("anti_entropy_10k_per_s");
    let (mut s, now) = loaded_shard();
    let mut peer = loaded_shard().0;
    let before = s.stats().anti_entropy_blocks_sent;
    s.anti_entropy(now);
    let mut digest = Vec::new();
    while let Some(e) = s.poll_event() {
        if let plumcore::protocol::Event::Send { frame, .. } = e {
            digest.push(frame);
        }
    }
    let blocks = s.stats().anti_entropy_blocks_sent - before;
    eprintln!(
        "anti_entropy_10k_per_s: {} cached; one round = {} Digest frames, {blocks} blocks, {} bytes on the wire (24 per block + 6 per frame) against 640,000 payload bytes a second",
        s.stats().cache_entries,
        digest.len(),
        blocks * 24 + digest.len() as u64 * 6
    );
    // `now` stays put: each round is the next slice of the same 60 s of cache, as
    // successive rounds are at steady state.
    g.bench_function("round", |b| {
        b.iter(|| {
            s.anti_entropy(now);
            while let Some(e) = s.poll_event() {
                black_box(e);
            }
        })
    });
    // A neighbour holding the same messages: its own round (which also refills its
    // budgets), then the digest received (nothing to pull) and its reply.
    g.bench_function("round_then_digest_received_and_replied", |b| {
        b.iter(|| {
            peer.anti_entropy(now);
            while peer.poll_event().is_some() {}
            for f in digest.iter().cloned() {
                peer.handle_frame(now, NodeId(2), f);
            }
            while let Some(e) = peer.poll_event() {
                black_box(e);
            }
        })
    });
    let second = gossip_frames(10_000, 4, 64);
    g.bench_function("baseline_one_second_of_gossip", |b| {
        b.iter_batched(
            || {
                (
                    shard_with_peers(ProtocolConfig::default(), 8),
                    second.clone(),
                )
            },
            |(mut s, frames)| {
                for f in frames {
                    s.handle_frame(Duration::from_secs(1), NodeId(2), f);
                    while let Some(e) = s.poll_event() {
                        black_box(e);
                    }
                }
                s
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, seen, shard_gossip, anti_entropy);
criterion_main!(benches);
