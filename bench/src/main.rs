//! `plumcore-bench`: the bundled load generator.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use plumcore_bench::blast::{self, BlastConfig, BlastReport};

#[derive(Parser)]
#[command(
    name = "plumcore-bench",
    about = "plumcore load generator and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Blast one node's shard with Gossip datagrams, next to a raw UDP
    /// receive-and-forward loop measured in the same run.
    Blast {
        /// Measured seconds per run (after the warm-up).
        #[arg(long, default_value_t = 5)]
        duration: u64,
        /// Payload bytes per message.
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Gossip frames per datagram.
        #[arg(long, default_value_t = 16)]
        frames: usize,
        /// Simulated neighbours.
        #[arg(long, default_value_t = 4)]
        peers: usize,
        /// Runs; the medians are reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Write every run and the medians as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

fn machine() -> serde_json::Value {
    let topo = core_pinning::Topology::detect();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    serde_json::json!({
        "cores": topo.online().len(),
        "cpu_model": topo.cpu_model(),
        "kernel": kernel.trim(),
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().command {
        Cmd::Blast {
            duration,
            payload,
            frames,
            peers,
            runs,
            json,
        } => {
            let cores = core_pinning::Topology::detect().online().len();
            let cfg = BlastConfig {
                duration: Duration::from_secs(duration),
                warmup: Duration::from_secs(1),
                payload,
                frames_per_datagram: frames.max(1),
                peers: peers.max(1),
                shard_core: (cores >= 2).then_some(1),
                control_core: (cores >= 2).then_some(0),
            };
            let mut reports: Vec<BlastReport> = Vec::new();
            println!(
                "{:>4} {:>14} {:>12} {:>12} {:>14} {:>14} {:>8}",
                "run",
                "plumcore msg/s",
                "dgram in/s",
                "dgram out/s",
                "offered msg/s",
                "raw pkt/s",
                "ratio"
            );
            for r in 0..runs.max(1) {
                let rep = blast::run(&cfg);
                println!(
                    "{:>4} {:>14.0} {:>12.0} {:>12.0} {:>14.0} {:>14.0} {:>8.2}",
                    r + 1,
                    rep.plumcore_msgs_per_s,
                    rep.plumcore_datagrams_in_per_s,
                    rep.plumcore_datagrams_out_per_s,
                    rep.offered_msgs_per_s,
                    rep.raw_packets_per_s,
                    rep.ratio_vs_raw
                );
                reports.push(rep);
            }
            let med = |f: fn(&BlastReport) -> f64| median(reports.iter().map(f).collect());
            let summary = serde_json::json!({
                "machine": machine(),
                "payload": payload,
                "frames_per_datagram": frames,
                "peers": peers,
                "runs": reports,
                "median_plumcore_msgs_per_s": med(|r| r.plumcore_msgs_per_s),
                "median_raw_packets_per_s": med(|r| r.raw_packets_per_s),
                "median_ratio_vs_raw": med(|r| r.ratio_vs_raw),
            });
            println!(
                "median: plumcore {:.0} msg/s per shard, raw loop {:.0} pkt/s, ratio {:.2}",
                summary["median_plumcore_msgs_per_s"]
                    .as_f64()
                    .unwrap_or(0.0),
                summary["median_raw_packets_per_s"].as_f64().unwrap_or(0.0),
                summary["median_ratio_vs_raw"].as_f64().unwrap_or(0.0)
            );
            if let Some(path) = json {
                std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
            }
        }
    }
    Ok(())
}
