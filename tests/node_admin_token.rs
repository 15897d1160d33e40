//! A real node started with `--admin-token-file`: every admin route answers 401
//! without `Authorization: Bearer <token>` (or with a wrong one) and works with it; a
//! token file with no token stops the node with exit code 2 naming the key.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::cluster::{admin_request, metric_sum, spawn_node, wait_until, NodeSpec};

#[test]
fn admin_token_required_on_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, "tok-3f9a1c\n").unwrap();
    let extra = ["--admin-token-file", token_file.to_str().unwrap()];
    let mut taken = Vec::new();
    let spec = NodeSpec {
        id: 1,
        shards: 1,
        seeds: &[],
        bind: None,
        deliveries: "node1.ndjson".into(),
        extra: &extra,
    };
    let node = spawn_node(&spec, dir.path(), &mut taken);
    let token = Some("tok-3f9a1c");
    wait_until("the admin plane", Duration::from_secs(30), || {
        std::net::TcpStream::connect(node.admin).is_ok()
    });
    for (method, path) in [
        ("GET", "/status"),
        ("GET", "/peers"),
        ("GET", "/metrics"),
        ("POST", "/broadcast"),
        ("POST", "/chaos/panic/stats"),
    ] {
        for bad in [None, Some("tok-3f9a1"), Some("wrong")] {
            let (status, _) = admin_request(node.admin, method, path, None, bad);
            assert_eq!(status, 401, "{method} {path} with {bad:?}");
        }
    }
    let (status, v) = admin_request(node.admin, "GET", "/status", None, token);
    assert_eq!(status, 200);
    assert_eq!(v["node_id"], "0000000000000001");
    let (status, v) = admin_request(
        node.admin,
        "POST",
        "/broadcast",
        Some(&serde_json::json!("hello")),
        token,
    );
    assert_eq!(status, 200, "{v}");
    wait_until(
        "the broadcast to be counted",
        Duration::from_secs(10),
        || metric_sum(node.admin, "plumtree_messages_broadcast_total", token) >= 1.0,
    );
    // Not started with --chaos: fault injection stays off even with the token.
    let (status, _) = admin_request(node.admin, "GET", "/chaos/faults", None, token);
    assert_eq!(status, 403);
}

#[test]
fn empty_token_file_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("empty.token");
    std::fs::write(&token_file, "\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_plumcore"))
        .args(["node", "--bind", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--admin-token-file", token_file.to_str().unwrap()])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin_token_file"), "{err}");
}
