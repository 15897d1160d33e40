//! The `plumcore` command line.

mod members_cmd;
mod pubsub_cmd;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

use core_pinning::{CoreMap, Topology};
use plumcore::node::{
    self,
    config::{LogFormat, NodeArgs},
};
use plumcore::protocol::{Mode, ProtocolConfig};
use plumcore::sim::{self, SimConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs before `main` (and before most of the allocator's first pages are touched):
/// see `plumcore::node::disable_thp` for why.
#[used]
#[link_section = ".init_array"]
static DISABLE_THP: extern "C" fn() = {
    extern "C" fn f() {
        plumcore::node::disable_thp();
    }
    f
};

#[derive(Parser)]
#[command(
    name = "plumcore",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("PLUMCORE_GIT_COMMIT"), ")"),
    about = "Thread-per-core Plumtree broadcast node"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: glommio shards with their own UDP sockets, a control core and the
    /// admin plane.
    Node(Box<NodeArgs>),
    /// Removed: `plumcore bench cluster --check` does its job. Still parsed, with any
    /// arguments, so that an old script is told what to run instead.
    #[command(hide = true, disable_help_flag = true)]
    Cluster {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Show a running node's HyParView views (active and passive) from its admin plane.
    Members(members_cmd::MembersArgs),
    /// Publish to a node's client port: each stdin line, or --count generated messages.
    Pub(pubsub_cmd::PubArgs),
    /// Subscribe on a node's client port and print each message (ndjson or raw).
    Sub(pubsub_cmd::SubArgs),
    /// Run the deterministic simulator: many protocol nodes over a virtual network.
    Sim(SimArgs),
    /// The bundled load generator: runs the `plumcore-bench` binary next to this one
    /// with the given arguments (`plumcore bench cluster`, `blast`, `scale`, `compare`).
    #[command(disable_help_flag = true)]
    Bench {
        /// Arguments for plumcore-bench (`plumcore bench --help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Validate a core map file against this machine.
    CheckCoreMap {
        /// The core map (TOML: `control = 0`, `shards = [1, 2, 3]`).
        file: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum OverlayArg {
    /// A fixed random graph; crashes announced by a simulated failure detector.
    Random,
    /// HyParView membership: joins, shuffles, failure detection, healing.
    Hyparview,
}

#[derive(Clone, Copy, ValueEnum)]
enum Baseline {
    /// Classic flood gossip: eager push to every neighbour, no lazy push.
    Flood,
}

#[derive(Parser)]
struct SimArgs {
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

fn run_sim(a: SimArgs) -> Result<ExitCode> {
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

/// Logs to stderr: colours only when stderr is a terminal (never in a file or a
/// pipe), or one JSON object a line. `RUST_LOG`, when set and valid, wins over `level`
/// (which the config has already checked).
fn init_logging(level: &str, format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}

fn run_node(args: NodeArgs) -> Result<ExitCode> {
    let cfg = match node::config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("plumcore: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    init_logging(&cfg.log_level, cfg.log_format);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    match node::run(cfg, stop) {
        Ok(report) => {
            tracing::info!(
                status = report.status,
                initial_tasks = report.initial_tasks,
                completed_tasks = report.completed_tasks,
                remaining_tasks = report.remaining_tasks,
                duration_seconds = report.duration_seconds,
                "shutdown complete"
            );
            eprintln!("plumcore: shutdown {}", serde_json::to_string(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("plumcore: {e}");
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}

fn check_core_map(file: PathBuf) -> ExitCode {
    let topo = Topology::detect();
    let result = CoreMap::from_path(&file).and_then(|m| m.validate(&topo));
    match result {
        Ok(v) => {
            for w in &v.warnings {
                println!("warning: {w}");
            }
            println!(
                "ok: control core {}, shard cores {:?} (machine: cores {})",
                v.map.control,
                v.map.shards,
                topo.online_summary()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("plumcore: {}: {e}", file.display());
            ExitCode::from(2)
        }
    }
}

/// `plumcore bench ...`: the load generator is its own crate (it depends on this one),
/// built as the `plumcore-bench` binary in the same directory; this replaces the
/// process with it.
fn run_bench(args: Vec<std::ffi::OsString>) -> Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("plumcore-bench");
    if !bin.is_file() {
        eprintln!(
            "plumcore: {} not found; build it with `cargo build --release -p plumcore-bench` \
             (it is installed next to the plumcore binary)",
            bin.display()
        );
        return Ok(ExitCode::from(2));
    }
    let err = std::process::Command::new(&bin).args(args).exec();
    eprintln!("plumcore: running {}: {err}", bin.display());
    Ok(ExitCode::from(1))
}

/// Exit code of `plumcore pub`/`sub`: 2 for an argument refused before connecting,
/// 1 for anything the server or the network did; the error printed in one line.
fn client_exit(r: Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plumcore: {e}");
            ExitCode::from(if e.is::<pubsub_cmd::BadArg>() { 2 } else { 1 })
        }
    }
}

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Node(a) => run_node(*a),
        Command::Cluster { .. } => {
            eprintln!(
                "plumcore: `plumcore cluster` was removed; run `plumcore bench cluster --check` \
                 (or `plumcore-bench cluster --check`)"
            );
            Ok(ExitCode::from(2))
        }
        Command::Members(a) => match members_cmd::run(&a) {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => {
                // One line: the error says what it could not do and why, once.
                eprintln!("plumcore: {e}");
                Ok(ExitCode::from(1))
            }
        },
        Command::Pub(a) => Ok(client_exit(pubsub_cmd::run_pub(&a))),
        Command::Sub(a) => Ok(client_exit(pubsub_cmd::run_sub(&a))),
        Command::Sim(a) => run_sim(a),
        Command::Bench { args } => run_bench(args),
        Command::CheckCoreMap { file } => Ok(check_core_map(file)),
    }
}
