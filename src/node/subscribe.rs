//! Library subscriptions: what an embedding program receives from
//! [`super::embed::Node::subscribe`]. The deliveries thread hands every event to every
//! subscription over a bounded channel of its own with `try_send`, so a slow
//! subscriber never holds up a shard, the file or another subscriber. What a full
//! channel cannot take is counted and arrives as one [`Event::Lagged`] in its place,
//! before the next event that fits: a subscriber always learns how much it missed.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::client::subject::Filter;
use crate::ids::{MessageId, NodeId};
use crate::topic::Topic;

/// Events one subscription can hold before further ones are counted as missed.
pub const SUBSCRIPTION_CAPACITY: usize = 65536;

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message delivered by this node (its own broadcasts included, with 0 hops).
    Message {
        id: MessageId,
        origin: NodeId,
        /// Hops it travelled to reach this node.
        hops: u16,
        /// Its subject (`default` when published without one).
        topic: Topic,
        payload: Bytes,
    },
    /// `missed` events in a row did not reach this subscription: its channel was
    /// full, or the node's delivery queue was (then every subscriber is told).
    Lagged { missed: u64 },
    /// This node announced message `id` (an IHave) but no neighbour sent it after
    /// every graft retry: it will not be delivered here unless anti-entropy finds it.
    GraftFailed { id: MessageId },
    /// `missed` messages of `origin` will never be delivered here: they were lost
    /// (a partition, datagram loss) and expired from every cache before anything
    /// could fill the hole. Counted only below a message this node delivered.
    Gap { origin: NodeId, missed: u64 },
}

/// A stream of [`Event`]s. Dropping it unsubscribes. Iterating blocks until the next
/// event and ends when the node shuts down.
///
/// To drive it from an event loop (tokio, glommio, epoll) instead of a thread, poll
/// the file descriptor of [`Subscription::readiness`] for readability and call
/// [`Subscription::try_next`] until it returns `None`.
#[derive(Debug)]
pub struct Subscription {
    rx: Receiver<Event>,
    ready: Arc<OnceLock<Readiness>>,
}

/// An eventfd that is readable while its subscription may have events waiting.
#[derive(Debug)]
pub struct Readiness {
    fd: OwnedFd,
}

impl Readiness {
    fn new() -> std::io::Result<Readiness> {
        // SAFETY: eventfd takes no pointers; a negative return is an error, else a
        // fresh descriptor this value now owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        Ok(Readiness {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Makes the descriptor readable (the writer side, after a send).
    fn signal(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live local buffer to a descriptor we own; a
        // full counter (EAGAIN) already means readable, so the result is ignored.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr().cast(), 8) };
    }

    /// Makes it unreadable again (the reader side, before re-checking the queue).
    fn clear(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live local buffer from a descriptor
        // we own; EAGAIN (already clear) is fine.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
    }
}

impl AsRawFd for Readiness {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Subscription {
    /// The next event if one waits now, without blocking; for readiness-driven
    /// readers (see [`Subscription::readiness`]): once it returns `None` the
    /// descriptor is clear, and becomes readable again with the next event.
    pub fn try_next(&self) -> Option<Event> {
        if let Ok(e) = self.rx.try_recv() {
            return Some(e);
        }
        // Clear, then look again: an event sent before the clear is seen here, one
        // sent after it signals again.
        if let Some(r) = self.ready.get() {
            r.clear();
        }
        self.rx.try_recv().ok()
    }

    /// A file descriptor (an eventfd) readable while events may be waiting, for
    /// `AsyncFd` (tokio), glommio or epoll. Created on first use; events already
    /// queued make it readable at once.
    pub fn readiness(&self) -> std::io::Result<&Readiness> {
        if self.ready.get().is_none() {
            let r = Readiness::new()?;
            if !self.rx.is_empty() {
                r.signal();
            }
            let _ = self.ready.set(r);
        }
        self.ready
            .get()
            .ok_or_else(|| std::io::Error::other("readiness handle unavailable"))
    }

    /// The next event, waiting for it; `None` once the node has shut down and every
    /// event was read.
    pub fn recv(&self) -> Option<Event> {
        self.rx.recv().ok()
    }

    /// The next event if one waits now.
    pub fn try_recv(&self) -> Option<Event> {
        self.rx.try_recv().ok()
    }

    /// The next event, waiting at most `timeout`; `None` on timeout or after shutdown.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Event> {
        self.rx.recv_timeout(timeout).ok()
    }
}

impl Default for Subscribers {
    fn default() -> Self {
        Subscribers::with_capacity(SUBSCRIPTION_CAPACITY)
    }
}

impl Iterator for Subscription {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        self.recv()
    }
}

/// One subscription as the deliveries thread sees it.
#[derive(Debug)]
struct Subscriber {
    tx: Sender<Event>,
    /// Events not taken since the last one that was, to report as `Lagged`.
    missed: u64,
    /// Only messages whose topic matches (everything else still reaches it).
    filter: Option<Filter>,
    /// The reader's readiness descriptor, once it asked for one.
    ready: Arc<OnceLock<Readiness>>,
}

impl Subscriber {
    /// Hands `e` over, first the `Lagged` it owes; false once the subscription is
    /// gone. Counts what does not fit into `missed` and `lagged`.
    fn offer(&mut self, e: &Event, lagged: &AtomicU64) -> bool {
        if let (Some(f), Event::Message { topic, .. }) = (&self.filter, e) {
            if !f.matches(topic.as_str()) {
                return true;
            }
        }
        let sent = self.send(e, lagged);
        if let Some(r) = self.ready.get() {
            r.signal();
        }
        sent
    }

