//! The node processes a cluster benchmark runs against: either `plumcore node`
//! processes started here on 127.0.0.1 (killed on drop), or running nodes named by
//! their admin addresses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use plumcore::harness::launch::{self, NodeLaunch, StderrTo};
use plumcore::harness::ports;
use plumcore::harness::process::{self, NodeProcess, Stopped};

/// One node the benchmark publishes to and reads from.
pub struct NodeHandle {
    pub admin: SocketAddr,
    /// Its NATS-compatible client port, when this benchmark started it.
    pub client: Option<SocketAddr>,
    /// The process, when this benchmark started it (CPU and RSS are read from it);
    /// killed when the handle is dropped.
    pub child: Option<NodeProcess>,
    /// Its deliveries file, when this benchmark started it.
    pub deliveries: Option<PathBuf>,
    /// The file its stderr goes to, when this benchmark started it: the shutdown
    /// line is read from it.
    pub log: Option<PathBuf>,
}

impl NodeHandle {
    /// The node's process id, when it is ours.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(NodeProcess::id)
    }
}

/// How to start local nodes.
#[derive(Clone, Debug)]
pub struct LocalSpec {
    pub nodes: usize,
    pub shards: u16,
    /// `--flood`: the classic-gossip baseline.
    pub flood: bool,
    /// The `plumcore` binary.
    pub binary: PathBuf,
    /// A config file every node reads (`--config`), e.g. the cluster key.
    pub config: Option<PathBuf>,
}

/// The `plumcore` binary: `$PLUMCORE_BIN`, else `plumcore` next to this executable.
pub fn plumcore_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PLUMCORE_BIN") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe().context("locating plumcore-bench")?;
    let dir = me.parent().context("plumcore-bench has no directory")?;
    // Test binaries live one level down, in deps/.
    for d in [dir, dir.parent().unwrap_or(dir)] {
        let p = d.join("plumcore");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "the plumcore binary is not next to {} (build it: `cargo build --release --bin plumcore`, or set PLUMCORE_BIN)",
        me.display()
    )
}

/// Seeds a new node joins through: at most this many earlier nodes.
const SEEDS: usize = 3;

/// The first node and the latest `SEEDS - 1` before the new one.
fn seeds_for(earlier: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = earlier.iter().rev().take(SEEDS - 1).copied().collect();
    if let Some(first) = earlier.first() {
        if !v.contains(first) {
            v.push(*first);
        }
    }
    v
}

/// Starts `spec.nodes` nodes joined through earlier ones (see [`seeds_for`]), writing
/// deliveries and logs under `dir`, each waited for until it reports every shard
/// (see [`launch::spawn_ready`]); then waits until every one has a neighbour (30 s
/// at most).
pub fn start_local(spec: &LocalSpec, dir: &Path) -> Result<Vec<NodeHandle>> {
    let mut taken = Vec::new();
    let mut out: Vec<NodeHandle> = Vec::new();
    let mut binds: Vec<SocketAddr> = Vec::new();
    for i in 0..spec.nodes {
        let base = ports::free_udp_run(spec.shards + 1, &mut taken)?;
        let bind = SocketAddr::from(([127, 0, 0, 1], base));
        let admin = ports::free_tcp()?;
        let client = ports::free_tcp()?;
        let deliveries = dir.join(format!("node{i}.ndjson"));
        let log = dir.join(format!("node{i}.log"));
        let mut l = NodeLaunch::new(&spec.binary, bind, admin, spec.shards);
        l.node_id = Some(i as u64 + 1);
        // Join through up to SEEDS earlier nodes (the first and the latest ones), so
        // that the overlay is not a star around one seed.
        l.seeds = seeds_for(&binds);
        l.deliveries = Some(deliveries.clone());
        l.stderr = StderrTo::File(log.clone());
        l.extra = vec!["--client-listen".into(), client.to_string().into()];
        if spec.flood {
            l.extra.push("--flood".into());
        }
        if let Some(c) = &spec.config {
            l.extra.push("--config".into());
            l.extra.push(c.into());
        }
        let child = l
            .start()
            .with_context(|| format!("starting {}", spec.binary.display()))?;
        binds.push(bind);
        out.push(NodeHandle {
            admin,
            client: Some(client),
            child: Some(child),
            deliveries: Some(deliveries),
            log: Some(log),
        });
    }
    wait_joined(&mut out, Duration::from_secs(30))?;
    if !wait_settled(&out, Duration::from_secs(1), Duration::from_secs(15)) {
        eprintln!("note: the overlay was still changing 15 s after start; publishing anyway");
    }
    Ok(out)
}

