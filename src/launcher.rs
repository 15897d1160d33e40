//! `plumcore cluster`: starts N `plumcore node` processes on 127.0.0.1 joined through
//! the first one, publishes at a steady rate through `POST /broadcast` on random nodes,
//! and reports what every node delivered (from their `--deliveries` files) and what
//! the protocol sent (from their `/metrics`). The README's main job.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

/// Flags of `plumcore cluster`.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// Node processes to start.
    #[arg(long, default_value_t = 5)]
    pub nodes: usize,
    /// Shards per node.
    #[arg(long, default_value_t = 1)]
    pub shards: u16,
    /// Broadcasts per second, over all nodes.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Payload bytes per broadcast.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

struct Proc {
    child: Child,
    admin: SocketAddr,
    deliveries: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_tcp() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn http_json(url: &str) -> Option<serde_json::Value> {
    ureq::get(url)
        .timeout(Duration::from_secs(2))
        .call()
        .ok()?
        .into_json()
        .ok()
}

fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| {
            let rest = &l[name.len()..];
            rest.starts_with(' ') || rest.starts_with('{')
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// id -> (times delivered, hops of the first delivery)
fn read_deliveries(path: &Path) -> HashMap<String, (u32, u64)> {
    let mut m = HashMap::new();
    let Ok(f) = std::fs::File::open(path) else {
        return m;
    };
    for line in BufReader::new(f).lines().map_while(|l| l.ok()) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let (Some(id), Some(hops)) = (v["id"].as_str(), v["hops"].as_u64()) else {
            continue;
        };
        m.entry(id.to_string()).or_insert((0, hops)).0 += 1;
    }
    m
}

/// Runs the whole scenario; returns the process exit code.
pub fn run(a: ClusterArgs) -> Result<()> {
    if a.nodes < 2 || a.shards == 0 || a.rate == 0 || a.payload == 0 {
        bail!("invalid argument: need --nodes >= 2, --shards >= 1, --rate >= 1, --payload >= 1");
    }
    let exe = std::env::current_exe().context("locating the plumcore binary")?;
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let salt = u64::from(std::process::id()) << 20 ^ Instant::now().elapsed().as_nanos() as u64;
    let mut taken = Vec::new();
    let mut procs: Vec<Proc> = Vec::new();
    let mut seed: Option<SocketAddr> = None;
    for i in 0..a.nodes {
        let base = plumcore::ports::free_udp_run(a.shards + 1, &mut taken)?;
        let bind: SocketAddr = format!("127.0.0.1:{base}").parse()?;
        let admin = free_tcp()?;
        let deliveries = dir.path().join(format!("node{i}.ndjson"));
        let mut cmd = Command::new(&exe);
        cmd.arg("node")
            .args(["--node-id", &(i + 1).to_string()])
            .args(["--bind", &bind.to_string()])
            .args(["--admin", &admin.to_string()])
            // The main job publishes over HTTP; five nodes cannot share port 4222.
            .args(["--client-listen", "off"])
            .args(["--shards", &a.shards.to_string()])
            .args(["--deliveries", deliveries.to_str().context("temp path")?])
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(s) = seed {
            cmd.args(["--seed", &s.to_string()]);
        }
        let child = cmd.spawn().context("starting a plumcore node")?;
        seed.get_or_insert(bind);
        procs.push(Proc {
            child,
            admin,
            deliveries,
        });
    }
    eprintln!(
        "cluster: {} nodes started, waiting for them to join",
        a.nodes
    );
    let t = Instant::now();
    loop {
        let joined = procs
            .iter()
            .filter(|p| {
                http_json(&format!("http://{}/peers", p.admin))
                    .is_some_and(|v| v.as_array().is_some_and(|l| !l.is_empty()))
            })
            .count();
        if joined == procs.len() {
            break;
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("only {joined} of {} nodes joined within 30 s", procs.len());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let total = a.rate as u64 * a.duration;
    eprintln!(
        "cluster: publishing {total} messages at {}/s for {} s",
        a.rate, a.duration
    );
    let gap = Duration::from_secs_f64(1.0 / a.rate as f64);
    let start = Instant::now();
    let mut x = salt | 1;
    let (mut accepted, mut refused) = (0u64, 0u64);
    for k in 0..total {
        let due = start + gap * k as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let node = (x % procs.len() as u64) as usize;
        let mut payload = vec![b'.'; a.payload];
        for (b, d) in payload.iter_mut().zip(k.to_le_bytes()) {
            *b = d;
        }
        let url = format!("http://{}/broadcast", procs[node].admin);
        match ureq::post(&url)
            .timeout(Duration::from_secs(2))
            .send_bytes(&payload)
        {
            Ok(_) => accepted += 1,
            Err(_) => refused += 1,
        }
    }
    let publish_secs = start.elapsed().as_secs_f64();
    // Wait until every node has every accepted message, or 15 s.
    let t = Instant::now();
    let mut per_node;
    loop {
        per_node = procs
            .iter()
            .map(|p| read_deliveries(&p.deliveries))
            .collect::<Vec<_>>();
        let complete = per_node.iter().all(|d| d.len() as u64 >= accepted);
        if complete || t.elapsed() > Duration::from_secs(15) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Shards publish counters every 250 ms: let the last ones land before scraping.
    std::thread::sleep(Duration::from_millis(600));
    let metrics: Vec<String> = procs
        .iter()
        .map(|p| {
            ureq::get(&format!("http://{}/metrics", p.admin))
                .call()
                .ok()
                .and_then(|r| r.into_string().ok())
                .unwrap_or_default()
        })
        .collect();
    let sum = |name: &str| metrics.iter().map(|m| metric_sum(m, name)).sum::<f64>();
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let (mut deliveries, mut dups, mut hops_sum, mut hops_max) = (0u64, 0u64, 0u64, 0u64);
    for d in &per_node {
        for (id, (n, hops)) in d {
            *ids.entry(id).or_default() += 1;
            deliveries += 1;
            dups += u64::from(n - 1);
            hops_sum += hops;
            hops_max = hops_max.max(*hops);
        }
    }
    let reliability = if accepted == 0 {
        1.0
    } else {
        deliveries as f64 / (accepted as f64 * procs.len() as f64)
    };
    let gossip = sum("plumtree_gossip_sent_total");
    let report = serde_json::json!({
        "nodes": a.nodes,
        "shards_per_node": a.shards,
        "payload_bytes": a.payload,
        "rate_target": a.rate,
        "published": accepted,
        "refused": refused,
        "publish_seconds": publish_secs,
        "deliveries": deliveries,
        "reliability": reliability,
        "duplicate_deliveries": dups,
        "mean_hops": if deliveries == 0 { 0.0 } else { hops_sum as f64 / deliveries as f64 },
        "max_hops": hops_max,
        "gossip_sent": gossip,
        "rmr": if accepted == 0 { 0.0 } else { gossip / (accepted as f64 * (a.nodes as f64 - 1.0)) - 1.0 },
        "ihave_sent": sum("plumtree_ihave_sent_total"),
        "graft_sent": sum("plumtree_graft_sent_total"),
        "prune_sent": sum("plumtree_prune_sent_total"),
        "decode_errors": sum("plumtree_decode_errors_total"),
    });
    for p in &procs {
        let _ = Command::new("kill")
            .args(["-TERM", &p.child.id().to_string()])
            .status();
    }
    let mut clean = 0;
    for p in &mut procs {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(s)) = p.child.try_wait() {
                if s.success() {
                    clean += 1;
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{:<24}{:>16}", "metric", "value");
        if let Some(obj) = report.as_object() {
            for (k, v) in obj {
                println!("{k:<24}{v:>16}");
            }
        }
        println!("{:<24}{:>16}", "clean_shutdowns", clean);
    }
    if reliability < 1.0 || dups > 0 {
        bail!("cluster run lost or duplicated messages");
    }
    Ok(())
}
