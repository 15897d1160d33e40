//! The deliveries file: one NDJSON line per delivered message, written by a std
//! thread of its own so that a slow disk or a blocked stdout never stalls a shard.
//! Shards hand deliveries over a bounded channel with `try_send`; when it is full the
//! delivery is not written and the shard counts backpressure instead of waiting.
//!
//! Line format: `{"id":"<32 hex>","origin":"<16 hex>","topic":"<subject>","hops":<n>,"payload_b64":"<base64>","t_ns":<n>}`,
//! where `t_ns` is the Unix time in nanoseconds at which the writer took the delivery
//! off the queue (what `plumcore-bench cluster` measures publish-to-delivery latency to),
//! plus `"origin_name":"<name>"` after `origin` when the origin's name is known.
//!
//! Deliveries the shards could not hand over (the queue was full) are never lost
//! silently: before the next line the writer puts `{"lagged":N}` with their count, and
//! every library subscription ([`super::subscribe`]) gets an `Event::Lagged` for them.
//! The same thread feeds the subscriptions, never waiting on one.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use base64::Engine;
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::ids::MessageId;
use crate::protocol::gap::Gap;
use crate::topic::Topic;

use super::retention::{LogGauges, Read, RetentionLog};
use super::snapshot::{id_hex, NameBook};
use super::subscribe::{Event, Subscribers};

/// Deliveries that may wait for the writer before shards see backpressure.
pub const SINK_CAPACITY: usize = 65536;

/// One delivered message, as a shard hands it to the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The message's id.
    pub id: MessageId,
    /// Hops the message travelled to reach this node (0 for its own broadcasts).
    pub hops: u16,
    /// The message's topic.
    pub topic: Topic,
    /// The message's payload.
    pub payload: Bytes,
}

/// What shards hand the deliveries thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkEvent {
    /// A message delivered here: a file line and an `Event::Message`.
    Delivery(Delivery),
    /// A graft gave up (for library subscribers only; the file holds deliveries).
    GraftFailed(MessageId),
    /// Messages declared unrecoverable: a `{"gap":...}` line and an `Event::Gap`.
    Gap(Gap),
}

/// The shards' handle on the sink: cheap to clone, one per shard. Never blocks.
#[derive(Debug, Clone)]
pub struct SinkSender {
    /// `None` when deliveries are only counted, not written.
    tx: Option<Sender<SinkEvent>>,
    /// Events refused because the queue was full; the writer reports them as lagged.
    dropped: Arc<AtomicU64>,
    /// The subscriptions the writer feeds, if any.
    subscribers: Option<Subscribers>,
    /// Whether the writer has a file: without one (and with nobody subscribed) an
    /// event has no reader, and is dropped here instead of crossing to the thread.
    file: bool,
}

impl SinkSender {
    /// Hands `d` to the writer; `false` when its queue is full (the delivery is then
    /// not written, the writer reports it as lagged and the caller counts
    /// backpressure). With no target configured the delivery is discarded and this
    /// returns `true`. A stopped sink also discards.
    pub fn try_send(&self, d: Delivery) -> bool {
        self.offer(SinkEvent::Delivery(d))
    }

    /// Tells the subscribers that a graft for `id` gave up (see
    /// [`SinkSender::try_send`]).
    pub fn try_send_graft_failed(&self, id: MessageId) -> bool {
        self.offer(SinkEvent::GraftFailed(id))
    }

    /// Tells the file and the subscribers that messages of an origin will never be
    /// delivered here (see [`SinkSender::try_send`]).
    pub fn try_send_gap(&self, gap: Gap) -> bool {
        self.offer(SinkEvent::Gap(gap))
    }

    /// The library subscriptions this sink feeds, if any.
    pub fn subscribers(&self) -> Option<&Subscribers> {
        self.subscribers.as_ref()
    }

    fn offer(&self, e: SinkEvent) -> bool {
        let subscribed = self.subscribers.as_ref().is_some_and(Subscribers::any);
        let wanted = match e {
            SinkEvent::Delivery(_) | SinkEvent::Gap(_) => self.file || subscribed,
            SinkEvent::GraftFailed(_) => subscribed,
        };
        if !wanted {
            return true;
        }
        match &self.tx {
            None => true,
            Some(tx) => match tx.try_send(e) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => true,
                Err(TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    false
                }
            },
        }
    }

    /// Whether deliveries are written anywhere; shards may skip building a
    /// [`Delivery`] (and cloning its payload) when they are not.
    pub fn is_active(&self) -> bool {
        self.tx.is_some()
    }
}

