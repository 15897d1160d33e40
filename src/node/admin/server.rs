//! The HTTP admin plane: `/metrics`, `/status`, `/peers`, `/members`, `/loops`,
//! `POST /loops/{name}/pause|resume` and `POST /broadcast`, served by hyper (HTTP/1.1)
//! on a small current-thread tokio runtime on a std thread of its own, so that it
//! never runs on (or blocks) a shard core. It only reads snapshots and submits
//! broadcasts through [`AdminBackend`], so the node's internals stay behind that trait.
//!
//! Every resource a client can make it hold is bounded ([`AdminLimits`]): header bytes
//! (hyper's read buffer), the body (read only after the token and the declared length
//! were checked, and through a length limit), the number of connections (at the cap, a
//! connection that is not inside a request is closed to make room: first the oldest that
//! never sent a byte, then the one whose last byte is oldest; if all are inside a
//! request, the new connection is refused), the time to send a request head (which is
//! also the keep-alive idle timeout) and the time to send a body. Each refusal is counted
//! by reason in [`AdminRejected`] (`plumtree_admin_rejected_total{reason}`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use std::{fmt, io};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::metrics::{encode_metrics, METRICS_CONTENT_TYPE};
use crate::node::batch::{max_batch_body, parse_batch};
use crate::node::net::socket::{AddrRange, FaultRates, FaultSwitch};
use crate::node::snapshot::{
    id_hex, AdminBackend, BroadcastRefused, ChaosRefused, LoopControlRefused, NodeSnapshot,
};
use crate::node::snapshot::{AdminRejected, MAX_BROADCAST_BODY};
use crate::topic::Topic;

/// The admin plane's resource bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminLimits {
    /// Most bytes of request line plus headers (hyper's read buffer; at least 8 KiB).
    /// Larger heads are answered 431 and the connection is closed.
    pub max_header_bytes: usize,
    /// Most connections held at once.
    pub max_connections: usize,
    /// Time a connection may take to send a complete request head, counted from the
    /// moment the server waits for one: a new connection, or a kept-alive one between
    /// requests (so it is the idle timeout too). Then the connection is closed.
    pub header_timeout: Duration,
    /// Time a client may take to send a request body.
    pub body_timeout: Duration,
    /// Requests handled at once (threads of the blocking pool that calls the node).
    pub max_inflight: usize,
    /// Whether `POST /broadcast` accepts an empty payload; refused with 400 otherwise
    /// (an empty broadcast is almost always a client bug: `curl -d @missing-file`).
    pub allow_empty: bool,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            max_header_bytes: 16 * 1024,
            max_connections: 128,
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            max_inflight: 4,
            allow_empty: false,
        }
    }
}

#[derive(Default)]
struct Counters {
    header_too_large: AtomicU64,
    header_timeout: AtomicU64,
    body_too_large: AtomicU64,
    body_timeout: AtomicU64,
    connections: AtomicU64,
    evicted: AtomicU64,
    unauthorized: AtomicU64,
    bad_request: AtomicU64,
    empty_payload: AtomicU64,
    open: AtomicUsize,
}

impl Counters {
    fn load(&self) -> AdminRejected {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AdminRejected {
            header_too_large: l(&self.header_too_large),
            header_timeout: l(&self.header_timeout),
            body_too_large: l(&self.body_too_large),
            body_timeout: l(&self.body_timeout),
            connections: l(&self.connections),
            evicted: l(&self.evicted),
            unauthorized: l(&self.unauthorized),
            bad_request: l(&self.bad_request),
            empty_payload: l(&self.empty_payload),
            open_connections: self.open.load(Ordering::Relaxed) as u64,
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// What every request handler shares.
struct Ctx {
    backend: Arc<dyn AdminBackend>,
    token: Option<String>,
    limits: AdminLimits,
    counters: Counters,
    /// Bounds the calls into the node running at once.
    inflight: tokio::sync::Semaphore,
}

/// One held connection, for the eviction rule.
struct Slot {
    id: u64,
    accepted: Instant,
    /// Inside a request (head received, response not yet written): not evictable.
    busy: Arc<AtomicBool>,
    /// When the client last sent bytes, in milliseconds since the server started plus
    /// one (0: never). A client that is sending is evicted after the silent ones, so a
    /// flood of silent connections cannot push out one whose request is arriving.
    heard: Arc<AtomicU64>,
    kill: Arc<Notify>,
}

/// A connection younger than this is evicted only when every idle one is (then the
/// newest goes: a burst of connections pushes out its own): a client that has just
/// connected has not had the time to send its request, and must not lose to
/// connections that trickle bytes (slowloris) or sit silent.
const EVICTION_GRACE: Duration = Duration::from_millis(250);

impl Slot {
    /// Eviction order among connections past [`EVICTION_GRACE`]: never heard from
    /// first, then the longest silent; ties by age.
    fn eviction_key(&self) -> (u64, Instant) {
        (self.heard.load(Ordering::Relaxed), self.accepted)
    }
}

/// A TCP stream that records when its client last sent bytes (see [`Slot::heard`]).
struct WatchedStream {
    inner: tokio::net::TcpStream,
    heard: Arc<AtomicU64>,
    epoch: Instant,
}

impl tokio::io::AsyncRead for WatchedStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let ms = this.epoch.elapsed().as_millis() as u64 + 1;
            this.heard.store(ms, Ordering::Relaxed);
        }
        r
    }
}

