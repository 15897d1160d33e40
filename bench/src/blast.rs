//! `plumcore-bench blast`: drives one in-process node's shard with Gossip datagrams
//! from simulated peers as fast as one sender thread can, and in the same run drives
//! the raw `recvmmsg`/`sendmmsg` forwarder (`raw.rs`) with the same datagrams.
//! Reports messages delivered per second by the shard, raw packets per second, and
//! their ratio.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use plumcore::ids::{origin_offset, MessageId, NodeId};
use plumcore::membership::MembershipConfig;
use plumcore::node::ratelimit::RateLimitConfig;
use plumcore::node::runtime::{self, Hardening, RuntimeConfig};
use plumcore::node::sink::DeliverySink;
use plumcore::node::snapshot::AdminBackend;
use plumcore::protocol::ProtocolConfig;
use plumcore::wire::auth::{ClusterKeys, Sealer, Verifier};
use plumcore::wire::{
    encode_frame, encode_header, encode_member_frame, Frame, Header, MemberFrame,
};
use serde::Serialize;

use crate::machine::thread_cpu_seconds;
use crate::raw::{run_raw_forwarder, RawCounters};

/// Blast parameters.
#[derive(Clone, Debug)]
pub struct BlastConfig {
    pub duration: Duration,
    pub warmup: Duration,
    pub payload: usize,
    /// Gossip frames per datagram (coalescing, as a real sender does).
    pub frames_per_datagram: usize,
    /// Simulated neighbours of the node.
    pub peers: usize,
    /// Core of each shard (one entry per shard); the first is also the raw loop's
    /// core, so that the two compete equally.
    pub shard_cores: Vec<Option<usize>>,
    pub control_core: Option<usize>,
    /// Also measure the raw UDP loop (`scale` leaves it out).
    pub raw: bool,
    /// Run the node with the (test-only) fault layer in place, every rate at zero:
    /// what `--chaos` costs when it injects nothing.
    pub chaos: bool,
    /// Run the node with the per-source flood limiter on, at a limit the blast never
    /// reaches: what checking every datagram against it costs.
    pub rate_limit: bool,
    /// Datagram protection: none, the keyed MAC, or AEAD encryption.
    pub auth: BlastAuth,
}

/// How the blast's datagrams are protected (the node and the simulated peers share
/// a fixed test key).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BlastAuth {
    /// Open cluster: no trailer.
    #[default]
    None,
    /// `cluster_key_file`: BLAKE3 keyed MAC trailer.
    Mac,
    /// `cluster_encrypt`: XChaCha20-Poly1305 over the frames.
    Aead,
}

impl BlastAuth {
    /// The cluster keys for this mode (`None` for an open cluster).
    pub fn keys(self) -> Option<ClusterKeys> {
        let k = ClusterKeys::new(&[[0x5a; 32]]).expect("one key");
        match self {
            BlastAuth::None => None,
            BlastAuth::Mac => Some(k),
            BlastAuth::Aead => Some(k.encrypted(true)),
        }
    }
}

