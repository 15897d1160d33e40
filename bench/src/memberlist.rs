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
    analyse, read_deliveries, ClusterConfig, ClusterReport, ClusterRun, NodeFigures, RunShape,
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
    let analysis = analyse(&per_node, &measured);
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
    // What is not set here stays 0, None or empty: this binary reports no LDH, no
    // redundancy, Graft failure, shed IHave, eviction or churn counters, and runs one
    // in-process program, so there are no node processes to stop.
    let report = ClusterReport {
        rmr: r
            .gossip_sent
            .and_then(|g| report::rmr(g.max(0.0) as u64, &analysis.outcomes)),
        gossip_sent: count(r.gossip_sent),
        ihave_sent: count(r.ihave_sent),
        graft_sent: count(r.graft_sent),
        prune_sent: count(r.prune_sent),
        udp_rcvbuf_drops: drops0.zip(drops1).map(|(a, b)| b.saturating_sub(a)),
        ..ClusterReport::from_run(
            RunShape::full_mesh(cfg, "memberlist-plumtree", window),
            measured.len(),
            r.refused,
            &analysis,
            per_node_figs,
        )
    };
    Ok(ClusterRun {
        report,
        latency: analysis.latency,
    })
}

/// A counter the comparator reports as a JSON number, as the whole number it is.
fn count(v: Option<f64>) -> u64 {
    v.map_or(0, |x| x.round().max(0.0) as u64)
}
