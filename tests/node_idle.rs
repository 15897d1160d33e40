//! An idle node sleeps: with no traffic its shard wakes only for its own periodic
//! work (snapshots, seen-map cleanup, maintenance, anti-entropy), a handful of times
//! a second, not once per millisecond as a polling tick would. And one receive batch
//! holding garbage, truncated and oversized datagrams drops and counts each of them
//! and still handles the good one. Counts, not timings, are asserted: the machine may
//! be busy.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::cluster::{metric_sum, start_node, wait_until};
use plumcore::ids::{MessageId, NodeId};
use plumcore::wire::{encode_frame, encode_header, Frame, Header};

/// One sample of `/metrics`: `name{shard="<shard>"}`.
fn sample(admin: SocketAddr, name: &str, shard: &str) -> Option<f64> {
    let text = ureq::get(&format!("http://{admin}/metrics"))
        .timeout(Duration::from_secs(5))
        .call()
        .ok()?
        .into_string()
        .ok()?;
    let key = format!("{name}{{shard=\"{shard}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key)?.trim().parse::<f64>().ok())
}

#[test]
fn an_idle_shard_wakes_only_a_handful_of_times_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let mut taken = Vec::new();
    let node = start_node(1, 1, None, dir.path(), &[], &mut taken);
    let wakeups = |shard: &str| sample(node.admin, "plumtree_shard_wakeups_total", shard);
    wait_until(
        "the node to publish metrics",
        Duration::from_secs(20),
        || wakeups("0").is_some(),
    );
    // Let start-up settle, then count over a window. Snapshots reach /metrics every
    // 250 ms, so a window of several seconds bounds the error of the two reads.
    std::thread::sleep(Duration::from_secs(1));
    let (s0, c0, t0) = (
        wakeups("0").unwrap(),
        wakeups("control").unwrap(),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs(4));
    let (s1, c1) = (wakeups("0").unwrap(), wakeups("control").unwrap());
    let secs = t0.elapsed().as_secs_f64();
    let (shard_rate, control_rate) = ((s1 - s0) / secs, (c1 - c0) / secs);
    eprintln!("idle wake-ups per second: shard {shard_rate:.1}, control {control_rate:.1}");
    assert!(s1 > s0, "the shard still does its periodic work");
    // A handful: snapshot 4/s, cleanup 1/s, maintenance 0.5/s, anti-entropy 1/s.
    assert!(
        shard_rate <= 25.0,
        "shard woke {shard_rate:.1} times a second"
    );
    assert!(
        control_rate <= 25.0,
        "control core woke {control_rate:.1} times a second"
    );
}

#[test]
fn a_batch_of_bad_datagrams_is_dropped_and_counted_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut taken = Vec::new();
    let node = start_node(1, 1, None, dir.path(), &[], &mut taken);
    let m = |name: &str| sample(node.admin, name, "0");
    wait_until(
        "the node to publish metrics",
        Duration::from_secs(20),
        || m("plumtree_datagrams_received_total").is_some(),
    );
    let shard: SocketAddr = SocketAddr::new(node.bind.ip(), node.bind.port() + 1);
    let mut good = Vec::new();
    encode_header(
        &Header {
            sender: NodeId(0x5eed),
            incarnation: 1,
            flags: 0,
            version: plumcore::wire::VERSION,
        },
        &mut good,
    );
    encode_frame(
        &Frame::Gossip {
            id: MessageId {
                origin: NodeId(0x5eed),
                seq: 1,
            },
            round: 0,
            topic: plumcore::topic::Topic::default(),
            payload: bytes::Bytes::from_static(b"hello"),
        },
        &mut good,
    );
    let garbage = vec![0xffu8; 40];
    let truncated = good[..3].to_vec();
    let oversized = vec![0u8; 3000];
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Back to back, so they land in the socket together and go through one or a few
    // receive batches.
    for _ in 0..3 {
        for d in [&garbage, &truncated, &oversized, &good] {
            tx.send_to(d, shard).unwrap();
        }
    }
    wait_until(
        "the 12 datagrams to be counted",
        Duration::from_secs(10),
        || m("plumtree_datagrams_received_total") == Some(12.0),
    );
    wait_until("the per-reason counters", Duration::from_secs(10), || {
        m("plumtree_rx_oversized_total") == Some(3.0)
            && m("plumtree_unknown_senders_total") == Some(3.0)
    });
    let reason = |r: &str| {
        metric_sum(
            node.admin,
            &format!("plumtree_decode_errors_total{{reason=\"{r}\"}}"),
            None,
        )
    };
    assert_eq!(reason("bad_magic"), 3.0);
    assert_eq!(reason("too_short"), 3.0);
    assert_eq!(m("plumtree_rx_buffer_exhausted_total"), Some(0.0));
}
