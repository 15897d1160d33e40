//! The control core: HyParView membership over the control socket (driven by
//! [`MemberDriver`]) and the node's periodic work, each a supervised [`Loop`]:
//! membership timers, maintenance, seen-map cleanup scheduling and stats aggregation.
//! The receive path is a permanent child of a supervisor.
//!
//! This file is only the asynchronous half: the socket, the loops, supervision.
//! What a turn does with a datagram or a timer is `state.rs`, the node snapshot it
//! publishes `report.rs`.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use glommio::net::UdpSocket;
use rustc_hash::FxHashSet;
use socket2::Socket;
use tracing::{debug, error, info};

use super::state::{ControlCtx, ControlState};
use crate::membership::driver::MemberDriver;
use crate::node::net::socket::{NodeSocket, Turn};
use crate::node::net::udp::{slot_size, RX_BATCH};
use crate::node::plan::{build_mtu, unix_ms, ExecutorStop, LoopCmd, ShardCmd};
use crate::node::snapshot::IoStats;
use crate::node::supervise::{executor_supervisor, idle_until, loop_backoff};
use crate::protocol::host::{CLEANUP_EVERY, PERIOD_JITTER};
use crate::tasks::{Loop, LoopConfig, LoopError, LoopManager, Notify, StopSignal, TaskTracker};
use crate::wire;

/// How often stats are aggregated for the admin plane.
pub(crate) const STATS_EVERY: Duration = Duration::from_millis(250);
/// The longest the membership loop sleeps when no timer is armed.
const MEMBERSHIP_IDLE: Duration = Duration::from_secs(1);
/// Receive buffers of the control socket's pool.
const CONTROL_RX_BUFFERS: usize = 64;
/// Name of the control core's supervised receive path (a task name in metrics, and a
/// `--chaos` panic target).
pub(crate) const CONTROL_RECEIVER: &str = "control_receiver";
/// How often an idle receive path looks for an injected panic (`--chaos` only).
const CHAOS_POLL: Duration = Duration::from_millis(100);

/// Panics when `--chaos` asked this loop to (checked before touching any state).
fn chaos_point(state: &RefCell<ControlState>, name: &str) {
    if state.borrow_mut().chaos_take(name) {
        panic!("chaos: injected panic in loop `{name}`");
    }
}

/// Sends the datagrams the membership driver asked for, batched.
async fn send_all(
    state: &RefCell<ControlState>,
    sock: &NodeSocket,
    sends: Vec<(Bytes, SocketAddr)>,
) {
    if sends.is_empty() {
        return;
    }
    let mut items: Vec<(SocketAddr, Bytes)> = sends.into_iter().map(|(d, to)| (to, d)).collect();
    let r = sock.send_batch(&mut items).await;
    let mut s = state.borrow_mut();
    s.io.datagrams_sent += r.datagrams;
    s.io.bytes_sent += r.bytes;
    s.io.send_errors += r.errors;
}

/// Fires due HyParView timers (heartbeats, probes, shuffles, join retries) and
/// sends what they produce.
struct MembershipLoop {
    state: Rc<RefCell<ControlState>>,
    sock: Rc<NodeSocket>,
}

impl Loop for MembershipLoop {
    fn name(&self) -> &str {
        "membership"
    }
    /// The longest the loop sleeps with no timer armed.
    fn interval(&self) -> Duration {
        MEMBERSHIP_IDLE
    }
    async fn run_once(&mut self) -> Result<(), LoopError> {
        chaos_point(&self.state, "membership");
        let sends = self.state.borrow_mut().tick();
        send_all(&self.state, &self.sock, sends).await;
        Ok(())
    }
    /// Sleeps until the earliest membership timer (or join retry) is due, or until
    /// the receive path armed an earlier one.
    async fn idle(&mut self, delay: Duration, failing: bool) {
        let state = &self.state;
        let planned = idle_until(delay, failing, move || {
            let mut s = state.borrow_mut();
            let now = s.now();
            let due = s
                .members
                .next_due()
                .unwrap_or(now + MEMBERSHIP_IDLE)
                .min(now + MEMBERSHIP_IDLE);
            s.membership_due = Some(due);
            (due.saturating_sub(now), s.wake.notified())
        })
        .await;
        if planned {
            let mut s = self.state.borrow_mut();
            s.membership_due = None;
            s.io.wakeups += 1;
        }
    }
}

/// A loop that sends one command to every shard each period.
struct ShardCommandLoop {
    state: Rc<RefCell<ControlState>>,
    name: &'static str,
    interval: Duration,
    command: fn() -> ShardCmd,
}

