//! What the machine looks like: which cores this process may use, which NUMA
//! node each belongs to, and the CPU model.
//!
//! The text parsers here are pure functions tested on fixture strings; the
//! code that touches the real machine ([`Topology::detect`]) is a thin layer
//! over them, so the validation rules can be tested with fake topologies
//! ([`Topology::fake`]) on any host, including 2-core CI machines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Where the list of usable cores came from.
///
/// Why: when a core map is rejected, the operator needs to know whether
/// "core 5 does not exist" means the machine lacks it or the process's CPU
/// set (cgroup cpuset, `taskset`, container limits) excludes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreSource {
    /// `sched_getaffinity` via `core_affinity::get_core_ids()`: the cores this
    /// process is actually allowed to run on (the authoritative answer).
    AffinityMask,
    /// `/sys/devices/system/cpu/online`, used when the affinity mask is unavailable.
    SysfsOnline,
    /// `std::thread::available_parallelism()`, assumed to be cores `0..n`.
    AvailableParallelism,
    /// Nothing could be probed; core 0 is assumed to exist.
    Assumed,
    /// Built by [`Topology::fake`] / [`Topology::new`] (tests, simulations).
    Synthetic,
}

/// The cores available to this process, plus best-effort NUMA and CPU-model info.
///
/// Why a dedicated type: [`crate::CoreMap::validate`] and
/// [`crate::CoreMap::probe`] take it as an argument instead of probing the
/// machine themselves, which keeps every rule testable with a fake topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    online: Vec<usize>,
    numa: BTreeMap<usize, usize>,
    cpu_model: Option<String>,
    source: CoreSource,
}

impl Topology {
    /// Builds a topology from explicit parts; `online` is sorted and de-duplicated.
    ///
    /// Why: lets tests and tools describe any machine (e.g. two NUMA nodes of
    /// eight cores) without owning one. `numa` maps core -> NUMA node; cores
    /// absent from it have an unknown node.
    pub fn new(
        online: impl IntoIterator<Item = usize>,
        numa: BTreeMap<usize, usize>,
        cpu_model: Option<String>,
    ) -> Self {
        let online: BTreeSet<usize> = online.into_iter().collect();
        Topology {
            online: online.into_iter().collect(),
            numa,
            cpu_model,
            source: CoreSource::Synthetic,
        }
    }

    /// A fake machine with cores `0..n`, no NUMA information and no model name.
    ///
    /// Why: the common case in tests ("probe on a 16-core host") in one call.
    pub fn fake(n: usize) -> Self {
        Topology::new(0..n, BTreeMap::new(), None)
    }

    /// Like [`Topology::fake`], with cores split evenly into `nodes` NUMA nodes
    /// (`cores_per_node = n / nodes`, the remainder on the last node).
    ///
    /// Why: exercises the "shards span NUMA nodes" warning without a NUMA host.
    pub fn fake_numa(n: usize, nodes: usize) -> Self {
        let nodes = nodes.max(1);
        let per = (n / nodes).max(1);
        let numa = (0..n).map(|c| (c, (c / per).min(nodes - 1))).collect();
        Topology::new(0..n, numa, None)
    }

    /// Probes the running machine.
    ///
    /// Why it never fails: a node must still start on exotic hosts (no /sys,
    /// restricted /proc), so every step degrades to a weaker source and the
    /// result records which one was used in [`Topology::source`]. Online cores
    /// come from the affinity mask (what `pin_current_thread` can actually
    /// use), then `/sys/devices/system/cpu/online`, then
    /// `available_parallelism`, then just core 0.
    pub fn detect() -> Self {
        let (online, source) = detect_online(Path::new("/"));
        read_details(Path::new("/"), online, source)
    }

    /// The usable cores, sorted ascending, without duplicates.
    ///
    /// Why sorted: [`crate::CoreMap::probe`] picks the lowest core for control,
    /// and error messages render the list as compact ranges.
    pub fn online(&self) -> &[usize] {
        &self.online
    }

    /// Whether `core` may be used by this process.
    ///
    /// Why: the existence check behind [`crate::CoreMapError::NoSuchCore`].
    pub fn is_online(&self, core: usize) -> bool {
        self.online.binary_search(&core).is_ok()
    }

    /// The online cores in Linux cpulist form, e.g. `0-3,8-11`.
    ///
    /// Why: the same compact form the kernel and `taskset -c` use, so the
    /// message in [`crate::CoreMapError::NoSuchCore`] can be pasted back.
    pub fn online_summary(&self) -> String {
        format_cpu_list(&self.online)
    }

