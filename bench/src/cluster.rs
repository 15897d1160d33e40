//! `plumcore-bench cluster`: a cluster under a steady publish load. Starts N `plumcore
//! node` processes on 127.0.0.1 (or uses running nodes given by admin address), runs K
//! publisher threads that together `POST /broadcast` R messages/s for the warm-up plus
//! the measured duration, each payload stamped with its publisher and send time, then
//! reads every node's deliveries file and `/metrics` and reports latency, reliability,
//! RMR, LDH, control traffic and per-node CPU and RSS over the measured window.
//!
//! Latency is publish to delivery: from just before the publisher's HTTP request to the
//! moment the receiving node's deliveries writer takes the message off its queue (the
//! `t_ns` field), both on this host's clock. The origin's own delivery (hop 0) is left
//! out: it measures the HTTP round trip, not the broadcast.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use plumcore::harness::{deliveries, metrics};
use serde::Serialize;

use crate::blast::BlastAuth;
use crate::machine;
use crate::nodes::{self, LocalSpec, NodeHandle, NodeShutdown};
use crate::report::{self, MessageOutcome, Percentiles, Reliability};

/// Bytes of the stamp at the head of every payload: publisher id, then send time.
pub const STAMP_BYTES: usize = 16;

/// What to run.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub nodes: usize,
    pub shards: u16,
    /// Broadcasts per second over all publishers.
    pub rate: u32,
    pub publishers: usize,
    /// Measured publishing time, after the warm-up.
    pub duration: Duration,
    /// Publishing time before the measured window (trees form, caches warm).
    pub warmup: Duration,
    pub payload: usize,
    pub flood: bool,
    /// Running nodes to target instead of starting local ones.
    pub admins: Vec<SocketAddr>,
    /// Draw a progress bar on stderr (hidden when stderr is not a terminal).
    pub progress: bool,
    /// Datagram protection of the local nodes: none, MAC or AEAD.
    pub auth: BlastAuth,
    /// How publishers reach the nodes: the NATS client port (async-nats) or
    /// `POST /broadcast`.
    pub publish: PublishVia,
}

/// The publishing path of a cluster benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishVia {
    /// `PUB bench.load` on each node's client port, through async-nats.
    Nats,
    /// One `POST /broadcast` per message.
    Http,
}

/// Subject the NATS publishers use.
pub const BENCH_SUBJECT: &str = "bench.load";

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            nodes: 5,
            shards: 1,
            rate: 500,
            publishers: 2,
            duration: Duration::from_secs(8),
            warmup: Duration::from_secs(2),
            payload: 64,
            flood: false,
            admins: Vec::new(),
            progress: true,
            auth: BlastAuth::None,
            publish: PublishVia::Nats,
        }
    }
}

/// One published broadcast that a node accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Stamp {
    pub publisher: u64,
    pub send_ns: u64,
}

impl Stamp {
    /// Writes the stamp at the head of `payload` (at least [`STAMP_BYTES`] long).
    pub fn write(&self, payload: &mut [u8]) {
        payload[..8].copy_from_slice(&self.publisher.to_le_bytes());
        payload[8..16].copy_from_slice(&self.send_ns.to_le_bytes());
    }

    /// Reads a stamp from the head of a payload.
    pub fn read(payload: &[u8]) -> Option<Stamp> {
        let p = payload.get(..STAMP_BYTES)?;
        Some(Stamp {
            publisher: u64::from_le_bytes(p[..8].try_into().ok()?),
            send_ns: u64::from_le_bytes(p[8..16].try_into().ok()?),
        })
    }
}

/// One node's figures over the measured window.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeFigures {
    pub admin: String,
    /// Measured broadcasts it delivered.
    pub delivered: u64,
    /// CPU used, in percent of one core (`None` for nodes this run did not start).
    pub cpu_percent: Option<f64>,
    pub rss_mib: Option<f64>,
}

/// Everything `cluster` reports; also one column of `compare`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClusterReport {
    pub system: String,
    pub nodes: usize,
    pub shards_per_node: u16,
    pub payload_bytes: usize,
    pub publishers: usize,
    pub rate_target: u32,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// Broadcasts accepted in the measured window.
    pub measured: u64,
    /// Broadcasts the nodes refused (HTTP error), warm-up included.
    pub refused: u64,
    /// Accepted broadcasts per second in the measured window.
    pub achieved_rate: f64,
    /// Publish (the publisher's stamp) to delivery.
    pub latency: Percentiles,
    /// The origin's own delivery to each other node's delivery.
    pub dissemination: Percentiles,
    pub reliability: Reliability,
    pub rmr: Option<f64>,
    pub ldh_mean: Option<f64>,
    pub ldh_max: Option<u32>,
    /// The same broadcast delivered twice by one node (should be 0).
    pub duplicate_deliveries: u64,
    /// Gossip received for an already delivered broadcast (protocol redundancy).
    pub redundant_receptions: u64,
    pub gossip_sent: u64,
    pub ihave_sent: u64,
    pub graft_sent: u64,
    pub prune_sent: u64,
    /// Missing messages given up after the last Graft retry.
    pub graft_failed: u64,
    /// IHave announcements shed because a queue was full.
    pub ihave_dropped: u64,
    /// Cached payloads evicted by the size bounds (a Graft then finds nothing).
    pub cache_evictions: u64,
    /// Overlay churn in the measured window: passive nodes promoted, splices, and
    /// neighbours lost to a Disconnect or the failure detector. Every change re-shapes
    /// the Plumtree trees, so a steady overlay should show 0.
    pub membership_changes: u64,
    pub per_node: Vec<NodeFigures>,
    /// Datagrams the kernel dropped host-wide for a full receive buffer during the
    /// measured window and drain (`/proc/net/snmp` RcvbufErrors).
    pub udp_rcvbuf_drops: Option<u64>,
    /// Mean neighbours per node (`/peers`) when the measured window began: a tree
    /// overlay has 2(n-1)/n, and then flooding sends no redundant payloads either.
    pub overlay_degree_mean: f64,
    /// True when figures come from `/metrics` only (running nodes, no deliveries files).
    pub metrics_only: bool,
    /// How each node this run started ended after SIGTERM (empty for running nodes).
    pub shutdowns: Vec<NodeShutdown>,
}

