//! Seeds given by name on real processes: `--seed localhost:PORT` is resolved by the
//! node (to 127.0.0.1 and ::1 here; every address is tried) and the node joins; a
//! second seed that never resolves (`.invalid`, RFC 6761) is counted in
//! `plumtree_membership_seed_resolve_failures_total` and does not keep the node from
//! joining through the other. A malformed seed exits 2 naming the key.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{
    active_view, broadcast, metric_sum, node_hex, read_deliveries, spawn_node, wait_until, NodeSpec,
};

#[test]
fn a_seed_given_by_name_is_resolved_and_joined_and_a_dead_name_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut taken = Vec::new();
    let first = spawn_node(
        &NodeSpec {
            id: 1,
            shards: 1,
            seeds: &[],
            bind: None,
            deliveries: "n1.ndjson".into(),
            extra: &[],
        },
        dir.path(),
        &mut taken,
    );
    let by_name = format!("localhost:{}", first.bind.port());
    let second = spawn_node(
        &NodeSpec {
            id: 2,
            shards: 1,
            seeds: &[],
            bind: None,
            deliveries: "n2.ndjson".into(),
            extra: &[
                "--seed",
                "no-such-seed.invalid:7000",
                "--seed",
                by_name.as_str(),
            ],
        },
        dir.path(),
        &mut taken,
    );
    let t = Instant::now();
    wait_until(
        "node 2 to join node 1 by name",
        Duration::from_secs(30),
        || {
            active_view(second.admin).is_some_and(|v| v.contains(&node_hex(1)))
                && active_view(first.admin).is_some_and(|v| v.contains(&node_hex(2)))
        },
    );
    eprintln!("joined through `{by_name}` in {:?}", t.elapsed());
    wait_until(
        "the dead name to be counted",
        Duration::from_secs(30),
        || {
            metric_sum(
                second.admin,
                "plumtree_membership_seed_resolve_failures_total",
                None,
            ) >= 1.0
        },
    );
    // The overlay carries broadcasts both ways.
    let a = broadcast(first.admin, b"from one");
    let b = broadcast(second.admin, b"from two");
    for n in [&first, &second] {
        wait_until("both deliveries", Duration::from_secs(20), || {
            let d = read_deliveries(&n.deliveries);
            d.contains_key(&a) && d.contains_key(&b)
        });
    }
}

#[test]
fn a_malformed_seed_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "seeds = [\"seed_1:7000\"]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_plumcore"))
        .args(["node", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("`seeds`"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn seeds_that_all_fail_to_resolve_exit_2_naming_the_key() {
    // `.invalid` never resolves (RFC 6761).
    let out = Command::new(env!("CARGO_BIN_EXE_plumcore"))
        .args(["node", "--bind", "127.0.0.1:0", "--client-listen", "off"])
        .args([
            "--seed",
            "no-such-seed.invalid:7000",
            "--seed",
            "other.invalid:7000",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let line = err.trim().lines().last().unwrap_or_default().to_string();
    assert!(
        line.contains("`seeds`") && line.contains("no-such-seed.invalid:7000"),
        "{err}"
    );
}
