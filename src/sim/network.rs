//! The simulated network: overlay construction and the link model (latency, loss,
//! duplication, partition), all drawn from the simulator's seeded RNG.

use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Builds a connected random overlay with average degree about `degree`: a random ring
/// (which guarantees connectivity) plus random chords. Returns adjacency lists.
pub fn random_overlay(n: usize, degree: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<u32>> {
    let mut adj: Vec<Vec<u32>> = vec![Vec::new(); n];
    if n < 2 {
        return adj;
    }
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.shuffle(rng);
    let link = |adj: &mut Vec<Vec<u32>>, a: u32, b: u32| {
        if a != b && !adj[a as usize].contains(&b) {
            adj[a as usize].push(b);
            adj[b as usize].push(a);
        }
    };
    for k in 0..n {
        link(&mut adj, order[k], order[(k + 1) % n]);
    }
    let target = degree.min(n - 1);
    for a in 0..n as u32 {
        let mut tries = 0;
        while adj[a as usize].len() < target && tries < 4 * degree {
            tries += 1;
            let b = rng.gen_range(0..n as u32);
            // Keep degrees bounded: skip peers already well connected.
            if adj[b as usize].len() < target + 2 {
                link(&mut adj, a, b);
            }
        }
    }
    adj
}

/// Link model parameters.
#[derive(Clone, Debug)]
pub struct LinkModel {
    /// Shortest one-way delay of a datagram.
    pub latency_min: Duration,
    /// Longest one-way delay (each datagram draws uniformly between the two).
    pub latency_max: Duration,
    /// Extra uniform delay per datagram (causes reordering).
    pub jitter: Duration,
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Probability a datagram is delivered twice.
    pub duplicate: f64,
}

impl LinkModel {
    /// Fixed base latency of the link a-b (symmetric), derived from the pair so it
    /// needs no storage.
    pub fn base_latency(&self, a: u32, b: u32) -> Duration {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let mut h = ((lo as u64) << 32 | hi as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
        let span = self.latency_max.saturating_sub(self.latency_min).as_nanos() as u64;
        let off = if span == 0 { 0 } else { h % (span + 1) };
        self.latency_min + Duration::from_nanos(off)
    }

    /// Delivery delays for one datagram on a-b: empty if lost, two if duplicated.
    pub fn delays(&self, a: u32, b: u32, rng: &mut ChaCha8Rng) -> Vec<Duration> {
        if self.loss > 0.0 && rng.gen_bool(self.loss) {
            return Vec::new();
        }
        let base = self.base_latency(a, b);
        let j = self.jitter.as_nanos() as u64;
        let jitter = |rng: &mut ChaCha8Rng| {
            Duration::from_nanos(if j == 0 { 0 } else { rng.gen_range(0..=j) })
        };
        let mut v = vec![base + jitter(rng)];
        if self.duplicate > 0.0 && rng.gen_bool(self.duplicate) {
            v.push(base + jitter(rng));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn connected(adj: &[Vec<u32>]) -> bool {
        let mut seen = vec![false; adj.len()];
        let mut stack = vec![0u32];
        seen[0] = true;
        while let Some(a) = stack.pop() {
            for &b in &adj[a as usize] {
                if !seen[b as usize] {
                    seen[b as usize] = true;
                    stack.push(b);
                }
            }
        }
        seen.iter().all(|&s| s)
    }

    #[test]
    fn overlay_is_connected_symmetric_and_near_degree() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let adj = random_overlay(500, 8, &mut rng);
        assert!(connected(&adj));
        for (a, peers) in adj.iter().enumerate() {
            assert!(
                peers.len() >= 2 && peers.len() <= 12,
                "degree {}",
                peers.len()
            );
            for &b in peers {
                assert!(adj[b as usize].contains(&(a as u32)));
                assert_ne!(b as usize, a);
            }
        }
        let avg = adj.iter().map(Vec::len).sum::<usize>() as f64 / 500.0;
        assert!((7.0..=9.5).contains(&avg), "average degree {avg}");
    }

    #[test]
    fn latency_is_symmetric_and_in_range() {
        let m = LinkModel {
            latency_min: Duration::from_millis(5),
            latency_max: Duration::from_millis(50),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
        };
        for (a, b) in [(1, 2), (7, 3), (100, 5000)] {
            let l = m.base_latency(a, b);
            assert_eq!(l, m.base_latency(b, a));
            assert!(l >= m.latency_min && l <= m.latency_max);
        }
    }

    #[test]
    fn loss_and_duplication_follow_their_probabilities() {
        let m = LinkModel {
            latency_min: Duration::from_millis(1),
            latency_max: Duration::from_millis(1),
            jitter: Duration::ZERO,
            loss: 0.2,
            duplicate: 0.1,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut counts = [0usize; 3];
        for _ in 0..10_000 {
            counts[m.delays(0, 1, &mut rng).len()] += 1;
        }
        assert!((1800..2200).contains(&counts[0]), "{counts:?}");
        assert!((600..1000).contains(&counts[2]), "{counts:?}");
    }
}
