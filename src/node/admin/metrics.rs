//! `/metrics`: the node's counters in the OpenMetrics text format, encoded with
//! `prometheus-client`. Shards keep plain `u64` counters and the control core only
//! snapshots them, so instead of live metric objects each scrape builds a registry
//! around one [`NodeSnapshot`] and a collector that writes it out (scrapes are rare;
//! the hot path never touches a metric).

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::protocol::stats::IHAVE_BATCH_BUCKETS;
use crate::protocol::ShardStats;

use crate::node::snapshot::{IoStats, NodeSnapshot, ShardSnapshot};

/// Content type of [`encode_metrics`]' output (what `/metrics` answers with).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (`le`) of the `plumtree_delivery_hops` histogram, `+Inf` aside.
pub const HOP_BUCKETS: [u64; 7] = [1, 2, 4, 8, 16, 32, 64];

/// Encodes `s` as OpenMetrics text, ending with `# EOF`.
pub fn encode_metrics(s: &NodeSnapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(s.clone())));
    let mut out = String::new();
    // Writing into a String cannot fail, and the collector never reports an error.
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        out.clear();
        out.push_str("# EOF\n");
    }
    out
}

/// One `reason`-labelled series per row of `table`, summed over the shards and the
/// control socket.
fn reason_totals(s: &NodeSnapshot, table: &[(&str, IoFn)]) -> Vec<(Labels, u64)> {
    table
        .iter()
        .map(|&(reason, f)| {
            let total = s
                .shards
                .iter()
                .map(|sh| f(&sh.io))
                .fold(f(&s.control_io), u64::saturating_add);
            (vec![("reason", reason.to_string())], total)
        })
        .collect()
}

/// Distinct neighbours that are eager in at least one partition, and distinct ones
/// that are lazy in at least one (a peer can be both, in different partitions).
pub fn distinct_peers(s: &NodeSnapshot) -> (u64, u64) {
    let eager = s.peers.iter().filter(|p| p.eager_partitions > 0).count();
    let lazy = s.peers.iter().filter(|p| p.lazy_partitions > 0).count();
    (eager as u64, lazy as u64)
}

/// Per-bucket counts of `sizes` (see `ShardStats::ihave_batch_sizes`) over
/// [`IHAVE_BATCH_BUCKETS`] and `+Inf`, with the sum (each bucket at its upper bound,
/// the last at twice the last bound: an estimate) and the count.
fn batch_histogram(sizes: &[u64]) -> (f64, u64, Vec<(f64, u64)>) {
    let mut buckets = Vec::with_capacity(sizes.len());
    let (mut sum, mut count) = (0f64, 0u64);
    for (i, &n) in sizes.iter().enumerate() {
        let (le, at) = match IHAVE_BATCH_BUCKETS.get(i) {
            Some(&b) => (b as f64, b as f64),
            None => (
                f64::MAX,
                2.0 * *IHAVE_BATCH_BUCKETS.last().unwrap_or(&1) as f64,
            ),
        };
        buckets.push((le, n));
        sum += at * n as f64;
        count = count.saturating_add(n);
    }
    (sum, count, buckets)
}

/// Writes one snapshot; registered afresh for every scrape.
#[derive(Debug)]
struct SnapshotCollector(NodeSnapshot);