    /// The NUMA node of `core`, if the machine exposes it.
    ///
    /// Why optional: many VMs and containers hide NUMA information; the
    /// NUMA-span warning is only raised when it is known.
    pub fn numa_node(&self, core: usize) -> Option<usize> {
        self.numa.get(&core).copied()
    }

    /// The CPU model name from `/proc/cpuinfo`, if found.
    ///
    /// Why: logged at start-up so benchmark results can be tied to hardware.
    pub fn cpu_model(&self) -> Option<&str> {
        self.cpu_model.as_deref()
    }

    /// Where [`Topology::online`] came from.
    ///
    /// Why: see [`CoreSource`]; it turns "core does not exist" into an actionable message.
    pub fn source(&self) -> CoreSource {
        self.source
    }
}

/// Finds the usable cores, trying the sources in order of authority.
fn detect_online(root: &Path) -> (Vec<usize>, CoreSource) {
    if let Some(ids) = core_affinity::get_core_ids() {
        let ids: Vec<usize> = ids.into_iter().map(|c| c.id).collect();
        if !ids.is_empty() {
            return (ids, CoreSource::AffinityMask);
        }
    }
    if let Some(list) = read_to_string(&root.join("sys/devices/system/cpu/online"))
        .as_deref()
        .and_then(parse_cpu_list)
    {
        if !list.is_empty() {
            return (list, CoreSource::SysfsOnline);
        }
    }
    if let Ok(n) = std::thread::available_parallelism() {
        return ((0..n.get()).collect(), CoreSource::AvailableParallelism);
    }
    (vec![0], CoreSource::Assumed)
}

/// Adds NUMA nodes and the CPU model read under `root` (normally `/`).
///
/// Separate from [`Topology::detect`] so tests can point it at a fixture tree.
fn read_details(root: &Path, online: Vec<usize>, source: CoreSource) -> Topology {
    let cpu_model = read_to_string(&root.join("proc/cpuinfo"))
        .as_deref()
        .and_then(parse_cpu_model);

    let mut numa = BTreeMap::new();
    let cpu_dir = root.join("sys/devices/system/cpu");
    for &core in &online {
        let dir = cpu_dir.join(format!("cpu{core}"));
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let names = entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned());
            if let Some(node) = numa_node_from_entries(names) {
                numa.insert(core, node);
            }
        }
    }
    // Fallback: /sys/devices/system/node/nodeN/cpulist (kernels without the
    // cpuN/nodeM links, or links hidden by a container runtime).
    if numa.is_empty() {
        if let Ok(entries) = std::fs::read_dir(root.join("sys/devices/system/node")) {
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(node) = parse_node_name(&name) else {
                    continue;
                };
                let Some(cpus) = read_to_string(&entry.path().join("cpulist"))
                    .as_deref()
                    .and_then(parse_cpu_list)
                else {
                    continue;
                };
                for cpu in cpus {
                    if online.binary_search(&cpu).is_ok() {
                        numa.insert(cpu, node);
                    }
                }
            }
        }
    }

    let mut topo = Topology::new(online, numa, cpu_model);
    topo.source = source;
    topo
}

fn read_to_string(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Parses `nodeN` into `N`; anything else (`node`, `nodes`, `node1x`) is `None`.
fn parse_node_name(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("node")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Parses a Linux cpulist (`0-3,8,10-11`, as in `/sys/devices/system/cpu/online`
/// or `nodeN/cpulist`) into sorted, de-duplicated core numbers.
///
/// Why public: the same format is what operators type for `taskset -c`,
/// `isolcpus=` and `IRQBALANCE_BANNED_CPULIST`, so tools built on this crate
/// can accept it too. Returns `None` on any malformed item or a reversed
/// range; an empty or whitespace-only string is an empty list.
pub fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut out = BTreeSet::new();
    let text = text.trim();
    if text.is_empty() {
        return Some(Vec::new());
    }
    for item in text.split(',') {
        let item = item.trim();
        match item.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().ok()?;
                let b: usize = b.trim().parse().ok()?;
                if a > b {
                    return None;
                }
                out.extend(a..=b);
            }
            None => {
                out.insert(item.parse().ok()?);
            }
        }
    }
    Some(out.into_iter().collect())
}

