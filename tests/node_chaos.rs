//! Chaos on real `plumcore node` processes on 127.0.0.1, through the nodes' own
//! test-only fault layer (`--chaos`): datagram loss (with some duplication and
//! delay), a partition and its heal, and SIGKILL of a quarter of the nodes followed
//! by their restart on the same address with a new incarnation. In every case every
//! live node must deliver every message broadcast by a live origin exactly once
//! (checked in the NDJSON deliveries files). Each test prints its figures (`--nocapture`)
//! for the Reliability section of bench/results/HISTORY.md.
//!
//! Membership is HyParView (active views of 5), so the tests wait for what it
//! guarantees once settled, never for a full mesh: every node has at least one live
//! neighbour, links are symmetric and the overlay is connected. Membership timers are
//! short (heartbeat 100 ms, failure timeout 600 ms, probe 300 ms, join retries 100 to
//! 800 ms) so failures are noticed, and a healed partition re-merged, in about a second.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{
    active_view, admin_request, broadcast, get_json, metric_sum, node_hex, overlay_problem,
    overlay_report, read_deliveries, spawn_node, Node, NodeSpec,
};
use serde_json::json;

/// Anti-entropy every 250 ms (announcing deliveries older than 250 ms), so that
/// recovery after a heal takes seconds, not tens of seconds; HyParView timers in
/// milliseconds, short for the same reason.
const CHAOS_CONFIG: &str = "\
chaos = true
[protocol]
anti_entropy_interval = 250
anti_entropy_delay = 250
[membership]
heartbeat_interval = 100
failure_timeout = 600
probe_timeout = 300
shuffle_interval = 500
join_retry = 100
join_retry_max = 800
lost_probe_max = 800
";

/// Upper bound on every wait for convergence.
const CONVERGE: Duration = Duration::from_secs(60);
/// Bound on the overlay re-merging after a partition heals: lost nodes are probed at
/// most `lost_probe_max` (800 ms) apart, then one Join links the sides; the rest is
/// margin for a loaded machine.
const REMERGE: Duration = Duration::from_secs(20);

fn write_config(dir: &Path) -> String {
    let path = dir.join("chaos.toml");
    std::fs::write(&path, CHAOS_CONFIG).unwrap();
    path.to_str().unwrap().to_string()
}

/// `n` single-shard nodes; node `i` (id `i + 1`) seeds from every node started before
/// it. Waits until their HyParView overlay has settled.
fn cluster(n: usize, dir: &Path, extra: &[&str], taken: &mut Vec<u16>) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..n {
        let seeds: Vec<SocketAddr> = nodes.iter().map(|x| x.bind).collect();
        let spec = NodeSpec {
            id: i as u64 + 1,
            shards: 1,
            seeds: &seeds,
            bind: None,
            deliveries: format!("node{i}.ndjson"),
            extra,
        };
        nodes.push(spawn_node(&spec, dir, taken));
    }
    wait_for_overlay(&indexed(&nodes), "the overlay to settle", CONVERGE);
    nodes
}

/// `(node id, node)` for every node of a cluster: node `i` has id `i + 1`.
fn indexed(nodes: &[Node]) -> Vec<(u64, &Node)> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (i as u64 + 1, n))
        .collect()
}

/// Active views by node id (16 hex digits); nodes not answering are left out.
fn views(nodes: &[(u64, &Node)]) -> HashMap<String, Vec<String>> {
    nodes
        .iter()
        .filter_map(|(id, n)| Some((node_hex(*id), active_view(n.admin)?)))
        .collect()
}

/// Active view sizes, in node order (for the figures).
fn view_sizes(nodes: &[(u64, &Node)]) -> Vec<usize> {
    let v = views(nodes);
    nodes
        .iter()
        .map(|(id, _)| v.get(&node_hex(*id)).map_or(0, Vec::len))
        .collect()
}