impl Loop for ShardCommandLoop {
    fn name(&self) -> &str {
        self.name
    }
    fn interval(&self) -> Duration {
        self.interval
    }
    async fn run_once(&mut self) -> Result<(), LoopError> {
        chaos_point(&self.state, self.name);
        let command = self.command;
        self.state.borrow_mut().tell_shards(command);
        Ok(())
    }
}

/// Collects shard snapshots and publishes the node snapshot for the admin plane.
struct StatsLoop {
    state: Rc<RefCell<ControlState>>,
    sock: Rc<NodeSocket>,
}

impl Loop for StatsLoop {
    fn name(&self) -> &str {
        "stats"
    }
    fn interval(&self) -> Duration {
        STATS_EVERY
    }
    async fn run_once(&mut self) -> Result<(), LoopError> {
        chaos_point(&self.state, "stats");
        let mut s = self.state.borrow_mut();
        s.io.wakeups += 1;
        let mut io = s.io;
        self.sock.fill_stats(&mut io);
        s.io = io;
        s.publish();
        Ok(())
    }
}

/// The control socket's receive path, until `stop`: readiness, then batches.
async fn receive(
    state: Rc<RefCell<ControlState>>,
    sock: Rc<NodeSocket>,
    stop: StopSignal,
) -> Result<(), String> {
    let mut got = Vec::with_capacity(RX_BATCH);
    let mut more = false;
    while !stop.is_set() {
        // `--chaos` only: a panic here is caught by the supervisor, which restarts
        // the receive path (counted in plumtree_task_restarts_total).
        if state.borrow().ctx.chaos.is_some() {
            chaos_point(&state, CONTROL_RECEIVER);
        }
        // `--chaos` only: look at injected panics now and then, so one fires on an
        // idle socket too.
        let poll = state.borrow().ctx.chaos.is_some().then_some(CHAOS_POLL);
        match sock.receive_turn(&mut got, &mut more, &stop, poll).await {
            Turn::Stopped => break,
            Turn::Ready { woke } => {
                if woke {
                    state.borrow_mut().io.wakeups += 1;
                }
            }
        }
        if got.is_empty() {
            continue;
        }
        let sends = {
            let mut s = state.borrow_mut();
            // One clock read per batch.
            let unix = if s.ctx.auth.is_some() { unix_ms() } else { 0 };
            let now = s.now();
            let mut sends = Vec::new();
            for r in got.drain(..) {
                if r.oversized {
                    s.io.datagrams_received += 1;
                    s.io.rx_oversized += 1;
                    continue;
                }
                sends.extend(s.on_datagram(r.data, r.from, (now, unix)));
            }
            s.poke_membership();
            sends
        };
        send_all(&state, &sock, sends).await;
        glommio::yield_if_needed().await;
    }
    Ok(())
}