/// The writer thread; [`DeliverySink::stop`] (or dropping it) drains what is queued,
/// flushes and joins.
#[derive(Debug)]
pub struct DeliverySink {
    stop_tx: Option<Sender<()>>,
    handle: Option<JoinHandle<()>>,
    /// Writes the file from `log`.
    file_thread: Option<JoinHandle<()>>,
    log: Option<Arc<RetentionLog<FileLine>>>,
    written: Arc<AtomicU64>,
}

/// How long, and within how many bytes, the deliveries file's log keeps what the
/// file's reader has not taken yet.
#[derive(Debug, Clone)]
pub struct Retention {
    /// How long the log keeps an entry not yet taken (`delivery_retention_ms`).
    pub time: std::time::Duration,
    /// Bytes the log may hold (`delivery_retention_bytes`).
    pub bytes: usize,
    /// Where the log reports its size and drops.
    pub gauges: Arc<LogGauges>,
}

impl Default for Retention {
    /// The payload cache's defaults: 60 s (`message_cache_ttl`) and 256 MiB
    /// (`max_cached_bytes`), so the log never pins more payload than the cache may.
    fn default() -> Self {
        Retention {
            time: std::time::Duration::from_secs(60),
            bytes: 256 << 20,
            gauges: Arc::default(),
        }
    }
}

/// What the file thread writes: one line each.
#[derive(Debug, Clone)]
enum FileLine {
    Delivery(Delivery),
    Gap(Gap),
    /// Deliveries the shards could not hand over (the queue was full).
    Lagged(u64),
}

/// Bytes an entry is counted for in the log (payload plus bookkeeping).
fn line_bytes(l: &FileLine) -> usize {
    match l {
        FileLine::Delivery(d) => d.payload.len() + d.topic.len() + 96,
        FileLine::Gap(_) | FileLine::Lagged(_) => 96,
    }
}

impl DeliverySink {
    /// Starts the sink for `target`: `None` counts only (no thread), `-` writes to
    /// stdout, anything else is a file path, created or truncated here so that a bad
    /// path fails start-up rather than later.
    pub fn start(target: Option<&str>) -> io::Result<(DeliverySink, SinkSender)> {
        Self::start_with_capacity(target, SINK_CAPACITY)
    }

    /// [`DeliverySink::start`] with a chosen queue bound.
    pub fn start_with_capacity(
        target: Option<&str>,
        capacity: usize,
    ) -> io::Result<(DeliverySink, SinkSender)> {
        Self::start_named(target, capacity, None)
    }

    /// [`DeliverySink::start_with_capacity`]; lines name the origin (`origin_name`)
    /// when `names` knows it.
    pub fn start_named(
        target: Option<&str>,
        capacity: usize,
        names: Option<NameBook>,
    ) -> io::Result<(DeliverySink, SinkSender)> {
        Self::start_with_subscribers(target, capacity, names, None)
    }

    /// Like [`DeliverySink::start_named`], also feeding `subscribers` (then the
    /// thread runs even with no file).
    pub fn start_with_subscribers(
        target: Option<&str>,
        capacity: usize,
        names: Option<NameBook>,
        subscribers: Option<Subscribers>,
    ) -> io::Result<(DeliverySink, SinkSender)> {
        Self::start_with_retention(target, capacity, names, subscribers, Retention::default())
    }

