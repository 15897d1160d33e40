//! [`NodeSocket`], the socket every executor (shards and control core) sends and
//! receives through: glommio readiness plus the batched I/O of [`super::udp`], with a
//! fault layer between the socket and its user. The fault layer is test-only fault
//! injection in the node's own transport (`--chaos`): drop, duplicate and delay a
//! fraction of datagrams, and cut the links to given peer addresses, so that
//! integration tests can check delivery under loss and partitions on loopback (there
//! is no `tc netem` here). Without `--chaos` the socket holds no fault layer and each
//! send or receive costs one branch.
//!
//! The faults are set at start from the config and changed at run time by the admin
//! plane through a shared [`FaultSwitch`]; each socket's layer copies the switch's
//! settings when its generation changes (one relaxed load per datagram, only with
//! `--chaos`) and draws its decisions from its own seeded RNG.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::net::UdpSocket;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::io_stats::IoStats;
use super::udp::{recv_batch, send_batch, Received, RxBatch, RxPool, SendStats, TxBatch};

/// Most datagrams one socket holds back (delayed or duplicated) at once; past it a
/// delay is not applied and counted in `overflow`.
pub const MAX_HELD: usize = 4096;
/// Longest delay a fault may ask for.
pub const MAX_DELAY_MS: u64 = 10_000;
/// Most link cuts in force at once.
pub const MAX_CUTS: usize = 256;

/// Which direction the random faults (drop, duplicate, delay) apply to. Cuts always
/// apply to both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Only datagrams this socket sends.
    Send,
    /// Only datagrams this socket receives.
    Recv,
    /// Datagrams either way (the default).
    #[default]
    Both,
}

impl Side {
    fn covers(self, dir: Dir) -> bool {
        matches!(
            (self, dir),
            (Side::Both, _) | (Side::Send, Dir::Send) | (Side::Recv, Dir::Recv)
        )
    }
}

impl std::str::FromStr for Side {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "send" => Ok(Side::Send),
            "recv" => Ok(Side::Recv),
            "both" => Ok(Side::Both),
            _ => Err(format!("`{s}` is not one of send, recv, both")),
        }
    }
}

/// A direction through the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Send,
    Recv,
}

/// Random per-datagram faults: each datagram on a covered side is dropped with
/// probability `drop`, sent or handled twice with `dup`, and held back `delay_ms`
/// with `delay` (mutually exclusive; the three sum to at most 1).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultRates {
    /// Probability (0 to 1) that a datagram is dropped.
    pub drop: f64,
    /// Probability (0 to 1) that a datagram is sent or handled twice.
    pub dup: f64,
    /// Probability (0 to 1) that a datagram is held back `delay_ms`.
    pub delay: f64,
    /// How long a delayed datagram is held back, in ms (at most [`MAX_DELAY_MS`]).
    pub delay_ms: u64,
    /// Which direction the three faults apply to.
    pub side: Side,
}

/// Why a fault setting was refused; names the field.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FaultError {
    /// The named probability (`drop`, `dup` or `delay`) is outside 0 to 1.
    #[error("`{0}` must be between 0 and 1")]
    Probability(&'static str),
    /// The three probabilities add up to more than 1 (they are exclusive).
    #[error("drop + dup + delay must be at most 1")]
    Sum,
    /// `delay_ms` is above [`MAX_DELAY_MS`].
    #[error("`delay_ms` must be at most {MAX_DELAY_MS}")]
    Delay,
    /// A cut's address, as given, is not `IP`, `IP:PORT` or `IP:FIRST-LAST`.
    #[error("`{0}` is not an address: IP, IP:PORT or IP:PORT-PORT")]
    Addr(String),
    /// The cut would put more than [`MAX_CUTS`] cuts in force.
    #[error("at most {MAX_CUTS} cuts")]
    TooManyCuts,
}

