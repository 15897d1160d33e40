//! What a new operator runs into, on the real binary: each mistake gets one line that
//! names the key, path or port (exit 2 for bad input), logs off a terminal carry no
//! ANSI codes, `--log-format json` writes JSON lines, broadcasts report real sizes and
//! refuse empty payloads, `plumcore members` takes URLs and a default address, and
//! `--version` names the commit.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::cluster::{admin_request, free_udp_ports, get_json, wait_until};
use plumcore::harness::process::{NodeProcess, Stopped};

fn plumcore(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plumcore"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run plumcore")
}

fn stderr_line(o: &Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    let lines: Vec<&str> = e.lines().filter(|l| l.starts_with("plumcore:")).collect();
    assert_eq!(lines.len(), 1, "one error line expected in {e:?}");
    lines[0].to_string()
}

fn free_admin() -> SocketAddr {
    common::cluster::free_tcp()
}

#[test]
fn bad_input_gets_one_line_naming_the_culprit() {
    let dir = tempfile::tempdir().unwrap();

    let o = plumcore(&["node", "--log-level", "warnn", "--bind", "127.0.0.1:0"]);
    assert_eq!(o.status.code(), Some(2));
    let l = stderr_line(&o);
    assert!(l.contains("`log_level`") && l.contains("warnn"), "{l}");

    let cfg = dir.path().join("loud.toml");
    std::fs::write(&cfg, "log_level = \"loud\"\n").unwrap();
    let o = plumcore(&["node", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_line(&o).contains("`loud` is not a level"));

    let cfg = dir.path().join("bind.toml");
    std::fs::write(&cfg, "bind = 127.0.0.1:7000\n").unwrap();
    let o = plumcore(&["node", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let l = stderr_line(&o);
    assert!(l.contains("key `bind`") && l.contains("quotes"), "{l}");

    let bad = dir.path().join("no/such/dir/d.ndjson");
    let admin = free_admin().to_string();
    let o = plumcore(&[
        "node",
        "--bind",
        "127.0.0.1:0",
        "--admin",
        &admin,
        "--log-level",
        "error",
        "--deliveries",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let l = stderr_line(&o);
    assert!(l.contains(bad.to_str().unwrap()), "{l}");

    // Shard 0 binds --bind port + 1; hold that port.
    let mut taken = Vec::new();
    let port = free_udp_ports(2, &mut taken);
    let _hold = UdpSocket::bind(("127.0.0.1", port + 1)).unwrap();
    let o = plumcore(&[
        "node",
        "--bind",
        &format!("127.0.0.1:{port}"),
        "--shards",
        "1",
        "--admin",
        &admin,
        "--log-level",
        "error",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let l = stderr_line(&o);
    assert!(
        l.contains(&format!("127.0.0.1:{}", port + 1)) && l.contains("--bind port + 1"),
        "{l}"
    );

    // Names: over 64 bytes, or with a control character, name the key.
    let long = "n".repeat(65);
    for bad in [long.as_str(), "tab\there"] {
        let o = plumcore(&["node", "--node-name", bad, "--bind", "127.0.0.1:0"]);
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
        assert!(stderr_line(&o).contains("`node_name`"), "{bad:?}");
    }
    let o = plumcore(&["node", "--node-id", &format!("a{long}")]);
    assert_eq!(o.status.code(), Some(2));

    let o = plumcore(&["--version"]);
    let v = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(v.starts_with("plumcore ") && v.contains("(commit "), "{v}");

    // A dead admin address: one line, exit 1; URLs are accepted.
    let dead = free_admin();
    let o = plumcore(&["members", "--admin", &format!("http://{dead}/")]);
    assert_eq!(o.status.code(), Some(1));
    let l = stderr_line(&o);
    assert!(l.contains(&dead.to_string()), "{l}");
    assert_eq!(l.matches("refused").count(), 1, "said once: {l}");
}

/// Starts a node with stderr piped; returns it and its admin address.
fn node_with_piped_stderr(extra: &[&str], taken: &mut Vec<u16>) -> (NodeProcess, SocketAddr) {
    let port = free_udp_ports(2, taken);
    let admin = free_admin();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_plumcore"));
    cmd.args(["node", "--shards", "1"])
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(["--admin", &admin.to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    (common::cluster::spawn_ready(&mut cmd, admin, 1), admin)
}

/// SIGTERM, wait (bounded), and return everything written to stderr.
fn stop(mut child: NodeProcess) -> String {
    let stopped = child.terminate(Duration::from_secs(20)).unwrap();
    assert_ne!(stopped, Stopped::Killed, "node did not stop");
    common::cluster::read_stderr(&mut child)
}

#[test]
fn logs_off_a_terminal_have_no_ansi_and_json_is_json() {
    let mut taken = Vec::new();
    let (child, admin) = node_with_piped_stderr(&["--log-level", "info"], &mut taken);
    wait_until("node", Duration::from_secs(20), || {
        get_json(admin, "/status").is_some()
    });
    let err = stop(child);
    assert!(err.contains("plumcore node running"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "ANSI escape in piped logs: {err:?}"
    );

    let (child, admin) =
        node_with_piped_stderr(&["--log-format", "json", "--log-level", "info"], &mut taken);
    wait_until("node", Duration::from_secs(20), || {
        get_json(admin, "/status").is_some()
    });
    let err = stop(child);
    let mut n = 0;
    for line in err.lines().filter(|l| !l.starts_with("plumcore: ")) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
        n += 1;
    }
    assert!(n >= 2, "{err}");
    assert!(!err.contains('\u{1b}'));
}

#[test]
fn broadcasts_report_real_sizes_and_refuse_empty_payloads() {
    let mut taken = Vec::new();
    let (child, admin) = node_with_piped_stderr(&["--log-level", "error"], &mut taken);
    wait_until("node", Duration::from_secs(20), || {
        get_json(admin, "/status").is_some()
    });
    let big = vec![b'x'; 1_000_000];
    let r = ureq::post(&format!("http://{admin}/broadcast"))
        .timeout(Duration::from_secs(10))
        .send_bytes(&big);
    match r {
        Err(ureq::Error::Status(413, resp)) => {
            let body = resp.into_string().unwrap();
            assert!(
                body.contains("payload of 1000000 bytes exceeds max_payload"),
                "{body}"
            );
        }
        // The node may close before the client finished sending a refused body.
        Err(ureq::Error::Transport(_)) => {}
        other => panic!("1 MB broadcast: {other:?}"),
    }
    let (status, body) = admin_request(admin, "POST", "/broadcast", None, None);
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("allow_empty"));
    let members = plumcore(&["members", "--admin", &format!("http://{admin}")]);
    assert!(members.status.success(), "{members:?}");
    assert!(String::from_utf8_lossy(&members.stdout).starts_with("node "));
    stop(child);

    let (child, admin) =
        node_with_piped_stderr(&["--log-level", "error", "--allow-empty"], &mut taken);
    wait_until("node", Duration::from_secs(20), || {
        get_json(admin, "/status").is_some()
    });
    assert_eq!(
        admin_request(admin, "POST", "/broadcast", None, None).0,
        200
    );
    stop(child);
}
