//! The arithmetic of a cluster report, kept apart from the processes and sockets so
//! that it is tested on synthetic inputs: per-message reliability, RMR, LDH and the
//! latency percentiles.
//!
//! Definitions (Leitão, Pereira, Rodrigues, "Epidemic Broadcast Trees", SRDS 2007):
//! - **reliability** of a broadcast: the fraction of the live nodes that delivered it;
//!   the run's reliability is the mean over the measured broadcasts.
//! - **RMR** (relative message redundancy): `m / (n - 1) - 1` for one broadcast, where
//!   `m` is the payload-carrying messages (Gossip frames) sent for it and `n` the nodes
//!   that delivered it. Over a run, `sum(m) / sum(n - 1) - 1`: 0 means every node got
//!   the payload exactly once; flooding a k-regular overlay gives about k - 1.
//! - **LDH** (last delivery hop): the hops of the last node to deliver a broadcast (the
//!   largest hop count among its deliveries); reported as the mean and the max.

use hdrhistogram::Histogram;
use serde::Serialize;

/// What the nodes recorded about one measured broadcast.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MessageOutcome {
    /// Distinct nodes that delivered it.
    pub receivers: u32,
    /// Largest hop count among its deliveries (`None` when hops are not known).
    pub last_hop: Option<u32>,
}

/// Latency percentiles in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

/// A latency histogram in nanoseconds, 1 ns to 60 s at 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// p50/p90/p99/p99.9/max of `h` (nanoseconds in, microseconds out).
pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    Percentiles {
        count: h.len(),
        p50_us: us(h.value_at_quantile(0.50)),
        p90_us: us(h.value_at_quantile(0.90)),
        p99_us: us(h.value_at_quantile(0.99)),
        p999_us: us(h.value_at_quantile(0.999)),
        max_us: us(h.max()),
        mean_us: h.mean() / 1000.0,
    }
}

/// Reliability figures over the measured broadcasts.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Reliability {
    /// Mean over broadcasts of receivers / nodes (1.0 when there were none).
    pub mean: f64,
    /// Broadcasts that reached every node, as a fraction.
    pub atomic_fraction: f64,
    /// The worst broadcast's receivers / nodes.
    pub min: f64,
}

/// Reliability of `outcomes` in a cluster of `nodes` live nodes.
pub fn reliability(outcomes: &[MessageOutcome], nodes: u32) -> Reliability {
    if outcomes.is_empty() || nodes == 0 {
        return Reliability {
            mean: 1.0,
            atomic_fraction: 1.0,
            min: 1.0,
        };
    }
    let frac = |o: &MessageOutcome| f64::from(o.receivers.min(nodes)) / f64::from(nodes);
    let sum: f64 = outcomes.iter().map(frac).sum();
    Reliability {
        mean: sum / outcomes.len() as f64,
        atomic_fraction: outcomes.iter().filter(|o| o.receivers >= nodes).count() as f64
            / outcomes.len() as f64,
        min: outcomes.iter().map(frac).fold(1.0, f64::min),
    }
}

/// RMR over a run: `gossip_sent / sum(receivers - 1) - 1`; `None` when no broadcast
/// reached a second node (the ratio is undefined).
pub fn rmr(gossip_sent: u64, outcomes: &[MessageOutcome]) -> Option<f64> {
    let useful: u64 = outcomes
        .iter()
        .map(|o| u64::from(o.receivers.saturating_sub(1)))
        .sum();
    (useful > 0).then(|| gossip_sent as f64 / useful as f64 - 1.0)
}

/// Last delivery hop: (mean, max) over the broadcasts whose hops are known.
pub fn ldh(outcomes: &[MessageOutcome]) -> Option<(f64, u32)> {
    let hops: Vec<u32> = outcomes.iter().filter_map(|o| o.last_hop).collect();
    if hops.is_empty() {
        return None;
    }
    let mean = hops.iter().map(|&h| f64::from(h)).sum::<f64>() / hops.len() as f64;
    Some((mean, hops.iter().copied().max().unwrap_or(0)))
}

/// The median of `v` (the upper middle for an even count); 0 for none.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(receivers: u32, last_hop: Option<u32>) -> MessageOutcome {
        MessageOutcome {
            receivers,
            last_hop,
        }
    }

    #[test]
    fn percentiles_of_uniform_latencies() {
        let mut h = latency_histogram();
        // 1..=1000 microseconds, once each.
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let p = percentiles(&h);
        assert_eq!(p.count, 1000);
        let close = |a: f64, b: f64| (a - b).abs() <= b * 0.002 + 0.001;
        assert!(close(p.p50_us, 500.0), "{p:?}");
        assert!(close(p.p90_us, 900.0), "{p:?}");
        assert!(close(p.p99_us, 990.0), "{p:?}");
        assert!(close(p.p999_us, 999.0), "{p:?}");
        assert!(close(p.max_us, 1000.0), "{p:?}");
        assert!(close(p.mean_us, 500.5), "{p:?}");
    }

    #[test]
    fn percentiles_of_nothing_are_zero() {
        assert_eq!(percentiles(&latency_histogram()), Percentiles::default());
    }

    #[test]
    fn one_outlier_shows_in_p999_and_max_only() {
        let mut h = latency_histogram();
        for _ in 0..9_999 {
            h.record(100_000).unwrap(); // 100 us
        }
        h.record(50_000_000).unwrap(); // 50 ms
        let p = percentiles(&h);
        assert!((p.p99_us - 100.0).abs() < 0.1, "{p:?}");
        assert!((p.p999_us - 100.0).abs() < 0.1, "{p:?}");
        assert!((p.max_us - 50_000.0).abs() < 50.0, "{p:?}");
    }

    #[test]
    fn reliability_is_mean_fraction_of_nodes() {
        // 4 nodes: one broadcast reached all, one reached 2 of 4.
        let r = reliability(&[o(4, None), o(2, None)], 4);
        assert!((r.mean - 0.75).abs() < 1e-12);
        assert!((r.atomic_fraction - 0.5).abs() < 1e-12);
        assert!((r.min - 0.5).abs() < 1e-12);
        let all = reliability(&[o(4, None); 10], 4);
        assert_eq!((all.mean, all.atomic_fraction, all.min), (1.0, 1.0, 1.0));
        // Duplicated counts never push a broadcast above 1.
        assert_eq!(reliability(&[o(9, None)], 4).mean, 1.0);
    }

    #[test]
    fn rmr_matches_the_paper() {
        // 10 nodes, a perfect tree: 9 payload sends per broadcast -> RMR 0.
        let outs = vec![o(10, None); 5];
        assert_eq!(rmr(45, &outs), Some(0.0));
        // Flooding a 4-regular overlay of 10 nodes: the origin sends 4, the others 3
        // each = 31 sends for 9 useful -> 31/9 - 1.
        let r = rmr(31, &[o(10, None)]).unwrap();
        assert!((r - (31.0 / 9.0 - 1.0)).abs() < 1e-12);
        // Nothing reached a second node: undefined.
        assert_eq!(rmr(3, &[o(1, None)]), None);
    }

    #[test]
    fn ldh_is_mean_and_max_of_last_hops() {
        assert_eq!(
            ldh(&[o(3, Some(2)), o(3, Some(4)), o(3, None)]),
            Some((3.0, 4))
        );
        assert_eq!(ldh(&[o(3, None)]), None);
    }

    #[test]
    fn median_picks_the_middle() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![]), 0.0);
    }
}
