//! The delivery log: what this node delivered, kept for a retention time and within a
//! byte bound, so that a reader that stalls (a FIFO nobody reads, a slow disk) keeps
//! its place instead of losing deliveries. One writer appends and never waits; each
//! reader has a cursor. A reader that falls past the retention is told exactly how
//! many entries it missed, then goes on from the oldest one still kept.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What a read brought.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// Entries were appended to the output (and the cursor moved past them).
    Entries,
    /// The reader fell behind: this many entries were dropped before it read them.
    /// The cursor now points at the oldest entry kept.
    Lagged(u64),
    /// Nothing new within the wait.
    Idle,
    /// The log was closed and the reader has read everything.
    Closed,
}

#[derive(Debug)]
struct Inner<T> {
    /// (appended at, bytes, entry), oldest first.
    entries: VecDeque<(Instant, usize, T)>,
    /// Position of `entries[0]`; positions count every entry ever appended.
    first: u64,
    bytes: usize,
    closed: bool,
}

/// A bounded, time-limited log with one writer and cursor-holding readers.
#[derive(Debug)]
pub struct RetentionLog<T> {
    inner: Mutex<Inner<T>>,
    more: Condvar,
    retention: Duration,
    max_bytes: usize,
    gauges: Arc<LogGauges>,
}

/// The log's size and drops, for `/status` and `/metrics` (shared with the node).
#[derive(Debug, Default)]
pub struct LogGauges {
    /// Deliveries the log holds now (`plumtree_delivery_log_entries`).
    pub entries: AtomicU64,
    /// Bytes the log holds now, as it counts them (`plumtree_delivery_log_bytes`).
    pub bytes: AtomicU64,
    /// Entries dropped by age or by the byte bound (read or not).
    pub dropped: AtomicU64,
    /// Entries readers missed (they were told with a lagged count).
    pub lagged: AtomicU64,
}

impl<T: Clone> RetentionLog<T> {
    /// A log keeping entries for `retention` and at most `max_bytes` of them (as
    /// their writer sizes them); at least one entry is always kept.
    pub fn new(retention: Duration, max_bytes: usize) -> Self {
        Self::with_gauges(retention, max_bytes, Arc::default())
    }

