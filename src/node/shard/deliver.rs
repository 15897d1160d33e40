//! A shard's deliveries: the host's events turned into what the application sees
//! (the sink, which feeds the deliveries file and every subscriber), counted by hop
//! and by topic, with the gap and graft-failure logs kept to a trickle.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, info, warn};

use crate::ids::MessageId;
use crate::node::sink::{Delivery, SinkSender};
use crate::node::topic_counts::TopicCounts;
use crate::protocol::host::HostEvent;
use crate::topic::Topic;

/// Hop histogram buckets (the last one collects the rest).
pub(super) const HOP_BUCKETS: usize = 65;
/// Least time between two "graft gave up" warnings of one shard.
const GRAFT_WARN_EVERY: Duration = Duration::from_secs(10);

/// What one shard delivered, and its rate-limited warnings.
pub(super) struct Deliveries {
    shard: usize,
    /// Deliveries by topic (bounded).
    pub(super) topics: TopicCounts,
    /// Deliveries by hop count.
    pub(super) hops: Vec<u64>,
    /// Graft give-ups since the last warning, and when that warning was logged.
    graft_failed_unlogged: u64,
    last_graft_warn: Option<Instant>,
}

impl Deliveries {
    pub(super) fn new(shard: usize) -> Self {
        Deliveries {
            shard,
            topics: TopicCounts::default(),
            hops: vec![0; HOP_BUCKETS],
            graft_failed_unlogged: 0,
            last_graft_warn: None,
        }
    }

    /// The origin's own broadcast, which its application sees too (hops 0). A full
    /// sink adds to `lagged`.
    pub(super) fn own(
        &mut self,
        id: MessageId,
        topic: Topic,
        payload: Bytes,
        sink: &SinkSender,
        lagged: &mut u64,
    ) {
        self.deliver(id, 0, topic, payload, sink, lagged);
    }

    fn deliver(
        &mut self,
        id: MessageId,
        hops: u16,
        topic: Topic,
        payload: Bytes,
        sink: &SinkSender,
        lagged: &mut u64,
    ) {
        self.hops[(hops as usize).min(HOP_BUCKETS - 1)] += 1;
        self.topics.count(&topic);
        if !sink.try_send(Delivery {
            id,
            hops,
            topic,
            payload,
        }) {
            *lagged += 1;
        }
    }

    /// One event the host produced. A delivery the full sink refused adds to
    /// `lagged`.
    pub(super) fn on_event(&mut self, ev: HostEvent, sink: &SinkSender, lagged: &mut u64) {
        match ev {
            HostEvent::Deliver {
                id,
                round,
                topic,
                payload,
            } => self.deliver(id, round, topic, payload, sink, lagged),
            HostEvent::Gap(gap) => {
                // Counted in plumtree_unrecoverable_total; the deliveries file and
                // every subscriber get it (a full queue reports it as lagged).
                info!(
                    shard = self.shard,
                    origin = %gap.origin,
                    missed = gap.missed,
                    reason = gap.reason.as_str(),
                    "known gap: messages that can no longer be recovered"
                );
                let _ = sink.try_send_gap(gap);
            }
            HostEvent::GraftFailed { id } => {
                // Counted in plumtree_graft_failed_total; a warning at most every
                // GRAFT_WARN_EVERY, with the count since the last one.
                debug!(?id, "graft failed after all retries");
                // Library subscribers hear of it; a full queue is reported to them
                // as lagged.
                let _ = sink.try_send_graft_failed(id);
                self.graft_failed_unlogged += 1;
                if self
                    .last_graft_warn
                    .is_none_or(|t| t.elapsed() >= GRAFT_WARN_EVERY)
                {
                    warn!(
                        shard = self.shard,
                        gave_up = self.graft_failed_unlogged,
                        last = ?id,
                        "missing messages given up after the last graft retry"
                    );
                    self.graft_failed_unlogged = 0;
                    self.last_graft_warn = Some(Instant::now());
                }
            }
        }
    }
}
