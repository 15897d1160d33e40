//! Short runs of every `plumcore-bench` subcommand (a few seconds each): they finish,
//! print their table, and write JSON whose figures hold together.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bench_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_plumcore-bench"))
}

/// The `plumcore` binary the cluster runs start: next to plumcore-bench, where
/// `plumcore_bench::nodes::plumcore_binary` finds it. This test does not build it: a
/// `cargo build` inside a test rebuilt 145 crates (58 s) on a cold target. A workspace
/// build builds it (`.ci/run` runs `cargo build --workspace --locked --bins` before
/// the tests); run that after changing the node, or this test starts an old binary.
fn ensure_plumcore() {
    let p = bench_bin().with_file_name("plumcore");
    assert!(
        p.is_file(),
        "{} is missing: build it first with `cargo build --workspace --locked --bins` \
         (or `cargo build -p plumcore --bin plumcore`)",
        p.display()
    );
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(bench_bin())
        .args(args)
        .env("MEMBERLIST_BENCH_BIN", "/nonexistent/compare-memberlist")
        .output()
        .expect("run plumcore-bench");
    eprintln!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn assert_machine(v: &serde_json::Value) {
    assert!(v["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(v["machine"]["kernel"]
        .as_str()
        .is_some_and(|k| !k.is_empty()));
    assert!(v["machine"]["cpu_model"].is_string());
}

#[test]
fn cluster_smoke() {
    ensure_plumcore();
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("c.json");
    let p = dir.path().join("c.svg");
    let out = run(&[
        "cluster",
        "--check",
        "--nodes",
        "3",
        "--rate",
        "100",
        "--warmup",
        "500ms",
        "--duration",
        "1s",
        "--json",
        j.to_str().unwrap(),
        "--plot",
        p.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("latency p99 us") && table.contains("RMR"),
        "{table}"
    );
    // The verdict is the last line; every node stopped cleanly.
    let last = table.lines().last().unwrap_or_default();
    assert!(last.starts_with("PASS: "), "{table}");
    assert!(table.contains("clean shutdowns") && last.contains("3 clean shutdowns"));
    let v = json(&j);
    assert_machine(&v);
    let r = &v["runs"][0];
    let measured = r["measured"].as_u64().unwrap();
    assert!(measured >= 50, "{r}");
    // Loopback loses nothing: every measured broadcast reaches all 3 nodes, once.
    assert_eq!(r["reliability"]["mean"].as_f64(), Some(1.0), "{r}");
    assert_eq!(r["duplicate_deliveries"].as_u64(), Some(0));
    assert_eq!(r["latency"]["count"].as_u64(), Some(measured * 2));
    assert!(r["latency"]["p50_us"].as_f64().unwrap() > 0.0);
    assert!(r["latency"]["p99_us"].as_f64() >= r["latency"]["p50_us"].as_f64());
    assert!(r["rmr"].as_f64().unwrap() >= 0.0);
    assert!(r["ldh_max"].as_u64().unwrap() >= 1);
    assert_eq!(r["per_node"].as_array().unwrap().len(), 3);
    assert!(r["per_node"][0]["rss_mib"].as_f64().unwrap() > 1.0);
    assert!(std::fs::read_to_string(&p).unwrap().starts_with("<svg"));
    for s in r["shutdowns"].as_array().unwrap() {
        assert_eq!(s["clean"], true, "{s}");
    }
    assert_eq!(r["shutdowns"].as_array().unwrap().len(), 3);
}

/// Every publish refused (a payload over the nodes' max_payload): the old launcher
/// called such a run a success; the verdict fails it, and `--check` exits 1. Without
/// `--check` the verdict is printed and the exit status stays 0.
#[test]
fn cluster_check_fails_a_run_whose_publishes_were_all_refused() {
    ensure_plumcore();
    let args = [
        "cluster",
        "--nodes",
        "2",
        "--rate",
        "50",
        "--warmup",
        "200ms",
        "--duration",
        "500ms",
        "--publish",
        "http",
        "--payload",
        "4000",
    ];
    let mut check = args.to_vec();
    check.insert(1, "--check");
    let out = run(&check);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("FAIL: "), "{stdout}");
    assert!(
        last.contains("publishes refused") && last.contains("no broadcast was accepted"),
        "{last}"
    );
    let out = run(&args);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout
        .lines()
        .last()
        .unwrap_or_default()
        .starts_with("FAIL: "));
}

#[test]
fn compare_smoke_plumcore_and_flood() {
    ensure_plumcore();
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("cmp.json");
    let out = run(&[
        "compare",
        "--nodes",
        "4",
        "--rate",
        "100",
        "--warmup",
        "1s",
        "--duration",
        "1s",
        "--no-search",
        "--json",
        j.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let v = json(&j);
    assert_machine(&v);
    let reports = v["reports"].as_array().unwrap();
    // plumcore and its flood mode always; memberlist-plumtree and nats-server when
    // this machine has them (else `not_run` says why).
    let optional = usize::from(plumcore_bench::memberlist::binary().is_some())
        + usize::from(plumcore_bench::natsserver::binary().is_some());
    assert_eq!(reports.len(), 2 + optional, "{v}");
    assert_eq!(reports[0]["system"], "plumcore");
    assert_eq!(reports[1]["system"], "plumcore --flood");
    if plumcore_bench::natsserver::binary().is_some() {
        let n = reports
            .iter()
            .find(|r| r["system"] == "nats-server")
            .expect("nats-server ran");
        assert_eq!(n["reliability"]["mean"].as_f64(), Some(1.0), "{n}");
    }
    for r in reports {
        assert_eq!(r["reliability"]["mean"].as_f64(), Some(1.0), "{r}");
    }
    // Flooding sends every payload over every link; the tree never sends more. When
    // the overlay has a cycle (more edges than a tree's n - 1), flooding is redundant.
    let rmr = |r: &serde_json::Value| r["rmr"].as_f64().unwrap();
    assert!(rmr(&reports[1]) >= rmr(&reports[0]) - 1e-9, "{v}");
    let edges = reports[1]["overlay_degree_mean"].as_f64().unwrap() * 4.0 / 2.0;
    if edges > 3.0 + 1e-9 {
        assert!(rmr(&reports[1]) > 0.0, "{v}");
    }
    assert_eq!(reports[1]["prune_sent"].as_f64(), Some(0.0));
    assert_eq!(reports[1]["ihave_sent"].as_f64(), Some(0.0));
    // memberlist-plumtree's binary is not built here: said so, with how to build it.
    assert!(
        v["not_run"].as_str().unwrap().contains("cargo build"),
        "{v}"
    );
}

#[test]
fn blast_smoke() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("b.json");
    let out = run(&[
        "blast",
        "--duration",
        "1s",
        "--runs",
        "1",
        "--json",
        j.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let v = json(&j);
    assert_machine(&v);
    assert!(v["runs"][0]["plumcore_msgs_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["runs"][0]["raw_packets_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["ratio_vs_raw"].as_f64().unwrap() > 0.0);
}

#[test]
fn idle_smoke() {
    ensure_plumcore();
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("i.json");
    let out = run(&[
        "idle",
        "--duration",
        "1s",
        "--settle",
        "500ms",
        "--runs",
        "1",
        "--shards",
        "1",
        "--json",
        j.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let v = json(&j);
    assert_machine(&v);
    let r = &v["runs"][0];
    assert_eq!(r["shards"], 1);
    assert!(r["rss_mib"].as_f64().unwrap() > 0.0);
    assert!(r["cpu_percent_of_core"].as_f64().unwrap() >= 0.0);
}

#[test]
fn scale_smoke() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("s.json");
    let p = dir.path().join("s.svg");
    let out = run(&[
        "scale",
        "--duration",
        "1s",
        "--runs",
        "1",
        "--max-shards",
        "2",
        "--json",
        j.to_str().unwrap(),
        "--plot",
        p.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let v = json(&j);
    assert_machine(&v);
    let points = v["points"].as_array().unwrap();
    assert!(!points.is_empty());
    assert_eq!(points[0]["shards"].as_u64(), Some(1));
    assert_eq!(points[0]["efficiency"].as_f64(), Some(1.0));
    for p in points {
        assert!(p["median_msgs_per_s"].as_f64().unwrap() > 0.0, "{p}");
    }
    assert!(std::fs::read_to_string(&p).unwrap().contains("<circle"));
}

#[test]
fn soak_smoke() {
    ensure_plumcore();
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("s.json");
    let p = dir.path().join("s.svg");
    let out = run(&[
        "soak",
        "--nodes",
        "3",
        "--rate",
        "100",
        "--duration",
        "3s",
        "--sample-every",
        "500ms",
        "--warmup",
        "1s",
        "--json",
        j.to_str().unwrap(),
        "--plot",
        p.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("rss_mib") && table.contains("cache_bytes"),
        "{table}"
    );
    let v = json(&j);
    assert_machine(&v);
    assert_eq!(v["published"].as_u64(), Some(300));
    // Every node sampled several times, each with every series.
    let samples = v["samples"].as_array().unwrap();
    assert!(samples.len() >= 3 * 4, "{} samples", samples.len());
    let series = v["series"].as_array().unwrap().len();
    assert!(samples
        .iter()
        .all(|s| s["values"].as_array().unwrap().len() == series - 1
            && s["rss_mib"].as_f64().unwrap() > 1.0));
    // The payload cache filled up while publishing (TTL 60 s: nothing expired yet).
    let last_cache = samples
        .iter()
        .rev()
        .find(|s| s["node"] == 0)
        .map(|s| s["values"][2].as_f64().unwrap())
        .unwrap();
    assert!(last_cache > 100.0, "cache entries {last_cache}");
    assert_eq!(v["worst"].as_array().unwrap().len(), series);
    assert!(std::fs::read_to_string(&p).unwrap().contains("<svg"));
}

#[test]
fn bad_arguments_exit_2() {
    let out = run(&["cluster", "--payload", "8"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--payload"));
    let out = run(&["cluster", "--plot", "x.png"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["cluster", "--duration", "soon"]);
    assert_eq!(out.status.code(), Some(2));
}
