//! The HTTP admin plane: `/metrics`, `/status`, `/peers`, `/members` and
//! `POST /broadcast`, served
//! by `tiny_http` on a std thread of its own so that it never runs on (or blocks) a
//! shard core. It only reads snapshots and submits broadcasts through
//! [`AdminBackend`], so the node's internals stay behind that trait.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};
use tiny_http::{Header, Method, Request, Response, Server};

use super::fault::{AddrRange, FaultRates, FaultSwitch};
use super::metrics::{encode_metrics, METRICS_CONTENT_TYPE};
use super::snapshot::{
    id_hex, AdminBackend, BroadcastRefused, ChaosRefused, LoopControlRefused, NodeSnapshot,
};

/// Most body bytes `POST /broadcast` reads; one more than any payload a datagram can
/// carry, so that an oversized body still reaches the backend and is refused there
/// with the node's own `max_payload`.
pub const MAX_BROADCAST_BODY: usize = 64 * 1024 + 1;

/// How often the server thread looks at its stop flag when idle.
const POLL: Duration = Duration::from_millis(200);

/// A running admin plane; [`AdminServer::stop`] (or dropping it) shuts it down.
pub struct AdminServer {
    addr: SocketAddr,
    server: Arc<Server>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl AdminServer {
    /// Binds `addr` (port 0 picks a free port, see [`AdminServer::local_addr`]) and
    /// starts serving on a new thread. Fails if the address cannot be bound, so the
    /// node can refuse to start.
    pub fn start(addr: SocketAddr, backend: Arc<dyn AdminBackend>) -> io::Result<AdminServer> {
        AdminServer::start_with_token(addr, backend, None)
    }

    /// Like [`AdminServer::start`]; with `token`, every request must carry
    /// `Authorization: Bearer <token>` or is answered 401 (compared in constant time).
    pub fn start_with_token(
        addr: SocketAddr,
        backend: Arc<dyn AdminBackend>,
        token: Option<String>,
    ) -> io::Result<AdminServer> {
        let server = Server::http(addr).map_err(|e| match e.downcast::<io::Error>() {
            Ok(io) => *io,
            Err(other) => io::Error::other(other),
        })?;
        let local = server.server_addr().to_ip().unwrap_or(addr);
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let server = Arc::clone(&server);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("admin-http".into())
                .spawn(move || serve(&server, &stop, backend.as_ref(), token.as_deref()))?
        };
        tracing::info!(addr = %local, "admin plane listening");
        Ok(AdminServer {
            addr: local,
            server,
            stop,
            handle: Some(handle),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting requests, wakes the server thread and joins it.
    pub fn stop(self) {
        drop(self);
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(handle) = self.handle.take() {
            if handle.join().is_err() {
                tracing::error!("admin server thread panicked");
            }
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(server: &Server, stop: &AtomicBool, backend: &dyn AdminBackend, token: Option<&str>) {
    while !stop.load(Ordering::SeqCst) {
        match server.recv_timeout(POLL) {
            Ok(Some(request)) => {
                // A panicking backend must not take the admin plane down; the dropped
                // request is answered 500 by tiny_http.
                let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    handle(request, backend, token)
                }));
                if handled.is_err() {
                    tracing::error!("admin request handler panicked");
                }
            }
            Ok(None) => {}
            Err(e) => {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                tracing::warn!(error = %e, "admin server: receive failed");
                std::thread::sleep(POLL);
            }
        }
    }
}

/// A response ready to send: status, content type, body and extra headers.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    headers: Vec<(&'static str, &'static str)>,
}

impl Reply {
    fn json(status: u16, v: &Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec()),
            headers: Vec::new(),
        }
    }

    fn error(status: u16, message: &str) -> Reply {
        Reply::json(status, &json!({ "error": message }))
    }

    fn with_header(mut self, name: &'static str, value: &'static str) -> Reply {
        self.headers.push((name, value));
        self
    }
}

