//! `plumcore-bench` (also `plumcore bench ...`): the bundled load generator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use plumcore_bench::blast::{self, BlastAuth, BlastConfig, BlastReport};
use plumcore_bench::cluster::{self, ClusterConfig};
use plumcore_bench::compare::{self, System};
use plumcore_bench::report::median;
use plumcore_bench::{idle, machine, memberlist, nodes, plot, scale, soak};

#[derive(Parser)]
#[command(
    name = "plumcore-bench",
    about = "plumcore load generator and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// Flags every subcommand takes.
#[derive(Args, Clone, Debug)]
struct Common {
    /// Measured time per run, after the warm-up (e.g. `10s`, `500ms`; a bare number is
    /// seconds).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Write every figure and the machine description as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw the latency distribution (cluster, compare) or the scaling curve (scale)
    /// as SVG.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

/// Flags of a local cluster's shape and load (`cluster`, `compare` and `soak`).
#[derive(Args, Clone, Debug)]
struct ClusterShape {
    /// Node processes to start on 127.0.0.1.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Shards per node.
    #[arg(long, default_value_t = 1)]
    shards: u16,
    /// Broadcasts per second over the whole cluster.
    #[arg(long, default_value_t = 500)]
    rate: u32,
}

/// Flags of the cluster workload (`cluster` and `compare`).
#[derive(Args, Clone, Debug)]
struct Workload {
    #[command(flatten)]
    shape: ClusterShape,
    /// Publisher threads (each POSTs to the nodes round-robin).
    #[arg(long, default_value_t = 2)]
    publishers: usize,
    /// Publishing time before the measured window, excluded from every figure.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    warmup: Duration,
    /// How publishers reach plumcore: `nats` (each node's client port, async-nats)
    /// or `http` (one POST /broadcast per message).
    #[arg(long, value_enum, default_value = "nats")]
    publish: plumcore_bench::cluster::PublishVia,
}

/// Flags of the blast load (`blast` and `scale`).
#[derive(Args, Clone, Debug)]
struct BlastLoad {
    /// Gossip frames per datagram.
    #[arg(long, default_value_t = 16)]
    frames: usize,
    /// Simulated neighbours.
    #[arg(long, default_value_t = 4)]
    peers: usize,
    /// Run the node with the test-only fault layer in place (every rate zero).
    #[arg(long)]
    chaos: bool,
    /// Run the node with the per-source flood limiter on (at a limit never reached).
    #[arg(long)]
    rate_limit: bool,
    /// Send every datagram as its own message (no UDP GSO); sets PLUMCORE_UDP_GSO=0.
    #[arg(long)]
    no_gso: bool,
    /// Datagram protection to measure: none, mac (cluster_key_file), aead
    /// (cluster_encrypt); a list (`--auth none,mac,aead`) measures each in the same
    /// run and compares them with the first.
    #[arg(long, value_delimiter = ',', default_value = "none")]
    auth: Vec<BlastAuth>,
}

impl BlastLoad {
    /// The blast of one unpinned shard with no raw baseline; `duration` unless
    /// `--duration` says otherwise.
    fn config(&self, common: &Common, duration: Duration) -> BlastConfig {
        BlastConfig {
            duration: common.duration.unwrap_or(duration),
            warmup: Duration::from_secs(1),
            payload: common.payload,
            frames_per_datagram: self.frames.max(1),
            peers: self.peers.max(1),
            shard_cores: vec![None],
            control_core: None,
            raw: false,
            chaos: self.chaos,
            rate_limit: self.rate_limit,
            auth: self.auth.first().copied().unwrap_or_default(),
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Blast one node's shard with Gossip datagrams, next to a raw UDP
    /// receive-and-forward loop measured in the same run.
    Blast {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        load: BlastLoad,
        /// Runs; the medians are reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// What an idle node costs: CPU (% of a core, from /proc/PID/stat), RSS and
    /// shard wake-ups per second, for each shard count, over --duration (10 s).
    Idle {
        #[command(flatten)]
        common: Common,
        /// Shard counts to measure (comma separated).
        #[arg(long, value_delimiter = ',', default_values_t = [1u16, 2])]
        shards: Vec<u16>,
        /// Runs per shard count; the medians are reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Idle time after start-up before the measured window.
        #[arg(long, value_parser = parse_duration, default_value = "3s")]
        settle: Duration,
    },
    /// A local cluster under a steady publish load: latency, reliability, RMR, LDH,
    /// control traffic, CPU and RSS. With no flags: 5 nodes, 500/s, 2 s + 8 s.
    Cluster {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        workload: Workload,
        /// Target running nodes by admin address instead of starting local ones
        /// (repeatable); figures then come from /metrics only (no latency).
        #[arg(long = "admin", value_name = "IP:PORT")]
        admins: Vec<SocketAddr>,
        /// Run the nodes in flood mode (eager push to every neighbour).
        #[arg(long)]
        flood: bool,
        /// Runs; the table shows each, the JSON holds the medians too.
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Datagram protection of the local nodes: none, mac (cluster_key_file), aead
        /// (cluster_encrypt); a list (`--auth none,mac,aead`) runs each mode in turn,
        /// run by run, and compares their medians with the first.
        #[arg(long, value_delimiter = ',', default_value = "none")]
        auth: Vec<BlastAuth>,
        /// Exit 1 when the verdict is FAIL: reliability below 1, a duplicate delivery,
        /// a refused publish (so a run where every publish was refused fails), no
        /// broadcast accepted, or a node that did not exit 0 with its shutdown
        /// `completed` after SIGTERM. The last line printed is the verdict, `PASS: ...`
        /// or `FAIL: <reason>`, with or without this flag; without it the exit status
        /// is 0 whenever the runs completed.
        #[arg(long)]
        check: bool,
    },
    /// One node with 1, 2, 4, ... shards under blast: messages/s and efficiency vs
    /// linear.
    Scale {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        load: BlastLoad,
        /// Runs per shard count; the medians are reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Largest shard count (default: the machine's cores).
        #[arg(long)]
        max_shards: Option<usize>,
    },
    /// The cluster workload on plumcore, plumcore --flood and memberlist-plumtree,
    /// side by side, then the highest rate each sustains at reliability 1.0.
    Compare {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        workload: Workload,
        /// Skip the rate search.
        #[arg(long)]
        no_search: bool,
        /// Measured time of each rate-search probe.
        #[arg(long, value_parser = parse_duration, default_value = "3s")]
        probe_duration: Duration,
        /// Highest rate the search tries.
        #[arg(long, default_value_t = 64_000)]
        max_rate: u32,
    },
    /// A local cluster at a steady rate for a long time (default 10 minutes),
    /// sampling every node's RSS, seen map, payload cache, pending grafts and IHave
    /// queue; reports whether each stays flat once the TTLs are reached.
    Soak {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        shape: ClusterShape,
        /// Sampling period.
        #[arg(long, value_parser = parse_duration, default_value = "5s")]
        sample_every: Duration,
        /// Time left out of the trends while the TTLs fill the structures (the
        /// default is twice the 60 s message_cache_ttl).
        #[arg(long, value_parser = parse_duration, default_value = "120s")]
        warmup: Duration,
    },
}

fn soak_cmd(common: Common, cfg: soak::SoakConfig) -> Result<()> {
    check_plot(&common.plot)?;
    if cfg.nodes < 2 || cfg.rate == 0 || cfg.sample_every.is_zero() {
        bail!("invalid argument: need --nodes >= 2, --rate >= 1, --sample-every > 0");
    }
    let dir = tempfile::tempdir()?;
    let binary = plumcore_bench::nodes::plumcore_binary()?;
    let r = soak::run(&cfg, binary, dir.path())?;
    println!(
        "soak: {} nodes x {} shards, {} msg/s of {} B for {:.0} s; {} published, {} refused; trends after {:.0} s",
        r.nodes, r.shards, r.rate, r.payload, r.duration_s, r.published, r.refused, r.warmup_s
    );
    println!(
        "{:<16}{:>6}{:>14}{:>14}{:>14}{:>12}  verdict",
        "series", "node", "mean", "min", "max", "%/min"
    );
    for (t, node) in &r.worst {
        println!(
            "{:<16}{:>6}{:>14.1}{:>14.1}{:>14.1}{:>12.3}  {}",
            t.series,
            node,
            t.mean,
            t.min,
            t.max,
            t.growth_pct_per_min,
            if t.is_flat() { "flat" } else { "not flat" }
        );
    }
    write_json(&common.json, &serde_json::to_value(&r)?)?;
    if let Some(p) = &common.plot {
        plot::soak(p, &r)?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (e.g. 10s, 500ms)"))
}

fn write_json(path: &Option<PathBuf>, v: &serde_json::Value) -> Result<()> {
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_string_pretty(v)? + "\n")?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

fn check_plot(p: &Option<PathBuf>) -> Result<()> {
    if let Some(p) = p {
        if p.extension().and_then(|e| e.to_str()) != Some("svg") {
            bail!(
                "invalid argument `--plot {}`: only .svg is supported",
                p.display()
            );
        }
    }
    Ok(())
}

fn cores() -> usize {
    core_pinning::Topology::detect().online().len()
}

fn idle_cmd(common: Common, shards: Vec<u16>, runs: usize, settle: Duration) -> Result<()> {
    if common.plot.is_some() {
        bail!("invalid argument `--plot`: idle has no plot");
    }
    let binary = nodes::plumcore_binary()?;
    let duration = common.duration.unwrap_or(Duration::from_secs(10));
    println!(
        "{:>6} {:>4} {:>10} {:>9} {:>16} {:>18}",
        "shards", "run", "cpu %core", "rss MiB", "shard wakeups/s", "control wakeups/s"
    );
    let mut all = Vec::new();
    let mut medians = Vec::new();
    for &n in &shards {
        let mut reps = Vec::new();
        for r in 0..runs.max(1) {
            let rep = idle::run(&binary, n, settle, duration)?;
            println!(
                "{:>6} {:>4} {:>10.3} {:>9.1} {:>16.1} {:>18.1}",
                n,
                r + 1,
                rep.cpu_percent_of_core,
                rep.rss_mib,
                rep.shard_wakeups_per_s,
                rep.control_wakeups_per_s
            );
            reps.push(rep);
        }
        let med = |f: fn(&idle::IdleReport) -> f64| median(reps.iter().map(f).collect());
        let m = serde_json::json!({
            "shards": n,
            "median_cpu_percent_of_core": med(|r| r.cpu_percent_of_core),
            "median_rss_mib": med(|r| r.rss_mib),
            "median_shard_wakeups_per_s": med(|r| r.shard_wakeups_per_s),
            "median_control_wakeups_per_s": med(|r| r.control_wakeups_per_s),
        });
        println!(
            "median, {n} shard(s): cpu {:.3} % of a core, rss {:.1} MiB, {:.1} shard wake-ups/s",
            m["median_cpu_percent_of_core"].as_f64().unwrap_or(0.0),
            m["median_rss_mib"].as_f64().unwrap_or(0.0),
            m["median_shard_wakeups_per_s"].as_f64().unwrap_or(0.0)
        );
        medians.push(m);
        all.extend(reps);
    }
    write_json(
        &common.json,
        &serde_json::json!({
            "command": command_line(),
            "machine": machine::describe(),
            "binary": binary,
            "runs": all,
            "medians": medians,
        }),
    )
}

/// Shard datagrams in per shard CPU second ÷ raw loop packets per raw CPU second.
fn cpu_ratio(r: &BlastReport) -> f64 {
    if r.raw_packets_per_cpu_s > 0.0 {
        r.plumcore_datagrams_in_per_shard_cpu_s / r.raw_packets_per_cpu_s
    } else {
        0.0
    }
}

/// Shard datagrams in per second ÷ raw loop packets per second, same run.
fn datagram_ratio(r: &BlastReport) -> f64 {
    if r.raw_packets_per_s > 0.0 {
        r.plumcore_datagrams_in_per_s / r.raw_packets_per_s
    } else {
        0.0
    }
}

fn blast_cmd(common: Common, load: BlastLoad, runs: usize) -> Result<()> {
    if common.plot.is_some() {
        bail!("invalid argument `--plot`: blast has no plot (use `scale --plot`)");
    }
    if load.no_gso {
        // Read by the node runtime when it starts the shards (same process).
        std::env::set_var("PLUMCORE_UDP_GSO", "0");
    }
    let cores = cores();
    let cfg = BlastConfig {
        shard_cores: vec![(cores >= 2).then_some(1)],
        control_core: (cores >= 2).then_some(0),
        raw: true,
        ..load.config(&common, Duration::from_secs(5))
    };
    let mut reports: Vec<BlastReport> = Vec::new();
    println!(
        "{:>4} {:>5} {:>14} {:>12} {:>12} {:>14} {:>14} {:>8} {:>9} {:>10} {:>9}",
        "run",
        "auth",
        "plumcore msg/s",
        "dgram in/s",
        "dgram out/s",
        "offered msg/s",
        "raw pkt/s",
        "ratio",
        "in÷raw",
        "wakeups/s",
        "sendmmsg/s"
    );
    println!("     (per CPU second: shard cpu/s, msg/shard-cpu-s, dgram in/shard-cpu-s, raw cpu/s, raw pkt/cpu-s, in÷raw per cpu-s)");
    let modes = if load.auth.is_empty() {
        vec![BlastAuth::None]
    } else {
        load.auth.clone()
    };
    // Modes interleaved run by run, so drift on a noisy machine hits each alike.
    for r in 0..runs.max(1) {
        for &auth in &modes {
            let rep = blast::run(&BlastConfig {
                auth,
                ..cfg.clone()
            });
            println!(
                "{:>4} {:>5} {:>14.0} {:>12.0} {:>12.0} {:>14.0} {:>14.0} {:>8.2} {:>9.2} {:>10.0} {:>10.0}",
                r + 1,
                format!("{auth:?}").to_lowercase(),
                rep.plumcore_msgs_per_s,
                rep.plumcore_datagrams_in_per_s,
                rep.plumcore_datagrams_out_per_s,
                rep.offered_msgs_per_s,
                rep.raw_packets_per_s,
                rep.ratio_vs_raw,
                datagram_ratio(&rep),
                rep.plumcore_wakeups_per_s,
                rep.plumcore_send_calls_per_s
            );
            println!(
                "     {:>6.2} {:>12.0} {:>12.0} {:>6.2} {:>12.0} {:>6.2}",
                rep.plumcore_shard_cpu_per_s,
                rep.plumcore_msgs_per_shard_cpu_s,
                rep.plumcore_datagrams_in_per_shard_cpu_s,
                rep.raw_cpu_per_s,
                rep.raw_packets_per_cpu_s,
                cpu_ratio(&rep)
            );
            reports.push(rep);
        }
    }
    let by_mode: Vec<serde_json::Value> = modes
        .iter()
        .map(|&m| {
            let msgs = median(
                reports
                    .iter()
                    .filter(|r| r.auth == m)
                    .map(|r| r.plumcore_msgs_per_s)
                    .collect(),
            );
            (m, msgs)
        })
        .collect::<Vec<_>>()
        .iter()
        .map(|&(m, msgs)| {
            let base = median(
                reports
                    .iter()
                    .filter(|r| r.auth == modes[0])
                    .map(|r| r.plumcore_msgs_per_s)
                    .collect(),
            );
            let vs = if base > 0.0 { msgs / base } else { 0.0 };
            println!(
                "median {:>5}: plumcore {msgs:.0} msg/s, {vs:.2} x {}",
                format!("{m:?}").to_lowercase(),
                format!("{:?}", modes[0]).to_lowercase()
            );
            serde_json::json!({"auth": m, "median_plumcore_msgs_per_s": msgs, "vs_first": vs})
        })
        .collect();
    let frames = load.frames.max(1);
    let dlen = blast::datagram_len(frames, common.payload);
    let costs: Vec<serde_json::Value> = modes
        .iter()
        .map(|&m| {
            let (seal, open) = blast::seal_open_cost(m, frames, common.payload, 20_000);
            println!(
                "cost  {:>5}: seal {seal:.0} ns, open {open:.0} ns per {dlen}-byte datagram ({frames} frames), one core",
                format!("{m:?}").to_lowercase()
            );
            serde_json::json!({"auth": m, "seal_ns": seal, "open_ns": open, "datagram_bytes": dlen})
        })
        .collect();
    let all_runs = serde_json::to_value(&reports).unwrap_or_default();
    // The figures below are those of the first mode (the baseline).
    let reports: Vec<BlastReport> = reports.into_iter().filter(|r| r.auth == modes[0]).collect();
    let med = |f: fn(&BlastReport) -> f64| median(reports.iter().map(f).collect());
    let summary = serde_json::json!({
        "command": command_line(),
        "machine": machine::describe(),
        "payload": common.payload,
        "frames_per_datagram": load.frames,
        "peers": load.peers,
        "chaos": load.chaos,
        "rate_limit": load.rate_limit,
        "gso": !load.no_gso,
        "runs": all_runs,
        "median_plumcore_msgs_per_s": med(|r| r.plumcore_msgs_per_s),
        "median_raw_packets_per_s": med(|r| r.raw_packets_per_s),
        "median_ratio_vs_raw": med(|r| r.ratio_vs_raw),
        "ratio_vs_raw": med(|r| r.ratio_vs_raw),
        "median_plumcore_datagrams_in_per_s": med(|r| r.plumcore_datagrams_in_per_s),
        "median_datagrams_in_vs_raw_packets": med(datagram_ratio),
        "median_msgs_per_shard_cpu_s": med(|r| r.plumcore_msgs_per_shard_cpu_s),
        "median_datagrams_in_per_shard_cpu_s": med(|r| r.plumcore_datagrams_in_per_shard_cpu_s),
        "median_raw_packets_per_cpu_s": med(|r| r.raw_packets_per_cpu_s),
        "median_datagrams_in_vs_raw_per_cpu_s": med(cpu_ratio),
        "auth_modes": by_mode,
        "auth_costs": costs,
    });
    println!(
        "median per CPU second: plumcore {:.0} msg, {:.0} datagrams in; raw loop {:.0} packets; datagrams ÷ raw packets {:.2}",
        summary["median_msgs_per_shard_cpu_s"].as_f64().unwrap_or(0.0),
        summary["median_datagrams_in_per_shard_cpu_s"].as_f64().unwrap_or(0.0),
        summary["median_raw_packets_per_cpu_s"].as_f64().unwrap_or(0.0),
        summary["median_datagrams_in_vs_raw_per_cpu_s"].as_f64().unwrap_or(0.0)
    );
    println!(
        "median: plumcore {:.0} msg/s per shard, raw loop {:.0} pkt/s, ratio {:.2}; datagrams in {:.0}/s, {:.2}x the raw loop's packets",
        summary["median_plumcore_msgs_per_s"]
            .as_f64()
            .unwrap_or(0.0),
        summary["median_raw_packets_per_s"].as_f64().unwrap_or(0.0),
        summary["median_ratio_vs_raw"].as_f64().unwrap_or(0.0),
        summary["median_plumcore_datagrams_in_per_s"]
            .as_f64()
            .unwrap_or(0.0),
        summary["median_datagrams_in_vs_raw_packets"]
            .as_f64()
            .unwrap_or(0.0)
    );
    write_json(&common.json, &summary)
}

fn cluster_config(
    common: &Common,
    w: &Workload,
    flood: bool,
    admins: Vec<SocketAddr>,
) -> ClusterConfig {
    ClusterConfig {
        nodes: w.shape.nodes,
        shards: w.shape.shards,
        rate: w.shape.rate,
        publishers: w.publishers,
        duration: common.duration.unwrap_or(Duration::from_secs(8)),
        warmup: w.warmup,
        payload: common.payload,
        flood,
        admins,
        progress: true,
        auth: BlastAuth::None,
        publish: w.publish,
    }
}

fn cluster_cmd(
    common: Common,
    workload: Workload,
    admins: Vec<SocketAddr>,
    flood: bool,
    runs: usize,
    auth: Vec<BlastAuth>,
    check: bool,
) -> Result<ExitCode> {
    check_plot(&common.plot)?;
    let cfg = cluster_config(&common, &workload, flood, admins);
    let modes = if auth.is_empty() {
        vec![BlastAuth::None]
    } else {
        auth
    };
    let mut runs_out = Vec::new();
    let mut by_mode: Vec<(BlastAuth, cluster::ClusterRun)> = Vec::new();
    for i in 0..runs.max(1) {
        if runs > 1 {
            eprintln!("run {} of {runs}", i + 1);
        }
        // Modes interleaved run by run, so the machine's drift hits each alike.
        for &m in &modes {
            let mode_cfg = ClusterConfig {
                auth: m,
                ..cfg.clone()
            };
            let r = cluster::run(&mode_cfg)?;
            if m == modes[0] {
                runs_out.push(r);
            } else {
                by_mode.push((m, r));
            }
        }
    }
    if modes.len() > 1 {
        let all: Vec<_> = runs_out
            .iter()
            .map(|r| &r.report)
            .chain(by_mode.iter().map(|(_, r)| &r.report))
            .collect();
        print!("{}", cluster::table(&all));
    }
    let mode_rows: Vec<serde_json::Value> = modes
        .iter()
        .map(|&m| {
            let rs: Vec<&cluster::ClusterReport> = if m == modes[0] {
                runs_out.iter().map(|r| &r.report).collect()
            } else {
                by_mode
                    .iter()
                    .filter(|(x, _)| *x == m)
                    .map(|(_, r)| &r.report)
                    .collect()
            };
            let med =
                |f: fn(&cluster::ClusterReport) -> f64| median(rs.iter().map(|r| f(r)).collect());
            serde_json::json!({
                "auth": m,
                "p50_us": med(|r| r.latency.p50_us),
                "p99_us": med(|r| r.latency.p99_us),
                "reliability": med(|r| r.reliability.mean),
                "cpu_percent_per_node": med(|r| {
                    let v: Vec<f64> = r.per_node.iter().filter_map(|n| n.cpu_percent).collect();
                    v.iter().sum::<f64>() / v.len().max(1) as f64
                }),
            })
        })
        .collect();
    if modes.len() > 1 {
        let base = &mode_rows[0];
        println!(
            "{:<6} {:>10} {:>10} {:>12} {:>14} {:>12}",
            "auth", "p50 us", "p99 us", "reliability", "cpu %/node", "p50 vs first"
        );
        for r in &mode_rows {
            let ratio = r["p50_us"].as_f64().unwrap_or(f64::NAN)
                / base["p50_us"].as_f64().unwrap_or(f64::NAN);
            println!(
                "{:<6} {:>10.0} {:>10.0} {:>12.4} {:>14.1} {:>12.2}",
                r["auth"].as_str().unwrap_or("?"),
                r["p50_us"].as_f64().unwrap_or(f64::NAN),
                r["p99_us"].as_f64().unwrap_or(f64::NAN),
                r["reliability"].as_f64().unwrap_or(f64::NAN),
                r["cpu_percent_per_node"].as_f64().unwrap_or(f64::NAN),
                ratio
            );
        }
    }
    let reports: Vec<_> = runs_out.iter().map(|r| &r.report).collect();
    if modes.len() == 1 {
        print!("{}", cluster::table(&reports));
    }
    if let Some(last) = runs_out.last() {
        if last.report.metrics_only {
            println!("(running nodes: figures from /metrics only; no latency, no LDH)");
        }
    }
    let med =
        |f: fn(&cluster::ClusterReport) -> f64| median(reports.iter().map(|r| f(r)).collect());
    let summary = serde_json::json!({
        "command": command_line(),
        "machine": machine::describe(),
        "runs": reports,
        "auth_modes": mode_rows,
        "median": {
            "achieved_rate": med(|r| r.achieved_rate),
            "p50_us": med(|r| r.latency.p50_us),
            "p90_us": med(|r| r.latency.p90_us),
            "p99_us": med(|r| r.latency.p99_us),
            "p999_us": med(|r| r.latency.p999_us),
            "max_us": med(|r| r.latency.max_us),
            "origin_to_node_p50_us": med(|r| r.dissemination.p50_us),
            "origin_to_node_p99_us": med(|r| r.dissemination.p99_us),
            "reliability": med(|r| r.reliability.mean),
            "rmr": med(|r| r.rmr.unwrap_or(f64::NAN)),
            "ldh_mean": med(|r| r.ldh_mean.unwrap_or(f64::NAN)),
        },
    });
    if runs > 1 {
        println!("medians over {runs} runs: {}", summary["median"]);
    }
    if let Some(p) = &common.plot {
        let series: Vec<(String, &hdrhistogram::Histogram<u64>)> = runs_out
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("{} run {}", r.report.system, i + 1), &r.latency))
            .collect();
        plot::latency(p, "publish-to-delivery latency", &series)?;
        eprintln!("wrote {}", p.display());
    }
    write_json(&common.json, &summary)?;
    let all: Vec<&cluster::ClusterReport> = runs_out
        .iter()
        .map(|r| &r.report)
        .chain(by_mode.iter().map(|(_, r)| &r.report))
        .collect();
    let verdict = cluster::verdict(&all);
    println!("{}", verdict.line);
    Ok(if check && !verdict.pass {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn scale_cmd(
    common: Common,
    load: BlastLoad,
    runs: usize,
    max_shards: Option<usize>,
) -> Result<()> {
    check_plot(&common.plot)?;
    let cores = max_shards.unwrap_or_else(cores).max(1);
    let template = load.config(&common, Duration::from_secs(3));
    let machine_cores = self::cores();
    let points = scale::run(
        &template,
        cores.min(machine_cores.max(1)),
        runs,
        |n, r, m| eprintln!("shards {n} run {}: {m:.0} msg/s", r + 1),
    );
    println!(
        "{:>6} {:>16} {:>16} {:>10}",
        "shards", "msgs/s (median)", "per shard", "efficiency"
    );
    for p in &points {
        println!(
            "{:>6} {:>16.0} {:>16.0} {:>10.2}",
            p.shards, p.median_msgs_per_s, p.per_shard_msgs_per_s, p.efficiency
        );
    }
    if let Some(path) = &common.plot {
        let pts: Vec<(usize, f64)> = points
            .iter()
            .map(|p| (p.shards, p.median_msgs_per_s))
            .collect();
        plot::scaling(path, &pts)?;
        eprintln!("wrote {}", path.display());
    }
    write_json(
        &common.json,
        &serde_json::json!({
            "command": command_line(),
            "machine": machine::describe(),
            "payload": common.payload,
            "frames_per_datagram": load.frames,
            "peers": load.peers,
            "points": points,
        }),
    )
}

fn compare_cmd(
    common: Common,
    workload: Workload,
    no_search: bool,
    probe_duration: Duration,
    max_rate: u32,
) -> Result<()> {
    check_plot(&common.plot)?;
    let cfg = cluster_config(&common, &workload, false, Vec::new());
    let mut systems = vec![System::Plumcore, System::PlumcoreFlood];
    let mut missing = None;
    if memberlist::binary().is_some() {
        systems.push(System::MemberlistPlumtree);
    } else {
        let why = format!(
            "memberlist-plumtree: not run, its bench binary is not built ({})",
            memberlist::BUILD_HINT
        );
        eprintln!("{why}");
        missing = Some(why);
    }
    if plumcore_bench::natsserver::binary().is_some() {
        systems.push(System::NatsServer);
    } else {
        let why = format!(
            "nats-server: not run, not installed ({})",
            plumcore_bench::natsserver::INSTALL_HINT
        );
        eprintln!("{why}");
        missing = Some(missing.map_or(why.clone(), |m| format!("{m}; {why}")));
    }
    let mut runs = Vec::new();
    let mut failures = Vec::new();
    for s in &systems {
        eprintln!("compare: {} at {}/s", s.name(), cfg.rate);
        match compare::run_one(*s, &cfg) {
            Ok(r) => runs.push(r),
            Err(e) => {
                eprintln!("compare: {} failed: {e:#}", s.name());
                failures.push(format!("{}: {e:#}", s.name()));
            }
        }
    }
    let reports: Vec<_> = runs.iter().map(|r| &r.report).collect();
    print!("{}", cluster::table(&reports));
    let mut searches = Vec::new();
    if !no_search {
        for s in &systems {
            if failures.iter().any(|f| f.starts_with(s.name())) {
                continue;
            }
            eprintln!("rate search: {}", s.name());
            let r =
                compare::search(*s, &cfg, cfg.rate, max_rate, probe_duration, |p| {
                    eprintln!(
                    "  {:>7}/s: achieved {:.0}/s reliability {:.4} refused {} p99 {:.0} us -> {}",
                    p.rate,
                    p.achieved_rate,
                    p.reliability,
                    p.refused,
                    p.p99_us,
                    if p.sustained { "sustained" } else { "not sustained" }
                )
                })?;
            searches.push(r);
        }
        println!("{:<22}{:>18}", "highest rate at reliability 1.0", "");
        for r in &searches {
            println!(
                "{:<22}{:>18}",
                r.system,
                r.max_sustained_rate
                    .map_or_else(|| "below start".to_string(), |v| format!("{v}/s"))
            );
        }
    }
    if let Some(p) = &common.plot {
        let series: Vec<(String, &hdrhistogram::Histogram<u64>)> = runs
            .iter()
            .map(|r| (r.report.system.clone(), &r.latency))
            .collect();
        plot::latency(p, "publish-to-delivery latency, same workload", &series)?;
        eprintln!("wrote {}", p.display());
    }
    write_json(
        &common.json,
        &serde_json::json!({
            "command": command_line(),
            "machine": machine::describe(),
            "reports": reports,
            "rate_search": searches,
            "not_run": missing,
            "failures": failures,
        }),
    )?;
    if let Some(m) = missing {
        println!("{m}");
    }
    Ok(())
}

fn run() -> Result<ExitCode> {
    let done = |r: Result<()>| r.map(|()| ExitCode::SUCCESS);
    match Cli::parse().command {
        Cmd::Blast { common, load, runs } => done(blast_cmd(common, load, runs)),
        Cmd::Idle {
            common,
            shards,
            runs,
            settle,
        } => done(idle_cmd(common, shards, runs, settle)),
        Cmd::Cluster {
            common,
            workload,
            admins,
            flood,
            runs,
            auth,
            check,
        } => cluster_cmd(common, workload, admins, flood, runs, auth, check),
        Cmd::Scale {
            common,
            load,
            runs,
            max_shards,
        } => done(scale_cmd(common, load, runs, max_shards)),
        Cmd::Compare {
            common,
            workload,
            no_search,
            probe_duration,
            max_rate,
        } => done(compare_cmd(
            common,
            workload,
            no_search,
            probe_duration,
            max_rate,
        )),
        Cmd::Soak {
            common,
            shape,
            sample_every,
            warmup,
        } => {
            let cfg = soak::SoakConfig {
                nodes: shape.nodes,
                shards: shape.shards,
                rate: shape.rate,
                duration: common.duration.unwrap_or(Duration::from_secs(600)),
                payload: common.payload,
                sample_every,
                warmup,
            };
            done(soak_cmd(common, cfg))
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("plumcore-bench: {e:#}");
            let invalid = e.to_string().starts_with("invalid argument");
            ExitCode::from(if invalid { 2 } else { 1 })
        }
    }
}
