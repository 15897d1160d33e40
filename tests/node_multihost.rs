//! Real nodes on separate hosts (issue 15 item 7): every host is a network namespace
//! ([`common::netns::NetnsLab`]) with its own 198.18.S.x address, and every node binds
//! the same ports, `0.0.0.0:7000` (shards at 7001..), describing itself with
//! `--advertise`. The test process reaches each host's admin plane through the lab's
//! root veth. Cases: an 8-host cluster delivers exactly once, loses two hosts to
//! SIGKILL and delivers exactly once on the survivors; a host behind a port mapping
//! (DNAT 17000+k -> 7000+k, direct access refused) joins and delivers both ways; an
//! encrypted cluster keeps a wrong-key intruder out; 30 s and 50 s splits with default
//! timers lose nothing, and after a 90 s split every message is delivered or inside a
//! reported gap (issue 17). Each test skips, saying why,
//! where namespaces (or, for the mapping, iptables) are unavailable.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::cluster::{
    active_view, broadcast, get_json, membership_diagnostics, metric_sum, node_hex,
    overlay_problem, read_deliveries, read_gaps,
};
use common::netns::{NetnsLab, NsProc};

/// The control port of every node; shard k listens on PORT + 1 + k.
const PORT: u16 = 7000;
/// The admin port of every node.
const ADMIN_PORT: u16 = 7080;
const SHARDS: u16 = 2;
/// Short membership timers (ms) so failures are noticed in about a second.
const FAILURE_TIMEOUT: u64 = 1000;
const PROBE_TIMEOUT: u64 = 200;
const HEARTBEAT: u64 = 100;
const MEMBERSHIP: &str = "[membership]\nheartbeat_interval = 100\nfailure_timeout = 1000\n\
     probe_timeout = 200\nshuffle_interval = 500\njoin_retry = 100\njoin_retry_max = 800\n";

const KEY: &str = "5f1c0ffee0ddba11deadbeef0123456789abcdef0123456789abcdef01234567";
const OTHER_KEY: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";

/// A node running in host `host`'s namespace.
struct Host<'lab> {
    host: usize,
    id: u64,
    admin: SocketAddr,
    /// Where its peers are told to reach its control socket.
    advertise: SocketAddrV4,
    deliveries: PathBuf,
    proc_: NsProc<'lab>,
}

/// What to start on a host.
struct Spec<'a> {
    host: usize,
    /// `None`: no `--advertise`, the node picks the address routing to its first seed.
    advertise: Option<SocketAddrV4>,
    seeds: &'a [SocketAddrV4],
    config: &'a Path,
}

