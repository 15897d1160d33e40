//! `plumcore-bench scale`: one node with 1, 2, 4, ... shards (up to the machine's
//! cores) under blast, one blaster thread per shard; messages/s delivered and the
//! efficiency against linear scaling of the 1-shard figure.

use serde::Serialize;

use crate::blast::{self, BlastConfig};
use crate::report::median;

/// One shard count's result.
#[derive(Clone, Debug, Serialize)]
pub struct ScalePoint {
    pub shards: usize,
    /// Each run's delivered messages/s (all shards together).
    pub runs: Vec<f64>,
    pub median_msgs_per_s: f64,
    pub per_shard_msgs_per_s: f64,
    /// median / (shards x the 1-shard median).
    pub efficiency: f64,
}

/// 1, 2, 4, ... up to `cores` (at least 1).
pub fn shard_counts(cores: usize) -> Vec<usize> {
    std::iter::successors(Some(1usize), |n| Some(n * 2))
        .take_while(|&n| n <= cores.max(1))
        .collect()
}

/// Core placement for `n` shards on `cores` cores: shards on 1..=n with the control
/// core on 0 while there is room, else shards on 0..n and the control core unpinned.
pub fn placement(n: usize, cores: usize) -> (Vec<Option<usize>>, Option<usize>) {
    if cores < 2 {
        (vec![None; n], None)
    } else if n < cores {
        ((1..=n).map(Some).collect(), Some(0))
    } else {
        ((0..n).map(|k| Some(k % cores)).collect(), None)
    }
}

/// Efficiency of each point against the first (1-shard) point.
pub fn efficiencies(points: &mut [ScalePoint]) {
    let base = points.first().map_or(0.0, |p| p.median_msgs_per_s);
    for p in points.iter_mut() {
        p.per_shard_msgs_per_s = p.median_msgs_per_s / p.shards.max(1) as f64;
        p.efficiency = if base > 0.0 {
            p.median_msgs_per_s / (base * p.shards as f64)
        } else {
            0.0
        };
    }
}

/// Runs every shard count `runs` times; `on_run` sees (shards, run, msgs/s).
pub fn run(
    template: &BlastConfig,
    cores: usize,
    runs: usize,
    mut on_run: impl FnMut(usize, usize, f64),
) -> Vec<ScalePoint> {
    let mut points: Vec<ScalePoint> = shard_counts(cores)
        .into_iter()
        .map(|n| {
            let (shard_cores, control_core) = placement(n, cores);
            let cfg = BlastConfig {
                shard_cores,
                control_core,
                raw: false,
                ..template.clone()
            };
            let results: Vec<f64> = (0..runs.max(1))
                .map(|r| {
                    let m = blast::run(&cfg).plumcore_msgs_per_s;
                    on_run(n, r, m);
                    m
                })
                .collect();
            ScalePoint {
                shards: n,
                median_msgs_per_s: median(results.clone()),
                runs: results,
                per_shard_msgs_per_s: 0.0,
                efficiency: 0.0,
            }
        })
        .collect();
    efficiencies(&mut points);
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_powers_of_two_up_to_cores() {
        assert_eq!(shard_counts(1), vec![1]);
        assert_eq!(shard_counts(2), vec![1, 2]);
        assert_eq!(shard_counts(12), vec![1, 2, 4, 8]);
        assert_eq!(shard_counts(16), vec![1, 2, 4, 8, 16]);
    }

    #[test]
    fn placement_keeps_core_zero_for_control_while_it_can() {
        assert_eq!(placement(1, 2), (vec![Some(1)], Some(0)));
        assert_eq!(placement(2, 2), (vec![Some(0), Some(1)], None));
        assert_eq!(placement(4, 16).0, vec![Some(1), Some(2), Some(3), Some(4)]);
        assert_eq!(placement(2, 1), (vec![None, None], None));
    }

    #[test]
    fn efficiency_is_against_linear_from_one_shard() {
        let p = |shards, m| ScalePoint {
            shards,
            runs: vec![m],
            median_msgs_per_s: m,
            per_shard_msgs_per_s: 0.0,
            efficiency: 0.0,
        };
        let mut pts = vec![p(1, 100.0), p(2, 180.0), p(4, 400.0)];
        efficiencies(&mut pts);
        assert_eq!(pts[0].efficiency, 1.0);
        assert!((pts[1].efficiency - 0.9).abs() < 1e-12);
        assert_eq!(pts[2].efficiency, 1.0);
        assert_eq!(pts[1].per_shard_msgs_per_s, 90.0);
    }
}