impl FaultRates {
    /// Checks the probabilities and the delay.
    pub fn validate(&self) -> Result<(), FaultError> {
        for (name, p) in [
            ("drop", self.drop),
            ("dup", self.dup),
            ("delay", self.delay),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(FaultError::Probability(name));
            }
        }
        if self.drop + self.dup + self.delay > 1.0 + 1e-9 {
            return Err(FaultError::Sum);
        }
        if self.delay_ms > MAX_DELAY_MS {
            return Err(FaultError::Delay);
        }
        Ok(())
    }
}

/// Addresses whose links are cut: one IP (every port), or one IP and a port range
/// (a node's control port and its shard ports, say).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrRange {
    /// The IP address.
    pub ip: IpAddr,
    /// The first port cut (0 for a whole IP).
    pub first: u16,
    /// The last port cut, inclusive (65535 for a whole IP).
    pub last: u16,
}

impl AddrRange {
    fn contains(&self, a: SocketAddr) -> bool {
        a.ip() == self.ip && (self.first..=self.last).contains(&a.port())
    }
}

impl std::str::FromStr for AddrRange {
    type Err = FaultError;
    /// `IP`, `IP:PORT` or `IP:FIRST-LAST`.
    fn from_str(s: &str) -> Result<Self, FaultError> {
        let bad = || FaultError::Addr(s.to_string());
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(AddrRange {
                ip,
                first: 0,
                last: u16::MAX,
            });
        }
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(AddrRange {
                ip: a.ip(),
                first: a.port(),
                last: a.port(),
            });
        }
        let (host, range) = s.rsplit_once(':').ok_or_else(bad)?;
        let (lo, hi) = range.split_once('-').ok_or_else(bad)?;
        let ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .map_err(|_| bad())?;
        let (first, last) = (
            lo.parse::<u16>().map_err(|_| bad())?,
            hi.parse::<u16>().map_err(|_| bad())?,
        );
        if first > last {
            return Err(bad());
        }
        Ok(AddrRange { ip, first, last })
    }
}

impl std::fmt::Display for AddrRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = match self.ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        match (self.first, self.last) {
            (0, u16::MAX) => write!(f, "{}", self.ip),
            (a, b) if a == b => write!(f, "{ip}:{a}"),
            (a, b) => write!(f, "{ip}:{a}-{b}"),
        }
    }
}

/// Everything the fault layer does: rates and cuts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultConfig {
    /// The random per-datagram faults.
    pub rates: FaultRates,
    /// The links cut, both ways (at most [`MAX_CUTS`]).
    pub cuts: Vec<AddrRange>,
}

/// The node-wide fault settings, written by the admin plane and read by every
/// socket's layer when `generation` moves.
#[derive(Debug)]
pub struct FaultSwitch {
    generation: AtomicU64,
    config: Mutex<FaultConfig>,
}

impl FaultSwitch {
    /// Starts with `config` (from `--chaos-*` flags or keys).
    pub fn new(config: FaultConfig) -> Self {
        FaultSwitch {
            generation: AtomicU64::new(1),
            config: Mutex::new(config),
        }
    }

    fn update(
        &self,
        f: impl FnOnce(&mut FaultConfig) -> Result<(), FaultError>,
    ) -> Result<(), FaultError> {
        let mut c = self.config.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut c)?;
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// The settings in force.
    pub fn current(&self) -> FaultConfig {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the random faults.
    pub fn set_rates(&self, rates: FaultRates) -> Result<(), FaultError> {
        rates.validate()?;
        self.update(|c| {
            c.rates = rates;
            Ok(())
        })
    }

    /// Cuts the links to `cuts` (added to those already cut).
    pub fn cut(&self, cuts: Vec<AddrRange>) -> Result<(), FaultError> {
        self.update(|c| {
            for r in cuts {
                if !c.cuts.contains(&r) {
                    c.cuts.push(r);
                }
            }
            if c.cuts.len() > MAX_CUTS {
                return Err(FaultError::TooManyCuts);
            }
            Ok(())
        })
    }

    /// Restores every cut link.
    pub fn heal(&self) {
        let _ = self.update(|c| {
            c.cuts.clear();
            Ok(())
        });
    }
}

/// What the fault layer did to one socket's datagrams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FaultStats {
    /// Dropped at random.
    pub dropped: u64,
    /// Sent or handled a second time.
    pub duplicated: u64,
    /// Held back `delay_ms`.
    pub delayed: u64,
    /// Dropped because the link to that address is cut.
    pub cut: u64,
    /// Delays and duplicates not applied because [`MAX_HELD`] were already held.
    pub overflow: u64,
}

