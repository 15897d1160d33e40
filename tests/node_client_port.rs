//! The NATS-compatible client port with real clients: `async-nats` publishers on two
//! nodes and subscribers on others (exact subjects, `*`, `>`, a queue group), every
//! matching subscriber receiving each message exactly once; bad input answered with
//! `-ERR` and a closed connection, counted, with other clients unaffected; and a
//! subscriber that stops reading told exactly how much it missed.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{
    active_view, free_tcp, metric_sum, read_deliveries, spawn_node, wait_until, Node, NodeSpec,
};
use futures_lite::StreamExt;

/// A node whose client port listens on a fresh port; returns it with that address.
fn node_with_port(
    id: u64,
    seeds: &[SocketAddr],
    dir: &Path,
    extra: &[&str],
    taken: &mut Vec<u16>,
) -> (Node, SocketAddr) {
    let client = free_tcp();
    let listen = client.to_string();
    let mut args = vec!["--client-listen", listen.as_str()];
    args.extend_from_slice(extra);
    let node = spawn_node(
        &NodeSpec {
            id,
            shards: 1,
            seeds,
            bind: None,
            deliveries: format!("node{id}.ndjson"),
            extra: &args,
        },
        dir,
        taken,
    );
    (node, client)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Reads `sub` until `want` messages arrived (or 30 s passed), then 1 s more for
/// any extra; returns payload -> times received.
async fn collect(sub: &mut async_nats::Subscriber, want: usize) -> HashMap<Vec<u8>, usize> {
    let mut got: HashMap<Vec<u8>, usize> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut total = 0;
    while total < want && Instant::now() < deadline {
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
            *got.entry(m.payload.to_vec()).or_default() += 1;
            total += 1;
        }
    }
    let settle = Instant::now() + Duration::from_secs(1);
    while Instant::now() < settle {
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
            *got.entry(m.payload.to_vec()).or_default() += 1;
        }
    }
    got
}

fn exactly_once(got: &HashMap<Vec<u8>, usize>, want: &[Vec<u8>], what: &str) {
    let extra: Vec<_> = got
        .keys()
        .filter(|k| !want.contains(k))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .take(5)
        .collect();
    assert!(extra.is_empty(), "{what}: unexpected messages {extra:?}");
    let missing = want.iter().filter(|w| !got.contains_key(*w)).count();
    assert_eq!(missing, 0, "{what}: {missing} of {} missing", want.len());
    let dups = got.values().filter(|&&n| n > 1).count();
    assert_eq!(dups, 0, "{what}: {dups} messages received more than once");
}