/// A report plus the latency histogram it summarises (for `--plot`).
pub struct ClusterRun {
    pub report: ClusterReport,
    pub latency: Histogram<u64>,
}

/// How a run was shaped: what every system's report states before its figures.
pub struct RunShape<'a> {
    pub cfg: &'a ClusterConfig,
    pub system: String,
    /// Nodes that ran (started here or given by admin address).
    pub nodes: usize,
    pub shards_per_node: u16,
    /// The measured window, in seconds.
    pub window_s: f64,
    /// Mean neighbours per node when the measured window began.
    pub overlay_degree_mean: f64,
}

impl<'a> RunShape<'a> {
    /// `cfg.nodes` single-shard nodes, each with every other as a neighbour:
    /// nats-server's full-mesh routes, memberlist's static membership.
    pub fn full_mesh(cfg: &'a ClusterConfig, system: &str, window_s: f64) -> Self {
        Self {
            cfg,
            system: system.into(),
            nodes: cfg.nodes,
            shards_per_node: 1,
            window_s,
            overlay_degree_mean: cfg.nodes.saturating_sub(1) as f64,
        }
    }
}

impl ClusterReport {
    /// The figures every system's run has, computed one way so that `compare`'s
    /// columns agree: shape, rate, latency, reliability and duplicates. The system's
    /// own counters (RMR, LDH, control traffic, drops, shutdowns) stay at their
    /// defaults for the caller to set.
    pub fn from_run(
        shape: RunShape<'_>,
        measured: usize,
        refused: u64,
        analysis: &Analysis,
        per_node: Vec<NodeFigures>,
    ) -> Self {
        let cfg = shape.cfg;
        Self {
            system: shape.system,
            nodes: shape.nodes,
            shards_per_node: shape.shards_per_node,
            payload_bytes: cfg.payload,
            publishers: cfg.publishers,
            rate_target: cfg.rate,
            warmup_s: cfg.warmup.as_secs_f64(),
            duration_s: shape.window_s,
            measured: measured as u64,
            refused,
            achieved_rate: measured as f64 / shape.window_s.max(1e-9),
            latency: report::percentiles(&analysis.latency),
            dissemination: report::percentiles(&analysis.dissemination),
            reliability: report::reliability(&analysis.outcomes, shape.nodes as u32),
            duplicate_deliveries: analysis.duplicates,
            per_node,
            overlay_degree_mean: shape.overlay_degree_mean,
            ..Self::default()
        }
    }
}

/// Unix time in nanoseconds.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What one node's deliveries file says about the measured broadcasts.
#[derive(Default)]
pub struct NodeDeliveries {
    /// Measured broadcast -> (times delivered, hops).
    pub seen: HashMap<Stamp, (u32, Option<u32>, u64)>,
}

/// Reads a deliveries file (NDJSON with `payload_b64`, `t_ns`, optional `hops`),
/// keeping the broadcasts in `measured`; a complete line that is not a record the
/// node writes is an error.
pub fn read_deliveries(path: &Path, measured: &HashSet<Stamp>) -> Result<NodeDeliveries> {
    let mut out = NodeDeliveries::default();
    for d in deliveries::read_deliveries(path)? {
        let (Some(stamp), Some(t_ns)) = (Stamp::read(&d.payload), d.t_ns) else {
            continue;
        };
        if !measured.contains(&stamp) {
            continue;
        }
        out.seen.entry(stamp).or_insert((0, d.hops, t_ns)).0 += 1;
    }
    Ok(out)
}

/// What [`analyse`] finds in the deliveries of the measured broadcasts.
pub struct Analysis {
    /// Publish to delivery, every delivery but the origin's own.
    pub latency: Histogram<u64>,
    /// The origin's own delivery to each other delivery: the dissemination alone,
    /// without the publish path (HTTP, command queue).
    pub dissemination: Histogram<u64>,
    pub outcomes: Vec<MessageOutcome>,
    /// The same broadcast delivered more than once by one node.
    pub duplicates: u64,
}