/// What to do with one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Pass,
    Drop,
    Duplicate,
    Delay(Duration),
}

/// One socket's fault layer: a copy of the switch's settings, an RNG, counters and
/// the datagrams held back on the receive side.
#[derive(Debug)]
struct FaultLayer {
    switch: Arc<FaultSwitch>,
    seen: u64,
    config: FaultConfig,
    rng: ChaCha8Rng,
    stats: FaultStats,
    /// Datagrams held back (received, to hand out at `due`), oldest due first.
    held: VecDeque<(Instant, Bytes, SocketAddr)>,
    /// Delayed sends still in flight.
    sending: usize,
}

impl FaultLayer {
    fn judge(&mut self, dir: Dir, peer: SocketAddr) -> Verdict {
        let g = self.switch.generation.load(Ordering::Acquire);
        if g != self.seen {
            self.seen = g;
            self.config = self.switch.current();
        }
        if self.config.cuts.iter().any(|c| c.contains(peer)) {
            self.stats.cut += 1;
            return Verdict::Drop;
        }
        let r = &self.config.rates;
        if !r.side.covers(dir) || r.drop + r.dup + r.delay == 0.0 {
            return Verdict::Pass;
        }
        let x: f64 = self.rng.gen();
        if x < r.drop {
            self.stats.dropped += 1;
            Verdict::Drop
        } else if x < r.drop + r.dup {
            Verdict::Duplicate
        } else if x < r.drop + r.dup + r.delay {
            Verdict::Delay(Duration::from_millis(r.delay_ms))
        } else {
            Verdict::Pass
        }
    }

    /// Whether one more datagram may be held back; counts it either way.
    fn admit(&mut self, v: Verdict) -> bool {
        if self.held.len() + self.sending >= MAX_HELD {
            self.stats.overflow += 1;
            return false;
        }
        match v {
            Verdict::Duplicate => self.stats.duplicated += 1,
            Verdict::Delay(_) => self.stats.delayed += 1,
            _ => {}
        }
        true
    }

    /// Holds a received datagram until `due` (kept in due order).
    fn hold(&mut self, due: Instant, d: Bytes, from: SocketAddr) {
        let at = self.held.partition_point(|(t, _, _)| *t <= due);
        self.held.insert(at, (due, d, from));
    }
}

/// Longest a receive loop waits for readiness before it drains the socket anyway:
/// the safety net under a lost wake-up (counted when it finds datagrams). A handful of
/// non-blocking `recvmmsg` calls a second is not measurable on an idle node.
pub const READINESS_CHECK: Duration = Duration::from_millis(250);

impl IoStats {
    /// Copies the socket's fault-layer counters into the snapshot.
    pub fn set_fault_stats(&mut self, f: FaultStats) {
        self.chaos_dropped = f.dropped;
        self.chaos_duplicated = f.duplicated;
        self.chaos_delayed = f.delayed;
        self.chaos_cut = f.cut;
        self.chaos_overflow = f.overflow;
    }
}

/// What [`NodeSocket::receive_turn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// `stop` was set.
    Stopped,
    /// A batch (possibly empty) is in `got`; `woke`: the wait ended on readiness.
    Ready {
        /// The wait ended on the socket being readable (false: it timed out, failed,
        /// or was skipped after a full batch); feeds the wake-up count.
        woke: bool,
    },
}