    /// [`RetentionLog::new`] reporting into `gauges`.
    pub fn with_gauges(retention: Duration, max_bytes: usize, gauges: Arc<LogGauges>) -> Self {
        RetentionLog {
            inner: Mutex::new(Inner {
                entries: VecDeque::new(),
                first: 0,
                bytes: 0,
                closed: false,
            }),
            more: Condvar::new(),
            retention,
            max_bytes,
            gauges,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `entry` of `bytes`, dropping what is older than the retention or
    /// beyond the byte bound. Never waits for a reader.
    pub fn push(&self, entry: T, bytes: usize) {
        self.push_at(Instant::now(), entry, bytes);
    }

    fn push_at(&self, now: Instant, entry: T, bytes: usize) {
        let mut g = self.lock();
        g.entries.push_back((now, bytes, entry));
        g.bytes += bytes;
        let mut dropped = 0;
        while g.entries.len() > 1 {
            let (at, b, _) = g.entries[0];
            if now.duration_since(at) <= self.retention && g.bytes <= self.max_bytes {
                break;
            }
            g.entries.pop_front();
            g.bytes -= b;
            g.first += 1;
            dropped += 1;
        }
        self.gauges
            .entries
            .store(g.entries.len() as u64, Ordering::Relaxed);
        self.gauges.bytes.store(g.bytes as u64, Ordering::Relaxed);
        drop(g);
        if dropped > 0 {
            self.gauges.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        self.more.notify_all();
    }

    /// No more entries will come; readers see [`Read::Closed`] once they are done.
    pub fn close(&self) {
        self.lock().closed = true;
        self.more.notify_all();
    }

    /// The position the next appended entry gets: a new reader starting here sees
    /// only what comes after it.
    pub fn end(&self) -> u64 {
        let g = self.lock();
        g.first + g.entries.len() as u64
    }

    /// Reads up to `max` entries from `cursor` into `out`, waiting at most `wait`
    /// for one to come.
    pub fn read(&self, cursor: &mut u64, max: usize, wait: Duration, out: &mut Vec<T>) -> Read {
        let deadline = Instant::now() + wait;
        let mut g = self.lock();
        loop {
            if *cursor < g.first {
                let missed = g.first - *cursor;
                *cursor = g.first;
                self.gauges.lagged.fetch_add(missed, Ordering::Relaxed);
                return Read::Lagged(missed);
            }
            let end = g.first + g.entries.len() as u64;
            if *cursor < end {
                let from = (*cursor - g.first) as usize;
                let n = (end - *cursor).min(max.max(1) as u64) as usize;
                out.extend(g.entries.range(from..from + n).map(|(_, _, e)| e.clone()));
                *cursor += n as u64;
                return Read::Entries;
            }
            if g.closed {
                return Read::Closed;
            }
            let now = Instant::now();
            if now >= deadline {
                return Read::Idle;
            }
            g = self
                .more
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Entries and bytes held now, and entries dropped so far.
    pub fn usage(&self) -> (usize, usize, u64) {
        let g = self.lock();
        (
            g.entries.len(),
            g.bytes,
            self.gauges.dropped.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(log: &RetentionLog<u32>, cursor: &mut u64) -> (Vec<u32>, u64) {
        let (mut out, mut lagged) = (Vec::new(), 0);
        loop {
            match log.read(cursor, 3, Duration::ZERO, &mut out) {
                Read::Entries => {}
                Read::Lagged(n) => lagged += n,
                Read::Idle | Read::Closed => return (out, lagged),
            }
        }
    }

    #[test]
    fn a_reader_gets_everything_in_order_exactly_once() {
        let log = RetentionLog::new(Duration::from_secs(60), 1 << 20);
        let mut c = log.end();
        for i in 0..10 {
            log.push(i, 10);
        }
        assert_eq!(read_all(&log, &mut c), ((0..10).collect(), 0));
        log.push(10, 10);
        assert_eq!(read_all(&log, &mut c), (vec![10], 0));
        log.close();
        assert_eq!(
            log.read(&mut c, 1, Duration::ZERO, &mut Vec::new()),
            Read::Closed
        );
    }

    #[test]
    fn a_reader_past_the_byte_bound_is_told_the_exact_count() {
        let log = RetentionLog::new(Duration::from_secs(60), 100);
        let mut c = log.end();
        for i in 0..25 {
            log.push(i, 10);
        }
        // 10 entries fit 100 bytes: 15 were dropped before the reader came back.
        let (got, lagged) = read_all(&log, &mut c);
        assert_eq!(lagged, 15);
        assert_eq!(got, (15..25).collect::<Vec<_>>());
        assert_eq!(got.len() as u64 + lagged, 25);
        assert_eq!(log.usage(), (10, 100, 15));
    }

    #[test]
    fn entries_older_than_the_retention_go_first() {
        let log = RetentionLog::new(Duration::from_secs(10), 1 << 20);
        let mut c = log.end();
        let t0 = Instant::now();
        for i in 0..5 {
            log.push_at(t0, i, 1);
        }
        log.push_at(t0 + Duration::from_secs(11), 5, 1);
        let (got, lagged) = read_all(&log, &mut c);
        assert_eq!((got, lagged), (vec![5], 5));
    }

    #[test]
    fn a_waiting_reader_wakes_for_a_push() {
        let log = Arc::new(RetentionLog::new(Duration::from_secs(60), 1 << 20));
        let mut c = log.end();
        let l2 = log.clone();
        let t = std::thread::spawn(move || {
            let mut out = Vec::new();
            let r = l2.read(&mut c, 10, Duration::from_secs(10), &mut out);
            (r, out)
        });
        std::thread::sleep(Duration::from_millis(50));
        log.push(7u32, 1);
        assert_eq!(t.join().unwrap(), (Read::Entries, vec![7]));
    }
}
