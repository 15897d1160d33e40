//! What the control core owns, and the synchronous half of its executor: a control
//! datagram through the auth layer into the [`MemberDriver`], membership timers, and
//! the driver's output applied (neighbours up or down told to every shard, frames
//! sealed for sending). Nothing here awaits or touches a socket: `exec.rs` owns the
//! socket and the loops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::Receiver;
use rustc_hash::FxHashSet;
use tracing::{error, info, warn};

use crate::membership::driver::{MemberDriver, Output};
use crate::membership::{MembershipConfig, Time};
use crate::node::net::socket::FaultSwitch;
use crate::node::plan::{unix_ms, LoopCmd, RuntimeConfig, ShardCmd, ShardReport, Shared};
use crate::node::seeds::SeedResolver;
use crate::node::snapshot::{IoStats, LoopControlRefused, LoopInfo, ShardSnapshot};
use crate::node::supervise::loop_info;
use crate::tasks::{LoopHandle, Notify, TaskTracker};
use crate::wire::auth::{Sealer, Verifier};
use crate::wire::{self, Header, MemberFrame};

/// What the control executor is started with.
pub(crate) struct ControlCtx {
    pub cfg: RuntimeConfig,
    /// The seeds' addresses, names resolved on their own thread.
    pub seeds: Arc<SeedResolver>,
    /// HyParView tunables (validated).
    pub membership: MembershipConfig,
    pub header: Header,
    pub shared: Arc<Shared>,
    pub reports: Receiver<ShardReport>,
    /// Loop names to panic once (test-only, `--chaos`).
    pub chaos: Option<Receiver<String>>,
    /// Loop pause/resume requests from the admin plane.
    pub loop_rx: Receiver<LoopCmd>,
    /// The control socket's own sealer (stream 0) and verifier when the cluster is
    /// keyed.
    pub auth: Option<(Sealer, Verifier)>,
    /// The fault layer's settings (test-only, `--chaos`).
    pub faults: Option<Arc<FaultSwitch>>,
}

pub(super) struct ControlState {
    pub(super) ctx: ControlCtx,
    pub(super) members: MemberDriver,
    pub(super) io: IoStats,
    pub(super) loops: Vec<LoopHandle>,
    pub(super) shards: Vec<Option<ShardSnapshot>>,
    pub(super) chaos_pending: FxHashSet<String>,
    pub(super) tracker: TaskTracker,
    /// Until when the membership loop sleeps (`None` while it runs); a datagram that
    /// arms an earlier timer pokes it through `wake`.
    pub(super) membership_due: Option<Time>,
    pub(super) wake: Notify,
    /// The resolver generation whose seed addresses the driver has.
    pub(super) seed_generation: u64,
    /// Nodes refused because a live node already has their name, and refusals this
    /// node received for its own name; when the last warning about either was logged.
    pub(super) name_conflicts_sent: u64,
    pub(super) name_conflicts_received: u64,
    pub(super) last_conflict_log: Option<std::time::Instant>,
}

/// A shard that has not reported once this long after the start never ran (the known
/// glommio start-up stall, docs/operations.md, "Known bug: an executor that never
/// runs"): the node fails loudly instead of serving its partitions from nowhere.
pub(super) const SHARD_START_DEADLINE: Duration = Duration::from_secs(10);

/// The shards that never reported, once `since_start` has passed the deadline.
pub(super) fn never_started<T>(reported: &[Option<T>], since_start: Duration) -> Vec<usize> {
    if since_start < SHARD_START_DEADLINE {
        return Vec::new();
    }
    reported
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_none())
        .map(|(k, _)| k)
        .collect()
}

/// Least time between two warnings about duplicate node names.
const CONFLICT_LOG_EVERY: Duration = Duration::from_secs(5);

impl ControlState {
    /// Test-only fault injection: whether `name` was asked to panic (once).
    pub(super) fn chaos_take(&mut self, name: &str) -> bool {
        if let Some(rx) = &self.ctx.chaos {
            while let Ok(n) = rx.try_recv() {
                match n.strip_prefix("shard-") {
                    // Shard loops: route to the shard that owns it.
                    Some(rest) => {
                        let k = rest.split('/').next().and_then(|k| k.parse::<usize>().ok());
                        if let Some(tx) = k.and_then(|k| self.ctx.shared.shard_tx.get(k)) {
                            let _ = tx.try_send(ShardCmd::ChaosPanic(n));
                        }
                    }
                    None => {
                        self.chaos_pending.insert(n);
                    }
                }
            }
        }
        self.chaos_pending.remove(name)
    }