/// Whether `request` carries `Authorization: Bearer <token>`; the comparison takes
/// the same time wherever the first difference is.
fn authorized(request: &Request, token: &str) -> bool {
    request.headers().iter().any(|h| {
        h.field.equiv("Authorization")
            && h.value.as_str().strip_prefix("Bearer ").is_some_and(|t| {
                constant_time_eq::constant_time_eq(t.trim().as_bytes(), token.as_bytes())
            })
    })
}

fn handle(mut request: Request, backend: &dyn AdminBackend, token: Option<&str>) {
    let path = request
        .url()
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .to_string();
    let method = request.method().clone();
    let reply = match token {
        Some(t) if !authorized(&request, t) => Reply::error(401, "missing or wrong bearer token")
            .with_header("WWW-Authenticate", "Bearer realm=\"plumcore\""),
        _ => route(&method, &path, &mut request, backend),
    };
    let mut response = Response::from_data(reply.body).with_status_code(reply.status);
    for (name, value) in std::iter::once(("Content-Type", reply.content_type)).chain(reply.headers)
    {
        if let Ok(h) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response.add_header(h);
        }
    }
    if let Err(e) = request.respond(response) {
        tracing::debug!(error = %e, "admin: client went away before the response");
    }
}

fn route(method: &Method, path: &str, request: &mut Request, backend: &dyn AdminBackend) -> Reply {
    if path == "/chaos/faults" || path == "/chaos/partition" {
        return chaos(method, path, request, backend);
    }
    if let Some(name) = path.strip_prefix("/chaos/panic/") {
        if *method != Method::Post {
            return Reply::error(405, "method not allowed").with_header("Allow", "POST");
        }
        return match backend.inject_panic(name) {
            Ok(()) => Reply::json(200, &json!({ "panicking": name })),
            Err(e @ ChaosRefused::Disabled) => Reply::error(403, &e.to_string()),
            Err(e @ ChaosRefused::UnknownLoop(_)) => Reply::error(404, &e.to_string()),
        };
    }
    if let Some(rest) = path.strip_prefix("/loops/") {
        return loop_control(method, rest, backend);
    }
    let allowed = match path {
        "/metrics" | "/status" | "/peers" | "/members" | "/loops" => Method::Get,
        "/broadcast" => Method::Post,
        _ => return Reply::error(404, "not found"),
    };
    if *method != allowed {
        let allow = if allowed == Method::Get {
            "GET"
        } else {
            "POST"
        };
        return Reply::error(405, "method not allowed").with_header("Allow", allow);
    }
    match path {
        "/metrics" => Reply {
            status: 200,
            content_type: METRICS_CONTENT_TYPE,
            body: encode_metrics(&backend.snapshot()).into_bytes(),
            headers: Vec::new(),
        },
        "/status" => Reply::json(200, &status_json(&backend.snapshot())),
        "/peers" => Reply::json(
            200,
            &serde_json::to_value(&backend.snapshot().peers).unwrap_or(Value::Null),
        ),
        "/members" => Reply::json(200, &members_json(&backend.snapshot())),
        "/loops" => Reply::json(200, &loops_json(&backend.snapshot())),
        _ => broadcast(request, backend),
    }
}

