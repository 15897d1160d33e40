//! Filling the views the paper's rules leave short: splices and introductions.
//!
//! The paper's rules can leave views short for good: when the only nodes with room
//! are already linked to each other (two short nodes side by side, or one node short
//! by two), every other node is full and refuses low-priority requests, and nothing
//! else changes. Every view could still fill whenever the total room is even, by
//! rewiring one link elsewhere. So a node short for [`SPLICE_AFTER_ROUNDS`]
//! heartbeat rounds asks a full passive node C known alive (it refused us lately, or
//! spoke within the failure timeout) to *splice* it in: C picks a neighbour D and
//! offers it the swap (another, up to [`SPLICE_OFFERS`], if D refuses or is silent);
//! D, if not linked to the partner yet, drops C and asks the partner; C then drops D
//! and accepts the requester. Link C–D becomes C–requester and D–partner: both short nodes gain a link and C, D keep their
//! degree. The partner is the requester itself when it is short by two, else a
//! neighbour that said in its Heartbeat that it is short too (the lower id of the
//! pair starts, so the two do not both splice). A node short by one with no short
//! neighbour never splices, so when the total room is odd the last short view stays
//! short instead of the links churning for ever.
//!
//! Two short nodes that are not linked pair up through any common neighbour: a node
//! whose heartbeats show two short neighbours tells the lower-id one about the other
//! ([`Message::Introduce`], one per heartbeat round), which asks it at once. Without
//! it they wait until shuffles put each in the other's passive view, which in a small
//! cluster whose passive views were emptied by a crash took up to a second.

use rand::seq::SliceRandom;

use super::state::{Ask, Membership, SpliceJob};
use crate::ids::NodeId;
use crate::membership::event::{Message, Time, Timer};

/// Heartbeat rounds a view must stay short before the node asks for a splice: long
/// enough for the ordinary repair (promotion, resent requests) to have had its turn.
pub const SPLICE_AFTER_ROUNDS: u32 = 2;

/// Neighbours a full node offers one splice to before it refuses the requester (an
/// offer fails when that neighbour is already linked to the partner).
pub const SPLICE_OFFERS: usize = 3;

impl Membership {
    /// A short node asks this one to splice it in (see the module documentation).
    pub(super) fn on_splice(&mut self, now: Time, from: NodeId, partner: NodeId) {
        if self.is_active(from) || self.active.len() < self.cfg.active_view {
            // Already linked, or room after all: an ordinary acceptance.
            self.on_neighbor(now, from, false);
            return;
        }
        if self.splicing.is_some() || partner == self.me {
            self.send(now, from, Message::NeighborReply { accepted: false });
            return;
        }
        self.splicing = Some(SpliceJob {
            requester: from,
            partner,
            via: from,
            offered: Vec::new(),
            gen: 0,
        });
        self.offer_splice(now);
    }

    /// Offers the splice under way to one more neighbour, or, when
    /// [`SPLICE_OFFERS`] were tried or none is left, gives up and refuses the requester.
    fn offer_splice(&mut self, now: Time) {
        let Some(mut job) = self.splicing.take() else {
            return;
        };
        let mut except = vec![job.requester, job.partner];
        except.extend_from_slice(&job.offered);
        let via = if job.offered.len() < SPLICE_OFFERS {
            self.random_active_except(&except)
        } else {
            None
        };
        let Some(via) = via else {
            self.send(
                now,
                job.requester,
                Message::NeighborReply { accepted: false },
            );
            return;
        };
        job.gen = self.gen();
        job.via = via;
        job.offered.push(via);
        let (gen, partner) = (job.gen, job.partner);
        self.splicing = Some(job);
        self.send(now, via, Message::SpliceOffer { new: partner });
        self.set_timer(now + self.cfg.probe_timeout, Timer::SpliceDeadline { gen });
    }

    /// The neighbour offered the splice under way stayed silent: offer another.
    pub(super) fn on_splice_deadline(&mut self, now: Time, gen: u64) {
        if self.splicing.as_ref().is_some_and(|j| j.gen == gen) {
            self.offer_splice(now);
        }
    }

    /// A neighbour in the middle of a splice offers to swap our link for one to `new`:
    /// taken only if `new` is not linked to us (only we can tell) nor already asked.
    pub(super) fn on_splice_offer(&mut self, now: Time, from: NodeId, new: NodeId) {
        let ok = new != self.me && !self.is_active(new) && !self.pending.contains_key(&new);
        let Some(i) = self.index_of(from).filter(|_| ok) else {
            self.send(now, from, Message::SpliceReply { accepted: false });
            return;
        };
        self.remove_active_at(i);
        self.add_passive(from);
        self.send(now, from, Message::SpliceReply { accepted: true });
        self.send_neighbor(now, new, Ask::First);
    }