pub(crate) async fn run_control(ctx: ControlCtx, sock: Socket) {
    let sock = UdpSocket::from(sock);
    let sock = Rc::new(NodeSocket::new(
        sock,
        ctx.faults.clone(),
        ctx.cfg.node_id.0,
        (slot_size(ctx.cfg.mtu), CONTROL_RX_BUFFERS, true),
    ));
    let n = ctx.cfg.shard_cores.len();
    let seed = ctx.cfg.node_id.0;
    let p = ctx.cfg.protocol.clone();
    let shared = ctx.shared.clone();
    let (seed_generation, seed_addrs) = ctx.seeds.current();
    // Decided by the runtime before any executor started (`advertise_addr`).
    let advertise = ctx.cfg.advertise.unwrap_or(shared.addr);
    info!(%advertise, bind = %shared.addr, "advertising control address");
    let members = match MemberDriver::new(
        ctx.cfg.node_id,
        advertise,
        n as u16,
        build_mtu(ctx.cfg.mtu, ctx.auth.is_some())
            .saturating_sub(wire::member_frame::ADVERTISE_FRAME_LEN),
        ctx.membership.clone(),
        &seed_addrs,
        seed ^ 0x6d65_6d62_6572_7321,
    ) {
        Ok(m) => m,
        Err(e) => {
            // Validated at start-up; reaching this is a bug, so stop the node loudly.
            error!(error = %e, "membership config rejected");
            shared.degrade("membership", true);
            return;
        }
    };
    let state = Rc::new(RefCell::new(ControlState {
        ctx,
        members,
        io: IoStats::default(),
        loops: Vec::new(),
        shards: vec![None; n],
        chaos_pending: FxHashSet::default(),
        name_conflicts_sent: 0,
        name_conflicts_received: 0,
        last_conflict_log: None,
        tracker: TaskTracker::default(),
        membership_due: None,
        wake: Notify::new(),
        seed_generation,
    }));
    let tracker = state.borrow().tracker.clone();
    // The receive path: a permanent, critical child.
    let sup = {
        let (state, sock) = (state.clone(), sock.clone());
        executor_supervisor(
            "control",
            CONTROL_RECEIVER.into(),
            &tracker,
            seed,
            shared.clone(),
            move |stop| receive(state.clone(), sock.clone(), stop),
        )
    };
    let mut mgr = LoopManager::new(tracker.clone());
    let cfg = |jitter: f64| LoopConfig {
        jitter,
        error_backoff: loop_backoff(),
        seed,
        ..LoopConfig::default()
    };
    let first = {
        let mut s = state.borrow_mut();
        let now = s.now();
        let out = s.members.start(now);
        s.apply(out)
    };
    send_all(&state, &sock, first).await;
    let mut handles = vec![mgr.add(
        MembershipLoop {
            state: state.clone(),
            sock: sock.clone(),
        },
        cfg(0.0),
    )];
    // Each maintenance period is `maintenance_interval + random(0, maintenance_jitter)`
    // (LoopConfig::jitter is that extra wait as a fraction of the interval).
    let jitter = if p.maintenance_interval.is_zero() {
        0.0
    } else {
        p.maintenance_jitter.as_secs_f64() / p.maintenance_interval.as_secs_f64()
    };
    type CommandLoop = (&'static str, Duration, f64, fn() -> ShardCmd);
    let commands: [CommandLoop; 2] = [
        ("maintenance", p.maintenance_interval, jitter, || {
            ShardCmd::Maintenance
        }),
        // Every shard host's cleanup cadence, as the simulator's hosts run it.
        ("seen_cleanup", CLEANUP_EVERY, PERIOD_JITTER, || {
            ShardCmd::Cleanup
        }),
    ];
    for (name, interval, jitter, command) in commands {
        // An interval of 0 disables the loop: it is listed (enabled: false), never run.
        let enabled = !interval.is_zero();
        handles.push(mgr.add(
            ShardCommandLoop {
                state: state.clone(),
                name,
                interval,
                command,
            },
            LoopConfig {
                enabled,
                ..cfg(jitter)
            },
        ));
    }
    handles.push(mgr.add(
        StatsLoop {
            state: state.clone(),
            sock: sock.clone(),
        },
        cfg(0.0),
    ));
    state.borrow_mut().loops = handles;
    mgr.start_all();
    // Sleeps until `RunningNode::shutdown` sets `stop` or the admin plane queues a
    // loop command; both ring the doorbell.
    loop {
        shared
            .control_bell
            .wait(|| shared.stop_requested() || !state.borrow().ctx.loop_rx.is_empty())
            .await;
        if shared.stop_requested() {
            break;
        }
        let cmds: Vec<LoopCmd> = state.borrow().ctx.loop_rx.try_iter().collect();
        for cmd in cmds {
            let answer = state.borrow_mut().loop_command(&cmd.name, cmd.pause);
            if let Ok(info) = &answer {
                info!(loop_name = %info.name, paused = info.paused, "loop state changed over the admin plane");
            }
            let _ = cmd.reply.try_send(answer);
        }
    }
    let initial_tasks = tracker.active_count();
    // Shutdown: loops in reverse start order, then leave the cluster (Disconnect to
    // every active neighbour, so they repair at once), then stop the shards and the
    // receive path.
    let stopped = mgr.stop_all(Duration::from_secs(1)).await;
    debug!(stopped, "control loops stopped");
    let leave = {
        let mut s = state.borrow_mut();
        let now = s.now();
        let out = s.members.leave(now);
        s.apply(out)
    };
    info!(neighbours = leave.len(), "leaving the cluster");
    send_all(&state, &sock, leave).await;
    state.borrow_mut().tell_shards(|| ShardCmd::Shutdown);
    let _ = sup.stop().await;
    // Whatever did not stop with its loop or supervisor is cancelled here.
    let drained = tracker.shutdown(Duration::from_millis(200)).await;
    shared.note_stop(
        0,
        ExecutorStop {
            initial: initial_tasks,
            remaining: drained.remaining_tasks,
        },
    );
    info!("control core stopped");
}