/// `POST /loops/{name}/pause` and `POST /loops/{name}/resume` (`rest` is what
/// follows `/loops/`). Loop names may hold a `/` (`shard-0/tick`), so the action is
/// the last segment.
fn loop_control(method: &Method, rest: &str, backend: &dyn AdminBackend) -> Reply {
    let Some((name, action)) = rest.rsplit_once('/') else {
        return Reply::error(404, "not found (POST /loops/{name}/pause or /resume)");
    };
    let pause = match action {
        "pause" => true,
        "resume" => false,
        _ => return Reply::error(404, "not found (POST /loops/{name}/pause or /resume)"),
    };
    if *method != Method::Post {
        return Reply::error(405, "method not allowed").with_header("Allow", "POST");
    }
    match backend.set_loop_paused(name, pause) {
        Ok(info) => Reply::json(200, &serde_json::to_value(&info).unwrap_or(Value::Null)),
        Err(e @ LoopControlRefused::Unknown(_)) => Reply::error(404, &e.to_string()),
        Err(e @ LoopControlRefused::NotPausable(_)) => Reply::error(409, &e.to_string()),
        Err(e @ LoopControlRefused::Timeout(_)) => Reply::error(503, &e.to_string()),
        Err(e @ LoopControlRefused::ShuttingDown) => Reply::error(503, &e.to_string()),
    }
}

/// LoopManager totals over every loop the node lists (control core and shards):
/// `total_loops`, `running_loops` (alive, not paused), `paused_loops`, `error_loops`
/// (last run failed), as the loop-manager reference reports them.
pub fn loop_totals(s: &NodeSnapshot) -> Value {
    let l = &s.loops;
    json!({
        "total_loops": l.len(),
        "running_loops": l.iter().filter(|l| l.running && !l.paused).count(),
        "paused_loops": l.iter().filter(|l| l.paused).count(),
        "error_loops": l.iter().filter(|l| l.consecutive_errors > 0).count(),
    })
}

/// The `/loops` document: the totals of [`loop_totals`] plus `loops`, the list.
pub fn loops_json(s: &NodeSnapshot) -> Value {
    let mut v = loop_totals(s);
    if let Value::Object(map) = &mut v {
        map.insert(
            "loops".into(),
            serde_json::to_value(&s.loops).unwrap_or(Value::Null),
        );
    }
    v
}

/// The `/members` document: this node's id and address, then the HyParView views
/// (active and passive, each member with address, shard count, state and last
/// heard), the join state, the address book's fill and the membership counters.
pub fn members_json(s: &NodeSnapshot) -> Value {
    let mut v = serde_json::to_value(&s.membership).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut v {
        map.insert("node_id".into(), json!(s.node_id));
        map.insert("addr".into(), json!(s.addr));
    }
    v
}

/// `/chaos/faults` (GET the settings, POST `FaultRates` JSON to replace the random
/// faults) and `/chaos/partition` (GET the cuts, POST `{"peers": [ADDR, ...]}` to cut
/// links, DELETE to heal them all). 403 without `--chaos`.
fn chaos(method: &Method, path: &str, request: &mut Request, backend: &dyn AdminBackend) -> Reply {
    let allow = if path == "/chaos/faults" {
        "GET, POST"
    } else {
        "GET, POST, DELETE"
    };
    let allowed = match *method {
        Method::Get | Method::Post => true,
        Method::Delete => path == "/chaos/partition",
        _ => false,
    };
    if !allowed {
        return Reply::error(405, "method not allowed").with_header("Allow", allow);
    }
    let switch = match backend.faults() {
        Ok(s) => s,
        Err(e) => return Reply::error(403, &e.to_string()),
    };
    let show = |switch: &FaultSwitch| {
        let c = switch.current();
        json!({
            "rates": c.rates,
            "cuts": c.cuts.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        })
    };
    if *method == Method::Delete {
        switch.heal();
        return Reply::json(200, &show(&switch));
    }
    if *method == Method::Post {
        let body = match read_body(request) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let done = if path == "/chaos/faults" {
            match serde_json::from_slice::<FaultRates>(&body) {
                Ok(rates) => switch.set_rates(rates).map_err(|e| e.to_string()),
                Err(e) => Err(format!("body is not fault rates JSON: {e}")),
            }
        } else {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Cut {
                peers: Vec<String>,
            }
            match serde_json::from_slice::<Cut>(&body) {
                Ok(c) => c
                    .peers
                    .iter()
                    .map(|p| p.parse::<AddrRange>())
                    .collect::<Result<Vec<_>, _>>()
                    .and_then(|cuts| switch.cut(cuts))
                    .map_err(|e| e.to_string()),
                Err(e) => Err(format!("body is not {{\"peers\": [ADDR, ...]}}: {e}")),
            }
        };
        if let Err(e) = done {
            return Reply::error(400, &e);
        }
    }
    Reply::json(200, &show(&switch))
}

