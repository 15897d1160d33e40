//! Chaos on real `plumcore node` processes on 127.0.0.1, through the nodes' own
//! test-only fault layer (`--chaos`): datagram loss (with some duplication and
//! delay), a partition and its heal, and SIGKILL of a quarter of the nodes followed
//! by their restart on the same address with a new incarnation. In every case every
//! live node must deliver every message broadcast by a live origin exactly once
//! (checked in the NDJSON deliveries files). Each test prints its figures (`--nocapture`)
//! for the README's Reliability section.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{
    admin_request, broadcast, get_json, metric_sum, read_deliveries, spawn_node, Node, NodeSpec,
};
use serde_json::json;

/// Anti-entropy every 250 ms (announcing deliveries older than 250 ms), so that
/// recovery after a heal takes seconds, not tens of seconds.
const FAST_ANTI_ENTROPY: &str = "\
chaos = true
[protocol]
anti_entropy_interval = 250
anti_entropy_delay = 250
";

/// Upper bound on every wait for convergence.
const CONVERGE: Duration = Duration::from_secs(60);

fn write_config(dir: &Path) -> String {
    let path = dir.join("chaos.toml");
    std::fs::write(&path, FAST_ANTI_ENTROPY).unwrap();
    path.to_str().unwrap().to_string()
}

/// `n` single-shard nodes; node `i` seeds from every node started before it, so the
/// membership is a full mesh. Waits until every node sees the `n - 1` others.
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
    wait_for_mesh(&nodes, CONVERGE);
    nodes
}

fn peers(n: &Node) -> usize {
    get_json(n.admin, "/peers")
        .and_then(|v| v.as_array().map(|a| a.len()))
        .unwrap_or(0)
}

/// Waits until every node has `want` peers; on timeout names each node's count.
fn wait_for_peers(nodes: &[Node], want: usize, what: &str, limit: Duration) {
    let t = Instant::now();
    loop {
        let counts: Vec<usize> = nodes.iter().map(peers).collect();
        if counts.iter().all(|&c| c == want) {
            return;
        }
        assert!(
            t.elapsed() < limit,
            "timed out waiting for {what}: peers per node {counts:?}, want {want} each"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for_mesh(nodes: &[Node], limit: Duration) {
    wait_for_peers(nodes, nodes.len() - 1, "a full mesh", limit);
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
        assert!(
            t.elapsed() < CONVERGE,
            "{what}: {m} deliveries still missing after {CONVERGE:?}"
        );
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
    let all: Vec<&Node> = nodes.iter().collect();
    let sent = broadcast_round_robin(&all, 300, "loss");
    let out = check_exactly_once(&all, &sent, "5% loss");
    let dropped = total(&all, "plumtree_chaos_dropped_total");
    let duplicated = total(&all, "plumtree_chaos_duplicated_total");
    let delayed = total(&all, "plumtree_chaos_delayed_total");
    let grafts = total(&all, "plumtree_graft_sent_total");
    let datagrams = total(&all, "plumtree_datagrams_sent_total");
    eprintln!(
        "chaos loss: nodes=5 messages={} deliveries={} expected={} duplicates={} converged_ms={} \
         datagrams_sent={datagrams} dropped={dropped} duplicated={duplicated} delayed={delayed} grafts={grafts}",
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
    // ...and, once the failure timeout (3 s) has passed, sees the other side as failed.
    wait_for_peers(&nodes, 2, "each side to drop the other", CONVERGE);
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
    let deletes_took = healed.elapsed();
    let mut sent = sent_left;
    sent.extend(sent_right);
    let all: Vec<&Node> = nodes.iter().collect();
    let out = check_exactly_once(&all, &sent, "after the heal");
    // From the first DELETE to the moment every node had every message.
    let heal_ms = (deletes_took + out.converged).as_millis();
    wait_for_mesh(&nodes, CONVERGE);
    eprintln!(
        "chaos partition: nodes=6 (3|3) messages={} deliveries={} expected={} duplicates={} \
         heal_to_all_delivered_ms={heal_ms} datagrams_cut={cut_datagrams} anti_entropy_rounds={}",
        sent.len(),
        out.delivered,
        sent.len() * nodes.len(),
        out.duplicates,
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
    wait_for_mesh(&nodes, CONVERGE);
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
        "chaos crash: nodes=8 killed=2 rejoin_ms={rejoin_ms} messages_after={} deliveries={} \
         expected={} duplicates={} converged_ms={} during_messages={}",
        after.len(),
        out.delivered,
        after.len() * nodes.len(),
        out.duplicates,
        out.converged.as_millis(),
        during.len(),
    );
    assert_eq!(out.delivered, after.len() * nodes.len());
}
