//! Node names end to end on real processes: one node named with `--node-name`, one
//! with `--node-id web-1` (hashed to its id), one left to its hostname. Every node's
//! `/status`, `/members`, `/peers`, `plumcore members` and deliveries lines show the
//! names of the others.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::cluster::{broadcast, free_udp_ports, get_json, wait_until};
use plumcore::harness::launch::{NodeLaunch, StderrTo};
use plumcore::harness::process::NodeProcess;

/// A started node (killed when dropped) and its addresses and deliveries file.
struct Proc {
    child: NodeProcess,
    bind: SocketAddr,
    admin: SocketAddr,
    deliveries: PathBuf,
}

fn spawn(name_args: &[&str], seed: Option<SocketAddr>, dir: &Path, taken: &mut Vec<u16>) -> Proc {
    spawn_with(name_args, seed, dir, taken, StderrTo::Inherit)
}

fn spawn_with(
    name_args: &[&str],
    seed: Option<SocketAddr>,
    dir: &Path,
    taken: &mut Vec<u16>,
    stderr: StderrTo,
) -> Proc {
    let port = free_udp_ports(2, taken);
    let bind: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin = common::cluster::free_tcp();
    let deliveries = dir.join(format!("d{port}.ndjson"));
    let mut launch = NodeLaunch::new(env!("CARGO_BIN_EXE_plumcore"), bind, admin, 1);
    launch.deliveries = Some(deliveries.clone());
    launch.extra = name_args.iter().map(Into::into).collect();
    launch.seeds = seed.into_iter().collect();
    launch.stderr = stderr;
    Proc {
        child: launch.start().expect("start plumcore node"),
        bind,
        admin,
        deliveries,
    }
}

/// `origin_name` of every deliveries line, by payload.
fn origin_names(path: &Path) -> Vec<(String, Option<String>)> {
    use base64::Engine;
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            let p = base64::engine::general_purpose::STANDARD
                .decode(v["payload_b64"].as_str().unwrap())
                .unwrap();
            (
                String::from_utf8(p).unwrap(),
                v["origin_name"].as_str().map(str::to_string),
            )
        })
        .collect()
}

#[test]
fn names_show_in_every_view_and_in_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let mut taken = Vec::new();
    let a = spawn(&["--node-name", "alpha"], None, dir.path(), &mut taken);
    let b = spawn(
        &["--node-id", "web-1"],
        Some(a.bind),
        dir.path(),
        &mut taken,
    );
    let c = spawn(&[], Some(a.bind), dir.path(), &mut taken);
    let nodes = [&a, &b, &c];

    // web-1's id is the first 8 bytes of BLAKE3("web-1"), little-endian.
    let h = blake3::hash(b"web-1");
    let web1 = format!(
        "{:016x}",
        u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap())
    );
    wait_until("b up", Duration::from_secs(20), || {
        get_json(b.admin, "/status").is_some()
    });
    let st = get_json(b.admin, "/status").unwrap();
    assert_eq!(st["node_id"], web1.as_str());
    assert_eq!(st["node_name"], "web-1");
    assert_eq!(get_json(a.admin, "/status").unwrap()["node_name"], "alpha");
    let host = get_json(c.admin, "/status").unwrap()["node_name"]
        .as_str()
        .map(str::to_string);
    assert!(host.is_some(), "c is named after its hostname");

    // Everybody knows both others' names through their Join / Neighbor frames.
    wait_until("names in /members", Duration::from_secs(30), || {
        nodes.iter().all(|n| {
            get_json(n.admin, "/members").is_some_and(|m| {
                let names: Vec<&str> = m["active"]
                    .as_array()
                    .map(|v| v.iter().filter_map(|x| x["name"].as_str()).collect())
                    .unwrap_or_default();
                names.len() == 2
            })
        })
    });
    let peers = get_json(a.admin, "/peers").unwrap();
    let names: Vec<&str> = peers
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(names.contains(&"web-1"), "{peers}");

    let out = Command::new(env!("CARGO_BIN_EXE_plumcore"))
        .args(["members", "--admin", &format!("http://{}", c.admin)])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{table}");
    assert!(
        table.contains(" alpha ") && table.contains(" web-1 "),
        "{table}"
    );

    broadcast(a.admin, b"from-alpha");
    broadcast(b.admin, b"from-web-1");
    wait_until("deliveries at c", Duration::from_secs(20), || {
        origin_names(&c.deliveries).len() >= 2
    });
    let got = origin_names(&c.deliveries);
    assert!(
        got.contains(&("from-alpha".into(), Some("alpha".into()))),
        "{got:?}"
    );
    assert!(
        got.contains(&("from-web-1".into(), Some("web-1".into()))),
        "{got:?}"
    );
    // Its own broadcasts carry its own name too.
    broadcast(c.admin, b"from-c");
    wait_until("own delivery at c", Duration::from_secs(10), || {
        origin_names(&c.deliveries)
            .iter()
            .any(|(p, n)| p == "from-c" && n == &host)
    });
}

fn peers(admin: SocketAddr) -> usize {
    get_json(admin, "/peers")
        .and_then(|v| v.as_array().map(|a| a.len()))
        .unwrap_or(0)
}

#[test]
fn a_second_live_node_with_a_chosen_name_is_refused_with_a_log_line_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let mut taken = Vec::new();
    let a = spawn(&["--node-name", "dup"], None, dir.path(), &mut taken);
    let b = spawn(
        &["--node-name", "other"],
        Some(a.bind),
        dir.path(),
        &mut taken,
    );
    wait_until(
        "a and b linked, names known",
        Duration::from_secs(20),
        || {
            get_json(b.admin, "/peers").is_some_and(|p| {
                p.as_array()
                    .is_some_and(|l| l.iter().any(|x| x["name"] == "dup"))
            })
        },
    );
    // c takes a's name and joins through b: b refuses it (a is live), and tells it.
    let mut c = spawn_with(
        &["--node-name", "dup"],
        Some(b.bind),
        dir.path(),
        &mut taken,
        StderrTo::Piped,
    );
    let conflicts = |admin: SocketAddr, side: &str| {
        common::cluster::metric_sum(
            admin,
            &format!("plumtree_node_name_conflicts_total{{side=\"{side}\"}}"),
            None,
        )
    };
    wait_until("b to refuse c", Duration::from_secs(20), || {
        get_json(c.admin, "/status").is_some() && conflicts(b.admin, "refused") >= 1.0
    });
    wait_until("c to hear it", Duration::from_secs(10), || {
        conflicts(c.admin, "received") >= 1.0
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        peers(c.admin),
        0,
        "the newer node with a taken name never links"
    );
    assert_eq!(peers(b.admin), 1, "b keeps only a");
    // Nodes left to their hostname default share it freely (several on one host).
    let d = spawn(&[], Some(a.bind), dir.path(), &mut taken);
    let e = spawn(&[], Some(a.bind), dir.path(), &mut taken);
    wait_until("hostname-named nodes join", Duration::from_secs(30), || {
        peers(d.admin) >= 1 && peers(e.admin) >= 1
    });
    let _ = c.child.kill();
    let _ = c.child.wait();
    let err = common::cluster::read_stderr(&mut c.child);
    assert!(
        err.contains("already used by a live node"),
        "the refused node says why: {err}"
    );
}