/// Waits until the active views of `nodes` form a settled overlay of exactly these
/// nodes (see [`overlay_problem`]: no neighbour outside them, so on one side of a
/// partition this also means the other side was dropped). Returns the time it took;
/// on timeout fails naming the problem and every view.
fn wait_for_overlay(nodes: &[(u64, &Node)], what: &str, limit: Duration) -> Duration {
    let alive: HashSet<String> = nodes.iter().map(|(id, _)| node_hex(*id)).collect();
    let t = Instant::now();
    loop {
        let v = views(nodes);
        let Some(problem) = overlay_problem(&v, &alive) else {
            return t.elapsed();
        };
        if t.elapsed() > limit {
            panic!(
                "timed out after {limit:?} waiting for {what}: {problem}\n{}",
                overlay_report(&v, nodes)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Broadcasts `count` messages, round-robin over `from`; returns id -> payload.
fn broadcast_round_robin(nodes: &[&Node], count: usize, tag: &str) -> HashMap<String, Vec<u8>> {
    let mut sent = HashMap::new();
    for k in 0..count {
        let payload = format!("{tag}-{k}").into_bytes();
        let id = broadcast(nodes[k % nodes.len()].admin, &payload);
        assert!(sent.insert(id, payload).is_none(), "ids are unique");
    }
    sent
}

/// Figures of one exactly-once check.
struct Outcome {
    /// Time until every node had every message.
    converged: Duration,
    /// Deliveries of the messages checked, over all nodes.
    delivered: usize,
    duplicates: usize,
}

/// Waits until every node delivered every message of `sent`, then (after 1.5 s for
/// late duplicates) asserts each was delivered exactly once with its payload.
fn check_exactly_once(nodes: &[&Node], sent: &HashMap<String, Vec<u8>>, what: &str) -> Outcome {
    let t = Instant::now();
    let missing = |nodes: &[&Node]| -> usize {
        nodes
            .iter()
            .map(|n| {
                let d = read_deliveries(&n.deliveries);
                sent.keys().filter(|id| !d.contains_key(*id)).count()
            })
            .sum()
    };
    loop {
        let m = missing(nodes);
        if m == 0 {
            break;
        }
        if t.elapsed() >= CONVERGE {
            // Which node lacks which messages, for whoever reads the failure.
            let per_node: Vec<(u16, Vec<&String>)> = nodes
                .iter()
                .map(|n| {
                    let d = read_deliveries(&n.deliveries);
                    let mut gone: Vec<&String> =
                        sent.keys().filter(|id| !d.contains_key(*id)).collect();
                    gone.sort();
                    (n.admin.port(), gone)
                })
                .collect();
            panic!("{what}: {m} deliveries still missing after {CONVERGE:?}: {per_node:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let converged = t.elapsed();
    std::thread::sleep(Duration::from_millis(1500));
    let (mut delivered, mut duplicates) = (0, 0);
    for (i, n) in nodes.iter().enumerate() {
        let d = read_deliveries(&n.deliveries);
        for (id, payload) in sent {
            let (count, got) = &d[id];
            delivered += count;
            duplicates += count - 1;
            assert_eq!(got, payload, "{what}: node {i} payload of {id}");
        }
    }
    assert_eq!(duplicates, 0, "{what}: duplicate deliveries");
    Outcome {
        converged,
        delivered,
        duplicates,
    }
}

fn total(nodes: &[&Node], metric: &str) -> f64 {
    nodes
        .iter()
        .map(|n| metric_sum(n.admin, metric, None))
        .sum()
}

#[test]
fn five_percent_loss_both_ways_every_message_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let mut taken = Vec::new();
    // Every datagram is dropped with p = 0.05 when sent and again when received
    // (about 9.75% end to end), 1% are duplicated and 5% delayed by 5 ms, on the
    // shard sockets and the control socket alike.
    let extra = [
        "--config",
        &config,
        "--chaos-drop",
        "0.05",
        "--chaos-dup",
        "0.01",
        "--chaos-delay",
        "0.05",
        "--chaos-delay-ms",
        "5",
        "--chaos-side",
        "both",
    ];
    let nodes = cluster(5, dir.path(), &extra, &mut taken);
    let views_before = view_sizes(&indexed(&nodes));
    let all: Vec<&Node> = nodes.iter().collect();
    let sent = broadcast_round_robin(&all, 300, "loss");
    let out = check_exactly_once(&all, &sent, "5% loss");
    let dropped = total(&all, "plumtree_chaos_dropped_total");
    let duplicated = total(&all, "plumtree_chaos_duplicated_total");
    let delayed = total(&all, "plumtree_chaos_delayed_total");
    let grafts = total(&all, "plumtree_graft_sent_total");
    let datagrams = total(&all, "plumtree_datagrams_sent_total");
    let failures = total(&all, "plumtree_membership_neighbor_failures_total");
    eprintln!(
        "chaos loss: nodes=5 view_sizes={views_before:?} messages={} deliveries={} expected={} \
         duplicates={} converged_ms={} datagrams_sent={datagrams} dropped={dropped} \
         duplicated={duplicated} delayed={delayed} grafts={grafts} neighbor_failures={failures}",
        sent.len(),
        out.delivered,
        sent.len() * nodes.len(),
        out.duplicates,
        out.converged.as_millis()
    );
    assert!(dropped > 0.0, "the fault layer dropped datagrams");
    assert!(duplicated > 0.0 && delayed > 0.0);
    assert_eq!(out.delivered, sent.len() * nodes.len());
}

#[test]
fn partition_then_heal_messages_from_both_sides_reach_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let mut taken = Vec::new();
    let nodes = cluster(6, dir.path(), &["--config", &config], &mut taken);
    let (left, right) = nodes.split_at(3);
    let cut = |side: &[Node], other: &[Node]| {
        let peers: Vec<String> = other.iter().map(Node::port_range).collect();
        for n in side {
            let (status, v) = admin_request(
                n.admin,
                "POST",
                "/chaos/partition",
                Some(&json!({ "peers": peers })),
                None,
            );
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["cuts"].as_array().unwrap().len(), other.len());
        }
    };
    cut(left, right);
    cut(right, left);
    let l: Vec<&Node> = left.iter().collect();
    let r: Vec<&Node> = right.iter().collect();
    // Each side keeps working on its own...
    let sent_left = broadcast_round_robin(&l, 30, "left");
    let sent_right = broadcast_round_robin(&r, 30, "right");
    check_exactly_once(&l, &sent_left, "left side during the partition");
    check_exactly_once(&r, &sent_right, "right side during the partition");
    // ...and, after the failure timeout (600 ms) and a probe (300 ms), drops the other
    // side from its views: each side is an overlay of its own.
    let ids = indexed(&nodes);
    let (left_ids, right_ids) = ids.split_at(3);
    wait_for_overlay(left_ids, "the left side to drop the right", CONVERGE);
    wait_for_overlay(right_ids, "the right side to drop the left", CONVERGE);
    for n in &l {
        let d = read_deliveries(&n.deliveries);
        assert!(sent_right.keys().all(|id| !d.contains_key(id)), "cut held");
    }
    let cut_datagrams = total(
        &nodes.iter().collect::<Vec<_>>(),
        "plumtree_chaos_cut_total",
    );
    assert!(cut_datagrams > 0.0);
    // Heal.
    let healed = Instant::now();
    for n in &nodes {
        let (status, v) = admin_request(n.admin, "DELETE", "/chaos/partition", None, None);
        assert_eq!(status, 200);
        assert!(v["cuts"].as_array().unwrap().is_empty());
    }
    // Both sides forgot each other; only the lost-node probes can bring them back
    // together: within REMERGE the six must form one overlay again.
    wait_for_overlay(&ids, "the overlay to re-merge after the heal", REMERGE);
    let remerge_ms = healed.elapsed().as_millis();
    let mut sent = sent_left;
    sent.extend(sent_right);
    let all: Vec<&Node> = nodes.iter().collect();
    let check_started = healed.elapsed();
    let out = check_exactly_once(&all, &sent, "after the heal");
    // From the first DELETE to the moment every node had every message.
    let heal_ms = (check_started + out.converged).as_millis();
    eprintln!(
        "chaos partition: nodes=6 (3|3) messages={} deliveries={} expected={} duplicates={} \
         heal_to_remerged_ms={remerge_ms} heal_to_all_delivered_ms={heal_ms} view_sizes={:?} \
         datagrams_cut={cut_datagrams} lost_rejoins={} lost_probes={} anti_entropy_rounds={}",
        sent.len(),
        out.delivered,
        sent.len() * nodes.len(),
        out.duplicates,
        view_sizes(&ids),
        total(&all, "plumtree_membership_lost_rejoins_total"),
        total(&all, "plumtree_membership_lost_probes_total"),
        total(&all, "plumtree_anti_entropy_rounds_total"),
    );
    assert_eq!(out.delivered, sent.len() * nodes.len());
}

#[test]
fn sigkill_a_quarter_and_restart_with_new_incarnation_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let mut taken = Vec::new();
    let extra = ["--config", config.as_str()];
    let mut nodes = cluster(8, dir.path(), &extra, &mut taken);
    let all: Vec<&Node> = nodes.iter().collect();
    let before = broadcast_round_robin(&all, 40, "before");
    check_exactly_once(&all, &before, "before the kill");
    // SIGKILL two of eight: no Leave, no flush.
    let victims = [2usize, 5];
    for &v in &victims {
        nodes[v].kill();
    }
    // Messages from live origins while they are down.
    let live: Vec<&Node> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| !victims.contains(i))
        .map(|(_, n)| n)
        .collect();
    let during = broadcast_round_robin(&live, 40, "during");
    check_exactly_once(&live, &during, "while two nodes are down");
    // Restart on the same address, same node id; the incarnation is the start time
    // (seconds), so wait past the second boundary.
    std::thread::sleep(Duration::from_millis(1100));
    let restarted_at = Instant::now();
    for &v in &victims {
        let seeds: Vec<SocketAddr> = nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != v)
            .map(|(_, n)| n.bind)
            .collect();
        let spec = NodeSpec {
            id: v as u64 + 1,
            shards: 1,
            seeds: &seeds,
            bind: Some(nodes[v].bind),
            deliveries: format!("node{v}-restarted.ndjson"),
            extra: &extra,
        };
        nodes[v] = spawn_node(&spec, dir.path(), &mut taken);
    }
    wait_for_overlay(
        &indexed(&nodes),
        "the overlay to settle with the restarted nodes",
        CONVERGE,
    );
    let rejoin_ms = restarted_at.elapsed().as_millis();
    for &v in &victims {
        let up = get_json(nodes[v].admin, "/status").unwrap()["uptime_ms"]
            .as_u64()
            .unwrap();
        assert!(
            u128::from(up) <= restarted_at.elapsed().as_millis(),
            "node {v} is the new process"
        );
    }
    // Every node, restarted ones included, broadcasts; all must deliver all once.
    let all: Vec<&Node> = nodes.iter().collect();
    let after = broadcast_round_robin(&all, 80, "after");
    let out = check_exactly_once(&all, &after, "after the restart");
    eprintln!(
        "chaos crash: nodes=8 killed=2 rejoin_ms={rejoin_ms} view_sizes={:?} messages_after={} \
         deliveries={} expected={} duplicates={} converged_ms={} during_messages={} lost_rejoins={}",
        view_sizes(&indexed(&nodes)),
        after.len(),
        out.delivered,
        after.len() * nodes.len(),
        out.duplicates,
        out.converged.as_millis(),
        during.len(),
        total(&all, "plumtree_membership_lost_rejoins_total"),
    );
    assert_eq!(out.delivered, after.len() * nodes.len());
}