type Labels = Vec<(&'static str, String)>;

/// A per-shard counter or gauge read from the protocol counters.
type StatFn = fn(&ShardStats) -> u64;

const SHARD_COUNTERS: &[(&str, &str, StatFn)] = &[
    (
        "plumtree_messages_broadcast",
        "Broadcasts originated by this node.",
        |s| s.broadcasts,
    ),
    (
        "plumtree_messages_delivered",
        "Messages delivered to the application.",
        |s| s.delivered,
    ),
    (
        "plumtree_messages_duplicate",
        "Gossip received for messages already delivered.",
        |s| s.duplicates,
    ),
    ("plumtree_gossip_received", "Gossip frames received.", |s| {
        s.gossip_received
    }),
    (
        "plumtree_gossip_sent",
        "Gossip frames sent (eager push).",
        |s| s.gossip_sent,
    ),
    (
        "plumtree_ihave_sent",
        "IHave frames sent (lazy push).",
        |s| s.ihave_sent,
    ),
    (
        "plumtree_ihave_dropped",
        "IHave announcements shed because the queue was full.",
        |s| s.ihave_dropped,
    ),
    ("plumtree_graft_sent", "Graft frames sent.", |s| {
        s.graft_sent
    }),
    (
        "plumtree_graft_success",
        "Missing messages that arrived after a Graft.",
        |s| s.graft_success,
    ),
    (
        "plumtree_graft_failed",
        "Missing messages given up after the last Graft retry.",
        |s| s.graft_failed,
    ),
    ("plumtree_graft_retries", "Graft retries.", |s| {
        s.graft_retries
    }),
    ("plumtree_prune_sent", "Prune frames sent.", |s| {
        s.prune_sent
    }),
    (
        "plumtree_peer_promotions",
        "Lazy peers promoted to eager by the maintenance loop (eager-set repair).",
        |s| s.peer_promotions,
    ),
    (
        "plumtree_seen_map_evictions",
        "Seen-map origins evicted plus forced window slides.",
        |s| s.seen_origin_evictions + s.seen_forced_slides,
    ),
    (
        "plumtree_cache_evictions",
        "Cached payloads evicted by the size bounds.",
        |s| s.cache_evictions,
    ),
    (
        "plumtree_anti_entropy_rounds",
        "Anti-entropy rounds that sent a digest.",
        |s| s.anti_entropy_rounds,
    ),
    (
        "plumtree_anti_entropy_pulls",
        "Messages pulled because a neighbour's digest showed them missing.",
        |s| s.anti_entropy_pulls,
    ),
    (
        "plumtree_anti_entropy_shed",
        "Anti-entropy pulls and replies shed by the per-round budgets.",
        |s| s.anti_entropy_pulls_shed + s.anti_entropy_replies_shed,
    ),
    (
        "plumtree_seen_epochs",
        "Seq jumps past max_seen_window read as a new epoch of the origin (a restart), not as a gap.",
        |s| s.seen_epochs,
    ),
    (
        "plumtree_root_evictions",
        "Per-root trees evicted by max_roots (they fall back to the template).",
        |s| s.root_evictions,
    ),
    (
        "plumtree_root_expirations",
        "Per-root trees dropped after a silent message_cache_ttl.",
        |s| s.root_expirations,
    ),
    (
        "plumtree_unknown_roots",
        "Prune and Graft frames naming a root with no tree here (ignored).",
        |s| s.unknown_roots,
    ),
];

const SHARD_GAUGES: &[(&str, &str, StatFn)] = &[
    (
        "plumtree_pending_holes",
        "Holes (runs of missing seqs below a delivered one) waiting to be filled or declared unrecoverable.",
        |s| s.pending_holes,
    ),
    (
        "plumtree_eager_links",
        "Eager (partition, peer) links, summed over the shard's partitions.",
        |s| s.eager_links,
    ),
    (
        "plumtree_lazy_links",
        "Lazy (partition, peer) links, summed over the shard's partitions.",
        |s| s.lazy_links,
    ),
    ("plumtree_neighbors", "Neighbours the shard tracks.", |s| {
        s.neighbors
    }),
    (
        "plumtree_seen_map_size",
        "Origins tracked by the seen map.",
        |s| s.seen_origins,
    ),
    (
        "plumtree_seen_map_bytes",
        "Approximate bytes held by the seen map.",
        |s| s.seen_map_bytes,
    ),
    (
        "plumtree_ihave_queue_size",
        "IHave entries waiting to be sent.",
        |s| s.ihave_queue,
    ),
    (
        "plumtree_pending_grafts",
        "Missing messages waiting for a Graft.",
        |s| s.pending_grafts,
    ),
    (
        "plumtree_cache_entries",
        "Payloads in the message cache.",
        |s| s.cache_entries,
    ),
    (
        "plumtree_cache_bytes",
        "Payload bytes in the message cache.",
        |s| s.cache_bytes,
    ),
    (
        "plumtree_roots_tracked",
        "Roots (origins) with per-root trees in the shard.",
        |s| s.roots,
    ),
    (
        "plumtree_roots_bytes",
        "Approximate bytes held by the per-root trees.",
        |s| s.roots_bytes,
    ),
];

/// Socket counters, one series per shard plus `shard="control"`.
type IoFn = fn(&IoStats) -> u64;

const IO_COUNTERS: &[(&str, &str, IoFn)] = &[
    (
        "plumtree_datagrams_received",
        "UDP datagrams received.",
        |s| s.datagrams_received,
    ),
    ("plumtree_datagrams_sent", "UDP datagrams sent.", |s| {
        s.datagrams_sent
    }),
    (
        "plumtree_bytes_received",
        "UDP payload bytes received.",
        |s| s.bytes_received,
    ),
    ("plumtree_bytes_sent", "UDP payload bytes sent.", |s| {
        s.bytes_sent
    }),
    ("plumtree_send_errors", "UDP sends that failed.", |s| {
        s.send_errors
    }),
    (
        "plumtree_unknown_frames",
        "Frames with unknown tags, skipped.",
        |s| s.unknown_frames,
    ),
    (
        "plumtree_unknown_senders",
        "Datagrams from senders that are not neighbours.",
        |s| s.unknown_senders,
    ),
    (
        "plumtree_command_queue_full",
        "Commands from the control core a shard's queue could not take (dropped).",
        |s| s.command_queue_full,
    ),
    (
        "plumtree_deliveries_lagged",
        "Deliveries the delivery queue refused while its writer was behind; readers get a lagged line or event with the count.",
        |s| s.deliveries_lagged,
    ),
    (
        "plumtree_wire_v1_datagrams",
        "Datagrams received in wire version 1, from peers that predate topics; replies to them are written in version 1.",
        |s| s.wire_v1_datagrams,
    ),
    (
        "plumtree_topics_downgraded",
        "Gossip frames of a topic other than `default` sent to a version-1 peer, which delivers (and relays) them as `default`.",
        |s| s.topics_downgraded,
    ),
    (
        "plumtree_wire_v1_peers_untracked",
        "Version-1 peer addresses not remembered because the bounded map was full (they are written to in version 2).",
        |s| s.wire_v1_untracked,
    ),
    (
        "plumtree_ihave_unknown_sender",
        "IHave and Digest frames from non-neighbours, dropped before they take pending-graft slots.",
        |s| s.ihave_unknown_sender,
    ),
    (
        "plumtree_rate_limited",
        "Datagrams dropped by the per-source flood limit.",
        |s| s.rate_limited,
    ),
    (
        "plumtree_rate_limit_evictions",
        "Sources evicted from the flood limiter's bounded map.",
        |s| s.rate_limit_evictions,
    ),
    (
        "plumtree_shard_wakeups",
        "Times the executor woke from a sleep (receive readiness, commands, timers).",
        |s| s.wakeups,
    ),
    (
        "plumtree_rx_buffer_exhausted",
        "Receive batches that found the buffer pool exhausted (served from fresh buffers).",
        |s| s.rx_buffer_exhausted,
    ),
    (
        "plumtree_rx_readiness_missed",
        "Timed-out readiness waits that found datagrams waiting: lost wake-ups the 250 ms safety net caught (expected 0).",
        |s| s.rx_readiness_missed,
    ),
    (
        "plumtree_rx_oversized",
        "Datagrams larger than a receive buffer, dropped.",
        |s| s.rx_oversized,
    ),
    (
        "plumtree_send_calls",
        "sendmmsg system calls made.",
        |s| s.send_calls,
    ),
    (
        "plumtree_gso_segments",
        "Datagrams sent as segments of a UDP GSO send.",
        |s| s.gso_segments,
    ),
    (
        "plumtree_overloaded_probes",
        "Backlog probes that found the shard overloaded (IHave and anti-entropy shed).",
        |s| s.overloaded,
    ),
    (
        "plumtree_chaos_dropped",
        "Datagrams the test-only fault layer dropped at random (--chaos).",
        |s| s.chaos_dropped,
    ),
    (
        "plumtree_chaos_duplicated",
        "Datagrams the test-only fault layer duplicated (--chaos).",
        |s| s.chaos_duplicated,
    ),
    (
        "plumtree_chaos_delayed",
        "Datagrams the test-only fault layer delayed (--chaos).",
        |s| s.chaos_delayed,
    ),
    (
        "plumtree_chaos_cut",
        "Datagrams dropped because the test-only fault layer cut their link (--chaos).",
        |s| s.chaos_cut,
    ),
    (
        "plumtree_chaos_overflow",
        "Delays and duplicates not applied: the fault layer's hold bound was reached.",
        |s| s.chaos_overflow,
    ),
];

const DECODE_REASONS: &[(&str, IoFn)] = &[
    ("too_short", |s| s.decode_errors_too_short),
    ("bad_magic", |s| s.decode_errors_bad_magic),
    ("unsupported_version", |s| {
        s.decode_errors_unsupported_version
    }),
    ("truncated", |s| s.decode_errors_truncated),
    ("bad_length", |s| s.decode_errors_bad_length),
    ("no_frames", |s| s.decode_errors_no_frames),
    ("digest_too_large", |s| s.decode_errors_digest_too_large),
    ("bad_topic", |s| s.decode_errors_bad_topic),
];

const AUTH_REASONS: &[(&str, IoFn)] = &[
    ("missing", |s| s.auth_failures_missing),
    ("bad_mac", |s| s.auth_failures_bad_mac),
    ("stale", |s| s.auth_failures_stale),
    ("replay", |s| s.auth_failures_replay),
];

fn shard_label(sh: &ShardSnapshot) -> Labels {
    vec![("shard", sh.shard.to_string())]
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn write_counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, u64)],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        if labels.is_empty() {
            m.encode_counter::<(), u64, u64>(v, None)?;
        } else {
            m.encode_family(labels)?
                .encode_counter::<(), u64, u64>(v, None)?;
        }
    }
    Ok(())
}

