//! A lab of hosts made of Linux network namespaces, for tests that run real nodes on
//! distinct addresses with the same ports (issue 15 item 7).
//!
//! Layout: one bridge namespace holding a Linux bridge; per host a namespace whose
//! `eth0` (198.18.S.(10 + i)/24) is one end of a veth pair, the other end enslaved to
//! the bridge; `lo` up everywhere. The root namespace (where the test runs) gets a
//! veth into the bridge too, with 198.18.S.1/24, so the test reaches every host's
//! admin plane and UDP ports. Nothing routes outside: no namespace has a default
//! route, nothing enables forwarding, and the only route added to the root namespace
//! is the lab's connected /24. Addresses are in 198.18.0.0/15 (RFC 2544, reserved for
//! network benchmarking); S is a subnet no other lab on the machine uses.
//!
//! Names carry the test process's pid and a counter (`plab-<pid>-<n>-...`), so
//! parallel runs never collide; labs left behind by a dead process (SIGKILLed test)
//! are removed by the next lab that starts (their nodes died with the test: see
//! [`NetnsLab::spawn`]). [`Drop`] kills every process the lab
//! started and deletes every namespace it made (which deletes their veths), also when
//! the test panics.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Prefix of every namespace a lab makes.
const PREFIX: &str = "plab-";
static COUNTER: AtomicU32 = AtomicU32::new(0);
/// Serialises lab creation in this process (subnet choice, stale cleanup).
static CREATE: Mutex<()> = Mutex::new(());

/// Why a command failed, with its output.
fn describe(what: &str, out: &std::io::Result<Output>) -> String {
    match out {
        Ok(o) => format!(
            "{what}: {} {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout).trim(),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("{what}: {e}"),
    }
}

/// Runs `ip ARGS`; `Err` with its output when it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output();
    match &out {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err(describe(&format!("ip {}", args.join(" ")), &out)),
    }
}

/// Whether `cmd -V`-style probing finds a working program.
fn program_works(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Deletes labs whose creating process is gone (a test killed before its `Drop`).
fn remove_stale_labs() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// Third octets of 198.18.X.0/24 already routed in the root namespace.
fn subnets_in_use() -> HashSet<u8> {
    let out = Command::new("ip")
        .args(["-4", "route", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| l.strip_prefix("198.18."))
        .filter_map(|l| l.split('.').next()?.parse::<u8>().ok())
        .collect()
}

/// A process started inside a host namespace; SIGKILLed and reaped when dropped.
pub struct NsProc<'lab> {
    child: Option<Child>,
    /// Borrowing the lab keeps it (and its namespaces) alive while the process runs.
    _lab: std::marker::PhantomData<&'lab NetnsLab>,
    live: Arc<Mutex<Vec<u32>>>,
    pub host: usize,
}

impl NsProc<'_> {
    /// SIGKILL and reap (no-op when already done).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.live.lock().unwrap().retain(|&p| p != c.id());
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for NsProc<'_> {
    fn drop(&mut self) {
        self.kill();
    }
}

/// iptables rules added by [`NetnsLab::partition`]; [`NetnsLab::heal`] removes them.
pub struct Partition {
    /// (host, rule spec after `-A`/`-D`).
    rules: Vec<(usize, Vec<String>)>,
}

/// The namespaces, veths and processes of one test; see the module documentation.
pub struct NetnsLab {
    tag: String,
    bridge_ns: String,
    hosts: Vec<String>,
    root_veth: String,
    subnet: u8,
    live: Arc<Mutex<Vec<u32>>>,
    made: Vec<String>,
}