    /// Like [`DeliverySink::start_with_subscribers`], with the file's delivery log
    /// keeping deliveries for `retention`.
    pub fn start_with_retention(
        target: Option<&str>,
        capacity: usize,
        names: Option<NameBook>,
        subscribers: Option<Subscribers>,
        retention: Retention,
    ) -> io::Result<(DeliverySink, SinkSender)> {
        let written = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        if target.is_none() && subscribers.is_none() {
            let sink = DeliverySink {
                stop_tx: None,
                handle: None,
                file_thread: None,
                log: None,
                written,
            };
            return Ok((
                sink,
                SinkSender {
                    tx: None,
                    dropped,
                    subscribers: None,
                    file: false,
                },
            ));
        }
        let out: Option<Box<dyn Write + Send>> = match target {
            None => None,
            Some("-") => Some(Box::new(io::stdout())),
            Some(path) => Some(Box::new(File::create(path)?)),
        };
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let counter = Arc::clone(&written);
        let lost = Arc::clone(&dropped);
        let fed = subscribers.clone();
        let file = out.is_some();
        // The file is written by a thread of its own from the delivery log, so a
        // stalled reader (a FIFO) holds up neither the shards nor the subscribers.
        let (log, file_thread) = match out {
            None => (None, None),
            Some(o) => {
                let log = Arc::new(RetentionLog::with_gauges(
                    retention.time,
                    retention.bytes,
                    retention.gauges,
                ));
                let mut fw = FileWriter {
                    out: BufWriter::with_capacity(1 << 16, o),
                    failed: false,
                    written: counter,
                    names,
                    log: log.clone(),
                    cursor: log.end(),
                };
                let t = std::thread::Builder::new()
                    .name("deliveries-file".into())
                    .spawn(move || fw.run())?;
                (Some(log), Some(t))
            }
        };
        let writer_log = log.clone();
        let handle = std::thread::Builder::new()
            .name("deliveries".into())
            .spawn(move || {
                let mut w = Writer {
                    log: writer_log,
                    subscribers,
                    dropped: lost,
                    reported: 0,
                };
                w.run(rx, stop_rx);
            })?;
        let sink = DeliverySink {
            stop_tx: Some(stop_tx),
            handle: Some(handle),
            file_thread,
            log,
            written,
        };
        Ok((
            sink,
            SinkSender {
                tx: Some(tx),
                dropped,
                subscribers: fed,
                file,
            },
        ))
    }

    /// Lines written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Drains what is queued, flushes and joins the writer thread.
    pub fn stop(self) {
        drop(self);
    }

    fn shutdown(&mut self) {
        // Disconnecting the stop channel wakes the writer.
        self.stop_tx.take();
        if let Some(handle) = self.handle.take() {
            if handle.join().is_err() {
                tracing::error!("deliveries writer thread panicked");
            }
        }
        // The writer closed the log; the file thread writes what is left. A reader
        // that never takes it (a stalled FIFO) must not hold up the shutdown.
        if let Some(t) = self.file_thread.take() {
            let deadline = std::time::Instant::now() + FILE_DRAIN_GRACE;
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            } else if let Some(log) = &self.log {
                let (left, _, _) = log.usage();
                tracing::warn!(
                    grace = ?FILE_DRAIN_GRACE,
                    held = left,
                    "deliveries file: its reader did not take the last deliveries before shutdown"
                );
            }
        }
    }

    /// Entries the deliveries file's log holds now, their bytes, and entries it
    /// dropped (a reader that fell past the retention is told with a lagged line).
    pub fn log_usage(&self) -> Option<(usize, usize, u64)> {
        self.log.as_ref().map(|l| l.usage())
    }
}

impl Drop for DeliverySink {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Formats one NDJSON line (without the newline) for a delivery taken off the queue
/// at Unix time `t_ns`. Every field but the topic (JSON-escaped: a subject may hold
/// `"` or `\`) is hex, base64 or a number.
pub fn format_line(d: &Delivery, t_ns: u64) -> String {
    format_named_line(d, t_ns, None)
}

/// [`format_line`] with the origin's name (JSON-escaped) when known.
pub fn format_named_line(d: &Delivery, t_ns: u64, origin_name: Option<&str>) -> String {
    let name = origin_name
        .map(|n| {
            format!(
                ",\"origin_name\":{}",
                serde_json::to_string(n).unwrap_or_else(|_| "null".into())
            )
        })
        .unwrap_or_default();
    let topic = serde_json::to_string(d.topic.as_str()).unwrap_or_else(|_| "\"default\"".into());
    format!(
        "{{\"id\":\"{}\",\"origin\":\"{}\"{name},\"topic\":{topic},\"hops\":{},\"payload_b64\":\"{}\",\"t_ns\":{}}}",
        id_hex(d.id),
        d.id.origin,
        d.hops,
        base64::engine::general_purpose::STANDARD.encode(&d.payload),
        t_ns
    )
}

/// The deliveries-file line of a known gap: `missed` messages of `origin` with seqs
/// in `first..=last` will never be delivered (the rest of that range was).
pub fn format_gap_line(g: &Gap) -> String {
    format!(
        "{{\"gap\":{{\"origin\":\"{}\",\"missed\":{},\"first\":{},\"last\":{},\"reason\":\"{}\"}}}}",
        g.origin,
        g.missed,
        g.first,
        g.last,
        g.reason.as_str()
    )
}

/// Unix time in nanoseconds (0 if the clock is before 1970).
fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The writer loop: write each delivery, flush whenever the queue is momentarily
/// empty, and on stop (or when every sender is gone) drain, flush and return. After a
/// write error it keeps draining without writing, so shards see no false backpressure.
/// The deliveries thread's state: the file (if any), the subscriptions (if any) and
/// the count of refused events already reported.
struct Writer {
    /// The deliveries file's log, when there is a file.
    log: Option<Arc<RetentionLog<FileLine>>>,
    subscribers: Option<Subscribers>,
    /// Events the shards could not queue ([`SinkSender::dropped`]) ...
    dropped: Arc<AtomicU64>,
    /// ... and how many of them were reported as lagged so far.
    reported: u64,
}

impl Writer {
    fn run(&mut self, rx: Receiver<SinkEvent>, stop_rx: Receiver<()>) {
        loop {
            crossbeam_channel::select! {
                recv(rx) -> msg => match msg {
                    Ok(e) => self.handle(e),
                    Err(_) => break,
                },
                recv(stop_rx) -> _ => break,
            }
        }
        while let Ok(e) = rx.try_recv() {
            self.handle(e);
        }
        self.report_lagged();
        if let Some(log) = &self.log {
            log.close();
        }
        if let Some(s) = &self.subscribers {
            s.close();
        }
    }