    /// Applies a pause or resume from the admin plane to a control-core loop and
    /// republishes the loop list, so the next `/status` shows the new state.
    pub(super) fn loop_command(
        &mut self,
        name: &str,
        pause: bool,
    ) -> Result<LoopInfo, LoopControlRefused> {
        let Some(h) = self.loops.iter().find(|h| h.name() == name) else {
            let on_shard = self
                .shards
                .iter()
                .flatten()
                .any(|s| s.loops.iter().any(|l| l.name == name));
            return Err(if on_shard {
                LoopControlRefused::NotPausable(name.to_string())
            } else {
                LoopControlRefused::Unknown(name.to_string())
            });
        };
        if pause {
            h.pause();
        } else {
            h.resume();
        }
        let info = loop_info(&h.status());
        let mut snap = self.ctx.shared.snapshot();
        if let Some(l) = snap.loops.iter_mut().find(|l| l.name == name) {
            *l = info.clone();
        }
        Ok(info)
    }

    /// A live node other than `sender` that goes by `name`: this node itself, or an
    /// active neighbour heard from within the failure timeout.
    pub(super) fn live_holder(
        &self,
        name: &str,
        sender: crate::ids::NodeId,
    ) -> Option<crate::ids::NodeId> {
        let own = self.ctx.cfg.node_id;
        if sender == own {
            return None;
        }
        if self.ctx.cfg.node_name.as_deref() == Some(name) {
            return Some(own);
        }
        let now = self.now();
        let timeout = self.ctx.membership.failure_timeout;
        self.members.active().map(|(id, _, _)| id).find(|&id| {
            id != sender
                && self.ctx.cfg.names.get(id).is_some_and(|n| &*n == name)
                && self
                    .members
                    .last_heard(id)
                    .is_some_and(|t| now.saturating_sub(t) <= timeout)
        })
    }

    /// Whether a duplicate-name warning may be logged now (rate limit).
    pub(super) fn conflict_log_due(&mut self) -> bool {
        let due = self
            .last_conflict_log
            .is_none_or(|t| t.elapsed() >= CONFLICT_LOG_EVERY);
        if due {
            self.last_conflict_log = Some(std::time::Instant::now());
        }
        due
    }

    pub(super) fn tell_shards(&mut self, mk: impl Fn() -> ShardCmd) {
        for tx in &self.ctx.shared.shard_tx {
            if tx.try_send(mk()).is_err() {
                self.io.command_queue_full += 1;
            }
        }
    }

    /// Membership time: elapsed since the node started.
    pub(super) fn now(&self) -> Time {
        self.ctx.shared.started.elapsed()
    }

    /// One datagram holding `frame`, sealed when the cluster is keyed. Frames that
    /// can make us someone's neighbour carry our NodeName frame beside them.
    pub(super) fn datagram(&mut self, frame: &MemberFrame) -> Bytes {
        let mut d = wire::encode_member_datagram(&self.ctx.header, std::slice::from_ref(frame));
        // Our advertised address, in every datagram: behind a port mapping or NAT our
        // datagrams' source is not where peers reach us, and a NAT may rewrite the
        // source port of any of them (the driver's MTU leaves room for it).
        if let Some(a) = self.ctx.cfg.advertise {
            wire::member_frame::encode_advertise(a, &mut d);
        }
        if let Some(name) = &self.ctx.cfg.node_name {
            if matches!(
                frame,
                MemberFrame::Join { .. }
                    | MemberFrame::Neighbor { .. }
                    | MemberFrame::NeighborReply { .. }
            ) {
                wire::member_frame::encode_node_name_with(
                    name,
                    self.ctx.cfg.node_name_chosen,
                    &mut d,
                );
            }
        }
        match &mut self.ctx.auth {
            Some((sealer, _)) => sealer.seal_bytes(&d, unix_ms()),
            None => Bytes::from(d),
        }
    }

    /// Performs the driver's outputs that need no socket (neighbours to the shards)
    /// and returns the datagrams to send.
    pub(super) fn apply(&mut self, outputs: Vec<Output>) -> Vec<(Bytes, SocketAddr)> {
        let mut sends = Vec::new();
        for o in outputs {
            match o {
                Output::Send { to, frame } => {
                    let d = self.datagram(&frame);
                    sends.push((d, to));
                }
                Output::NeighborUp {
                    peer,
                    control,
                    shards,
                } => {
                    info!(peer = %peer, %control, shards, "neighbour up");
                    self.tell_shards(|| ShardCmd::NeighborUp {
                        peer,
                        control,
                        shards,
                    });
                }
                Output::NeighborDown { peer } => {
                    info!(peer = %peer, "neighbour down");
                    self.tell_shards(|| ShardCmd::NeighborDown { peer });
                }
            }
        }
        sends
    }