/// A UDP socket with the fault layer between it and its user (only with `--chaos`),
/// and the batched I/O of [`super::udp`]: readiness through glommio, then
/// `recvmmsg`/`sendmmsg` on the descriptor. Without `--chaos` the layer is `None` and
/// a batch costs one branch.
pub struct NodeSocket {
    sock: Rc<UdpSocket>,
    layer: Option<Rc<RefCell<FaultLayer>>>,
    rx: RefCell<(RxPool, RxBatch)>,
    tx: RefCell<TxBatch>,
    /// Whether GSO sends are tried (cleared when the kernel refuses one).
    gso: Cell<bool>,
    sends: Cell<SendStats>,
    /// See [`NodeSocket::readiness_missed`].
    readiness_missed: Cell<u64>,
}

impl NodeSocket {
    /// Wraps `sock`; `switch` is `None` without `--chaos`. `seed` makes the layer's
    /// decisions reproducible. Received datagrams land in a pool of at most
    /// `pool_buffers` buffers of `slot` bytes; `gso` allows `UDP_SEGMENT` sends.
    pub fn new(
        sock: UdpSocket,
        switch: Option<Arc<FaultSwitch>>,
        seed: u64,
        (slot, pool_buffers, gso): (usize, usize, bool),
    ) -> Self {
        NodeSocket {
            sock: Rc::new(sock),
            layer: switch.map(|switch| {
                Rc::new(RefCell::new(FaultLayer {
                    config: switch.current(),
                    seen: switch.generation.load(Ordering::Acquire),
                    switch,
                    rng: ChaCha8Rng::seed_from_u64(seed),
                    stats: FaultStats::default(),
                    held: VecDeque::new(),
                    sending: 0,
                }))
            }),
            rx: RefCell::new((RxPool::new(slot, pool_buffers), RxBatch::default())),
            tx: RefCell::new(TxBatch::default()),
            gso: Cell::new(gso),
            sends: Cell::new(SendStats::default()),
            readiness_missed: Cell::new(0),
        }
    }

