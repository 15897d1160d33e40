//! memberlist-plumtree (crates.io 0.1.6) under the workload of `plumcore-bench cluster`,
//! for `plumcore-bench compare`. N nodes run in this one process on a tokio runtime,
//! each with its own UDP socket on 127.0.0.1 and the library's own background tasks
//! (IHave scheduler, Graft timer, seen-map cleanup, maintenance); membership is static
//! (every node adds every other as a peer, in a seeded random order; the library picks
//! eager and lazy peers with its default config). K publishers call `broadcast` at R/s in total on the nodes in
//! turn, payloads stamped like plumcore-bench's (publisher id, send time in Unix ns).
//!
//! Output in `--out DIR`: `node<i>.ndjson` (one line per delivery: `payload_b64`, `t_ns`,
//! and `hops: 0` for the origin's own broadcast) and `result.json` (accepted
//! broadcasts, refusals, the measured window, payload messages sent in it, CPU, RSS).
//!
//! Datagram: `[sender id: u64 LE][encode_plumtree_message(msg)]`.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use memberlist_plumtree::{
    decode_plumtree_message, encode_plumtree_message, MessageId, Plumtree, PlumtreeConfig,
    PlumtreeDelegate, PlumtreeMessage,
};
use tokio::net::UdpSocket;

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

struct Args {
    nodes: usize,
    rate: u32,
    publishers: usize,
    warmup: Duration,
    duration: Duration,
    payload: usize,
    out: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        nodes: 5,
        rate: 500,
        publishers: 2,
        warmup: Duration::from_secs(2),
        duration: Duration::from_secs(8),
        payload: 64,
        out: PathBuf::from("."),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.chunks(2);
    for pair in &mut it {
        let [k, v] = pair else {
            return Err(format!("flag `{}` needs a value", pair[0]));
        };
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("`{k} {v}`: {e}"));
        match k.as_str() {
            "--nodes" => a.nodes = num(v)? as usize,
            "--rate" => a.rate = num(v)? as u32,
            "--publishers" => a.publishers = num(v)? as usize,
            "--warmup-ms" => a.warmup = Duration::from_millis(num(v)?),
            "--duration-ms" => a.duration = Duration::from_millis(num(v)?),
            "--payload" => a.payload = num(v)? as usize,
            "--out" => a.out = PathBuf::from(v),
            _ => return Err(format!("unknown flag `{k}`")),
        }
    }
    if a.nodes < 2 || a.rate == 0 || a.publishers == 0 || a.payload < 16 {
        return Err("need --nodes >= 2, --rate >= 1, --publishers >= 1, --payload >= 16".into());
    }
    Ok(a)
}

/// A delivery on its way to the writer thread: (node, payload, unix ns, hops); node
/// `usize::MAX` marks the end.
type Line = (usize, Bytes, u64, Option<u32>);

struct Delegate {
    node: usize,
    tx: std::sync::mpsc::Sender<Line>,
}

impl PlumtreeDelegate<u64> for Delegate {
    fn on_deliver(&self, _id: MessageId, payload: Bytes) {
        let _ = self.tx.send((self.node, payload, unix_nanos(), None));
    }
}

/// Messages sent, by kind, over all nodes.
#[derive(Default)]
struct Sent {
    gossip: AtomicU64,
    ihave: AtomicU64,
    graft: AtomicU64,
    prune: AtomicU64,
}

