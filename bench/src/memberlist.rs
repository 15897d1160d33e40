//! The memberlist-plumtree column of `compare`. memberlist-plumtree's dependency tree
//! (tokio, QUIC, memberlist) is too heavy for the workspace build, so it lives in the
//! bench-only crate `bench/compare-memberlist` (its own lockfile, not a workspace
//! member). Its binary runs the same workload in one process (N nodes on 127.0.0.1,
//! K publishers, payloads stamped like `cluster`'s) and writes one deliveries file per
//! node plus `result.json`; this module runs it and reports with the same arithmetic.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::cluster::{
    analyse, read_deliveries, Analysis, ClusterConfig, ClusterReport, ClusterRun, NodeFigures,
    Stamp,
};
use crate::report;

/// The binary's `result.json`.
#[derive(Debug, Deserialize)]
struct RunResult {
    /// Every accepted broadcast: (publisher, send time in Unix ns).
    published: Vec<(u64, u64)>,
    refused: u64,
    warm_end_ns: u64,
    end_ns: u64,
    /// Payload-carrying messages sent in the measured window (for RMR).
    gossip_sent: Option<f64>,
    ihave_sent: Option<f64>,
    graft_sent: Option<f64>,
    prune_sent: Option<f64>,
    /// Whole process (all N nodes), percent of one core over the measured window.
    cpu_percent: Option<f64>,
    rss_mib: Option<f64>,
}

/// The bench-only binary: `$MEMBERLIST_BENCH_BIN`, next to this executable, or in the
/// crate's own target directory.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MEMBERLIST_BENCH_BIN") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let name = "compare-memberlist";
    let near = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.join(name)));
    let own = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("compare-memberlist/target/release")
        .join(name);
    [near, Some(own)]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
}

/// How to build the binary, for the error message.
pub const BUILD_HINT: &str =
    "build it with `cargo build --release --manifest-path bench/compare-memberlist/Cargo.toml` \
     (or point MEMBERLIST_BENCH_BIN at it)";

/// Runs the workload on memberlist-plumtree.
pub fn run(cfg: &ClusterConfig) -> Result<ClusterRun> {
    let Some(bin) = binary() else {
        bail!("the memberlist-plumtree bench binary is not built: {BUILD_HINT}");
    };
    let dir = tempfile::tempdir()?;
    // Host-wide, over the whole child run (its window is not visible from here).
    let drops0 = crate::machine::udp_rcvbuf_errors();
    let mut child = Command::new(&bin)
        .args(["--nodes", &cfg.nodes.to_string()])
        .args(["--rate", &cfg.rate.to_string()])
        .args(["--publishers", &cfg.publishers.to_string()])
        .args(["--warmup-ms", &cfg.warmup.as_millis().to_string()])
        .args(["--duration-ms", &cfg.duration.as_millis().to_string()])
        .args(["--payload", &cfg.payload.to_string()])
        .arg("--out")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let limit = cfg.warmup + cfg.duration + Duration::from_secs(90);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{} did not finish within {limit:?}", bin.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        bail!("{} failed ({status})", bin.display());
    }
    let drops1 = crate::machine::udp_rcvbuf_errors();
    let r: RunResult = serde_json::from_slice(
        &std::fs::read(dir.path().join("result.json")).context("reading result.json")?,
    )
    .context("parsing result.json")?;
    let measured: HashSet<Stamp> = r
        .published
        .iter()
        .map(|&(publisher, send_ns)| Stamp { publisher, send_ns })
        .filter(|s| s.send_ns >= r.warm_end_ns && s.send_ns < r.end_ns)
        .collect();
    let per_node: Vec<_> = (0..cfg.nodes)
        .map(|i| read_deliveries(&dir.path().join(format!("node{i}.ndjson")), &measured))
        .collect::<Result<_>>()?;
    let Analysis {
        latency,
        dissemination,
        outcomes,
        duplicates: dups,
    } = analyse(&per_node, &measured);
    let window = (r.end_ns.saturating_sub(r.warm_end_ns)) as f64 / 1e9;
    let per_node_figs = per_node
        .iter()
        .enumerate()
        .map(|(i, d)| NodeFigures {
            admin: format!("in-process node {i}"),
            delivered: d.seen.len() as u64,
            // One process hosts every node: its CPU is shared out evenly.
            cpu_percent: r.cpu_percent.map(|c| c / cfg.nodes as f64),
            rss_mib: r.rss_mib.map(|m| m / cfg.nodes as f64),
        })
        .collect();
    let report = ClusterReport {
        system: "memberlist-plumtree".into(),
        nodes: cfg.nodes,
        shards_per_node: 1,
        payload_bytes: cfg.payload,
        publishers: cfg.publishers,
        rate_target: cfg.rate,
        warmup_s: cfg.warmup.as_secs_f64(),
        duration_s: window,
        measured: measured.len() as u64,
        refused: r.refused,
        achieved_rate: measured.len() as f64 / window.max(1e-9),
        latency: report::percentiles(&latency),
        dissemination: report::percentiles(&dissemination),
        reliability: report::reliability(&outcomes, cfg.nodes as u32),
        rmr: r
            .gossip_sent
            .and_then(|g| report::rmr(g.max(0.0) as u64, &outcomes)),
        ldh_mean: None,
        ldh_max: None,
        duplicate_deliveries: dups,
        redundant_receptions: 0,
        gossip_sent: count(r.gossip_sent),
        ihave_sent: count(r.ihave_sent),
        graft_sent: count(r.graft_sent),
        prune_sent: count(r.prune_sent),
        graft_failed: 0,
        ihave_dropped: 0,
        cache_evictions: 0,
        membership_changes: 0,
        per_node: per_node_figs,
        udp_rcvbuf_drops: drops0.zip(drops1).map(|(a, b)| b.saturating_sub(a)),
        // Static membership: every node adds every other.
        overlay_degree_mean: cfg.nodes.saturating_sub(1) as f64,
        metrics_only: false,
        // One in-process program: no node processes to stop.
        shutdowns: Vec::new(),
    };
    Ok(ClusterRun { report, latency })
}

/// A counter the comparator reports as a JSON number, as the whole number it is.
fn count(v: Option<f64>) -> u64 {
    v.map_or(0, |x| x.round().max(0.0) as u64)
}