impl tokio::io::AsyncWrite for WatchedStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A running admin plane; [`AdminServer::stop`] (or dropping it) shuts it down.
pub struct AdminServer {
    addr: SocketAddr,
    stop: Arc<Notify>,
    stopped: Arc<AtomicBool>,
    ctx: Arc<Ctx>,
    handle: Option<JoinHandle<()>>,
}

impl fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
        AdminServer::start_with(addr, backend, None, AdminLimits::default())
    }

    /// Like [`AdminServer::start`]; with `token`, every request must carry
    /// `Authorization: Bearer <token>` or is answered 401 (compared in constant time).
    pub fn start_with_token(
        addr: SocketAddr,
        backend: Arc<dyn AdminBackend>,
        token: Option<String>,
    ) -> io::Result<AdminServer> {
        AdminServer::start_with(addr, backend, token, AdminLimits::default())
    }

    /// Like [`AdminServer::start_with_token`], with explicit [`AdminLimits`].
    pub fn start_with(
        addr: SocketAddr,
        backend: Arc<dyn AdminBackend>,
        token: Option<String>,
        limits: AdminLimits,
    ) -> io::Result<AdminServer> {
        let limits = AdminLimits {
            max_header_bytes: limits.max_header_bytes.max(8192),
            max_connections: limits.max_connections.max(1),
            max_inflight: limits.max_inflight.max(1),
            ..limits
        };
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let local = std_listener.local_addr()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(limits.max_inflight)
            // Keep the pool's threads (and their allocator heaps) instead of starting
            // new ones after every idle spell.
            .thread_keep_alive(Duration::from_secs(24 * 3600))
            .thread_name("admin-http-call")
            .build()?;
        let listener = {
            let _g = rt.enter();
            tokio::net::TcpListener::from_std(std_listener)?
        };
        let ctx = Arc::new(Ctx {
            backend,
            token,
            limits,
            counters: Counters::default(),
            inflight: tokio::sync::Semaphore::new(limits.max_inflight),
        });
        let stop = Arc::new(Notify::new());
        let stopped = Arc::new(AtomicBool::new(false));
        let handle = {
            let (ctx, stop, stopped) = (ctx.clone(), stop.clone(), stopped.clone());
            std::thread::Builder::new()
                .name("admin-http".into())
                .spawn(move || {
                    rt.block_on(accept_loop(listener, ctx, stop, stopped));
                    // Connections still open are dropped with the runtime; a call into
                    // the node in flight gets a moment to finish.
                    rt.shutdown_timeout(Duration::from_secs(1));
                })?
        };
        tracing::info!(addr = %local, "admin plane listening");
        Ok(AdminServer {
            addr: local,
            stop,
            stopped,
            ctx,
            handle: Some(handle),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the admin plane refused so far.
    pub fn rejected(&self) -> AdminRejected {
        self.ctx.counters.load()
    }

    /// Stops accepting requests, wakes the server thread and joins it.
    pub fn stop(self) {
        drop(self);
    }

    fn shutdown(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.stop.notify_one();
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

async fn accept_loop(
    listener: tokio::net::TcpListener,
    ctx: Arc<Ctx>,
    stop: Arc<Notify>,
    stopped: Arc<AtomicBool>,
) {
    let slots: Arc<Mutex<Vec<Slot>>> = Arc::new(Mutex::new(Vec::new()));
    let epoch = Instant::now();
    let mut next_id = 0u64;
    while !stopped.load(Ordering::SeqCst) {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.notified() => break,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "admin plane: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let id = next_id;
        let busy = Arc::new(AtomicBool::new(false));
        let heard = Arc::new(AtomicU64::new(0));
        let kill = Arc::new(Notify::new());
        let full = {
            let mut v = slots.lock().unwrap_or_else(|p| p.into_inner());
            if v.len() >= ctx.limits.max_connections {
                // Make room: close a connection that is waiting for a request (past
                // the grace period, silent ones first, see `Slot::heard`; if all are
                // younger, the newest); if every one is inside a request, refuse.
                let now = Instant::now();
                let idle = || v.iter().filter(|s| !s.busy.load(Ordering::SeqCst));
                let victim = idle()
                    .filter(|s| now.duration_since(s.accepted) >= EVICTION_GRACE)
                    .min_by_key(|s| s.eviction_key())
                    .or_else(|| idle().max_by_key(|s| s.accepted))
                    .map(|s| s.id);
                match victim {
                    Some(vid) => {
                        let i = v.iter().position(|s| s.id == vid).expect("found above");
                        let s = v.swap_remove(i);
                        s.kill.notify_one();
                        bump(&ctx.counters.evicted);
                    }
                    None => {
                        bump(&ctx.counters.connections);
                        drop(v);
                        refuse_connection(stream);
                        continue;
                    }
                }
            }
            v.push(Slot {
                id,
                accepted: Instant::now(),
                busy: busy.clone(),
                heard: heard.clone(),
                kill: kill.clone(),
            });
            v.len() >= ctx.limits.max_connections
        };
        ctx.counters.open.fetch_add(1, Ordering::Relaxed);
        let stream = WatchedStream {
            inner: stream,
            heard,
            epoch,
        };
        {
            let (ctx, slots) = (ctx.clone(), slots.clone());
            tokio::spawn(async move {
                serve_connection(stream, &ctx, busy, &kill).await;
                ctx.counters.open.fetch_sub(1, Ordering::Relaxed);
                let mut v = slots.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(i) = v.iter().position(|s| s.id == id) {
                    v.swap_remove(i);
                }
            });
        }
        if full {
            // At the cap, let the connections just accepted read what their clients
            // sent before the next accept picks a victim: otherwise a burst of
            // connections could evict a new one before its request was even read.
            tokio::task::yield_now().await;
        }
    }
}

/// Answers a connection over the cap with a short 503 if the socket takes it at once,
/// then closes it; never waits on the client.
fn refuse_connection(stream: tokio::net::TcpStream) {
    let msg = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 38\r\n\r\n{\"error\":\"too many admin connections\"}";
    let _ = stream.try_write(msg);
}

async fn serve_connection(
    stream: WatchedStream,
    ctx: &Arc<Ctx>,
    busy: Arc<AtomicBool>,
    kill: &Notify,
) {
    let svc = {
        let ctx = ctx.clone();
        service_fn(move |req| {
            let (ctx, busy) = (ctx.clone(), busy.clone());
            async move {
                busy.store(true, Ordering::SeqCst);
                let reply = handle(req, &ctx).await;
                busy.store(false, Ordering::SeqCst);
                Ok::<_, Infallible>(reply.into_response())
            }
        })
    };
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .max_buf_size(ctx.limits.max_header_bytes)
        .header_read_timeout(ctx.limits.header_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), svc);
    let c = &ctx.counters;
    tokio::select! {
        r = conn => {
            if let Err(e) = r {
                if e.is_parse_too_large() {
                    bump(&c.header_too_large);
                } else if e.is_timeout() {
                    bump(&c.header_timeout);
                } else if e.is_parse() || e.is_parse_status() {
                    bump(&c.bad_request);
                } else {
                    tracing::debug!(error = %e, "admin connection ended");
                }
            }
        }
        _ = kill.notified() => {}
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

impl Reply {
    fn into_response(self) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(Bytes::from(self.body)));
        *r.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        for (name, value) in self.headers {
            h.insert(name, HeaderValue::from_static(value));
        }
        r
    }
}

/// Whether `headers` carry `Authorization: Bearer <token>`; the comparison takes
/// the same time wherever the first difference is.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(AUTHORIZATION).iter().any(|v| {
        v.to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| {
                constant_time_eq::constant_time_eq(t.trim().as_bytes(), token.as_bytes())
            })
    })
}

