//! What every admin request handler shares: the node behind [`AdminBackend`], the
//! token, the resource bounds and the refusal counters.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::node::snapshot::{AdminBackend, AdminRejected};

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
pub(super) struct Counters {
    pub(super) header_too_large: AtomicU64,
    pub(super) header_timeout: AtomicU64,
    pub(super) body_too_large: AtomicU64,
    pub(super) body_timeout: AtomicU64,
    pub(super) connections: AtomicU64,
    pub(super) evicted: AtomicU64,
    pub(super) unauthorized: AtomicU64,
    pub(super) bad_request: AtomicU64,
    pub(super) empty_payload: AtomicU64,
    pub(super) open: AtomicUsize,
}

impl Counters {
    pub(super) fn load(&self) -> AdminRejected {
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

pub(super) fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// What every request handler shares.
pub(super) struct Ctx {
    pub(super) backend: Arc<dyn AdminBackend>,
    pub(super) token: Option<String>,
    pub(super) limits: AdminLimits,
    pub(super) counters: Counters,
    /// Bounds the calls into the node running at once.
    pub(super) inflight: tokio::sync::Semaphore,
}