#[test]
fn nats_clients_publish_and_subscribe_across_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let mut taken = Vec::new();
    let (n0, c0) = node_with_port(1, &[], dir.path(), &[], &mut taken);
    let mut nodes = vec![n0];
    let mut ports = vec![c0];
    for id in 2..=4 {
        let (n, c) = node_with_port(id, &[nodes[0].bind], dir.path(), &[], &mut taken);
        nodes.push(n);
        ports.push(c);
    }
    wait_until(
        "every node to have a neighbour",
        Duration::from_secs(30),
        || {
            nodes
                .iter()
                .all(|n| active_view(n.admin).is_some_and(|v| !v.is_empty()))
        },
    );
    let rt = runtime();
    rt.block_on(async {
        let connect = |a: SocketAddr| async move {
            async_nats::connect(a.to_string())
                .await
                .expect("async-nats connects to the client port")
        };
        let (sub2, sub3) = (connect(ports[2]).await, connect(ports[3]).await);
        let mut exact = sub2.subscribe("orders.eu.created").await.unwrap();
        let mut star = sub2.subscribe("orders.*.created").await.unwrap();
        let mut full = sub2.subscribe("orders.>").await.unwrap();
        let mut none = sub2.subscribe("payments.>").await.unwrap();
        let mut q_on_2 = sub2
            .queue_subscribe("orders.>", "workers".into())
            .await
            .unwrap();
        let mut q1_on_3 = sub3
            .queue_subscribe("orders.>", "workers".into())
            .await
            .unwrap();
        let mut q2_on_3 = sub3
            .queue_subscribe("orders.>", "workers".into())
            .await
            .unwrap();
        sub2.flush().await.unwrap();
        sub3.flush().await.unwrap();

        // Publishers on nodes 0 and 1: 50 eu.created, 10 us.created, 5 eu.cancelled
        // each.
        let mut eu_created = Vec::new();
        let mut us_created = Vec::new();
        let mut cancelled = Vec::new();
        for (p, addr) in ports[..2].iter().enumerate() {
            let c = connect(*addr).await;
            for k in 0..50 {
                let body = format!("eu-created-{p}-{k}").into_bytes();
                c.publish("orders.eu.created", body.clone().into())
                    .await
                    .unwrap();
                eu_created.push(body);
                if k < 10 {
                    let body = format!("us-created-{p}-{k}").into_bytes();
                    c.publish("orders.us.created", body.clone().into())
                        .await
                        .unwrap();
                    us_created.push(body);
                }
                if k < 5 {
                    let body = format!("eu-cancelled-{p}-{k}").into_bytes();
                    c.publish("orders.eu.cancelled", body.clone().into())
                        .await
                        .unwrap();
                    cancelled.push(body);
                }
            }
            c.flush().await.unwrap();
        }
        let created: Vec<_> = eu_created.iter().chain(&us_created).cloned().collect();
        let orders: Vec<_> = created.iter().chain(&cancelled).cloned().collect();

        exactly_once(
            &collect(&mut exact, eu_created.len()).await,
            &eu_created,
            "exact",
        );
        exactly_once(
            &collect(&mut star, created.len()).await,
            &created,
            "orders.*.created",
        );
        exactly_once(&collect(&mut full, orders.len()).await, &orders, "orders.>");
        exactly_once(
            &collect(&mut q_on_2, orders.len()).await,
            &orders,
            "queue group on node 2",
        );
        // Node 3's two members share the group: together, each message once.
        let mut on_3 = collect(&mut q1_on_3, 0).await;
        for (k, n) in collect(&mut q2_on_3, 0).await {
            *on_3.entry(k).or_default() += n;
        }
        exactly_once(&on_3, &orders, "queue group on node 3 (two members)");
        let got_none = collect(&mut none, 0).await;
        assert!(
            got_none.is_empty(),
            "payments.> received {} messages",
            got_none.len()
        );
    });
    let published: f64 = (0..2)
        .map(|i| {
            metric_sum(
                nodes[i].admin,
                "plumtree_client_messages_total{direction=\"in\"}",
                None,
            )
        })
        .sum();
    assert_eq!(published, 130.0, "client-port publications counted");
    // The HTTP deliveries files carry the topic.
    let d = std::fs::read_to_string(&nodes[3].deliveries).unwrap();
    assert!(
        d.contains("\"topic\":\"orders.eu.cancelled\""),
        "deliveries lines carry topics"
    );
    assert_eq!(read_deliveries(&nodes[3].deliveries).len(), 130);
}

/// Sends `bytes` on a fresh connection (after reading INFO); returns what the port
/// answered until it closed the connection (or 5 s passed).
fn answer_to(port: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(port).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut info = String::new();
    r.read_line(&mut info).unwrap();
    assert!(info.starts_with("INFO {"), "{info}");
    let _ = s.write_all(bytes);
    let mut out = String::new();
    let _ = r.read_to_string(&mut out);
    out
}

