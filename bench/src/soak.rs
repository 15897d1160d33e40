//! `soak`: what a long steady run does to a node's memory. Samples every node's RSS
//! (`/proc/<pid>/statm`) and its bounded structures (seen map, payload cache, pending
//! grafts, IHave queue, from `/metrics`) at a fixed period, and judges each series
//! flat or not once the TTLs have passed: a least-squares slope over the plateau,
//! expressed as growth per minute relative to the plateau mean.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use plumcore::harness::metrics::metric_sum;
use serde::Serialize;

use crate::machine::{describe, rss_mib, Machine};
use crate::nodes::{scrape, start_local, LocalSpec, NodeHandle};

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
    pub rss_mib: f64,
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
    /// Change of the fitted line over the samples' span.
    pub drift: f64,
}

impl Trend {
    /// Flat: growing by less than 1 % of the mean per minute, or the fitted line moves
    /// less than half the samples' range (a small queue that swings between 0 and 50 is
    /// noise around a level, not growth).
    pub fn is_flat(&self) -> bool {
        self.growth_pct_per_min.abs() < 1.0 || self.drift.abs() < (self.max - self.min) / 2.0
    }
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
    let span = pts.last().map_or(0.0, |p| p.0) - pts.first().map_or(0.0, |p| p.0);
    Some(Trend {
        series: series.to_string(),
        drift: slope * span,
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

/// What `soak` runs.
#[derive(Clone, Debug)]
pub struct SoakConfig {
    pub nodes: usize,
    pub shards: u16,
    /// Broadcasts per second over all nodes.
    pub rate: u32,
    pub duration: Duration,
    pub payload: usize,
    pub sample_every: Duration,
    /// Samples before this are the warm-up (the TTLs filling the structures) and are
    /// left out of the trends.
    pub warmup: Duration,
}

/// Everything a soak measured.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub nodes: usize,
    pub shards: u16,
    pub rate: u32,
    pub duration_s: f64,
    pub payload: usize,
    pub warmup_s: f64,
    pub published: u64,
    pub refused: u64,
    pub series: Vec<String>,
    pub samples: Vec<Sample>,
    /// Per series, the node with the largest growth.
    pub worst: Vec<(Trend, usize)>,
    pub machine: Machine,
}

/// Starts the nodes, publishes at `rate` for `duration` while sampling, stops them.
pub fn run(cfg: &SoakConfig, binary: PathBuf, dir: &Path) -> Result<SoakReport> {
    let machine = describe();
    let nodes = start_local(
        &LocalSpec {
            nodes: cfg.nodes,
            shards: cfg.shards,
            flood: false,
            binary,
            config: None,
        },
        dir,
    )?;
    let pids: Vec<u32> = nodes.iter().filter_map(NodeHandle::pid).collect();
    let admins: Vec<SocketAddr> = nodes.iter().map(|n| n.admin).collect();
    let total = (cfg.duration.as_secs_f64() * f64::from(cfg.rate)) as u64;
    let gap = Duration::from_secs_f64(1.0 / f64::from(cfg.rate.max(1)));
    let bar = indicatif::ProgressBar::new(cfg.duration.as_secs());
    let start = Instant::now();
    let mut next_sample = start;
    let mut samples = Vec::new();
    let (mut published, mut refused) = (0u64, 0u64);
    let mut x = u64::from(std::process::id()) | 1;
    let payload = vec![b's'; cfg.payload];
    for k in 0..total {
        let now = Instant::now();
        if now >= next_sample {
            let t = now.duration_since(start).as_secs_f64();
            for (i, (&admin, &pid)) in admins.iter().zip(&pids).enumerate() {
                let text = scrape(admin);
                samples.push(Sample {
                    t,
                    node: i,
                    rss_mib: rss_mib(pid).unwrap_or(0.0),
                    values: SERIES.iter().map(|(m, _)| metric_sum(&text, m)).collect(),
                });
            }
            next_sample += cfg.sample_every;
            bar.set_position(t as u64);
        }
        let due = start + gap.mul_f64(k as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let admin = admins[(x % admins.len() as u64) as usize];
        match ureq::post(&format!("http://{admin}/broadcast"))
            .timeout(Duration::from_secs(2))
            .send_bytes(&payload)
        {
            Ok(_) => published += 1,
            Err(_) => refused += 1,
        }
    }
    bar.finish_and_clear();
    drop(nodes);
    let warmup = cfg.warmup.as_secs_f64();
    let mut worst = Vec::new();
    let mut names = vec!["rss_mib".to_string()];
    names.extend(SERIES.iter().map(|(_, l)| l.to_string()));
    for (j, name) in names.iter().enumerate() {
        let mut w: Option<(Trend, usize)> = None;
        for node in 0..cfg.nodes {
            let pts: Vec<(f64, f64)> = samples
                .iter()
                .filter(|s| s.node == node)
                .map(|s| {
                    let v = if j == 0 { s.rss_mib } else { s.values[j - 1] };
                    (s.t, v)
                })
                .collect();
            if let Some(t) = trend(name, &pts, warmup) {
                if w.as_ref()
                    .is_none_or(|(b, _)| t.growth_pct_per_min.abs() > b.growth_pct_per_min.abs())
                {
                    w = Some((t, node));
                }
            }
        }
        worst.extend(w);
    }
    Ok(SoakReport {
        nodes: cfg.nodes,
        shards: cfg.shards,
        rate: cfg.rate,
        duration_s: start.elapsed().as_secs_f64(),
        payload: cfg.payload,
        warmup_s: warmup,
        published,
        refused,
        series: names,
        samples,
        worst,
        machine,
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
        assert!(t.is_flat());
        // A small queue swinging between 0 and 50 around a level is noise, not growth.
        let swing: Vec<(f64, f64)> = (0..100)
            .map(|i| (i as f64, if i % 3 == 0 { 50.0 } else { (i % 7) as f64 }))
            .collect();
        assert!(trend("swing", &swing, 0.0).unwrap().is_flat());

        // 1 unit per second on a mean of ~100: 60 per minute = about 60 % per minute.
        let ramp: Vec<(f64, f64)> = (0..=100).map(|i| (i as f64, 50.0 + i as f64)).collect();
        let t = trend("ramp", &ramp, 0.0).unwrap();
        assert!((t.mean - 100.0).abs() < 1e-9);
        assert!((t.growth_pct_per_min - 60.0).abs() < 1e-9, "{t:?}");
        assert!((t.drift - 100.0).abs() < 1e-9);
        assert!(!t.is_flat());
        // Warm-up excluded: only what comes after `after` counts.
        let step: Vec<(f64, f64)> = (0..100)
            .map(|i| (i as f64, if i < 50 { i as f64 } else { 50.0 }))
            .collect();
        assert_eq!(trend("step", &step, 50.0).unwrap().growth_pct_per_min, 0.0);
        assert!(trend("short", &step, 99.0).is_none());
    }
}
