//! Admin plane under abuse, on a real node process: a 150 MB header line, 1,000
//! half-open connections and a slowloris client (one byte a second per connection).
//! During each, a well-behaved client's `GET /status` and `POST /broadcast` must be
//! answered, and after each the node's RSS must be within +16 MiB of where it started.
//! The bound asserted on response time is generous (2 s: this runs on a loaded 2-core
//! machine); the measured figures are printed.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{metric_sum, start_node, wait_until, Node};

/// Resident set of process `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// One request on a fresh connection (`Connection: close`); returns the status code
/// and how long the answer took.
fn timed(admin: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Duration) {
    let t = Instant::now();
    let mut s = TcpStream::connect(admin).expect("connect to the admin plane");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let head = String::from_utf8_lossy(&raw[..raw.len().min(64)]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, t.elapsed())
}

/// A well-behaved client for `dur`: `/status` and `POST /broadcast` in turn; returns
/// the slowest answer of each. Every answer must be 200.
fn good_client(admin: SocketAddr, dur: Duration) -> (Duration, Duration, usize) {
    let end = Instant::now() + dur;
    let (mut worst_status, mut worst_bcast, mut n) = (Duration::ZERO, Duration::ZERO, 0);
    while Instant::now() < end {
        let (code, t) = timed(admin, "GET", "/status", b"");
        assert_eq!(code, 200, "GET /status during the attack");
        worst_status = worst_status.max(t);
        let (code, t) = timed(admin, "POST", "/broadcast", b"still here");
        assert_eq!(code, 200, "POST /broadcast during the attack");
        worst_bcast = worst_bcast.max(t);
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    (worst_status, worst_bcast, n)
}

/// Lets this process hold more descriptors than the usual 1,024 (soft limit up to the
/// hard one).
fn raise_fd_limit() {
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max.min(65536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

struct Check {
    name: &'static str,
    before_kib: u64,
    after_kib: u64,
    worst_status: Duration,
    worst_bcast: Duration,
    requests: usize,
}

fn report(c: &Check) {
    println!(
        "admin abuse `{}`: RSS {} -> {} KiB ({:+} KiB); good client {} rounds, slowest GET /status {:.1} ms, slowest POST /broadcast {:.1} ms",
        c.name,
        c.before_kib,
        c.after_kib,
        c.after_kib as i64 - c.before_kib as i64,
        c.requests,
        c.worst_status.as_secs_f64() * 1e3,
        c.worst_bcast.as_secs_f64() * 1e3,
    );
    assert!(
        c.after_kib <= c.before_kib + 16 * 1024,
        "`{}`: RSS grew by more than 16 MiB",
        c.name
    );
    assert!(
        c.requests >= 3,
        "`{}`: the good client got too few rounds",
        c.name
    );
    assert!(
        c.worst_status < Duration::from_secs(2) && c.worst_bcast < Duration::from_secs(2),
        "`{}`: the good client waited too long",
        c.name
    );
}

/// Runs `attack` on its own thread until `stop` is set, with the good client beside
/// it for `dur`, and measures the node's RSS before and after.
fn under_attack(
    node: &Node,
    name: &'static str,
    dur: Duration,
    attack: impl FnOnce(SocketAddr, Arc<AtomicBool>) + Send + 'static,
) -> Check {
    let pid = node.child.id();
    let before_kib = rss_kib(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let (admin, stop) = (node.admin, stop.clone());
        std::thread::spawn(move || attack(admin, stop))
    };
    // Let the attack get going first.
    std::thread::sleep(Duration::from_millis(500));
    let (worst_status, worst_bcast, requests) = good_client(node.admin, dur);
    let after_kib = rss_kib(pid);
    stop.store(true, Ordering::SeqCst);
    attacker.join().expect("attacker thread");
    Check {
        name,
        before_kib,
        after_kib,
        worst_status,
        worst_bcast,
        requests,
    }
}

#[test]
fn admin_plane_under_abuse() {
    raise_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let mut taken = Vec::new();
    let node = start_node(1, 1, None, dir.path(), &[], &mut taken);
    let admin = node.admin;
    wait_until("the admin plane", Duration::from_secs(20), || {
        TcpStream::connect(admin).is_ok()
    });
    // Warm up before the baseline: allocator pools, the admin plane's call threads
    // (four clients at once), the first snapshots and deliveries.
    let warm: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..30 {
                    timed(admin, "GET", "/status", b"");
                    timed(admin, "GET", "/metrics", b"");
                    timed(admin, "POST", "/broadcast", b"warm-up");
                }
            })
        })
        .collect();
    for w in warm {
        w.join().unwrap();
    }
    let c = under_attack(
        &node,
        "none (baseline drift)",
        Duration::from_secs(3),
        |_, _| {},
    );
    report(&c);

    // 1. A single 150 MB header line.
    let c = under_attack(
        &node,
        "150 MB header line",
        Duration::from_secs(3),
        |admin, _| {
            let mut s = TcpStream::connect(admin).unwrap();
            let _ = s.write_all(b"GET /status HTTP/1.1\r\nHost: t\r\nX-Big: ");
            let chunk = vec![b'a'; 1 << 20];
            let mut sent = 0usize;
            for _ in 0..150 {
                if s.write_all(&chunk).is_err() {
                    break; // answered 431 and closed, as it should
                }
                sent += chunk.len();
            }
            let _ = sent;
        },
    );
    report(&c);

    // 2. 1,000 half-open connections (connected, silent), held during the check.
    let c = under_attack(
        &node,
        "1000 half-open connections",
        Duration::from_secs(3),
        |admin, stop| {
            let mut held = Vec::with_capacity(1000);
            for _ in 0..1000 {
                match TcpStream::connect(admin) {
                    Ok(s) => held.push(s),
                    Err(_) => break,
                }
            }
            assert!(held.len() >= 900, "opened {} connections", held.len());
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
        },
    );
    report(&c);

    // 3. Slowloris: 200 connections, one header byte a second each, reconnecting
    //    whenever the node cuts one.
    let c = under_attack(
        &node,
        "slowloris, 200 connections",
        Duration::from_secs(7),
        |admin, stop| {
            let line = b"GET /status HTTP/1.1\r\nHost: t\r\nX-Slow: ".to_vec();
            let mut conns: Vec<(TcpStream, usize)> = (0..200)
                .filter_map(|_| TcpStream::connect(admin).ok().map(|s| (s, 0)))
                .collect();
            let mut reconnects = 0;
            while !stop.load(Ordering::SeqCst) {
                for (s, at) in conns.iter_mut() {
                    let byte = [line.get(*at).copied().unwrap_or(b'x')];
                    if s.write_all(&byte).is_err() && reconnects < 2000 {
                        reconnects += 1;
                        if let Ok(n) = TcpStream::connect(admin) {
                            *s = n;
                            *at = 0;
                        }
                    } else {
                        *at += 1;
                    }
                }
                for _ in 0..10 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        },
    );
    report(&c);

    // Every limit that fired is counted.
    let rejected = |r: &str| {
        metric_sum(
            admin,
            &format!("plumtree_admin_rejected_total{{reason=\"{r}\"}}"),
            None,
        )
    };
    assert!(rejected("header_too_large") >= 1.0);
    assert!(rejected("evicted") + rejected("header_timeout") >= 100.0);
    assert!(metric_sum(admin, "plumtree_admin_connections", None) <= 128.0);
}