/// CPU cost of protecting one datagram of `frames` Gossip frames of `payload` bytes:
/// nanoseconds to seal it and to open it (verify, and decrypt for AEAD), each the
/// median of 5 rounds of `n` datagrams on the calling thread. `(0, 0)` for `None`.
/// Deterministic where the blast's throughput is not (it has no receive drops).
pub fn seal_open_cost(auth: BlastAuth, frames: usize, payload: usize, n: usize) -> (f64, f64) {
    let Some(keys) = auth.keys() else {
        return (0.0, 0.0);
    };
    let p = Bytes::from(vec![0xAB; payload]);
    let clear = datagram(NodeId(7), NodeId(7), (0, 1), frames, &p);
    let now = unix_ms();
    let mut seal_ns = Vec::new();
    let mut open_ns = Vec::new();
    for round in 0..5u64 {
        let mut sealer = Sealer::new(keys.clone(), round as u8, 0);
        let mut batch: Vec<Vec<u8>> = (0..n).map(|_| clear.clone()).collect();
        let t = Instant::now();
        for d in &mut batch {
            sealer.seal(d, now);
        }
        seal_ns.push(t.elapsed().as_nanos() as f64 / n as f64);
        let mut v = Verifier::new(keys.clone());
        let t = Instant::now();
        let mut ok = 0usize;
        for d in &mut batch {
            ok += usize::from(v.open(d, now).is_ok());
        }
        open_ns.push(t.elapsed().as_nanos() as f64 / n as f64);
        assert_eq!(ok, n, "every sealed datagram opens");
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (med(seal_ns), med(open_ns))
}

/// Bytes of the blast's datagram before sealing.
pub fn datagram_len(frames: usize, payload: usize) -> usize {
    datagram(
        NodeId(7),
        NodeId(7),
        (0, 1),
        frames,
        &Bytes::from(vec![0; payload]),
    )
    .len()
}

/// Current UNIX time in milliseconds (auth timestamps).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl BlastConfig {
    fn shards(&self) -> usize {
        self.shard_cores.len().max(1)
    }
}

/// What one blast run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BlastReport {
    pub auth: BlastAuth,
    pub payload: usize,
    pub frames_per_datagram: usize,
    pub peers: usize,
    pub shards: usize,
    pub duration_s: f64,
    /// Messages the shards delivered per second (all shards together).
    pub plumcore_msgs_per_s: f64,
    /// Datagrams the shard received per second.
    pub plumcore_datagrams_in_per_s: f64,
    /// Datagrams the shard sent per second (eager forwards and IHaves).
    pub plumcore_datagrams_out_per_s: f64,
    /// Shard wake-ups per second (readiness waits that returned, tick loop runs).
    pub plumcore_wakeups_per_s: f64,
    /// `sendmmsg` calls per second, and datagrams per second that went out as GSO
    /// segments.
    pub plumcore_send_calls_per_s: f64,
    pub plumcore_gso_segments_per_s: f64,
    /// CPU seconds the shard threads used per second of the window (1.0 = one core
    /// all the time), and messages delivered per shard CPU second: the shard's
    /// efficiency, whatever share of the shared cores the scheduler gave it.
    pub plumcore_shard_cpu_per_s: f64,
    pub plumcore_msgs_per_shard_cpu_s: f64,
    pub plumcore_datagrams_in_per_shard_cpu_s: f64,
    /// The raw loop's thread likewise.
    pub raw_cpu_per_s: f64,
    pub raw_packets_per_cpu_s: f64,
    /// Messages the blaster offered per second to the node.
    pub offered_msgs_per_s: f64,
    /// Packets the raw loop received (and forwarded to each peer) per second.
    pub raw_packets_per_s: f64,
    pub raw_forwarded_per_s: f64,
    /// plumcore messages/s ÷ raw loop packets/s.
    pub ratio_vs_raw: f64,
}

/// Builds one datagram of Gossip frames from `sender`, with seqs `first`,
/// `first + stride`, ... (a stride of the shard count keeps every frame in partitions
/// one shard owns).
fn datagram(
    sender: NodeId,
    origin: NodeId,
    (first, stride): (u64, u64),
    frames: usize,
    payload: &Bytes,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(1500);
    encode_header(
        &Header {
            sender,
            incarnation: 1,
            flags: 0,
            version: plumcore::wire::VERSION,
        },
        &mut out,
    );
    for i in 0..frames as u64 {
        encode_frame(
            &Frame::Gossip {
                id: MessageId {
                    origin,
                    seq: first + i * stride,
                },
                round: 0,
                topic: plumcore::topic::Topic::default(),
                payload: payload.clone(),
            },
            &mut out,
        );
    }
    out
}

/// A simulated peer: a control socket (for its Join) and a shard socket at port + 1.
struct FakePeer {
    id: NodeId,
    control: UdpSocket,
    shard: UdpSocket,
}

fn fake_peer(id: NodeId) -> FakePeer {
    loop {
        let control = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = control.local_addr().expect("addr").port();
        if let Ok(shard) = UdpSocket::bind(("127.0.0.1", port.wrapping_add(1))) {
            return FakePeer { id, control, shard };
        }
    }
}