impl Sent {
    fn snapshot(&self) -> [u64; 4] {
        [
            self.gossip.load(Ordering::Relaxed),
            self.ihave.load(Ordering::Relaxed),
            self.graft.load(Ordering::Relaxed),
            self.prune.load(Ordering::Relaxed),
        ]
    }
    fn count(&self, m: &PlumtreeMessage) {
        let c = match m {
            PlumtreeMessage::Gossip { .. } => &self.gossip,
            PlumtreeMessage::IHave { .. } => &self.ihave,
            PlumtreeMessage::Graft { .. } => &self.graft,
            PlumtreeMessage::Prune => &self.prune,
            _ => return,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rfind(')').map_or("", |i| &stat[i + 2..]);
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    (t(11) + t(12)) as f64 / tick as f64
}

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    (pages * page) as f64 / (1024.0 * 1024.0)
}

type Node = Plumtree<u64, Delegate>;

/// The other nodes' ids in a seeded random order (xorshift Fisher-Yates).
fn peer_order(me: u64, n: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).filter(|&p| p != me).collect();
    let mut x = me.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

/// Publishes at `rate`/s over `k` tasks until `stop`; returns accepted stamps and refusals.
async fn publish(
    nodes: Arc<Vec<Node>>,
    rate: u32,
    k: usize,
    payload: usize,
    stop: Arc<AtomicBool>,
    tx: std::sync::mpsc::Sender<Line>,
) -> (Vec<(u64, u64)>, u64) {
    let gap = Duration::from_secs_f64(k as f64 / f64::from(rate));
    let tasks: Vec<_> = (0..k)
        .map(|j| {
            let (nodes, stop, tx) = (nodes.clone(), stop.clone(), tx.clone());
            tokio::spawn(async move {
                let start = tokio::time::Instant::now() + gap.mul_f64(j as f64 / k as f64);
                let mut body = vec![b'.'; payload];
                let (mut ok, mut refused, mut n) = (Vec::new(), 0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep_until(start + gap.mul_f64(n as f64)).await;
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let send_ns = unix_nanos();
                    body[..8].copy_from_slice(&(j as u64).to_le_bytes());
                    body[8..16].copy_from_slice(&send_ns.to_le_bytes());
                    let node = (n as usize + j) % nodes.len();
                    n += 1;
                    let b = Bytes::copy_from_slice(&body);
                    match nodes[node].broadcast(b.clone()).await {
                        Ok(_) => {
                            ok.push((j as u64, send_ns));
                            // The origin's own delivery, as plumcore records it.
                            let _ = tx.send((node, b, unix_nanos(), Some(0)));
                        }
                        Err(_) => refused += 1,
                    }
                }
                (ok, refused)
            })
        })
        .collect();
    let (mut all, mut refused) = (Vec::new(), 0);
    for t in tasks {
        if let Ok((ok, r)) = t.await {
            all.extend(ok);
            refused += r;
        }
    }
    (all, refused)
}

#[tokio::main]
async fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("compare-memberlist: invalid argument: {e}");
            std::process::exit(2);
        }
    };
    // Deliveries writer: one file per node.
    let (tx, rx) = std::sync::mpsc::channel::<Line>();
    let delivered_measured = Arc::new(AtomicU64::new(0));
    let warm_end = Arc::new(AtomicU64::new(u64::MAX));
    let writer = {
        let (out, n) = (a.out.clone(), a.nodes);
        let (counter, warm_end) = (delivered_measured.clone(), warm_end.clone());
        std::thread::spawn(move || {
            let mut files: Vec<_> = (0..n)
                .map(|i| {
                    std::io::BufWriter::new(
                        std::fs::File::create(out.join(format!("node{i}.ndjson")))
                            .expect("create deliveries file"),
                    )
                })
                .collect();
            let b64 = base64::engine::general_purpose::STANDARD;
            for (node, payload, t_ns, hops) in rx {
                if node == usize::MAX {
                    break; // the end marker: flush and stop
                }
                let send_ns = payload
                    .get(8..16)
                    .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
                if send_ns >= warm_end.load(Ordering::Relaxed) {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                let hops = hops.map_or(String::new(), |h| format!("\"hops\":{h},"));
                let _ = writeln!(
                    files[node],
                    "{{{hops}\"payload_b64\":\"{}\",\"t_ns\":{t_ns}}}",
                    b64.encode(&payload)
                );
            }
            for f in &mut files {
                let _ = f.flush();
            }
        })
    };

    let sent = Arc::new(Sent::default());
    let mut sockets = Vec::new();
    let mut addrs: HashMap<u64, SocketAddr> = HashMap::new();
    for i in 0..a.nodes {
        let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        addrs.insert(i as u64, s.local_addr().expect("addr"));
        sockets.push(Arc::new(s));
    }
    let addrs = Arc::new(addrs);
    let mut nodes = Vec::new();
    for (i, sock) in sockets.iter().enumerate() {
        let (pt, handle) = Plumtree::new(
            i as u64,
            PlumtreeConfig::default(),
            Delegate {
                node: i,
                tx: tx.clone(),
            },
        );
        // Every other node, in an order of this node's own (seeded shuffle): the
        // library makes the first `eager_fanout` eager, so adding peers in id order
        // would leave the last ids lazy everywhere.
        for p in peer_order(i as u64, a.nodes as u64) {
            pt.add_peer(p);
        }
        let bg = pt.clone();
        tokio::spawn(async move { bg.run_ihave_scheduler().await });
        let bg = pt.clone();
        tokio::spawn(async move { bg.run_graft_timer().await });
        let bg = pt.clone();
        tokio::spawn(async move { bg.run_seen_cleanup().await });
        let bg = pt.clone();
        tokio::spawn(async move { bg.run_maintenance_loop().await });
        // Outgoing: encode and send to the target (or every other node).
        {
            let (sock, addrs, sent, me) = (sock.clone(), addrs.clone(), sent.clone(), i as u64);
            tokio::spawn(async move {
                while let Some(out) = handle.next_outgoing().await {
                    let mut d = me.to_le_bytes().to_vec();
                    d.extend_from_slice(&encode_plumtree_message(&out.message));
                    let targets: Vec<u64> = match out.target {
                        Some(t) => vec![t],
                        None => addrs.keys().copied().filter(|&p| p != me).collect(),
                    };
                    for t in targets {
                        if let Some(addr) = addrs.get(&t) {
                            sent.count(&out.message);
                            let _ = sock.send_to(&d, addr).await;
                        }
                    }
                }
            });
        }
        // Incoming: decode and hand to the protocol.
        {
            let (sock, pt) = (sock.clone(), pt.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 70_000];
                loop {
                    let Ok((n, _)) = sock.recv_from(&mut buf).await else {
                        continue;
                    };
                    if n < 9 {
                        continue;
                    }
                    let from = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
                    if let Some(m) = decode_plumtree_message(&buf[8..n]) {
                        let _ = pt.handle_message(from, m).await;
                    }
                }
            });
        }
        nodes.push(pt);
    }
    let nodes = Arc::new(nodes);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Warm-up, a pause for traffic to settle, then the measured window: the same
    // publishers each time, stopped through `stop`.
    let start_publishers = |stop: Arc<AtomicBool>| {
        tokio::spawn(publish(
            nodes.clone(),
            a.rate,
            a.publishers,
            a.payload,
            stop,
            tx.clone(),
        ))
    };
    let stop = Arc::new(AtomicBool::new(false));
    let warm = start_publishers(stop.clone());
    tokio::time::sleep(a.warmup).await;
    stop.store(true, Ordering::Relaxed);
    let (mut published, mut refused) = warm.await.expect("warm-up publishers");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let warm_end_ns = unix_nanos();
    warm_end.store(warm_end_ns, Ordering::Relaxed);
    let sent0 = sent.snapshot();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let measured = start_publishers(stop.clone());
    tokio::time::sleep(a.duration).await;
    stop.store(true, Ordering::Relaxed);
    let cpu1 = cpu_seconds();
    let window = t0.elapsed().as_secs_f64();
    let end_ns = unix_nanos();
    let (m, r) = measured.await.expect("publishers");
    let expected = m.len() as u64 * a.nodes as u64;
    published.extend(m);
    refused += r;
    // Drain: until every node delivered every measured broadcast, or 3 s of no progress.
    let (mut last, mut since) = (0u64, Instant::now());
    let t = Instant::now();
    loop {
        let got = delivered_measured.load(Ordering::Relaxed);
        if got >= expected
            || since.elapsed() > Duration::from_secs(3)
            || t.elapsed() > Duration::from_secs(20)
        {
            break;
        }
        if got > last {
            (last, since) = (got, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent1 = sent.snapshot();
    let rss = rss_mib();
    for n in nodes.iter() {
        n.shutdown();
    }
    let _ = tx.send((usize::MAX, Bytes::new(), 0, None));
    let _ = writer.join();
    let d = |k: usize| (sent1[k] - sent0[k]) as f64;
    let result = serde_json::json!({
        "published": published,
        "refused": refused,
        "warm_end_ns": warm_end_ns,
        "end_ns": end_ns,
        "gossip_sent": d(0),
        "ihave_sent": d(1),
        "graft_sent": d(2),
        "prune_sent": d(3),
        "cpu_percent": (cpu1 - cpu0) / window * 100.0,
        "rss_mib": rss,
    });
    std::fs::write(a.out.join("result.json"), result.to_string()).expect("write result.json");
    // Background tasks still hold the nodes: exit rather than wait for them.
    std::process::exit(0);
}
