//! The cluster workload on a nats-server cluster: what a user would pick instead of
//! plumcore. `nodes` nats-server processes (Debian's `nats-server` package) on
//! 127.0.0.1 with full-mesh routes, the same async-nats publishers plumcore gets
//! (round-robin over the servers), and one subscriber per server whose receive time
//! is the delivery time.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_lite::StreamExt;
use plumcore::harness::process::NodeProcess;

use crate::cluster::{
    analyse, unix_nanos, ClusterConfig, ClusterReport, ClusterRun, NodeDeliveries, NodeFigures,
    RunShape, Stamp, BENCH_SUBJECT,
};
use crate::machine;

/// How to install the server when it is missing.
pub const INSTALL_HINT: &str = "install it with `apt-get install nats-server` (Debian/Ubuntu)";

/// The `nats-server` binary: `$NATS_SERVER_BIN`, else the first on `PATH`.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    })
}

fn free_tcp() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Starts `n` routed servers (each killed on drop); returns them with their client
/// addresses.
fn start(n: usize) -> Result<(Vec<NodeProcess>, Vec<SocketAddr>)> {
    let bin = binary().with_context(|| format!("nats-server not found: {INSTALL_HINT}"))?;
    let clients: Vec<SocketAddr> = (0..n).map(|_| free_tcp()).collect::<Result<_>>()?;
    let routes: Vec<SocketAddr> = (0..n).map(|_| free_tcp()).collect::<Result<_>>()?;
    let mut servers = Vec::new();
    for i in 0..n {
        let others: Vec<String> = routes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, r)| format!("nats://{r}"))
            .collect();
        let child = Command::new(&bin)
            .args(["-a", "127.0.0.1", "-p", &clients[i].port().to_string()])
            .args(["--name", &format!("bench-{i}"), "--cluster_name", "bench"])
            .args(["--cluster", &format!("nats://{}", routes[i])])
            .args(["--routes", &others.join(",")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        servers.push(NodeProcess::new(child));
    }
    let t = Instant::now();
    for a in &clients {
        while TcpStream::connect(a).is_err() {
            if t.elapsed() > Duration::from_secs(10) {
                bail!("nats-server on {a} did not accept connections within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok((servers, clients))
}

/// Subscribers, one per server, recording (stamp, receive time) until `stop`.
type Received = Arc<Mutex<Vec<Vec<(Stamp, u64)>>>>;

fn start_subscribers(
    clients: &[SocketAddr],
    stop: Arc<AtomicBool>,
    ready: Arc<AtomicBool>,
) -> (std::thread::JoinHandle<()>, Received) {
    let received: Received = Arc::new(Mutex::new(vec![Vec::new(); clients.len()]));
    let (addrs, got) = (clients.to_vec(), received.clone());
    let t = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let mut subs = Vec::new();
            for a in &addrs {
                let Ok(c) = async_nats::connect(a.to_string()).await else {
                    return;
                };
                let Ok(s) = c.subscribe(BENCH_SUBJECT).await else {
                    return;
                };
                let _ = c.flush().await;
                subs.push((c, s));
            }
            ready.store(true, Ordering::Relaxed);
            let tasks: Vec<_> = subs
                .into_iter()
                .enumerate()
                .map(|(i, (_c, mut s))| {
                    let (got, stop) = (got.clone(), stop.clone());
                    tokio::spawn(async move {
                        let _keep = _c;
                        let mut mine = Vec::new();
                        while !stop.load(Ordering::Relaxed) {
                            match tokio::time::timeout(Duration::from_millis(100), s.next()).await {
                                Ok(Some(m)) => {
                                    if let Some(st) = Stamp::read(&m.payload) {
                                        mine.push((st, unix_nanos()));
                                    }
                                }
                                Ok(None) => break,
                                Err(_) => {}
                            }
                        }
                        got.lock().expect("subscriber lock")[i] = mine;
                    })
                })
                .collect();
            for t in tasks {
                let _ = t.await;
            }
        });
    });
    (t, received)
}

/// Runs the workload on a nats-server cluster.
pub fn run(cfg: &ClusterConfig) -> Result<ClusterRun> {
    let (servers, clients) = start(cfg.nodes)?;
    // Routes take a moment to form; the warm-up publishes through them before the
    // measured window starts.
    std::thread::sleep(Duration::from_millis(500));
    let stop_subs = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicBool::new(false));
    let (sub_thread, received) = start_subscribers(&clients, stop_subs.clone(), ready.clone());
    let t = Instant::now();
    while !ready.load(Ordering::Relaxed) {
        if t.elapsed() > Duration::from_secs(10) || sub_thread.is_finished() {
            bail!("nats-server subscribers did not connect within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let warm = crate::cluster::start_nats_publishers(
        &clients,
        cfg.rate,
        cfg.publishers,
        cfg.payload,
        stop.clone(),
    );
    std::thread::sleep(cfg.warmup);
    stop.store(true, Ordering::Relaxed);
    let mut refused = warm.refused.load(Ordering::Relaxed);
    for t in warm.threads {
        let _ = t.join();
    }
    std::thread::sleep(Duration::from_millis(300));
    let cpu0: Vec<Option<f64>> = servers
        .iter()
        .map(|c| machine::cpu_seconds(c.id()))
        .collect();
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = crate::cluster::start_nats_publishers(
        &clients,
        cfg.rate,
        cfg.publishers,
        cfg.payload,
        stop.clone(),
    );
    std::thread::sleep(cfg.duration);
    stop.store(true, Ordering::Relaxed);
    let window = t0.elapsed().as_secs_f64();
    refused += publishing.refused.load(Ordering::Relaxed);
    for t in publishing.threads {
        let _ = t.join();
    }
    let cpu1: Vec<Option<f64>> = servers
        .iter()
        .map(|c| machine::cpu_seconds(c.id()))
        .collect();
    let rss: Vec<Option<f64>> = servers.iter().map(|c| machine::rss_mib(c.id())).collect();
    let measured: HashSet<Stamp> = publishing
        .accepted
        .lock()
        .expect("publisher lock")
        .iter()
        .copied()
        .collect();
    // Drain: 2 s for the last deliveries to reach the subscribers.
    std::thread::sleep(Duration::from_secs(2));
    stop_subs.store(true, Ordering::Relaxed);
    let _ = sub_thread.join();
    drop(servers);
    let got = std::mem::take(&mut *received.lock().expect("subscriber lock"));
    let per_node: Vec<NodeDeliveries> = got
        .into_iter()
        .map(|recs| {
            let mut d = NodeDeliveries::default();
            for (st, t_ns) in recs {
                if measured.contains(&st) {
                    d.seen.entry(st).or_insert((0, None, t_ns)).0 += 1;
                }
            }
            d
        })
        .collect();
    let analysis = analyse(&per_node, &measured);
    let per_node_figs = per_node
        .iter()
        .enumerate()
        .map(|(i, d)| NodeFigures {
            admin: clients[i].to_string(),
            delivered: d.seen.len() as u64,
            cpu_percent: cpu0[i]
                .zip(cpu1[i])
                .map(|(a, b)| 100.0 * (b - a) / window.max(1e-9)),
            rss_mib: rss[i],
        })
        .collect();
    let report = ClusterReport::from_run(
        RunShape::full_mesh(cfg, "nats-server", window),
        measured.len(),
        refused,
        &analysis,
        per_node_figs,
    );
    Ok(ClusterRun {
        report,
        latency: analysis.latency,
    })
}
