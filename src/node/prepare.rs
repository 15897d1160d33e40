//! Before the executors start: checks the machine (locked memory, open files, THP)
//! and turns the node config into the runtime's config (identity, keys, admin token,
//! core plan). Also the node's error type, which these checks produce.

use std::net::SocketAddr;

use core_pinning::{CoreMap, Topology};
use thiserror::Error;
use tracing::{info, warn};

use super::config::NodeConfig;
use super::runtime::RuntimeConfig;
use super::{seeds, snapshot};
use crate::ids::NodeId;

/// Why the node could not start or run. `exit_code` tells the binary how to exit.
#[derive(Debug, Error)]
pub enum NodeError {
    /// Bad config or core map: exit 2.
    #[error("{0}")]
    Config(String),
    /// The machine cannot run the node (memlock, io_uring, ports): exit 1.
    #[error("{0}")]
    Environment(String),
}

impl NodeError {
    /// 2 for operator input errors, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            NodeError::Config(_) => 2,
            NodeError::Environment(_) => 1,
        }
    }
}

/// glommio needs this much locked memory for its io_uring rings.
const MIN_MEMLOCK: u64 = 512 * 1024;

/// Checks (and if possible raises) RLIMIT_MEMLOCK, with a clear message when the
/// machine will not allow it.
/// Raises the soft open-files limit toward the hard one (at most 65,536): the client
/// port and the admin plane hold a descriptor per connection, and a soft limit of
/// 1,024 would refuse connections below `max_clients`. Warns when it stays lower.
fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; the resource id is valid.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 || lim.rlim_cur >= want {
        return;
    }
    let target = want.min(lim.rlim_max);
    let raised = libc::rlimit {
        rlim_cur: target,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads the struct we pass; the resource id is valid.
    let ok = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0;
    if !ok || target < want {
        warn!(
            soft = lim.rlim_cur,
            hard = lim.rlim_max,
            wanted = want,
            "open-files limit below what max_clients and the admin plane may hold (LimitNOFILE= in the systemd unit)"
        );
    }
}

/// With seeds given only by name, at least one must resolve at start: a node whose
/// every seed is unknown can never join, which is a configuration error (exit 2).
/// Once running, names that stop resolving are retried at every join attempt.
fn check_seeds_resolve(seeds: &[seeds::Seed]) -> Result<(), NodeError> {
    use std::net::ToSocketAddrs;
    let mut names = Vec::new();
    for s in seeds {
        match s {
            seeds::Seed::Addr(_) => return Ok(()),
            seeds::Seed::Name { host, port } => {
                if (host.as_str(), *port)
                    .to_socket_addrs()
                    .is_ok_and(|mut a| a.next().is_some())
                {
                    return Ok(());
                }
                names.push(format!("{host}:{port}"));
            }
        }
    }
    if names.is_empty() {
        return Ok(());
    }
    Err(NodeError::Config(format!(
        "config key `seeds`: none of them resolves ({}); give a name that does, or an IP:PORT",
        names.join(", ")
    )))
}

fn ensure_memlock() -> Result<(), NodeError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; the resource id is valid.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return Ok(()); // Cannot tell; let the executor report the real failure.
    }
    if lim.rlim_cur == libc::RLIM_INFINITY || lim.rlim_cur >= MIN_MEMLOCK {
        return Ok(());
    }
    let want = if lim.rlim_max == libc::RLIM_INFINITY {
        MIN_MEMLOCK.max(64 << 20)
    } else {
        lim.rlim_max
    };
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads the struct we pass; the resource id is valid.
    let ok = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } == 0;
    if ok && (want == libc::RLIM_INFINITY || want >= MIN_MEMLOCK) {
        return Ok(());
    }
    Err(NodeError::Environment(format!(
        "RLIMIT_MEMLOCK is {} bytes; plumcore needs at least {MIN_MEMLOCK} (raise it with `ulimit -l` or LimitMEMLOCK= in the systemd unit)",
        lim.rlim_cur
    )))
}

/// Turns transparent huge pages off for this process. mimalloc asks for them
/// (`madvise(MADV_HUGEPAGE)`) on its arenas, and with THP every touched 2 MiB of an
/// arena becomes resident: an idle 1-shard node measured 41 MiB RSS with 24 MiB of it
/// in huge pages, 22 MiB without. The node's hot data (seen map, cache, buffers) is
/// small and per core; the TLB gain of huge pages is not worth tripling RSS. The
/// `plumcore` binary calls this before `main` and [`run`](super::run) again; failure (old kernels)
/// leaves THP as it was.
pub fn disable_thp() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and touches no memory
    // of ours; failure (old kernels) leaves THP as it was.
    // Called before `main` too: no logging here.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

/// This machine's hostname, when it is a valid node name.
fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length; gethostname NUL-terminates
    // within it on success (or truncates, which the length check below catches).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0)?;
    let name = std::str::from_utf8(&buf[..end]).ok()?;
    crate::wire::member_frame::is_valid_node_name(name).then(|| name.to_string())
}

