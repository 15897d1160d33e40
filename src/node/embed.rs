//! The node as a library: [`Node::start`] runs the same executors, sockets and admin
//! plane as `plumcore node`, inside the calling program, and hands back a handle to
//! publish with and subscribe through.
//!
//! ```no_run
//! use plumcore::node::config::NodeConfig;
//! use plumcore::node::embed::Node;
//! use plumcore::node::subscribe::Event;
//!
//! let cfg = NodeConfig {
//!     bind: "127.0.0.1:7000".parse().unwrap(),
//!     admin: "127.0.0.1:7080".parse().unwrap(),
//!     ..NodeConfig::default()
//! };
//! let node = Node::start(cfg).expect("start the node");
//! let events = node.subscribe("greetings").expect("a valid filter");
//! let id = node.publish("greetings", b"hello").expect("published");
//! for e in events {
//!     if let Event::Message { id: got, payload, .. } = e {
//!         assert_eq!((got, &payload[..]), (id, &b"hello"[..]));
//!         break;
//!     }
//! }
//! node.shutdown();
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::admin::AdminServer;
use super::client_port::{ClientPort, ClientPortConfig};
use super::config::{NodeConfig, DEFAULT_CLIENT_LISTEN};
use super::prepare::{prepare, NodeError};
use super::runtime::{self, NodeBackend, RunningNode, ShutdownReport};
use super::sink::{self, DeliverySink};
use super::snapshot::{self, AdminBackend, BroadcastRefused, NodeSnapshot};
use super::subscribe::{Subscribers, Subscription};
use crate::client::subject::{Filter, SubjectError};
use crate::ids::{MessageId, NodeId};
use crate::topic::{Topic, TopicError};

/// Why [`Node::publish`] refused a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The topic is not a valid subject.
    #[error("invalid topic: {0}")]
    InvalidTopic(#[from] TopicError),
    /// The payload (with its topic) is larger than one datagram carries.
    #[error("{0}")]
    TooLarge(BroadcastRefused),
    /// The shard's command queue is full: retry later.
    #[error("shard queue is full")]
    Backpressure,
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
}

impl From<BroadcastRefused> for PublishError {
    fn from(e: BroadcastRefused) -> Self {
        match e {
            BroadcastRefused::Backpressure => PublishError::Backpressure,
            BroadcastRefused::ShuttingDown => PublishError::ShuttingDown,
            e @ (BroadcastRefused::TooLarge { .. } | BroadcastRefused::DoesNotFit { .. }) => {
                PublishError::TooLarge(e)
            }
        }
    }
}