impl NetnsLab {
    /// A lab of `n` hosts (at most 200), or `None` after printing why the machine
    /// cannot host one (not root, no `ip`, namespaces refused).
    pub fn new(n: usize) -> Option<NetnsLab> {
        assert!(n <= 200, "at most 200 hosts in a /24");
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping: network namespaces need root (this test runs as uid != 0)");
            return None;
        }
        if !program_works("ip", "-V") {
            eprintln!("skipping: no working `ip` (iproute2) on PATH");
            return None;
        }
        let _guard = CREATE.lock().unwrap_or_else(|p| p.into_inner());
        remove_stale_labs();
        let used = subnets_in_use();
        let Some(subnet) = (1..=254u8).find(|s| !used.contains(s)) else {
            eprintln!("skipping: every 198.18.X.0/24 is routed on this machine");
            return None;
        };
        let k = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("{PREFIX}{pid}-{k}");
        let mut lab = NetnsLab {
            bridge_ns: format!("{tag}-br"),
            hosts: (0..n).map(|i| format!("{tag}-h{i}")).collect(),
            // Interface names hold 15 bytes: "pl" + pid in hex (<= 6) + "r" + k.
            root_veth: format!("pl{pid:x}r{}", k % 1000),
            tag,
            subnet,
            live: Arc::new(Mutex::new(Vec::new())),
            made: Vec::new(),
        };
        let t = Instant::now();
        // The first namespace is the probe: refused here means the machine cannot.
        if let Err(e) = lab.add_ns(lab.bridge_ns.clone()) {
            eprintln!("skipping: cannot create a network namespace ({e})");
            return None;
        }
        if let Err(e) = lab.build() {
            // `lab` drops here and removes what was made.
            panic!("building the namespace lab {}: {e}", lab.tag);
        }
        eprintln!(
            "netns lab {}: {n} hosts on 198.18.{subnet}.0/24 ready in {:?}",
            lab.tag,
            t.elapsed()
        );
        Some(lab)
    }

    fn add_ns(&mut self, name: String) -> Result<(), String> {
        ip(&["netns", "add", &name])?;
        self.made.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])
    }

    fn build(&mut self) -> Result<(), String> {
        let br = self.bridge_ns.clone();
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        for i in 0..self.hosts.len() {
            let h = self.hosts[i].clone();
            self.add_ns(h.clone())?;
            let port = format!("h{i}");
            // Made inside the bridge namespace, the far end moved straight into the
            // host's: no name is ever taken in the root namespace.
            ip(&[
                "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &h,
            ])?;
            ip(&["-n", &br, "link", "set", &port, "master", "br0", "up"])?;
            let addr = format!("{}/24", self.ip(i));
            ip(&["-n", &h, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &h, "link", "set", "eth0", "up"])?;
        }
        // The test's own way in: root end named uniquely, bridge end "root".
        ip(&[
            "link",
            "add",
            &self.root_veth,
            "type",
            "veth",
            "peer",
            "name",
            "root",
            "netns",
            &br,
        ])?;
        ip(&["-n", &br, "link", "set", "root", "master", "br0", "up"])?;
        let gw = format!("198.18.{}.1/24", self.subnet);
        ip(&["addr", "add", &gw, "dev", &self.root_veth])?;
        ip(&["link", "set", &self.root_veth, "up"])?;
        Ok(())
    }

    /// Host `i`'s address.
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.subnet, 10 + i as u8)
    }

    /// Host `i`'s namespace name.
    pub fn ns(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    pub fn hosts(&self) -> usize {
        self.hosts.len()
    }

    /// Runs `cmd ARGS` inside host `i`'s namespace and waits for it.
    pub fn exec(&self, i: usize, cmd: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.hosts[i], cmd])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ip netns exec")
    }

    /// As [`exec`](Self::exec), panicking with the output unless it succeeds.
    pub fn exec_ok(&self, i: usize, cmd: &str, args: &[&str]) -> Output {
        let out = self.exec(i, cmd, args);
        assert!(
            out.status.success(),
            "{}",
            describe(
                &format!("in {}: {cmd} {}", self.hosts[i], args.join(" ")),
                &Ok(out.clone())
            )
        );
        out
    }

    /// Starts `program ARGS` inside host `i`'s namespace (stdout discarded, stderr
    /// inherited). `ip netns exec` execs the program in place, so the handle's pid is
    /// the program's.
    ///
    /// The process gets SIGKILL when the thread that started it ends, so not even a
    /// SIGKILLed test leaves it running (its namespaces go with the next lab).
    pub fn spawn(&self, i: usize, program: &str, args: &[String]) -> NsProc<'_> {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.hosts[i], program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn ip netns exec");
        self.live.lock().unwrap().push(child.id());
        NsProc {
            child: Some(child),
            _lab: std::marker::PhantomData,
            live: self.live.clone(),
            host: i,
        }
    }

    /// Whether iptables works inside this lab's namespaces, nat table included; the
    /// reason when it does not.
    pub fn iptables_problem(&self) -> Option<String> {
        if !program_works("iptables", "-V") {
            return Some("no working `iptables` on PATH".into());
        }
        let out = self.exec(0, "iptables", &["-t", "nat", "-L", "-n"]);
        (!out.status.success()).then(|| describe("iptables -t nat -L in a namespace", &Ok(out)))
    }

    /// `iptables ARGS` inside host `i`'s namespace; panics unless it succeeds.
    pub fn iptables(&self, i: usize, args: &[&str]) {
        self.exec_ok(i, "iptables", args);
    }

    /// Drops every packet between hosts in `a` and hosts in `b`, both ways (INPUT and
    /// OUTPUT rules in each host of both groups); undo with [`heal`](Self::heal).
    pub fn partition(&self, a: &[usize], b: &[usize]) -> Partition {
        let mut rules = Vec::new();
        for (mine, theirs) in [(a, b), (b, a)] {
            for &h in mine {
                for &o in theirs {
                    let peer = self.ip(o).to_string();
                    rules.push((h, vec!["INPUT".into(), "-s".into(), peer.clone()]));
                    rules.push((h, vec!["OUTPUT".into(), "-d".into(), peer]));
                }
            }
        }
        for (h, r) in &mut rules {
            r.extend(["-j".to_string(), "DROP".to_string()]);
            let mut args = vec!["-A"];
            args.extend(r.iter().map(String::as_str));
            self.iptables(*h, &args);
        }
        Partition { rules }
    }

    /// Removes a [`partition`](Self::partition)'s rules.
    pub fn heal(&self, p: Partition) {
        for (h, r) in &p.rules {
            let mut args = vec!["-D"];
            args.extend(r.iter().map(String::as_str));
            self.iptables(*h, &args);
        }
    }
}

impl Drop for NetnsLab {
    fn drop(&mut self) {
        // Processes first: a namespace outlives its deletion while a process is in it.
        // Pids still listed are unreaped children of ours, so none can be reused.
        let pids: Vec<u32> = std::mem::take(&mut *self.live.lock().unwrap());
        for pid in pids {
            // SAFETY: plain syscalls on our own child processes.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
                libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
            }
        }
        let _ = ip(&["link", "del", &self.root_veth]);
        for ns in self.made.iter().rev() {
            // Deleting can race with the kernel releasing the namespace's sockets.
            let t = Instant::now();
            while let Err(e) = ip(&["netns", "del", ns]) {
                if t.elapsed() > Duration::from_secs(5) {
                    eprintln!("netns lab: could not delete {ns}: {e}");
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
