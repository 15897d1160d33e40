//! Advertise addresses on real processes: nodes bound to the wildcard address describe
//! themselves by the address that routes to their first seed (here 127.0.0.1), so
//! nobody gossips `0.0.0.0` and no node counts a bad contact; `--advertise` is shown in
//! `/status`, and an unreachable one (wildcard or port 0) exits 2 naming the key.
//! (Network-namespace hosts and port mapping, issue 15 item 7: `tests/node_multihost.rs`.)

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::cluster::{free_udp_ports, get_json, metric_sum, wait_until};
use plumcore::harness::launch::NodeLaunch;
use plumcore::harness::process::NodeProcess;

/// A started node (killed when dropped) and its addresses.
struct Proc {
    _child: NodeProcess,
    port: u16,
    admin: SocketAddr,
}

fn spawn(ip: &str, extra: &[&str], seed: Option<u16>, taken: &mut Vec<u16>) -> Proc {
    let port = free_udp_ports(2, taken);
    let admin = common::cluster::free_tcp();
    let bind: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let mut launch = NodeLaunch::new(env!("CARGO_BIN_EXE_plumcore"), bind, admin, 1);
    launch.extra = extra.iter().map(Into::into).collect();
    launch.seeds = seed
        .map(|s| SocketAddr::from(([127, 0, 0, 1], s)))
        .into_iter()
        .collect();
    Proc {
        _child: launch.start().expect("start plumcore node"),
        port,
        admin,
    }
}

fn peers(admin: SocketAddr) -> usize {
    get_json(admin, "/peers")
        .and_then(|v| v.as_array().map(|a| a.len()))
        .unwrap_or(0)
}

#[test]
fn wildcard_bound_nodes_advertise_a_routable_address() {
    let mut taken = Vec::new();
    let a = spawn("127.0.0.1", &[], None, &mut taken);
    let b = spawn("0.0.0.0", &[], Some(a.port), &mut taken);
    let c = spawn("0.0.0.0", &[], Some(a.port), &mut taken);
    wait_until("b's status", Duration::from_secs(20), || {
        get_json(b.admin, "/status").is_some()
    });
    let st = get_json(b.admin, "/status").unwrap();
    assert_eq!(st["advertise"], format!("127.0.0.1:{}", b.port));
    wait_until("the three to link", Duration::from_secs(30), || {
        [&a, &b, &c].iter().all(|n| peers(n.admin) == 2)
    });
    // c learned b from a (a forwarded join or a shuffle), by a usable address.
    let m = get_json(c.admin, "/members").unwrap();
    let addrs: Vec<String> = ["active", "passive"]
        .iter()
        .flat_map(|v| m[*v].as_array().cloned().unwrap_or_default())
        .filter_map(|x| x["addr"].as_str().map(str::to_string))
        .collect();
    assert!(
        addrs.contains(&format!("127.0.0.1:{}", b.port)),
        "{addrs:?}"
    );
    assert!(!addrs.iter().any(|a| a.starts_with("0.0.0.0")), "{addrs:?}");
    std::thread::sleep(Duration::from_secs(2));
    for n in [&a, &b, &c] {
        let bad = metric_sum(n.admin, "plumtree_membership_bad_contacts_total", None);
        assert_eq!(bad, 0.0, "no node gossips an unusable address");
    }
}

#[test]
fn an_unreachable_advertise_address_exits_2_naming_the_key() {
    for bad in ["0.0.0.0:7000", "127.0.0.1:0"] {
        let out = Command::new(env!("CARGO_BIN_EXE_plumcore"))
            .args(["node", "--advertise", bad, "--bind", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("`advertise`"), "{err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_plumcore"))
        .args(["node", "--advertise", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
