//! HyParView on real `plumcore node` processes: twelve nodes, each knowing only the
//! previous one as its seed (a chain), must fill every active view (12 x 5 links; the
//! paper's rules alone usually left two linked nodes at 4, the splice and introduction
//! rules fill them). After four of them are killed with SIGKILL, the eight survivors
//! must drop the dead (the detection bound, failure timeout + probe timeout + a
//! heartbeat round, is the figure printed; the assert waits up to 20 s so a loaded
//! machine does not fail it on timing), then fill every view again (likewise), and one
//! broadcast must reach every
//! survivor exactly once. Last, one survivor gets SIGTERM: it must tell every
//! neighbour (Disconnect) rather than leave them to the failure detector.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::cluster::{
    active_view, broadcast, get_json, node_hex, overlay_problem, overlay_report, read_deliveries,
    start_node, wait_until, Node,
};

const NODES: u64 = 12;
const ACTIVE: usize = 5;
/// Short timers so the test runs in seconds (milliseconds).
const HEARTBEAT: u64 = 50;
const FAILURE_TIMEOUT: u64 = 1000;
const PROBE_TIMEOUT: u64 = 200;

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("membership.toml");
    std::fs::write(
        &path,
        format!(
            "[membership]\nactive_view = {ACTIVE}\npassive_view = 30\n\
             heartbeat_interval = {HEARTBEAT}\nfailure_timeout = {FAILURE_TIMEOUT}\n\
             probe_timeout = {PROBE_TIMEOUT}\nshuffle_interval = 500\n\
             join_retry = 100\njoin_retry_max = 800\nlost_probe_max = 800\n"
        ),
    )
    .unwrap();
    path
}

/// Active views of `nodes` (by node id), or `None` if one is not answering.
fn views(nodes: &[(u64, &Node)]) -> Option<HashMap<String, Vec<String>>> {
    nodes
        .iter()
        .map(|(id, n)| Some((node_hex(*id), active_view(n.admin)?)))
        .collect()
}

/// Every view of `alive` is full, holds only live nodes, and the links are symmetric
/// and connected ([`overlay_problem`]).
fn settled(v: &HashMap<String, Vec<String>>, alive: &HashSet<String>, full: usize) -> bool {
    v.len() == alive.len()
        && v.values().all(|view| view.len() == full)
        && overlay_problem(v, alive).is_none()
}

/// No view of `alive` lists a node outside it.
fn dead_dropped(v: &HashMap<String, Vec<String>>, alive: &HashSet<String>) -> bool {
    v.values()
        .all(|view| view.iter().all(|p| alive.contains(p)))
}

