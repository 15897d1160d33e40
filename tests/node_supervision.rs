//! Supervision on real node processes: with `--chaos`, every background loop of one
//! node is made to panic in turn while broadcasts flow. Every loop must come back
//! (its error is counted in `/status` and `/metrics` and it keeps running), and every
//! node must still deliver every message exactly once.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{get_json, read_deliveries, start_node, wait_until, Node};

fn start(id: u64, seed: Option<SocketAddr>, chaos: bool, dir: &Path, taken: &mut Vec<u16>) -> Node {
    let extra: &[&str] = if chaos { &["--chaos"] } else { &[] };
    start_node(id, 1, seed, dir, extra, taken)
}

fn status(n: &Node) -> Option<serde_json::Value> {
    get_json(n.admin, "/status")
}

fn loops(n: &Node) -> HashMap<String, (u64, u64)> {
    let Some(st) = status(n) else {
        return HashMap::new();
    };
    st["loops"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|x| {
                    (
                        x["name"].as_str().unwrap_or("").to_string(),
                        (
                            x["run_count"].as_u64().unwrap_or(0),
                            x["error_count"].as_u64().unwrap_or(0),
                        ),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn delivered(path: &Path) -> HashMap<String, usize> {
    read_deliveries(path)
        .into_iter()
        .map(|(id, (n, _))| (id, n))
        .collect()
}

#[test]
fn every_loop_survives_an_injected_panic_and_delivery_stays_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut taken = Vec::new();
    let a = start(1, None, false, dir.path(), &mut taken);
    let b = start(2, Some(a.bind), true, dir.path(), &mut taken);
    let c = start(3, Some(a.bind), false, dir.path(), &mut taken);
    let nodes = [a, b, c];
    wait_until("joins", Duration::from_secs(20), || {
        nodes.iter().all(|n| {
            status(n).is_some_and(|s| s["peers"]["list"].as_array().is_some_and(|l| !l.is_empty()))
        })
    });
    // Without --chaos, injection is refused.
    let refused = ureq::post(&format!("http://{}/chaos/panic/heartbeat", nodes[0].admin)).call();
    assert!(matches!(refused, Err(ureq::Error::Status(403, _))));

    let victim = &nodes[1];
    wait_until("loops to report", Duration::from_secs(10), || {
        loops(victim).len() >= 6
    });
    let names: Vec<String> = loops(victim).keys().cloned().collect();
    let mut sent = Vec::new();
    let mut k = 0u32;
    for name in &names {
        let before = loops(victim)[name];
        let r = ureq::post(&format!("http://{}/chaos/panic/{name}", victim.admin)).call();
        assert!(r.is_ok(), "inject into {name}: {r:?}");
        // Broadcasts keep flowing while the loop panics and comes back.
        let t = Instant::now();
        loop {
            let n = &nodes[k as usize % 3];
            let id = ureq::post(&format!("http://{}/broadcast", n.admin))
                .send_bytes(format!("m{k}").as_bytes())
                .unwrap()
                .into_json::<serde_json::Value>()
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string();
            sent.push(id);
            k += 1;
            let now = loops(victim)[name];
            // Restarted: the error is counted and the loop ran again after it.
            if now.1 > before.1 && now.0 > before.0 + 1 {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "loop {name} did not come back: {now:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let metrics = ureq::get(&format!("http://{}/metrics", victim.admin))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    for name in &names {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("plumtree_loop_errors_total")
                    && l.contains(&format!("loop=\"{name}\""))
            })
            .unwrap_or_else(|| panic!("no error metric for {name}"));
        let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(v >= 1.0, "{line}");
    }
    wait_until("all deliveries", Duration::from_secs(30), || {
        nodes.iter().all(|n| {
            let d = delivered(&n.deliveries);
            sent.iter().all(|id| d.contains_key(id))
        })
    });
    std::thread::sleep(Duration::from_millis(500));
    for (i, n) in nodes.iter().enumerate() {
        let d = delivered(&n.deliveries);
        for id in &sent {
            assert_eq!(d[id], 1, "node {i} delivered {id} {} times", d[id]);
        }
    }
}