/// The declared body length, if the request has a valid `Content-Length`.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The 413 a too-large body gets: `/broadcast` in the node's own words, with the
/// real size when the client declared it.
fn too_large(path: &str, len: Option<u64>, max: usize) -> Reply {
    let size = match len {
        Some(n) => format!("{n} bytes"),
        None => format!("more than {max} bytes"),
    };
    let msg = if path == "/broadcast" {
        format!("payload of {size} exceeds max_payload {max}")
    } else {
        format!("body of {size} exceeds the route's limit of {max} bytes")
    };
    Reply::error(413, &msg)
}

/// One request: the token as soon as the head is in, then (for POST) the declared
/// length, then the body through a length limit and a timeout, then the route on the
/// blocking pool (the backend may wait on the control core).
async fn handle(req: Request<Incoming>, ctx: &Arc<Ctx>) -> Reply {
    let c = &ctx.counters;
    if let Some(t) = &ctx.token {
        if !authorized(req.headers(), t) {
            bump(&c.unauthorized);
            return Reply::error(401, "missing or wrong bearer token")
                .with_header("www-authenticate", "Bearer realm=\"plumcore\"");
        }
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let body = if method == Method::POST {
        let max = match path.as_str() {
            "/broadcast" => ctx.backend.max_payload(),
            "/broadcast/batch" => max_batch_body(ctx.backend.max_payload()),
            _ => MAX_BROADCAST_BODY,
        };
        let declared = content_length(req.headers());
        if let Some(n) = declared.filter(|&n| n > max as u64) {
            bump(&c.body_too_large);
            return too_large(&path, Some(n), max);
        }
        let limited = Limited::new(req.into_body(), max);
        match tokio::time::timeout(ctx.limits.body_timeout, limited.collect()).await {
            Err(_) => {
                bump(&c.body_timeout);
                return Reply::error(408, "request body not received in time");
            }
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
                bump(&c.body_too_large);
                return too_large(&path, None, max);
            }
            Ok(Err(e)) => return Reply::error(400, &format!("could not read body: {e}")),
            Ok(Ok(b)) => b.to_bytes().to_vec(),
        }
    } else {
        Vec::new()
    };
    let Ok(_permit) = ctx.inflight.acquire().await else {
        return Reply::error(503, "admin plane is stopping");
    };
    let ctx2 = ctx.clone();
    let call = tokio::task::spawn_blocking(move || {
        // A panicking backend must not take the admin plane down.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            route(&method, &path, &query, &body, &ctx2)
        }))
    });
    match call.await {
        Ok(Ok(reply)) => reply,
        _ => {
            tracing::error!("admin request handler panicked");
            Reply::error(500, "internal error")
        }
    }
}

