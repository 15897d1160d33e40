//! Cluster authentication end to end: two real `plumcore node` processes share a key
//! file, join and deliver broadcasts; then 100,000 bad datagrams (forged MAC,
//! truncated, replayed, wrong key, stale timestamp) hit the first node's control and
//! shard ports. None may be delivered, `/metrics` must count them by reason, and the
//! nodes must keep delivering.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::cluster::{broadcast, start_node, wait_until, Node};

use bytes::Bytes;
use plumcore::ids::{MessageId, NodeId};
use plumcore::wire::auth::{ClusterKeys, Sealer};
use plumcore::wire::{encode_frame, encode_header, Frame, Header};

const KEY: &str = "5f1c0ffee0ddba11deadbeef0123456789abcdef0123456789abcdef01234567";
const OTHER_KEY: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";

fn start(
    id: u64,
    seed: Option<SocketAddr>,
    key_file: &Path,
    dir: &Path,
    taken: &mut Vec<u16>,
) -> Node {
    start_node(
        id,
        1,
        seed,
        dir,
        &["--cluster-key-file", key_file.to_str().unwrap()],
        taken,
    )
}

fn peers(admin: SocketAddr) -> usize {
    ureq::get(&format!("http://{admin}/peers"))
        .timeout(Duration::from_secs(2))
        .call()
        .ok()
        .and_then(|r| r.into_json::<serde_json::Value>().ok())
        .and_then(|v| v.as_array().map(|a| a.len()))
        .unwrap_or(0)
}