/// Running nodes, known by their admin addresses.
pub fn remote(admins: &[SocketAddr]) -> Vec<NodeHandle> {
    admins
        .iter()
        .map(|&admin| NodeHandle {
            admin,
            client: None,
            child: None,
            deliveries: None,
            log: None,
        })
        .collect()
}

/// How many neighbours a node reports on `/peers`.
pub fn peers_of(admin: SocketAddr) -> Option<usize> {
    Some(launch::get_json(admin, "/peers")?.as_array()?.len())
}

/// Waits until every node reports at least one neighbour.
pub fn wait_joined(nodes: &mut [NodeHandle], limit: Duration) -> Result<()> {
    let t = Instant::now();
    loop {
        for n in nodes.iter_mut() {
            if let Some(c) = &mut n.child {
                if let Ok(Some(status)) = c.try_wait() {
                    bail!("a node exited during start-up ({status})");
                }
            }
        }
        let joined = nodes
            .iter()
            .filter(|n| peers_of(n.admin).is_some_and(|p| p > 0))
            .count();
        if joined == nodes.len() {
            return Ok(());
        }
        if t.elapsed() > limit {
            bail!(
                "only {joined} of {} nodes joined within {limit:?}",
                nodes.len()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the overlay stops changing: every node's neighbour count is the same
/// in consecutive polls for `quiet`, or `limit` passes (then it carries on: a figure
/// measured on a still-forming overlay is reported as such by `membership changes`).
/// A node's views keep filling for a few seconds after its first neighbour, and every
/// new link re-shapes the trees; publishing before that measures the formation.
pub fn wait_settled(nodes: &[NodeHandle], quiet: Duration, limit: Duration) -> bool {
    let t = Instant::now();
    let mut last: Vec<Option<usize>> = Vec::new();
    let mut stable_since = Instant::now();
    while t.elapsed() < limit {
        let now: Vec<Option<usize>> = nodes.iter().map(|n| peers_of(n.admin)).collect();
        if now != last || now.iter().any(Option::is_none) {
            last = now;
            stable_since = Instant::now();
        } else if stable_since.elapsed() >= quiet {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The text of a node's `/metrics`, or empty when it does not answer.
pub fn scrape(admin: SocketAddr) -> String {
    plumcore::harness::metrics::scrape(admin, None).unwrap_or_default()
}

/// How one node this run started ended.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeShutdown {
    pub admin: String,
    /// Exited 0 within the bound and printed `plumcore: shutdown` with status
    /// `completed`.
    pub clean: bool,
    /// What happened, in words.
    pub detail: String,
}

/// How long the nodes have, together, to stop after SIGTERM.
pub const SHUTDOWN_BOUND: Duration = Duration::from_secs(10);

/// Stops the nodes this run started (SIGTERM to all, [`SHUTDOWN_BOUND`], SIGKILL for
/// the rest) and says how each ended; running nodes given by address are left alone.
pub fn stop_local(nodes: &mut [NodeHandle]) -> Vec<NodeShutdown> {
    let mut ours: Vec<(&mut NodeProcess, SocketAddr, Option<&PathBuf>)> = nodes
        .iter_mut()
        .filter_map(|n| Some((n.child.as_mut()?, n.admin, n.log.as_ref())))
        .collect();
    let mut procs: Vec<&mut NodeProcess> = ours.iter_mut().map(|(p, _, _)| &mut **p).collect();
    let stopped = process::terminate_all(&mut procs, SHUTDOWN_BOUND);
    ours.iter()
        .zip(stopped)
        .map(|((_, admin, log), s)| {
            let said = log
                .and_then(|l| std::fs::read_to_string(l).ok())
                .and_then(|text| process::shutdown_status(&text));
            let (clean, detail) = match (&s, said.as_deref()) {
                (Ok(st), Some("completed")) if st.exited_zero() => {
                    (true, "exited 0, shutdown completed".to_string())
                }
                (Ok(st @ Stopped::Exited(_)), said) => (
                    false,
                    format!("{st}, shutdown status {}", said.unwrap_or("not printed")),
                ),
                (Ok(st), _) => (false, st.to_string()),
                (Err(e), _) => (false, e.to_string()),
            };
            NodeShutdown {
                admin: admin.to_string(),
                clean,
                detail,
            }
        })
        .collect()
}