/// Random-enough node id when none is configured: time, pid and address mixed.
fn generate_node_id(bind: SocketAddr) -> NodeId {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let x = t ^ (u64::from(std::process::id()) << 32) ^ u64::from(bind.port());
    NodeId(crate::ids::origin_offset(NodeId(x)) | 1)
}

/// Decides which cores the control core and the shards use.
fn core_plan(cfg: &NodeConfig) -> Result<(Option<usize>, Vec<Option<usize>>), NodeError> {
    let topo = Topology::detect();
    let validated = match &cfg.core_map {
        Some(path) => {
            let map = CoreMap::from_path(path)
                .map_err(|e| NodeError::Config(format!("--core-map {}: {e}", path.display())))?;
            map.validate(&topo)
                .map_err(|e| NodeError::Config(format!("--core-map {}: {e}", path.display())))?
        }
        None => CoreMap::probe(&topo),
    };
    for w in &validated.warnings {
        warn!("core map: {w}");
    }
    if let Some(hint) = validated.irq_hint() {
        info!("{hint}");
    }
    let map = &validated.map;
    let shards: Vec<Option<usize>> = match (cfg.shards, &cfg.core_map) {
        (Some(n), None) => (0..n)
            .map(|k| Some(map.shards[k % map.shards.len()]))
            .collect(),
        (Some(n), Some(_)) if n != map.shards.len() => {
            return Err(NodeError::Config(format!(
                "config key `shards`: {n} does not match the core map's {} shard cores",
                map.shards.len()
            )))
        }
        _ => map.shards.iter().map(|&c| Some(c)).collect(),
    };
    Ok((Some(map.control), shards))
}

/// Reads the admin bearer token: the file's first line, trimmed; refused when empty
/// (an empty token would let every request through).
fn read_admin_token(path: &std::path::Path) -> Result<String, NodeError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        NodeError::Config(format!(
            "config key `admin_token_file`: {}: {e}",
            path.display()
        ))
    })?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(NodeError::Config(format!(
            "config key `admin_token_file`: {} holds no token on its first line",
            path.display()
        )));
    }
    Ok(token)
}

/// The parts [`Node::start`](super::embed::Node::start) builds from the config before the executors
/// start: identity, keys, token, cores and the runtime config.
pub(crate) struct Prepared {
    pub node_id: NodeId,
    pub node_name: Option<String>,
    pub token: Option<String>,
    pub names: snapshot::NameBook,
    pub rcfg: RuntimeConfig,
}

/// Checks the machine and turns `cfg` into what the runtime needs.
pub(crate) fn prepare(cfg: &NodeConfig) -> Result<Prepared, NodeError> {
    disable_thp();
    ensure_memlock()?;
    cfg.validate()
        .map_err(|e| NodeError::Config(e.to_string()))?;
    raise_nofile((cfg.max_clients + cfg.admin_max_connections + 256).min(65_536) as u64);
    check_seeds_resolve(&cfg.seeds)?;
    let node_id = cfg
        .node_id
        .map(NodeId)
        .unwrap_or_else(|| generate_node_id(cfg.bind));
    let cluster_keys = match &cfg.cluster_key_file {
        Some(path) => {
            let keys = crate::wire::auth::ClusterKeys::from_file(path)
                .map_err(|e| NodeError::Config(format!("config key `cluster_key_file`: {e}")))?
                .encrypted(cfg.cluster_encrypt);
            info!(
                keys = keys.len(),
                key_ids = ?keys.key_ids(),
                encrypt = cfg.cluster_encrypt,
                "cluster authentication on"
            );
            Some(keys)
        }
        None => {
            warn!("cluster is open: no cluster_key_file; any host that can reach the UDP ports can join and inject messages");
            None
        }
    };
    let token = match &cfg.admin_token_file {
        Some(path) => Some(read_admin_token(path)?),
        None => None,
    };
    let node_name = cfg.node_name.clone().or_else(hostname);
    let names = snapshot::NameBook::default();
    let (control_core, shard_cores) = core_plan(cfg)?;
    let rcfg = RuntimeConfig {
        node_id,
        bind: cfg.bind,
        seeds: cfg.seeds.clone(),
        shard_cores,
        control_core,
        heartbeat_interval: cfg.membership.heartbeat_interval,
        failure_timeout: cfg.membership.failure_timeout,
        recv_buffer: cfg.recv_buffer_bytes,
        send_buffer: cfg.send_buffer_bytes,
        mtu: cfg.mtu,
        protocol: cfg.protocol.clone(),
        chaos: cfg.chaos,
        cluster_keys,
        node_name: node_name.clone(),
        node_name_chosen: cfg.node_name.is_some(),
        advertise: cfg.advertise,
        names: names.clone(),
    };
    Ok(Prepared {
        node_id,
        node_name,
        token,
        names,
        rcfg,
    })
}
