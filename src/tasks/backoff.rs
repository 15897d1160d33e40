//! Exponential, capped, jittered backoff: pure computation, seeded RNG for reproducibility.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// How retry delays grow after consecutive failures.
///
/// `jitter` is a fraction in `[0, 1]`: each delay is drawn uniformly from
/// `[base * (1 - jitter), base * (1 + jitter)]` and then capped at `max`, so restarts
/// of many peers do not synchronise (thundering herd) yet never exceed the cap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BackoffConfig {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Upper bound on any delay, jitter included.
    pub max: Duration,
    /// Growth factor per consecutive failure (values below 1 are treated as 1).
    pub multiplier: f64,
    /// Jitter fraction in `[0, 1]`; 0 disables jitter.
    pub jitter: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.1,
        }
    }
}

impl BackoffConfig {
    /// Un-jittered delay for the given zero-based attempt: `initial * multiplier^attempt`,
    /// capped at `max`.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let mult = self.multiplier.max(1.0);
        let initial = self.initial.as_secs_f64();
        let max = self.max.as_secs_f64();
        let exp = mult.powi(attempt.min(i32::MAX as u32) as i32);
        let secs = (initial * exp).min(max);
        if secs.is_finite() {
            Duration::from_secs_f64(secs.max(0.0))
        } else {
            self.max
        }
    }

    /// Jittered delay for `attempt`, using `rng`; always within
    /// `[base * (1 - jitter), min(base * (1 + jitter), max)]`.
    pub fn delay<R: Rng>(&self, attempt: u32, rng: &mut R) -> Duration {
        let base = self.base_delay(attempt).as_secs_f64();
        let jitter = self.jitter.clamp(0.0, 1.0);
        let secs = if jitter > 0.0 {
            let u: f64 = rng.gen_range(-1.0..=1.0);
            base * (1.0 + jitter * u)
        } else {
            base
        };
        Duration::from_secs_f64(secs.clamp(0.0, self.max.as_secs_f64()))
    }
}

/// Stateful backoff sequence: counts consecutive failures and owns a seeded RNG.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
    rng: ChaCha8Rng,
}

impl Backoff {
    /// A sequence starting at attempt 0; `seed` makes the jitter reproducible.
    pub fn new(config: BackoffConfig, seed: u64) -> Self {
        Self {
            config,
            attempt: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Delay to wait before the next retry; advances the attempt counter.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.config.delay(self.attempt, &mut self.rng);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// Back to the initial delay, after the guarded operation proved stable.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Number of delays handed out since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The configuration this sequence follows.
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }
}

/// Stable 64-bit seed from a name (FNV-1a), so each task gets its own jitter stream.
pub fn seed_from_name(base: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ base;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(jitter: f64) -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(200),
            multiplier: 2.0,
            jitter,
        }
    }

    #[test]
    fn base_grows_exponentially_and_caps() {
        let c = cfg(0.0);
        assert_eq!(c.base_delay(0), Duration::from_millis(10));
        assert_eq!(c.base_delay(1), Duration::from_millis(20));
        assert_eq!(c.base_delay(3), Duration::from_millis(80));
        assert_eq!(c.base_delay(5), Duration::from_millis(200));
        assert_eq!(c.base_delay(u32::MAX), Duration::from_millis(200));
    }

    #[test]
    fn no_jitter_sequence_is_deterministic() {
        let mut b = Backoff::new(cfg(0.0), 1);
        let got: Vec<_> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, vec![10, 20, 40, 80, 160, 200]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(10));
    }

    #[test]
    fn jitter_stays_within_bounds_and_under_cap() {
        let c = cfg(0.5);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for attempt in 0..12 {
            let base = c.base_delay(attempt).as_secs_f64();
            let mut distinct = std::collections::BTreeSet::new();
            for _ in 0..200 {
                let d = c.delay(attempt, &mut rng).as_secs_f64();
                assert!(
                    d >= base * 0.5 - 1e-9,
                    "attempt {attempt}: {d} < lower bound"
                );
                assert!(
                    d <= base * 1.5 + 1e-9,
                    "attempt {attempt}: {d} > upper bound"
                );
                assert!(d <= c.max.as_secs_f64() + 1e-9, "over cap");
                distinct.insert((d * 1e9) as u64);
            }
            assert!(distinct.len() > 10, "jitter should vary the delay");
        }
    }

    #[test]
    fn same_seed_same_sequence() {
        let mut a = Backoff::new(cfg(0.3), 42);
        let mut b = Backoff::new(cfg(0.3), 42);
        for _ in 0..8 {
            assert_eq!(a.next_delay(), b.next_delay());
        }
        assert_ne!(seed_from_name(0, "a"), seed_from_name(0, "b"));
    }
}
