//! The integration tests' side of [`plumcore::harness`]: the same node processes,
//! ports and files, with panics instead of errors (a failed start fails the test),
//! plus the admin-plane and overlay checks only tests make.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use plumcore::harness::deliveries::{self, Record};
use plumcore::harness::launch::NodeLaunch;
use plumcore::harness::process::NodeProcess;

/// A node process; killed when dropped, so a failing test leaves nothing behind.
pub struct Node {
    pub child: NodeProcess,
    /// Control socket; shard k listens on port + 1 + k.
    pub bind: SocketAddr,
    pub admin: SocketAddr,
    pub shards: u16,
    pub deliveries: PathBuf,
}

/// First of `n` consecutive free UDP ports on 127.0.0.1, none of them in `taken`.
pub fn free_udp_ports(n: u16, taken: &mut Vec<u16>) -> u16 {
    plumcore::harness::ports::free_udp_run(n, taken).expect("free loopback ports")
}

/// A TCP port on 127.0.0.1 that is free now, for an admin plane or a client port
/// ([`plumcore::harness::ports::free_tcp`]).
pub fn free_tcp() -> SocketAddr {
    plumcore::harness::ports::free_tcp().expect("a free loopback port")
}

/// Starts node `id` with `shards` shards, joining through `seed`, writing deliveries
/// under `dir`; `extra` flags are appended (e.g. `--chaos`).
pub fn start_node(
    id: u64,
    shards: u16,
    seed: Option<SocketAddr>,
    dir: &Path,
    extra: &[&str],
    taken: &mut Vec<u16>,
) -> Node {
    spawn_node(
        &NodeSpec {
            id,
            shards,
            seeds: seed.as_slice(),
            bind: None,
            deliveries: format!("node{id}.ndjson"),
            extra,
        },
        dir,
        taken,
    )
}

/// Spawns `cmd`, a `plumcore node` answering on `admin` with `shards` shards, and
/// waits for it as [`start_node`] does ([`plumcore::harness::launch::spawn_ready`]);
/// the handle kills it when dropped.
pub fn spawn_ready(cmd: &mut Command, admin: SocketAddr, shards: u16) -> NodeProcess {
    NodeProcess::new(
        plumcore::harness::launch::spawn_ready(cmd, admin, shards).expect("start plumcore node"),
    )
}

/// GET an admin route as JSON; `None` while the node is not answering.
pub fn get_json(admin: SocketAddr, path: &str) -> Option<serde_json::Value> {
    plumcore::harness::launch::get_json(admin, path)
}

/// Polls `f` until it holds, failing the test after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A deliveries file as id -> (times delivered, payload of the first delivery).
pub fn read_deliveries(path: &Path) -> HashMap<String, (usize, Vec<u8>)> {
    let mut m: HashMap<String, (usize, Vec<u8>)> = HashMap::new();
    for d in deliveries::read_deliveries(path).expect("a valid deliveries file") {
        let id = d.id.expect("a node's delivery line carries its id");
        m.entry(id).or_insert((0, d.payload)).0 += 1;
    }
    m
}

/// A deliveries file as id -> times delivered.
pub fn delivery_counts(path: &Path) -> HashMap<String, usize> {
    read_deliveries(path)
        .into_iter()
        .map(|(id, (n, _))| (id, n))
        .collect()
}

/// Everything a process started with a piped stderr wrote there, read to the end
/// (so after it exited, or it blocks).
pub fn read_stderr(p: &mut NodeProcess) -> String {
    use std::io::Read;
    let mut err = String::new();
    p.child_mut()
        .stderr
        .take()
        .expect("stderr was piped")
        .read_to_string(&mut err)
        .expect("readable stderr");
    err
}

/// The known gaps a deliveries file reports (`{"gap":{"origin":..,"missed":N,..}}`
/// lines): messages per origin (16 hex digits) that will never be delivered there.
pub fn read_gaps(path: &Path) -> HashMap<String, u64> {
    let mut m: HashMap<String, u64> = HashMap::new();
    for r in deliveries::read_records(path).expect("a valid deliveries file") {
        if let Record::Gap { origin, missed } = r {
            *m.entry(origin).or_default() += missed;
        }
    }
    m
}

/// POST /broadcast; returns the message id.
pub fn broadcast(admin: SocketAddr, payload: &[u8]) -> String {
    let r = ureq::post(&format!("http://{admin}/broadcast"))
        .timeout(Duration::from_secs(2))
        .send_bytes(payload)
        .expect("broadcast accepted");
    let v: serde_json::Value = r.into_json().unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// A node to start: everything [`spawn_node`] needs. `bind` and `admin` default to
/// fresh ports; give the old `bind` to restart a node on its address.
pub struct NodeSpec<'a> {
    pub id: u64,
    pub shards: u16,
    pub seeds: &'a [SocketAddr],
    pub bind: Option<SocketAddr>,
    /// Deliveries file name under the test's directory.
    pub deliveries: String,
    pub extra: &'a [&'a str],
}

/// Starts a node as [`start_node`] does, with several seeds, an optional fixed
/// address and a chosen deliveries file.
pub fn spawn_node(spec: &NodeSpec<'_>, dir: &Path, taken: &mut Vec<u16>) -> Node {
    let bind = spec.bind.unwrap_or_else(|| {
        let port = free_udp_ports(spec.shards + 1, taken);
        format!("127.0.0.1:{port}").parse().unwrap()
    });
    let admin = free_tcp();
    let deliveries = dir.join(&spec.deliveries);
    let mut launch = NodeLaunch::new(env!("CARGO_BIN_EXE_plumcore"), bind, admin, spec.shards);
    launch.node_id = Some(spec.id);
    launch.seeds = spec.seeds.to_vec();
    launch.deliveries = Some(deliveries.clone());
    launch.extra = spec.extra.iter().map(Into::into).collect();
    Node {
        child: launch.start().expect("start plumcore node"),
        bind,
        admin,
        shards: spec.shards,
        deliveries,
    }
}

