//! `plumcore sim`: the deterministic simulator, many protocol nodes over a virtual
//! network, from the command line.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::ValueEnum;

use plumcore::protocol::{Mode, ProtocolConfig};
use plumcore::sim::{self, SimConfig};

/// `--overlay`: where the simulated nodes' neighbours come from.
#[derive(Clone, Copy, ValueEnum)]
pub enum OverlayArg {
    /// A fixed random graph; crashes announced by a simulated failure detector.
    Random,
    /// HyParView membership: joins, shuffles, failure detection, healing.
    Hyparview,
}

/// `--baseline`: a protocol run on the same workload for comparison.
#[derive(Clone, Copy, ValueEnum)]
pub enum Baseline {
    /// Classic flood gossip: eager push to every neighbour, no lazy push.
    Flood,
}

/// `plumcore sim`'s flags: the network, the workload and protocol overrides.
#[derive(clap::Args)]
pub struct SimArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Number of broadcasts, each from a random live node.
    #[arg(long, default_value_t = 200)]
    messages: usize,
    /// Probability that a datagram is lost.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Probability that a datagram is delivered twice.
    #[arg(long, default_value_t = 0.0)]
    dup: f64,
    /// Fraction of nodes that crash at one random moment during the run.
    #[arg(long, default_value_t = 0.0)]
    fail: f64,
    /// Seed of every random choice; the same seed gives the same result.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Split the network in two during the middle of the run, then heal it.
    #[arg(long)]
    partition_heal: bool,
    /// With --partition-heal: how long the split lasts, in milliseconds of virtual
    /// time (default: 30 % of the broadcast span, from 30 % to 60 % of it).
    #[arg(long, requires = "partition_heal")]
    split_ms: Option<u64>,
    /// Also run this baseline on the same workload and report it side by side.
    #[arg(long, value_enum)]
    baseline: Option<Baseline>,
    /// Where neighbours come from.
    #[arg(long, value_enum, default_value = "hyparview")]
    overlay: OverlayArg,
    /// Average overlay degree (random overlay).
    #[arg(long, default_value_t = 8)]
    degree: usize,
    /// Partitions (independent trees); a power of two up to 64.
    #[arg(long, default_value_t = 64)]
    partitions: u32,
    /// Milliseconds between broadcasts (0: all at once, as --burst).
    #[arg(long, default_value_t = 50)]
    interval_ms: u64,
    /// Issue every broadcast at the same moment (sets --interval-ms 0).
    #[arg(long)]
    burst: bool,
    /// Broadcasts come from this many fixed random nodes (default: from any node;
    /// 1 is iroh-gossip's single-sender scenario).
    #[arg(long)]
    origins: Option<usize>,
    /// Smallest one-way link latency, microseconds (each link gets a fixed latency
    /// between this and --latency-max-us). The default is a WAN; a LAN is ~100-1000.
    #[arg(long, default_value_t = 5_000)]
    latency_min_us: u64,
    /// Largest one-way link latency, microseconds.
    #[arg(long, default_value_t = 50_000)]
    latency_max_us: u64,
    /// Random extra delay per datagram, up to this many microseconds (reordering).
    #[arg(long, default_value_t = 5_000)]
    jitter_us: u64,
    /// Override a protocol config key, e.g. `--set optimization_threshold=0` or
    /// `--set graft_timeout=800` (durations in milliseconds). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// First messages of each partition excluded from RMR/LDH while its tree forms.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// An argument the simulator refuses: one line naming it, exit 2 (as clap's own
/// usage errors).
fn bad_arg(key: &str, why: &str) -> ExitCode {
    eprintln!("plumcore: invalid argument `{key}`: {why}");
    ExitCode::from(2)
}

/// Applies `key=value` overrides to a protocol config through its serde form, so every
/// config key is settable and unknown keys are rejected by name.
fn apply_overrides(base: ProtocolConfig, overrides: &[String]) -> Result<ProtocolConfig> {
    let mut v = serde_json::to_value(&base)?;
    for o in overrides {
        let Some((key, value)) = o.split_once('=') else {
            anyhow::bail!("invalid argument `--set {o}`: expected KEY=VALUE");
        };
        let parsed: serde_json::Value = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
        let obj = v.as_object_mut().expect("config serialises to an object");
        if !obj.contains_key(key) {
            anyhow::bail!("invalid config key `{key}`: no such key");
        }
        obj.insert(key.to_string(), parsed);
    }
    serde_json::from_value(v).map_err(|e| anyhow::anyhow!("invalid config override: {e}"))
}

/// Runs the simulation (and the baseline, if asked) and prints the report.
pub fn run(a: SimArgs) -> Result<ExitCode> {
    if !(0.0..1.0).contains(&a.loss) {
        return Ok(bad_arg("--loss", "must be in [0, 1)"));
    }
    if !(0.0..1.0).contains(&a.dup) {
        return Ok(bad_arg("--dup", "must be in [0, 1)"));
    }
    if !(0.0..1.0).contains(&a.fail) {
        return Ok(bad_arg("--fail", "must be in [0, 1)"));
    }
    if a.nodes < 2 {
        return Ok(bad_arg("--nodes", "must be at least 2"));
    }
    if a.payload < 8 {
        return Ok(bad_arg("--payload", "must be at least 8"));
    }
    let base = ProtocolConfig {
        partitions: a.partitions,
        ..ProtocolConfig::default()
    };
    let protocol = match apply_overrides(base, &a.overrides) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("plumcore: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if let Err(e) = protocol.validate() {
        eprintln!("plumcore: {e}");
        return Ok(ExitCode::from(2));
    }
    if a.payload > protocol.max_payload {
        return Ok(bad_arg("--payload", "exceeds max_payload"));
    }
    if a.origins == Some(0) {
        return Ok(bad_arg("--origins", "must be at least 1"));
    }
    if a.latency_min_us > a.latency_max_us {
        return Ok(bad_arg("--latency-min-us", "exceeds --latency-max-us"));
    }
    let mut cfg = SimConfig {
        overlay: match a.overlay {
            OverlayArg::Random => sim::Overlay::Random,
            OverlayArg::Hyparview => sim::Overlay::HyParView,
        },
        nodes: a.nodes,
        messages: a.messages,
        seed: a.seed,
        degree: a.degree,
        fail: a.fail,
        partition_heal: a.partition_heal,
        split: a.split_ms.map(Duration::from_millis),
        interval: if a.burst {
            Duration::ZERO
        } else {
            Duration::from_millis(a.interval_ms)
        },
        origins: a.origins.unwrap_or(0),
        warmup_per_partition: a.warmup,
        payload: a.payload,
        protocol,
        ..SimConfig::default()
    };
    cfg.link.loss = a.loss;
    cfg.link.duplicate = a.dup;
    cfg.link.latency_min = Duration::from_micros(a.latency_min_us);
    cfg.link.latency_max = Duration::from_micros(a.latency_max_us);
    cfg.link.jitter = Duration::from_micros(a.jitter_us);
    let mut report = sim::run(&cfg);
    if let Some(Baseline::Flood) = a.baseline {
        let mut flood = cfg.clone();
        flood.protocol.mode = Mode::Flood;
        let base = sim::run(&flood);
        report.flood_ldh = Some(base.ldh);
        report.flood_last_delivery_ms = Some(base.last_delivery_ms);
        report.baseline = Some(Box::new(base));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}