/// Renders core numbers in cpulist form: `[0,1,2,3,8,10,11]` -> `0-3,8,10-11`.
///
/// Why: keeps error messages and IRQ hints short on big machines and in the
/// exact syntax `taskset -c` and `/proc/irq/*/smp_affinity_list` accept.
/// Input need not be sorted; duplicates are ignored; empty input gives `""`.
pub fn format_cpu_list(cores: &[usize]) -> String {
    let set: BTreeSet<usize> = cores.iter().copied().collect();
    let mut parts = Vec::new();
    let mut iter = set.into_iter().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        if end == start {
            parts.push(start.to_string());
        } else {
            parts.push(format!("{start}-{end}"));
        }
    }
    parts.join(",")
}

/// Extracts the CPU model from `/proc/cpuinfo` text.
///
/// Why several keys: x86 writes `model name`, many ARM kernels write only
/// `Hardware` or `Processor`, POWER writes `cpu`. The first non-empty value
/// of the first key that is present wins.
pub fn parse_cpu_model(cpuinfo: &str) -> Option<String> {
    const KEYS: [&str; 4] = ["model name", "Hardware", "Processor", "cpu"];
    for wanted in KEYS {
        for line in cpuinfo.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            if key.trim() == wanted {
                let value = value.trim();
                if !value.is_empty() {
                    return Some(value.to_string());
                }
            }
        }
    }
    None
}

/// Finds the NUMA node among the entry names of `/sys/devices/system/cpu/cpuN/`.
///
/// Why: on NUMA-enabled kernels that directory holds a `nodeM` link naming
/// the core's node; the directory listing is the cheapest way to learn it.
/// Returns the lowest `M` if (unexpectedly) several are present.
pub fn numa_node_from_entries<I, S>(names: I) -> Option<usize>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    names
        .into_iter()
        .filter_map(|n| parse_node_name(n.as_ref()))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    const X86_CPUINFO: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n\
model\t\t: 106\nmodel name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz\nstepping\t: 6\n\n\
processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz\n";

    const ARM_CPUINFO: &str = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd\n\