#[test]
fn bad_client_input_gets_err_and_a_closed_connection() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("limits.toml");
    std::fs::write(&cfg, "max_clients = 50\nmax_subscriptions = 10\n").unwrap();
    let mut taken = Vec::new();
    let cfg_path = cfg.to_str().unwrap().to_string();
    let (node, port) = node_with_port(1, &[], dir.path(), &["--config", &cfg_path], &mut taken);

    // A well-behaved client, kept open through the abuse.
    let mut good = TcpStream::connect(port).unwrap();
    good.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut good_r = BufReader::new(good.try_clone().unwrap());
    let mut line = String::new();
    good_r.read_line(&mut line).unwrap();
    good.write_all(b"CONNECT {\"verbose\":true}\r\nSUB ok.> 1\r\n")
        .unwrap();
    for _ in 0..2 {
        line.clear();
        good_r.read_line(&mut line).unwrap();
        assert_eq!(line, "+OK\r\n");
    }

    let cases: [(&str, Vec<u8>, &str); 6] = [
        (
            "garbage",
            b"HELLO WORLD\r\n".to_vec(),
            "-ERR 'Unknown Protocol Operation'",
        ),
        (
            "long line",
            vec![b'A'; 10_000],
            "-ERR 'Maximum Control Line Exceeded'",
        ),
        (
            "big PUB",
            b"PUB a.b 100000\r\n".to_vec(),
            "-ERR 'Maximum Payload Violation'",
        ),
        (
            "bad subject",
            b"SUB a..b 1\r\n".to_vec(),
            "-ERR 'Invalid Subject'",
        ),
        (
            "headers",
            b"HPUB a 10 12\r\n".to_vec(),
            "-ERR 'Headers Not Supported'",
        ),
        (
            "SUB flood",
            (0..20)
                .flat_map(|i| format!("SUB s.{i} {i}\r\n").into_bytes())
                .collect(),
            "-ERR 'Maximum Subscriptions Exceeded'",
        ),
    ];
    for (what, bytes, want) in &cases {
        let got = answer_to(port, bytes);
        assert!(got.contains(want), "{what}: answered {got:?}");
    }
    // 10,000 connections: those beyond max_clients are answered and closed; the
    // rest stay.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..10_000 {
        let mut s = TcpStream::connect(port).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut first = [0u8; 5];
        if s.read_exact(&mut first).is_ok() && &first == b"-ERR " {
            refused += 1;
        } else {
            held.push(s);
        }
    }
    assert_eq!(held.len(), 49, "50 clients at most, the good one included");
    assert_eq!(refused, 10_000 - 49);
    drop(held);

    // The good client is unaffected: it still publishes and receives.
    good.write_all(b"PUB ok.x 5\r\nhello\r\nPING\r\n").unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(seen.iter().any(|l: &String| l.starts_with("MSG ok.x 1 5"))
        && seen.iter().any(|l| l == "PONG\r\n"))
    {
        assert!(Instant::now() < deadline, "good client saw {seen:?}");
        line.clear();
        good_r.read_line(&mut line).unwrap();
        seen.push(line.clone());
    }
    let errors = |r: &str| {
        metric_sum(
            node.admin,
            &format!("plumtree_client_errors_total{{reason=\"{r}\"}}"),
            None,
        )
    };
    for (reason, n) in [
        ("unknown_op", 1.0),
        ("control_line", 1.0),
        ("payload_too_large", 1.0),
        ("invalid_subject", 1.0),
        ("unsupported", 1.0),
        ("max_subscriptions", 1.0),
        ("max_clients", 9951.0),
    ] {
        assert_eq!(
            errors(reason),
            n,
            "plumtree_client_errors_total{{reason={reason}}}"
        );
    }
    // Only the good client's subscription is left (the others closed with theirs).
    assert_eq!(
        metric_sum(node.admin, "plumtree_client_subscriptions", None),
        1.0
    );
}

/// Parses a raw stream of server ops: returns (MSG payloads by sid, `-ERR` lines).
fn parse_ops(buf: &[u8]) -> (HashMap<String, Vec<Vec<u8>>>, Vec<String>, usize) {
    let mut msgs: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    let mut errs = Vec::new();
    let mut i = 0;
    while let Some(end) = buf[i..].windows(2).position(|w| w == b"\r\n") {
        let line = String::from_utf8_lossy(&buf[i..i + end]).into_owned();
        let mut next = i + end + 2;
        if let Some(rest) = line.strip_prefix("MSG ") {
            let parts: Vec<&str> = rest.split(' ').collect();
            let len: usize = parts.last().unwrap().parse().unwrap();
            if buf.len() < next + len + 2 {
                break;
            }
            msgs.entry(parts[1].to_string())
                .or_default()
                .push(buf[next..next + len].to_vec());
            next += len + 2;
        } else if line.starts_with("-ERR") {
            errs.push(line);
        }
        i = next;
    }
    (msgs, errs, i)
}