/// Latency, outcomes and duplicates of the measured broadcasts over every node.
pub fn analyse(per_node: &[NodeDeliveries], measured: &HashSet<Stamp>) -> Analysis {
    let mut hist = report::latency_histogram();
    let mut dissemination = report::latency_histogram();
    let mut outcomes: HashMap<Stamp, MessageOutcome> = measured
        .iter()
        .map(|s| (*s, MessageOutcome::default()))
        .collect();
    let mut origin_t: HashMap<Stamp, u64> = HashMap::new();
    let mut dups = 0u64;
    for node in per_node {
        for (stamp, &(count, hops, t_ns)) in &node.seen {
            let Some(o) = outcomes.get_mut(stamp) else {
                continue;
            };
            o.receivers += 1;
            dups += u64::from(count.saturating_sub(1));
            if let Some(h) = hops {
                o.last_hop = Some(o.last_hop.map_or(h, |m| m.max(h)));
            }
            if hops == Some(0) {
                origin_t.insert(*stamp, t_ns);
            } else {
                let _ = hist.record(t_ns.saturating_sub(stamp.send_ns).max(1));
            }
        }
    }
    for node in per_node {
        for (stamp, &(_, hops, t_ns)) in &node.seen {
            if let (Some(&t0), false) = (origin_t.get(stamp), hops == Some(0)) {
                let _ = dissemination.record(t_ns.saturating_sub(t0).max(1));
            }
        }
    }
    Analysis {
        latency: hist,
        dissemination,
        outcomes: outcomes.into_values().collect(),
        duplicates: dups,
    }
}

/// Where publishers send: admin planes or client ports.
enum Targets {
    Http(Vec<SocketAddr>),
    Nats(Vec<SocketAddr>),
}

