//! `plumcore-bench idle`: what an idle node costs. Starts one `plumcore node` process
//! (no peers, no traffic), lets it settle, then reads its CPU time (`utime + stime`
//! from `/proc/PID/stat`) and its shards' wake-ups (`plumtree_shard_wakeups_total`
//! from `/metrics`) over the measured window, and its RSS at the end.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use plumcore::harness::launch::{NodeLaunch, StderrTo};
use plumcore::harness::ports;

use crate::machine::{cpu_seconds, rss_mib};
use crate::nodes::{scrape, NodeHandle};

/// What one idle run measured.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    pub shards: u16,
    pub duration_s: f64,
    /// CPU used over the window, in percent of one core.
    pub cpu_percent_of_core: f64,
    pub rss_mib: f64,
    /// Wake-ups per second of all shards together, and of the control core.
    pub shard_wakeups_per_s: f64,
    pub control_wakeups_per_s: f64,
}

/// `plumtree_shard_wakeups_total`, summed over the shards and for the control core.
fn wakeups(text: &str) -> (f64, f64) {
    let name = "plumtree_shard_wakeups_total{";
    let mut shards = 0.0;
    let mut control = 0.0;
    for l in text.lines().filter(|l| l.starts_with(name)) {
        let v: f64 = l
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if l.contains("shard=\"control\"") {
            control += v;
        } else {
            shards += v;
        }
    }
    (shards, control)
}

/// One run: a node with `shards` shards, idle for `settle` then measured `duration`.
pub fn run(binary: &Path, shards: u16, settle: Duration, duration: Duration) -> Result<IdleReport> {
    let mut taken = Vec::new();
    let base = ports::free_udp_run(shards + 1, &mut taken)?;
    let bind = SocketAddr::from(([127, 0, 0, 1], base));
    let admin = ports::free_tcp()?;
    let mut launch = NodeLaunch::new(binary, bind, admin, shards);
    launch.stderr = StderrTo::Null;
    let child = launch
        .start()
        .with_context(|| format!("starting {}", binary.display()))?;
    let node = NodeHandle {
        admin,
        client: None,
        child: Some(child),
        deliveries: None,
        log: None,
    };
    let pid = node.pid().context("no pid")?;
    let t = Instant::now();
    while scrape(admin).is_empty() {
        if t.elapsed() > Duration::from_secs(10) {
            bail!("the node's admin plane did not answer within 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(settle);
    let (w0, c0) = wakeups(&scrape(admin));
    let cpu0 = cpu_seconds(pid).context("reading /proc/PID/stat")?;
    let t0 = Instant::now();
    std::thread::sleep(duration);
    let cpu1 = cpu_seconds(pid).context("reading /proc/PID/stat")?;
    let secs = t0.elapsed().as_secs_f64();
    let (w1, c1) = wakeups(&scrape(admin));
    let rss = rss_mib(pid).unwrap_or(0.0);
    drop(node);
    Ok(IdleReport {
        shards,
        duration_s: secs,
        cpu_percent_of_core: 100.0 * (cpu1 - cpu0) / secs,
        rss_mib: rss,
        shard_wakeups_per_s: (w1 - w0) / secs,
        control_wakeups_per_s: (c1 - c0) / secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakeups_split_shards_from_control() {
        let text = "# TYPE plumtree_shard_wakeups counter\n\
                    plumtree_shard_wakeups_total{shard=\"0\"} 10\n\
                    plumtree_shard_wakeups_total{shard=\"1\"} 5\n\
                    plumtree_shard_wakeups_total{shard=\"control\"} 7\n";
        assert_eq!(wakeups(text), (15.0, 7.0));
    }
}
