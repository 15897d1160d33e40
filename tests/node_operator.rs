//! The operator surface on a real node process: loops paused and resumed over HTTP
//! (`POST /loops/{name}/pause|resume`), the LoopManager totals and per-loop
//! `enabled`/`interval_ms` in `/status`, and the per-task panic and restart counters
//! raised by `--chaos` injections.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::cluster::{admin_request, get_json, metric_sum, start_node, wait_until};

/// `(run_count, paused, enabled, interval_ms)` of loop `name` in `/status`.
fn loop_state(admin: SocketAddr, name: &str) -> Option<(u64, bool, bool, u64)> {
    let st = get_json(admin, "/status")?;
    let l = st["loops"]
        .as_array()?
        .iter()
        .find(|l| l["name"] == name)?
        .clone();
    Some((
        l["run_count"].as_u64()?,
        l["paused"].as_bool()?,
        l["enabled"].as_bool()?,
        l["interval_ms"].as_u64()?,
    ))
}

fn post(admin: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    admin_request(admin, "POST", path, None, None)
}

fn task_metric(admin: SocketAddr, family: &str, task: &str) -> f64 {
    metric_sum(admin, &format!("{family}{{task=\"{task}\"}}"), None)
}

#[test]
fn pausing_seen_cleanup_over_http_stops_its_runs_and_resuming_restarts_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut taken = Vec::new();
    let node = start_node(1, 1, None, dir.path(), &[], &mut taken);
    let admin = node.admin;
    wait_until(
        "seen_cleanup and the shard loops",
        Duration::from_secs(20),
        || {
            loop_state(admin, "seen_cleanup").is_some_and(|s| s.0 >= 1)
                && loop_state(admin, "shard-0/tick").is_some()
        },
    );
    let (_, paused, enabled, interval_ms) = loop_state(admin, "seen_cleanup").unwrap();
    assert!(!paused && enabled);
    assert_eq!(interval_ms, 1000);

    // LoopManager totals.
    let st = get_json(admin, "/status").unwrap();
    let lm = &st["loop_manager"];
    let total = st["loops"].as_array().unwrap().len() as u64;
    assert_eq!(lm["total_loops"].as_u64(), Some(total), "{lm}");
    assert_eq!(lm["paused_loops"].as_u64(), Some(0));
    assert!(lm["running_loops"].as_u64().unwrap() >= 4, "{lm}");
    assert!(lm["error_loops"].is_u64());

    let (status, body) = post(admin, "/loops/seen_cleanup/pause");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["paused"], true);
    // Visible at once, without waiting for the next stats round.
    let (runs, paused, _, _) = loop_state(admin, "seen_cleanup").unwrap();
    assert!(paused, "pause shows in /status right away");
    let st = get_json(admin, "/status").unwrap();
    assert_eq!(st["loop_manager"]["paused_loops"], 1);
    // Three nominal periods: the count must not move.
    std::thread::sleep(Duration::from_millis(3300));
    let (after, still, _, _) = loop_state(admin, "seen_cleanup").unwrap();
    assert!(still);
    assert_eq!(after, runs, "a paused loop does not run");
    // Other loops keep running meanwhile.
    let stats_before = loop_state(admin, "stats").unwrap().0;
    std::thread::sleep(Duration::from_millis(600));
    assert!(loop_state(admin, "stats").unwrap().0 > stats_before);

    let (status, body) = post(admin, "/loops/seen_cleanup/resume");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["paused"], false);
    assert!(!loop_state(admin, "seen_cleanup").unwrap().1);
    wait_until("seen_cleanup to run again", Duration::from_secs(10), || {
        loop_state(admin, "seen_cleanup").is_some_and(|s| s.0 > runs)
    });

    // Unknown loops, wrong methods, shard loops.
    assert_eq!(post(admin, "/loops/nope/pause").0, 404);
    assert_eq!(post(admin, "/loops/seen_cleanup/explode").0, 404);
    assert_eq!(
        admin_request(admin, "GET", "/loops/seen_cleanup/pause", None, None).0,
        405
    );
    assert_eq!(post(admin, "/loops/shard-0/tick/pause").0, 409);
    let (status, loops) = admin_request(admin, "GET", "/loops", None, None);
    assert_eq!(status, 200);
    // By now the shard's loops have reported too (control 4 + shard tick and
    // anti-entropy).
    let listed = loops["loops"].as_array().unwrap().len() as u64;
    assert_eq!(loops["total_loops"].as_u64(), Some(listed));
    assert!(listed >= total && listed >= 6, "{loops}");
}

