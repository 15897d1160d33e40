//! A deliveries FIFO whose reader stalls: the node's delivery log keeps what the
//! reader has not taken, so after a 40 s stall during which 90,000 messages were
//! published the FIFO yields every one of them exactly once; with a small retention a
//! stall past it yields `{"lagged":N}` lines, and delivered + missed = published
//! exactly. Meanwhile the other node's deliveries complete on time.

mod common;

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::cluster::{active_view, read_deliveries, spawn_node, wait_until, Node, NodeSpec};

fn mkfifo(path: &Path) {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path that lives across the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

/// Opens the FIFO's read end without waiting for a writer (the node opens the write
/// end at start-up, which needs a reader to exist).
fn open_reader(path: &Path) -> File {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .unwrap()
}

/// Starts node `id` writing deliveries to `deliveries` (a path under `dir`).
fn start(
    id: u64,
    seeds: &[std::net::SocketAddr],
    dir: &Path,
    file: &str,
    extra: &[&str],
    taken: &mut Vec<u16>,
) -> Node {
    let mut args = vec!["--client-listen", "off"];
    args.extend_from_slice(extra);
    spawn_node(
        &NodeSpec {
            id,
            shards: 1,
            seeds,
            bind: None,
            deliveries: file.to_string(),
            extra: &args,
        },
        dir,
        taken,
    )
}

/// Publishes `count` messages of 64 bytes through `POST /broadcast/batch` on `node`,
/// 1,000 a request, as fast as the node takes them.
fn publish(node: &Node, count: usize, tag: &str) {
    for start in (0..count).step_by(1000) {
        let mut body = Vec::new();
        for k in start..(start + 1000).min(count) {
            let mut p = format!("{tag}-{k:07}-").into_bytes();
            p.resize(64, b'.');
            body.extend_from_slice(&(p.len() as u32).to_le_bytes());
            body.extend_from_slice(&p);
        }
        let url = format!("http://{}/broadcast/batch?topic=fifo.test", node.admin);
        let mut tries = 0;
        loop {
            match ureq::post(&url).send_bytes(&body) {
                Ok(r) => {
                    let v: serde_json::Value = r.into_json().unwrap();
                    let accepted = v["accepted"].as_u64().unwrap() as usize;
                    assert_eq!(accepted, (start + 1000).min(count) - start, "{v}");
                    break;
                }
                // A full shard queue on the first entry: wait and resend.
                Err(ureq::Error::Status(503, _)) if tries < 200 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("batch refused: {e}"),
            }
        }
    }
}

/// Reads the FIFO until `done` says its lines are complete (or `limit` passed);
/// returns (delivery ids with their counts, sum of lagged counts).
fn drain(
    fifo: &mut File,
    limit: Duration,
    done: impl Fn(usize, u64) -> bool,
) -> (HashMap<String, usize>, u64) {
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut lagged = 0u64;
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let deadline = Instant::now() + limit;
    while !done(ids.values().sum(), lagged) && Instant::now() < deadline {
        match fifo.read(&mut buf) {
            Ok(0) => std::thread::sleep(Duration::from_millis(10)),
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("reading the FIFO: {e}"),
        }
        while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
            if let Some(id) = v["id"].as_str() {
                *ids.entry(id.to_string()).or_default() += 1;
            } else if let Some(n) = v["lagged"].as_u64() {
                lagged += n;
            }
        }
    }
    (ids, lagged)
}

fn fifo_in(dir: &Path) -> PathBuf {
    let p = dir.join("a.fifo");
    mkfifo(&p);
    p
}

#[test]
fn a_fifo_reader_that_stalls_40_s_gets_all_90000_messages_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = fifo_in(dir.path());
    let mut fifo = open_reader(&path);
    // A burst of 90,000 overflows a receive buffer; on a two-node tree every loss is
    // repaired by anti-entropy, whose default 256 pulls/s would take minutes.
    let cfg = dir.path().join("repair.toml");
    std::fs::write(&cfg, "[protocol]\nanti_entropy_max_pulls = 8192\n").unwrap();
    let cfg_path = cfg.to_str().unwrap().to_string();
    let extra = ["--config", cfg_path.as_str()];
    let mut taken = Vec::new();
    let a = start(1, &[], dir.path(), "a.fifo", &extra, &mut taken);
    let b = start(2, &[a.bind], dir.path(), "b.ndjson", &extra, &mut taken);
    wait_until("the nodes to link", Duration::from_secs(30), || {
        active_view(a.admin).is_some_and(|v| !v.is_empty())
            && active_view(b.admin).is_some_and(|v| !v.is_empty())
    });
    let published = 90_000;
    let stall = Instant::now();
    publish(&b, published, "stall");
    eprintln!("published {published} in {:?}", stall.elapsed());
    // The other node completes on time while A's reader stalls.
    wait_until(
        "node b to deliver all during the stall",
        Duration::from_secs(30),
        || read_deliveries(&b.deliveries).len() == published,
    );
    eprintln!("node b complete after {:?}", stall.elapsed());
    // Node A, the FIFO's, delivers everything too while its reader stalls.
    wait_until(
        "node a to deliver all during the stall",
        Duration::from_secs(35),
        || {
            common::cluster::metric_sum(a.admin, "plumtree_messages_delivered_total", None)
                >= published as f64
        },
    );
    eprintln!("node a complete after {:?}", stall.elapsed());
    let rest = Duration::from_secs(40).saturating_sub(stall.elapsed());
    std::thread::sleep(rest);
    let (ids, lagged) = drain(&mut fifo, Duration::from_secs(60), |n, _| n >= published);
    assert_eq!(lagged, 0, "nothing fell past the retention");
    assert_eq!(ids.len(), published, "every message, after the stall");
    assert!(ids.values().all(|&n| n == 1), "each exactly once");
}

#[test]
fn a_stall_past_the_retention_is_reported_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = fifo_in(dir.path());
    let mut fifo = open_reader(&path);
    let cfg = dir.path().join("small.toml");
    // About 1,000 deliveries of 64 bytes (each counted at payload + topic + 96).
    std::fs::write(&cfg, "delivery_retention_bytes = 170000\n").unwrap();
    let cfg_path = cfg.to_str().unwrap().to_string();
    let mut taken = Vec::new();
    let a = start(
        1,
        &[],
        dir.path(),
        "a.fifo",
        &["--config", &cfg_path],
        &mut taken,
    );
    let published = 20_000;
    publish(&a, published, "small");
    std::thread::sleep(Duration::from_secs(2));
    let (ids, lagged) = drain(&mut fifo, Duration::from_secs(60), |n, l| {
        n as u64 + l >= published as u64
    });
    eprintln!("delivered {} + lagged {lagged}", ids.len());
    assert!(lagged > 0, "the stall outlasted the retention");
    assert!(ids.values().all(|&n| n == 1), "each exactly once");
    assert_eq!(
        ids.len() as u64 + lagged,
        published as u64,
        "delivered + missed = published"
    );
    let m = common::cluster::metric_sum(a.admin, "plumtree_delivery_log_dropped_total", None);
    assert!(m >= lagged as f64, "log drops counted: {m}");
}
