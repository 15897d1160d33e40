//! The node processes a cluster benchmark runs against: either `plumcore node`
//! processes started here on 127.0.0.1 (killed on drop), or running nodes named by
//! their admin addresses.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// One node the benchmark publishes to and reads from.
pub struct NodeHandle {
    pub admin: SocketAddr,
    /// Its NATS-compatible client port, when this benchmark started it.
    pub client: Option<SocketAddr>,
    /// The process, when this benchmark started it (CPU and RSS are read from it).
    pub child: Option<Child>,
    /// Its deliveries file, when this benchmark started it.
    pub deliveries: Option<PathBuf>,
}

impl NodeHandle {
    /// The node's process id, when it is ours.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
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

fn free_tcp() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
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

/// Starts `spec.nodes` nodes joined through earlier ones (see [`seeds_for`]), writing deliveries under `dir`,
/// and waits until every one has a neighbour (30 s at most).
pub fn start_local(spec: &LocalSpec, dir: &Path) -> Result<Vec<NodeHandle>> {
    let mut taken = Vec::new();
    let mut out: Vec<NodeHandle> = Vec::new();
    let mut binds: Vec<SocketAddr> = Vec::new();
    for i in 0..spec.nodes {
        let base = plumcore::ports::free_udp_run(spec.shards + 1, &mut taken)?;
        let bind = SocketAddr::from(([127, 0, 0, 1], base));
        let admin = free_tcp()?;
        let client = free_tcp()?;
        let deliveries = dir.join(format!("node{i}.ndjson"));
        let mut cmd = Command::new(&spec.binary);
        cmd.arg("node")
            .args(["--node-id", &(i + 1).to_string()])
            .args(["--bind", &bind.to_string()])
            .args(["--admin", &admin.to_string()])
            .args(["--client-listen", &client.to_string()])
            .args(["--shards", &spec.shards.to_string()])
            .args(["--deliveries", deliveries.to_str().context("temp path")?])
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if spec.flood {
            cmd.arg("--flood");
        }
        if let Some(c) = &spec.config {
            cmd.arg("--config").arg(c);
        }
        // Join through up to SEEDS earlier nodes (the first and the latest ones), so
        // that the overlay is not a star around one seed.
        for s in seeds_for(&binds) {
            cmd.args(["--seed", &s.to_string()]);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", spec.binary.display()))?;
        binds.push(bind);
        out.push(NodeHandle {
            admin,
            client: Some(client),
            child: Some(child),
            deliveries: Some(deliveries),
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
        })
        .collect()
}

/// How many neighbours a node reports on `/peers`.
pub fn peers_of(admin: SocketAddr) -> Option<usize> {
    let v: serde_json::Value = ureq::get(&format!("http://{admin}/peers"))
        .timeout(Duration::from_secs(2))
        .call()
        .ok()?
        .into_json()
        .ok()?;
    Some(v.as_array()?.len())
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
    ureq::get(&format!("http://{admin}/metrics"))
        .timeout(Duration::from_secs(2))
        .call()
        .ok()
        .and_then(|r| r.into_string().ok())
        .unwrap_or_default()
}

/// Sum of every sample of metric `name` (all label sets) in a Prometheus text page.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(name))
        .filter(|l| {
            let rest = &l[name.len()..];
            rest.starts_with(' ') || rest.starts_with('{')
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sum_adds_label_sets_and_skips_lookalikes() {
        let text = "# TYPE plumtree_gossip_sent counter\n\
                    plumtree_gossip_sent_total{shard=\"0\"} 10\n\
                    plumtree_gossip_sent_total{shard=\"1\"} 5\n\
                    plumtree_gossip_sent_total_extra 100\n\
                    plumtree_graft_sent_total 2\n";
        assert_eq!(metric_sum(text, "plumtree_gossip_sent_total"), 15.0);
        assert_eq!(metric_sum(text, "plumtree_graft_sent_total"), 2.0);
        assert_eq!(metric_sum(text, "absent_total"), 0.0);
    }
}