fn metrics(admin: SocketAddr) -> HashMap<String, f64> {
    let text = ureq::get(&format!("http://{admin}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// An unsealed datagram from `sender` carrying one Gossip frame `(origin, seq)`.
fn gossip(sender: u64, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    encode_header(
        &Header {
            sender: NodeId(sender),
            incarnation: 1,
            flags: 0,
            version: plumcore::wire::VERSION,
        },
        &mut d,
    );
    encode_frame(
        &Frame::Gossip {
            id: MessageId {
                origin: NodeId(sender),
                seq,
            },
            round: 0,
            topic: plumcore::topic::Topic::default(),
            payload: Bytes::copy_from_slice(payload),
        },
        &mut d,
    );
    d
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn keyed_cluster_delivers_and_drops_every_bad_datagram() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("cluster.keys");
    std::fs::write(&key_file, format!("# test cluster key\n{KEY}\n")).unwrap();
    let keys = ClusterKeys::from_file(&key_file).unwrap();
    let other = ClusterKeys::parse(OTHER_KEY).unwrap();

    let mut taken = Vec::new();
    let a = start(1, None, &key_file, dir.path(), &mut taken);
    let b = start(2, Some(a.bind), &key_file, dir.path(), &mut taken);
    wait_until("both nodes to join", Duration::from_secs(20), || {
        peers(a.admin) == 1 && peers(b.admin) == 1
    });

    // Legitimate broadcasts from both sides.
    let mut legit: Vec<String> = Vec::new();
    for k in 0..10 {
        let n = if k % 2 == 0 { &a } else { &b };
        legit.push(broadcast(n.admin, format!("legit-{k}").as_bytes()));
    }
    wait_until("legit broadcasts on both", Duration::from_secs(20), || {
        [&a, &b].iter().all(|n| {
            let d = common::cluster::delivery_counts(&n.deliveries);
            legit.iter().all(|id| d.contains_key(id))
        })
    });

    // The flood, at node A's control and shard ports.
    let targets = [a.bind, SocketAddr::new(a.bind.ip(), a.bind.port() + 1)];
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let stranger = 0x77u64;
    let mut sealer = Sealer::new(keys.clone(), 9, 0);
    let mut wrong = Sealer::new(other, 9, 0);
    let mut sent = 0u64;
    let mut send = |d: &[u8], k: u64| {
        let _ = sock.send_to(d, targets[(k % 2) as usize]);
        sent += 1;
        if sent % 200 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    // Replayed: one valid sealed Gossip with a fresh id, sent once to each port
    // (accepted and possibly delivered once), then resent 25,000 times.
    let mut original = gossip(stranger, 1, b"replayed-original");
    sealer.seal(&mut original, now_ms());
    let original_id = format!("{:016x}{:016x}", stranger, 1);
    for t in targets {
        sock.send_to(&original, t).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    for k in 0..25_000u64 {
        send(&original, k);
    }
    // Forged: a real datagram with a random MAC (key id still right).
    for k in 0..20_000u64 {
        let mut d = gossip(stranger, 1_000 + k, b"forged");
        sealer.seal(&mut d, now_ms());
        let n = d.len();
        for byte in &mut d[n - 16..] {
            *byte = rng.next() as u8;
        }
        send(&d, k);
    }
    // Truncated: a valid sealed datagram cut short.
    for k in 0..20_000u64 {
        let mut d = gossip(stranger, 100_000 + k, b"truncated");
        sealer.seal(&mut d, now_ms());
        let cut = rng.next() as usize % d.len();
        send(&d[..cut], k);
    }
    // Wrong key.
    for k in 0..20_000u64 {
        let mut d = gossip(stranger, 200_000 + k, b"wrong-key");
        wrong.seal(&mut d, now_ms());
        send(&d, k);
    }
    // Stale: correctly sealed two minutes ago, or two minutes in the future.
    for k in 0..15_000u64 {
        let mut d = gossip(stranger, 300_000 + k, b"stale");
        let skew = 120_000;
        let ts = if k % 2 == 0 {
            now_ms() - skew
        } else {
            now_ms() + skew
        };
        sealer.seal(&mut d, ts);
        send(&d, k);
    }
    assert_eq!(sent, 100_000);

    // Counted by reason (kernel drops tolerated), after the stats loop publishes.
    let reasons = ["missing", "bad_mac", "stale", "replay"];
    let count = |m: &HashMap<String, f64>, r: &str| {
        m.get(&format!("plumtree_auth_failures_total{{reason=\"{r}\"}}"))
            .copied()
            .unwrap_or(0.0)
    };
    let mut last = HashMap::new();
    wait_until("failures to be counted", Duration::from_secs(10), || {
        last = metrics(a.admin);
        let total: f64 = reasons.iter().map(|r| count(&last, r)).sum();
        reasons.iter().all(|r| count(&last, r) > 0.0) && total >= 0.5 * sent as f64
    });
    // Then let the counters settle (the receive path drains the socket buffer).
    let mut settled = 0.0;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(400));
        last = metrics(a.admin);
        let total: f64 = reasons.iter().map(|r| count(&last, r)).sum();
        if total == settled {
            break;
        }
        settled = total;
    }
    assert!(settled <= sent as f64, "more failures counted than sent");
    assert!(count(&last, "replay") <= 25_000.0);
    let by_reason: Vec<_> = reasons.iter().map(|r| (*r, count(&last, r))).collect();
    eprintln!("sent {sent} bad datagrams; node A counted {by_reason:?}");

    // Still serving: a broadcast after the flood reaches both nodes.
    let after = broadcast(b.admin, b"after-the-flood");
    legit.push(after.clone());
    wait_until(
        "post-flood broadcast on both",
        Duration::from_secs(20),
        || {
            [&a, &b]
                .iter()
                .all(|n| common::cluster::delivery_counts(&n.deliveries).contains_key(&after))
        },
    );
    std::thread::sleep(Duration::from_millis(500));

    // Only the legitimate broadcasts, each once, plus at most the replayed original
    // once: nothing forged, truncated, wrong-key, stale or replayed got through.
    for (name, n) in [("A", &a), ("B", &b)] {
        let d = common::cluster::delivery_counts(&n.deliveries);
        for id in &legit {
            assert_eq!(d.get(id), Some(&1), "node {name}: {id}");
        }
        for (id, times) in &d {
            if *id == original_id {
                assert_eq!(*times, 1, "node {name}: replayed original delivered twice");
            } else {
                assert!(
                    legit.contains(id),
                    "node {name} delivered bad datagram {id}"
                );
            }
        }
        eprintln!("node {name}: {} deliveries", d.len());
    }
}

#[test]
fn bad_key_file_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("bad.keys");
    std::fs::write(&key_file, "# one key, too short\n0123abcd\n").unwrap();
    let admin = common::cluster::free_tcp();
    let out = Command::new(env!("CARGO_BIN_EXE_plumcore"))
        .arg("node")
        .args(["--bind", "127.0.0.1:0"])
        .args(["--admin", &admin.to_string()])
        .args(["--shards", "1"])
        .args(["--cluster-key-file", key_file.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cluster_key_file") && stderr.contains("line 2"),
        "{stderr}"
    );
}