    fn to_file(&self, line: FileLine) {
        if let Some(log) = &self.log {
            let bytes = line_bytes(&line);
            log.push(line, bytes);
        }
    }

    fn handle(&mut self, e: SinkEvent) {
        self.report_lagged();
        match e {
            SinkEvent::Delivery(d) => {
                if self.log.is_some() {
                    self.to_file(FileLine::Delivery(d.clone()));
                }
                if let Some(s) = self.subscribers.as_ref().filter(|s| s.any()) {
                    s.publish(&Event::Message {
                        id: d.id,
                        origin: d.id.origin,
                        hops: d.hops,
                        topic: d.topic,
                        payload: d.payload,
                    });
                }
            }
            SinkEvent::GraftFailed(id) => {
                if let Some(s) = &self.subscribers {
                    s.publish(&Event::GraftFailed { id });
                }
            }
            SinkEvent::Gap(gap) => {
                self.to_file(FileLine::Gap(gap));
                if let Some(s) = &self.subscribers {
                    s.publish(&Event::Gap {
                        origin: gap.origin,
                        missed: gap.missed,
                    });
                }
            }
        }
    }

    /// Events refused since the last report: a `{"lagged":N}` line and a `Lagged`
    /// owed by every subscription.
    fn report_lagged(&mut self) {
        let dropped = self.dropped.load(Ordering::Relaxed);
        let n = dropped - self.reported;
        if n == 0 {
            return;
        }
        self.reported = dropped;
        self.to_file(FileLine::Lagged(n));
        if let Some(s) = &self.subscribers {
            s.missed_by_all(n);
        }
    }
}

/// How long a stopping sink waits for the file's reader to take the last lines.
const FILE_DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The deliveries file's thread: reads the delivery log from its cursor and writes
/// lines, flushing whenever it has caught up. A write that blocks (a FIFO nobody
/// reads) blocks only this thread; the log keeps what arrives meanwhile, and what
/// falls past the retention comes back as one `{"lagged":N}` line. After a write
/// error it stops writing (logged once).
struct FileWriter {
    out: BufWriter<Box<dyn Write + Send>>,
    failed: bool,
    written: Arc<AtomicU64>,
    names: Option<NameBook>,
    log: Arc<RetentionLog<FileLine>>,
    cursor: u64,
}

impl FileWriter {
    fn run(&mut self) {
        let mut batch = Vec::new();
        loop {
            batch.clear();
            match self.log.read(
                &mut self.cursor,
                1024,
                std::time::Duration::from_millis(200),
                &mut batch,
            ) {
                Read::Entries => {
                    for line in std::mem::take(&mut batch) {
                        self.write(&line);
                    }
                    // Caught up: what was written reaches the reader now, not when
                    // the buffer fills.
                    if self.cursor >= self.log.end() {
                        self.flush();
                    }
                }
                Read::Lagged(n) => {
                    tracing::warn!(
                        missed = n,
                        "deliveries file: its reader fell past the retention"
                    );
                    self.write_line(|_| format!("{{\"lagged\":{n}}}"));
                }
                Read::Idle => self.flush(),
                Read::Closed => break,
            }
        }
        self.flush();
    }