impl Node {
    /// Every UDP port of this node (control and shards) as a fault-layer address
    /// range, `IP:FIRST-LAST`.
    pub fn port_range(&self) -> String {
        format!(
            "{}:{}-{}",
            self.bind.ip(),
            self.bind.port(),
            self.bind.port() + self.shards
        )
    }

    /// SIGKILL: no Leave, no flush.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An admin request with an optional bearer token; returns (status, body as JSON or
/// `Null`). Transport failures panic.
pub fn admin_request(
    admin: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req =
        ureq::request(method, &format!("http://{admin}{path}")).timeout(Duration::from_secs(5));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let r = match body {
        Some(b) => req.send_json(b.clone()),
        None => req.call(),
    };
    let resp = match r {
        Ok(resp) => resp,
        Err(ureq::Error::Status(_, resp)) => resp,
        Err(e) => panic!("{method} {path} on {admin}: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// A counter or gauge from `/metrics`, summed over its label sets (0 if absent).
pub fn metric_sum(admin: SocketAddr, name: &str, token: Option<&str>) -> f64 {
    let text = plumcore::harness::metrics::scrape(admin, token).unwrap();
    plumcore::harness::metrics::metric_sum(&text, name)
}

/// A node's HyParView active view (node ids as 16 hex digits) from `GET /members`;
/// `None` while the node is not answering.
pub fn active_view(admin: SocketAddr) -> Option<Vec<String>> {
    let v = get_json(admin, "/members")?;
    Some(
        v["active"]
            .as_array()?
            .iter()
            .filter_map(|m| m["node_id"].as_str().map(str::to_string))
            .collect(),
    )
}

/// Node id `id` as the admin plane prints it.
pub fn node_hex(id: u64) -> String {
    format!("{id:016x}")
}

/// Why the active views `v` (node -> its neighbours, as [`active_view`] gives them)
/// are not yet an overlay one can broadcast over, or `None` when they are: every node
/// in `alive` reports a view of at least one neighbour, every neighbour is in `alive`,
/// every link is symmetric, and the overlay is connected. This is what HyParView
/// guarantees once it settles; full views are not (see `tests/node_membership.rs`).
pub fn overlay_problem(
    v: &HashMap<String, Vec<String>>,
    alive: &HashSet<String>,
) -> Option<String> {
    for me in alive {
        let Some(view) = v.get(me) else {
            return Some(format!("{me} did not answer"));
        };
        if view.is_empty() {
            return Some(format!("{me} has no neighbour"));
        }
        for p in view {
            if !alive.contains(p) {
                return Some(format!("{me} lists {p}, which is not in this overlay"));
            }
            if !v.get(p).is_some_and(|pv| pv.contains(me)) {
                return Some(format!("{me} lists {p}, but not the other way round"));
            }
        }
    }
    let start = alive.iter().next()?;
    let mut seen: HashSet<&String> = HashSet::from([start]);
    let mut todo = vec![start];
    while let Some(n) = todo.pop() {
        for p in &v[n] {
            if seen.insert(p) {
                todo.push(p);
            }
        }
    }
    (seen.len() < alive.len()).then(|| {
        format!(
            "not connected: {} of {} nodes reachable from {start}",
            seen.len(),
            alive.len()
        )
    })
}

/// A node's membership and control-socket counters from `GET /status`, on one line,
/// for a failure message: enough to tell a node that stopped sending or receiving from
/// one whose messages were lost or refused.
#[allow(dead_code)]
pub fn membership_diagnostics(admin: SocketAddr) -> String {
    let Some(s) = get_json(admin, "/status") else {
        return "no /status answer".into();
    };
    let m = &s["membership"];
    let io = &s["control_io"];
    let loops: Vec<String> = s["loops"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .map(|l| format!("{}:{}", l["name"], l["run_count"]))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "uptime_ms {} joining {} seeds {} passive {} lost {} driver {} stats {} control datagrams in {} out {} send_errors {} wakeups {} readiness_missed {} chaos dropped {} delayed {} loops [{}]",
        s["uptime_ms"],
        m["joining"],
        m["seeds"],
        m["passive"],
        m["lost"],
        m["driver"],
        m["stats"],
        io["datagrams_received"],
        io["datagrams_sent"],
        io["send_errors"],
        io["wakeups"],
        io["rx_readiness_missed"],
        io["chaos_dropped"],
        io["chaos_delayed"],
        loops.join(" ")
    )
}

/// What a test that timed out waiting on the overlay prints: every active view in `v`
/// (sorted, with its size), then every node's [`membership_diagnostics`].
#[allow(dead_code)]
pub fn overlay_report(v: &HashMap<String, Vec<String>>, nodes: &[(u64, &Node)]) -> String {
    let mut rows: Vec<String> = v
        .iter()
        .map(|(me, view)| format!("{me}: {} {view:?}", view.len()))
        .collect();
    rows.sort();
    rows.extend(
        nodes
            .iter()
            .map(|(id, n)| format!("{}: {}", node_hex(*id), membership_diagnostics(n.admin))),
    );
    rows.join("\n")
}
