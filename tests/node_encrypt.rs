//! Encrypted clusters on real processes (`--cluster-encrypt`): three nodes deliver
//! every broadcast exactly once; an intruder with another key, and a node that only
//! MACs, never get in; a datagram captured off the wire (a test socket bound to a
//! killed node's shard port, which its neighbours keep sending to until they notice)
//! does not contain the payload, and opens with the cluster key to a Gossip frame
//! that does. Asking for encryption without a key file exits 2 naming the key.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::{broadcast, metric_sum, start_node, wait_until, Node};
use plumcore::wire::auth::{ClusterKeys, Verifier, FLAG_SEALED};
use plumcore::wire::{decode, Frame};

const KEY: &str = "5f1c0ffee0ddba11deadbeef0123456789abcdef0123456789abcdef01234567";
const OTHER_KEY: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";

fn start(
    id: u64,
    seed: Option<SocketAddr>,
    key_file: &Path,
    encrypt: bool,
    dir: &Path,
    taken: &mut Vec<u16>,
) -> Node {
    let mut extra = vec!["--cluster-key-file", key_file.to_str().unwrap()];
    if encrypt {
        extra.push("--cluster-encrypt");
    }
    start_node(id, 1, seed, dir, &extra, taken)
}

fn peers(admin: SocketAddr) -> usize {
    common::cluster::get_json(admin, "/peers")
        .and_then(|v| v.as_array().map(|a| a.len()))
        .unwrap_or(0)
}

#[test]
fn encryption_without_a_key_file_exits_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_plumcore"))
        .args(["node", "--cluster-encrypt", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().find(|l| l.starts_with("plumcore:")).unwrap();
    assert!(
        line.contains("`cluster_encrypt`") && line.contains("cluster_key_file"),
        "{line}"
    );
}

#[test]
fn encrypted_cluster_delivers_once_keeps_intruders_out_and_hides_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cluster.keys");
    std::fs::write(&key, format!("{KEY}\n")).unwrap();
    let other = dir.path().join("other.keys");
    std::fs::write(&other, format!("{OTHER_KEY}\n")).unwrap();
    let mut taken = Vec::new();
    let a = start(1, None, &key, true, dir.path(), &mut taken);
    let b = start(2, Some(a.bind), &key, true, dir.path(), &mut taken);
    let mut c = start(3, Some(a.bind), &key, true, dir.path(), &mut taken);
    wait_until("the three to link", Duration::from_secs(30), || {
        [&a, &b, &c].iter().all(|n| peers(n.admin) == 2)
    });
    // Intruders: another key (encrypting), and the right key without encryption.
    let intruder = start(4, Some(a.bind), &other, true, dir.path(), &mut taken);
    let mac_only = start(5, Some(a.bind), &key, false, dir.path(), &mut taken);

    let mut ids = Vec::new();
    for i in 0..30 {
        let from = [&a, &b, &c][i % 3];
        ids.push(broadcast(
            from.admin,
            format!("secret message {i}").as_bytes(),
        ));
    }
    for n in [&a, &b, &c] {
        wait_until("every broadcast delivered", Duration::from_secs(30), || {
            let d = common::cluster::delivery_counts(&n.deliveries);
            ids.iter().all(|id| d.contains_key(id))
        });
    }
    std::thread::sleep(Duration::from_millis(500));
    for n in [&a, &b, &c] {
        let d = common::cluster::delivery_counts(&n.deliveries);
        for id in &ids {
            assert_eq!(d[id], 1, "{id} delivered exactly once");
        }
        assert_eq!(d.len(), ids.len(), "nothing else delivered");
    }
    assert_eq!(peers(intruder.admin), 0, "wrong key never joins");
    assert_eq!(
        peers(mac_only.admin),
        0,
        "MAC-only never joins an encrypted cluster"
    );
    assert!(common::cluster::delivery_counts(&intruder.deliveries).is_empty());
    assert!(common::cluster::delivery_counts(&mac_only.deliveries).is_empty());
    wait_until(
        "a to count both intruders' joins",
        Duration::from_secs(10),
        || metric_sum(a.admin, "plumtree_auth_failures_total", None) >= 2.0,
    );

    // Capture: kill c and take over its shard port; a and b keep sending to it until
    // their failure timeout.
    let shard_port = c.bind.port() + 1;
    c.kill();
    // The dead process's socket may take a moment to be released.
    let t = Instant::now();
    let cap = loop {
        match UdpSocket::bind(("127.0.0.1", shard_port)) {
            Ok(s) => break s,
            Err(e) if t.elapsed() < Duration::from_secs(5) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("take over c's shard port {shard_port}: {e}"),
        }
    };
    cap.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let payload = b"TOP-SECRET-PAYLOAD-0123456789";
    for _ in 0..10 {
        broadcast(a.admin, payload);
    }
    let keys = ClusterKeys::parse(KEY).unwrap().encrypted(true);
    let mut verifier = Verifier::new(keys);
    let (mut captured, mut with_payload) = (0, 0);
    let mut buf = vec![0u8; 65536];
    let end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < end && with_payload == 0 {
        let Ok((n, _)) = cap.recv_from(&mut buf) else {
            continue;
        };
        captured += 1;
        let d = &mut buf[..n];
        assert!(
            !d.windows(payload.len()).any(|w| w == payload),
            "payload bytes on the wire"
        );
        assert!(
            !d.windows(6).any(|w| w == b"secret"),
            "old payloads on the wire"
        );
        assert_ne!(d[3] & FLAG_SEALED, 0, "sealed flag set");
        // With the key, it opens to frames that carry the payload.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let Ok(len) = verifier.open(d, now) else {
            continue;
        };
        let dg = decode(&Bytes::copy_from_slice(&d[..len])).unwrap();
        with_payload += dg
            .frames
            .iter()
            .filter(|f| matches!(f, Frame::Gossip { payload: p, .. } if p.as_ref() == payload))
            .count();
    }
    println!("captured {captured} datagrams, {with_payload} Gossip frames with the payload");
    assert!(captured > 0, "nothing captured");
    assert!(
        with_payload > 0,
        "no captured datagram opened to the payload"
    );
}