/// Publisher threads, each with an async-nats client per node on a current-thread
/// tokio runtime, publishing round-robin over the nodes at `rate` in all until
/// `stop`; each thread flushes its clients before it reports what it published.
pub fn start_nats_publishers(
    clients: &[SocketAddr],
    rate: u32,
    publishers: usize,
    payload: usize,
    stop: Arc<AtomicBool>,
) -> Publishing {
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let k = publishers.max(1);
    let gap = Duration::from_secs_f64(k as f64 / f64::from(rate.max(1)));
    let threads = (0..k)
        .map(|j| {
            let addrs = clients.to_vec();
            let (accepted, refused, sent, stop) = (
                accepted.clone(),
                refused.clone(),
                sent.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                let mine = rt.block_on(async move {
                    let mut conns = Vec::new();
                    for a in &addrs {
                        match async_nats::connect(a.to_string()).await {
                            Ok(c) => conns.push(c),
                            Err(_) => {
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    let mut mine = Vec::new();
                    if conns.is_empty() {
                        return mine;
                    }
                    let mut body = vec![b'.'; payload.max(STAMP_BYTES)];
                    let start = Instant::now() + gap.mul_f64(j as f64 / k as f64);
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        // Sleep only when ahead: tokio's timer has millisecond grain,
                        // so at high rates each wake publishes what fell due.
                        let due = start + gap.mul_f64(n as f64);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            tokio::time::sleep(wait).await;
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                        }
                        let stamp = Stamp {
                            publisher: j as u64,
                            send_ns: unix_nanos(),
                        };
                        stamp.write(&mut body);
                        let c = &conns[(n as usize + j) % conns.len()];
                        n += 1;
                        sent.fetch_add(1, Ordering::Relaxed);
                        match c
                            .publish(BENCH_SUBJECT, bytes::Bytes::copy_from_slice(&body))
                            .await
                        {
                            Ok(()) => mine.push(stamp),
                            Err(_) => {
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    for c in &conns {
                        let _ = c.flush().await;
                    }
                    mine
                });
                accepted.lock().expect("publisher lock").extend(mine);
            })
        })
        .collect();
    Publishing {
        accepted,
        refused,
        sent,
        threads,
    }
}

/// Publisher threads: `rate` broadcasts/s over `publishers` threads, round-robin over
/// `admins`, until `stop`.
pub struct Publishing {
    pub accepted: Arc<Mutex<Vec<Stamp>>>,
    pub refused: Arc<AtomicU64>,
    pub sent: Arc<AtomicU64>,
    pub threads: Vec<std::thread::JoinHandle<()>>,
}

fn start_publishers(
    targets: &Targets,
    rate: u32,
    publishers: usize,
    payload: usize,
    stop: Arc<AtomicBool>,
) -> Publishing {
    let admins = match targets {
        Targets::Http(a) => a.as_slice(),
        Targets::Nats(c) => return start_nats_publishers(c, rate, publishers, payload, stop),
    };
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let k = publishers.max(1);
    let gap = Duration::from_secs_f64(k as f64 / f64::from(rate.max(1)));
    let threads = (0..k)
        .map(|j| {
            let urls: Vec<String> = admins
                .iter()
                .map(|a| format!("http://{a}/broadcast"))
                .collect();
            let (accepted, refused, sent, stop) = (
                accepted.clone(),
                refused.clone(),
                sent.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(2))
                    .build();
                let mut body = vec![b'.'; payload.max(STAMP_BYTES)];
                let mut mine = Vec::new();
                // Stagger the publishers over one gap.
                let start = Instant::now() + gap.mul_f64(j as f64 / k as f64);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let due = start + gap.mul_f64(n as f64);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    let stamp = Stamp {
                        publisher: j as u64,
                        send_ns: unix_nanos(),
                    };
                    stamp.write(&mut body);
                    let url = &urls[(n as usize + j) % urls.len()];
                    n += 1;
                    sent.fetch_add(1, Ordering::Relaxed);
                    match agent.post(url).send_bytes(&body) {
                        Ok(_) => mine.push(stamp),
                        Err(_) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                accepted.lock().expect("publisher lock").extend(mine);
            })
        })
        .collect();
    Publishing {
        accepted,
        refused,
        sent,
        threads,
    }
}

fn scrape_all(nodes: &[NodeHandle]) -> Vec<String> {
    nodes.iter().map(|n| nodes::scrape(n.admin)).collect()
}

/// How much counter `name` grew over all nodes between two scrapes (0 if it fell:
/// a node restarted).
fn delta(before: &[String], after: &[String], name: &str) -> u64 {
    let sum = |pages: &[String]| {
        pages
            .iter()
            .map(|p| metrics::counter_sum(p, name))
            .sum::<u64>()
    };
    sum(after).saturating_sub(sum(before))
}

/// The config file that puts every local node in `auth` mode (a fixed test key;
/// `None` for an open cluster).
fn auth_config(auth: BlastAuth, dir: &std::path::Path) -> Result<Option<std::path::PathBuf>> {
    if auth == BlastAuth::None {
        return Ok(None);
    }
    let key = dir.join("cluster.key");
    std::fs::write(&key, format!("{}\n", "5a".repeat(32)))?;
    let config = dir.join("auth.toml");
    std::fs::write(
        &config,
        format!(
            "cluster_key_file = {:?}\ncluster_encrypt = {}\n",
            key.to_str().unwrap_or_default(),
            auth == BlastAuth::Aead
        ),
    )?;
    Ok(Some(config))
}

/// Runs the workload once on plumcore nodes: warm-up publishing, a pause for the
/// counters to settle, the measured publishing, a drain, then the figures.
pub fn run(cfg: &ClusterConfig) -> Result<ClusterRun> {
    if cfg.payload < STAMP_BYTES {
        bail!("invalid argument `--payload`: must be at least {STAMP_BYTES} (the send-time stamp)");
    }
    if cfg.rate == 0 || cfg.publishers == 0 {
        bail!("invalid argument: `--rate` and `--publishers` must be at least 1");
    }
    let dir = tempfile::tempdir()?;
    let mut nodes = if cfg.admins.is_empty() {
        if cfg.nodes < 2 {
            bail!("invalid argument `--nodes`: must be at least 2");
        }
        let spec = LocalSpec {
            nodes: cfg.nodes,
            shards: cfg.shards,
            flood: cfg.flood,
            binary: nodes::plumcore_binary()?,
            config: auth_config(cfg.auth, dir.path())?,
        };
        // A node can fail its start (the known start-up stall makes it exit after
        // 10 s; a port picked free can be taken by then): start the cluster again once.
        match nodes::start_local(&spec, dir.path()) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("cluster: {e:#}; starting the nodes again");
                nodes::start_local(&spec, dir.path())?
            }
        }
    } else {
        let mut n = nodes::remote(&cfg.admins);
        nodes::wait_joined(&mut n, Duration::from_secs(10))?;
        n
    };
    let targets = match cfg.publish {
        PublishVia::Http => Targets::Http(nodes.iter().map(|n| n.admin).collect()),
        PublishVia::Nats => {
            let c: Option<Vec<SocketAddr>> = nodes.iter().map(|n| n.client).collect();
            Targets::Nats(c.context(
                "`--publish nats` needs the nodes' client ports: use --publish http with --admin",
            )?)
        }
    };
    let bar = progress_bar(cfg);
    let started = Instant::now();
    // Warm-up: publish, stop, and let traffic and the shards' counters (published
    // every 250 ms) settle, so that the measured window's metric deltas hold exactly
    // the measured broadcasts.
    let stop = Arc::new(AtomicBool::new(false));
    let warm = start_publishers(
        &targets,
        cfg.rate,
        cfg.publishers,
        cfg.payload,
        stop.clone(),
    );
    tick_until(&bar, started, cfg.warmup, &warm);
    stop.store(true, Ordering::Relaxed);
    let mut refused = warm.refused.load(Ordering::Relaxed);
    for t in warm.threads {
        let _ = t.join();
    }
    std::thread::sleep(Duration::from_millis(600));
    let m0 = scrape_all(&nodes);
    let drops0 = machine::udp_rcvbuf_errors();
    let degrees: Vec<usize> = nodes
        .iter()
        .filter_map(|n| nodes::peers_of(n.admin))
        .collect();
    let overlay_degree_mean = degrees.iter().sum::<usize>() as f64 / degrees.len().max(1) as f64;
    let cpu0: Vec<Option<f64>> = nodes
        .iter()
        .map(|n| n.pid().and_then(machine::cpu_seconds))
        .collect();
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = start_publishers(
        &targets,
        cfg.rate,
        cfg.publishers,
        cfg.payload,
        stop.clone(),
    );
    tick_until(
        &bar,
        t0 - cfg.warmup,
        cfg.warmup + cfg.duration,
        &publishing,
    );
    stop.store(true, Ordering::Relaxed);
    let cpu1: Vec<Option<f64>> = nodes
        .iter()
        .map(|n| n.pid().and_then(machine::cpu_seconds))
        .collect();
    let window = t0.elapsed().as_secs_f64();
    for t in publishing.threads {
        let _ = t.join();
    }
    bar.finish_and_clear();
    let measured: HashSet<Stamp> = std::mem::take(&mut *publishing.accepted.lock().expect("lock"))
        .into_iter()
        .collect();
    refused += publishing.refused.load(Ordering::Relaxed);

    // Drain: wait until every node has every measured broadcast, or progress stops.
    let files: Vec<Option<PathBuf>> = nodes.iter().map(|n| n.deliveries.clone()).collect();
    let metrics_only = files.iter().any(Option::is_none);
    let mut per_node: Vec<NodeDeliveries> = Vec::new();
    if !metrics_only {
        let t = Instant::now();
        let mut last = (0usize, Instant::now());
        loop {
            per_node = files
                .iter()
                .flatten()
                .map(|f| read_deliveries(f, &measured))
                .collect::<Result<_>>()?;
            let got: usize = per_node.iter().map(|d| d.seen.len()).sum();
            if got >= measured.len() * per_node.len() {
                break;
            }
            if got > last.0 {
                last = (got, Instant::now());
            }
            if last.1.elapsed() > Duration::from_secs(3) || t.elapsed() > Duration::from_secs(20) {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    } else {
        std::thread::sleep(Duration::from_secs(2));
    }
    // Shards publish their counters every 250 ms: let the last ones land.
    std::thread::sleep(Duration::from_millis(600));
    let m1 = scrape_all(&nodes);
    let drops1 = machine::udp_rcvbuf_errors();
    let rss: Vec<Option<f64>> = nodes
        .iter()
        .map(|n| n.pid().and_then(machine::rss_mib))
        .collect();
    let shutdowns = nodes::stop_local(&mut nodes);

    let gossip_sent = delta(&m0, &m1, "plumtree_gossip_sent_total");
    let mut analysis = analyse(&per_node, &measured);
    let delivered_metric: Vec<f64> = m0
        .iter()
        .zip(&m1)
        .map(|(a, b)| {
            metrics::metric_sum(b, "plumtree_messages_delivered_total")
                - metrics::metric_sum(a, "plumtree_messages_delivered_total")
        })
        .collect();
    if metrics_only {
        // No per-message records: spread the delivered counts evenly (an estimate
        // that also counts other traffic the nodes carried).
        let total: f64 = delivered_metric.iter().sum();
        let per_msg = if measured.is_empty() {
            0
        } else {
            (total / measured.len() as f64).round() as u32
        };
        analysis.outcomes = measured
            .iter()
            .map(|_| MessageOutcome {
                receivers: per_msg,
                last_hop: None,
            })
            .collect();
    }
    let ldh = report::ldh(&analysis.outcomes);
    let per_node_figs = nodes
        .iter()
        .enumerate()
        .map(|(i, nd)| NodeFigures {
            admin: nd.admin.to_string(),
            delivered: per_node
                .get(i)
                .map_or(delivered_metric[i].max(0.0) as u64, |d| d.seen.len() as u64),
            cpu_percent: match (cpu0[i], cpu1[i]) {
                (Some(a), Some(b)) if window > 0.0 => Some((b - a) / window * 100.0),
                _ => None,
            },
            rss_mib: rss[i],
        })
        .collect();
    let system = match (cfg.flood, cfg.auth) {
        (true, _) => "plumcore --flood",
        (false, BlastAuth::None) => "plumcore",
        (false, BlastAuth::Mac) => "plumcore (MAC)",
        (false, BlastAuth::Aead) => "plumcore (AEAD)",
    };
    let shape = RunShape {
        cfg,
        system: system.into(),
        nodes: nodes.len(),
        shards_per_node: cfg.shards,
        window_s: window,
        overlay_degree_mean,
    };
    let report = ClusterReport {
        rmr: report::rmr(gossip_sent, &analysis.outcomes),
        ldh_mean: ldh.map(|l| l.0),
        ldh_max: ldh.map(|l| l.1),
        redundant_receptions: delta(&m0, &m1, "plumtree_messages_duplicate_total"),
        gossip_sent,
        ihave_sent: delta(&m0, &m1, "plumtree_ihave_sent_total"),
        graft_sent: delta(&m0, &m1, "plumtree_graft_sent_total"),
        prune_sent: delta(&m0, &m1, "plumtree_prune_sent_total"),
        graft_failed: delta(&m0, &m1, "plumtree_graft_failed_total"),
        ihave_dropped: delta(&m0, &m1, "plumtree_ihave_dropped_total"),
        cache_evictions: delta(&m0, &m1, "plumtree_cache_evictions_total"),
        membership_changes: [
            "plumtree_membership_promotions_total",
            "plumtree_membership_splices_total",
            "plumtree_membership_disconnects_total",
            "plumtree_membership_neighbor_failures_total",
        ]
        .iter()
        .map(|m| delta(&m0, &m1, m))
        .sum(),
        udp_rcvbuf_drops: drops0.zip(drops1).map(|(a, b)| b.saturating_sub(a)),
        metrics_only,
        shutdowns,
        ..ClusterReport::from_run(shape, measured.len(), refused, &analysis, per_node_figs)
    };
    Ok(ClusterRun {
        report,
        latency: analysis.latency,
    })
}

/// The one-line verdict on runs: `PASS: ...`, or `FAIL: <reason>` naming every
/// reason of every failed run (`run N:` when there are several).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub pass: bool,
    pub line: String,
}

/// Why `r` is not a clean run, in words; empty when it is. A clean run accepted at
/// least one broadcast, refused none, delivered every measured one to every node
/// exactly once, and every node it started exited 0 after SIGTERM with its shutdown
/// `completed`.
pub fn problems(r: &ClusterReport) -> Vec<String> {
    let mut out = Vec::new();
    if r.measured == 0 {
        out.push("no broadcast was accepted in the measured window".to_string());
    }
    if r.refused > 0 {
        out.push(format!("{} publishes refused", r.refused));
    }
    if r.reliability.mean < 1.0 {
        out.push(format!(
            "reliability {:.4} below 1 ({:.4} of broadcasts reached all {} nodes)",
            r.reliability.mean, r.reliability.atomic_fraction, r.nodes
        ));
    }
    if r.duplicate_deliveries > 0 {
        out.push(format!("{} duplicate deliveries", r.duplicate_deliveries));
    }
    for s in r.shutdowns.iter().filter(|s| !s.clean) {
        out.push(format!(
            "unclean shutdown of the node on {}: {}",
            s.admin, s.detail
        ));
    }
    out
}

/// The verdict over `reports` (one per run and mode).
pub fn verdict(reports: &[&ClusterReport]) -> Verdict {
    let several = reports.len() > 1;
    let failures: Vec<String> = reports
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            problems(r).into_iter().map(move |p| {
                if several {
                    format!("run {} ({}): {p}", i + 1, r.system)
                } else {
                    p
                }
            })
        })
        .collect();
    if reports.is_empty() {
        return Verdict {
            pass: false,
            line: "FAIL: no run completed".into(),
        };
    }
    if !failures.is_empty() {
        return Verdict {
            pass: false,
            line: format!("FAIL: {}", failures.join("; ")),
        };
    }
    let measured: u64 = reports.iter().map(|r| r.measured).sum();
    let stopped: usize = reports.iter().map(|r| r.shutdowns.len()).sum();
    let shutdowns = if stopped == 0 {
        "shutdowns not checked (running nodes)".to_string()
    } else {
        format!("{stopped} clean shutdowns")
    };
    Verdict {
        pass: true,
        line: format!(
            "PASS: {measured} measured broadcasts over {} run(s), each delivered once to every node (reliability 1, 0 duplicates, 0 refused, {shutdowns})",
            reports.len()
        ),
    }
}

