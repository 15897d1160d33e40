//! The lost list: nodes found dead, kept out of the passive view and probed in case
//! it was a partition.
//!
//! A node this one found dead (a neighbour that failed its probe, a passive node
//! that never answered twice) goes on a bounded *lost* list (`passive_view` entries,
//! the oldest forgotten first). Shuffles do not bring a lost node back into the
//! passive view: other nodes keep gossiping a crashed node's id for a long time, and
//! asking it again costs a `probe_timeout` each time (after four of twelve nodes
//! crashed, a third of every shuffle named a dead node). Lost nodes are sent a Probe
//! with a doubling wait (`join_retry` up to `lost_probe_max`), because "dead" may be
//! a partition: during one each side forgets the other entirely, and once it heals
//! nothing else would bring them together (views refill from their own side,
//! shuffles never cross). Any message from a lost node (its Disconnect answering the
//! probe, or anything else) revives it; unless it is a neighbour again, this node
//! joins through it (a contact accepts a Join even with a full view, and the walks go
//! into its side), at most once per `shuffle_interval`, so a heal costs a few Joins,
//! not one per lost node.

use super::state::{Lost, Membership};
use crate::ids::NodeId;
use crate::membership::event::{Message, Time, Timer};

impl Membership {
    /// Puts `peer` on the lost list (see the module documentation) and arms its first
    /// probe; the oldest entry is forgotten when the list is full.
    pub(in crate::membership) fn lose(&mut self, now: Time, peer: NodeId) {
        if peer == self.me || self.is_active(peer) || self.lost.iter().any(|l| l.id == peer) {
            return;
        }
        if self.lost.len() >= self.cfg.passive_view {
            if let Some(i) = (0..self.lost.len()).min_by_key(|&i| self.lost[i].since) {
                self.lost.swap_remove(i);
                self.stats.lost_evictions += 1;
            }
        }
        let gen = self.gen();
        let retry = self.cfg.join_retry;
        self.lost.push(Lost {
            id: peer,
            since: now,
            backoff: retry,
            gen,
        });
        self.set_timer(now + retry, Timer::LostProbe { peer, gen });
    }

    /// A lost node's probe is due: send it and arm the next, a doubled wait later.
    pub(super) fn probe_lost(&mut self, now: Time, peer: NodeId, gen: u64) {
        let Some(i) = self.lost.iter().position(|l| l.id == peer && l.gen == gen) else {
            return;
        };
        let next = self.gen();
        let wait = self.lost[i].backoff;
        self.lost[i].gen = next;
        self.lost[i].backoff = (wait * 2).min(self.cfg.lost_probe_max);
        self.stats.lost_probes_sent += 1;
        self.send(now, peer, Message::Probe);
        self.set_timer(now + wait, Timer::LostProbe { peer, gen: next });
    }

    /// `from` just sent us something: if it was lost, it is reachable again. Unless it
    /// is a neighbour again, join through it (at most once a shuffle period; otherwise
    /// it is probed again a shuffle period later, by when the last rejoin may have
    /// linked the sides). Being in the passive view does not count: with full active
    /// views nobody asks a passive node, so after a partition one side's passive views
    /// can name the other side for ever without linking to it.
    pub(super) fn revive(&mut self, now: Time, from: NodeId) {
        let Some(i) = self.lost.iter().position(|l| l.id == from) else {
            return;
        };
        self.stats.lost_revived += 1;
        if self.is_active(from) {
            self.lost.swap_remove(i);
            return;
        }
        let quiet = self.cfg.shuffle_interval;
        if self.last_rejoin.is_some_and(|t| now < t + quiet) {
            let gen = self.gen();
            self.lost[i].gen = gen;
            self.lost[i].backoff = self.cfg.join_retry;
            self.set_timer(now + quiet, Timer::LostProbe { peer: from, gen });
            return;
        }
        self.lost.swap_remove(i);
        self.last_rejoin = Some(now);
        self.stats.lost_rejoins += 1;
        // Through it first; the seeds stay for retries.
        let mut through = vec![from];
        through.extend(self.seeds.iter().copied().filter(|&s| s != from));
        self.start_joining_through(now, through);
    }
}
