//! Library subscriptions: what an embedding program receives from
//! [`super::embed::Node::subscribe`]. The deliveries thread appends every event to
//! the node's delivery log ([`super::retention`]) and never waits; each subscription
//! is a cursor into it. A slow subscriber holds up no shard, file or other
//! subscriber: one that falls more than its capacity behind the newest event, or past
//! the log's retention, is told exactly how many events it missed
//! ([`Event::Lagged`]) and goes on from there.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::retention::{Read, RetentionLog};
use crate::client::subject::Filter;
use crate::ids::{MessageId, NodeId};
use crate::topic::Topic;

/// Events a subscription may fall behind the newest one before the older ones are
/// counted as missed.
pub const SUBSCRIPTION_CAPACITY: usize = 65536;

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message delivered by this node (its own broadcasts included, with 0 hops).
    Message {
        /// The message's id.
        id: MessageId,
        /// The node that broadcast it.
        origin: NodeId,
        /// Hops it travelled to reach this node.
        hops: u16,
        /// Its subject (`default` when published without one).
        topic: Topic,
        /// Its payload.
        payload: Bytes,
    },
    /// `missed` events in a row did not reach this subscription: its channel was
    /// full, or the node's delivery queue was (then every subscriber is told).
    Lagged {
        /// How many events were missed.
        missed: u64,
    },
    /// This node announced message `id` (an IHave) but no neighbour sent it after
    /// every graft retry: it will not be delivered here unless anti-entropy finds it.
    GraftFailed {
        /// The id announced.
        id: MessageId,
    },
    /// `missed` messages of `origin` will never be delivered here: they were lost
    /// (a partition, datagram loss) and expired from every cache before anything
    /// could fill the hole. Counted only below a message this node delivered.
    Gap {
        /// The node whose messages are lost.
        origin: NodeId,
        /// How many of them.
        missed: u64,
    },
}

/// A stream of [`Event`]s. Dropping it unsubscribes. Iterating blocks until the next
/// event and ends when the node shuts down.
///
/// To drive it from an event loop (tokio, glommio, epoll) instead of a thread, poll
/// the file descriptor of [`Subscription::readiness`] for readability and call
/// [`Subscription::try_next`] until it returns `None`.
#[derive(Debug)]
pub struct Subscription {
    hub: Subscribers,
    state: Mutex<Cursor>,
    filter: Option<Filter>,
    capacity: u64,
    ready: OnceLock<Arc<Readiness>>,
}

/// Where a subscription is in the log, and what it read ahead.
#[derive(Debug)]
struct Cursor {
    next: u64,
    buf: VecDeque<Event>,
}

/// Entries a subscription takes from the log per lock.
const READ_BATCH: usize = 256;

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
    /// Fills the read-ahead buffer from the log, waiting at most `wait`; false when
    /// the log is closed and read to the end.
    fn fill(&self, c: &mut Cursor, wait: Duration) -> bool {
        let log = &self.hub.log;
        // More than `capacity` behind the newest event: skip to it, counted.
        let end = log.end();
        if end.saturating_sub(c.next) > self.capacity {
            let missed = end - self.capacity - c.next;
            c.next = end - self.capacity;
            self.lagged(c, missed);
            return true;
        }
        let mut out = Vec::with_capacity(READ_BATCH);
        match log.read(&mut c.next, READ_BATCH, wait, &mut out) {
            Read::Entries => {
                for e in out {
                    let wanted = match (&self.filter, &e) {
                        (Some(f), Event::Message { topic, .. }) => f.matches(topic.as_str()),
                        _ => true,
                    };
                    if wanted {
                        c.buf.push_back(e);
                    }
                }
                true
            }
            Read::Lagged(n) => {
                self.lagged(c, n);
                true
            }
            Read::Idle => true,
            Read::Closed => false,
        }
    }

    fn lagged(&self, c: &mut Cursor, missed: u64) {
        self.hub.lagged.fetch_add(missed, Ordering::Relaxed);
        c.buf.push_back(Event::Lagged { missed });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cursor> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads what the log already holds past the cursor until something passes the
    /// filter or the cursor is at the end; false when the log is closed and read.
    fn catch_up(&self, c: &mut Cursor) -> bool {
        while c.buf.is_empty() && c.next < self.hub.log.end() {
            if !self.fill(c, Duration::ZERO) {
                return false;
            }
        }
        true
    }

    /// The next event, waiting up to `timeout` (`None`: forever).
    fn next_within(&self, timeout: Option<Duration>) -> Option<Event> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut c = self.lock();
        loop {
            if !self.catch_up(&mut c) && c.buf.is_empty() {
                return None;
            }
            if let Some(e) = c.buf.pop_front() {
                return Some(e);
            }
            // Caught up: wait for the next append.
            let wait = match deadline {
                None => Duration::from_secs(1),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    d - now
                }
            };
            if !self.fill(&mut c, wait) && c.buf.is_empty() {
                return None;
            }
        }
    }

    /// The next event, waiting for it; `None` once the node has shut down and every
    /// event was read.
    pub fn recv(&self) -> Option<Event> {
        self.next_within(None)
    }

    /// The next event if one waits now.
    pub fn try_recv(&self) -> Option<Event> {
        self.next_within(Some(Duration::ZERO))
    }

    /// The next event, waiting at most `timeout`; `None` on timeout or after shutdown.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Event> {
        self.next_within(Some(timeout))
    }

    /// The next event if one waits now, without blocking; for readiness-driven
    /// readers (see [`Subscription::readiness`]): once it returns `None` the
    /// descriptor is clear, and becomes readable again with the next event.
    pub fn try_next(&self) -> Option<Event> {
        if let Some(e) = self.try_recv() {
            return Some(e);
        }
        // Clear, then look again: an event appended before the clear is seen here,
        // one appended after it signals again.
        if let Some(r) = self.ready.get() {
            r.clear();
        }
        self.try_recv()
    }

    /// A file descriptor (an eventfd) readable while events may be waiting, for
    /// `AsyncFd` (tokio), glommio or epoll. Created on first use; events already
    /// waiting make it readable at once.
    pub fn readiness(&self) -> std::io::Result<&Readiness> {
        if self.ready.get().is_none() {
            let r = Arc::new(Readiness::new()?);
            self.hub.watch(&r);
            let behind = {
                let mut c = self.lock();
                self.catch_up(&mut c);
                !c.buf.is_empty()
            };
            if behind {
                r.signal();
            }
            let _ = self.ready.set(r);
        }
        self.ready
            .get()
            .map(|r| &**r)
            .ok_or_else(|| std::io::Error::other("readiness handle unavailable"))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.count.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Iterator for Subscription {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        self.recv()
    }
}