#[test]
fn a_client_that_stops_reading_is_told_exactly_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("small.toml");
    std::fs::write(&cfg, "max_pending_bytes = 65536\n").unwrap();
    let cfg_path = cfg.to_str().unwrap().to_string();
    let mut taken = Vec::new();
    let (a, port) = node_with_port(1, &[], dir.path(), &["--config", &cfg_path], &mut taken);
    let (b, _) = node_with_port(2, &[a.bind], dir.path(), &[], &mut taken);
    wait_until("the two nodes to link", Duration::from_secs(30), || {
        active_view(a.admin).is_some_and(|v| !v.is_empty())
            && active_view(b.admin).is_some_and(|v| !v.is_empty())
    });
    // The stalled reader: small receive buffer, subscribed, then never read.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(16 * 1024).unwrap();
    sock.connect(&port.into()).unwrap();
    let mut slow: TcpStream = sock.into();
    slow.write_all(b"SUB load.> 1\r\nSUB $PLUMCORE.lagged 2\r\nPING\r\n")
        .unwrap();
    let mut first = vec![0u8; 4096];
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = Vec::new();
    while !String::from_utf8_lossy(&head).contains("PONG") {
        let n = slow.read(&mut first).unwrap();
        head.extend_from_slice(&first[..n]);
    }
    // 3,000 messages of 1,000 bytes through the other node's batch route.
    let published = 3000usize;
    let payload = |k: usize| {
        let mut p = format!("m{k:06}-").into_bytes();
        p.resize(1000, b'x');
        p
    };
    let stalled = Instant::now();
    for chunk in (0..published).collect::<Vec<_>>().chunks(100) {
        let mut body = Vec::new();
        for &k in chunk {
            let p = payload(k);
            body.extend_from_slice(&(p.len() as u32).to_le_bytes());
            body.extend_from_slice(&p);
        }
        let url = format!("http://{}/broadcast/batch?topic=load.test", b.admin);
        let r = ureq::post(&url).send_bytes(&body).expect("batch accepted");
        assert_eq!(r.status(), 200);
    }
    // The other node completes while the reader stalls.
    wait_until(
        "node b to deliver all during the stall",
        Duration::from_secs(30),
        || read_deliveries(&b.deliveries).len() == published,
    );
    wait_until(
        "node a to deliver all during the stall",
        Duration::from_secs(30),
        || read_deliveries(&a.deliveries).len() == published,
    );
    let lagged = metric_sum(a.admin, "plumtree_subscriber_lagged_total", None);
    assert!(lagged > 0.0, "the stalled connection missed messages");
    eprintln!("stalled for {:?}, lagged {lagged}", stalled.elapsed());
    // Resume: read until every message is accounted for.
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut chunk = vec![0u8; 64 * 1024];
    slow.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    loop {
        if let Ok(n) = slow.read(&mut chunk) {
            buf.extend_from_slice(&chunk[..n]);
        }
        let (msgs, errs, _) = parse_ops(&buf);
        let delivered = msgs.get("1").map_or(0, Vec::len);
        let missed: u64 = msgs
            .get("2")
            .into_iter()
            .flatten()
            .map(|p| {
                let v: serde_json::Value = serde_json::from_slice(p).unwrap();
                v["missed"].as_u64().unwrap()
            })
            .sum();
        if delivered as u64 + missed == published as u64 {
            assert!(errs.iter().any(|e| e == "-ERR 'Slow Consumer'"), "{errs:?}");
            assert_eq!(
                missed as f64, lagged,
                "missed = plumtree_subscriber_lagged_total"
            );
            // What arrived is each message once, in publication order.
            let got = &msgs["1"];
            let unique: std::collections::HashSet<_> = got.iter().collect();
            assert_eq!(unique.len(), got.len(), "no duplicates");
            assert!(got.windows(2).all(|w| w[0] < w[1]), "in publication order");
            eprintln!("delivered {delivered} + missed {missed} = {published}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "delivered {delivered} + missed {missed} != {published}"
        );
    }
}

#[test]
fn with_an_admin_token_connect_must_carry_it() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let token_arg = token.to_str().unwrap().to_string();
    let mut taken = Vec::new();
    let (_node, port) = node_with_port(
        1,
        &[],
        dir.path(),
        &["--admin-token-file", &token_arg],
        &mut taken,
    );
    // No CONNECT, a wrong token, and no token: refused and closed.
    for bytes in [
        &b"SUB a 1\r\n"[..],
        b"CONNECT {\"auth_token\":\"wrong\"}\r\n",
        b"CONNECT {\"verbose\":true}\r\n",
    ] {
        let got = answer_to(port, bytes);
        assert!(got.contains("-ERR 'Authorization Violation'"), "{got:?}");
    }
    // The right token: accepted.
    let mut s = TcpStream::connect(port).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("\"auth_required\":true"), "{line}");
    s.write_all(b"CONNECT {\"verbose\":true,\"auth_token\":\"s3cret-token\"}\r\nPING\r\n")
        .unwrap();
    for want in ["+OK\r\n", "PONG\r\n"] {
        line.clear();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, want);
    }
}
