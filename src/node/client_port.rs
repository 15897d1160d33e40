//! The NATS-compatible client port: any NATS client (async-nats, the `nats` CLI,
//! `plumcore pub`/`sub`) publishes into the cluster and subscribes to what this node
//! delivers, without a broker.
//!
//! One thread runs a tokio runtime with a task per connection (read, parse, act) and a
//! writer task per connection; a second thread takes every delivery from a library
//! subscription ([`super::subscribe`]) and routes it through the node's subscription
//! table ([`crate::client::sublist`]) into the connections' bounded outboxes. Nothing
//! here ever waits on a client: a connection whose outbox is full misses messages,
//! counted, and is told how many with `-ERR 'Slow Consumer'` and a `$PLUMCORE.lagged`
//! message once it reads again. A PUB that meets a full shard queue is retried, and
//! the connection is not read meanwhile, so TCP pushes back on the publisher.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::snapshot::ClientPortSnapshot;
use super::snapshot::{AdminBackend, BroadcastRefused};
use super::subscribe::{Event, Subscription};
use crate::client::proto::{self, ClientOp, Limits, ProtoError, ServerInfo};
use crate::client::subject::Filter;
use crate::client::sublist::{ClientId, SubError, SubTable};
use crate::topic::Topic;

/// Subject of the lag notices a slow connection receives (payload `{"missed":N}`).
pub const LAGGED_SUBJECT: &str = "$PLUMCORE.lagged";
/// Subject of known gaps (payload `{"origin":"<hex>","missed":N}`).
pub const GAP_SUBJECT: &str = "$PLUMCORE.gap";
/// How long a PUB waits out a full shard queue before the connection is closed.
const PUB_RETRY_FOR: Duration = Duration::from_secs(10);
/// Time a client has to send CONNECT when a token is required.
const AUTH_TIMEOUT: Duration = Duration::from_secs(2);

/// The port's settings (from [`super::config::NodeConfig`]).
#[derive(Debug, Clone)]
pub struct ClientPortConfig {
    /// The TCP address to listen on (`client_listen`); also the host and port of INFO.
    pub listen: SocketAddr,
    /// `max_clients`: most connections at once; one more is answered `-ERR` and closed.
    pub max_clients: usize,
    /// `max_subscriptions`: most subscriptions one connection may hold.
    pub max_subscriptions: usize,
    /// `max_pending_bytes`: message bytes a connection's outbox may hold before
    /// further messages for it are missed (and counted).
    pub max_pending_bytes: usize,
    /// The admin token: when set, CONNECT must carry it as `auth_token`.
    pub token: Option<String>,
    /// `protocol.max_payload`: the largest PUB payload, in bytes, announced in INFO.
    pub max_payload: usize,
    /// This node's id: INFO's `server_id`, and its `server_name` when unnamed.
    pub node_id: crate::ids::NodeId,
    /// This node's name (`node_name`), INFO's `server_name` when set.
    pub node_name: Option<String>,
}

/// Why connections were closed with `-ERR`, by reason.
const ERROR_REASONS: [&str; 13] = [
    "control_line",
    "unknown_op",
    "unsupported",
    "bad_args",
    "invalid_subject",
    "payload_too_large",
    "bad_payload",
    "bad_connect",
    "auth",
    "max_clients",
    "max_subscriptions",
    "duplicate_sid",
    "backpressure",
];

/// Counters of the port, read by `/status` and `/metrics`.
#[derive(Debug, Default)]
pub struct ClientPortStats {
    connections: AtomicU64,
    accepted: AtomicU64,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    lagged: AtomicU64,
    slow_consumers: AtomicU64,
    pub_retries: AtomicU64,
    subscriptions: AtomicU64,
    errors: [AtomicU64; ERROR_REASONS.len()],
    listening: Mutex<Option<SocketAddr>>,
}