    fn write(&mut self, line: &FileLine) {
        match line {
            FileLine::Delivery(d) => {
                let wrote = self.write_line(|names| {
                    let name = names.as_ref().and_then(|n| n.get(d.id.origin));
                    format_named_line(d, unix_nanos(), name.as_deref())
                });
                if wrote {
                    self.written.fetch_add(1, Ordering::Relaxed);
                }
            }
            FileLine::Gap(g) => {
                self.write_line(|_| format_gap_line(g));
            }
            FileLine::Lagged(n) => {
                self.write_line(|_| format!("{{\"lagged\":{n}}}"));
            }
        }
    }

    /// Writes one line to the file, if there is one that still works.
    fn write_line(&mut self, line: impl FnOnce(&Option<NameBook>) -> String) -> bool {
        if self.failed {
            return false;
        }
        match writeln!(self.out, "{}", line(&self.names)) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "deliveries: write failed; further deliveries are discarded");
                self.failed = true;
                false
            }
        }
    }

    fn flush(&mut self) {
        if !self.failed {
            if let Err(e) = self.out.flush() {
                tracing::warn!(error = %e, "deliveries: flush failed; further deliveries are discarded");
                self.failed = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::ids::NodeId;

    fn delivery(seq: u64, payload: &'static [u8]) -> Delivery {
        Delivery {
            id: MessageId {
                origin: NodeId(0xab),
                seq,
            },
            hops: seq as u16,
            topic: Topic::default(),
            payload: Bytes::from_static(payload),
        }
    }

    fn temp_path(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("plumcore-sink-{}-{tag}.ndjson", std::process::id()))
    }

    #[test]
    fn line_format() {
        let line = format_line(&delivery(3, b"hello"), 42);
        assert_eq!(
            line,
            "{\"id\":\"00000000000000ab0000000000000003\",\"origin\":\"00000000000000ab\",\
             \"topic\":\"default\",\"hops\":3,\"payload_b64\":\"aGVsbG8=\",\"t_ns\":42}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["hops"], 3);
    }

    #[test]
    fn a_steady_trickle_reaches_the_file_without_waiting_for_a_pause() {
        let path = temp_path("trickle");
        let (sink, tx) = DeliverySink::start(Some(path.to_str().unwrap())).unwrap();
        // One delivery every 10 ms never leaves the writer idle for its 200 ms wait;
        // each must still be flushed once written, not when 64 KiB have piled up.
        let mut seen_while_busy = 0;
        for seq in 1..=50 {
            assert!(tx.try_send(delivery(seq, b"p")));
            std::thread::sleep(Duration::from_millis(10));
            if seq == 40 {
                // Still trickling: no pause has let an idle flush happen.
                seen_while_busy = std::fs::read_to_string(&path).unwrap().lines().count();
            }
        }
        // 40 were sent 10 ms apart; allow 200 ms of scheduling slack.
        assert!(
            seen_while_busy >= 20,
            "{seen_while_busy} of 40 lines visible"
        );
        sink.stop();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 50);
    }

    #[test]
    fn writes_file_promptly_and_on_stop() {
        let path = temp_path("file");
        let (sink, tx) = DeliverySink::start(Some(path.to_str().unwrap())).unwrap();
        assert!(tx.is_active());
        assert!(tx.try_send(delivery(1, b"a")));
        // Flushed as soon as the queue is empty, without stopping.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&path).unwrap();
            if text.lines().count() == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "line not flushed");
            std::thread::sleep(Duration::from_millis(5));
        }
        let tx2 = tx.clone();
        for seq in 2..=100 {
            assert!(tx2.try_send(delivery(seq, b"payload")));
        }
        sink.stop();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 100);
        for (i, line) in lines.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["hops"], i as u64 + 1);
            assert_eq!(v["origin"], "00000000000000ab");
            // Stamped by the writer with the wall clock (after 2020-01-01).
            assert!(v["t_ns"].as_u64().unwrap() > 1_577_836_800_000_000_000);
        }
        // After stop, sends are discarded, never blocking.
        assert!(tx.try_send(delivery(101, b"late")));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn count_only() {
        let (sink, tx) = DeliverySink::start(None).unwrap();
        assert!(!tx.is_active());
        assert!(tx.try_send(delivery(1, b"x")));
        assert_eq!(sink.written(), 0);
        sink.stop();
    }

    #[test]
    fn full_queue_refuses() {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let sender = SinkSender {
            tx: Some(tx),
            dropped: Arc::default(),
            subscribers: None,
            file: true,
        };
        assert!(sender.try_send(delivery(1, b"a")));
        assert!(!sender.try_send(delivery(2, b"b")));
        assert_eq!(sender.dropped.load(Ordering::Relaxed), 1);
    }

    /// A queue too small for a burst: what it refused shows as `{"lagged":N}` lines
    /// and as `Lagged` events, and delivered + lagged = sent, in the file and for a
    /// subscriber alike.
    #[test]
    fn refused_deliveries_are_reported_as_lagged_in_the_file_and_to_subscribers() {
        let path = temp_path("lagged");
        let subs = Subscribers::with_capacity(1 << 20);
        let sub = subs.subscribe();
        let (sink, tx) =
            DeliverySink::start_with_subscribers(Some(path.to_str().unwrap()), 1, None, Some(subs))
                .unwrap();
        let sent = 20_000u64;
        let refused = (0..sent)
            .filter(|&seq| !tx.try_send(delivery(seq, b"p")))
            .count() as u64;
        sink.stop();
        let text = std::fs::read_to_string(&path).unwrap();
        let (mut lines, mut lagged) = (0u64, 0u64);
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            match v["lagged"].as_u64() {
                Some(n) => lagged += n,
                None => lines += 1,
            }
        }
        assert_eq!(lagged, refused, "every refusal reported in the file");
        assert_eq!(lines + lagged, sent);
        let (mut got, mut missed) = (0u64, 0u64);
        for e in sub {
            match e {
                Event::Message { .. } => got += 1,
                Event::Lagged { missed: n } => missed += n,
                Event::GraftFailed { .. } | Event::Gap { .. } => unreachable!(),
            }
        }
        assert_eq!(missed, refused, "every refusal reported to the subscriber");
        assert_eq!(got + missed, sent);
        eprintln!("sent {sent}, refused {refused}");
        let _ = std::fs::remove_file(&path);
    }

    /// A sink writing `temp_path(tag)` and feeding one subscription (16 events).
    fn file_and_subscriber(
        tag: &str,
    ) -> (
        std::path::PathBuf,
        crate::node::subscribe::Subscription,
        DeliverySink,
        SinkSender,
    ) {
        let path = temp_path(tag);
        let subs = Subscribers::with_capacity(16);
        let sub = subs.subscribe();
        let (sink, tx) = DeliverySink::start_with_subscribers(
            Some(path.to_str().unwrap()),
            16,
            None,
            Some(subs),
        )
        .unwrap();
        (path, sub, sink, tx)
    }

    #[test]
    fn graft_give_ups_reach_subscribers_but_not_the_file() {
        let (path, sub, sink, tx) = file_and_subscriber("graft");
        let id = delivery(5, b"").id;
        assert!(tx.try_send_graft_failed(id));
        assert!(tx.try_send(delivery(6, b"x")));
        sink.stop();
        assert_eq!(sub.recv(), Some(Event::GraftFailed { id }));
        assert!(matches!(sub.recv(), Some(Event::Message { .. })));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn known_gaps_reach_the_file_and_subscribers() {
        use crate::protocol::gap::{Gap, GapReason};
        let (path, sub, sink, tx) = file_and_subscriber("gap");
        let gap = Gap {
            origin: NodeId(0xab),
            first: 10,
            last: 20,
            missed: 7,
            reason: GapReason::Expired,
        };
        assert!(tx.try_send_gap(gap));
        sink.stop();
        assert_eq!(
            sub.recv(),
            Some(Event::Gap {
                origin: NodeId(0xab),
                missed: 7
            })
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.trim(),
            "{\"gap\":{\"origin\":\"00000000000000ab\",\"missed\":7,\"first\":10,\"last\":20,\"reason\":\"expired\"}}"
        );
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["gap"]["missed"], 7);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn bad_path_fails_start() {
        assert!(DeliverySink::start(Some("/nonexistent-dir/x/deliveries.ndjson")).is_err());
    }
}