/// Reads and discards everything arriving on `socks` until `stop`.
fn drainer(socks: Vec<UdpSocket>, stop: Arc<AtomicBool>, count: Arc<AtomicU64>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for s in &socks {
            let _ = s.set_nonblocking(true);
        }
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let mut got = false;
            for s in &socks {
                while s.recv_from(&mut buf).is_ok() {
                    count.fetch_add(1, Ordering::Relaxed);
                    got = true;
                }
            }
            if !got {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    })
}

/// Sends datagrams to `to` as fast as possible until `stop`; seqs never repeat. With
/// `shards` > 1 the frames are those of shard `shard`'s partitions only (the node's
/// shard `k` owns the partitions `p` with `p % shards == k`).
#[allow(clippy::too_many_arguments)]
fn blaster(
    to: SocketAddr,
    peers: Vec<NodeId>,
    cfg: BlastConfig,
    (shard, shards): (usize, usize),
    stop: Arc<AtomicBool>,
    sent_msgs: Arc<AtomicU64>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind blaster");
        let payload = Bytes::from(vec![0xAB; cfg.payload]);
        let origin = NodeId(0xB1A5_7000 + shard as u64);
        let n = shards.max(1) as u64;
        // partition = (offset + seq) mod 64; shard = partition mod n (n divides 64).
        let first = (shard as u64 + n - origin_offset(origin) % n) % n;
        let frames = cfg.frames_per_datagram as u64;
        // One seal stream per blaster thread (replay windows are per sender and
        // stream; the seqs of one thread only grow).
        let mut sealer = cfg.auth.keys().map(|k| Sealer::new(k, 1 + shard as u8, 0));
        // Every mode costs the sender the same: modes that seal less also seal a
        // scratch copy with AEAD (discarded), so the offered load, and with it the
        // receiver's drop rate, does not favour one mode.
        let mut ballast = (cfg.auth != BlastAuth::Aead)
            .then(|| {
                BlastAuth::Aead
                    .keys()
                    .map(|k| Sealer::new(k, 1 + shard as u8, 0))
            })
            .flatten();
        let mut scratch = Vec::with_capacity(2048);
        let mut j = 0u64;
        let mut k = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let sender = peers[k % peers.len()];
            k += 1;
            let mut d = datagram(
                sender,
                origin,
                (first + j * n, n),
                frames as usize,
                &payload,
            );
            if let Some(b) = &mut ballast {
                scratch.clear();
                scratch.extend_from_slice(&d);
                b.seal(&mut scratch, unix_ms());
                std::hint::black_box(&scratch);
            }
            if let Some(s) = &mut sealer {
                s.seal(&mut d, unix_ms());
            }
            j += frames;
            if sock.send_to(&d, to).is_ok() {
                sent_msgs.fetch_add(frames, Ordering::Relaxed);
            }
        }
    })
}

/// Delivered, datagrams in, datagrams out, wake-ups, send calls, GSO segments.
fn delivered(backend: &runtime::NodeBackend) -> [u64; 6] {
    let s = backend.snapshot();
    s.shards.iter().fold([0; 6], |a, sh| {
        [
            a[0] + sh.stats.delivered,
            a[1] + sh.io.datagrams_received,
            a[2] + sh.io.datagrams_sent,
            a[3] + sh.io.wakeups,
            a[4] + sh.io.send_calls,
            a[5] + sh.io.gso_segments,
        ]
    })
}