    fn send(&mut self, e: &Event, lagged: &AtomicU64) -> bool {
        if self.missed > 0 {
            match self.tx.try_send(Event::Lagged {
                missed: self.missed,
            }) {
                Ok(()) => self.missed = 0,
                Err(TrySendError::Full(_)) => {
                    self.missed += 1;
                    lagged.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
        match self.tx.try_send(e.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.missed += 1;
                lagged.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Every live subscription; shared by the node handle (which adds) and the deliveries
/// thread (which feeds them and drops the ones whose [`Subscription`] was dropped).
#[derive(Debug, Clone)]
pub struct Subscribers {
    list: Arc<Mutex<Vec<Subscriber>>>,
    /// Events counted as missed by some subscription
    /// (`plumtree_subscriber_lagged_total`).
    lagged: Arc<AtomicU64>,
    /// Subscriptions alive after the last event (`plumtree_subscribers`).
    count: Arc<AtomicU64>,
    capacity: usize,
}

impl Subscribers {
    /// Subscriptions of `capacity` events each (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        Subscribers {
            list: Arc::default(),
            lagged: Arc::default(),
            count: Arc::default(),
            capacity: capacity.max(1),
        }
    }

    /// A new subscription; it sees every event from now on.
    pub fn subscribe(&self) -> Subscription {
        self.subscribe_with_capacity(self.capacity)
    }

    /// A new subscription holding at most `capacity` unread events (at least 1).
    pub fn subscribe_with_capacity(&self, capacity: usize) -> Subscription {
        self.subscribe_filtered(None, capacity)
    }

    /// A subscription to the messages whose topic matches `filter` (all of them for
    /// `None`), plus every non-message event, holding at most `capacity` unread.
    pub fn subscribe_filtered(&self, filter: Option<Filter>, capacity: usize) -> Subscription {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let ready = Arc::new(OnceLock::new());
        let mut l = self.lock();
        l.push(Subscriber {
            tx,
            missed: 0,
            filter,
            ready: ready.clone(),
        });
        self.count.store(l.len() as u64, Ordering::Relaxed);
        Subscription { rx, ready }
    }

    /// Hands `e` to every subscription (never waits).
    pub fn publish(&self, e: &Event) {
        let mut l = self.lock();
        if l.is_empty() {
            return;
        }
        l.retain_mut(|s| s.offer(e, &self.lagged));
        self.count.store(l.len() as u64, Ordering::Relaxed);
    }

    /// `missed` events never reached the deliveries thread: every subscription owes
    /// its reader a `Lagged` for them.
    pub fn missed_by_all(&self, missed: u64) {
        let mut l = self.lock();
        for s in l.iter_mut() {
            s.missed += missed;
        }
        self.lagged
            .fetch_add(missed * l.len() as u64, Ordering::Relaxed);
    }

    /// Whether anyone subscribed (so events are worth building).
    pub fn any(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    /// Events counted as missed, over every subscription so far.
    pub fn lagged(&self) -> u64 {
        self.lagged.load(Ordering::Relaxed)
    }

    /// Subscriptions alive.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Ends every subscription (their readers see the end once drained).
    pub fn close(&self) {
        self.lock().clear();
        self.count.store(0, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64) -> Event {
        Event::Message {
            id: MessageId {
                origin: NodeId(7),
                seq,
            },
            origin: NodeId(7),
            hops: 1,
            topic: Topic::default(),
            payload: Bytes::from_static(b"x"),
        }
    }

    #[test]
    fn a_full_subscription_is_told_exactly_how_much_it_missed_and_others_are_not_held_up() {
        let subs = Subscribers::with_capacity(4);
        let slow = subs.subscribe();
        let fast = subs.subscribe();
        for seq in 0..10 {
            subs.publish(&msg(seq));
            // The fast reader keeps up.
            assert_eq!(fast.try_recv(), Some(msg(seq)));
        }
        // The slow one holds 4; the other 6 are owed as one Lagged.
        let got: Vec<Event> = std::iter::from_fn(|| slow.try_recv()).collect();
        assert_eq!(got, (0..4).map(msg).collect::<Vec<_>>());
        subs.publish(&msg(10));
        assert_eq!(slow.try_recv(), Some(Event::Lagged { missed: 6 }));
        assert_eq!(slow.try_recv(), Some(msg(10)));
        assert_eq!(slow.try_recv(), None);
        assert_eq!(subs.lagged(), 6);
    }

    #[test]
    fn losses_before_the_deliveries_thread_reach_every_subscriber_as_lagged() {
        let subs = Subscribers::with_capacity(16);
        let a = subs.subscribe();
        let b = subs.subscribe();
        subs.missed_by_all(3);
        subs.publish(&msg(1));
        for s in [&a, &b] {
            assert_eq!(s.try_recv(), Some(Event::Lagged { missed: 3 }));
            assert_eq!(s.try_recv(), Some(msg(1)));
        }
        assert_eq!(subs.lagged(), 6);
    }

    #[test]
    fn a_dropped_subscription_is_forgotten_and_close_ends_the_rest() {
        let subs = Subscribers::with_capacity(4);
        let a = subs.subscribe();
        let b = subs.subscribe();
        assert_eq!(subs.count(), 2);
        drop(a);
        subs.publish(&msg(1));
        assert_eq!(subs.count(), 1);
        subs.close();
        assert_eq!(b.recv(), Some(msg(1)));
        assert_eq!(b.recv(), None, "the stream ends after close");
    }
}