#[test]
fn chaos_panics_count_once_per_task_and_restarts_count_for_supervised_children() {
    let dir = tempfile::tempdir().unwrap();
    let mut taken = Vec::new();
    let node = start_node(2, 1, None, dir.path(), &["--chaos"], &mut taken);
    let admin = node.admin;
    wait_until("loops to report", Duration::from_secs(20), || {
        loop_state(admin, "seen_cleanup").is_some_and(|s| s.0 >= 1)
    });
    let p = "plumtree_task_panics_total";
    let r = "plumtree_task_restarts_total";
    // Every loop has a series from the start (bounded label set: the node's tasks).
    assert_eq!(task_metric(admin, p, "seen_cleanup"), 0.0);
    assert_eq!(task_metric(admin, r, "seen_cleanup"), 0.0);
    let m = ureq::get(&format!("http://{admin}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(m.contains("plumtree_task_panics_total{task=\"maintenance\"} 0"));

    // A loop: caught and run again by its runner; one panic, no supervisor restart.
    let (status, body) = post(admin, "/chaos/panic/seen_cleanup");
    assert_eq!(status, 200, "{body}");
    wait_until(
        "the loop panic to be counted",
        Duration::from_secs(10),
        || task_metric(admin, p, "seen_cleanup") >= 1.0,
    );
    // Exactly one, and it stays one.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(task_metric(admin, p, "seen_cleanup"), 1.0);
    assert_eq!(task_metric(admin, r, "seen_cleanup"), 0.0);
    let st = get_json(admin, "/status").unwrap();
    let l = st["loops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "seen_cleanup")
        .unwrap()
        .clone();
    assert_eq!(l["panic_count"], 1, "{l}");

    // The control core's receive path: a supervised, permanent child, restarted.
    let (status, body) = post(admin, "/chaos/panic/control_receiver");
    assert_eq!(status, 200, "{body}");
    wait_until(
        "the child restart to be counted",
        Duration::from_secs(10),
        || task_metric(admin, r, "control_receiver") >= 1.0,
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(task_metric(admin, p, "control_receiver"), 1.0);
    assert_eq!(task_metric(admin, r, "control_receiver"), 1.0);
    assert_eq!(task_metric(admin, p, "seen_cleanup"), 1.0);
    // The node still answers and the loop runs on.
    let t = Instant::now();
    let before = loop_state(admin, "seen_cleanup").unwrap().0;
    wait_until(
        "seen_cleanup to keep running",
        Duration::from_secs(10),
        || loop_state(admin, "seen_cleanup").is_some_and(|s| s.0 > before),
    );
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn shutdown_statistics_count_tasks_not_threads() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let mut taken = Vec::new();
    let port = common::cluster::free_udp_ports(3, &mut taken);
    let admin = common::cluster::free_tcp();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_plumcore"));
    cmd.args(["node", "--node-id", "3", "--shards", "2"])
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(["--admin", &admin.to_string()])
        .args(["--log-level", "error"])
        .arg("--deliveries")
        .arg(dir.path().join("d.ndjson"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = common::cluster::spawn_ready(&mut cmd, admin, 2);
    wait_until("the node to answer", Duration::from_secs(20), || {
        loop_state(admin, "shard-1/tick").is_some()
    });
    let stopped = child.terminate(Duration::from_secs(20)).unwrap();
    assert_ne!(
        stopped,
        plumcore::harness::process::Stopped::Killed,
        "node did not stop"
    );
    let err = common::cluster::read_stderr(&mut child);
    let line = err
        .lines()
        .find_map(|l| l.strip_prefix("plumcore: shutdown "))
        .unwrap_or_else(|| panic!("no shutdown line in {err}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["status"], "completed", "{v}");
    // 3 executors (control + 2 shards) but more tasks: the control core's 4 loops
    // and its receive supervisor, each shard's 2 loops and its receive supervisor.
    let initial = v["initial_tasks"].as_u64().unwrap();
    assert!(initial >= 11, "{v}");
    assert_eq!(v["completed_tasks"].as_u64(), Some(initial));
    assert_eq!(v["remaining_tasks"], 0);
}

#[test]
fn disabled_loops_are_listed_with_enabled_false() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("off.toml");
    std::fs::write(
        &cfg,
        "[protocol]\nmaintenance_interval = 0\nanti_entropy_interval = 0\n",
    )
    .unwrap();
    let mut taken = Vec::new();
    let node = start_node(
        4,
        1,
        None,
        dir.path(),
        &["--config", cfg.to_str().unwrap()],
        &mut taken,
    );
    let admin = node.admin;
    wait_until("loops to report", Duration::from_secs(20), || {
        loop_state(admin, "shard-0/anti_entropy").is_some() && loop_state(admin, "stats").is_some()
    });
    std::thread::sleep(Duration::from_millis(500));
    for name in ["maintenance", "shard-0/anti_entropy"] {
        let (runs, paused, enabled, _) = loop_state(admin, name).unwrap();
        assert!(!enabled && !paused, "{name}");
        assert_eq!(runs, 0, "{name} never runs");
    }
    let st = get_json(admin, "/status").unwrap();
    let total = st["loop_manager"]["total_loops"].as_u64().unwrap();
    let running = st["loop_manager"]["running_loops"].as_u64().unwrap();
    assert_eq!(total, 6, "{}", st["loop_manager"]);
    assert_eq!(
        running, 4,
        "disabled loops do not run: {}",
        st["loop_manager"]
    );
}
