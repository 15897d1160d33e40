//! Per-source flood limits on a shard's receive path: a token bucket per source
//! address, checked before a datagram is authenticated or decoded, so that one host
//! flooding a shard socket costs that shard a hash lookup per datagram instead of
//! starving the other peers. The bucket map is bounded; when it is full a new source
//! replaces the least recently seen of a few sampled entries (approximate LRU, O(1)),
//! so spoofed source addresses cannot grow it.

use std::net::SocketAddr;
use std::time::Duration;

use rustc_hash::FxHashMap;

/// How many entries an eviction samples; the oldest of them goes.
const EVICTION_SAMPLE: usize = 8;

/// The limit: `per_sec` datagrams a second from one source, bursts of `burst`, at
/// most `max_peers` sources tracked. `per_sec == 0` turns the limiter off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Datagrams a second one source may send (`rate_limit_per_peer`; 0: off).
    pub per_sec: u32,
    /// Datagrams a source may send above its rate at once (`rate_limit_burst`).
    pub burst: u32,
    /// Sources tracked at most; the least recently seen are evicted (`rate_limit_peers`).
    pub max_peers: usize,
}

impl RateLimitConfig {
    /// No limit.
    pub const OFF: RateLimitConfig = RateLimitConfig {
        per_sec: 0,
        burst: 0,
        max_peers: 0,
    };
}

/// What the limiter did; `peers` is a gauge, the others counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimitStats {
    /// Datagrams dropped because their source was over its limit.
    pub limited: u64,
    /// Sources evicted from the full map.
    pub evictions: u64,
    /// Sources tracked now.
    pub peers: u64,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    addr: SocketAddr,
    tokens: f64,
    last: Duration,
}

/// One shard's token buckets.
#[derive(Debug)]
pub struct PeerRateLimiter {
    cfg: RateLimitConfig,
    buckets: Vec<Bucket>,
    index: FxHashMap<SocketAddr, usize>,
    rng: u64,
    stats: RateLimitStats,
}

impl PeerRateLimiter {
    /// A limiter for `cfg`; `seed` drives eviction sampling.
    pub fn new(cfg: RateLimitConfig, seed: u64) -> Self {
        PeerRateLimiter {
            cfg,
            buckets: Vec::new(),
            index: FxHashMap::default(),
            rng: seed | 1,
            stats: RateLimitStats::default(),
        }
    }

    /// Whether the limiter is on.
    pub fn enabled(&self) -> bool {
        self.cfg.per_sec > 0
    }

    /// Counters and the tracked-sources gauge.
    pub fn stats(&self) -> RateLimitStats {
        RateLimitStats {
            peers: self.buckets.len() as u64,
            ..self.stats
        }
    }

    fn next_rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Takes one token from `from`'s bucket at time `now` (any monotonic clock);
    /// `false` means drop the datagram (counted).
    pub fn allow(&mut self, from: SocketAddr, now: Duration) -> bool {
        if !self.enabled() {
            return true;
        }
        let (rate, burst) = (
            f64::from(self.cfg.per_sec),
            f64::from(self.cfg.burst.max(1)),
        );
        let slot = match self.index.get(&from) {
            Some(&i) => i,
            None => self.insert(from, now, burst),
        };
        let b = &mut self.buckets[slot];
        let elapsed = now.saturating_sub(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            self.stats.limited += 1;
            false
        }
    }

    /// A full bucket for a new source, evicting the stalest sampled one if full.
    fn insert(&mut self, from: SocketAddr, now: Duration, burst: f64) -> usize {
        let fresh = Bucket {
            addr: from,
            tokens: burst,
            last: now,
        };
        if self.buckets.len() < self.cfg.max_peers.max(1) {
            self.buckets.push(fresh);
            self.index.insert(from, self.buckets.len() - 1);
            return self.buckets.len() - 1;
        }
        let n = self.buckets.len();
        let mut victim = (self.next_rand() % n as u64) as usize;
        for _ in 1..EVICTION_SAMPLE.min(n) {
            let i = (self.next_rand() % n as u64) as usize;
            if self.buckets[i].last < self.buckets[victim].last {
                victim = i;
            }
        }
        self.index.remove(&self.buckets[victim].addr);
        self.stats.evictions += 1;
        self.buckets[victim] = fresh;
        self.index.insert(from, victim);
        victim
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn off_lets_everything_through() {
        let mut l = PeerRateLimiter::new(RateLimitConfig::OFF, 1);
        assert!((0..10_000).all(|_| l.allow(addr(1), ms(0))));
        assert_eq!(l.stats(), RateLimitStats::default());
    }

    #[test]
    fn burst_then_rate_per_source() {
        let cfg = RateLimitConfig {
            per_sec: 1000,
            burst: 50,
            max_peers: 16,
        };
        let mut l = PeerRateLimiter::new(cfg, 1);
        let passed = (0..200).filter(|_| l.allow(addr(1), ms(0))).count();
        assert_eq!(passed, 50, "a burst, then nothing at the same instant");
        // Another source is not affected by the first one's flood.
        assert!(l.allow(addr(2), ms(0)));
        // 100 ms later the first has earned 100 tokens, capped at the burst.
        let passed = (0..200).filter(|_| l.allow(addr(1), ms(100))).count();
        assert_eq!(passed, 50);
        // 10 ms later: 10 tokens.
        let passed = (0..200).filter(|_| l.allow(addr(1), ms(110))).count();
        assert_eq!(passed, 10);
        assert_eq!(l.stats().limited, 150 + 150 + 190);
        assert_eq!(l.stats().peers, 2);
    }

    #[test]
    fn map_is_bounded_and_evicts_stale_sources() {
        let cfg = RateLimitConfig {
            per_sec: 10,
            burst: 1,
            max_peers: 64,
        };
        let mut l = PeerRateLimiter::new(cfg, 7);
        // A live peer seen all the time, and 10,000 spoofed one-off sources.
        for k in 0..10_000u64 {
            let now = ms(k);
            l.allow(addr(1), now);
            assert!(l.allow(addr(10_000 + k as u16 % 50_000), now));
            assert!(l.buckets.len() <= 64 && l.index.len() == l.buckets.len());
        }
        let s = l.stats();
        assert_eq!(s.peers, 64);
        assert_eq!(s.evictions, 10_000 + 1 - 64);
        // The live peer kept its bucket (it is never the stalest of the sample for
        // long): it is still limited, not handed a fresh burst.
        assert!(l.index.contains_key(&addr(1)));
    }
}