/// The node's subscriptions: the delivery log they read, shared by the node handle
/// (which subscribes) and the deliveries thread (which appends).
#[derive(Debug, Clone)]
pub struct Subscribers {
    log: Arc<RetentionLog<Event>>,
    /// Events counted as missed by some subscription
    /// (`plumtree_subscriber_lagged_total`).
    lagged: Arc<AtomicU64>,
    /// Subscriptions alive (`plumtree_subscribers`).
    count: Arc<AtomicU64>,
    /// Readiness descriptors to signal on each append.
    watchers: Arc<Mutex<Vec<Weak<Readiness>>>>,
    capacity: usize,
}

impl Default for Subscribers {
    fn default() -> Self {
        Subscribers::with_capacity(SUBSCRIPTION_CAPACITY)
    }
}

/// Bytes an event is counted for in the log.
fn event_bytes(e: &Event) -> usize {
    match e {
        Event::Message { topic, payload, .. } => payload.len() + topic.len() + 96,
        _ => 96,
    }
}

impl Subscribers {
    /// Subscriptions that may fall `capacity` events behind (at least 1), over a log
    /// of the default retention (60 s, 256 MiB).
    pub fn with_capacity(capacity: usize) -> Self {
        Self::with_retention(capacity, Duration::from_secs(60), 256 << 20)
    }

    /// Subscriptions over a log keeping events for `retention` within `max_bytes`.
    pub fn with_retention(capacity: usize, retention: Duration, max_bytes: usize) -> Self {
        Subscribers {
            log: Arc::new(RetentionLog::new(retention, max_bytes)),
            lagged: Arc::default(),
            count: Arc::default(),
            watchers: Arc::default(),
            capacity: capacity.max(1),
        }
    }

    /// A new subscription; it sees every event from now on.
    pub fn subscribe(&self) -> Subscription {
        self.subscribe_with_capacity(self.capacity)
    }

    /// A new subscription that may fall `capacity` events behind (at least 1).
    pub fn subscribe_with_capacity(&self, capacity: usize) -> Subscription {
        self.subscribe_filtered(None, capacity)
    }

    /// A subscription to the messages whose topic matches `filter` (all of them for
    /// `None`), plus every non-message event; `capacity` as above.
    pub fn subscribe_filtered(&self, filter: Option<Filter>, capacity: usize) -> Subscription {
        self.count.fetch_add(1, Ordering::Relaxed);
        Subscription {
            hub: self.clone(),
            state: Mutex::new(Cursor {
                next: self.log.end(),
                buf: VecDeque::new(),
            }),
            filter,
            capacity: capacity.max(1) as u64,
            ready: OnceLock::new(),
        }
    }

