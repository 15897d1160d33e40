//! What one shard owns, and the synchronous half of its executor: a received
//! datagram through the flood limit and the auth layer into the [`ShardHost`], a
//! command from the control core into the host, and the host's output back out as
//! deliveries and sealed datagrams. Nothing here awaits or touches a socket:
//! `exec.rs` owns the socket and the loops, and calls these in its turns.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::Sender;
use rustc_hash::FxHashSet;
use tracing::warn;

use super::deliver::Deliveries;
use super::overload::Overload;
use crate::node::net::socket::FaultSwitch;
use crate::node::plan::{unix_ms, ShardCmd, ShardReport, Shared};
use crate::node::ratelimit::{PeerRateLimiter, RateLimitConfig};
use crate::node::sink::SinkSender;
use crate::node::snapshot::IoStats;
use crate::protocol::host::{HostTimer, PeerLayout, ShardHost};
use crate::protocol::{ProtocolConfig, Time};
use crate::tasks::{LoopHandle, Notify, StopSignal, TaskTracker};
use crate::wire::auth::{Sealer, Verifier};
use crate::wire::Header;

/// Decode-error log lines per shard are limited to one per this period.
const DECODE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// What a shard executor is started with.
pub(crate) struct ShardCtx {
    pub index: usize,
    pub shards: usize,
    pub core: Option<usize>,
    pub addr: SocketAddr,
    pub header: Header,
    pub mtu: usize,
    pub protocol: ProtocolConfig,
    pub started: Instant,
    pub seed: u64,
    pub sink: SinkSender,
    pub reports: Sender<ShardReport>,
    pub shared: std::sync::Arc<Shared>,
    /// This shard socket's own sealer and verifier when the cluster is keyed (never
    /// shared: the sealer's seq stream and the replay windows are per socket).
    pub auth: Option<(Sealer, Verifier)>,
    /// The fault layer's settings (test-only, `--chaos`).
    pub faults: Option<std::sync::Arc<FaultSwitch>>,
    /// Per-source flood limit on this shard's socket.
    pub rate_limit: RateLimitConfig,
    /// Whether UDP GSO (`UDP_SEGMENT`) sends are tried.
    pub gso: bool,
}

/// The time of one batch, read once: monotonic now, and the UNIX time for the auth
/// layer read at most once, when first needed.
pub(crate) struct Clock {
    pub(super) now: Time,
    keyed: bool,
    unix: Option<u64>,
}

impl Clock {
    fn unix_ms(&mut self) -> u64 {
        if !self.keyed {
            return 0;
        }
        *self.unix.get_or_insert_with(unix_ms)
    }
}

/// Everything one shard owns. Lives in an `Rc<RefCell<_>>` shared by the shard's
/// receive task and tick task, on one thread.
pub(super) struct ShardState {
    pub(super) ctx: ShardCtx,
    /// The shard with its peers, frame filters, routing, coalescing and timers.
    pub(super) host: ShardHost,
    /// Deliveries to the application, counted by hop and topic.
    pub(super) deliveries: Deliveries,
    pub(super) io: IoStats,
    pub(super) stopping: bool,
    pub(super) last_decode_log: Option<Instant>,
    /// Loop names asked to panic once (test-only, `--chaos`).
    pub(super) chaos: FxHashSet<String>,
    /// This shard's loops, for its snapshot.
    pub(super) loops: Vec<LoopHandle>,
    pub(super) tracker: Option<TaskTracker>,
    /// Token buckets per source address (flood limit).
    pub(super) limiter: PeerRateLimiter,
    /// Receive backlog / command queue levels and what was shed.
    pub(super) overload: Overload,
    /// Command queue length at the last tick.
    pub(super) cmd_queue: usize,
    /// Until when the tick loop sleeps (`None` while it runs); a timer armed earlier
    /// pokes it through `wake`.
    pub(super) tick_due: Option<Time>,
    pub(super) wake: Notify,
    /// Set by the Shutdown command.
    pub(super) stopped: StopSignal,
}

impl ShardState {
    pub(super) fn now(&self) -> Time {
        self.ctx.started.elapsed()
    }

