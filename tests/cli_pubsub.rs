//! `plumcore pub` and `plumcore sub` as a user runs them: child processes against
//! one node's client port. A wildcard subscriber gets exactly the messages
//! published, stdin lines arrive as raw lines, and the two usage failures (a bad
//! subject, an unreachable server) exit 2 and 1 with one line each.

mod common;

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::cluster::{free_tcp, spawn_node, wait_until, NodeSpec};
use plumcore::harness::process::NodeProcess;

/// A child process, killed and reaped when dropped (the harness's [`NodeProcess`]),
/// so a failing assertion leaves no `plumcore sub` behind. Its stderr is collected as
/// it comes, so a test can wait for a line.
struct Kid {
    child: NodeProcess,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_done: Option<JoinHandle<()>>,
}

/// Starts `plumcore ARGS`, stdout and stderr read on threads so a full pipe never
/// stalls it.
fn plumcore(args: &[&str], stdin: Stdio) -> Kid {
    let mut child = Command::new(env!("CARGO_BIN_EXE_plumcore"))
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start plumcore");
    let mut out = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let mut err = child.stderr.take().unwrap();
    let sink = stderr.clone();
    let stderr_done = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = err.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    Kid {
        child: NodeProcess::new(child),
        stdout: Some(stdout),
        stderr,
        stderr_done: Some(stderr_done),
    }
}

impl Kid {
    fn stderr_text(&self) -> String {
        text(&self.stderr.lock().unwrap())
    }

    /// Waits up to `limit` for the exit (the guard kills it past that).
    fn finish(mut self, limit: Duration, what: &str) -> Output {
        let t = Instant::now();
        let status: ExitStatus = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            assert!(
                t.elapsed() < limit,
                "{what}: still running after {limit:?}; stderr: {}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = self.stdout.take().map(|h| h.join().unwrap());
        if let Some(h) = self.stderr_done.take() {
            h.join().unwrap();
        }
        Output {
            status,
            stdout: stdout.unwrap_or_default(),
            stderr: self.stderr.lock().unwrap().clone(),
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn pub_and_sub_through_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut taken = Vec::new();
    let client = free_tcp().to_string();
    let _node = spawn_node(
        &NodeSpec {
            id: 1,
            shards: 1,
            seeds: &[],
            bind: None,
            deliveries: "node1.ndjson".into(),
            extra: &["--client-listen", &client],
        },
        dir.path(),
        &mut taken,
    );
    let limit = Duration::from_secs(20);
    let wild = plumcore(
        &[
            "sub", "cli.>", "--server", &client, "--count", "20", "--format", "ndjson",
        ],
        Stdio::null(),
    );
    let raw = plumcore(
        &[
            "sub",
            "cli.lines",
            "--server",
            &client,
            "--count",
            "3",
            "--format",
            "raw",
            "--timeout-secs",
            "20",
        ],
        Stdio::null(),
    );
    // `plumcore sub` says so once the node has confirmed its SUBs (a PING answered
    // after them). The `plumtree_client_subscriptions` gauge cannot tell: it is only
    // refreshed when a message is routed.
    for (sub, what) in [(&wild, "cli.>"), (&raw, "cli.lines")] {
        wait_until(&format!("sub {what} to subscribe"), limit, || {
            sub.stderr_text().contains("subscribed to")
        });
    }

    let publish = plumcore(
        &["pub", "cli.test", "--server", &client, "--count", "20"],
        Stdio::null(),
    )
    .finish(limit, "pub --count 20");
    assert!(publish.status.success(), "pub: {}", text(&publish.stderr));
    let summary = text(&publish.stderr);
    assert!(
        summary.starts_with("published 20 messages to cli.test in "),
        "{summary}"
    );

    let out = wild.finish(limit, "sub 'cli.>' --count 20");
    assert!(out.status.success(), "sub: {}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(lines.len(), 20, "{}", text(&out.stdout));
    for (k, v) in lines.iter().enumerate() {
        assert_eq!(v["subject"], "cli.test", "{v}");
        assert!(
            v["payload"].as_str().is_some_and(|p| p.starts_with("msg ")),
            "{v}"
        );
        assert_eq!(
            v["size"],
            v["payload"].as_str().unwrap().len(),
            "line {k}: {v}"
        );
    }

    let mut lines_pub = plumcore(&["pub", "cli.lines", "--server", &client], Stdio::piped());
    {
        let mut stdin = lines_pub.child.child_mut().stdin.take().unwrap();
        stdin
            .write_all(b"first line\nsecond\nthird, last\n")
            .unwrap();
    }
    let publish = lines_pub.finish(limit, "pub from stdin");
    assert!(publish.status.success(), "pub: {}", text(&publish.stderr));
    assert!(
        text(&publish.stderr).starts_with("published 3 messages to cli.lines"),
        "{}",
        text(&publish.stderr)
    );
    let out = raw.finish(limit, "sub cli.lines --count 3 --format raw");
    assert!(out.status.success(), "sub: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "first line\nsecond\nthird, last\n");
}

#[test]
fn pub_refuses_a_bad_subject_with_exit_2() {
    let out = plumcore(&["pub", "bad..subject", "--count", "1"], Stdio::null())
        .finish(Duration::from_secs(10), "pub bad..subject");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("bad..subject"), "{err}");
}

#[test]
fn pub_names_an_unreachable_server_with_exit_1() {
    let out = plumcore(
        &["pub", "x", "--server", "127.0.0.1:1", "--count", "1"],
        Stdio::null(),
    )
    .finish(Duration::from_secs(15), "pub to 127.0.0.1:1");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");
}
