//! The machine a result was measured on, written into every `--json` report, and the
//! per-process CPU and memory readings `cluster` takes from `/proc`.

use serde::Serialize;

/// Cores, CPU model, kernel and memory: enough to tell two results' machines apart.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub memory_mib: u64,
    /// 1-minute load average when the run started: other work on the machine.
    pub loadavg_1m: f64,
}

/// Describes this machine.
pub fn describe() -> Machine {
    let topo = core_pinning::Topology::detect();
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let memory_kib = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    Machine {
        cores: topo.online().len(),
        cpu_model: topo.cpu_model().unwrap_or("unknown").to_string(),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        memory_mib: memory_kib / 1024,
        loadavg_1m: read("/proc/loadavg")
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
    }
}

/// Host-wide UDP datagrams the kernel dropped for want of receive-buffer room
/// (`RcvbufErrors` in `/proc/net/snmp`); on loopback these are the datagrams a busy
/// receiver never saw.
pub fn udp_rcvbuf_errors() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let i = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are space separated.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line, 12 and 13 after `) `.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (tick > 0).then(|| (utime + stime) as f64 / tick as f64)
}

/// CPU seconds (user + system) used so far by this process's threads whose name
/// starts with `prefix` (from `/proc/self/task/*/stat`; live threads only).
pub fn thread_cpu_seconds(prefix: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    dir.flatten()
        .filter_map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            if !comm.trim_end().starts_with(prefix) {
                return None;
            }
            let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
            let after = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = after.split_whitespace().collect();
            let ut: u64 = f.get(11)?.parse().ok()?;
            let st: u64 = f.get(12)?.parse().ok()?;
            Some((ut + st) as f64 / tick)
        })
        .sum()
}

/// Resident set size of a process in MiB, from `/proc/<pid>/statm`.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (page > 0).then(|| (pages * page as u64) as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let before = cpu_seconds(me).unwrap();
        // Burn CPU until the kernel's tick-granular counter moves (bounded).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut x = 0u64;
        while cpu_seconds(me).unwrap() <= before && std::time::Instant::now() < deadline {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
        }
        assert!(cpu_seconds(me).unwrap() > before);
        assert!(rss_mib(me).unwrap() > 0.5);
        assert!(describe().cores >= 1);
        assert_eq!(cpu_seconds(u32::MAX), None);
        assert!(udp_rcvbuf_errors().is_some());
    }
}