/// How long [`Node::shutdown`] gives the executors to finish their tasks.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running node. Dropping it shuts it down, as [`Node::shutdown`] does.
pub struct Node {
    id: NodeId,
    running: Option<RunningNode>,
    backend: NodeBackend,
    admin: Option<AdminServer>,
    client_port: Option<ClientPort>,
    sink: Option<DeliverySink>,
    subscribers: Subscribers,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("admin", &self.admin_addr())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Validates `cfg`, binds the sockets and the admin plane, and starts the
    /// executors. Errors say what to fix: [`NodeError::Config`] for the config (the
    /// binary exits 2 on it), [`NodeError::Environment`] for the machine (memlock,
    /// io_uring, ports in use).
    pub fn start(cfg: NodeConfig) -> Result<Node, NodeError> {
        let p = prepare(&cfg)?;
        // Library subscriptions (and the client port's) read a log of the same
        // bounds as the deliveries file's.
        let subscribers = Subscribers::with_retention(
            super::subscribe::SUBSCRIPTION_CAPACITY,
            cfg.delivery_retention(),
            cfg.delivery_retention_bytes,
        );
        let log_gauges = Arc::new(super::retention::LogGauges::default());
        let (sink, sink_tx) = DeliverySink::start_with_retention(
            cfg.deliveries.as_deref(),
            sink::SINK_CAPACITY,
            Some(p.names),
            Some(subscribers.clone()),
            sink::Retention {
                time: cfg.delivery_retention(),
                bytes: cfg.delivery_retention_bytes,
                gauges: log_gauges.clone(),
            },
        )
        .map_err(|e| {
            // A path the operator gave that cannot be opened is an input error.
            NodeError::Config(format!(
                "--deliveries {}: cannot create: {e}",
                cfg.deliveries.as_deref().unwrap_or("-")
            ))
        })?;
        let hardening = runtime::Hardening {
            faults: cfg
                .fault_config()
                .map_err(|e| NodeError::Config(e.to_string()))?,
            rate_limit: cfg.rate_limit(),
        };
        let running = runtime::start_with(p.rcfg, cfg.membership.clone(), hardening, sink_tx)
            .map_err(|e| match e {
                runtime::RuntimeError::Config(m) => NodeError::Config(m),
                other => NodeError::Environment(other.to_string()),
            })?;
        let backend = running.backend();
        backend.set_delivery_log(log_gauges);
        // Before the admin plane: once `/status` answers, the client port listens.
        let client_port = start_client_port(
            &cfg,
            &backend,
            p.token.clone(),
            p.node_name.clone(),
            &subscribers,
        )?;
        let admin = AdminServer::start_with(
            cfg.admin,
            Arc::new(running.backend()),
            p.token.clone(),
            cfg.admin_limits(),
        )
        .map_err(|e| NodeError::Environment(format!("cannot serve admin on {}: {e}", cfg.admin)))?;
        info!(
            node_id = %p.node_id,
            node_name = p.node_name.as_deref().unwrap_or("-"),
            bind = %cfg.bind,
            admin = %admin.local_addr(),
            shards = ?running.shard_addrs(),
            "plumcore node running"
        );
        Ok(Node {
            id: p.node_id,
            running: Some(running),
            backend,
            admin: Some(admin),
            client_port,
            sink: Some(sink),
            subscribers,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Where the NATS-compatible client port listens (the port actually bound);
    /// `None` when it is off.
    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.client_port.as_ref().map(ClientPort::local_addr)
    }

    /// Where the admin plane listens (the port actually bound).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::local_addr)
    }

    /// Broadcasts `payload` on `topic` to the cluster without waiting: the id it was
    /// given, or why it was refused (an invalid topic, too large, the shard's queue
    /// full, shutting down).
    ///
    /// ```no_run
    /// # let node: plumcore::node::embed::Node = todo!();
    /// use plumcore::node::embed::PublishError;
    /// match node.publish("orders.eu.created", b"{\"id\":1}") {
    ///     Ok(id) => println!("published {id:?}"),
    ///     Err(PublishError::Backpressure) => { /* retry shortly */ }
    ///     Err(e) => eprintln!("refused: {e}"),
    /// }
    /// ```
    pub fn publish(&self, topic: &str, payload: &[u8]) -> Result<MessageId, PublishError> {
        let topic = Topic::new(topic)?;
        Ok(self.backend.broadcast(topic, payload.to_vec())?)
    }

    /// [`Node::publish`] of several payloads on one topic, in order; stops at the
    /// first refusal and returns the ids accepted before it with the error.
    ///
    /// ```no_run
    /// # let node: plumcore::node::embed::Node = todo!();
    /// let ids = node
    ///     .publish_batch("metrics.cpu", [&b"1"[..], b"2", b"3"])
    ///     .map_err(|(sent, e)| format!("{} sent, then {e}", sent.len()))?;
    /// assert_eq!(ids.len(), 3);
    /// # Ok::<(), String>(())
    /// ```
    pub fn publish_batch<'a, I>(
        &self,
        topic: &str,
        payloads: I,
    ) -> Result<Vec<MessageId>, (Vec<MessageId>, PublishError)>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let topic = Topic::new(topic).map_err(|e| (Vec::new(), e.into()))?;
        let mut ids = Vec::new();
        for p in payloads {
            match self.backend.broadcast(topic.clone(), p.to_vec()) {
                Ok(id) => ids.push(id),
                Err(e) => return Err((ids, e.into())),
            }
        }
        Ok(ids)
    }

    /// A new stream of the messages this node delivers from now on whose topic
    /// matches `filter` (a topic, or a NATS wildcard: `orders.*`, `orders.>`, `>` for
    /// all), its own broadcasts included, plus graft give-ups and known gaps; a
    /// subscriber that falls behind by more than
    /// [`super::subscribe::SUBSCRIPTION_CAPACITY`] events is told how many it missed.
    ///
    /// ```no_run
    /// # let node: plumcore::node::embed::Node = todo!();
    /// let orders = node.subscribe("orders.>").expect("a valid filter");
    /// while let Some(event) = orders.recv() {
    ///     println!("{event:?}");
    /// }
    /// ```
    pub fn subscribe(&self, filter: &str) -> Result<Subscription, SubjectError> {
        self.subscribe_with_capacity(filter, super::subscribe::SUBSCRIPTION_CAPACITY)
    }

    /// Like [`Node::subscribe`], holding at most `capacity` unread events before it
    /// counts the rest as missed.
    pub fn subscribe_with_capacity(
        &self,
        filter: &str,
        capacity: usize,
    ) -> Result<Subscription, SubjectError> {
        let f = Filter::parse(filter)?;
        Ok(self.subscribers.subscribe_filtered(Some(f), capacity))
    }

    /// The node's membership: its HyParView active and passive views, as
    /// `GET /members` shows them.
    ///
    /// ```no_run
    /// # let node: plumcore::node::embed::Node = todo!();
    /// for m in &node.members().active {
    ///     println!("neighbour {m:?}");
    /// }
    /// ```
    pub fn members(&self) -> snapshot::MembershipSnapshot {
        self.backend.snapshot().membership
    }

    /// The node's latest state, as `/status` shows it (shards, peers, loops,
    /// counters); the same as [`Node::snapshot`].
    pub fn status(&self) -> NodeSnapshot {
        self.backend.snapshot()
    }

    /// The node's latest state, as `/status` shows it.
    pub fn snapshot(&self) -> NodeSnapshot {
        self.backend.snapshot()
    }

    /// Set when a critical task failed for good: the node should be shut down.
    pub fn fatal(&self) -> Option<String> {
        self.running.as_ref().and_then(RunningNode::fatal)
    }

    /// Leaves the cluster, stops the executors (waiting up to 5 s for their tasks),
    /// the admin plane and the deliveries thread; subscriptions end once drained.
    pub fn shutdown(mut self) -> ShutdownReport {
        self.stop()
    }

    fn stop(&mut self) -> ShutdownReport {
        let report = match self.running.take() {
            Some(r) => r.shutdown(SHUTDOWN_GRACE),
            None => ShutdownReport::default(),
        };
        if let Some(c) = self.client_port.take() {
            c.stop();
        }
        if let Some(a) = self.admin.take() {
            a.stop();
        }
        if let Some(s) = self.sink.take() {
            s.stop();
        }
        self.subscribers.close();
        report
    }
}