/// "5:11 3:1": how many nodes have each view size.
fn degrees(nodes: &[(u64, &Node)]) -> String {
    let mut h: HashMap<usize, usize> = HashMap::new();
    for v in views(nodes).unwrap_or_default().values() {
        *h.entry(v.len()).or_default() += 1;
    }
    let mut k: Vec<_> = h.into_iter().collect();
    k.sort_unstable_by(|a, b| b.cmp(a));
    k.iter()
        .map(|(d, n)| format!("{d}:{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Waits until `done` holds for the views; on timeout fails with every node's view.
fn wait_views(
    what: &str,
    limit: Duration,
    nodes: &[(u64, &Node)],
    done: impl Fn(&HashMap<String, Vec<String>>) -> bool,
) -> Duration {
    let t = Instant::now();
    loop {
        let v = views(nodes);
        if v.as_ref().is_some_and(&done) {
            return t.elapsed();
        }
        if t.elapsed() > limit {
            panic!(
                "timed out after {limit:?} waiting for {what}:\n{}",
                overlay_report(&v.unwrap_or_default(), nodes)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn chain_seeded_cluster_fills_views_heals_after_sigkill_and_delivers_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let cfg_arg = cfg.to_str().unwrap();
    let mut taken = Vec::new();
    let mut nodes: Vec<(u64, Node)> = Vec::new();
    for id in 1..=NODES {
        let seed = nodes.last().map(|(_, n)| n.bind);
        let n = start_node(id, 1, seed, dir.path(), &["--config", cfg_arg], &mut taken);
        nodes.push((id, n));
    }
    let all: Vec<(u64, &Node)> = nodes.iter().map(|(i, n)| (*i, n)).collect();
    let everyone: HashSet<String> = (1..=NODES).map(node_hex).collect();
    let took = wait_views(
        "every view to fill (symmetric, connected)",
        Duration::from_secs(40),
        &all,
        |v| settled(v, &everyone, ACTIVE),
    );
    eprintln!(
        "12 nodes: every view full after {took:?}; view sizes {}",
        degrees(&all)
    );
    drop(all);

    // SIGKILL four nodes: no Disconnect, the failure detector must find out.
    let victims = [3u64, 6, 9, 12];
    let mut dead = Vec::new();
    nodes.retain_mut(|(id, n)| {
        if victims.contains(id) {
            n.kill();
            false
        } else {
            true
        }
    });
    dead.extend(victims);
    let survivors: Vec<(u64, &Node)> = nodes.iter().map(|(i, n)| (*i, n)).collect();
    let alive: HashSet<String> = survivors.iter().map(|(i, _)| node_hex(*i)).collect();
    // Detection takes failure_timeout plus probe_timeout plus up to a heartbeat
    // round (1.25 s), the refill about one failure timeout more. Those are the figures
    // printed below; the bounds asserted are generous, so that a loaded 2-core machine
    // does not fail the test on timing alone (issue 12: tests wait for a condition and
    // report the time; the tight figure is a reported number).
    let gone = wait_views(
        "survivors to drop the dead",
        Duration::from_secs(20),
        &survivors,
        |v| dead_dropped(v, &alive),
    );
    let refill = wait_views(
        "survivors' views to fill again",
        Duration::from_secs(20),
        &survivors,
        |v| settled(v, &alive, ACTIVE),
    );
    let bound = Duration::from_millis(FAILURE_TIMEOUT + PROBE_TIMEOUT + HEARTBEAT);
    eprintln!(
        "detection bound {bound:?} (failure + probe timeout + a heartbeat): dead dropped in {gone:?}{}",
        if gone > bound + Duration::from_secs(1) {
            " (slower than the bound + 1 s: a loaded machine?)"
        } else {
            ""
        }
    );
    eprintln!(
        "8 survivors: dead dropped {gone:?} after SIGKILL, every view full {refill:?} later; \
         view sizes {}",
        degrees(&survivors)
    );

    // One broadcast reaches every survivor exactly once.
    let id = broadcast(survivors[0].1.admin, b"after-the-crash");
    wait_until("every survivor to deliver", Duration::from_secs(20), || {
        survivors
            .iter()
            .all(|(_, n)| read_deliveries(&n.deliveries).contains_key(&id))
    });
    std::thread::sleep(Duration::from_millis(1000));
    for (i, n) in &survivors {
        let d = read_deliveries(&n.deliveries);
        let (count, payload) = &d[&id];
        assert_eq!(*count, 1, "node {i} delivered {id} {count} times");
        assert_eq!(payload, b"after-the-crash");
    }

    // SIGTERM: the node leaves, so each of its neighbours counts a Disconnect.
    let disconnects = |n: &Node| {
        get_json(n.admin, "/members").map_or(0, |v| v["stats"]["disconnects"].as_u64().unwrap_or(0))
    };
    let (leaver_id, leaver) = survivors[1];
    let leaver_hex = node_hex(leaver_id);
    let rest: Vec<(u64, &Node)> = survivors
        .iter()
        .copied()
        .filter(|(i, _)| *i != leaver_id)
        .collect();
    let neighbours: Vec<&Node> = rest
        .iter()
        .filter(|(_, n)| active_view(n.admin).is_some_and(|v| v.contains(&leaver_hex)))
        .map(|(_, n)| *n)
        .collect();
    let before: Vec<u64> = neighbours.iter().map(|n| disconnects(n)).collect();
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &leaver.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    wait_until(
        "every neighbour of the leaver to count its Disconnect",
        Duration::from_secs(10),
        || {
            neighbours
                .iter()
                .zip(&before)
                .all(|(n, b)| disconnects(n) > *b)
        },
    );
    assert!(!neighbours.is_empty());
    for (_, n) in &rest {
        assert!(
            !active_view(n.admin)
                .unwrap_or_default()
                .contains(&leaver_hex),
            "a neighbour still lists the node that left"
        );
    }
}
