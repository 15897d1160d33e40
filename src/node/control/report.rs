//! The node snapshot the admin plane reads: the control core's own counters, its
//! loops and membership, and the latest snapshot of every shard, merged.

use tracing::error;

use super::state::{never_started, ControlState, SHARD_START_DEADLINE};
use crate::node::plan::ShardReport;
use crate::node::snapshot::{LoopInfo, PeerInfo, ShardSnapshot, TaskNameCounters};
use crate::node::supervise::loop_info;

impl ControlState {
    pub(super) fn publish(&mut self) {
        while let Ok(ShardReport::Snapshot(s)) = self.ctx.reports.try_recv() {
            let k = s.shard;
            if k < self.shards.len() {
                self.shards[k] = Some(*s);
            }
        }
        let now = self.now();
        let stalled = never_started(&self.shards, now);
        let failed = self
            .ctx
            .shared
            .fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        if !stalled.is_empty() && !failed {
            let reason = format!(
                "shard(s) {stalled:?} never started within {SHARD_START_DEADLINE:?} (their executors did not run: the known start-up stall); restart the node"
            );
            error!("{reason}");
            self.ctx.shared.fail(reason);
        }
        let shards: Vec<ShardSnapshot> = self.shards.iter().flatten().cloned().collect();
        let peers = self
            .members
            .active()
            .filter_map(|(id, addr, n)| Some((id, addr?, n)))
            .map(|(id, addr, n)| {
                let hex = id.to_string();
                let (eager, lazy) = shards
                    .iter()
                    .flat_map(|s| s.peer_links.iter())
                    .filter(|(h, _, _)| *h == hex)
                    .fold((0, 0), |a, (_, e, l)| (a.0 + e, a.1 + l));
                PeerInfo {
                    name: self.ctx.cfg.names.get(id).map(|n| n.to_string()),
                    node_id: hex,
                    addr,
                    shards: n,
                    state: "active".into(),
                    last_heard_ms_ago: self
                        .members
                        .last_heard(id)
                        .map_or(u64::MAX, |t| now.saturating_sub(t).as_millis() as u64),
                    eager_partitions: eager,
                    lazy_partitions: lazy,
                }
            })
            .collect();
        let mut membership = self.members.snapshot(now);
        let names = &self.ctx.cfg.names;
        for m in membership
            .active
            .iter_mut()
            .chain(membership.passive.iter_mut())
            .chain(membership.lost.iter_mut())
        {
            m.name = u64::from_str_radix(&m.node_id, 16)
                .ok()
                .and_then(|id| names.get(crate::ids::NodeId(id)))
                .map(|n| n.to_string());
        }
        if let Some(own) = &self.ctx.cfg.node_name {
            // Keep our own name in the book (deliveries of our own broadcasts).
            names.insert(self.ctx.cfg.node_id, own);
        }
        let (names_known, names_evicted) = names.stats();
        let mut loops: Vec<LoopInfo> = self.loops.iter().map(|h| loop_info(&h.status())).collect();
        loops.extend(shards.iter().flat_map(|s| s.loops.iter().cloned()));
        let mut snap = self.ctx.shared.snapshot();
        let mut tasks = self.tracker.counters();
        for t in shards.iter().map(|s| &s.tasks) {
            tasks.spawned += t.spawned;
            tasks.running += t.running;
            tasks.completed += t.completed;
            tasks.failed += t.failed;
            tasks.cancelled += t.cancelled;
            tasks.restarted += t.restarted;
        }
        snap.names_known = names_known;
        snap.name_conflicts_sent = self.name_conflicts_sent;
        snap.name_conflicts_received = self.name_conflicts_received;
        snap.names_evicted = names_evicted;
        snap.tasks = tasks;
        snap.task_names = merge_task_names(
            self.tracker.by_name(),
            shards.iter().flat_map(|s| s.task_names.iter()),
        );
        snap.shards = shards;
        snap.peers = peers;
        snap.membership = membership;
        snap.loops = loops;
        snap.control_io = self.io;
    }
}

/// Sums per-name task counters from several trackers (the control core's and each
/// shard's), keyed by name.
fn merge_task_names<'a>(
    mut acc: Vec<TaskNameCounters>,
    more: impl Iterator<Item = &'a TaskNameCounters>,
) -> Vec<TaskNameCounters> {
    for c in more {
        match acc.iter_mut().find(|a| a.task == c.task) {
            Some(a) => {
                a.panics += c.panics;
                a.restarts += c.restarts;
            }
            None => acc.push(c.clone()),
        }
    }
    acc.sort_by(|a, b| a.task.cmp(&b.task));
    acc
}