impl ClientPortStats {
    /// A consistent-enough copy for `/status` and `/metrics`.
    pub fn load(&self) -> ClientPortSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClientPortSnapshot {
            listen: *self.listening.lock().unwrap_or_else(|e| e.into_inner()),
            connections: g(&self.connections),
            accepted: g(&self.accepted),
            messages_in: g(&self.messages_in),
            messages_out: g(&self.messages_out),
            bytes_in: g(&self.bytes_in),
            bytes_out: g(&self.bytes_out),
            lagged: g(&self.lagged),
            slow_consumers: g(&self.slow_consumers),
            pub_retries: g(&self.pub_retries),
            subscriptions: g(&self.subscriptions),
            errors: ERROR_REASONS
                .iter()
                .zip(&self.errors)
                .map(|(r, n)| (r.to_string(), g(n)))
                .collect(),
        }
    }

    fn error(&self, reason: &str) {
        if let Some(i) = ERROR_REASONS.iter().position(|r| *r == reason) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What one connection has waiting to be written.
#[derive(Debug, Default)]
struct OutState {
    bytes: BytesMut,
    /// Messages refused since the connection was last told.
    missed: u64,
    closed: bool,
}

/// One connection's outbox: the dispatcher and the reader append, the writer task
/// drains. Bounded by `max_pending_bytes` for messages (protocol replies always fit).
#[derive(Debug)]
struct Outbox {
    state: Mutex<OutState>,
    ready: Notify,
    max_pending: usize,
}

impl Outbox {
    fn new(max_pending: usize) -> Outbox {
        Outbox {
            state: Mutex::new(OutState::default()),
            ready: Notify::new(),
            max_pending,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a protocol reply (INFO, PONG, +OK, -ERR): never refused.
    fn reply(&self, f: impl FnOnce(&mut BytesMut)) {
        {
            let mut st = self.lock();
            if st.closed {
                return;
            }
            f(&mut st.bytes);
        }
        self.ready.notify_one();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }
}

/// The state the connections and the dispatcher share.
struct Hub {
    subs: Mutex<SubTable>,
    clients: Mutex<HashMap<ClientId, Arc<Outbox>>>,
    stats: Arc<ClientPortStats>,
}

impl Hub {
    fn subs(&self) -> std::sync::MutexGuard<'_, SubTable> {
        self.subs.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<ClientId, Arc<Outbox>>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes the subscription count (`plumtree_client_subscriptions`).
    fn count_subs(&self, subs: &SubTable) {
        self.stats
            .subscriptions
            .store(subs.len() as u64, Ordering::Relaxed);
    }

    /// Routes one delivered message to every matching subscription (one member per
    /// queue group).
    fn dispatch(&self, subject: &str, payload: &[u8], routed: &mut Vec<(ClientId, Arc<str>)>) {
        routed.clear();
        {
            let mut subs = self.subs();
            subs.route(subject, routed);
            self.stats
                .subscriptions
                .store(subs.len() as u64, Ordering::Relaxed);
        }
        if routed.is_empty() {
            return;
        }
        let clients = self.clients();
        for (client, sid) in routed.iter() {
            let Some(ob) = clients.get(client) else {
                continue;
            };
            self.deliver(*client, ob, subject, sid, payload);
        }
    }

    /// Writes one MSG into `ob`, or counts it missed when the outbox is full. A
    /// connection that missed messages is told before its next message that fits.
    fn deliver(&self, client: ClientId, ob: &Outbox, subject: &str, sid: &str, payload: &[u8]) {
        let need = subject.len() + sid.len() + payload.len() + 32;
        let mut st = ob.lock();
        if st.closed {
            return;
        }
        if st.bytes.len() + need > ob.max_pending {
            st.missed += 1;
            self.stats.lagged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if st.missed > 0 && st.bytes.len() < ob.max_pending / 2 {
            let missed = std::mem::take(&mut st.missed);
            self.tell_lagged(client, &mut st.bytes, missed);
        }
        proto::encode_msg(subject, sid, None, payload, &mut st.bytes);
        drop(st);
        self.stats.messages_out.fetch_add(1, Ordering::Relaxed);
        ob.ready.notify_one();
    }

    /// `-ERR 'Slow Consumer'`, then `{"missed":N}` on each of the client's
    /// subscriptions that match [`LAGGED_SUBJECT`].
    fn tell_lagged(&self, client: ClientId, out: &mut BytesMut, missed: u64) {
        self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
        proto::encode_err("Slow Consumer", out);
        let body = format!("{{\"missed\":{missed}}}");
        for sid in self.subs().client_matches(client, LAGGED_SUBJECT) {
            proto::encode_msg(LAGGED_SUBJECT, &sid, None, body.as_bytes(), out);
        }
    }

    /// The node's own delivery queue overflowed: every connection missed `n`.
    fn all_lagged(&self, n: u64) {
        // Already counted as the port's subscription lagging (subscriber_lagged).
        for ob in self.clients().values() {
            ob.lock().missed += n;
        }
    }
}

/// A running client port; [`ClientPort::stop`] (or dropping it) closes every
/// connection and joins both threads.
pub struct ClientPort {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    wake: Arc<Notify>,
    server: Option<JoinHandle<()>>,
    dispatcher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ClientPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientPort")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ClientPort {
    /// Binds `cfg.listen` and starts serving; `events` is the library subscription
    /// the port delivers from.
    pub fn start(
        cfg: ClientPortConfig,
        backend: Arc<dyn AdminBackend>,
        events: Subscription,
        stats: Arc<ClientPortStats>,
    ) -> io::Result<ClientPort> {
        let std_listener = std::net::TcpListener::bind(cfg.listen)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        *stats.listening.lock().unwrap_or_else(|e| e.into_inner()) = Some(addr);
        let hub = Arc::new(Hub {
            subs: Mutex::new(SubTable::new(cfg.max_subscriptions)),
            clients: Mutex::new(HashMap::new()),
            stats,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Notify::new());
        let dispatcher = {
            let (hub, stop) = (hub.clone(), stop.clone());
            std::thread::Builder::new()
                .name("client-dispatch".into())
                .spawn(move || dispatch_loop(&hub, &events, &stop))?
        };
        let server = {
            let (stop, wake) = (stop.clone(), wake.clone());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            std::thread::Builder::new()
                .name("client-port".into())
                .spawn(move || {
                    rt.block_on(async move {
                        let listener = match tokio::net::TcpListener::from_std(std_listener) {
                            Ok(l) => l,
                            Err(e) => {
                                warn!(error = %e, "client port: cannot register the listener");
                                return;
                            }
                        };
                        serve(listener, hub, cfg, backend, stop, wake).await;
                    })
                })?
        };
        info!(addr = %addr, "client port (NATS protocol) listening");
        Ok(ClientPort {
            addr,
            stop,
            wake,
            server: Some(server),
            dispatcher: Some(dispatcher),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection and joins the threads.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.notify_waiters();
        self.wake.notify_one();
        if let Some(t) = self.server.take() {
            let _ = t.join();
        }
        if let Some(t) = self.dispatcher.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ClientPort {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Takes every event off the node's subscription and routes it.
fn dispatch_loop(hub: &Hub, events: &Subscription, stop: &AtomicBool) {
    let mut routed = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let Some(e) = events.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        match e {
            Event::Message { topic, payload, .. } => {
                hub.dispatch(topic.as_str(), &payload, &mut routed);
            }
            Event::Lagged { missed } => hub.all_lagged(missed),
            Event::Gap { origin, missed } => {
                let body = format!("{{\"origin\":\"{origin}\",\"missed\":{missed}}}");
                hub.dispatch(GAP_SUBJECT, body.as_bytes(), &mut routed);
            }
            Event::GraftFailed { .. } => {}
        }
    }
}

/// The accept loop: a task per connection, at most `max_clients` of them.
async fn serve(
    listener: tokio::net::TcpListener,
    hub: Arc<Hub>,
    cfg: ClientPortConfig,
    backend: Arc<dyn AdminBackend>,
    stop: Arc<AtomicBool>,
    wake: Arc<Notify>,
) {
    let cfg = Arc::new(cfg);
    let mut next_id: ClientId = 1;
    while !stop.load(Ordering::Relaxed) {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = wake.notified() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                debug!(error = %e, "client port: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let id = next_id;
        next_id += 1;
        hub.stats.accepted.fetch_add(1, Ordering::Relaxed);
        let open = hub.stats.connections.load(Ordering::Relaxed) as usize;
        if open >= cfg.max_clients {
            hub.stats.error("max_clients");
            tokio::spawn(refuse(stream, "maximum connections exceeded"));
            continue;
        }
        hub.stats.connections.fetch_add(1, Ordering::Relaxed);
        let (hub, cfg, backend, stop, wake) = (
            hub.clone(),
            cfg.clone(),
            backend.clone(),
            stop.clone(),
            wake.clone(),
        );
        tokio::spawn(async move {
            connection(stream, peer, id, &hub, &cfg, backend.as_ref(), &stop, &wake).await;
            hub.stats.connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
    // Stopping: close every outbox so the writers finish, then let them flush.
    for ob in hub.clients().values() {
        ob.close();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Answers a connection over the limit and closes it.
async fn refuse(mut stream: TcpStream, text: &str) {
    let mut out = BytesMut::new();
    proto::encode_err(text, &mut out);
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&out)).await;
}

/// Serves one connection until it closes, errs, or the port stops.
#[allow(clippy::too_many_arguments)]
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    id: ClientId,
    hub_arc: &Arc<Hub>,
    cfg: &ClientPortConfig,
    backend: &dyn AdminBackend,
    stop: &AtomicBool,
    wake: &Notify,
) {
    let hub: &Hub = hub_arc;
    let (mut rd, wr) = stream.into_split();
    let ob = Arc::new(Outbox::new(cfg.max_pending_bytes));
    hub.clients().insert(id, ob.clone());
    let writer = tokio::spawn(write_loop(wr, ob.clone(), hub_arc.clone(), id));
    let info = ServerInfo {
        server_id: cfg.node_id.to_string(),
        server_name: cfg
            .node_name
            .clone()
            .unwrap_or_else(|| cfg.node_id.to_string()),
        host: cfg.listen.ip().to_string(),
        port: cfg.listen.port(),
        max_payload: cfg.max_payload,
        auth_required: cfg.token.is_some(),
        client_id: id,
        client_ip: Some(peer.ip().to_string()),
        ..ServerInfo::default()
    };
    ob.reply(|b| proto::encode_info(&info, b));
    let limits = Limits {
        max_control_line: 4096,
        max_payload: cfg.max_payload,
    };
    let mut conn = Conn {
        id,
        hub,
        ob: &ob,
        backend,
        verbose: false,
        authed: cfg.token.is_none(),
        token: cfg.token.as_deref(),
    };
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let deadline = tokio::time::Instant::now() + AUTH_TIMEOUT;
    'read: while !stop.load(Ordering::Relaxed) {
        let read = async {
            if conn.authed {
                rd.read_buf(&mut buf).await
            } else {
                match tokio::time::timeout_at(deadline, rd.read_buf(&mut buf)).await {
                    Ok(r) => r,
                    Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no CONNECT")),
                }
            }
        };
        let n = tokio::select! {
            r = read => r,
            _ = wake.notified() => break 'read,
        };
        match n {
            Ok(0) => break,
            Ok(n) => {
                hub.stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                hub.stats.error("auth");
                ob.reply(|b| proto::encode_err("Authorization Violation", b));
                break;
            }
            Err(_) => break,
        }
        loop {
            match proto::parse(&buf, &limits) {
                Ok(None) => break,
                Ok(Some((op, used))) => {
                    buf.advance(used);
                    if let Err(reason) = conn.handle(op).await {
                        hub.stats.error(reason.0);
                        ob.reply(|b| proto::encode_err(&reason.1, b));
                        break 'read;
                    }
                }
                Err(e) => {
                    // Every malformed op closes the connection (the rule;
                    // nats-server keeps one with an invalid subject).
                    conn.fail(&e);
                    break 'read;
                }
            }
        }
    }
    {
        let mut subs = hub.subs();
        subs.remove_client(id);
        hub.count_subs(&subs);
    }
    hub.clients().remove(&id);
    ob.close();
    let _ = writer.await;
}

/// One connection's protocol state.
struct Conn<'a> {
    id: ClientId,
    hub: &'a Hub,
    ob: &'a Outbox,
    backend: &'a dyn AdminBackend,
    verbose: bool,
    authed: bool,
    token: Option<&'a str>,
}

/// A refusal that closes the connection: its metric label and its `-ERR` text.
struct Refusal(&'static str, String);

impl Conn<'_> {
    fn fail(&self, e: &ProtoError) {
        self.hub.stats.error(e.reason());
        self.ob.reply(|b| proto::encode_err(&e.nats_text(), b));
    }

    fn ok(&self) {
        if self.verbose {
            self.ob.reply(proto::encode_ok);
        }
    }

    async fn handle(&mut self, op: ClientOp) -> Result<(), Refusal> {
        if !self.authed && !matches!(op, ClientOp::Connect(_)) {
            return Err(Refusal("auth", "Authorization Violation".into()));
        }
        match op {
            ClientOp::Connect(o) => {
                if let Some(t) = self.token {
                    let given = o.auth_token.as_deref().unwrap_or("");
                    if !constant_time_eq::constant_time_eq(given.as_bytes(), t.as_bytes()) {
                        return Err(Refusal("auth", "Authorization Violation".into()));
                    }
                }
                self.authed = true;
                self.verbose = o.verbose;
                self.ok();
            }
            ClientOp::Ping => self.ob.reply(proto::encode_pong),
            ClientOp::Pong => {}
            ClientOp::Pub {
                subject, payload, ..
            } => {
                // The parser checked the subject; Topic re-checks the same rules.
                let topic = Topic::new(&subject)
                    .map_err(|_| Refusal("invalid_subject", "Invalid Publish Subject".into()))?;
                self.publish(topic, &payload).await?;
                self.hub.stats.messages_in.fetch_add(1, Ordering::Relaxed);
                self.ok();
            }
            ClientOp::Sub {
                subject,
                queue,
                sid,
            } => {
                let filter = Filter::parse(&subject)
                    .map_err(|_| Refusal("invalid_subject", "Invalid Subject".into()))?;
                let r = {
                    let mut subs = self.hub.subs();
                    let r = subs.insert(self.id, &sid, filter, queue.as_deref());
                    self.hub.count_subs(&subs);
                    r
                };
                match r {
                    Ok(()) => self.ok(),
                    Err(SubError::TooMany { .. }) => {
                        return Err(Refusal(
                            "max_subscriptions",
                            "Maximum Subscriptions Exceeded".into(),
                        ))
                    }
                    Err(SubError::DuplicateSid(_)) => {
                        return Err(Refusal("duplicate_sid", "Duplicate Subscription Id".into()))
                    }
                }
            }
            ClientOp::Unsub { sid, max } => {
                let mut subs = self.hub.subs();
                match max {
                    Some(m) => {
                        subs.set_max(self.id, &sid, m);
                    }
                    None => {
                        subs.remove(self.id, &sid);
                    }
                }
                self.hub.count_subs(&subs);
                drop(subs);
                self.ok();
            }
        }
        Ok(())
    }

    /// Broadcasts one PUB, waiting out a full shard queue (the connection is not
    /// read meanwhile, so the publisher's TCP window closes).
    async fn publish(&self, topic: Topic, payload: &[u8]) -> Result<(), Refusal> {
        let started = tokio::time::Instant::now();
        loop {
            match self.backend.broadcast(topic.clone(), payload.to_vec()) {
                Ok(_) => return Ok(()),
                Err(BroadcastRefused::Backpressure) => {
                    if started.elapsed() > PUB_RETRY_FOR {
                        return Err(Refusal("backpressure", "Node Overloaded".into()));
                    }
                    self.hub.stats.pub_retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(BroadcastRefused::ShuttingDown) => {
                    return Err(Refusal("backpressure", "Server Shutting Down".into()))
                }
                Err(BroadcastRefused::TooLarge { .. } | BroadcastRefused::DoesNotFit { .. }) => {
                    return Err(Refusal(
                        "payload_too_large",
                        "Maximum Payload Violation".into(),
                    ))
                }
            }
        }
    }
}

/// Drains the outbox to the socket until it is closed and empty. A connection that
/// missed messages while it was not reading is told as soon as its outbox is empty,
/// so the count arrives even if nothing else is published.
async fn write_loop(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    ob: Arc<Outbox>,
    hub: Arc<Hub>,
    client: ClientId,
) {
    let stats = hub.stats.clone();
    loop {
        let (chunk, closed) = {
            let mut st = ob.lock();
            if st.bytes.is_empty() && st.missed > 0 && !st.closed {
                let missed = std::mem::take(&mut st.missed);
                hub.tell_lagged(client, &mut st.bytes, missed);
            }
            (st.bytes.split().freeze(), st.closed)
        };
        if !chunk.is_empty() {
            if wr.write_all(&chunk).await.is_err() {
                ob.close();
                return;
            }
            stats
                .bytes_out
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            continue;
        }
        if closed {
            let _ = wr.shutdown().await;
            return;
        }
        ob.ready.notified().await;
    }
}
