//! `soak`: what a long steady run does to a node's memory. Samples every node's RSS
//! (`/proc/<pid>/statm`) and its bounded structures (seen map, payload cache, pending
//! grafts, IHave queue, from `/metrics`) at a fixed period, and judges each series
//! flat or not once the TTLs have passed: a least-squares slope over the plateau,
//! expressed as growth per minute relative to the plateau mean.

use serde::Serialize;

/// The per-node series a soak samples, in report order: `(metric, label)`. Metrics
/// are summed over a node's shards.
pub const SERIES: &[(&str, &str)] = &[
    ("plumtree_seen_map_size", "seen_origins"),
    ("plumtree_seen_map_bytes", "seen_map_bytes"),
    ("plumtree_cache_entries", "cache_entries"),
    ("plumtree_cache_bytes", "cache_bytes"),
    ("plumtree_pending_grafts", "pending_grafts"),
    ("plumtree_ihave_queue_size", "ihave_queue"),
];

/// One node at one instant.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since publishing started.
    pub t: f64,
    pub node: usize,
    pub rss_bytes: u64,
    /// Values of [`SERIES`], in order.
    pub values: Vec<f64>,
}

/// How one series behaved after the warm-up.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Trend {
    pub series: String,
    pub samples: usize,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    /// Least-squares slope, per minute, as a percentage of `mean` (0 when the mean
    /// is 0).
    pub growth_pct_per_min: f64,
}

/// Resident set size of `pid` in bytes, from `/proc/<pid>/statm`.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// Sum of every sample of `name` (all label sets) in a Prometheus text exposition.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !(rest.starts_with(' ') || rest.starts_with('{')) {
                return None;
            }
            l.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .sum()
}

/// The trend of `points` `(t seconds, value)` from `after` seconds on; `None` with
/// fewer than two points there.
pub fn trend(series: &str, points: &[(f64, f64)], after: f64) -> Option<Trend> {
    let pts: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.0 >= after).collect();
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let mt = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let mv = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let cov: f64 = pts.iter().map(|p| (p.0 - mt) * (p.1 - mv)).sum();
    let var: f64 = pts.iter().map(|p| (p.0 - mt).powi(2)).sum();
    let slope = if var == 0.0 { 0.0 } else { cov / var };
    Some(Trend {
        series: series.to_string(),
        samples: pts.len(),
        mean: mv,
        min: pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min),
        max: pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max),
        growth_pct_per_min: if mv == 0.0 {
            0.0
        } else {
            slope * 60.0 / mv * 100.0
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_series_has_no_growth_and_a_ramp_has_its_slope() {
        let flat: Vec<(f64, f64)> = (0..100)
            .map(|i| (i as f64, 1000.0 + if i % 2 == 0 { 5.0 } else { -5.0 }))
            .collect();
        let t = trend("flat", &flat, 10.0).unwrap();
        assert_eq!(t.samples, 90);
        assert!(t.growth_pct_per_min.abs() < 0.5, "{t:?}");
        assert_eq!((t.min, t.max), (995.0, 1005.0));

        // 1 unit per second on a mean of ~100: 60 per minute = about 60 % per minute.
        let ramp: Vec<(f64, f64)> = (0..=100).map(|i| (i as f64, 50.0 + i as f64)).collect();
        let t = trend("ramp", &ramp, 0.0).unwrap();
        assert!((t.mean - 100.0).abs() < 1e-9);
        assert!((t.growth_pct_per_min - 60.0).abs() < 1e-9, "{t:?}");
        // Warm-up excluded: only what comes after `after` counts.
        let step: Vec<(f64, f64)> = (0..100)
            .map(|i| (i as f64, if i < 50 { i as f64 } else { 50.0 }))
            .collect();
        assert_eq!(trend("step", &step, 50.0).unwrap().growth_pct_per_min, 0.0);
        assert!(trend("short", &step, 99.0).is_none());
    }

    #[test]
    fn metric_sum_adds_every_shard_and_ignores_prefixes_and_comments() {
        let text = "# HELP plumtree_cache_bytes x\n\
                    plumtree_cache_bytes{shard=\"0\"} 100\n\
                    plumtree_cache_bytes{shard=\"1\"} 23\n\
                    plumtree_cache_bytes_total 999\n\
                    plumtree_cache_entries 7\n";
        assert_eq!(metric_sum(text, "plumtree_cache_bytes"), 123.0);
        assert_eq!(metric_sum(text, "plumtree_cache_entries"), 7.0);
        assert_eq!(metric_sum(text, "plumtree_missing"), 0.0);
    }

    #[test]
    fn rss_of_this_process_is_plausible() {
        let rss = rss_bytes(std::process::id()).unwrap();
        assert!(rss > 100_000 && rss < 64 << 30, "{rss}");
    }
}