/// The snapshot the backend gives, with the admin plane's own counters.
fn snapshot(ctx: &Ctx) -> NodeSnapshot {
    let mut s = ctx.backend.snapshot();
    s.admin = ctx.counters.load();
    s
}

fn route(method: &Method, path: &str, query: &str, body: &[u8], ctx: &Ctx) -> Reply {
    let backend = ctx.backend.as_ref();
    if path == "/chaos/faults" || path == "/chaos/partition" {
        return chaos(method, path, body, backend);
    }
    if let Some(name) = path.strip_prefix("/chaos/panic/") {
        if *method != Method::POST {
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
        "/metrics" | "/status" | "/peers" | "/members" | "/loops" => Method::GET,
        "/broadcast" | "/broadcast/batch" => Method::POST,
        _ => return Reply::error(404, "not found"),
    };
    if *method != allowed {
        let allow = if allowed == Method::GET {
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
            body: encode_metrics(&snapshot(ctx)).into_bytes(),
            headers: Vec::new(),
        },
        "/status" => Reply::json(200, &status_json(&snapshot(ctx))),
        "/peers" => Reply::json(
            200,
            &serde_json::to_value(&backend.snapshot().peers).unwrap_or(Value::Null),
        ),
        "/members" => Reply::json(200, &members_json(&backend.snapshot())),
        "/loops" => Reply::json(200, &loops_json(&backend.snapshot())),
        _ if !matches!(path, "/broadcast" | "/broadcast/batch") => Reply::error(404, "not found"),
        _ => {
            let topic = match topic_param(query) {
                Ok(t) => t,
                Err(e) => {
                    bump(&ctx.counters.bad_request);
                    return Reply::error(400, &e);
                }
            };
            if path == "/broadcast/batch" {
                return broadcast_batch(body, topic, ctx);
            }
            if body.is_empty() && !ctx.limits.allow_empty {
                bump(&ctx.counters.empty_payload);
                return Reply::error(
                    400,
                    "empty payload refused (start the node with allow_empty = true / --allow-empty to accept empty broadcasts)",
                );
            }
            broadcast(body, topic, backend)
        }
    }
}

/// The `topic` query parameter of `/broadcast` and `/broadcast/batch` (`default`
/// without one), percent-decoded and checked.
fn topic_param(query: &str) -> Result<Topic, String> {
    let mut topic = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "topic" {
            let v = percent_decode(v)
                .ok_or("query parameter `topic` is not valid percent-encoded UTF-8")?;
            topic =
                Some(Topic::new(&v).map_err(|e| format!("query parameter `topic` ({v:?}): {e}"))?);
        }
    }
    Ok(topic.unwrap_or_default())
}