/// Starts the client port unless `client_listen` is `off`. The default address may
/// be taken (another node, a nats-server on this host): the node then runs without
/// the port and says so; an address given explicitly must bind.
fn start_client_port(
    cfg: &NodeConfig,
    backend: &NodeBackend,
    token: Option<String>,
    node_name: Option<String>,
    subscribers: &Subscribers,
) -> Result<Option<ClientPort>, NodeError> {
    let Some(listen) = cfg
        .client_listen_addr()
        .map_err(|e| NodeError::Config(e.to_string()))?
    else {
        return Ok(None);
    };
    let port_cfg = ClientPortConfig {
        listen,
        max_clients: cfg.max_clients,
        max_subscriptions: cfg.max_subscriptions,
        max_pending_bytes: cfg.max_pending_bytes,
        token,
        max_payload: cfg.protocol.max_payload,
        node_id: backend.node_id(),
        node_name,
    };
    let events = subscribers.subscribe();
    match ClientPort::start(
        port_cfg,
        Arc::new(backend.clone()),
        events,
        backend.client_port_stats(),
    ) {
        Ok(port) => Ok(Some(port)),
        Err(e)
            if e.kind() == std::io::ErrorKind::AddrInUse
                && cfg.client_listen.trim() == DEFAULT_CLIENT_LISTEN =>
        {
            warn!(
                addr = %listen,
                "client port off: its default address is in use (set client_listen / --client-listen to another address, or `off`)"
            );
            Ok(None)
        }
        Err(e) => Err(NodeError::Environment(format!(
            "config key `client_listen`: cannot listen on {listen}: {e}"
        ))),
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.running.is_some() {
            self.stop();
        }
    }
}
