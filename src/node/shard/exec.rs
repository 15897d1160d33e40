//! One shard's executor: its UDP socket, its `protocol::Shard`, its timers. Two tasks
//! share the state on one thread: the receive path (a permanent child of the shard's
//! supervisor) and the tick loop (commands from the control core, due timers, outgoing
//! datagrams, snapshots), run as a supervised [`Loop`].
//!
//! Nothing polls. The receive path sleeps until the socket is readable, then drains
//! it in `recvmmsg` batches and answers each batch with one `sendmmsg`. The tick loop
//! sleeps until the earliest of: a command (the control core or the admin plane rings
//! the shard's doorbell after queueing it), the earliest protocol timer (IHave flush,
//! graft), the next snapshot, or a timer armed earlier by the receive path (which
//! pokes it). Every wake-up is counted in `plumtree_shard_wakeups_total`.
//!
//! This file is only the asynchronous half: sockets, loops, supervision. What a turn
//! does with a datagram or a command is `state.rs` (into the host and back out),
//! what the application sees is `deliver.rs`, the published counters `report.rs`.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use glommio::net::UdpSocket;
use rustc_hash::FxHashSet;
use socket2::Socket;
use tracing::warn;

use super::deliver::Deliveries;
use super::overload::Overload;
use super::state::{ShardCtx, ShardState};
use crate::ids::owned_mask;
use crate::node::net::socket::{NodeSocket, Turn};
use crate::node::net::udp::{slot_size, RX_BATCH};
use crate::node::plan::{build_mtu, ShardCmd, ShardReport, SHARD_QUEUE};
use crate::node::ratelimit::PeerRateLimiter;
use crate::node::snapshot::IoStats;
use crate::node::supervise::{executor_supervisor, idle_until, loop_backoff};
use crate::node::wake::QueueRx;
use crate::protocol::host::{HostConfig, HostTimer, ShardHost, PERIOD_JITTER};
use crate::protocol::Shard;
use crate::tasks::{Loop, LoopConfig, LoopError, LoopManager, Notify, StopSignal, TaskTracker};

/// Receive buffers a shard's pool may own (each `udp::slot_size(mtu)` bytes, 2 KiB
/// at the default MTU: 2 MiB at most, allocated only as traffic needs them).
pub(crate) const SHARD_RX_BUFFERS: usize = 1024;
/// How often shards publish their counters to the control core.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(250);

/// Sends what a pump produced, in as few system calls as possible.
async fn send_all(sock: &NodeSocket, st: &RefCell<ShardState>, out: &mut Vec<(SocketAddr, Bytes)>) {
    if out.is_empty() {
        return;
    }
    let r = sock.send_batch(out).await;
    let mut s = st.borrow_mut();
    s.io.datagrams_sent += r.datagrams;
    s.io.bytes_sent += r.bytes;
    s.io.send_errors += r.errors;
}

/// The tick: commands from the control core, due timers, continued cleanup, outgoing
/// datagrams and periodic snapshots. It runs when there is something to do (see
/// [`TickLoop::idle`]), never on a fixed period.
struct TickLoop {
    name: String,
    state: Rc<RefCell<ShardState>>,
    sock: Rc<NodeSocket>,
    rx: QueueRx<ShardCmd>,
    out: Vec<(SocketAddr, Bytes)>,
    last_snapshot: Option<Instant>,
}

impl Loop for TickLoop {
    fn name(&self) -> &str {
        &self.name
    }
    /// The longest the loop sleeps with nothing to do (the snapshot period).
    fn interval(&self) -> Duration {
        SNAPSHOT_EVERY
    }
    async fn run_once(&mut self) -> Result<(), LoopError> {
        {
            let mut s = self.state.borrow_mut();
            if s.chaos.remove(&self.name) {
                drop(s);
                panic!("chaos: injected panic in loop `{}`", self.name);
            }
            let queue = self.rx.rx.len();
            s.cmd_queue = queue;
            s.overload.probe(self.sock.raw_fd(), queue, SHARD_QUEUE);
            let mut clock = s.clock();
            // Drain the whole batch queued since the last run.
            while let Ok(cmd) = self.rx.rx.try_recv() {
                s.on_command(cmd, clock.now);
            }
            s.host.fire_due(clock.now);
            s.pump(&mut self.out, &mut clock);
            if self
                .last_snapshot
                .is_none_or(|t| t.elapsed() >= SNAPSHOT_EVERY)
                || s.stopping
            {
                self.last_snapshot = Some(Instant::now());
                let mut snap = s.snapshot(self.rx.rx.len());
                self.sock.fill_stats(&mut snap.io);
                let _ = s
                    .ctx
                    .reports
                    .try_send(ShardReport::Snapshot(Box::new(snap)));
            }
        }
        send_all(&self.sock, &self.state, &mut self.out).await;
        Ok(())
    }

