//! The HTTP admin plane: `/metrics`, `/status`, `/peers`, `/members`, `/loops`,
//! `POST /loops/{name}/pause|resume` and `POST /broadcast`, served by hyper (HTTP/1.1)
//! on a small current-thread tokio runtime on a std thread of its own, so that it
//! never runs on (or blocks) a shard core. It only reads snapshots and submits
//! broadcasts through [`AdminBackend`], so the node's internals stay behind that trait.
//! This file is the HTTP side (connections, limits, token, body); what each path
//! answers is in `routes.rs` and `chaos.rs`.
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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use std::{fmt, io};

use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, AUTHORIZATION, CONTENT_LENGTH};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Notify;

pub use super::context::AdminLimits;
use super::context::{bump, Counters, Ctx};
use super::reply::Reply;
use super::routes::route;
use crate::node::batch::max_batch_body;
use crate::node::snapshot::{AdminBackend, AdminRejected, MAX_BROADCAST_BODY};

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
pub(super) const EVICTION_GRACE: Duration = Duration::from_millis(250);

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
