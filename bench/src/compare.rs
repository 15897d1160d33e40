//! `plumcore-bench compare`: the same cluster workload (nodes, payload, rate, duration)
//! on plumcore, on plumcore in flood mode (the classic-gossip baseline) and, when its
//! bench-only binary is built, on memberlist-plumtree; the table side by side, then a
//! short rate search for the highest rate each sustains at reliability 1.0.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::cluster::{self, ClusterConfig, ClusterReport, ClusterRun};
use crate::memberlist;

/// The systems compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum System {
    Plumcore,
    PlumcoreFlood,
    MemberlistPlumtree,
    NatsServer,
}

impl System {
    /// Display name (also the report's `system`).
    pub fn name(self) -> &'static str {
        match self {
            System::Plumcore => "plumcore",
            System::PlumcoreFlood => "plumcore --flood",
            System::MemberlistPlumtree => "memberlist-plumtree",
            System::NatsServer => "nats-server",
        }
    }
}

/// Runs `cfg`'s workload on `system`.
pub fn run_one(system: System, cfg: &ClusterConfig) -> Result<ClusterRun> {
    match system {
        System::Plumcore => cluster::run(&ClusterConfig {
            flood: false,
            ..cfg.clone()
        }),
        System::PlumcoreFlood => cluster::run(&ClusterConfig {
            flood: true,
            ..cfg.clone()
        }),
        System::MemberlistPlumtree => memberlist::run(cfg),
        System::NatsServer => crate::natsserver::run(cfg),
    }
}

/// Whether a run sustained its rate: every measured broadcast reached every node,
/// nothing was refused, and the publishers kept up (95% of the target).
pub fn sustained(r: &ClusterReport) -> bool {
    r.measured > 0
        && r.reliability.atomic_fraction >= 1.0
        && r.refused == 0
        && r.achieved_rate >= 0.95 * f64::from(r.rate_target)
}

/// The search itself over `probe(rate) -> sustained?`: doubles from `start` while
/// sustained (up to `cap`), or halves (three times at most) when `start` is not, then
/// probes the midpoint between the highest good and the lowest bad rate once.
pub fn highest_sustained(
    start: u32,
    cap: u32,
    probe: &mut impl FnMut(u32) -> Result<bool>,
) -> Result<Option<u32>> {
    let (mut good, mut bad) = (None::<u32>, None::<u32>);
    let mut rate = start.max(1);
    loop {
        if probe(rate)? {
            good = Some(rate);
            if rate >= cap {
                break;
            }
            rate = (rate * 2).min(cap);
        } else {
            bad = Some(rate);
            break;
        }
    }
    let mut down = start.max(1);
    for _ in 0..3 {
        if good.is_some() || down < 2 {
            break;
        }
        down /= 2;
        if probe(down)? {
            good = Some(down);
        } else {
            bad = Some(down);
        }
    }
    if let (Some(g), Some(b)) = (good, bad) {
        let mid = g + (b - g) / 2;
        if mid > g && probe(mid)? {
            good = Some(mid);
        }
    }
    Ok(good)
}

/// One probe of the rate search.
#[derive(Clone, Debug, Serialize)]
pub struct Probe {
    pub rate: u32,
    pub sustained: bool,
    pub achieved_rate: f64,
    pub reliability: f64,
    pub refused: u64,
    pub p99_us: f64,
}

/// The search's outcome for one system.
#[derive(Clone, Debug, Serialize)]
pub struct RateSearch {
    pub system: String,
    /// Highest probed rate that was sustained (`None`: not even the first).
    pub max_sustained_rate: Option<u32>,
    pub probes: Vec<Probe>,
}

/// Runs [`highest_sustained`] with real cluster probes of `probe_duration`.
pub fn search(
    system: System,
    base: &ClusterConfig,
    start: u32,
    cap: u32,
    probe_duration: Duration,
    mut on_probe: impl FnMut(&Probe),
) -> Result<RateSearch> {
    let mut probes = Vec::new();
    let mut probe = |rate: u32| -> Result<bool> {
        let cfg = ClusterConfig {
            rate,
            duration: probe_duration,
            warmup: Duration::from_secs(1),
            progress: false,
            ..base.clone()
        };
        let r = run_one(system, &cfg)?.report;
        let p = Probe {
            rate,
            sustained: sustained(&r),
            achieved_rate: r.achieved_rate,
            reliability: r.reliability.mean,
            refused: r.refused,
            p99_us: r.latency.p99_us,
        };
        on_probe(&p);
        let ok = p.sustained;
        probes.push(p);
        Ok(ok)
    };
    let good = highest_sustained(start, cap, &mut probe)?;
    Ok(RateSearch {
        system: system.name().into(),
        max_sustained_rate: good,
        probes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Reliability;

    #[test]
    fn search_doubles_halves_and_bisects_once() {
        let run = |limit: u32, start: u32| {
            let mut probes = Vec::new();
            let got = highest_sustained(start, 64_000, &mut |r| {
                probes.push(r);
                Ok(r <= limit)
            })
            .unwrap();
            (got, probes)
        };
        assert_eq!(
            run(3000, 500),
            (Some(3000), vec![500, 1000, 2000, 4000, 3000])
        );
        assert_eq!(run(300, 500), (Some(250), vec![500, 250, 375]));
        assert_eq!(run(10, 500), (None, vec![500, 250, 125, 62]));
        assert_eq!(
            run(u32::MAX, 16_000),
            (Some(64_000), vec![16_000, 32_000, 64_000])
        );
    }

    #[test]
    fn sustained_needs_full_reliability_no_refusals_and_the_rate() {
        let ok = ClusterReport {
            measured: 100,
            rate_target: 100,
            achieved_rate: 99.0,
            reliability: Reliability {
                mean: 1.0,
                atomic_fraction: 1.0,
                min: 1.0,
            },
            ..ClusterReport::default()
        };
        assert!(sustained(&ok));
        let lossy = ClusterReport {
            reliability: Reliability {
                mean: 0.999,
                atomic_fraction: 0.99,
                min: 0.5,
            },
            ..ok.clone()
        };
        assert!(!sustained(&lossy));
        assert!(!sustained(&ClusterReport {
            refused: 1,
            ..ok.clone()
        }));
        assert!(!sustained(&ClusterReport {
            achieved_rate: 80.0,
            ..ok.clone()
        }));
        assert!(!sustained(&ClusterReport { measured: 0, ..ok }));
    }
}