    /// Sleeps until a command arrives, the earliest protocol timer or the next
    /// snapshot is due, or the receive path armed an earlier timer.
    async fn idle(&mut self, delay: Duration, failing: bool) {
        let (state, rx, last_snapshot) = (&self.state, &self.rx, self.last_snapshot);
        let planned = idle_until(delay, failing, move || {
            let mut s = state.borrow_mut();
            let now = s.now();
            let snap = last_snapshot.map_or(Duration::ZERO, |t| {
                SNAPSHOT_EVERY.saturating_sub(t.elapsed())
            });
            let mut due = now + snap;
            if let Some(at) = s.host.next_timeout() {
                due = due.min(at);
            }
            // Stopping: the runner's stop interrupts this wait; snapshots need not
            // wait for the period any more, but there is no reason to spin either.
            if s.stopping {
                due = due.max(now + SNAPSHOT_EVERY);
            }
            // Queued commands (or a cleanup slice due now): only yield.
            if !rx.rx.is_empty() {
                due = now;
            }
            s.tick_due = Some(due);
            (
                due.saturating_sub(now),
                future::or(rx.readable(), s.wake.notified()),
            )
        })
        .await;
        if planned {
            let mut s = self.state.borrow_mut();
            s.tick_due = None;
            s.io.wakeups += 1;
        }
    }
}

/// Anti-entropy: every `anti_entropy_interval` a digest of recent deliveries goes to
/// one random neighbour (see `Shard::anti_entropy`). Its own loop so it can be paused,
/// observed and restarted apart from the tick.
struct AntiEntropyLoop {
    name: String,
    state: Rc<RefCell<ShardState>>,
    sock: Rc<NodeSocket>,
    interval: Duration,
    out: Vec<(SocketAddr, Bytes)>,
}

impl Loop for AntiEntropyLoop {
    fn name(&self) -> &str {
        &self.name
    }
    fn interval(&self) -> Duration {
        self.interval
    }
    async fn run_once(&mut self) -> Result<(), LoopError> {
        {
            let mut s = self.state.borrow_mut();
            if s.chaos.remove(&self.name) {
                drop(s);
                panic!("chaos: injected panic in loop `{}`", self.name);
            }
            s.io.wakeups += 1;
            let mut clock = s.clock();
            // Overloaded: skip this round (counted); the next one covers it.
            if s.overload.shedding() {
                s.overload.stats.anti_entropy += 1;
            } else {
                s.host.fire(clock.now, HostTimer::AntiEntropy);
            }
            s.pump(&mut self.out, &mut clock);
        }
        send_all(&self.sock, &self.state, &mut self.out).await;
        Ok(())
    }
}

/// The shard socket's receive path, until `stop`: wait for readiness, drain the
/// socket in batches, one pump and one batched send per batch.
async fn receive(
    state: Rc<RefCell<ShardState>>,
    sock: Rc<NodeSocket>,
    stop: StopSignal,
) -> Result<(), String> {
    let mut got = Vec::with_capacity(RX_BATCH);
    let mut out = Vec::new();
    // The last batch was full: more may be waiting, no need to wait for readiness.
    let mut more = false;
    while !stop.is_set() {
        match sock.receive_turn(&mut got, &mut more, &stop, None).await {
            Turn::Stopped => break,
            Turn::Ready { woke } => {
                if woke {
                    state.borrow_mut().io.wakeups += 1;
                }
            }
        }
        if !got.is_empty() {
            let mut s = state.borrow_mut();
            let mut clock = s.clock();
            let queue = s.cmd_queue;
            for r in got.drain(..) {
                s.overload.on_receive(sock.raw_fd(), queue, SHARD_QUEUE);
                if r.oversized {
                    s.io.datagrams_received += 1;
                    s.io.rx_oversized += 1;
                    continue;
                }
                s.on_datagram(r.data, r.from, &mut clock);
            }
            s.pump(&mut out, &mut clock);
        }
        send_all(&sock, &state, &mut out).await;
        // Under a flood the socket never runs dry: give the tick loop (commands,
        // timers, snapshots) its turn when our time slice is used up.
        glommio::yield_if_needed().await;
    }
    Ok(())
}