    pub(super) fn clock(&self) -> Clock {
        Clock {
            now: self.now(),
            keyed: self.ctx.auth.is_some(),
            unix: None,
        }
    }

    /// Turns the host's output into deliveries and sealed datagrams to send, and
    /// pokes the sleeping tick loop when a timer earlier than its wake-up was armed.
    pub(super) fn pump(&mut self, out: &mut Vec<(SocketAddr, Bytes)>, clock: &mut Clock) {
        self.host.flush();
        if let (Some(due), Some(next)) = (self.tick_due, self.host.next_timeout()) {
            if next < due {
                self.wake.notify_all();
            }
        }
        while let Some(ev) = self.host.poll_event() {
            self.deliveries
                .on_event(ev, &self.ctx.sink, &mut self.io.deliveries_lagged);
        }
        // One clock read for the whole batch.
        let now_ms = if self.host.has_datagrams() {
            clock.unix_ms()
        } else {
            0
        };
        while let Some((addr, d)) = self.host.poll_datagram() {
            match &mut self.ctx.auth {
                Some((sealer, _)) => out.push((addr, sealer.seal_bytes(&d, now_ms))),
                None => out.push((addr, d)),
            }
        }
    }

    /// One received datagram; its payloads stay slices of `buf` (no copy).
    pub(super) fn on_datagram(&mut self, buf: Bytes, src: SocketAddr, clock: &mut Clock) {
        self.io.datagrams_received += 1;
        self.io.bytes_received += buf.len() as u64;
        // Flood limit per source, before any work on the datagram.
        if self.limiter.enabled() && !self.limiter.allow(src, clock.now) {
            return;
        }
        // Authenticate before decoding anything; only the MAC'd part is decoded.
        let bytes = match &mut self.ctx.auth {
            Some((_, verifier)) => {
                let ms = clock.unix_ms();
                match verifier.open_bytes(buf, ms) {
                    Ok(b) => b,
                    Err(e) => {
                        self.io.count_auth_failure(e);
                        return;
                    }
                }
            }
            None => buf,
        };
        let shedding = self.overload.shedding();
        match self.host.receive_bytes(clock.now, src, &bytes, shedding) {
            Ok(skipped) => self.io.unknown_frames += skipped as u64,
            Err(e) => {
                self.io.count_decode_error(e.reason());
                if self
                    .last_decode_log
                    .is_none_or(|t| t.elapsed() >= DECODE_LOG_EVERY)
                {
                    self.last_decode_log = Some(Instant::now());
                    warn!(
                        shard = self.ctx.index,
                        reason = e.reason(),
                        total = self.io.decode_errors(),
                        "dropping undecodable datagram (logged at most once a second)"
                    );
                }
            }
        }
    }

    pub(super) fn on_command(&mut self, cmd: ShardCmd, now: Time) {
        match cmd {
            ShardCmd::NeighborUp {
                peer,
                control,
                shards,
            } => {
                self.host
                    .neighbor_up(now, peer, PeerLayout { control, shards });
            }
            ShardCmd::NeighborDown { peer } => {
                self.host.neighbor_down(now, peer);
            }
            ShardCmd::Broadcast { id, topic, payload } => {
                match self.host.broadcast(now, id, topic.clone(), payload.clone()) {
                    // The origin's own application sees its broadcast too (hops 0).
                    Ok(()) => self.deliveries.own(
                        id,
                        topic,
                        payload,
                        &self.ctx.sink,
                        &mut self.io.deliveries_lagged,
                    ),
                    Err(e) => warn!(error = %e, "broadcast refused by shard"),
                }
            }
            // The control core schedules these (its loops can be paused over the
            // admin plane); they run as the host's periodic timers do.
            ShardCmd::Maintenance => self.host.fire(now, HostTimer::Maintenance),
            ShardCmd::Cleanup => self.host.fire(now, HostTimer::Cleanup),
            ShardCmd::ChaosPanic(name) => {
                self.chaos.insert(name);
            }
            ShardCmd::Shutdown => {
                self.host.flush_ihave_queues();
                self.stopping = true;
                self.stopped.set();
            }
        }
    }
}