    /// The neighbour offered a splice answered: finish it (drop that neighbour, accept
    /// the requester) or offer it to another neighbour.
    pub(super) fn on_splice_reply(&mut self, now: Time, from: NodeId, accepted: bool) {
        if self.splicing.as_ref().is_none_or(|j| j.via != from) {
            return;
        }
        if !accepted {
            self.offer_splice(now);
            return;
        }
        let Some(job) = self.splicing.take() else {
            return;
        };
        if let Some(i) = self.index_of(from) {
            self.remove_active_at(i);
            self.add_passive(from);
        }
        self.add_active(now, job.requester);
        self.send(
            now,
            job.requester,
            Message::NeighborReply { accepted: true },
        );
        self.stats.splices += 1;
    }

    /// Counts heartbeat rounds the view stayed short; after [`SPLICE_AFTER_ROUNDS`]
    /// asks for a splice.
    pub(super) fn splice_if_stuck(&mut self, now: Time) {
        if self.active.len() >= self.cfg.active_view {
            self.short_rounds = 0;
            return;
        }
        self.short_rounds += 1;
        if self.short_rounds >= SPLICE_AFTER_ROUNDS {
            self.try_splice(now);
        }
    }

    /// Asks a full passive node to splice this node in, if there is a partner: this
    /// node when short by two or more, else a short neighbour with a higher id (so
    /// only one of the pair asks). Only passive nodes known alive are asked (they
    /// refused a request since the last round, or spoke within the failure timeout);
    /// each at most once per round.
    pub(super) fn try_splice(&mut self, now: Time) {
        let room = self.cfg.active_view.saturating_sub(self.active.len());
        if room == 0
            || self.active.is_empty()
            || self.pending.values().any(|&(_, a)| a == Ask::Splice)
        {
            return;
        }
        let partner = if room >= 2 {
            Some(self.me)
        } else {
            let me = self.me;
            let shorts: Vec<NodeId> = self
                .active
                .iter()
                .zip(&self.live)
                .filter(|(&n, l)| l.short && n > me)
                .map(|(&n, _)| n)
                .collect();
            shorts.choose(&mut self.rng).copied()
        };
        let Some(partner) = partner else {
            return;
        };
        // Only passive nodes known alive: those that just refused us (full, exactly
        // what a splice needs) or spoke lately (one with room simply accepts). A dead
        // node would hold the splice up for its whole deadline.
        let horizon = self.cfg.failure_timeout;
        let candidates: Vec<NodeId> = self
            .passive
            .iter()
            .copied()
            .filter(|n| {
                *n != partner
                    && (self.refused.contains(n)
                        || self
                            .heard
                            .get(n)
                            .is_some_and(|&at| now.saturating_sub(at) < horizon))
                    && !self.pending.contains_key(n)
                    && !self.splice_tried.contains(n)
            })
            .collect();
        let Some(&target) = candidates.choose(&mut self.rng) else {
            return;
        };
        self.splice_tried.push(target);
        let gen = self.gen();
        self.pending.insert(target, (gen, Ask::Splice));
        self.send(now, target, Message::Splice { partner });
        // The target may offer the swap to several neighbours, one after another.
        let wait = self.cfg.probe_timeout * (1 + SPLICE_OFFERS as u32);
        self.set_timer(now + wait, Timer::NeighborDeadline { peer: target, gen });
    }

    /// A neighbour says `node` is short too: ask it, if we still have room.
    pub(super) fn on_introduce(&mut self, now: Time, node: NodeId) {
        if self.active.len() < self.cfg.active_view
            && node != self.me
            && !self.is_active(node)
            && !self.pending.contains_key(&node)
        {
            self.send_neighbor(now, node, Ask::First);
        }
    }

    /// Tells one of two short neighbours (the lower id) about the other. They may be
    /// linked already (then it is ignored, and a splice is what they need).
    pub(super) fn introduce_short_neighbours(&mut self, now: Time) {
        let mut shorts: Vec<NodeId> = self
            .active
            .iter()
            .zip(&self.live)
            .filter(|(_, l)| l.short)
            .map(|(&n, _)| n)
            .collect();
        if shorts.len() < 2 {
            return;
        }
        shorts.shuffle(&mut self.rng);
        let (a, b) = (shorts[0].min(shorts[1]), shorts[0].max(shorts[1]));
        self.stats.introductions += 1;
        self.send(now, a, Message::Introduce { node: b });
    }
}