fn write_gauges(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, u64)],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        if labels.is_empty() {
            m.encode_gauge(&gauge_value(*v))?;
        } else {
            m.encode_family(labels)?.encode_gauge(&gauge_value(*v))?;
        }
    }
    Ok(())
}

/// Turns `hops[i]` (deliveries with `i` hops; the last entry collects the rest) into
/// per-bucket counts over [`HOP_BUCKETS`] and `+Inf` (`f64::MAX`, as the encoder
/// expects; it accumulates them), plus the sum and the count. The last entry's
/// exact hop counts are unknown, so it is counted in `+Inf` and at its lower bound in
/// the sum.
pub fn hop_histogram(hops: &[u64]) -> (f64, u64, Vec<(f64, u64)>) {
    let mut buckets: Vec<(f64, u64)> = HOP_BUCKETS
        .iter()
        .map(|&b| (b as f64, 0))
        .chain(std::iter::once((f64::MAX, 0)))
        .collect();
    let inf = buckets.len() - 1;
    let mut sum = 0f64;
    let mut count = 0u64;
    for (i, &n) in hops.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let last = i + 1 == hops.len();
        let idx = if last {
            inf
        } else {
            HOP_BUCKETS
                .iter()
                .position(|&b| i as u64 <= b)
                .unwrap_or(inf)
        };
        buckets[idx].1 = buckets[idx].1.saturating_add(n);
        count = count.saturating_add(n);
        sum += i as f64 * n as f64;
    }
    (sum, count, buckets)
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = &self.0;

        for &(name, help, f) in SHARD_COUNTERS {
            let series: Vec<_> = s
                .shards
                .iter()
                .map(|sh| (shard_label(sh), f(&sh.stats)))
                .collect();
            write_counters(&mut enc, name, help, &series)?;
        }
        for &(name, help, f) in SHARD_GAUGES {
            let series: Vec<_> = s
                .shards
                .iter()
                .map(|sh| (shard_label(sh), f(&sh.stats)))
                .collect();
            write_gauges(&mut enc, name, help, &series)?;
        }
        let queues: Vec<_> = s
            .shards
            .iter()
            .map(|sh| (shard_label(sh), sh.command_queue as u64))
            .collect();
        write_gauges(
            &mut enc,
            "plumtree_command_queue_size",
            "Commands waiting in the shard's cross-shard queue.",
            &queues,
        )?;

        for &(name, help, f) in IO_COUNTERS {
            let series: Vec<_> = s
                .shards
                .iter()
                .map(|sh| (shard_label(sh), f(&sh.io)))
                .chain(std::iter::once((
                    vec![("shard", "control".to_string())],
                    f(&s.control_io),
                )))
                .collect();
            write_counters(&mut enc, name, help, &series)?;
        }

        let limiter_peers: Vec<_> = s
            .shards
            .iter()
            .map(|sh| (shard_label(sh), sh.io.rate_limit_peers))
            .collect();
        write_gauges(
            &mut enc,
            "plumtree_rate_limit_peers",
            "Sources tracked by the shard's flood limiter (bounded by rate_limit_peers).",
            &limiter_peers,
        )?;
        let shed = |f: IoFn| {
            s.shards
                .iter()
                .map(|sh| f(&sh.io))
                .fold(0, u64::saturating_add)
        };
        write_counters(
            &mut enc,
            "plumtree_shed",
            "Work shed under overload, by kind (IHave frames received, anti-entropy rounds).",
            &[
                (vec![("kind", "ihave".to_string())], shed(|i| i.shed_ihave)),
                (
                    vec![("kind", "anti_entropy".to_string())],
                    shed(|i| i.shed_anti_entropy),
                ),
            ],
        )?;
        write_counters(
            &mut enc,
            "plumtree_auth_failures",
            "Datagrams dropped by cluster authentication before decoding, by reason.",
            &reason_totals(s, AUTH_REASONS),
        )?;
        {
            use crate::protocol::gap::GapReason;
            let series: Vec<_> = GapReason::ALL
                .iter()
                .map(|&r| {
                    let total = s
                        .shards
                        .iter()
                        .map(|sh| sh.stats.unrecoverable.get(r))
                        .fold(0, u64::saturating_add);
                    (vec![("reason", r.as_str().to_string())], total)
                })
                .collect();
            write_counters(
                &mut enc,
                "plumtree_unrecoverable",
                "Messages declared known gaps (never to be delivered here), by reason: expired (outlived every cache), window (max_seen_window passed them), evicted (max_seen_origins).",
                &series,
            )?;
        }
        {
            let sum = |f: fn(&crate::protocol::validate::ValidationCounts) -> u64| {
                s.shards
                    .iter()
                    .map(|sh| f(&sh.stats.validation))
                    .fold(0, u64::saturating_add)
            };
            let verdict = |v: &str, n: u64| (vec![("verdict", v.to_string())], n);
            write_counters(
                &mut enc,
                "plumtree_validation",
                "Messages received from peers by the validator's verdict (none without a validator); rejected and ignored ones are neither delivered nor relayed.",
                &[
                    verdict("accept", sum(|v| v.accepted)),
                    verdict("reject", sum(|v| v.rejected)),
                    verdict("ignore", sum(|v| v.ignored)),
                ],
            )?;
            write_counters(
                &mut enc,
                "plumtree_validation_panics",
                "Validator calls that panicked (their messages counted as ignored).",
                &[(Vec::new(), sum(|v| v.panics))],
            )?;
        }
        write_counters(
            &mut enc,
            "plumtree_decode_errors",
            "Datagrams dropped because they failed to decode, by reason.",
            &reason_totals(s, DECODE_REASONS),
        )?;

        {
            let merged =
                crate::node::topic_counts::merge(s.shards.iter().map(|sh| sh.topics.as_slice()));
            let series: Vec<(Labels, u64)> = merged
                .into_iter()
                .map(|(t, n)| (vec![("topic", t)], n))
                .collect();
            write_counters(
                &mut enc,
                "plumtree_topic_deliveries",
                "Deliveries by topic; the first 64 topics per shard (64 in all, the busiest) by name, the rest as topic=\"_other\".",
                &series,
            )?;
        }
        {
            let mut m = enc.encode_descriptor(
                "plumtree_delivery_hops",
                "Hops travelled by delivered messages.",
                None,
                MetricType::Histogram,
            )?;
            for sh in &s.shards {
                let (sum, count, buckets) = hop_histogram(&sh.hops);
                let labels = shard_label(sh);
                m.encode_family(&labels)?
                    .encode_histogram::<()>(sum, count, &buckets, None)?;
            }
        }

        {
            let mut m = enc.encode_descriptor(
                "plumtree_ihave_batch_size",
                "Message ids per IHave frame sent (batch size distribution; the sum counts each batch at its bucket's bound).",
                None,
                MetricType::Histogram,
            )?;
            for sh in &s.shards {
                let (sum, count, buckets) = batch_histogram(&sh.stats.ihave_batch_sizes);
                let labels = shard_label(sh);
                m.encode_family(&labels)?
                    .encode_histogram::<()>(sum, count, &buckets, None)?;
            }
        }
        let (eager_peers, lazy_peers) = distinct_peers(s);
        write_gauges(
            &mut enc,
            "plumtree_eager_peers",
            "Distinct neighbours that are eager in at least one partition.",
            &[(Vec::new(), eager_peers)],
        )?;
        write_gauges(
            &mut enc,
            "plumtree_lazy_peers",
            "Distinct neighbours that are lazy in at least one partition.",
            &[(Vec::new(), lazy_peers)],
        )?;

        // One series per task the node names: every loop and every supervised child
        // (0 until it panics or restarts), so the label set is bounded by the node.
        let mut names: Vec<(String, u64, u64)> = s
            .task_names
            .iter()
            .map(|c| (c.task.clone(), c.panics, c.restarts))
            .collect();
        for l in &s.loops {
            if !names.iter().any(|(n, _, _)| *n == l.name) {
                names.push((l.name.clone(), 0, 0));
            }
        }
        names.sort();
        let panics: Vec<_> = names
            .iter()
            .map(|(n, p, _)| (vec![("task", n.clone())], *p))
            .collect();
        write_counters(
            &mut enc,
            "plumtree_task_panics",
            "Panics caught, by task (loop or supervised child).",
            &panics,
        )?;
        let restarts: Vec<_> = names
            .iter()
            .map(|(n, _, r)| (vec![("task", n.clone())], *r))
            .collect();
        write_counters(
            &mut enc,
            "plumtree_task_restarts",
            "Restarts made by a supervisor, by task (supervised child).",
            &restarts,
        )?;

        let runs: Vec<_> = s
            .loops
            .iter()
            .map(|l| (vec![("loop", l.name.clone())], l.run_count))
            .collect();
        write_counters(
            &mut enc,
            "plumtree_loop_runs",
            "Runs of each background loop.",
            &runs,
        )?;
        let errors: Vec<_> = s
            .loops
            .iter()
            .map(|l| (vec![("loop", l.name.clone())], l.error_count))
            .collect();
        write_counters(
            &mut enc,
            "plumtree_loop_errors",
            "Failed runs of each background loop.",
            &errors,
        )?;

        let none: Labels = Vec::new();
        let m = &s.membership;
        for (name, help, v) in [
            (
                "plumtree_membership_active_view_size",
                "HyParView active view size (Plumtree neighbours).",
                m.active.len(),
            ),
            (
                "plumtree_membership_passive_view_size",
                "HyParView passive view size (backups).",
                m.passive.len(),
            ),
            (
                "plumtree_membership_address_book_size",
                "Nodes the address book can reach (bounded).",
                m.address_book_size,
            ),
            (
                "plumtree_membership_timers_pending",
                "Membership timers waiting to fire.",
                m.timers_pending,
            ),
            (
                "plumtree_membership_lost_size",
                "Nodes that stopped answering, probed until they answer (bounded).",
                m.lost.len(),
            ),
            (
                "plumtree_membership_joining",
                "1 while the node has no neighbour and is joining through its seeds.",
                usize::from(m.joining),
            ),
        ] {
            write_gauges(&mut enc, name, help, &[(none.clone(), v as u64)])?;
        }
        let (st, d) = (&m.stats, &m.driver);
        for (name, help, v) in [
            (
                "plumtree_membership_joins",
                "Join requests received (as a contact node).",
                st.joins,
            ),
            (
                "plumtree_membership_forward_joins",
                "ForwardJoin messages received.",
                st.forward_joins,
            ),
            (
                "plumtree_membership_shuffles",
                "Shuffles this node started.",
                st.shuffles_sent,
            ),
            (
                "plumtree_membership_shuffles_received",
                "Shuffle messages received (forwarded or answered).",
                st.shuffles_received,
            ),
            (
                "plumtree_membership_neighbor_failures",
                "Active neighbours dropped after an unanswered probe.",
                st.neighbor_failures,
            ),
            (
                "plumtree_membership_promotions",
                "Passive nodes promoted into the active view.",
                st.promotions,
            ),
            (
                "plumtree_membership_disconnects",
                "Disconnects received from active neighbours.",
                st.disconnects,
            ),
            (
                "plumtree_membership_rejoins",
                "Joins again through the seeds with room in the active view and nobody passive left.",
                st.rejoins,
            ),
            (
                "plumtree_membership_splices",
                "Splices carried out as the full node in the middle (a link traded so two short views each gain one).",
                st.splices,
            ),
            (
                "plumtree_membership_introductions",
                "Introductions sent: two short neighbours told about each other.",
                st.introductions,
            ),
            (
                "plumtree_membership_messages_sent",
                "Membership messages queued for sending.",
                st.messages_sent,
            ),
            (
                "plumtree_membership_unroutable",
                "Membership messages dropped: no address known for the node.",
                d.unroutable,
            ),
            (
                "plumtree_membership_bad_contacts",
                "Contacts or layouts without address, port or shard, dropped.",
                d.bad_contacts,
            ),
            (
                "plumtree_membership_address_book_evictions",
                "Address book entries evicted to stay within the bound.",
                d.address_book_evictions,
            ),
            (
                "plumtree_membership_timer_overflow",
                "Membership timers dropped because the timer queue was full.",
                d.timer_overflow,
            ),
            (
                "plumtree_membership_unusable_withheld",
                "Contacts not gossiped because their address could not work for the receiver (wildcard, or loopback to a non-loopback peer).",
                d.unusable_withheld,
            ),
            (
                "plumtree_membership_seed_resolve_failures",
                "Seed names that did not resolve, per attempt (retried at the next join attempt).",
                d.seed_resolve_failures,
            ),
            (
                "plumtree_membership_seed_joins",
                "Joins sent to seed addresses (retried with backoff until one answers).",
                d.seed_joins_sent,
            ),
            (
                "plumtree_membership_lost_probes",
                "Probes sent to lost nodes to notice a healed partition.",
                st.lost_probes_sent,
            ),
            (
                "plumtree_membership_lost_revived",
                "Lost nodes heard from again.",
                st.lost_revived,
            ),
            (
                "plumtree_membership_lost_rejoins",
                "Joins through a revived lost node that was not a neighbour (partition heal).",
                st.lost_rejoins,
            ),
            (
                "plumtree_membership_lost_evictions",
                "Lost nodes forgotten to keep the lost list within its bound.",
                st.lost_evictions,
            ),
        ] {
            write_counters(&mut enc, name, help, &[(none.clone(), v)])?;
        }
        write_counters(
            &mut enc,
            "plumtree_broadcasts_accepted",
            "Broadcasts accepted by the admin plane.",
            &[(none.clone(), s.broadcasts_accepted)],
        )?;
        write_counters(
            &mut enc,
            "plumtree_broadcasts_refused",
            "Broadcasts refused by the admin plane (too large, shutting down, queue full).",
            &[(none.clone(), s.broadcasts_refused)],
        )?;
        write_gauges(
            &mut enc,
            "plumtree_subscribers",
            "Library subscriptions alive.",
            &[(none.clone(), s.subscribers)],
        )?;
        write_counters(
            &mut enc,
            "plumtree_subscriber_lagged",
            "Events a library subscription, a client-port connection or the deliveries file's reader missed (each was told: a Lagged event; -ERR 'Slow Consumer' and a $PLUMCORE.lagged message; a lagged line).",
            &[(
                none.clone(),
                s.subscriber_lagged + s.client.lagged + s.delivery_log.lagged,
            )],
        )?;
        let l = &s.delivery_log;
        write_gauges(
            &mut enc,
            "plumtree_delivery_log_entries",
            "Deliveries the deliveries file's retention log holds (bounded by delivery_retention_ms and delivery_retention_bytes).",
            &[(none.clone(), l.entries)],
        )?;
        write_gauges(
            &mut enc,
            "plumtree_delivery_log_bytes",
            "Bytes the deliveries file's retention log holds.",
            &[(none.clone(), l.bytes)],
        )?;
        write_counters(
            &mut enc,
            "plumtree_delivery_log_dropped",
            "Deliveries the retention log dropped by age or size (read or not).",
            &[(none.clone(), l.dropped)],
        )?;
        let c = &s.client;
        write_gauges(
            &mut enc,
            "plumtree_client_connections",
            "Client-port (NATS protocol) connections open now (bounded by max_clients).",
            &[(none.clone(), c.connections)],
        )?;
        write_gauges(
            &mut enc,
            "plumtree_client_subscriptions",
            "Client-port subscriptions held (bounded by max_subscriptions per connection).",
            &[(none.clone(), c.subscriptions)],
        )?;
        write_counters(
            &mut enc,
            "plumtree_client_messages",
            "Client-port messages: published by clients (direction=in), written to subscribers (direction=out).",
            &[
                (vec![("direction", "in".to_string())], c.messages_in),
                (vec![("direction", "out".to_string())], c.messages_out),
            ],
        )?;
        write_counters(
            &mut enc,
            "plumtree_client_pub_retries",
            "Client-port PUBs that met a full shard queue and were retried (the connection is not read meanwhile).",
            &[(none.clone(), c.pub_retries)],
        )?;
        write_counters(
            &mut enc,
            "plumtree_client_slow_consumers",
            "Times a client-port connection was told it missed messages (-ERR 'Slow Consumer').",
            &[(none.clone(), c.slow_consumers)],
        )?;
        let client_errors: Vec<(Labels, u64)> = c
            .errors
            .iter()
            .map(|(r, n)| (vec![("reason", r.clone())], *n))
            .collect();
        write_counters(
            &mut enc,
            "plumtree_client_errors",
            "Client-port connections closed with -ERR, by reason.",
            &client_errors,
        )?;
        write_gauges(
            &mut enc,
            "plumtree_node_names",
            "Node names held in the name book (bounded).",
            &[(none.clone(), s.names_known as u64)],
        )?;
        write_counters(
            &mut enc,
            "plumtree_node_name_conflicts",
            "Duplicate node names: nodes refused here (side=refused) and refusals of this node's own name (side=received).",
            &[
                (vec![("side", "refused".to_string())], s.name_conflicts_sent),
                (vec![("side", "received".to_string())], s.name_conflicts_received),
            ],
        )?;
        write_counters(
            &mut enc,
            "plumtree_node_names_evictions",
            "Node names forgotten to keep the name book within its bound.",
            &[(none.clone(), s.names_evicted)],
        )?;
        let a = &s.admin;
        let reason = |r: &str, v: u64| (vec![("reason", r.to_string())], v);
        write_counters(
            &mut enc,
            "plumtree_admin_rejected",
            "Admin-plane requests and connections refused or cut, by the limit that applied.",
            &[
                reason("header_too_large", a.header_too_large),
                reason("header_timeout", a.header_timeout),
                reason("body_too_large", a.body_too_large),
                reason("body_timeout", a.body_timeout),
                reason("connections", a.connections),
                reason("evicted", a.evicted),
                reason("unauthorized", a.unauthorized),
                reason("bad_request", a.bad_request),
                reason("empty_payload", a.empty_payload),
            ],
        )?;
        write_gauges(
            &mut enc,
            "plumtree_admin_connections",
            "Admin-plane connections held now (bounded by max_connections).",
            &[(none.clone(), a.open_connections)],
        )?;
        write_gauges(
            &mut enc,
            "plumtree_degraded_tasks",
            "Tasks whose supervisor exceeded its restart intensity (0 = healthy).",
            &[(none.clone(), s.degraded.len() as u64)],
        )?;
        let t = &s.tasks;
        write_counters(
            &mut enc,
            "plumtree_tasks",
            "Supervised tasks by outcome, over the control core and every shard.",
            &[
                (vec![("state", "spawned".to_string())], t.spawned),
                (vec![("state", "completed".to_string())], t.completed),
                (vec![("state", "failed".to_string())], t.failed),
                (vec![("state", "cancelled".to_string())], t.cancelled),
                (vec![("state", "restarted".to_string())], t.restarted),
            ],
        )?;
        write_gauges(
            &mut enc,
            "plumtree_tasks_running",
            "Supervised tasks currently running.",
            &[(none.clone(), t.running)],
        )?;
        write_gauges(
            &mut enc,
            "plumtree_uptime_seconds",
            "Seconds since the node started.",
            &[(none, s.uptime_ms / 1000)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::node::snapshot::LoopInfo;

    fn shard(i: usize, delivered: u64, hops: Vec<u64>) -> ShardSnapshot {
        ShardSnapshot {
            shard: i,
            core: Some(i),
            addr: format!("127.0.0.1:{}", 7001 + i).parse().unwrap(),
            partitions: vec![i as u16],
            command_queue: 2,
            topics: vec![("orders".into(), 5), ("_other".into(), 1)],
            peer_links: Vec::new(),
            loops: Vec::new(),
            tasks: Default::default(),
            task_names: Vec::new(),
            stats: ShardStats {
                broadcasts: 3,
                delivered,
                eager_links: 4,
                lazy_links: 9,
                seen_origin_evictions: 5,
                seen_forced_slides: 1,
                unrecoverable: crate::protocol::gap::GapCounts {
                    expired: 7,
                    window: 2,
                    evicted: 0,
                },
                validation: crate::protocol::validate::ValidationCounts {
                    accepted: 10,
                    rejected: 3,
                    ignored: 2,
                    panics: 1,
                },
                // One batch of 1 id, one of 3, one of 100.
                ihave_batch_sizes: [1, 0, 1, 0, 0, 0, 0, 1],
                ..ShardStats::default()
            },
            io: IoStats {
                datagrams_received: 100,
                decode_errors_bad_magic: 2,
                deliveries_lagged: 1,
                ..IoStats::default()
            },
            hops,
        }
    }

    fn snapshot() -> NodeSnapshot {
        NodeSnapshot {
            node_id: "00000000000000ff".into(),
            node_name: None,
            advertise: None,
            names_known: 2,
            names_evicted: 1,
            name_conflicts_sent: 4,
            name_conflicts_received: 0,
            addr: "127.0.0.1:7000".parse().unwrap(),
            uptime_ms: 12_345,
            shutting_down: false,
            shards: vec![
                // 1 delivery at 0 hops, 2 at 1, 3 at 3, 4 at 5+, last bucket = rest.
                shard(0, 10, vec![1, 2, 0, 3, 0, 4]),
                shard(1, 20, vec![]),
            ],
            peers: vec![],
            loops: vec![LoopInfo {
                name: "heartbeat".into(),
                enabled: true,
                running: true,
                paused: false,
                interval_ms: 100,
                run_count: 42,
                error_count: 1,
                consecutive_errors: 0,
                panic_count: 1,
                average_duration_ms: 0.5,
                last_run_time: Some(100),
                last_error: None,
            }],
            control_io: IoStats {
                datagrams_received: 7,
                decode_errors_bad_magic: 1,
                decode_errors_no_frames: 3,
                auth_failures_replay: 4,
                ..IoStats::default()
            },
            broadcasts_accepted: 3,
            broadcasts_refused: 6,
            subscribers: 2,
            subscriber_lagged: 9,
            degraded: Vec::new(),
            tasks: Default::default(),
            task_names: vec![crate::tasks::TaskNameCounters {
                task: "control_receiver".into(),
                panics: 2,
                restarts: 2,
            }],
            membership: crate::node::snapshot::MembershipSnapshot {
                passive: vec![crate::node::snapshot::MemberInfo {
                    node_id: "0000000000000002".into(),
                    name: None,
                    addr: None,
                    shards: 0,
                    state: "passive".into(),
                    last_heard_ms_ago: None,
                }],
                address_book_size: 3,
                stats: crate::membership::MembershipStats {
                    joins: 4,
                    promotions: 2,
                    rejoins: 3,
                    splices: 5,
                    ..Default::default()
                },
                ..Default::default()
            },
            admin: crate::node::admin::AdminRejected {
                header_too_large: 3,
                ..Default::default()
            },
            delivery_log: crate::node::snapshot::DeliveryLogSnapshot {
                entries: 5,
                bytes: 500,
                dropped: 3,
                lagged: 2,
            },
            client: crate::node::snapshot::ClientPortSnapshot {
                connections: 2,
                messages_in: 9,
                errors: vec![("unknown_op".into(), 4)],
                ..Default::default()
            },
        }
    }

    /// Parses the exposition into `series -> value`, checking every line's shape.
    fn parse(text: &str) -> HashMap<String, f64> {
        let mut out = HashMap::new();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF");
        for line in &lines {
            if line.starts_with('#') {
                assert!(
                    line.starts_with("# HELP ") || line.starts_with("# TYPE ") || *line == "# EOF",
                    "bad comment: {line}"
                );
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("name value");
            let name_end = series.find('{').unwrap_or(series.len());
            let name = &series[..name_end];
            assert!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad name in {line}"
            );
            if name_end < series.len() {
                assert!(series.ends_with('}'), "bad labels in {line}");
                for pair in series[name_end + 1..series.len() - 1].split(',') {
                    let (k, v) = pair.split_once('=').expect("label k=v");
                    assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                    assert!(v.starts_with('"') && v.ends_with('"') && v.len() >= 2);
                }
            }
            let v: f64 = if value == "+Inf" {
                f64::INFINITY
            } else {
                value
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line}"))
            };
            assert!(out.insert(series.to_string(), v).is_none(), "dup {line}");
        }
        out
    }

    #[test]
    fn encodes_snapshot() {
        let text = encode_metrics(&snapshot());
        let m = parse(&text);
        let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("missing {k}\n{text}"));
        assert_eq!(get("plumtree_messages_delivered_total{shard=\"0\"}"), 10.0);
        assert_eq!(get("plumtree_messages_delivered_total{shard=\"1\"}"), 20.0);
        assert_eq!(get("plumtree_messages_broadcast_total{shard=\"1\"}"), 3.0);
        assert_eq!(get("plumtree_eager_links{shard=\"0\"}"), 4.0);
        assert_eq!(get("plumtree_lazy_links{shard=\"1\"}"), 9.0);
        assert_eq!(get("plumtree_eager_peers"), 0.0);
        assert_eq!(
            get("plumtree_admin_rejected_total{reason=\"header_too_large\"}"),
            3.0
        );
        assert_eq!(get("plumtree_admin_connections"), 0.0);
        assert_eq!(get("plumtree_node_names"), 2.0);
        assert_eq!(
            get("plumtree_node_name_conflicts_total{side=\"refused\"}"),
            4.0
        );
        assert_eq!(get("plumtree_node_names_evictions_total"), 1.0);
        assert_eq!(
            get("plumtree_task_panics_total{task=\"control_receiver\"}"),
            2.0
        );
        assert_eq!(
            get("plumtree_task_restarts_total{task=\"control_receiver\"}"),
            2.0
        );
        assert_eq!(get("plumtree_task_panics_total{task=\"heartbeat\"}"), 0.0);
        assert_eq!(get("plumtree_peer_promotions_total{shard=\"0\"}"), 0.0);
        assert_eq!(get("plumtree_ihave_batch_size_count{shard=\"0\"}"), 3.0);
        assert_eq!(
            get("plumtree_ihave_batch_size_bucket{le=\"4.0\",shard=\"0\"}"),
            2.0
        );
        assert_eq!(get("plumtree_seen_map_evictions_total{shard=\"0\"}"), 6.0);
        assert_eq!(
            get("plumtree_decode_errors_total{reason=\"bad_magic\"}"),
            5.0
        );
        assert_eq!(
            get("plumtree_decode_errors_total{reason=\"no_frames\"}"),
            3.0
        );
        assert_eq!(
            get("plumtree_decode_errors_total{reason=\"too_short\"}"),
            0.0
        );
        assert_eq!(get("plumtree_auth_failures_total{reason=\"replay\"}"), 4.0);
        assert_eq!(get("plumtree_auth_failures_total{reason=\"bad_mac\"}"), 0.0);
        assert_eq!(
            get("plumtree_datagrams_received_total{shard=\"control\"}"),
            7.0
        );
        assert_eq!(get("plumtree_deliveries_lagged_total{shard=\"1\"}"), 1.0);
        assert_eq!(get("plumtree_loop_runs_total{loop=\"heartbeat\"}"), 42.0);
        assert_eq!(get("plumtree_loop_errors_total{loop=\"heartbeat\"}"), 1.0);
        assert_eq!(get("plumtree_broadcasts_refused_total"), 6.0);
        assert_eq!(get("plumtree_subscribers"), 2.0);
        // Library subscriptions (9) and the deliveries file's reader (2).
        assert_eq!(get("plumtree_subscriber_lagged_total"), 11.0);
        assert_eq!(get("plumtree_delivery_log_entries"), 5.0);
        assert_eq!(get("plumtree_delivery_log_dropped_total"), 3.0);
        assert_eq!(get("plumtree_client_connections"), 2.0);
        assert_eq!(
            get("plumtree_topic_deliveries_total{topic=\"orders\"}"),
            10.0
        );
        assert_eq!(
            get("plumtree_topic_deliveries_total{topic=\"_other\"}"),
            2.0
        );
        // Both shards of the snapshot carry these counts: summed.
        assert_eq!(get("plumtree_validation_total{verdict=\"reject\"}"), 6.0);
        assert_eq!(get("plumtree_validation_total{verdict=\"ignore\"}"), 4.0);
        assert_eq!(get("plumtree_validation_panics_total"), 2.0);
        assert_eq!(get("plumtree_client_messages_total{direction=\"in\"}"), 9.0);
        assert_eq!(
            get("plumtree_client_errors_total{reason=\"unknown_op\"}"),
            4.0
        );
        assert_eq!(
            get("plumtree_unrecoverable_total{reason=\"expired\"}"),
            14.0
        );
        assert_eq!(get("plumtree_unrecoverable_total{reason=\"window\"}"), 4.0);
        assert_eq!(get("plumtree_unrecoverable_total{reason=\"evicted\"}"), 0.0);
        assert_eq!(get("plumtree_uptime_seconds"), 12.0);
        assert_eq!(get("plumtree_membership_active_view_size"), 0.0);
        assert_eq!(get("plumtree_membership_passive_view_size"), 1.0);
        assert_eq!(get("plumtree_membership_address_book_size"), 3.0);
        assert_eq!(get("plumtree_membership_joins_total"), 4.0);
        assert_eq!(get("plumtree_membership_promotions_total"), 2.0);
        assert_eq!(get("plumtree_membership_rejoins_total"), 3.0);
        assert_eq!(get("plumtree_membership_splices_total"), 5.0);
        assert_eq!(get("plumtree_membership_shuffles_total"), 0.0);
        assert_eq!(get("plumtree_membership_neighbor_failures_total"), 0.0);
        for name in [
            "plumtree_gossip_sent_total",
            "plumtree_ihave_sent_total",
            "plumtree_graft_sent_total",
            "plumtree_graft_success_total",
            "plumtree_graft_failed_total",
            "plumtree_graft_retries_total",
            "plumtree_prune_sent_total",
            "plumtree_seen_map_size",
            "plumtree_seen_map_bytes",
            "plumtree_ihave_queue_size",
            "plumtree_ihave_dropped_total",
            "plumtree_pending_grafts",
            "plumtree_cache_entries",
            "plumtree_cache_bytes",
            "plumtree_cache_evictions_total",
            "plumtree_datagrams_sent_total",
            "plumtree_anti_entropy_rounds_total",
            "plumtree_anti_entropy_pulls_total",
            "plumtree_anti_entropy_shed_total",
            "plumtree_neighbors",
            "plumtree_roots_tracked",
            "plumtree_roots_bytes",
            "plumtree_root_evictions_total",
            "plumtree_unknown_roots_total",
        ] {
            get(&format!("{name}{{shard=\"0\"}}"));
        }
        assert!(text.contains("# TYPE plumtree_delivery_hops histogram\n"));
        assert!(text.contains("# TYPE plumtree_messages_delivered counter\n"));
        assert!(text.contains("# TYPE plumtree_eager_peers gauge\n"));

        // Histogram: cumulative buckets over hop counts 0,1,1,3,3,3 and 4 of "5+".
        let b = |le: &str| {
            get(&format!(
                "plumtree_delivery_hops_bucket{{le=\"{le}\",shard=\"0\"}}"
            ))
        };
        assert_eq!(b("1.0"), 3.0);
        assert_eq!(b("2.0"), 3.0);
        assert_eq!(b("4.0"), 6.0);
        assert_eq!(b("64.0"), 6.0);
        assert_eq!(b("+Inf"), 10.0);
        assert_eq!(get("plumtree_delivery_hops_count{shard=\"0\"}"), 10.0);
        assert_eq!(
            get("plumtree_delivery_hops_sum{shard=\"0\"}"),
            (2 + 9 + 20) as f64
        );
        assert_eq!(get("plumtree_delivery_hops_count{shard=\"1\"}"), 0.0);
        let mut prev = 0.0;
        for le in ["1.0", "2.0", "4.0", "8.0", "16.0", "32.0", "64.0", "+Inf"] {
            let v = b(le);
            assert!(v >= prev, "buckets are cumulative");
            prev = v;
        }
    }

    #[test]
    fn empty_snapshot_is_valid() {
        let mut s = snapshot();
        s.shards.clear();
        s.loops.clear();
        let m = parse(&encode_metrics(&s));
        assert_eq!(m["plumtree_decode_errors_total{reason=\"bad_magic\"}"], 1.0);
    }

    #[test]
    fn hop_buckets() {
        let (sum, count, buckets) = hop_histogram(&[0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 5]);
        assert_eq!(count, 14);
        assert_eq!(sum, (1..=9).sum::<u64>() as f64 + 50.0);
        let counts: Vec<u64> = buckets.iter().map(|b| b.1).collect();
        assert_eq!(counts, vec![1, 1, 2, 4, 1, 0, 0, 5]);
        assert_eq!(hop_histogram(&[]).1, 0);
    }
}