    /// Appends `e` for every subscription (never waits).
    pub fn publish(&self, e: &Event) {
        if !self.any() {
            return;
        }
        self.log.push(e.clone(), event_bytes(e));
        self.signal();
    }

    /// `missed` events never reached the deliveries thread: every subscription is
    /// told with a `Lagged` in the stream.
    pub fn missed_by_all(&self, missed: u64) {
        let n = self.count();
        if n == 0 {
            return;
        }
        self.log.push(Event::Lagged { missed }, 96);
        self.lagged.fetch_add(missed * n, Ordering::Relaxed);
        self.signal();
    }

    fn watch(&self, r: &Arc<Readiness>) {
        let mut w = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        w.retain(|x| x.strong_count() > 0);
        w.push(Arc::downgrade(r));
    }

    fn signal(&self) {
        let w = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        for r in w.iter().filter_map(Weak::upgrade) {
            r.signal();
        }
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

    /// Ends every subscription (their readers see the end once they read the rest).
    pub fn close(&self) {
        self.log.close();
        self.signal();
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
    fn a_subscriber_that_falls_behind_is_told_exactly_how_much_it_missed() {
        let subs = Subscribers::with_capacity(4);
        let slow = subs.subscribe();
        let fast = subs.subscribe();
        for seq in 0..10 {
            subs.publish(&msg(seq));
            // The fast reader keeps up.
            assert_eq!(fast.try_recv(), Some(msg(seq)));
        }
        // The slow one is 10 behind with room for 4: 6 missed, then the newest 4.
        let got: Vec<Event> = std::iter::from_fn(|| slow.try_recv()).collect();
        let mut want = vec![Event::Lagged { missed: 6 }];
        want.extend((6..10).map(msg));
        assert_eq!(got, want);
        subs.publish(&msg(10));
        assert_eq!(slow.try_recv(), Some(msg(10)));
        assert_eq!(slow.try_recv(), None);
        assert_eq!(subs.lagged(), 6);
    }

    #[test]
    fn a_stalled_subscriber_within_its_capacity_gets_everything_in_order() {
        let subs = Subscribers::with_capacity(1000);
        let s = subs.subscribe();
        for seq in 0..500 {
            subs.publish(&msg(seq));
        }
        let got: Vec<Event> = std::iter::from_fn(|| s.try_recv()).collect();
        assert_eq!(got, (0..500).map(msg).collect::<Vec<_>>());
        assert_eq!(subs.lagged(), 0);
    }

    #[test]
    fn a_subscriber_past_the_retention_is_told_the_exact_count() {
        // About 10 events fit the log's bytes (97 bytes each).
        let subs = Subscribers::with_retention(1 << 20, Duration::from_secs(60), 1000);
        let s = subs.subscribe();
        for seq in 0..30 {
            subs.publish(&msg(seq));
        }
        let got: Vec<Event> = std::iter::from_fn(|| s.try_recv()).collect();
        let Event::Lagged { missed } = got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(missed + got.len() as u64 - 1, 30);
        assert_eq!(got.last(), Some(&msg(29)));
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
    fn filters_pass_only_matching_messages() {
        let subs = Subscribers::with_capacity(16);
        let s = subs.subscribe_filtered(Some(Filter::parse("a.*").unwrap()), 16);
        let on = |t: &str, seq| Event::Message {
            id: MessageId {
                origin: NodeId(7),
                seq,
            },
            origin: NodeId(7),
            hops: 0,
            topic: Topic::new(t).unwrap(),
            payload: Bytes::new(),
        };
        for (seq, t) in ["a.b", "a.b.c", "b.a", "a.x"].iter().enumerate() {
            subs.publish(&on(t, seq as u64));
        }
        subs.publish(&Event::GraftFailed {
            id: MessageId {
                origin: NodeId(1),
                seq: 9,
            },
        });
        let got: Vec<Event> = std::iter::from_fn(|| s.try_recv()).collect();
        assert_eq!(
            got,
            vec![
                on("a.b", 0),
                on("a.x", 3),
                Event::GraftFailed {
                    id: MessageId {
                        origin: NodeId(1),
                        seq: 9
                    }
                }
            ]
        );
    }

    #[test]
    fn a_dropped_subscription_is_forgotten_and_close_ends_the_rest() {
        let subs = Subscribers::with_capacity(4);
        let a = subs.subscribe();
        let b = subs.subscribe();
        assert_eq!(subs.count(), 2);
        drop(a);
        assert_eq!(subs.count(), 1);
        subs.publish(&msg(1));
        subs.close();
        assert_eq!(b.recv(), Some(msg(1)));
        assert_eq!(b.recv(), None, "the stream ends after close");
    }
}