    /// The socket's descriptor (for `SO_MEMINFO` backlog probes).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.sock.as_raw_fd()
    }

    /// What the fault layer did so far (zeros without `--chaos`).
    pub fn fault_stats(&self) -> FaultStats {
        self.layer
            .as_ref()
            .map(|l| l.borrow().stats)
            .unwrap_or_default()
    }

    /// Times a timed-out readiness wait found datagrams waiting in the socket: the
    /// wake-up for them was lost (expected to stay 0; a safety net, not a path).
    pub fn readiness_missed(&self) -> u64 {
        self.readiness_missed.get()
    }

    /// Receive batches that found the buffer pool exhausted.
    pub fn rx_exhausted(&self) -> u64 {
        self.rx.borrow().0.exhausted
    }

    /// Copies this socket's counters (fault layer, buffer pool, sends) into `io`.
    pub fn fill_stats(&self, io: &mut IoStats) {
        io.set_fault_stats(self.fault_stats());
        io.rx_buffer_exhausted = self.rx_exhausted();
        io.rx_readiness_missed = self.readiness_missed();
        let s = self.send_stats();
        io.send_calls = s.calls;
        io.gso_segments = s.gso_segments;
    }

    /// Every batched send so far, added up.
    pub fn send_stats(&self) -> SendStats {
        self.sends.get()
    }

    /// When the fault layer next hands out a held-back datagram.
    pub fn next_held(&self) -> Option<Instant> {
        let l = self.layer.as_ref()?;
        let l = l.borrow();
        l.held.front().map(|(t, _, _)| *t)
    }

    /// Resolves when a datagram waits in the socket (glommio's io_uring receive with
    /// `MSG_PEEK`: nothing is consumed, so dropping this future loses nothing), or
    /// when the fault layer has a held-back datagram due.
    pub async fn readable(&self) -> std::io::Result<()> {
        let mut b = [0u8; 1];
        let peek = async {
            self.sock
                .peek_from(&mut b)
                .await
                .map(|_| ())
                .map_err(std::io::Error::from)
        };
        match self.next_held() {
            None => peek.await,
            Some(due) => {
                let wait = due.saturating_duration_since(Instant::now());
                futures_lite::future::or(peek, async {
                    glommio::timer::sleep(wait).await;
                    Ok(())
                })
                .await
            }
        }
    }

    /// One turn of a receive loop: unless the last batch was full (`*more`), waits
    /// until a datagram is readable, `stop` is set, or `poll` passes (at most
    /// [`READINESS_CHECK`]); then drains one batch into `got` (emptied first). A wait
    /// that ended on the timer still drains: if it finds datagrams the readiness wait
    /// never reported, they are counted ([`NodeSocket::readiness_missed`]) instead
    /// of sitting in the socket until the next datagram. A failed wait or receive is
    /// logged and backs off 1 ms, leaving `got` empty.
    pub async fn receive_turn(
        &self,
        got: &mut Vec<Received>,
        more: &mut bool,
        stop: &crate::tasks::StopSignal,
        poll: Option<Duration>,
    ) -> Turn {
        got.clear();
        let mut woke = false;
        let mut timed_out = false;
        if !*more {
            let wait = poll.map_or(READINESS_CHECK, |d| d.min(READINESS_CHECK));
            let ready =
                futures_lite::future::or(async { Some(Some(self.readable().await)) }, async {
                    futures_lite::future::or(
                        async {
                            stop.wait().await;
                            None
                        },
                        async {
                            glommio::timer::sleep(wait).await;
                            Some(None)
                        },
                    )
                    .await
                })
                .await;
            match ready {
                None => return Turn::Stopped,
                Some(None) => timed_out = true,
                Some(Some(Ok(()))) => woke = true,
                Some(Some(Err(e))) => {
                    tracing::debug!(error = %e, "waiting for the socket failed");
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                    return Turn::Ready { woke };
                }
            }
        }
        match self.recv_batch(got) {
            Ok(n) => {
                *more = n == super::udp::RX_BATCH;
                if timed_out && n > 0 {
                    self.readiness_missed.set(self.readiness_missed.get() + 1);
                    woke = true;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "recv failed");
                *more = false;
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
        }
        Turn::Ready { woke }
    }

    /// Drains one batch without blocking: the fault layer's due datagrams, then one
    /// `recvmmsg`, each datagram judged by the layer. Returns how many datagrams the
    /// kernel handed over ([`super::udp::RX_BATCH`] means more may wait).
    pub fn recv_batch(&self, out: &mut Vec<Received>) -> std::io::Result<usize> {
        let n = {
            let mut rx = self.rx.borrow_mut();
            let (pool, batch) = &mut *rx;
            let Some(layer) = &self.layer else {
                return recv_batch(self.raw_fd(), pool, batch, out);
            };
            let now = Instant::now();
            {
                let mut l = layer.borrow_mut();
                while l.held.front().is_some_and(|(due, _, _)| *due <= now) {
                    let (_, data, from) = l.held.pop_front().expect("front exists");
                    out.push(Received {
                        data,
                        from,
                        oversized: false,
                    });
                }
            }
            let first = out.len();
            let n = recv_batch(self.raw_fd(), pool, batch, out)?;
            let mut l = layer.borrow_mut();
            let mut kept = first;
            for i in first..out.len() {
                let r = out[i].clone();
                match l.judge(Dir::Recv, r.from) {
                    Verdict::Pass => {}
                    Verdict::Drop => continue,
                    v @ Verdict::Duplicate => {
                        if l.admit(v) {
                            l.hold(now, r.data.clone(), r.from);
                        }
                    }
                    v @ Verdict::Delay(d) => {
                        if l.admit(v) {
                            l.hold(now + d, r.data.clone(), r.from);
                            continue;
                        }
                    }
                }
                out[kept] = r;
                kept += 1;
            }
            out.truncate(kept);
            n
        };
        Ok(n)
    }

    /// Sends `items` (drained) in as few system calls as the kernel allows; what
    /// the send buffer has no room for goes out one by one through glommio, waiting.
    /// With the fault layer, each datagram is judged first; a dropped or delayed one
    /// counts as sent, as a lossy network would report.
    pub async fn send_batch(&self, items: &mut Vec<(SocketAddr, Bytes)>) -> SendStats {
        let mut st = SendStats::default();
        if let Some(layer) = &self.layer {
            let mut l = layer.borrow_mut();
            let mut kept = Vec::with_capacity(items.len());
            for (addr, d) in items.drain(..) {
                let v = l.judge(Dir::Send, addr);
                match v {
                    Verdict::Pass => kept.push((addr, d)),
                    Verdict::Drop => {
                        st.datagrams += 1;
                        st.bytes += d.len() as u64;
                    }
                    Verdict::Duplicate => {
                        if l.admit(v) {
                            kept.push((addr, d.clone()));
                        }
                        kept.push((addr, d));
                    }
                    Verdict::Delay(wait) => {
                        if !l.admit(v) {
                            kept.push((addr, d));
                            continue;
                        }
                        st.datagrams += 1;
                        st.bytes += d.len() as u64;
                        l.sending += 1;
                        let (sock, layer) = (self.sock.clone(), layer.clone());
                        glommio::spawn_local(async move {
                            glommio::timer::sleep(wait).await;
                            let _ = sock.send_to(&d, addr).await;
                            layer.borrow_mut().sending -= 1;
                        })
                        .detach();
                    }
                }
            }
            *items = kept;
        }
        let (done, s) = {
            let mut gso = self.gso.get();
            let r = send_batch(self.raw_fd(), items, &mut gso, &mut self.tx.borrow_mut());
            self.gso.set(gso);
            r
        };
        st.add(s);
        // The send buffer is full: wait for room, one datagram at a time.
        for (addr, d) in items.drain(..).skip(done) {
            match self.sock.send_to(&d, addr).await {
                Ok(_) => {
                    st.datagrams += 1;
                    st.bytes += d.len() as u64;
                }
                Err(e) => {
                    st.errors += 1;
                    tracing::debug!(%addr, error = %e, "send failed");
                }
            }
        }
        let mut all = self.sends.get();
        all.add(st);
        self.sends.set(all);
        st
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(rates: FaultRates, cuts: Vec<AddrRange>) -> FaultLayer {
        let switch = Arc::new(FaultSwitch::new(FaultConfig { rates, cuts }));
        FaultLayer {
            config: switch.current(),
            seen: 0,
            switch,
            rng: ChaCha8Rng::seed_from_u64(7),
            stats: FaultStats::default(),
            held: VecDeque::new(),
            sending: 0,
        }
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addr_ranges() {
        let r: AddrRange = "127.0.0.1:7000-7002".parse().unwrap();
        assert!(r.contains(a("127.0.0.1:7000")) && r.contains(a("127.0.0.1:7002")));
        assert!(!r.contains(a("127.0.0.1:7003")) && !r.contains(a("127.0.0.2:7001")));
        assert_eq!(r.to_string(), "127.0.0.1:7000-7002");
        let one: AddrRange = "127.0.0.1:9".parse().unwrap();
        assert!(one.contains(a("127.0.0.1:9")) && !one.contains(a("127.0.0.1:10")));
        let ip: AddrRange = "10.0.0.1".parse().unwrap();
        assert!(ip.contains(a("10.0.0.1:1")) && ip.contains(a("10.0.0.1:65535")));
        assert_eq!(ip.to_string(), "10.0.0.1");
        for bad in ["", "x", "127.0.0.1:9-8", "127.0.0.1:a-b", "1.2.3.4:70000"] {
            assert!(bad.parse::<AddrRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rates_validated() {
        let ok = FaultRates {
            drop: 0.5,
            dup: 0.25,
            delay: 0.25,
            delay_ms: 5,
            side: Side::Both,
        };
        assert_eq!(ok.validate(), Ok(()));
        let bad = |f: fn(&mut FaultRates)| {
            let mut r = ok.clone();
            f(&mut r);
            r.validate().unwrap_err()
        };
        assert_eq!(bad(|r| r.drop = 1.5), FaultError::Probability("drop"));
        assert_eq!(bad(|r| r.dup = -0.1), FaultError::Probability("dup"));
        assert_eq!(bad(|r| r.delay = 0.3), FaultError::Sum);
        assert_eq!(bad(|r| r.delay_ms = 20_000), FaultError::Delay);
        assert!(bad(|r| r.drop = f64::NAN) == FaultError::Probability("drop"));
    }

    #[test]
    fn fractions_follow_the_rates() {
        let mut l = layer(
            FaultRates {
                drop: 0.1,
                dup: 0.05,
                delay: 0.2,
                delay_ms: 3,
                side: Side::Send,
            },
            vec![],
        );
        let n = 100_000;
        let (mut drop, mut dup, mut delay) = (0, 0, 0);
        for _ in 0..n {
            match l.judge(Dir::Send, a("127.0.0.1:1")) {
                Verdict::Drop => drop += 1,
                Verdict::Duplicate => dup += 1,
                Verdict::Delay(d) => {
                    assert_eq!(d, Duration::from_millis(3));
                    delay += 1
                }
                Verdict::Pass => {}
            }
            // The receive side is not covered.
            assert_eq!(l.judge(Dir::Recv, a("127.0.0.1:1")), Verdict::Pass);
        }
        let near = |got: u64, p: f64| (got as f64 / n as f64 - p).abs() < 0.01;
        assert!(near(drop, 0.1), "{drop}");
        assert!(near(dup, 0.05), "{dup}");
        assert!(near(delay, 0.2), "{delay}");
        assert_eq!(l.stats.dropped, drop);
    }

    #[test]
    fn cuts_and_heal_take_effect_through_the_switch() {
        let mut l = layer(FaultRates::default(), vec![]);
        let peer = a("127.0.0.1:7001");
        assert_eq!(l.judge(Dir::Recv, peer), Verdict::Pass);
        l.switch
            .cut(vec!["127.0.0.1:7000-7002".parse().unwrap()])
            .unwrap();
        assert_eq!(l.judge(Dir::Recv, peer), Verdict::Drop);
        assert_eq!(l.judge(Dir::Send, peer), Verdict::Drop);
        assert_eq!(l.judge(Dir::Send, a("127.0.0.1:7003")), Verdict::Pass);
        assert_eq!(l.stats.cut, 2);
        l.switch.heal();
        assert_eq!(l.judge(Dir::Send, peer), Verdict::Pass);
        l.switch
            .set_rates(FaultRates {
                drop: 1.0,
                ..FaultRates::default()
            })
            .unwrap();
        assert_eq!(l.judge(Dir::Send, peer), Verdict::Drop);
        assert!(l
            .switch
            .set_rates(FaultRates {
                drop: 2.0,
                ..FaultRates::default()
            })
            .is_err());
        let many: Vec<AddrRange> = (0..=MAX_CUTS as u16)
            .map(|p| format!("127.0.0.1:{p}").parse().unwrap())
            .collect();
        assert_eq!(l.switch.cut(many), Err(FaultError::TooManyCuts));
    }

    #[test]
    fn held_datagrams_are_bounded_and_kept_in_due_order() {
        let mut l = layer(FaultRates::default(), vec![]);
        let t = Instant::now();
        l.hold(
            t + Duration::from_millis(5),
            Bytes::from(vec![1]),
            a("127.0.0.1:1"),
        );
        l.hold(t, Bytes::from(vec![2]), a("127.0.0.1:1"));
        l.hold(
            t + Duration::from_millis(1),
            Bytes::from(vec![3]),
            a("127.0.0.1:1"),
        );
        let order: Vec<u8> = l.held.iter().map(|(_, d, _)| d[0]).collect();
        assert_eq!(order, vec![2, 3, 1]);
        l.sending = MAX_HELD - 3;
        assert!(!l.admit(Verdict::Delay(Duration::ZERO)));
        assert_eq!(l.stats.overflow, 1);
        assert_eq!(l.stats.delayed, 0);
    }

    #[test]
    fn sockets_without_chaos_pass_everything_and_with_it_apply_faults() {
        let run = |f: std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>| {
            glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .make()
                .unwrap()
                .run(f)
        };
        run(Box::pin(async {
            let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
            let to = rx.local_addr().unwrap();
            let switch = Arc::new(FaultSwitch::new(FaultConfig::default()));
            let rx = NodeSocket::new(rx, Some(switch.clone()), 1, (2048, 64, true));
            let txs = UdpSocket::bind("127.0.0.1:0").unwrap();
            let from = txs.local_addr().unwrap();
            let tx = NodeSocket::new(txs, None, 2, (2048, 64, true));
            // Everything that arrives within `wait`, waiting for readiness as the
            // executors do.
            let recv_for = |wait: Duration| {
                let rx = &rx;
                async move {
                    let mut got: Vec<Vec<u8>> = Vec::new();
                    let t = Instant::now();
                    while t.elapsed() < wait {
                        let left = wait.saturating_sub(t.elapsed());
                        let ready = futures_lite::future::or(
                            async { rx.readable().await.is_ok() },
                            async {
                                glommio::timer::sleep(left).await;
                                false
                            },
                        )
                        .await;
                        if !ready {
                            break;
                        }
                        let mut out = Vec::new();
                        rx.recv_batch(&mut out).unwrap();
                        got.extend(out.into_iter().map(|r| r.data.to_vec()));
                    }
                    got
                }
            };
            let send = |d: &'static [u8]| {
                let tx = &tx;
                async move {
                    let mut v = vec![(to, Bytes::from_static(d))];
                    assert_eq!(tx.send_batch(&mut v).await.datagrams, 1);
                }
            };
            // Duplicate everything on receive: each datagram comes out twice.
            switch
                .set_rates(FaultRates {
                    dup: 1.0,
                    side: Side::Recv,
                    ..FaultRates::default()
                })
                .unwrap();
            send(b"a").await;
            assert_eq!(recv_for(Duration::from_millis(100)).await, vec![b"a"; 2]);
            // Delay everything by 30 ms.
            switch
                .set_rates(FaultRates {
                    delay: 1.0,
                    delay_ms: 30,
                    side: Side::Recv,
                    ..FaultRates::default()
                })
                .unwrap();
            let t = Instant::now();
            send(b"b").await;
            assert_eq!(recv_for(Duration::from_millis(200)).await, vec![b"b"]);
            assert!(t.elapsed() >= Duration::from_millis(30));
            // Cut the sender's address: nothing arrives.
            switch.set_rates(FaultRates::default()).unwrap();
            let cut: AddrRange = from.to_string().parse().unwrap();
            switch.cut(vec![cut]).unwrap();
            send(b"c").await;
            assert!(recv_for(Duration::from_millis(50)).await.is_empty());
            switch.heal();
            send(b"d").await;
            assert_eq!(recv_for(Duration::from_millis(100)).await, vec![b"d"]);
            let s = rx.fault_stats();
            assert_eq!((s.duplicated, s.delayed, s.cut), (1, 1, 1));
            assert_eq!(tx.fault_stats(), FaultStats::default());
            // Several datagrams to one peer in one batch (GSO where the kernel takes it).
            let mut many: Vec<(SocketAddr, Bytes)> =
                (0..10u8).map(|i| (to, Bytes::from(vec![i; 500]))).collect();
            assert_eq!(tx.send_batch(&mut many).await.datagrams, 10);
            let got = recv_for(Duration::from_millis(100)).await;
            assert_eq!(got.len(), 10);
            assert!(got
                .iter()
                .enumerate()
                .all(|(i, d)| d == &vec![i as u8; 500]));
        }));
    }
}