/// Decodes `%XX` escapes and `+` (a space, which a topic then refuses).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
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
    if *method != Method::POST {
        return Reply::error(405, "method not allowed").with_header("Allow", "POST");
    }
    match backend.set_loop_paused(name, pause) {
        Ok(info) => Reply::json(200, &serde_json::to_value(&info).unwrap_or(Value::Null)),
        Err(e @ LoopControlRefused::Unknown(_)) => Reply::error(404, &e.to_string()),
        Err(e @ LoopControlRefused::NotPausable(_)) => Reply::error(409, &e.to_string()),
        Err(e @ (LoopControlRefused::Timeout(_) | LoopControlRefused::Busy)) => {
            Reply::error(503, &e.to_string()).with_header("retry-after", "1")
        }
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
        map.insert("node_name".into(), json!(s.node_name));
        map.insert("addr".into(), json!(s.addr));
    }
    v
}

/// `/chaos/faults` (GET the settings, POST `FaultRates` JSON to replace the random
/// faults) and `/chaos/partition` (GET the cuts, POST `{"peers": [ADDR, ...]}` to cut
/// links, DELETE to heal them all). 403 without `--chaos`.
fn chaos(method: &Method, path: &str, body: &[u8], backend: &dyn AdminBackend) -> Reply {
    let allow = if path == "/chaos/faults" {
        "GET, POST"
    } else {
        "GET, POST, DELETE"
    };
    let allowed = match *method {
        Method::GET | Method::POST => true,
        Method::DELETE => path == "/chaos/partition",
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
    if *method == Method::DELETE {
        switch.heal();
        return Reply::json(200, &show(&switch));
    }
    if *method == Method::POST {
        let done = if path == "/chaos/faults" {
            match serde_json::from_slice::<FaultRates>(body) {
                Ok(rates) => switch.set_rates(rates).map_err(|e| e.to_string()),
                Err(e) => Err(format!("body is not fault rates JSON: {e}")),
            }
        } else {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Cut {
                peers: Vec<String>,
            }
            match serde_json::from_slice::<Cut>(body) {
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

/// `POST /broadcast/batch`: the body is checked whole first (400 naming the first bad
/// entry, nothing broadcast); then the payloads are broadcast in order. A refusal
/// part-way stops there: the ids accepted so far come back with the index and reason
/// of the refusal, so the client resends from that index (with none accepted, the
/// answer is the single broadcast's error).
fn broadcast_batch(body: &[u8], topic: Topic, ctx: &Ctx) -> Reply {
    let backend = ctx.backend.as_ref();
    let payloads = match parse_batch(body, backend.max_payload(), ctx.limits.allow_empty) {
        Ok(p) => p,
        Err(e) => {
            bump(&ctx.counters.bad_request);
            return Reply::error(400, &e.to_string());
        }
    };
    let mut ids = Vec::with_capacity(payloads.len());
    for (index, p) in payloads.iter().enumerate() {
        match backend.broadcast(topic.clone(), p.to_vec()) {
            Ok(id) => ids.push(id_hex(id)),
            Err(e) if index == 0 => return refused(e),
            Err(e) => {
                return Reply::json(
                    200,
                    &json!({
                        "ids": ids,
                        "accepted": index,
                        "refused": { "index": index, "error": e.to_string() },
                    }),
                )
            }
        }
    }
    Reply::json(200, &json!({ "ids": ids, "accepted": payloads.len() }))
}

/// The answer to a refused broadcast.
fn refused(e: BroadcastRefused) -> Reply {
    match e {
        e @ (BroadcastRefused::TooLarge { .. } | BroadcastRefused::DoesNotFit { .. }) => {
            Reply::error(413, &e.to_string())
        }
        e @ BroadcastRefused::ShuttingDown => Reply::error(503, &e.to_string()),
        e @ BroadcastRefused::Backpressure => {
            Reply::error(503, &e.to_string()).with_header("Retry-After", "1")
        }
    }
}

fn broadcast(body: &[u8], topic: Topic, backend: &dyn AdminBackend) -> Reply {
    match backend.broadcast(topic, body.to_vec()) {
        Ok(id) => Reply::json(200, &json!({ "id": id_hex(id) })),
        Err(e) => refused(e),
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
    use std::io::{Read, Write};
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
                name: Some(format!("peer-{id}")),
                addr: "127.0.0.1:7100".parse().unwrap(),
                shards: 2,
                state: "active".into(),
                last_heard_ms_ago: 10,
                eager_partitions: e,
                lazy_partitions: l,
            };
            NodeSnapshot {
                node_id: "00000000000000ff".into(),
                node_name: Some("web-1".into()),
                advertise: None,
                names_known: 3,
                names_evicted: 0,
                name_conflicts_sent: 0,
                name_conflicts_received: 0,
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
                subscribers: 0,
                subscriber_lagged: 0,
                degraded: Vec::new(),
                tasks: Default::default(),
                task_names: Vec::new(),
                membership: MembershipSnapshot {
                    active: vec![MemberInfo {
                        node_id: "0000000000000001".into(),
                        name: Some("web-2".into()),
                        addr: Some("127.0.0.1:7100".parse().unwrap()),
                        shards: 2,
                        state: "active".into(),
                        last_heard_ms_ago: Some(10),
                    }],
                    passive: vec![MemberInfo {
                        node_id: "0000000000000009".into(),
                        name: None,
                        addr: Some("127.0.0.1:7900".parse().unwrap()),
                        shards: 1,
                        state: "passive".into(),
                        last_heard_ms_ago: None,
                    }],
                    active_capacity: 5,
                    passive_capacity: 30,
                    ..MembershipSnapshot::default()
                },
                admin: Default::default(),
                client: Default::default(),
                delivery_log: Default::default(),
            }
        }

        fn broadcast(
            &self,
            _topic: Topic,
            payload: Vec<u8>,
        ) -> Result<MessageId, BroadcastRefused> {
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
        // Distinct peers: both are eager somewhere and lazy somewhere.
        assert_eq!(v["peers"]["eager_peers"], 2);
        assert_eq!(v["peers"]["lazy_peers"], 2);
        assert_eq!(v["loop_manager"]["total_loops"], 1);
        assert_eq!(v["loop_manager"]["running_loops"], 1);
        assert_eq!(v["loops"][0]["interval_ms"], 200);
        assert_eq!(v["loops"][0]["enabled"], true);
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
        assert_eq!(v["active"][0]["name"], "web-2");
        assert_eq!(v["node_name"], "web-1");
        assert_eq!(v["passive"][0]["node_id"], "0000000000000009");
        assert!(v["passive"][0]["last_heard_ms_ago"].is_null());
        assert_eq!(v["active_capacity"], 5);
        assert_eq!(request(addr, "POST", "/members", b"").0, 405);

        let (status, _, body) = request(addr, "POST", "/broadcast", b"");
        assert_eq!(status, 400);
        assert!(String::from_utf8(body).unwrap().contains("allow_empty"));
        assert!(fake.got.lock().unwrap().is_empty());
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

        // Larger than the read limit: refused from its declared length, with that size.
        let huge = vec![b'y'; 100_000];
        let (status, _, body) = request(addr, "POST", "/broadcast", &huge);
        assert_eq!(status, 413);
        assert!(String::from_utf8(body).unwrap().contains("100000 bytes"));

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
        fn broadcast(&self, _: Topic, _: Vec<u8>) -> Result<MessageId, BroadcastRefused> {
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

    fn start_limited(limits: AdminLimits, token: Option<&str>) -> (AdminServer, Arc<Fake>) {
        let fake = Arc::new(Fake {
            refuse: Mutex::new(None),
            got: Mutex::new(Vec::new()),
        });
        let server = AdminServer::start_with(
            "127.0.0.1:0".parse().unwrap(),
            fake.clone(),
            token.map(str::to_string),
            limits,
        )
        .unwrap();
        (server, fake)
    }

    /// Reads whatever the server sends until it closes (or 10 s pass).
    fn read_all(s: &mut TcpStream) -> String {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        String::from_utf8_lossy(&raw).into_owned()
    }

    /// Waits up to 5 s for `f` to hold.
    fn eventually(f: impl Fn() -> bool) {
        let t = std::time::Instant::now();
        while !f() {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "condition not reached"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn oversized_head_gets_431_and_is_counted() {
        let (server, _) = start_limited(AdminLimits::default(), None);
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        let long = "a".repeat(64 * 1024);
        // The server may close before all of it is written.
        let _ = write!(
            s,
            "GET /status HTTP/1.1\r\nHost: t\r\nX-Long: {long}\r\n\r\n"
        );
        let answer = read_all(&mut s);
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");
        // Counted when the connection ends, which may be just after the answer.
        eventually(|| server.rejected().header_too_large == 1);
        // A normal request still works.
        assert_eq!(request(server.local_addr(), "GET", "/status", b"").0, 200);
    }

    #[test]
    fn token_is_checked_before_the_body_is_read() {
        let (server, fake) = start_limited(AdminLimits::default(), Some("s3cret"));
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        // Declares a gigabyte and sends none of it: the 401 comes from the head alone.
        write!(
            s,
            "POST /broadcast HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000\r\n\r\n"
        )
        .unwrap();
        let t = std::time::Instant::now();
        let answer = read_all(&mut s);
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(server.rejected().unauthorized, 1);
        assert!(fake.got.lock().unwrap().is_empty());
    }

    #[test]
    fn declared_oversized_body_is_refused_with_its_real_size() {
        let (server, _) = start_limited(AdminLimits::default(), None);
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        write!(
            s,
            "POST /broadcast HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n"
        )
        .unwrap();
        let answer = read_all(&mut s);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(
            answer.contains("payload of 1000000 bytes exceeds max_payload 65537"),
            "{answer}"
        );
        // Chunked, no declared length: cut at the limit.
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        write!(
            s,
            "POST /broadcast HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .unwrap();
        let chunk = vec![b'z'; 70_000];
        let _ = write!(s, "{:x}\r\n", chunk.len());
        let _ = s.write_all(&chunk);
        let _ = write!(s, "\r\n0\r\n\r\n");
        let answer = read_all(&mut s);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("more than 65537 bytes"), "{answer}");
        eventually(|| server.rejected().body_too_large == 2);
    }

    #[test]
    fn slow_heads_and_bodies_time_out() {
        let limits = AdminLimits {
            header_timeout: Duration::from_millis(300),
            body_timeout: Duration::from_millis(300),
            ..AdminLimits::default()
        };
        let (server, _) = start_limited(limits, None);
        // Slowloris: a few bytes, then nothing.
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        write!(s, "GET /sta").unwrap();
        let _ = read_all(&mut s);
        // Half-open: connected, silent.
        let mut q = TcpStream::connect(server.local_addr()).unwrap();
        let _ = read_all(&mut q);
        // A body that never comes.
        let mut b = TcpStream::connect(server.local_addr()).unwrap();
        write!(
            b,
            "POST /broadcast HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc"
        )
        .unwrap();
        let answer = read_all(&mut b);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        eventually(|| server.rejected().header_timeout >= 2);
        eventually(|| server.rejected().body_timeout == 1);
    }

    /// A server holding at most 4 connections, giving heads 30 s (nothing times out
    /// during a test).
    fn four_connections_slow_heads() -> AdminServer {
        let limits = AdminLimits {
            max_connections: 4,
            header_timeout: Duration::from_secs(30),
            ..AdminLimits::default()
        };
        start_limited(limits, None).0
    }

    #[test]
    fn idle_connections_are_evicted_for_new_ones() {
        let server = four_connections_slow_heads();
        let addr = server.local_addr();
        let idle: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
        // Every new request still gets through: it takes an idle one's place.
        for _ in 0..5 {
            assert_eq!(request(addr, "GET", "/status", b"").0, 200);
        }
        let r = server.rejected();
        assert!(r.evicted >= 16, "{r:?}");
        eventually(|| server.rejected().open_connections <= 4);
        drop(idle);
    }

    /// A client whose request is arriving is not pushed out by a flood of silent
    /// connections accepted after it: they are evicted among themselves.
    #[test]
    fn a_sending_connection_outlives_a_flood_of_silent_ones() {
        let server = four_connections_slow_heads();
        let addr = server.local_addr();
        // Half a request head, then silence while 40 silent connections arrive.
        let mut sending = TcpStream::connect(addr).unwrap();
        sending
            .write_all(b"GET /status HTTP/1.1\r\nHost: t\r\n")
            .unwrap();
        eventually(|| server.rejected().open_connections == 1);
        std::thread::sleep(Duration::from_millis(50));
        let silent: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(addr).unwrap()).collect();
        eventually(|| server.rejected().evicted >= 37);
        sending.write_all(b"Connection: close\r\n\r\n").unwrap();
        let answer = read_all(&mut sending);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        drop(silent);
    }

    #[test]
    fn a_fresh_connection_outlives_trickling_ones() {
        // Found by node_admin_abuse under load: with the cap held by slowloris
        // connections (each trickling header bytes), a client that had connected but
        // not yet written was the only never-heard-from one, and the next reconnect
        // evicted it before its request went out.
        let server = four_connections_slow_heads();
        let addr = server.local_addr();
        let mut trickling: Vec<TcpStream> =
            (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        for t in &mut trickling {
            t.write_all(b"GET /status HTTP/1.1\r\n").unwrap();
        }
        std::thread::sleep(EVICTION_GRACE + Duration::from_millis(50));
        for t in &mut trickling {
            t.write_all(b"X").unwrap();
        }
        eventually(|| server.rejected().open_connections == 3);
        let mut fresh = TcpStream::connect(addr).unwrap();
        eventually(|| server.rejected().open_connections == 4);
        // The cap is reached: one more reconnect must evict a trickling connection.
        let again = TcpStream::connect(addr).unwrap();
        eventually(|| server.rejected().evicted >= 1);
        fresh
            .write_all(b"GET /status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let answer = read_all(&mut fresh);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        drop((trickling, again));
    }

    #[test]
    fn batch_broadcast_checks_the_whole_body_then_publishes_in_order() {
        use crate::node::batch::encode_batch;
        let (server, fake) = start();
        let addr = server.local_addr();
        let body = encode_batch([&b"one"[..], b"two", b"three"]);
        let (status, _, reply) = request(addr, "POST", "/broadcast/batch", &body);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
        let v: Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(v["accepted"], 3);
        assert_eq!(v["ids"].as_array().unwrap().len(), 3);
        assert_eq!(
            *fake.got.lock().unwrap(),
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        // Malformed: refused whole, with the entry named, nothing broadcast.
        fake.got.lock().unwrap().clear();
        let mut cut = encode_batch([&b"ok"[..], b"cut short"]);
        cut.truncate(cut.len() - 3);
        let (status, _, reply) = request(addr, "POST", "/broadcast/batch", &cut);
        assert_eq!(status, 400);
        assert!(String::from_utf8_lossy(&reply).contains("entry 1"));
        assert!(fake.got.lock().unwrap().is_empty());
        // A refusal part-way: what was accepted, and where to resume.
        let big = vec![7u8; 1300];
        let body = encode_batch([&b"fits"[..], &big, b"never sent"]);
        let (status, _, reply) = request(addr, "POST", "/broadcast/batch", &body);
        assert_eq!(status, 200);
        let v: Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(v["accepted"], 1);
        assert_eq!(v["refused"]["index"], 1);
        assert_eq!(fake.got.lock().unwrap().len(), 1);
        // Refused at the first entry: the single broadcast's answer.
        let (status, _, _) = request(addr, "POST", "/broadcast/batch", &encode_batch([&big[..]]));
        assert_eq!(status, 413);
        assert_eq!(request(addr, "GET", "/broadcast/batch", b"").0, 405);
        assert_eq!(request(addr, "POST", "/broadcast/batch", b"").0, 400);
    }

    #[test]
    fn empty_broadcast_accepted_with_allow_empty() {
        let limits = AdminLimits {
            allow_empty: true,
            ..AdminLimits::default()
        };
        let (server, fake) = start_limited(limits, None);
        assert_eq!(
            request(server.local_addr(), "POST", "/broadcast", b"").0,
            200
        );
        assert_eq!(fake.got.lock().unwrap().as_slice(), &[Vec::<u8>::new()]);
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