CPU implementer\t: 0x41\nCPU part\t: 0xd0c\n\nHardware\t: BCM2835\n";

    const POWER_CPUINFO: &str =
        "processor\t: 0\ncpu\t\t: POWER9 (architected), altivec supported\n";

    #[test]
    fn cpu_model_from_x86_arm_power_and_garbage() {
        assert_eq!(
            parse_cpu_model(X86_CPUINFO).as_deref(),
            Some("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz")
        );
        assert_eq!(parse_cpu_model(ARM_CPUINFO).as_deref(), Some("BCM2835"));
        assert_eq!(
            parse_cpu_model(POWER_CPUINFO).as_deref(),
            Some("POWER9 (architected), altivec supported")
        );
        assert_eq!(parse_cpu_model(""), None);
        assert_eq!(parse_cpu_model("model name\t:   \n"), None);
        // "cpu family" must not be mistaken for "cpu".
        assert_eq!(parse_cpu_model("cpu family\t: 6\n"), None);
    }

    #[test]
    fn cpu_list_parses_kernel_forms() {
        assert_eq!(parse_cpu_list("0-3\n"), Some(vec![0, 1, 2, 3]));
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list("0-1,4,6-7"), Some(vec![0, 1, 4, 6, 7]));
        assert_eq!(parse_cpu_list(" 3, 1 ,1-2 "), Some(vec![1, 2, 3]));
        assert_eq!(parse_cpu_list("\n"), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
        assert_eq!(parse_cpu_list("1,,2"), None);
        assert_eq!(parse_cpu_list("-1"), None);
    }

    #[test]
    fn cpu_list_formats_ranges() {
        assert_eq!(format_cpu_list(&[]), "");
        assert_eq!(format_cpu_list(&[0]), "0");
        assert_eq!(format_cpu_list(&[0, 1]), "0-1");
        assert_eq!(format_cpu_list(&[3, 0, 1, 2, 8, 10, 11, 11]), "0-3,8,10-11");
        for text in ["0-15", "0,2,4", "1-2,5-9,12"] {
            assert_eq!(format_cpu_list(&parse_cpu_list(text).unwrap()), text);
        }
    }

    #[test]
    fn numa_node_from_cpu_dir_listing() {
        let entries = [
            "cache",
            "cpufreq",
            "crash_notes",
            "node1",
            "topology",
            "online",
        ];
        assert_eq!(numa_node_from_entries(entries), Some(1));
        assert_eq!(numa_node_from_entries(["cache", "topology"]), None);
        assert_eq!(numa_node_from_entries(["node", "nodes", "node1x"]), None);
        assert_eq!(numa_node_from_entries(["node3", "node2"]), Some(2));
        assert_eq!(numa_node_from_entries(Vec::<String>::new()), None);
    }

    #[test]
    fn new_sorts_and_dedups_online() {
        let t = Topology::new([3, 1, 2, 1], BTreeMap::new(), None);
        assert_eq!(t.online(), &[1, 2, 3]);
        assert!(t.is_online(2));
        assert!(!t.is_online(0));
        assert_eq!(t.online_summary(), "1-3");
        assert_eq!(t.source(), CoreSource::Synthetic);
    }

    #[test]
    fn fake_numa_splits_evenly() {
        let t = Topology::fake_numa(16, 2);
        assert_eq!(t.numa_node(0), Some(0));
        assert_eq!(t.numa_node(7), Some(0));
        assert_eq!(t.numa_node(8), Some(1));
        assert_eq!(t.numa_node(15), Some(1));
        assert_eq!(t.numa_node(16), None);
        let odd = Topology::fake_numa(5, 2);
        assert_eq!(odd.numa_node(4), Some(1));
        assert_eq!(Topology::fake(4).numa_node(0), None);
    }

    /// Builds a fake `/` with cpuinfo and sysfs entries.
    fn fixture_root() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let p = root.path();
        std::fs::create_dir_all(p.join("proc")).unwrap();
        std::fs::write(p.join("proc/cpuinfo"), X86_CPUINFO).unwrap();
        for (cpu, node) in [(0, 0), (1, 0), (2, 1), (3, 1)] {
            let dir = p.join(format!("sys/devices/system/cpu/cpu{cpu}"));
            std::fs::create_dir_all(dir.join(format!("node{node}"))).unwrap();
            std::fs::create_dir_all(dir.join("topology")).unwrap();
        }
        std::fs::write(p.join("sys/devices/system/cpu/online"), "0-3\n").unwrap();
        root
    }

    #[test]
    fn details_from_fixture_tree_via_cpu_dirs() {
        let root = fixture_root();
        let t = read_details(root.path(), vec![0, 1, 2, 3], CoreSource::AffinityMask);
        assert_eq!(
            t.cpu_model(),
            Some("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz")
        );
        assert_eq!(
            (0..4).map(|c| t.numa_node(c)).collect::<Vec<_>>(),
            vec![Some(0), Some(0), Some(1), Some(1)]
        );
        assert_eq!(t.source(), CoreSource::AffinityMask);
    }

    #[test]
    fn details_fall_back_to_node_cpulists() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path();
        for (node, list) in [(0, "0-1\n"), (1, "2-3\n")] {
            let dir = p.join(format!("sys/devices/system/node/node{node}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("cpulist"), list).unwrap();
        }
        std::fs::create_dir_all(p.join("sys/devices/system/node/power")).unwrap();
        let t = read_details(p, vec![1, 2], CoreSource::SysfsOnline);
        assert_eq!(t.numa_node(1), Some(0));
        assert_eq!(t.numa_node(2), Some(1));
        // Offline/excluded cores are not recorded.
        assert_eq!(t.numa_node(0), None);
        assert_eq!(t.cpu_model(), None);
    }

    #[test]
    fn details_on_an_empty_root_are_unknown_not_errors() {
        let root = tempfile::tempdir().unwrap();
        let t = read_details(root.path(), vec![0], CoreSource::Assumed);
        assert_eq!(t.online(), &[0]);
        assert_eq!(t.numa_node(0), None);
        assert_eq!(t.cpu_model(), None);
    }

    #[test]
    fn detect_on_this_machine_finds_at_least_one_core() {
        let t = Topology::detect();
        assert!(!t.online().is_empty());
        assert!(t.online().windows(2).all(|w| w[0] < w[1]));
        // On Linux the affinity mask is always readable.
        #[cfg(target_os = "linux")]
        assert_eq!(t.source(), CoreSource::AffinityMask);
    }

    #[test]
    fn sysfs_online_is_used_by_detect_online_helpers() {
        // detect_online prefers the affinity mask; on Linux that always works,
        // so only check that the sysfs fixture parses the way the fallback would.
        let root = fixture_root();
        let text = std::fs::read_to_string(root.path().join("sys/devices/system/cpu/online"));
        assert_eq!(parse_cpu_list(&text.unwrap()), Some(vec![0, 1, 2, 3]));
        let (online, _) = detect_online(root.path());
        assert!(!online.is_empty());
    }
}