fn progress_bar(cfg: &ClusterConfig) -> indicatif::ProgressBar {
    if !cfg.progress {
        return indicatif::ProgressBar::hidden();
    }
    let total = (cfg.warmup + cfg.duration).as_millis() as u64;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {percent:>3}% {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Sleeps until `started + until`, updating the bar with the publish count.
fn tick_until(bar: &indicatif::ProgressBar, started: Instant, until: Duration, p: &Publishing) {
    loop {
        let el = started.elapsed();
        bar.set_position(el.as_millis() as u64);
        bar.set_message(format!(
            "{} published, {} refused",
            p.sent.load(Ordering::Relaxed),
            p.refused.load(Ordering::Relaxed)
        ));
        if el >= until {
            return;
        }
        std::thread::sleep((until - el).min(Duration::from_millis(100)));
    }
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.digits$}"))
}

/// Rows of the readable table: (label, value) for each report, side by side.
pub fn table(reports: &[&ClusterReport]) -> String {
    type Row = (&'static str, fn(&ClusterReport) -> String);
    let rows: &[Row] = &[
        ("nodes x shards", |r| {
            format!("{} x {}", r.nodes, r.shards_per_node)
        }),
        ("overlay degree (mean)", |r| {
            format!("{:.2}", r.overlay_degree_mean)
        }),
        ("payload bytes", |r| r.payload_bytes.to_string()),
        ("target rate /s", |r| r.rate_target.to_string()),
        ("achieved rate /s", |r| format!("{:.0}", r.achieved_rate)),
        ("measured broadcasts", |r| r.measured.to_string()),
        ("refused", |r| r.refused.to_string()),
        ("latency p50 us", |r| format!("{:.0}", r.latency.p50_us)),
        ("latency p90 us", |r| format!("{:.0}", r.latency.p90_us)),
        ("latency p99 us", |r| format!("{:.0}", r.latency.p99_us)),
        ("latency p99.9 us", |r| format!("{:.0}", r.latency.p999_us)),
        ("latency max us", |r| format!("{:.0}", r.latency.max_us)),
        ("origin->node p50 us", |r| {
            format!("{:.0}", r.dissemination.p50_us)
        }),
        ("origin->node p99 us", |r| {
            format!("{:.0}", r.dissemination.p99_us)
        }),
        ("reliability", |r| format!("{:.4}", r.reliability.mean)),
        ("reached all nodes", |r| {
            format!("{:.4}", r.reliability.atomic_fraction)
        }),
        ("RMR", |r| fmt_opt(r.rmr, 3)),
        ("LDH mean", |r| fmt_opt(r.ldh_mean, 2)),
        ("LDH max", |r| fmt_opt(r.ldh_max.map(f64::from), 0)),
        ("duplicate deliveries", |r| {
            r.duplicate_deliveries.to_string()
        }),
        ("redundant receptions", |r| {
            r.redundant_receptions.to_string()
        }),
        ("gossip sent", |r| r.gossip_sent.to_string()),
        ("ihave sent", |r| r.ihave_sent.to_string()),
        ("grafts", |r| r.graft_sent.to_string()),
        ("prunes", |r| r.prune_sent.to_string()),
        ("grafts given up", |r| r.graft_failed.to_string()),
        ("ihave shed", |r| r.ihave_dropped.to_string()),
        ("cache evictions", |r| r.cache_evictions.to_string()),
        ("membership changes", |r| r.membership_changes.to_string()),
        ("kernel UDP rcvbuf drops", |r| {
            r.udp_rcvbuf_drops
                .map_or_else(|| "-".into(), |d| d.to_string())
        }),
        ("node CPU % (mean)", |r| {
            let v: Vec<f64> = r.per_node.iter().filter_map(|n| n.cpu_percent).collect();
            fmt_opt(
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64),
                1,
            )
        }),
        ("clean shutdowns", |r| {
            if r.shutdowns.is_empty() {
                "-".into()
            } else {
                let clean = r.shutdowns.iter().filter(|s| s.clean).count();
                format!("{clean} of {}", r.shutdowns.len())
            }
        }),
        ("node RSS MiB (max)", |r| {
            fmt_opt(
                r.per_node.iter().filter_map(|n| n.rss_mib).reduce(f64::max),
                1,
            )
        }),
    ];
    // Every column as wide as its widest cell, so that no value runs into the next.
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(_, f)| reports.iter().map(|r| f(r)).collect())
        .collect();
    let label_w = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let widths: Vec<usize> = reports
        .iter()
        .enumerate()
        .map(|(j, r)| {
            cells
                .iter()
                .map(|row| row[j].chars().count())
                .chain([r.system.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = format!("{:<label_w$}", "");
    for (r, w) in reports.iter().zip(&widths) {
        out.push_str(&format!("  {:>w$}", r.system));
    }
    out.push('\n');
    for ((label, _), row) in rows.iter().zip(&cells) {
        out.push_str(&format!("{label:<label_w$}"));
        for (c, w) in row.iter().zip(&widths) {
            out.push_str(&format!("  {c:>w$}"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean_report() -> ClusterReport {
        ClusterReport {
            system: "plumcore".into(),
            nodes: 3,
            measured: 100,
            reliability: Reliability {
                mean: 1.0,
                atomic_fraction: 1.0,
                min: 1.0,
            },
            shutdowns: vec![NodeShutdown {
                admin: "127.0.0.1:1".into(),
                clean: true,
                detail: "exited 0, shutdown completed".into(),
            }],
            ..ClusterReport::default()
        }
    }

    #[test]
    fn from_run_states_the_shape_and_the_shared_figures_and_leaves_the_rest() {
        let cfg = ClusterConfig {
            nodes: 3,
            ..ClusterConfig::default()
        };
        let outcome = |receivers| MessageOutcome {
            receivers,
            last_hop: None,
        };
        let analysis = Analysis {
            latency: report::latency_histogram(),
            dissemination: report::latency_histogram(),
            outcomes: vec![outcome(3), outcome(2)],
            duplicates: 1,
        };
        let r = ClusterReport::from_run(
            RunShape::full_mesh(&cfg, "nats-server", 0.5),
            2,
            4,
            &analysis,
            Vec::new(),
        );
        assert_eq!(
            (r.system.as_str(), r.nodes, r.shards_per_node),
            ("nats-server", 3, 1)
        );
        assert_eq!((r.measured, r.refused, r.duplicate_deliveries), (2, 4, 1));
        assert_eq!((r.duration_s, r.achieved_rate), (0.5, 4.0));
        assert_eq!(r.warmup_s, cfg.warmup.as_secs_f64());
        assert_eq!(r.overlay_degree_mean, 2.0);
        assert_eq!(r.reliability.atomic_fraction, 0.5);
        assert!((r.reliability.mean - 5.0 / 6.0).abs() < 1e-9);
        assert_eq!((r.rmr, r.gossip_sent, r.metrics_only), (None, 0, false));
    }

    #[test]
    fn a_clean_run_passes() {
        let r = clean_report();
        let v = verdict(&[&r]);
        assert!(v.pass, "{}", v.line);
        assert!(
            v.line.starts_with("PASS: 100 measured broadcasts"),
            "{}",
            v.line
        );
    }

    #[test]
    fn every_refused_publish_fails_even_with_reliability_one() {
        // Every publish refused: nothing measured, and reliability over no broadcast
        // is 1 (report::reliability); the old launcher passed this run.
        let r = ClusterReport {
            measured: 0,
            refused: 500,
            ..clean_report()
        };
        let v = verdict(&[&r]);
        assert!(!v.pass);
        assert!(v.line.starts_with("FAIL: "), "{}", v.line);
        assert!(v.line.contains("500 publishes refused"), "{}", v.line);
        assert!(v.line.contains("no broadcast was accepted"), "{}", v.line);
    }

    #[test]
    fn loss_duplicates_and_unclean_shutdowns_each_fail() {
        let lossy = ClusterReport {
            reliability: Reliability {
                mean: 0.99,
                atomic_fraction: 0.97,
                min: 0.5,
            },
            ..clean_report()
        };
        assert!(verdict(&[&lossy])
            .line
            .contains("reliability 0.9900 below 1"));
        let dup = ClusterReport {
            duplicate_deliveries: 2,
            ..clean_report()
        };
        assert!(verdict(&[&dup]).line.contains("2 duplicate deliveries"));
        let unclean = ClusterReport {
            shutdowns: vec![NodeShutdown {
                admin: "127.0.0.1:9".into(),
                clean: false,
                detail: "did not exit after SIGTERM and was killed".into(),
            }],
            ..clean_report()
        };
        let v = verdict(&[&clean_report(), &unclean]);
        assert!(!v.pass);
        assert_eq!(
            v.line,
            "FAIL: run 2 (plumcore): unclean shutdown of the node on 127.0.0.1:9: did not exit after SIGTERM and was killed"
        );
        assert!(!verdict(&[]).pass);
    }

    #[test]
    fn table_columns_line_up_whatever_the_widths() {
        let a = ClusterReport {
            gossip_sent: 8699,
            ..clean_report()
        };
        let b = ClusterReport {
            system: "a system with a long name".into(),
            gossip_sent: 12_345_678_901,
            ..clean_report()
        };
        let t = table(&[&a, &b]);
        let lines: Vec<&str> = t.lines().collect();
        let width = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == width), "{t}");
        let gossip = lines.iter().find(|l| l.starts_with("gossip sent")).unwrap();
        let cells: Vec<&str> = gossip.split_whitespace().collect();
        assert_eq!(cells, ["gossip", "sent", "8699", "12345678901"], "{gossip}");
        assert!(!gossip.contains('.'), "counters are integers: {gossip}");
        let label = lines
            .iter()
            .find(|l| l.starts_with("kernel UDP rcvbuf drops"))
            .unwrap();
        assert!(label.starts_with("kernel UDP rcvbuf drops  "), "{label}");
    }

    #[test]
    fn stamp_round_trips_and_needs_sixteen_bytes() {
        let s = Stamp {
            publisher: 3,
            send_ns: 1_700_000_000_123_456_789,
        };
        let mut p = vec![0u8; 64];
        s.write(&mut p);
        assert_eq!(Stamp::read(&p), Some(s));
        assert_eq!(Stamp::read(&p[..15]), None);
    }

    #[test]
    fn analyse_counts_receivers_duplicates_and_skips_origin_latency() {
        let a = Stamp {
            publisher: 0,
            send_ns: 1_000,
        };
        let b = Stamp {
            publisher: 1,
            send_ns: 2_000,
        };
        let measured: HashSet<Stamp> = [a, b].into_iter().collect();
        let node = |entries: &[(Stamp, u32, u32, u64)]| NodeDeliveries {
            seen: entries
                .iter()
                .map(|&(s, n, h, t)| (s, (n, Some(h), t)))
                .collect(),
        };
        let per_node = vec![
            node(&[(a, 1, 0, 1_500), (b, 1, 2, 9_000)]),
            node(&[(a, 2, 1, 3_000)]),
            node(&[(a, 1, 3, 5_000), (b, 1, 0, 2_100)]),
        ];
        let an = analyse(&per_node, &measured);
        assert_eq!(an.duplicates, 1);
        // Latencies of hops > 0 only: a at 2000 and 4000 ns, b at 7000 ns.
        let hist = &an.latency;
        assert_eq!(hist.len(), 3);
        assert_eq!(hist.max(), hist.highest_equivalent(7_000));
        // From the origin's delivery: a at 1500 and 3500 ns, b at 6900 ns.
        let d = &an.dissemination;
        assert_eq!(d.len(), 3);
        assert_eq!(d.min(), d.lowest_equivalent(1_500));
        assert_eq!(d.max(), d.highest_equivalent(6_900));
        let mut o = an.outcomes;
        o.sort_by_key(|o| o.last_hop);
        assert_eq!(
            o,
            vec![
                MessageOutcome {
                    receivers: 2,
                    last_hop: Some(2)
                },
                MessageOutcome {
                    receivers: 3,
                    last_hop: Some(3)
                },
            ]
        );
        let r = report::reliability(&o, 3);
        assert!((r.mean - 5.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn read_deliveries_keeps_measured_stamped_lines() {
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.ndjson");
        let b64 = base64::engine::general_purpose::STANDARD;
        let s = Stamp {
            publisher: 1,
            send_ns: 77,
        };
        let mut p = vec![0u8; 20];
        s.write(&mut p);
        let other = {
            let mut q = p.clone();
            q[8] = 99;
            q
        };
        let text = format!(
            "{{\"hops\":2,\"payload_b64\":\"{}\",\"t_ns\":100}}\n\
             {{\"hops\":2,\"payload_b64\":\"{}\",\"t_ns\":100}}\n\
             {{\"payload_b64\":\"{}\",\"t_ns\":150}}\n\
             {{\"payload_b64\":\"AAAA",
            b64.encode(&p),
            b64.encode(&other),
            b64.encode(&p)
        );
        std::fs::write(&path, text).unwrap();
        let measured: HashSet<Stamp> = [s].into_iter().collect();
        let d = read_deliveries(&path, &measured).unwrap();
        assert_eq!(d.seen.len(), 1);
        assert_eq!(d.seen[&s], (2, Some(2), 100));
        // A complete line the node never writes is an error, not a skipped line.
        std::fs::write(&path, "not json\n").unwrap();
        assert!(read_deliveries(&path, &measured).is_err());
    }
}