/// One run: plumcore first, then (with `cfg.raw`) the raw loop, same traffic shape.
pub fn run(cfg: &BlastConfig) -> BlastReport {
    // --- plumcore ---
    let (sink, sink_tx) = DeliverySink::start(None).expect("count-only sink");
    let protocol = ProtocolConfig {
        max_payload: cfg.payload.max(1),
        ..ProtocolConfig::default()
    };
    let shards = cfg.shards();
    // A free control port whose shard ports are free too; retried on a clash.
    let mut attempt = 0;
    let (node, base) = loop {
        let control = UdpSocket::bind("127.0.0.1:0").expect("probe port");
        let base = control.local_addr().expect("addr");
        drop(control);
        let hardening = Hardening {
            rate_limit: if cfg.rate_limit {
                RateLimitConfig {
                    per_sec: 100_000_000,
                    burst: 10_000_000,
                    max_peers: 4096,
                }
            } else {
                RateLimitConfig::OFF
            },
            ..Hardening::default()
        };
        let membership = MembershipConfig {
            heartbeat_interval: Duration::from_millis(500),
            failure_timeout: Duration::from_secs(30),
            ..MembershipConfig::default()
        };
        let started = runtime::start_with(
            RuntimeConfig {
                node_id: NodeId(1),
                bind: base,
                seeds: Vec::new(),
                shard_cores: cfg.shard_cores.clone(),
                control_core: cfg.control_core,
                heartbeat_interval: Duration::from_millis(500),
                failure_timeout: Duration::from_secs(30),
                recv_buffer: 16 << 20,
                send_buffer: 16 << 20,
                mtu: 1400,
                protocol: protocol.clone(),
                chaos: cfg.chaos,
                cluster_keys: cfg.auth.keys(),
                node_name: None,
                node_name_chosen: false,
                advertise: None,
                names: Default::default(),
            },
            membership,
            hardening,
            sink_tx.clone(),
        );
        match started {
            Ok(node) => break (node, base),
            Err(e) if attempt < 10 => {
                attempt += 1;
                let _ = e;
            }
            Err(e) => panic!("starting the node: {e}"),
        }
    };
    let backend = node.backend();
    let shard_addrs = node.shard_addrs().to_vec();
    let peers: Vec<FakePeer> = (0..cfg.peers)
        .map(|i| fake_peer(NodeId(100 + i as u64)))
        .collect();
    // Join: each fake peer sends a HyParView Join to the node's control socket.
    let mut join_sealer = cfg.auth.keys().map(|k| Sealer::new(k, 0, 0));
    for p in &peers {
        let mut ping = Vec::new();
        encode_header(
            &Header {
                sender: p.id,
                incarnation: 1,
                flags: 0,
                version: plumcore::wire::VERSION,
            },
            &mut ping,
        );
        encode_member_frame(&MemberFrame::Join { shards: 1 }, &mut ping);
        if let Some(s) = &mut join_sealer {
            s.seal(&mut ping, unix_ms());
        }
        p.control.send_to(&ping, base).expect("ping");
    }
    let t = Instant::now();
    while backend.snapshot().peers.len() < cfg.peers && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let drained = Arc::new(AtomicU64::new(0));
    let ids: Vec<NodeId> = peers.iter().map(|p| p.id).collect();
    let shard_socks: Vec<UdpSocket> = peers
        .iter()
        .map(|p| p.shard.try_clone().expect("clone"))
        .collect();
    let drain = drainer(shard_socks, stop.clone(), drained.clone());
    let sent = Arc::new(AtomicU64::new(0));
    let blasts: Vec<JoinHandle<()>> = shard_addrs
        .iter()
        .enumerate()
        .map(|(k, &addr)| {
            blaster(
                addr,
                ids.clone(),
                cfg.clone(),
                (k, shards),
                stop.clone(),
                sent.clone(),
            )
        })
        .collect();
    std::thread::sleep(cfg.warmup);
    let c0 = delivered(&backend);
    let cpu0 = thread_cpu_seconds("shard-");
    let s0 = sent.load(Ordering::Relaxed);
    let t0 = Instant::now();
    std::thread::sleep(cfg.duration);
    let c1 = delivered(&backend);
    let cpu1 = thread_cpu_seconds("shard-");
    let s1 = sent.load(Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for b in blasts {
        b.join().expect("blaster");
    }
    drain.join().expect("drainer");
    node.shutdown(Duration::from_secs(3));
    drop(sink_tx);
    sink.stop();
    let rate = |i: usize| (c1[i] - c0[i]) as f64 / secs;
    let shard_cpu = (cpu1 - cpu0).max(1e-9);
    let msgs = rate(0);
    let mut report = BlastReport {
        auth: cfg.auth,
        payload: cfg.payload,
        frames_per_datagram: cfg.frames_per_datagram,
        peers: cfg.peers,
        shards,
        duration_s: secs,
        plumcore_msgs_per_s: msgs,
        plumcore_datagrams_in_per_s: rate(1),
        plumcore_datagrams_out_per_s: rate(2),
        plumcore_wakeups_per_s: rate(3),
        plumcore_send_calls_per_s: rate(4),
        plumcore_gso_segments_per_s: rate(5),
        plumcore_shard_cpu_per_s: shard_cpu / secs,
        plumcore_msgs_per_shard_cpu_s: (c1[0] - c0[0]) as f64 / shard_cpu,
        plumcore_datagrams_in_per_shard_cpu_s: (c1[1] - c0[1]) as f64 / shard_cpu,
        raw_cpu_per_s: 0.0,
        raw_packets_per_cpu_s: 0.0,
        offered_msgs_per_s: (s1 - s0) as f64 / secs,
        raw_packets_per_s: 0.0,
        raw_forwarded_per_s: 0.0,
        ratio_vs_raw: 0.0,
    };
    if !cfg.raw {
        return report;
    }

    // --- raw loop, same datagrams, forwarded to as many peers as plumcore has eager ---
    let fanout = ProtocolConfig::default().eager_fanout.min(cfg.peers).max(1);
    let raw_sock = UdpSocket::bind("127.0.0.1:0").expect("bind raw");
    let raw_addr = raw_sock.local_addr().expect("addr");
    let targets: Vec<SocketAddr> = peers[..fanout]
        .iter()
        .map(|p| p.shard.local_addr().expect("addr"))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(RawCounters::default());
    let fwd = {
        let (stop, counters, core) = (
            stop.clone(),
            counters.clone(),
            cfg.shard_cores.first().copied().flatten(),
        );
        std::thread::Builder::new()
            .name("raw-forwarder".into())
            .spawn(move || {
                if let Some(c) = core {
                    let _ = core_pinning::pin_current_thread(c);
                }
                run_raw_forwarder(raw_sock, targets, stop, counters)
            })
            .expect("spawn the raw loop")
    };
    let shard_socks: Vec<UdpSocket> = peers
        .iter()
        .map(|p| p.shard.try_clone().expect("clone"))
        .collect();
    let drain = drainer(shard_socks, stop.clone(), drained.clone());
    let blast = blaster(
        raw_addr,
        ids,
        cfg.clone(),
        (0, 1),
        stop.clone(),
        Arc::new(AtomicU64::new(0)),
    );
    std::thread::sleep(cfg.warmup);
    let r0 = counters.received.load(Ordering::Relaxed);
    let rcpu0 = thread_cpu_seconds("raw-forwarder");
    let f0 = counters.forwarded.load(Ordering::Relaxed);
    let t0 = Instant::now();
    std::thread::sleep(cfg.duration);
    let r1 = counters.received.load(Ordering::Relaxed);
    let rcpu1 = thread_cpu_seconds("raw-forwarder");
    let f1 = counters.forwarded.load(Ordering::Relaxed);
    let raw_secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    blast.join().expect("blaster");
    drain.join().expect("drainer");
    fwd.join().expect("forwarder");

    let raw = (r1 - r0) as f64 / raw_secs;
    report.raw_packets_per_s = raw;
    let raw_cpu = (rcpu1 - rcpu0).max(1e-9);
    report.raw_cpu_per_s = raw_cpu / raw_secs;
    report.raw_packets_per_cpu_s = (r1 - r0) as f64 / raw_cpu;
    report.raw_forwarded_per_s = (f1 - f0) as f64 / raw_secs;
    report.ratio_vs_raw = if raw > 0.0 { msgs / raw } else { 0.0 };
    report
}
