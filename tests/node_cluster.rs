//! Real `plumcore node` processes on 127.0.0.1: five nodes (one with two shards) join
//! through one seed, 500 broadcasts go in through `POST /broadcast` on random nodes,
//! and every node's deliveries file must hold each message exactly once with the
//! right payload. Then 10,000 random and mutated datagrams hit every UDP port; the
//! nodes must count them as decode errors and keep delivering.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::cluster::{
    broadcast, get_json, read_deliveries, start_node as spawn, wait_until, Node,
};

fn start_node(
    id: u64,
    shards: u16,
    seed: Option<SocketAddr>,
    dir: &std::path::Path,
    taken: &mut Vec<u16>,
) -> Node {
    spawn(id, shards, seed, dir, &[], taken)
}

/// Broadcasts `count` messages on random nodes; returns id -> payload.
fn broadcast_many(
    nodes: &[Node],
    count: usize,
    tag: &str,
    rng: &mut u64,
) -> HashMap<String, Vec<u8>> {
    let mut sent = HashMap::new();
    for k in 0..count {
        *rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let n = (*rng >> 33) as usize % nodes.len();
        let payload = format!("{tag}-{k}-from-{n}").into_bytes();
        let id = broadcast(nodes[n].admin, &payload);
        assert!(sent.insert(id, payload).is_none(), "ids are unique");
    }
    sent
}

fn check_all_delivered_once(nodes: &[Node], sent: &HashMap<String, Vec<u8>>) {
    wait_until(
        "every node to deliver every message",
        Duration::from_secs(60),
        || {
            nodes.iter().all(|n| {
                let d = read_deliveries(&n.deliveries);
                sent.keys().all(|id| d.contains_key(id))
            })
        },
    );
    // Let late duplicates, if any, show up before counting.
    std::thread::sleep(Duration::from_millis(1500));
    for (i, n) in nodes.iter().enumerate() {
        let d = read_deliveries(&n.deliveries);
        for (id, payload) in sent {
            let (count, got) = &d[id];
            assert_eq!(*count, 1, "node {i} delivered {id} {count} times");
            assert_eq!(got, payload, "node {i} payload of {id}");
        }
    }
}

/// Random, truncated, bit-flipped and wrong-version datagrams.
fn garbage(k: u64, valid: &[u8]) -> Vec<u8> {
    let mut x = k.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    match k % 4 {
        0 => (0..next() % 1500).map(|_| next() as u8).collect(),
        1 => valid[..(next() as usize % valid.len())].to_vec(),
        2 => {
            let mut v = valid.to_vec();
            let i = next() as usize % v.len();
            v[i] ^= 1 << (next() % 8);
            v
        }
        _ => {
            let mut v = valid.to_vec();
            v[2] = 99; // unsupported version
            v
        }
    }
}

#[test]
fn five_nodes_deliver_every_broadcast_exactly_once_and_survive_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let mut taken = Vec::new();
    let seed = start_node(1, 2, None, dir.path(), &mut taken);
    let seed_addr = seed.bind;
    let mut nodes = vec![seed];
    for id in 2..=5 {
        nodes.push(start_node(id, 1, Some(seed_addr), dir.path(), &mut taken));
    }
    wait_until(
        "the seed to see 4 neighbours",
        Duration::from_secs(30),
        || {
            get_json(nodes[0].admin, "/peers")
                .is_some_and(|v| v.as_array().is_some_and(|a| a.len() == 4))
        },
    );
    wait_until("every node to join", Duration::from_secs(30), || {
        nodes[1..].iter().all(|n| {
            get_json(n.admin, "/peers").is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))
        })
    });
    // The status contract: node id, peers with eager/lazy counts, loops with counters.
    wait_until(
        "status to show eager links and loop runs",
        Duration::from_secs(10),
        || {
            get_json(nodes[0].admin, "/status").is_some_and(|st| {
                st["node_id"].as_str() == Some("0000000000000001")
                    && st["peers"]["list"].as_array().is_some_and(|l| l.len() == 4)
                    && st["peers"]["eager"].as_u64().is_some_and(|e| e > 0)
                    && st["shards"].as_array().is_some_and(|s| s.len() == 2)
                    && st["loops"].as_array().is_some_and(|l| {
                        !l.is_empty() && l.iter().all(|x| x["run_count"].as_u64() > Some(0))
                    })
            })
        },
    );
    let mut rng = 42u64;
    let sent = broadcast_many(&nodes, 500, "first", &mut rng);
    check_all_delivered_once(&nodes, &sent);

    // A valid datagram to mutate: a Prune frame from a stranger.
    let mut valid = b"PC\x01\x00".to_vec();
    valid.extend_from_slice(&0xdead_u64.to_le_bytes());
    valid.extend_from_slice(&7u32.to_le_bytes());
    valid.extend_from_slice(&[0x04, 2, 0, 1, 0]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sent_garbage = 0u64;
    for n in &nodes {
        for p in 0..=n.shards {
            let to = SocketAddr::new(n.bind.ip(), n.bind.port() + p);
            for k in 0..10_000u64 {
                let _ = sock.send_to(&garbage(k, &valid), to);
                sent_garbage += 1;
            }
        }
    }
    assert!(sent_garbage >= 50_000);
    // Still serving and still delivering.
    let sent2 = broadcast_many(&nodes, 50, "after-garbage", &mut rng);
    check_all_delivered_once(&nodes, &sent2);
    for (i, n) in nodes.iter().enumerate() {
        let metrics = ureq::get(&format!("http://{}/metrics", n.admin))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        let errors: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("plumtree_decode_errors_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(errors > 1000.0, "node {i} counted {errors} decode errors");
    }
    // Graceful shutdown: SIGTERM, exit 0.
    for n in &mut nodes {
        n.child.signal_term().expect("SIGTERM");
    }
    for (i, n) in nodes.iter_mut().enumerate() {
        let t = Instant::now();
        loop {
            if let Some(status) = n.child.try_wait().unwrap() {
                assert!(status.success(), "node {i} exited with {status}");
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "node {i} did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