/// Reads at most [`MAX_BROADCAST_BODY`] bytes of the request body.
fn read_body(request: &mut Request) -> Result<Vec<u8>, Reply> {
    let mut body = Vec::new();
    request
        .as_reader()
        .take(MAX_BROADCAST_BODY as u64)
        .read_to_end(&mut body)
        .map_err(|e| Reply::error(400, &format!("could not read body: {e}")))?;
    Ok(body)
}

fn broadcast(request: &mut Request, backend: &dyn AdminBackend) -> Reply {
    let body = match read_body(request) {
        Ok(b) => b,
        Err(r) => return r,
    };
    match backend.broadcast(body) {
        Ok(id) => Reply::json(200, &json!({ "id": id_hex(id) })),
        Err(e @ BroadcastRefused::TooLarge { .. }) => Reply::error(413, &e.to_string()),
        Err(e @ BroadcastRefused::ShuttingDown) => Reply::error(503, &e.to_string()),
        Err(e @ BroadcastRefused::Backpressure) => {
            Reply::error(503, &e.to_string()).with_header("Retry-After", "1")
        }
    }
}

/// The `/status` document: the snapshot as serialized, except that `peers` becomes
/// `{"eager": <sum of eager_partitions>, "lazy": <sum of lazy_partitions>,
/// "eager_peers": <distinct peers eager somewhere>, "lazy_peers": <distinct peers lazy
/// somewhere>, "list": [...]}`, and `loop_manager` holds [`loop_totals`].
pub fn status_json(s: &NodeSnapshot) -> Value {
    let eager: u64 = s.peers.iter().map(|p| u64::from(p.eager_partitions)).sum();
    let lazy: u64 = s.peers.iter().map(|p| u64::from(p.lazy_partitions)).sum();
    let (eager_peers, lazy_peers) = super::metrics::distinct_peers(s);
    let list = serde_json::to_value(&s.peers).unwrap_or(Value::Null);
    let mut v = serde_json::to_value(s).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut v {
        map.insert(
            "peers".into(),
            json!({
                "eager": eager,
                "lazy": lazy,
                "eager_peers": eager_peers,
                "lazy_peers": lazy_peers,
                "list": list,
            }),
        );
        map.insert("loop_manager".into(), loop_totals(s));
    }
    v
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpStream;
    use std::sync::Mutex;

    use super::*;
    use crate::ids::{MessageId, NodeId};
    use crate::node::snapshot::{IoStats, LoopInfo, MemberInfo, MembershipSnapshot, PeerInfo};

    struct Fake {
        refuse: Mutex<Option<BroadcastRefused>>,
        got: Mutex<Vec<Vec<u8>>>,
    }

    impl AdminBackend for Fake {
        fn snapshot(&self) -> NodeSnapshot {
            let peer = |id: &str, e, l| PeerInfo {
                node_id: id.into(),
                addr: "127.0.0.1:7100".parse().unwrap(),
                shards: 2,
                state: "active".into(),
                last_heard_ms_ago: 10,
                eager_partitions: e,
                lazy_partitions: l,
            };
            NodeSnapshot {
                node_id: "00000000000000ff".into(),
                addr: "127.0.0.1:7000".parse().unwrap(),
                uptime_ms: 5000,
                shutting_down: false,
                shards: vec![],
                peers: vec![
                    peer("0000000000000001", 3, 5),
                    peer("0000000000000002", 1, 7),
                ],
                loops: vec![LoopInfo {
                    name: "maintenance".into(),
                    enabled: true,
                    running: true,
                    paused: false,
                    interval_ms: 200,
                    run_count: 9,
                    error_count: 0,
                    consecutive_errors: 0,
                    panic_count: 0,
                    average_duration_ms: 0.1,
                    last_run_time: Some(4000),
                    last_error: None,
                }],
                control_io: IoStats::default(),
                broadcasts_accepted: 1,
                broadcasts_refused: 2,
                degraded: Vec::new(),
                tasks: Default::default(),
                task_names: Vec::new(),
                membership: MembershipSnapshot {
                    active: vec![MemberInfo {
                        node_id: "0000000000000001".into(),
                        addr: Some("127.0.0.1:7100".parse().unwrap()),
                        shards: 2,
                        state: "active".into(),
                        last_heard_ms_ago: Some(10),
                    }],
                    passive: vec![MemberInfo {
                        node_id: "0000000000000009".into(),
                        addr: Some("127.0.0.1:7900".parse().unwrap()),
                        shards: 1,
                        state: "passive".into(),
                        last_heard_ms_ago: None,
                    }],
                    active_capacity: 5,
                    passive_capacity: 30,
                    ..MembershipSnapshot::default()
                },
            }
        }

        fn broadcast(&self, payload: Vec<u8>) -> Result<MessageId, BroadcastRefused> {
            if payload.len() > 1200 {
                return Err(BroadcastRefused::TooLarge {
                    len: payload.len(),
                    max: 1200,
                });
            }
            if let Some(e) = self.refuse.lock().unwrap().clone() {
                return Err(e);
            }
            self.got.lock().unwrap().push(payload);
            Ok(MessageId {
                origin: NodeId(0xff),
                seq: 7,
            })
        }
    }

    /// One request over a fresh connection; returns (status, headers, body).
    fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
        request_with(addr, method, path, "", body)
    }

    fn start() -> (AdminServer, Arc<Fake>) {
        let fake = Arc::new(Fake {
            refuse: Mutex::new(None),
            got: Mutex::new(Vec::new()),
        });
        let server = AdminServer::start("127.0.0.1:0".parse().unwrap(), fake.clone()).unwrap();
        assert_ne!(server.local_addr().port(), 0);
        (server, fake)
    }

    #[test]
    fn routes() {
        let (server, fake) = start();
        let addr = server.local_addr();

        let (status, head, body) = request(addr, "GET", "/metrics", b"");
        assert_eq!(status, 200);
        assert!(head
            .to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"));
        let text = String::from_utf8(body).unwrap();
        assert!(
            text.contains("plumtree_broadcasts_refused_total 2\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));

        let (status, head, body) = request(addr, "GET", "/status?pretty", b"");
        assert_eq!(status, 200);
        assert!(head
            .to_ascii_lowercase()
            .contains("content-type: application/json"));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["node_id"], "00000000000000ff");
        assert_eq!(v["addr"], "127.0.0.1:7000");
        assert_eq!(v["peers"]["eager"], 4);
        assert_eq!(v["peers"]["lazy"], 12);
        assert_eq!(v["peers"]["list"].as_array().unwrap().len(), 2);
        assert_eq!(v["loops"][0]["name"], "maintenance");
        assert!(v["shards"].is_array());

        let (status, _, body) = request(addr, "GET", "/peers", b"");
        assert_eq!(status, 200);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v[1]["node_id"], "0000000000000002");
        assert_eq!(v[0]["eager_partitions"], 3);

        let (status, _, body) = request(addr, "GET", "/members", b"");
        assert_eq!(status, 200);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["node_id"], "00000000000000ff");
        assert_eq!(v["active"][0]["addr"], "127.0.0.1:7100");
        assert_eq!(v["active"][0]["state"], "active");
        assert_eq!(v["passive"][0]["node_id"], "0000000000000009");
        assert!(v["passive"][0]["last_heard_ms_ago"].is_null());
        assert_eq!(v["active_capacity"], 5);
        assert_eq!(request(addr, "POST", "/members", b"").0, 405);

        let (status, _, body) = request(addr, "POST", "/broadcast", b"hello");
        assert_eq!(status, 200);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["id"], "00000000000000ff0000000000000007");
        assert_eq!(fake.got.lock().unwrap().as_slice(), &[b"hello".to_vec()]);

        let big = vec![b'x'; 5000];
        let (status, _, body) = request(addr, "POST", "/broadcast", &big);
        assert_eq!(status, 413);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("5000"));

        // Larger than the read limit: the backend sees a truncated body and refuses it.
        let huge = vec![b'y'; 100_000];
        let (status, _, _) = request(addr, "POST", "/broadcast", &huge);
        assert_eq!(status, 413);

        *fake.refuse.lock().unwrap() = Some(BroadcastRefused::ShuttingDown);
        assert_eq!(request(addr, "POST", "/broadcast", b"x").0, 503);
        *fake.refuse.lock().unwrap() = Some(BroadcastRefused::Backpressure);
        let (status, head, _) = request(addr, "POST", "/broadcast", b"x");
        assert_eq!(status, 503);
        assert!(head.to_ascii_lowercase().contains("retry-after: 1"));

        assert_eq!(request(addr, "GET", "/nope", b"").0, 404);
        assert_eq!(request(addr, "GET", "/", b"").0, 404);
        let (status, head, _) = request(addr, "GET", "/broadcast", b"");
        assert_eq!(status, 405);
        assert!(head.to_ascii_lowercase().contains("allow: post"));
        assert_eq!(request(addr, "POST", "/metrics", b"x").0, 405);
        assert_eq!(request(addr, "DELETE", "/status", b"").0, 405);

        server.stop();
    }

    /// One request with extra header lines; returns (status, headers, body).
    fn request_with(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &str,
        body: &[u8],
    ) -> (u16, String, Vec<u8>) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        let mut raw = Vec::new();
        // The server may close before reading an oversized body; keep what arrived.
        let _ = s.read_to_end(&mut raw);
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("header end");
        let head = String::from_utf8(raw[..split].to_vec()).unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head, raw[split + 4..].to_vec())
    }

    #[test]
    fn bearer_token_guards_every_route() {
        let fake = Arc::new(Fake {
            refuse: Mutex::new(None),
            got: Mutex::new(Vec::new()),
        });
        let server = AdminServer::start_with_token(
            "127.0.0.1:0".parse().unwrap(),
            fake.clone(),
            Some("s3cret".into()),
        )
        .unwrap();
        let addr = server.local_addr();
        let good = "Authorization: Bearer s3cret\r\n";
        for (method, path) in [
            ("GET", "/metrics"),
            ("GET", "/status"),
            ("GET", "/peers"),
            ("POST", "/broadcast"),
            ("POST", "/chaos/panic/stats"),
            ("POST", "/loops/seen_cleanup/pause"),
            ("POST", "/loops/seen_cleanup/resume"),
            ("GET", "/loops"),
            ("GET", "/chaos/faults"),
            ("GET", "/nope"),
        ] {
            for bad in [
                "",
                "Authorization: Bearer s3cre\r\n",
                "Authorization: Bearer s3cret!\r\n",
                "Authorization: Basic czNjcmV0\r\n",
                "Authorization: s3cret\r\n",
            ] {
                let (status, head, _) = request_with(addr, method, path, bad, b"x");
                assert_eq!(status, 401, "{method} {path} with {bad:?}");
                assert!(head
                    .to_ascii_lowercase()
                    .contains("www-authenticate: bearer"));
            }
        }
        assert!(fake.got.lock().unwrap().is_empty(), "nothing got through");
        assert_eq!(request_with(addr, "GET", "/status", good, b"").0, 200);
        assert_eq!(request_with(addr, "GET", "/metrics", good, b"").0, 200);
        assert_eq!(request_with(addr, "POST", "/broadcast", good, b"hi").0, 200);
        assert_eq!(fake.got.lock().unwrap().len(), 1);
        assert_eq!(request_with(addr, "GET", "/nope", good, b"").0, 404);
        // Chaos stays off without --chaos, token or not.
        assert_eq!(request_with(addr, "GET", "/chaos/faults", good, b"").0, 403);
        server.stop();
    }

    /// A backend with the fault layer on.
    struct Chaotic(Arc<FaultSwitch>);

    impl AdminBackend for Chaotic {
        fn snapshot(&self) -> NodeSnapshot {
            unreachable!()
        }
        fn broadcast(&self, _: Vec<u8>) -> Result<MessageId, BroadcastRefused> {
            Err(BroadcastRefused::ShuttingDown)
        }
        fn faults(&self) -> Result<Arc<FaultSwitch>, ChaosRefused> {
            Ok(self.0.clone())
        }
    }

    #[test]
    fn chaos_routes() {
        let (server, _) = start();
        let addr = server.local_addr();
        for (m, p) in [
            ("GET", "/chaos/faults"),
            ("POST", "/chaos/faults"),
            ("POST", "/chaos/partition"),
            ("DELETE", "/chaos/partition"),
        ] {
            assert_eq!(request(addr, m, p, b"{}").0, 403, "{m} {p} without --chaos");
        }
        server.stop();

        let switch = Arc::new(FaultSwitch::new(Default::default()));
        let server = AdminServer::start(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(Chaotic(switch.clone())),
        )
        .unwrap();
        let addr = server.local_addr();
        let (status, _, body) = request(
            addr,
            "POST",
            "/chaos/faults",
            br#"{"drop": 0.05, "delay": 0.1, "delay_ms": 5, "side": "send"}"#,
        );
        assert_eq!(status, 200);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["rates"]["drop"], 0.05);
        assert_eq!(v["rates"]["side"], "send");
        assert_eq!(switch.current().rates.delay_ms, 5);
        let (status, _, body) = request(addr, "POST", "/chaos/faults", br#"{"drop": 2}"#);
        assert_eq!(status, 400);
        assert!(String::from_utf8(body).unwrap().contains("drop"));
        assert_eq!(
            request(addr, "POST", "/chaos/faults", br#"{"x": 1}"#).0,
            400
        );
        assert_eq!(request(addr, "POST", "/chaos/faults", b"nope").0, 400);
        assert_eq!(
            switch.current().rates.drop,
            0.05,
            "refused updates change nothing"
        );

        let (status, _, body) = request(
            addr,
            "POST",
            "/chaos/partition",
            br#"{"peers": ["127.0.0.1:7000-7002", "10.0.0.9"]}"#,
        );
        assert_eq!(status, 200);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["cuts"], json!(["127.0.0.1:7000-7002", "10.0.0.9"]));
        assert_eq!(
            request(addr, "POST", "/chaos/partition", br#"{"peers": ["x"]}"#).0,
            400
        );
        let (_, _, body) = request(addr, "GET", "/chaos/partition", b"");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["cuts"].as_array().unwrap().len(), 2);
        let (status, _, body) = request(addr, "DELETE", "/chaos/partition", b"");
        assert_eq!(status, 200);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v["cuts"].as_array().unwrap().is_empty());
        assert!(switch.current().cuts.is_empty());
        let (status, head, _) = request(addr, "DELETE", "/chaos/faults", b"");
        assert_eq!(status, 405);
        assert!(head.to_ascii_lowercase().contains("allow: get, post"));
        server.stop();
    }

    #[test]
    fn stop_is_prompt() {
        let (server, _) = start();
        let t = std::time::Instant::now();
        server.stop();
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn bind_failure_is_an_error() {
        let (server, fake) = start();
        let err = AdminServer::start(server.local_addr(), fake).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