    /// A datagram on the control socket (its frames are decoded from `buf`; an
    /// encrypted one is opened in a private copy, since pooled buffers are shared).
    /// Returns the datagrams to send in answer. `now` and `unix` are read once per
    /// receive batch.
    pub(super) fn on_datagram(
        &mut self,
        buf: Bytes,
        src: SocketAddr,
        (now, unix): (Time, u64),
    ) -> Vec<(Bytes, SocketAddr)> {
        self.io.datagrams_received += 1;
        self.io.bytes_received += buf.len() as u64;
        // Authenticate before decoding anything; only the MAC'd part is decoded.
        let bytes = match &mut self.ctx.auth {
            Some((_, verifier)) => match verifier.open_bytes(buf, unix) {
                Ok(b) => b,
                Err(e) => {
                    self.io.count_auth_failure(e);
                    return Vec::new();
                }
            },
            None => buf,
        };
        if let Some((holder, name)) = wire::member_frame::read_name_conflict(&bytes) {
            self.name_conflicts_received += 1;
            if self.conflict_log_due() {
                error!(
                    name = %name,
                    holder = %holder,
                    refused_by = %src,
                    "this node's name is already used by a live node, so the cluster refuses it: start it with another --node-name"
                );
            }
            return Vec::new();
        }
        let dg = match wire::decode_members(&bytes) {
            Ok(dg) => dg,
            Err(e) => {
                self.io.count_decode_error(e.reason());
                return Vec::new();
            }
        };
        self.io.unknown_frames += dg.skipped_unknown as u64;
        if let Some((name, chosen)) = wire::member_frame::read_node_name_with(&bytes) {
            // Only a name the operator chose is refused when taken: the hostname
            // default is shared by every node on a host.
            let holder = chosen
                .then(|| self.live_holder(&name, dg.header.sender))
                .flatten();
            if let Some(holder) = holder {
                // The newcomer is refused: nothing it sent is processed, and it is told.
                self.name_conflicts_sent += 1;
                if self.conflict_log_due() {
                    warn!(
                        name = %name,
                        refused = %dg.header.sender,
                        from = %src,
                        holder = %holder,
                        "refusing a node whose name is already used by a live node"
                    );
                }
                let mut d = wire::encode_member_datagram(&self.ctx.header, &[]);
                wire::member_frame::encode_name_conflict(holder, &name, &mut d);
                let d = match &mut self.ctx.auth {
                    Some((sealer, _)) => sealer.seal_bytes(&d, unix_ms()),
                    None => Bytes::from(d),
                };
                return vec![(d, src)];
            }
            if self.ctx.cfg.names.insert(dg.header.sender, &name) {
                info!(peer = %dg.header.sender, name = %name, "node name learned");
            }
        }
        let advertised = wire::member_frame::read_advertise(&bytes);
        let out =
            self.members
                .on_frames_advertised(now, dg.header.sender, src, advertised, dg.frames);
        self.apply(out)
    }

    /// Wakes the membership loop if a datagram armed a timer before its wake-up.
    pub(super) fn poke_membership(&self) {
        if let (Some(planned), Some(next)) = (self.membership_due, self.members.next_due()) {
            if next < planned {
                self.wake.notify_all();
            }
        }
    }

    /// Fires due membership timers.
    pub(super) fn tick(&mut self) -> Vec<(Bytes, SocketAddr)> {
        let now = self.now();
        let (generation, addrs) = self.ctx.seeds.current();
        if generation != self.seed_generation {
            self.seed_generation = generation;
            self.members.set_seeds(&addrs);
        }
        let joins = self.members.seed_joins_sent();
        let out = self.members.tick(now);
        if self.members.seed_joins_sent() != joins {
            // A join attempt went out: look the names up again for the next one.
            self.ctx.seeds.kick();
        }
        self.members
            .set_seed_resolve_failures(self.ctx.seeds.failures());
        self.apply(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_silent_past_the_start_deadline_never_started() {
        let reported = [Some(()), None, Some(()), None];
        assert!(never_started(&reported, Duration::from_secs(9)).is_empty());
        assert_eq!(never_started(&reported, SHARD_START_DEADLINE), vec![1, 3]);
        assert!(never_started(&[Some(()), Some(())], Duration::from_secs(60)).is_empty());
    }
}