pub(crate) async fn run_shard(ctx: ShardCtx, sock: Socket, rx: QueueRx<ShardCmd>) {
    let owned = owned_mask(ctx.index, ctx.shards, ctx.protocol.partitions);
    let shard = match Shard::new(ctx.header.sender, owned, ctx.protocol.clone(), ctx.seed) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "shard config rejected");
            return;
        }
    };
    let index = ctx.index;
    let seed = ctx.seed;
    let rate_limit = ctx.rate_limit;
    let shared = ctx.shared.clone();
    let sock = UdpSocket::from(sock);
    let rx_slot = slot_size(ctx.mtu);
    let sock = Rc::new(NodeSocket::new(
        sock,
        ctx.faults.clone(),
        seed,
        (rx_slot, SHARD_RX_BUFFERS, ctx.gso),
    ));
    let host = ShardHost::new(
        shard,
        HostConfig {
            header: ctx.header,
            mtu: build_mtu(ctx.mtu, ctx.auth.is_some()),
        },
        seed,
    );
    let state = Rc::new(RefCell::new(ShardState {
        ctx,
        host,
        deliveries: Deliveries::new(index),
        io: IoStats::default(),
        stopping: false,
        last_decode_log: None,
        chaos: FxHashSet::default(),
        loops: Vec::new(),
        tracker: None,
        limiter: PeerRateLimiter::new(rate_limit, seed),
        overload: Overload::default(),
        cmd_queue: 0,
        tick_due: None,
        wake: Notify::new(),
        stopped: StopSignal::new(),
    }));
    let tracker = TaskTracker::default();
    state.borrow_mut().tracker = Some(tracker.clone());
    let sup = {
        let (state, sock) = (state.clone(), sock.clone());
        executor_supervisor(
            &format!("shard-{index}"),
            format!("shard-{index}/receiver"),
            &tracker,
            seed,
            shared,
            move |stop| receive(state.clone(), sock.clone(), stop),
        )
    };
    let mut mgr = LoopManager::new(tracker.clone());
    let tick = mgr.add(
        TickLoop {
            name: format!("shard-{index}/tick"),
            state: state.clone(),
            sock: sock.clone(),
            rx,
            out: Vec::new(),
            last_snapshot: None,
        },
        LoopConfig {
            jitter: 0.0,
            error_backoff: loop_backoff(),
            seed,
            ..LoopConfig::default()
        },
    );
    let mut loops = vec![tick];
    let ae_interval = state.borrow().ctx.protocol.anti_entropy_interval;
    {
        // An interval of 0 disables it: listed with enabled: false, never run.
        loops.push(mgr.add(
            AntiEntropyLoop {
                name: format!("shard-{index}/anti_entropy"),
                state: state.clone(),
                sock: sock.clone(),
                interval: ae_interval,
                out: Vec::new(),
            },
            LoopConfig {
                enabled: !ae_interval.is_zero(),
                jitter: PERIOD_JITTER,
                error_backoff: loop_backoff(),
                seed: seed ^ 0xae,
            },
        ));
    }
    state.borrow_mut().loops = loops;
    mgr.start_all();
    let stopped = state.borrow().stopped.clone();
    stopped.wait().await;
    // The tick that saw Shutdown already flushed the IHave queues and sent them.
    let initial = tracker.active_count();
    mgr.stop_all(Duration::from_secs(1)).await;
    let _ = sup.stop().await;
    let drained = tracker.shutdown(Duration::from_millis(200)).await;
    state.borrow().ctx.shared.note_stop(
        1 + index,
        crate::node::plan::ExecutorStop {
            initial,
            remaining: drained.remaining_tasks,
        },
    );
}