/// Starts a node and waits until it reports every shard. Known node bug, not fixed
/// (docs/operations.md, "Known bug: an executor that never runs"): about one start
/// in 20 to 30 on this machine, one shard executor never runs (asleep in io_uring from
/// the start);
/// the node then fails itself after 10 s (`SHARD_START_DEADLINE`). A node that does not
/// report all `SHARDS` shards within 15 s is restarted once, loudly; a second stall
/// fails the caller's `wait_answering`.
fn start<'lab>(lab: &'lab NetnsLab, s: &Spec<'_>, dir: &Path) -> Host<'lab> {
    let h = spawn_host(lab, s, dir);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(15) {
        if shards_reported(&h) == SHARDS as usize {
            return h;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    eprintln!(
        "START-UP STALL (known executor bug): host{} reports {} of {SHARDS} shards after 15 s; restarting it once",
        s.host,
        shards_reported(&h)
    );
    drop(h);
    spawn_host(lab, s, dir)
}

fn spawn_host<'lab>(lab: &'lab NetnsLab, s: &Spec<'_>, dir: &Path) -> Host<'lab> {
    let ip = lab.ip(s.host);
    let id = 1 + s.host as u64;
    let deliveries = dir.join(format!("host{}.ndjson", s.host));
    let mut args: Vec<String> = [
        "node",
        "--config",
        s.config.to_str().unwrap(),
        "--node-id",
        &id.to_string(),
        "--node-name",
        &format!("host{}", s.host),
        "--bind",
        &format!("0.0.0.0:{PORT}"),
        "--admin",
        &format!("0.0.0.0:{ADMIN_PORT}"),
        "--shards",
        &SHARDS.to_string(),
        "--deliveries",
        deliveries.to_str().unwrap(),
        "--log-level",
        "warn",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    if let Some(a) = s.advertise {
        args.extend(["--advertise".into(), a.to_string()]);
    }
    for seed in s.seeds {
        args.extend(["--seed".into(), seed.to_string()]);
    }
    let proc_ = lab.spawn(s.host, env!("CARGO_BIN_EXE_plumcore"), &args);
    Host {
        host: s.host,
        id,
        admin: SocketAddr::from((ip, ADMIN_PORT)),
        advertise: s.advertise.unwrap_or(SocketAddrV4::new(ip, PORT)),
        deliveries,
        proc_,
    }
}

/// Starts a node per spec (see [`start`]).
fn start_all<'lab>(lab: &'lab NetnsLab, specs: &[Spec<'_>], dir: &Path) -> Vec<Host<'lab>> {
    specs.iter().map(|s| start(lab, s, dir)).collect()
}

/// Host `i`'s own control address.
fn control(lab: &NetnsLab, i: usize) -> SocketAddrV4 {
    SocketAddrV4::new(lab.ip(i), PORT)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Polls `f` every 50 ms until it holds; returns the time it took, or panics after
/// `limit` with `why()`.
fn wait(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> bool,
    why: impl Fn() -> String,
) -> Duration {
    let t = Instant::now();
    while !f() {
        if t.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}:\n{}", why());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    t.elapsed()
}

/// Shards a node reports in `/status` (0 while it does not answer).
fn shards_reported(h: &Host<'_>) -> usize {
    get_json(h.admin, "/status")
        .and_then(|s| s["shards"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// Waits until every node answers and reports all its shards: a node whose admin
/// plane answers while an executor never reported has not really started (seen on
/// this 2-core machine: executors asleep in io_uring at start-up, never woken).
fn wait_answering(hosts: &[&Host<'_>]) -> Duration {
    wait(
        "every node to answer and report its shards",
        Duration::from_secs(30),
        || hosts.iter().all(|h| shards_reported(h) == SHARDS as usize),
        || {
            hosts
                .iter()
                .filter(|h| shards_reported(h) != SHARDS as usize)
                .map(|h| match get_json(h.admin, "/status") {
                    None => format!("host{} does not answer", h.host),
                    Some(_) => format!(
                        "host{} answers but reports {} of {SHARDS} shards (executors not \
                         started or stalled): {}",
                        h.host,
                        shards_reported(h),
                        membership_diagnostics(h.admin)
                    ),
                })
                .collect::<Vec<_>>()
                .join("\n")
        },
    )
}

fn views(hosts: &[&Host<'_>]) -> Option<HashMap<String, Vec<String>>> {
    hosts
        .iter()
        .map(|h| Some((node_hex(h.id), active_view(h.admin)?)))
        .collect()
}

/// Every view of `hosts` is non-empty, lists only `hosts`, is symmetric and the
/// overlay is connected ([`overlay_problem`]); fails with every view and each
/// node's membership counters after `limit`. `also` is checked on every poll.
fn wait_overlay(
    what: &str,
    hosts: &[&Host<'_>],
    limit: Duration,
    mut also: impl FnMut(&HashMap<String, Vec<String>>),
) -> Duration {
    let alive: HashSet<String> = hosts.iter().map(|h| node_hex(h.id)).collect();
    let last = std::cell::RefCell::new(String::new());
    wait(
        what,
        limit,
        || match views(hosts) {
            Some(v) => {
                also(&v);
                match overlay_problem(&v, &alive) {
                    None => true,
                    Some(p) => {
                        *last.borrow_mut() = format!("{p}; views {v:?}");
                        false
                    }
                }
            }
            None => false,
        },
        || {
            let mut rows = vec![last.borrow().clone()];
            rows.extend(hosts.iter().map(|h| {
                format!(
                    "host{} ({}): {}",
                    h.host,
                    node_hex(h.id),
                    membership_diagnostics(h.admin)
                )
            }));
            rows.join("\n")
        },
    )
}

/// `count` broadcasts, round robin over `from`; returns their ids.
fn broadcasts(from: &[&Host<'_>], count: usize, tag: &str) -> Vec<String> {
    (0..count)
        .map(|i| {
            let h = from[i % from.len()];
            broadcast(h.admin, format!("{tag} {i} from host{}", h.host).as_bytes())
        })
        .collect()
}

/// Waits until every host delivered every id of `expected`, then (after a pause for
/// late duplicates) checks each was delivered exactly once and nothing else was.
/// Returns the time until the last delivery was seen.
fn exactly_once(hosts: &[&Host<'_>], expected: &[String], what: &str) -> Duration {
    let missing = |h: &Host<'_>| {
        let d = read_deliveries(&h.deliveries);
        expected.iter().filter(|id| !d.contains_key(*id)).count()
    };
    let took = wait(
        what,
        Duration::from_secs(30),
        || hosts.iter().all(|h| missing(h) == 0),
        || {
            hosts
                .iter()
                .map(|h| {
                    let d = read_deliveries(&h.deliveries);
                    let lacks: Vec<&String> =
                        expected.iter().filter(|id| !d.contains_key(*id)).collect();
                    let shards = get_json(h.admin, "/status")
                        .map(|s| s["shards"].to_string())
                        .unwrap_or_default();
                    format!(
                        "host{} ({}) lacks {} of {}: {:?}\n  {}\n  views {:?}\n  shards {}",
                        h.host,
                        node_hex(h.id),
                        lacks.len(),
                        expected.len(),
                        lacks.iter().take(8).collect::<Vec<_>>(),
                        membership_diagnostics(h.admin),
                        active_view(h.admin),
                        shards
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    for h in hosts {
        let d = read_deliveries(&h.deliveries);
        for id in expected {
            assert_eq!(
                d[id].0, 1,
                "host{} delivered {id} {} times",
                h.host, d[id].0
            );
        }
        assert_eq!(
            d.len(),
            expected.len(),
            "host{} delivered something else",
            h.host
        );
    }
    took
}

/// Every control address in any `/members` view of `hosts` is one of `allowed`.
fn member_addrs(h: &Host<'_>) -> Vec<(String, String)> {
    let m = get_json(h.admin, "/members").expect("/members");
    ["active", "passive"]
        .iter()
        .flat_map(|v| m[*v].as_array().cloned().unwrap_or_default())
        .filter_map(|x| {
            Some((
                x["node_id"].as_str()?.to_string(),
                x["addr"].as_str()?.to_string(),
            ))
        })
        .collect()
}

fn assert_addresses(hosts: &[&Host<'_>], all: &[&Host<'_>]) {
    let by_id: HashMap<String, String> = all
        .iter()
        .map(|h| (node_hex(h.id), h.advertise.to_string()))
        .collect();
    for h in hosts {
        for (id, addr) in member_addrs(h) {
            assert_eq!(
                Some(&addr),
                by_id.get(&id),
                "host{} lists {id} at {addr}, not at its advertised address",
                h.host
            );
        }
    }
}

fn no_bad_contacts(hosts: &[&Host<'_>]) {
    for h in hosts {
        let bad = metric_sum(h.admin, "plumtree_membership_bad_contacts_total", None);
        assert_eq!(bad, 0.0, "host{} counted bad contacts", h.host);
    }
}

#[test]
fn eight_hosts_same_ports_deliver_once_and_survive_two_sigkills() {
    let Some(lab) = NetnsLab::new(8) else { return };
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "node.toml", MEMBERSHIP);
    let t0 = Instant::now();
    // Host 0 founds the cluster; the others join through it and their predecessor.
    // Host 7 has no --advertise: a wildcard bind describes itself by the address that
    // routes to its first seed.
    let plan: Vec<(Option<SocketAddrV4>, Vec<SocketAddrV4>)> = (0..8)
        .map(|i| {
            let mut seeds = vec![control(&lab, 0)];
            if i > 1 {
                seeds.push(control(&lab, i - 1));
            }
            let seeds = if i == 0 { vec![] } else { seeds };
            ((i != 7).then(|| control(&lab, i)), seeds)
        })
        .collect();
    let spec = |i: usize| Spec {
        host: i,
        advertise: plan[i].0,
        seeds: &plan[i].1,
        config: &cfg,
    };
    let specs: Vec<Spec<'_>> = (0..8).map(spec).collect();
    let mut hosts = start_all(&lab, &specs, dir.path());
    let all: Vec<&Host<'_>> = hosts.iter().collect();
    let answering = wait_answering(&all);
    for h in &all {
        let st = get_json(h.admin, "/status").unwrap();
        assert_eq!(st["advertise"], h.advertise.to_string(), "host{}", h.host);
    }
    let joined = wait_overlay(
        "8 hosts to form an overlay",
        &all,
        Duration::from_secs(30),
        |_| {},
    );
    eprintln!(
        "8 hosts: admin planes up {answering:?} after start, overlay formed {joined:?} later \
         ({:?} in all)",
        t0.elapsed()
    );

    let t = Instant::now();
    let first = broadcasts(&all, 100, "first");
    let sent = t.elapsed();
    let took = exactly_once(&all, &first, "100 broadcasts on 8 hosts");
    eprintln!(
        "100 broadcasts: posted in {sent:?}, all delivered exactly once on 8 hosts {took:?} later"
    );
    assert_addresses(&all, &all);
    no_bad_contacts(&all);
    drop(all);

    // SIGKILL two hosts' nodes (neither the founder nor the one without --advertise).
    let dead: Vec<String> = [3usize, 5]
        .iter()
        .map(|&i| node_hex(1 + i as u64))
        .collect();
    for h in hosts.iter_mut().filter(|h| [3, 5].contains(&h.host)) {
        h.proc_.kill();
    }
    let killed = Instant::now();
    hosts.retain(|h| ![3, 5].contains(&h.host));
    let survivors: Vec<&Host<'_>> = hosts.iter().collect();
    // Detection: failure timeout + probe timeout + a heartbeat round, with slack for
    // a loaded machine.
    let limit = Duration::from_millis(FAILURE_TIMEOUT + PROBE_TIMEOUT + HEARTBEAT + 10_000);
    let healed = wait_overlay(
        "the 6 survivors to drop the dead and re-form",
        &survivors,
        limit,
        |_| {},
    );
    for v in views(&survivors).unwrap().values() {
        assert!(!v.iter().any(|p| dead.contains(p)), "{v:?}");
    }
    eprintln!("6 survivors: overlay without the 2 killed hosts {healed:?} after SIGKILL");

    let t = Instant::now();
    let second = broadcasts(&survivors, 40, "second");
    let took = exactly_once(
        &survivors,
        &[first.clone(), second].concat(),
        "40 broadcasts on the 6 survivors",
    );
    eprintln!(
        "40 broadcasts: delivered exactly once on 6 survivors {took:?} after the last post \
         ({:?} after the first, {:?} after the kill)",
        t.elapsed(),
        killed.elapsed()
    );
    no_bad_contacts(&survivors);
    for h in &survivors {
        let st = get_json(h.admin, "/status").unwrap();
        assert_eq!(st["advertise"], h.advertise.to_string(), "host{}", h.host);
    }
}

/// Puts host `h` behind a port mapping: `mapped + k` reaches its port `PORT + k`
/// (control and each shard), and new flows to its real ports are refused, so only
/// datagrams that came through the mapping, or that answer a flow the host started
/// itself, reach it (a stateful NAT's behaviour).
fn map_ports(lab: &NetnsLab, h: usize, mapped: u16) {
    for k in 0..=SHARDS {
        let (from, to) = ((mapped + k).to_string(), format!(":{}", PORT + k));
        lab.iptables(
            h,
            &[
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-p",
                "udp",
                "--dport",
                &from,
                "-j",
                "DNAT",
                "--to-destination",
                &to,
            ],
        );
    }
    let real = format!("{PORT}:{}", PORT + SHARDS);
    lab.iptables(
        h,
        &[
            "-A",
            "INPUT",
            "-p",
            "udp",
            "--dport",
            &real,
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-m",
            "conntrack",
            "!",
            "--ctstate",
            "DNAT",
            "-j",
            "DROP",
        ],
    );
}

/// Packets counted by host `h`'s DNAT rules, and by its rule refusing direct access.
fn nat_counters(lab: &NetnsLab, h: usize) -> (u64, u64) {
    let count = |args: &[&str], target: &str| -> u64 {
        let out = lab.exec_ok(h, "iptables", args);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.split_whitespace().nth(2) == Some(target))
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    };
    (
        count(&["-t", "nat", "-L", "PREROUTING", "-n", "-v", "-x"], "DNAT"),
        count(&["-L", "INPUT", "-n", "-v", "-x"], "DROP"),
    )
}

#[test]
fn port_mapped_hosts_join_and_deliver_both_ways() {
    let Some(lab) = NetnsLab::new(5) else { return };
    if let Some(why) = lab.iptables_problem() {
        eprintln!("skipping: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "node.toml", MEMBERSHIP);
    // Two hosts behind port mappings: host 0 founds the cluster and is everyone's
    // seed (peers reach it first); host 4 joins last through ordinary hosts (it speaks
    // first, from its real ports). Peers must use the advertised addresses.
    map_ports(&lab, 0, 17000);
    map_ports(&lab, 4, 27000);
    let mapped0 = SocketAddrV4::new(lab.ip(0), 17000);
    let mapped4 = SocketAddrV4::new(lab.ip(4), 27000);
    let t0 = Instant::now();
    let mut hosts = vec![start(
        &lab,
        &Spec {
            host: 0,
            advertise: Some(mapped0),
            seeds: &[],
            config: &cfg,
        },
        dir.path(),
    )];
    for i in 1..4 {
        let mut seeds = vec![mapped0];
        if i > 1 {
            seeds.push(control(&lab, i - 1));
        }
        hosts.push(start(
            &lab,
            &Spec {
                host: i,
                advertise: Some(control(&lab, i)),
                seeds: &seeds,
                config: &cfg,
            },
            dir.path(),
        ));
    }
    {
        let first: Vec<&Host<'_>> = hosts.iter().collect();
        wait_answering(&first);
        let joined = wait_overlay(
            "4 hosts, one port-mapped, to form an overlay",
            &first,
            Duration::from_secs(30),
            |_| {},
        );
        eprintln!(
            "port mapping: overlay of 4 (host 0 mapped) formed {joined:?} ({:?} after start)",
            t0.elapsed()
        );
    }
    let seeds = [control(&lab, 1), control(&lab, 2)];
    hosts.push(start(
        &lab,
        &Spec {
            host: 4,
            advertise: Some(mapped4),
            seeds: &seeds,
            config: &cfg,
        },
        dir.path(),
    ));
    let all: Vec<&Host<'_>> = hosts.iter().collect();
    wait_answering(&all[4..]);
    let joined = wait_overlay(
        "the second mapped host to join (5 hosts)",
        &all,
        Duration::from_secs(30),
        |_| {},
    );
    eprintln!("port mapping: host 4 (mapped, joining through its seeds) in the overlay {joined:?} after start");
    // Both ways: from the mapped hosts, and to them.
    let t = Instant::now();
    let mut ids = broadcasts(&[all[0], all[4]], 20, "from a mapped host");
    ids.extend(broadcasts(&all[1..4], 30, "to the mapped hosts"));
    let took = exactly_once(&all, &ids, "50 broadcasts with two port-mapped hosts");
    eprintln!(
        "port mapping: 50 broadcasts delivered exactly once {took:?} after the last post \
         ({:?} after the first)",
        t.elapsed()
    );
    assert_addresses(&all, &all);
    no_bad_contacts(&all);
    for h in [0, 4] {
        let (dnat, refused) = nat_counters(&lab, h);
        eprintln!("port mapping: host {h}: {dnat} flows came in through the mapping, {refused} packets to its real ports refused");
        assert!(dnat > 0, "host {h}'s mapping carried nothing");
    }
}

#[test]
fn an_encrypted_cluster_keeps_a_wrong_key_intruder_out() {
    let Some(lab) = NetnsLab::new(5) else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = write(dir.path(), "cluster.keys", &format!("{KEY}\n"));
    let other = write(dir.path(), "other.keys", &format!("{OTHER_KEY}\n"));
    let config = |name: &str, key: &Path| {
        write(
            dir.path(),
            name,
            &format!(
                "cluster_key_file = {:?}\ncluster_encrypt = true\n{MEMBERSHIP}",
                key.to_str().unwrap()
            ),
        )
    };
    let member_cfg = config("member.toml", &key);
    let intruder_cfg = config("intruder.toml", &other);
    let mut members = Vec::new();
    for i in 0..4 {
        let seeds = if i == 0 {
            vec![]
        } else {
            vec![control(&lab, 0)]
        };
        members.push(start(
            &lab,
            &Spec {
                host: i,
                advertise: Some(control(&lab, i)),
                seeds: &seeds,
                config: &member_cfg,
            },
            dir.path(),
        ));
    }
    let ms: Vec<&Host<'_>> = members.iter().collect();
    wait_answering(&ms);
    let joined = wait_overlay(
        "4 encrypted members to form an overlay",
        &ms,
        Duration::from_secs(30),
        |_| {},
    );
    eprintln!("encrypted: overlay of 4 formed {joined:?}");

    let intruder = start(
        &lab,
        &Spec {
            host: 4,
            advertise: Some(control(&lab, 4)),
            seeds: &[control(&lab, 0), control(&lab, 1)],
            config: &intruder_cfg,
        },
        dir.path(),
    );
    wait_answering(&[&intruder]);
    let intruder_hex = node_hex(intruder.id);
    let never_in = |v: &HashMap<String, Vec<String>>| {
        for (me, view) in v {
            assert!(
                !view.contains(&intruder_hex),
                "{me} let the intruder in: {view:?}"
            );
        }
    };
    let t = Instant::now();
    let ids = broadcasts(&ms, 40, "secret");
    let rogue = broadcasts(&[&intruder], 10, "rogue");
    let took = exactly_once(&ms, &ids, "40 encrypted broadcasts on 4 members");
    eprintln!(
        "encrypted: 40 broadcasts delivered exactly once {took:?} ({:?} after the first post)",
        t.elapsed()
    );
    // The members keep refusing the intruder's joins: both seeds count failures.
    let counted = wait(
        "both of the intruder's seeds to count failed authentications",
        Duration::from_secs(10),
        || {
            ms[..2]
                .iter()
                .all(|h| metric_sum(h.admin, "plumtree_auth_failures_total", None) >= 1.0)
        },
        || {
            ms.iter()
                .map(|h| {
                    format!(
                        "host{}: {} auth failures",
                        h.host,
                        metric_sum(h.admin, "plumtree_auth_failures_total", None)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        },
    );
    wait_overlay(
        "the members' overlay, intruder outside",
        &ms,
        Duration::from_secs(5),
        never_in,
    );
    let failures: Vec<f64> = ms
        .iter()
        .map(|h| metric_sum(h.admin, "plumtree_auth_failures_total", None))
        .collect();
    eprintln!(
        "encrypted: auth failures per member {failures:?} (seeds counting within {counted:?})"
    );
    let peers = get_json(intruder.admin, "/peers").unwrap();
    assert_eq!(
        peers.as_array().map(Vec::len),
        Some(0),
        "intruder has peers: {peers}"
    );
    for h in &ms {
        let d = read_deliveries(&h.deliveries);
        for id in &rogue {
            assert!(
                !d.contains_key(id),
                "host{} delivered the intruder's {id}",
                h.host
            );
        }
    }
    let d = read_deliveries(&intruder.deliveries);
    for id in &ids {
        assert!(
            !d.contains_key(id),
            "the intruder delivered a member's {id}"
        );
    }
    no_bad_contacts(&ms);
}

/// Eight hosts that iptables can split; `None` (the test skips, saying why) without
/// namespaces or iptables.
fn partition_lab() -> Option<NetnsLab> {
    let lab = NetnsLab::new(8)?;
    if let Some(why) = lab.iptables_problem() {
        eprintln!("skipping: {why}");
        return None;
    }
    Some(lab)
}

/// Issue 17's set-up: 8 hosts with default timers (no `[membership]` or `[protocol]`
/// overrides), host 0 the first seed, each later one also seeding its predecessor;
/// returns once every node answers with all its shards and the overlay formed.
fn default_timer_hosts<'lab>(lab: &'lab NetnsLab, dir: &Path) -> Vec<Host<'lab>> {
    let cfg = write(dir, "node.toml", "");
    let plan: Vec<Vec<SocketAddrV4>> = (0..8)
        .map(|i| match i {
            0 => vec![],
            1 => vec![control(lab, 0)],
            _ => vec![control(lab, 0), control(lab, i - 1)],
        })
        .collect();
    let specs: Vec<Spec<'_>> = (0..8)
        .map(|i| Spec {
            host: i,
            advertise: Some(control(lab, i)),
            seeds: &plan[i],
            config: &cfg,
        })
        .collect();
    let hosts = start_all(lab, &specs, dir);
    let all: Vec<&Host<'_>> = hosts.iter().collect();
    wait_answering(&all);
    wait_overlay(
        "8 hosts to form an overlay",
        &all,
        Duration::from_secs(60),
        |_| {},
    );
    hosts
}

/// Splits hosts 0-3 from 4-7 for `secs` while each side publishes one message a second
/// (round robin over its hosts, ids appended to `ids`), then heals; returns the
/// messages published per side.
fn publish_split(
    lab: &NetnsLab,
    left: &[&Host<'_>],
    right: &[&Host<'_>],
    secs: u64,
    ids: &mut Vec<String>,
) -> usize {
    let cut = lab.partition(&[0, 1, 2, 3], &[4, 5, 6, 7]);
    let t = Instant::now();
    let mut k = 0;
    while t.elapsed() < Duration::from_secs(secs) {
        for side in [left, right] {
            let h = side[k % side.len()];
            ids.push(broadcast(
                h.admin,
                format!("split {secs} s, {k} from host{}", h.host).as_bytes(),
            ));
        }
        k += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
    lab.heal(cut);
    k
}

/// Issue 17's set-up, with default timers: 8 hosts split 4 | 4 by iptables DROP rules
/// while both sides keep publishing (one message a second each), for 30 s and then
/// for 50 s. After each heal every message must be delivered everywhere exactly once.
/// The time from the heal to the last delivery is printed (the target is 10 s; the
/// wait allows 30 s so that a loaded machine does not fail on timing alone).
#[test]
fn splits_of_30_and_50_seconds_with_default_timers_lose_nothing() {
    let Some(lab) = partition_lab() else { return };
    let dir = tempfile::tempdir().unwrap();
    let hosts = default_timer_hosts(&lab, dir.path());
    let all: Vec<&Host<'_>> = hosts.iter().collect();
    let mut expected = broadcasts(&all, 8, "before");
    exactly_once(&all, &expected, "the first broadcasts");
    let (left, right) = all.split_at(4);
    for split in [30u64, 50] {
        let k = publish_split(&lab, left, right, split, &mut expected);
        let took = exactly_once(
            &all,
            &expected,
            &format!("every message everywhere after the {split} s split"),
        );
        eprintln!(
            "{split} s split, default timers: {} messages per side during the split; every one of the {} messages delivered everywhere exactly once {:?} after the heal (target 10 s)",
            k,
            expected.len(),
            took
        );
    }
}

/// Issue 17's 90 s case, default timers: 8 hosts split 4 | 4 while both sides publish
/// one message a second; messages older than `message_cache_ttl` (60 s) at the heal
/// are gone from every cache. After the heal every host publishes four more (a hole is
/// only seen below a delivered message), and then, for every host and every origin,
/// the messages delivered (each exactly once) plus the reported gaps must equal what
/// that origin published, exactly.
#[test]
fn after_a_90_second_split_every_message_is_delivered_or_reported_missing() {
    let Some(lab) = partition_lab() else { return };
    let dir = tempfile::tempdir().unwrap();
    let hosts = default_timer_hosts(&lab, dir.path());
    let all: Vec<&Host<'_>> = hosts.iter().collect();
    // Four messages from every host first: consecutive seqs of an origin go to
    // alternating shards, and each shard counts gaps only from its own first delivery
    // of that origin.
    let mut published = broadcasts(&all, 32, "before");
    exactly_once(&all, &published, "the first broadcasts");
    let (left, right) = all.split_at(4);
    let k = publish_split(&lab, left, right, 90, &mut published);
    let healed = Instant::now();
    for round in 0..4 {
        published.extend(broadcasts(
            &all,
            8,
            &format!("after the heal, round {round}"),
        ));
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut per_origin: HashMap<String, u64> = HashMap::new();
    for id in &published {
        *per_origin.entry(id[..16].to_string()).or_default() += 1;
    }
    // (host, origin) -> (delivered, reported missing, published)
    let account = |h: &Host<'_>| -> Vec<(String, u64, u64, u64)> {
        let d = read_deliveries(&h.deliveries);
        let gaps = read_gaps(&h.deliveries);
        per_origin
            .iter()
            .map(|(origin, &n)| {
                let got = d
                    .keys()
                    .filter(|id| id.starts_with(origin.as_str()))
                    .count() as u64;
                (
                    origin.clone(),
                    got,
                    gaps.get(origin).copied().unwrap_or(0),
                    n,
                )
            })
            .collect()
    };
    wait(
        "every message delivered or reported missing on every host",
        Duration::from_secs(150),
        || {
            all.iter().all(|h| {
                account(h)
                    .iter()
                    .all(|&(_, got, missed, n)| got + missed == n)
            })
        },
        || {
            all.iter()
                .map(|h| {
                    let off: Vec<_> = account(h)
                        .into_iter()
                        .filter(|&(_, got, missed, n)| got + missed != n)
                        .collect();
                    format!(
                        "host{}: (origin, delivered, reported missing, published) off: {off:?}\n  {}",
                        h.host,
                        membership_diagnostics(h.admin)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        },
    );
    let settled = healed.elapsed();
    // Nothing delivered twice, nothing unknown, and the counts still add up a little
    // later (no gap reported for a message that then arrived).
    std::thread::sleep(Duration::from_secs(3));
    let (mut delivered, mut missed) = (0u64, 0u64);
    for h in &all {
        let d = read_deliveries(&h.deliveries);
        for (id, (times, _)) in &d {
            assert_eq!(*times, 1, "host{} delivered {id} {times} times", h.host);
            assert!(
                published.contains(id),
                "host{} delivered unknown {id}",
                h.host
            );
        }
        for (origin, got, m, n) in account(h) {
            assert_eq!(
                got + m,
                n,
                "host{} origin {origin}: {got} delivered + {m} missed != {n} published",
                h.host
            );
            delivered += got;
            missed += m;
        }
        assert_eq!(
            metric_sum(h.admin, "plumtree_unrecoverable_total", None),
            read_gaps(&h.deliveries).values().sum::<u64>() as f64,
            "host{}: the metric counts what the file reports",
            h.host
        );
    }
    assert!(
        missed > 0,
        "a 90 s split must lose the messages that expired"
    );
    eprintln!(
        "90 s split, default timers: {k} messages per side during the split, {} published in all; over the 8 hosts {delivered} (host, message) pairs delivered and {missed} reported missing as known gaps, delivered + missed = published for every host and origin, settled {settled:?} after the heal (gaps are declared message_cache_ttl + 3 s after the hole is seen)",
        published.len()
    );
}
