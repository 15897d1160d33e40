//! A shard's counters published to the control core: the host's and the
//! executor's, assembled into one [`ShardSnapshot`].

use super::state::ShardState;
use crate::node::snapshot::{IoStats, ShardSnapshot};
use crate::node::supervise::loop_info;
use crate::protocol::host::HostStats;

impl ShardState {
    pub(super) fn snapshot(&self, queue: usize) -> ShardSnapshot {
        ShardSnapshot {
            shard: self.ctx.index,
            core: self.ctx.core,
            addr: self.ctx.addr,
            partitions: (0..self.ctx.protocol.partitions as u16)
                .filter(|p| *p as usize % self.ctx.shards == self.ctx.index)
                .collect(),
            command_queue: queue,
            peer_links: self
                .host
                .shard()
                .peer_links()
                .into_iter()
                .map(|(id, e, l)| (id.to_string(), e, l))
                .collect(),
            stats: self.host.shard().stats(),
            topics: self.deliveries.topics.series(),
            io: {
                let mut io = self.io;
                add_host_stats(&mut io, &self.host.stats());
                let l = self.limiter.stats();
                io.rate_limited = l.limited;
                io.rate_limit_evictions = l.evictions;
                io.rate_limit_peers = l.peers;
                io.shed_ihave += self.overload.stats.ihave;
                io.shed_anti_entropy += self.overload.stats.anti_entropy;
                io.overloaded = self.overload.stats.overloaded;
                io
            },
            hops: self.deliveries.hops.clone(),
            loops: self.loops.iter().map(|h| loop_info(&h.status())).collect(),
            tasks: self
                .tracker
                .as_ref()
                .map(|t| t.counters())
                .unwrap_or_default(),
            task_names: self
                .tracker
                .as_ref()
                .map(|t| t.by_name())
                .unwrap_or_default(),
        }
    }
}

/// The host's counters, exported with the shard's I/O counters (send errors add up
/// with the socket's; the host counts the anti-entropy frames it shed, the
/// executor the rounds it skipped).
fn add_host_stats(io: &mut IoStats, h: &HostStats) {
    io.send_errors += h.send_errors;
    io.unknown_senders += h.unknown_senders;
    io.ihave_unknown_sender += h.ihave_unknown_sender;
    io.wire_v1_datagrams += h.wire_v1_datagrams;
    io.wire_v1_untracked += h.wire_v1_untracked;
    io.topics_downgraded += h.topics_downgraded;
    io.shed_ihave += h.shed_ihave;
    io.shed_anti_entropy += h.shed_anti_entropy;
}
