//! Node configuration: an optional TOML file overlaid by command-line flags, checked
//! once at start-up so that a bad value stops the node with a message naming the key
//! (the binary prints [`ConfigError`] and exits 2) instead of misbehaving later.
//!
//! Every key is written once, in the table below: its doc, type, default and flag.
//! From it `node_config_keys!` (in `config_keys.rs`) makes [`NodeConfig`] (the TOML
//! file's keys), its `Default`, [`ConfigFlags`] (the flags) and their overlay.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};
use thiserror::Error;

use super::config_keys::node_config_keys;
use super::net::socket::{AddrRange, FaultConfig, FaultError, FaultRates, Side, MAX_CUTS};
use super::ratelimit::RateLimitConfig;
use crate::membership::MembershipConfig;
use crate::protocol::ProtocolConfig;
use crate::wire;

/// Largest UDP payload over IPv4; the upper bound of `mtu`.
pub const MAX_UDP_PAYLOAD: usize = 65507;
/// Largest shard count (partition sets are 64-bit masks, one partition at least each).
pub const MAX_SHARDS: usize = 64;
/// Largest `rate_limit_peers` (each tracked source costs about 64 bytes per shard).
pub const MAX_RATE_LIMIT_PEERS: usize = 1 << 20;

node_config_keys! {
    /// Everything a node needs to start: the TOML file's keys (each one written once,
    /// in this table). Every field has a default so that an empty file (or no file)
    /// gives a working single node on localhost; unknown keys are rejected so that a
    /// misspelt key is an error rather than a silently ignored setting.
    pub struct NodeConfig;

    /// Command-line flags of `plumcore node`, one per key that has a flag (named like
    /// the key, `-` for `_`), all optional; each one given overrides the file's value.
    pub struct ConfigFlags;

    keys {
        /// Cluster-wide identity; `None` means the node draws a random one at start.
        /// In TOML either an integer or a string (decimal or `0x`-hex, which also covers
        /// ids above `i64::MAX` that TOML integers cannot hold, or a name, hashed with
        /// [`node_id_from_name`], which also names the node).
        #[serde(deserialize_with = "de_node_id")]
        node_id: Option<u64> = None,
            flag Option<NodeIdArg> [value_name = "ID|NAME", value_parser = parse_node_id_arg]
            "Node id: decimal, 0x-hex, or a name (hashed to the id: the first 8 bytes of \
             BLAKE3(name), little-endian); random if absent.";
        /// The node's name, shown next to its id everywhere (`/status`, `/members`,
        /// `/peers`, `plumcore members`, the deliveries lines' `origin_name`). `None`: the
        /// `node_id` when that is a name, else the hostname. 1 to 64 bytes, no control
        /// characters ([`check_node_name`]).
        node_name: Option<String> = None,
            flag Option<String> [value_name = "NAME"]
            "The node's name (1 to 64 bytes, no control characters); default: the name \
             given to --node-id, else the hostname.";
        /// Control socket address; shard `k` binds port + 1 + k.
        bind: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 7000)),
            flag Option<SocketAddr> [value_name = "IP:PORT"]
            "Control socket address; shard k binds port + 1 + k.";
        /// Control addresses of nodes to join through: `IP:PORT`, or `host:port` (a name
        /// is resolved again at every join attempt, and every address it gives is tried).
        /// The flag is `--seed`, once per seed; given at all, it replaces the file's list.
        seeds: Vec<super::seeds::Seed> = Vec::new(),
            flag Vec<super::seeds::Seed> [long = "seed", value_name = "IP:PORT|HOST:PORT"]
            "Seed node control address, IP:PORT or HOST:PORT (repeatable; a name is \
             resolved at every join attempt); replaces the file's seeds.";
        /// The control address put in membership frames (shard `k` at its port + 1 + k);
        /// default: `bind`, or for a wildcard bind the address routing to the first seed.
        /// A wildcard address or port 0 is refused: peers could not reach it.
        advertise: Option<SocketAddr> = None,
            flag Option<SocketAddr> [value_name = "IP:PORT"]
            "Control address to advertise to peers (default: --bind, or for 0.0.0.0 the \
             address routing to the first seed); its port + 1 + k must reach shard k.";
        /// Address of the HTTP admin plane (`/metrics`, `/status`, `/peers`, `/broadcast`).
        admin: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 7080)),
            flag Option<SocketAddr> [value_name = "IP:PORT"]
            "HTTP admin plane address.";
        /// Shard count, 1 to [`MAX_SHARDS`] and at most `protocol.partitions` (each
        /// shard owns a partition); `None` means one per available core.
        shards: Option<usize> = None,
            flag Option<usize> [value_name = "N"]
            "Number of shards (1 to 64).";
        /// File mapping shards to cores; `None` means the default placement.
        core_map: Option<PathBuf> = None,
            flag Option<PathBuf> [value_name = "FILE"]
            "File mapping shards to cores.";
        /// Where delivered messages are written as NDJSON: a path, `-` for stdout, or
        /// `None` to only count them.
        deliveries: Option<String> = None,
            flag Option<String> [value_name = "PATH|-"]
            "Write deliveries as NDJSON to this file, or `-` for stdout.";
        /// `tracing` filter directive, e.g. `info` or `plumcore=debug`: levels or
        /// `TARGET=LEVEL` directives only ([`check_log_filter`]); `RUST_LOG` wins when set.
        log_level: String = "info".to_string(),
            flag Option<String> [value_name = "LEVEL"]
            "Log filter, e.g. info or plumcore=debug.";
        /// Log line format: `text` (colours only on a terminal) or `json` (one object a
        /// line, for log shippers).
        log_format: LogFormat = LogFormat::Text,
            flag Option<LogFormat> [value_name = "FORMAT"]
            "Log line format: text (colours only on a terminal) or json.";
        /// Whether `POST /broadcast` accepts an empty payload (refused with 400 otherwise).
        allow_empty: bool = false,
            flag bool []
            "Accept empty payloads on POST /broadcast (refused with 400 otherwise).";
        /// NATS-compatible client port: `IP:PORT`, or `off`. Default `127.0.0.1:4222`
        /// (NATS's port); when that default is taken the node runs without the port and
        /// says so, while an address given explicitly that cannot be bound is an error.
        client_listen: String = DEFAULT_CLIENT_LISTEN.to_string(),
            flag Option<String> [value_name = "IP:PORT|off"]
            "NATS-compatible client port address, or `off` (default 127.0.0.1:4222).";
        /// Test-only fault injection: the datagram fault layer (`chaos_*`) and the admin
        /// plane's `/chaos` routes (`POST /chaos/panic/<loop>` makes a loop panic).
        chaos: bool = false,
            flag bool []
            "Enable test-only fault injection: the datagram fault layer (--chaos-*) and \
             the admin plane's /chaos routes.";
        /// File of cluster keys (one 64-hex-digit key per line, `#` comments; the first
        /// signs, all verify). `None` leaves the cluster open: any host that reaches the
        /// UDP ports can join and inject messages. The auth trailer it adds to every
        /// datagram comes out of `mtu`.
        cluster_key_file: Option<PathBuf> = None,
            flag Option<PathBuf> [value_name = "FILE"]
            "Cluster key file: authenticate every datagram (see docs/operations.md, Security).";
        /// Encrypt every datagram (XChaCha20-Poly1305 under the cluster keys) instead of
        /// only authenticating it; needs `cluster_key_file`.
        cluster_encrypt: bool = false,
            flag bool []
            "Encrypt every datagram under the cluster keys (needs --cluster-key-file).";
        /// File holding the admin plane's bearer token (one line). When set, every admin
        /// request without `Authorization: Bearer <token>` is refused with 401.
        admin_token_file: Option<PathBuf> = None,
            flag Option<PathBuf> [value_name = "FILE"]
            "Admin bearer token file: admin requests without the token get 401.";
        /// Test-only fault layer (needs `chaos`): fraction of datagrams dropped, in
        /// [0, 1]; drop + delay at most 1.
        chaos_drop: f64 = 0.0,
            flag Option<f64> [value_name = "P"]
            "Fault layer (needs --chaos): fraction of datagrams dropped.";
        /// Fraction of datagrams duplicated (needs `chaos`).
        chaos_dup: f64 = 0.0,
            flag Option<f64> [value_name = "P"]
            "Fault layer: fraction of datagrams duplicated.";
        /// Fraction of datagrams delayed by `chaos_delay_ms` (needs `chaos`).
        chaos_delay: f64 = 0.0,
            flag Option<f64> [value_name = "P"]
            "Fault layer: fraction of datagrams delayed by --chaos-delay-ms.";
        /// Delay applied to the `chaos_delay` fraction, in milliseconds (needs `chaos`).
        chaos_delay_ms: u64 = 0,
            flag Option<u64> [value_name = "MS"]
            "Fault layer: delay in milliseconds.";
        /// Where the random faults apply: `send`, `recv` or `both`.
        chaos_side: Side = Side::Both,
            flag Option<Side> [value_name = "SIDE"]
            "Fault layer: side the random faults apply to (send, recv, both).";
        /// Addresses whose links are cut from the start (`IP`, `IP:PORT`,
        /// `IP:PORT-PORT`; needs `chaos`). The flag, repeated, replaces the file's list.
        chaos_cut: Vec<String> = Vec::new(),
            flag Vec<String> [value_name = "ADDR"]
            "Fault layer: cut the links to this address (repeatable; IP, IP:PORT, \
             IP:PORT-PORT).";
        /// `SO_RCVBUF` requested for every UDP socket (the kernel caps it at
        /// `net.core.rmem_max`).
        recv_buffer_bytes: usize = 8 << 20;
        /// `SO_SNDBUF` requested for every UDP socket (capped at `net.core.wmem_max`).
        send_buffer_bytes: usize = 8 << 20;
        /// Largest datagram the node sends, [`wire::MIN_MTU`] to [`MAX_UDP_PAYLOAD`];
        /// `protocol.max_payload` must fit in one datagram of this size.
        mtu: usize = wire::DEFAULT_MTU;
        /// Plumtree tunables (the `[protocol]` table).
        protocol: ProtocolConfig = ProtocolConfig::default();
        /// HyParView tunables (the `[membership]` table; durations in milliseconds).
        membership: MembershipConfig = MembershipConfig::default();
        /// Per-source flood limit on shard sockets, datagrams a second (0: off).
        rate_limit_per_peer: u32 = 100_000;
        /// Burst a source may send above its rate; positive when the rate is.
        rate_limit_burst: u32 = 20_000;
        /// Sources a shard's limiter tracks at most (least recently seen evicted), 1 to
        /// [`MAX_RATE_LIMIT_PEERS`].
        rate_limit_peers: usize = 4096;
        /// Admin plane: most bytes of a request line plus headers (431 beyond), within
        /// [`ADMIN_HEADER_BYTES`].
        admin_max_header_bytes: usize = 16 * 1024;
        /// Admin plane: most connections held at once (idle ones are closed for new
        /// ones), within [`ADMIN_CONNECTIONS`].
        admin_max_connections: usize = 128;
        /// Admin plane: time to send a request head, in ms (1 to 3,600,000); also the
        /// keep-alive idle timeout.
        admin_header_timeout_ms: u64 = 5000;
        /// Admin plane: time to send a request body, in ms (1 to 3,600,000; 408 beyond).
        admin_body_timeout_ms: u64 = 10_000;
        /// Client port: most connections at once (at least 1); one more is answered
        /// `-ERR` and closed.
        max_clients: usize = 1024;
        /// Client port: most subscriptions one connection may hold (at least 1).
        max_subscriptions: usize = 1024;
        /// Client port: bytes of messages one connection may have waiting to be written
        /// before further messages for it are counted as missed (it is then told with
        /// `-ERR 'Slow Consumer'` and a `$PLUMCORE.lagged` message carrying the count).
        max_pending_bytes: usize = 16 << 20;
        /// How long the deliveries file's log keeps a delivery its reader has not taken
        /// (a stalled FIFO), in ms (at least 1); `None`: `protocol.message_cache_ttl`,
        /// the time the payload cache holds the same payloads anyway.
        delivery_retention_ms: Option<u64> = None;
        /// Bytes the log may hold (payload, topic and about 96 bytes per delivery);
        /// default 256 MiB, `max_cached_bytes`' default, for the same reason.
        delivery_retention_bytes: usize = 256 << 20;
    }

    switches {
        /// Flood instead of Plumtree (`protocol.mode = "flood"`): eager push to every
        /// neighbour, no lazy push, no pruning; the classic-gossip baseline for benchmarks.
        flood => protocol.mode = crate::protocol::Mode::Flood;
    }
}

/// The default of `client_listen`.
pub const DEFAULT_CLIENT_LISTEN: &str = "127.0.0.1:4222";

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines; ANSI colours only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Bounds of `admin_max_header_bytes`.
pub const ADMIN_HEADER_BYTES: std::ops::RangeInclusive<usize> = 8192..=1 << 20;
/// Bounds of `admin_max_connections`.
pub const ADMIN_CONNECTIONS: std::ops::RangeInclusive<usize> = 1..=65536;

/// Why the configuration was refused. Its `Display` is one line that names the file
/// or the key at fault, which is what the operator needs to fix it.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {}: {source}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("config file {}: {message}{}", path.display(), line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    Parse {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the offending text, when the parser knows it.
        line: Option<usize>,
        /// The TOML parser's message.
        message: String,
    },
    /// A value is out of range; `key` is dotted (`protocol.partitions`).
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// The dotted key (`protocol.partitions`, `client_listen`).
        key: String,
        /// What is wrong with its value.
        reason: String,
    },
}

impl ConfigError {
    fn invalid(key: &str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    /// The dotted key at fault, for errors that concern one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// A `--node-id` value: the id, and the name it was hashed from, if it was one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIdArg {
    /// The node id, given as a number or hashed from the name.
    pub id: u64,
    /// The name, when the value was a name rather than a number.
    pub name: Option<String>,
}

/// The id a node name stands for: the first 8 bytes of BLAKE3(name), read
/// little-endian (`b3sum` shows them as the first 16 hex digits, byte by byte).
/// 0 is not used; it becomes 1.
pub fn node_id_from_name(name: &str) -> u64 {
    let h = blake3::hash(name.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(b).max(1)
}

/// Checks a node name: 1 to 64 bytes, no control characters.
pub fn check_node_name(name: &str) -> Result<(), String> {
    if crate::wire::member_frame::is_valid_node_name(name) {
        Ok(())
    } else if name.is_empty() {
        Err("must not be empty".into())
    } else if name.len() > crate::wire::member_frame::MAX_NODE_NAME {
        Err(format!(
            "`{}` is {} bytes; at most {}",
            name.escape_debug(),
            name.len(),
            crate::wire::member_frame::MAX_NODE_NAME
        ))
    } else {
        Err(format!(
            "`{}` contains control characters",
            name.escape_debug()
        ))
    }
}

/// Parses a `--node-id`: decimal, `0x`-hex, or a name (starting with a letter) that
/// is hashed with [`node_id_from_name`].
pub fn parse_node_id_arg(s: &str) -> Result<NodeIdArg, String> {
    let t = s.trim();
    if t.starts_with(|c: char| c.is_alphabetic()) && !t.starts_with("0x") && !t.starts_with("0X") {
        check_node_name(t).map_err(|e| format!("node name {e}"))?;
        return Ok(NodeIdArg {
            id: node_id_from_name(t),
            name: Some(t.to_string()),
        });
    }
    parse_node_id(t).map(|id| NodeIdArg { id, name: None })
}

/// Parses a node id written in decimal or as `0x`-prefixed hex, or a name (see
/// [`parse_node_id_arg`]).
pub fn parse_node_id(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None if t.starts_with(|c: char| c.is_alphabetic()) => {
            return parse_node_id_arg(t).map(|a| a.id)
        }
        None => t.parse::<u64>(),
    };
    parsed.map_err(|_| {
        format!("`{s}` is not a decimal or 0x-hex 64-bit node id, nor a name (names start with a letter)")
    })
}

fn de_node_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Text(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Int(v)) => Ok(Some(v)),
        Some(Raw::Text(s)) => parse_node_id(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Checks a log filter (`info`, `plumcore=debug,warn`, ...): every comma-separated
/// directive is a level, or `TARGET=LEVEL`. `tracing`'s own parser reads a bare word
/// such as `warnn` as a target name and then logs nothing, so it is refused here.
pub fn check_log_filter(filter: &str) -> Result<(), String> {
    for d in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = match d.rsplit_once('=') {
            Some((target, level)) if !target.trim().is_empty() => level.trim(),
            Some(_) => return Err(format!("`{filter}`: directive `{d}` has no target")),
            None => d,
        };
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            let within = if d == filter.trim() {
                String::new()
            } else {
                format!(" (in `{filter}`)")
            };
            return Err(format!(
                "`{level}` is not a level{within}: use trace, debug, info, warn, error or off, or TARGET=LEVEL"
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(filter)
        .map(|_| ())
        .map_err(|e| format!("`{filter}`: {e}"))
}

/// Reads `file` (the `--config` flag; none: the defaults), applies the flags on top
/// (flags win) and validates the result.
pub fn load(file: Option<&Path>, flags: &ConfigFlags) -> Result<NodeConfig, ConfigError> {
    let mut cfg = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            parse_toml(path, &text)?
        }
        None => NodeConfig::default(),
    };
    flags.apply(&mut cfg);
    cfg.validate()?;
    Ok(cfg)
}

/// Parses TOML text as a [`NodeConfig`] without validating it; `path` only labels
/// errors.
pub fn parse_toml(path: &Path, text: &str) -> Result<NodeConfig, ConfigError> {
    // Syntax first, so that syntax errors are not attributed to a key.
    let table = toml::from_str::<toml::Table>(text);
    let named_id = table.as_ref().ok().and_then(|t| {
        t.get("node_id")?
            .as_str()
            .and_then(|s| parse_node_id_arg(s).ok()?.name)
    });
    let syntax = table.err();
    let result = match syntax {
        Some(e) => Err((e, false)),
        None => toml::from_str::<NodeConfig>(text)
            .map(|mut c| {
                // `node_id = "web-1"` names the node too, unless node_name says otherwise.
                if c.node_name.is_none() {
                    c.node_name = named_id;
                }
                c
            })
            .map_err(|e| (e, true)),
    };
    result.map_err(|(e, semantic)| {
        let start = e
            .span()
            .map(|s| s.start.min(text.len()))
            .filter(|&s| text.is_char_boundary(s));
        let line = start.map(|s| text[..s].matches('\n').count() + 1);
        let message = if semantic {
            describe_toml_error(e.message(), text, start)
        } else {
            let m = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
            // A bad value on a `key = value` line: name the key, and say that
            // addresses and paths are strings (`bind = 127.0.0.1:7000` parses as a
            // broken float).
            let value_error = start.filter(|&s| {
                let line_start = text[..s].rfind('\n').map_or(0, |i| i + 1);
                let line = text[line_start..].lines().next().unwrap_or("");
                // One `=`, the error after it, and not inside an array or table that
                // an earlier line left open.
                line.matches('=').count() == 1
                    && line_start + line.find('=').unwrap_or(usize::MAX) < s
                    && !m.contains("array")
                    && !m.contains("table")
            });
            match value_error.and_then(|s| key_at(text, s)) {
                Some(key) => format!(
                    "key `{key}`: value is not valid TOML ({m}); addresses, paths and names need quotes, e.g. {key} = \"...\""
                ),
                None => m,
            }
        };
        ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            message,
        }
    })
}

/// Turns serde's messages into the operator's vocabulary: "unknown key `protocol.x`"
/// rather than "unknown field `x`, expected one of ...", and names the key a type error
/// is about. Always one line.
fn describe_toml_error(message: &str, text: &str, start: Option<usize>) -> String {
    let one_line = |m: &str| m.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or_default();
        // The protocol table's expected-fields list names its own keys.
        let prefix = if message.contains("`eager_fanout`") {
            "protocol."
        } else if message.contains("`shuffle_interval`") {
            "membership."
        } else {
            ""
        };
        return format!("unknown key `{prefix}{name}`");
    }
    let key = start.and_then(|s| key_at(text, s));
    match key {
        Some(key) => format!("key `{key}`: {}", one_line(message)),
        None => one_line(message),
    }
}

/// The dotted key whose `key = value` line contains byte offset `pos`, if it is one.
fn key_at(text: &str, pos: usize) -> Option<String> {
    let line_start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
    let line = &text[line_start..line_end];
    let (lhs, _) = line.split_once('=')?;
    let name = lhs.trim().trim_matches('"');
    if name.is_empty() || name.starts_with('[') || name.starts_with('#') {
        return None;
    }
    // The innermost table header above the line, if any.
    let table = text[..line_start].lines().rev().find_map(|l| {
        let l = l.trim();
        (l.starts_with('[') && !l.starts_with("[[")).then(|| {
            l.trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
        })
    });
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{name}"),
        _ => name.to_string(),
    })
}

impl ConfigFlags {
    /// Overlays the flags that were given onto `cfg` (flags win over the file), then
    /// lets a named `--node-id` name the node unless a name is set already.
    pub fn apply(&self, cfg: &mut NodeConfig) {
        self.overlay(cfg);
        if let Some(NodeIdArg {
            name: Some(name), ..
        }) = &self.node_id
        {
            cfg.node_name.get_or_insert_with(|| name.clone());
        }
    }
}

/// A `--node-id` lands on `node_id` as its id; the name it was hashed from is handled
/// by [`ConfigFlags::apply`].
impl From<NodeIdArg> for Option<u64> {
    fn from(arg: NodeIdArg) -> Self {
        Some(arg.id)
    }
}

impl NodeConfig {
    /// The fault layer's settings at start, checked; every `chaos_*` key other than
    /// `chaos_side` needs `chaos = true`.
    pub fn fault_config(&self) -> Result<FaultConfig, ConfigError> {
        let rates = FaultRates {
            drop: self.chaos_drop,
            dup: self.chaos_dup,
            delay: self.chaos_delay,
            delay_ms: self.chaos_delay_ms,
            side: self.chaos_side,
        };
        let set = [
            ("chaos_drop", rates.drop != 0.0),
            ("chaos_dup", rates.dup != 0.0),
            ("chaos_delay", rates.delay != 0.0),
            ("chaos_delay_ms", rates.delay_ms != 0),
            ("chaos_cut", !self.chaos_cut.is_empty()),
        ];
        if let Some((key, _)) = set.iter().find(|(_, on)| *on && !self.chaos) {
            return Err(ConfigError::invalid(key, "needs chaos = true (--chaos)"));
        }
        rates.validate().map_err(|e| {
            let key = match e {
                FaultError::Probability("dup") => "chaos_dup",
                FaultError::Probability("delay") | FaultError::Sum => "chaos_delay",
                FaultError::Delay => "chaos_delay_ms",
                _ => "chaos_drop",
            };
            ConfigError::invalid(key, e.to_string())
        })?;
        let cuts = self
            .chaos_cut
            .iter()
            .map(|c| c.parse::<AddrRange>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::invalid("chaos_cut", e.to_string()))?;
        if cuts.len() > MAX_CUTS {
            return Err(ConfigError::invalid(
                "chaos_cut",
                FaultError::TooManyCuts.to_string(),
            ));
        }
        Ok(FaultConfig { rates, cuts })
    }

    /// The shard sockets' flood limit.
    pub fn rate_limit(&self) -> RateLimitConfig {
        RateLimitConfig {
            per_sec: self.rate_limit_per_peer,
            burst: self.rate_limit_burst,
            max_peers: self.rate_limit_peers,
        }
    }

    /// Sets the application's validator (see [`crate::protocol::validate`]): run on
    /// the shards for every message received from a peer, before it is delivered or
    /// relayed.
    pub fn validator(mut self, v: impl crate::protocol::Validator) -> Self {
        self.protocol = self.protocol.validator(v);
        self
    }

    /// The deliveries file's retention (its default is the payload cache's TTL).
    pub fn delivery_retention(&self) -> std::time::Duration {
        self.delivery_retention_ms.map_or(
            self.protocol.message_cache_ttl,
            std::time::Duration::from_millis,
        )
    }

    /// Where the client port listens; `None` for `off`.
    pub fn client_listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let v = self.client_listen.trim();
        if v.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        v.parse().map(Some).map_err(|_| {
            ConfigError::invalid(
                "client_listen",
                format!("`{v}` is neither IP:PORT nor `off`"),
            )
        })
    }

    /// The admin plane's limits.
    pub fn admin_limits(&self) -> super::admin::AdminLimits {
        super::admin::AdminLimits {
            max_header_bytes: self.admin_max_header_bytes,
            max_connections: self.admin_max_connections,
            header_timeout: std::time::Duration::from_millis(self.admin_header_timeout_ms),
            body_timeout: std::time::Duration::from_millis(self.admin_body_timeout_ms),
            allow_empty: self.allow_empty,
            ..super::admin::AdminLimits::default()
        }
    }

    /// Checks every bound, protocol keys included (reported as `protocol.<key>`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.protocol
            .validate()
            .map_err(|e| ConfigError::invalid(&format!("protocol.{}", e.key), e.reason))?;
        if let Some(n) = self.shards {
            if !(1..=MAX_SHARDS).contains(&n) {
                return Err(ConfigError::invalid(
                    "shards",
                    format!("must be between 1 and {MAX_SHARDS}"),
                ));
            }
            if n > self.protocol.partitions as usize {
                return Err(ConfigError::invalid(
                    "shards",
                    format!(
                        "must be at most protocol.partitions ({}); each shard owns a partition",
                        self.protocol.partitions
                    ),
                ));
            }
        }
        if !(wire::MIN_MTU..=MAX_UDP_PAYLOAD).contains(&self.mtu) {
            return Err(ConfigError::invalid(
                "mtu",
                format!("must be between {} and {MAX_UDP_PAYLOAD}", wire::MIN_MTU),
            ));
        }
        // With a cluster key every datagram also carries the auth trailer.
        let trailer = if self.cluster_key_file.is_some() {
            wire::auth::TRAILER_LEN
        } else {
            0
        };
        if self.mtu < wire::MIN_MTU + trailer {
            return Err(ConfigError::invalid(
                "mtu",
                format!(
                    "must be at least {} with cluster_key_file (auth trailer)",
                    wire::MIN_MTU + trailer
                ),
            ));
        }
        let gossip_room =
            self.mtu - trailer - wire::HEADER_LEN - wire::FRAME_PREFIX_LEN - wire::GOSSIP_FIXED_LEN;
        if self.protocol.max_payload > gossip_room {
            return Err(ConfigError::invalid(
                "protocol.max_payload",
                format!(
                    "must fit in one datagram of mtu {} bytes (at most {gossip_room})",
                    self.mtu
                ),
            ));
        }
        self.membership
            .validate()
            .map_err(|e| ConfigError::invalid(&format!("membership.{}", e.key), e.reason))?;
        if self.log_level.trim().is_empty() {
            return Err(ConfigError::invalid("log_level", "must not be empty"));
        }
        check_log_filter(&self.log_level).map_err(|e| ConfigError::invalid("log_level", e))?;
        if let Some(name) = &self.node_name {
            check_node_name(name).map_err(|e| ConfigError::invalid("node_name", e))?;
        }
        if let Some(a) = self.advertise {
            if a.ip().is_unspecified() || a.port() == 0 {
                return Err(ConfigError::invalid(
                    "advertise",
                    format!("`{a}` cannot be reached: give the address and port peers use"),
                ));
            }
        }
        self.client_listen_addr()?;
        if self.delivery_retention_ms == Some(0) {
            return Err(ConfigError::invalid(
                "delivery_retention_ms",
                "must be at least 1",
            ));
        }
        for (key, v) in [
            ("delivery_retention_bytes", self.delivery_retention_bytes),
            ("max_clients", self.max_clients),
            ("max_subscriptions", self.max_subscriptions),
            ("max_pending_bytes", self.max_pending_bytes),
        ] {
            if v == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if self.cluster_encrypt && self.cluster_key_file.is_none() {
            return Err(ConfigError::invalid(
                "cluster_encrypt",
                "needs cluster_key_file (--cluster-key-file): the datagrams are encrypted under the cluster keys",
            ));
        }
        self.fault_config()?;
        if self.rate_limit_per_peer > 0 && self.rate_limit_burst == 0 {
            return Err(ConfigError::invalid(
                "rate_limit_burst",
                "must be positive when rate_limit_per_peer is",
            ));
        }
        if !(1..=MAX_RATE_LIMIT_PEERS).contains(&self.rate_limit_peers) {
            return Err(ConfigError::invalid(
                "rate_limit_peers",
                format!("must be between 1 and {MAX_RATE_LIMIT_PEERS}"),
            ));
        }
        if !ADMIN_HEADER_BYTES.contains(&self.admin_max_header_bytes) {
            return Err(ConfigError::invalid(
                "admin_max_header_bytes",
                format!(
                    "must be between {} and {}",
                    ADMIN_HEADER_BYTES.start(),
                    ADMIN_HEADER_BYTES.end()
                ),
            ));
        }
        if !ADMIN_CONNECTIONS.contains(&self.admin_max_connections) {
            return Err(ConfigError::invalid(
                "admin_max_connections",
                format!(
                    "must be between {} and {}",
                    ADMIN_CONNECTIONS.start(),
                    ADMIN_CONNECTIONS.end()
                ),
            ));
        }
        for (key, v) in [
            ("admin_header_timeout_ms", self.admin_header_timeout_ms),
            ("admin_body_timeout_ms", self.admin_body_timeout_ms),
        ] {
            if v == 0 || v > 3_600_000 {
                return Err(ConfigError::invalid(
                    key,
                    "must be between 1 and 3600000 ms",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config file in the temp dir, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn write(text: &str) -> TempFile {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "plumcore-config-{}-{}.toml",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    /// `plumcore node --config FILE` without other flags.
    fn load_file(file: &TempFile) -> Result<NodeConfig, ConfigError> {
        load(Some(file.path()), &ConfigFlags::default())
    }

    #[test]
    fn defaults() {
        let cfg = load(None, &ConfigFlags::default()).unwrap();
        assert_eq!(cfg, NodeConfig::default());
        assert_eq!(cfg.node_id, None);
        assert_eq!(cfg.bind, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(cfg.admin, "127.0.0.1:7080".parse().unwrap());
        assert!(cfg.seeds.is_empty());
        assert_eq!(cfg.log_level, "info");
        assert_eq!(cfg.membership, MembershipConfig::default());
        assert_eq!(cfg.recv_buffer_bytes, 8 << 20);
        assert_eq!(cfg.send_buffer_bytes, 8 << 20);
        assert_eq!(cfg.mtu, 1400);
        assert_eq!(cfg.protocol, ProtocolConfig::default());
        // An empty file is the defaults too.
        let f = write("");
        assert_eq!(load_file(&f).unwrap(), NodeConfig::default());
    }

    #[test]
    fn file_then_flags() {
        let f = write(
            r#"
node_id = "0xff"
bind = "127.0.0.1:9000"
seeds = ["127.0.0.1:9100", "127.0.0.1:9200"]
admin = "127.0.0.1:9080"
shards = 4
log_level = "debug"
deliveries = "/tmp/d.ndjson"
mtu = 1300

[protocol]
partitions = 16
graft_timeout = 250
"#,
        );
        let cfg = load_file(&f).unwrap();
        assert_eq!(cfg.node_id, Some(255));
        assert_eq!(cfg.bind, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(cfg.seeds.len(), 2);
        assert_eq!(cfg.shards, Some(4));
        assert_eq!(cfg.log_level, "debug");
        assert_eq!(cfg.mtu, 1300);
        assert_eq!(cfg.protocol.partitions, 16);
        assert_eq!(
            cfg.protocol.graft_timeout,
            std::time::Duration::from_millis(250)
        );

        let args = ConfigFlags {
            node_id: Some(NodeIdArg { id: 7, name: None }),
            bind: Some("127.0.0.1:9500".parse().unwrap()),
            seeds: vec!["127.0.0.1:9900".parse().unwrap()],
            shards: Some(2),
            deliveries: Some("-".into()),
            log_level: Some("warn".into()),
            ..ConfigFlags::default()
        };
        let cfg = load(Some(f.path()), &args).unwrap();
        assert_eq!(cfg.node_id, Some(7));
        assert_eq!(cfg.bind, "127.0.0.1:9500".parse().unwrap());
        assert_eq!(cfg.seeds, vec!["127.0.0.1:9900".parse().unwrap()]);
        assert_eq!(cfg.admin, "127.0.0.1:9080".parse().unwrap());
        assert_eq!(cfg.shards, Some(2));
        assert_eq!(cfg.deliveries.as_deref(), Some("-"));
        assert_eq!(cfg.log_level, "warn");
        assert_eq!(cfg.protocol.partitions, 16);
    }

    #[test]
    fn cluster_key_file_key_and_flag() {
        let f = write("cluster_key_file = \"/etc/plumcore/cluster.keys\"\n");
        let cfg = load_file(&f).unwrap();
        assert_eq!(
            cfg.cluster_key_file.as_deref(),
            Some(Path::new("/etc/plumcore/cluster.keys"))
        );
        let args = ConfigFlags {
            cluster_key_file: Some("/tmp/k".into()),
            ..ConfigFlags::default()
        };
        assert_eq!(
            load(Some(f.path()), &args)
                .unwrap()
                .cluster_key_file
                .as_deref(),
            Some(Path::new("/tmp/k"))
        );
        // The auth trailer needs room: a payload that fits an open cluster's datagram
        // does not fit a keyed one.
        assert_eq!(
            invalid_key("cluster_key_file = \"k\"\nmtu = 1000\n[protocol]\nmax_payload = 960"),
            "protocol.max_payload"
        );
        assert_eq!(invalid_key("cluster_key_file = \"k\"\nmtu = 80"), "mtu");
    }

    #[test]
    fn chaos_keys() {
        let f = write(
            "chaos = true\nchaos_drop = 0.05\nchaos_delay = 0.1\nchaos_delay_ms = 5\nchaos_side = \"send\"\nchaos_cut = [\"127.0.0.1:7000-7002\"]\n",
        );
        let cfg = load_file(&f).unwrap();
        let fc = cfg.fault_config().unwrap();
        assert_eq!(fc.rates.drop, 0.05);
        assert_eq!(fc.rates.side, Side::Send);
        assert_eq!(fc.cuts[0].to_string(), "127.0.0.1:7000-7002");
        let args = ConfigFlags {
            chaos_dup: Some(0.01),
            chaos_side: Some(Side::Both),
            ..ConfigFlags::default()
        };
        let fc = load(Some(f.path()), &args).unwrap().fault_config().unwrap();
        assert_eq!((fc.rates.dup, fc.rates.side), (0.01, Side::Both));
        assert_eq!(invalid_key("chaos_drop = 0.1"), "chaos_drop");
        assert_eq!(invalid_key("chaos_cut = [\"127.0.0.1\"]"), "chaos_cut");
        assert_eq!(invalid_key("chaos = true\nchaos_drop = 1.5"), "chaos_drop");
        assert_eq!(
            invalid_key("chaos = true\nchaos_drop = 0.6\nchaos_delay = 0.6"),
            "chaos_delay"
        );
        assert_eq!(
            invalid_key("chaos = true\nchaos_delay_ms = 100000"),
            "chaos_delay_ms"
        );
        assert_eq!(
            invalid_key("chaos = true\nchaos_cut = [\"nope\"]"),
            "chaos_cut"
        );
        assert_eq!(
            invalid_key("rate_limit_per_peer = 10\nrate_limit_burst = 0"),
            "rate_limit_burst"
        );
        assert_eq!(invalid_key("rate_limit_peers = 0"), "rate_limit_peers");
        let f = write("rate_limit_per_peer = 0\nrate_limit_burst = 0\nrate_limit_peers = 8\n");
        let rl = load_file(&f).unwrap().rate_limit();
        assert_eq!((rl.per_sec, rl.max_peers), (0, 8));
        let f = write("admin_token_file = \"/etc/plumcore/admin.token\"\n");
        assert_eq!(
            load_file(&f).unwrap().admin_token_file.as_deref(),
            Some(Path::new("/etc/plumcore/admin.token"))
        );
    }

    #[test]
    fn node_id_forms() {
        assert_eq!(parse_node_id("42"), Ok(42));
        assert_eq!(parse_node_id("0x2a"), Ok(42));
        assert_eq!(parse_node_id("0xFFFFFFFFFFFFFFFF"), Ok(u64::MAX));
        // Names hash to the id: first 8 bytes of BLAKE3, little-endian.
        let h = blake3::hash(b"web-1");
        let want = u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap());
        assert_eq!(parse_node_id("web-1"), Ok(want));
        assert_eq!(
            parse_node_id_arg("web-1"),
            Ok(NodeIdArg {
                id: want,
                name: Some("web-1".into())
            })
        );
        assert_eq!(parse_node_id_arg("42").unwrap().name, None);
        assert!(parse_node_id("-1").is_err());
        assert!(parse_node_id("12x").is_err());
        assert!(parse_node_id("0xzz").is_err());
        assert!(parse_node_id(&format!("a{}", "b".repeat(64))).is_err());
        let f = write("node_id = \"web-2\"\n");
        let c = load_file(&f).unwrap();
        assert_eq!(c.node_id, Some(node_id_from_name("web-2")));
        assert_eq!(c.node_name.as_deref(), Some("web-2"));
        let f = write("node_name = \"a\\u0007b\"\n");
        let e = load_file(&f).unwrap_err();
        assert_eq!(e.key(), Some("node_name"), "{e}");
        let f = write("node_id = 12\n");
        assert_eq!(load_file(&f).unwrap().node_id, Some(12));
    }

    /// The flag names `plumcore node` has always had (besides `--config`, which the
    /// binary adds): one per key with `-` for `_`, `--seed` for `seeds`, and `--flood`.
    #[test]
    fn flag_names_follow_the_keys() {
        let cmd = <ConfigFlags as clap::Args>::augment_args(clap::Command::new("x"));
        let longs: Vec<&str> = cmd.get_arguments().filter_map(|a| a.get_long()).collect();
        assert_eq!(
            longs,
            [
                "node-id",
                "node-name",
                "bind",
                "seed",
                "advertise",
                "admin",
                "shards",
                "core-map",
                "deliveries",
                "log-level",
                "log-format",
                "allow-empty",
                "client-listen",
                "chaos",
                "cluster-key-file",
                "cluster-encrypt",
                "admin-token-file",
                "chaos-drop",
                "chaos-dup",
                "chaos-delay",
                "chaos-delay-ms",
                "chaos-side",
                "chaos-cut",
                "flood",
            ]
        );
        // Every flag but the switch names a key the file accepts too.
        for long in longs.iter().filter(|l| **l != "flood") {
            let key = if *long == "seed" {
                "seeds".to_string()
            } else {
                long.replace('-', "_")
            };
            let f = write(&format!("{key} = []\n"));
            if let Err(e) = load_file(&f) {
                let msg = e.to_string();
                assert!(!msg.contains("unknown key"), "{key}: {msg}");
            }
        }
    }

    #[test]
    fn every_flag_lands_on_its_key() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            flags: ConfigFlags,
        }
        let cli = Cli::try_parse_from([
            "x",
            "--node-id=9",
            "--node-name=n9",
            "--bind=127.0.0.1:9000",
            "--seed=127.0.0.1:9100",
            "--seed=127.0.0.1:9200",
            "--advertise=127.0.0.1:9300",
            "--admin=127.0.0.1:9080",
            "--shards=2",
            "--core-map=/c",
            "--deliveries=-",
            "--log-level=warn",
            "--log-format=json",
            "--allow-empty",
            "--client-listen=off",
            "--chaos",
            "--cluster-key-file=/k",
            "--cluster-encrypt",
            "--admin-token-file=/t",
            "--chaos-drop=0.1",
            "--chaos-dup=0.2",
            "--chaos-delay=0.3",
            "--chaos-delay-ms=4",
            "--chaos-side=recv",
            "--chaos-cut=10.0.0.1",
            "--flood",
        ])
        .unwrap();
        let mut cfg = NodeConfig::default();
        cli.flags.apply(&mut cfg);
        let protocol = ProtocolConfig {
            mode: crate::protocol::Mode::Flood,
            ..ProtocolConfig::default()
        };
        let want = NodeConfig {
            node_id: Some(9),
            node_name: Some("n9".into()),
            bind: "127.0.0.1:9000".parse().unwrap(),
            seeds: vec![
                "127.0.0.1:9100".parse().unwrap(),
                "127.0.0.1:9200".parse().unwrap(),
            ],
            advertise: Some("127.0.0.1:9300".parse().unwrap()),
            admin: "127.0.0.1:9080".parse().unwrap(),
            shards: Some(2),
            core_map: Some("/c".into()),
            deliveries: Some("-".into()),
            log_level: "warn".into(),
            log_format: LogFormat::Json,
            allow_empty: true,
            client_listen: "off".into(),
            chaos: true,
            cluster_key_file: Some("/k".into()),
            cluster_encrypt: true,
            admin_token_file: Some("/t".into()),
            chaos_drop: 0.1,
            chaos_dup: 0.2,
            chaos_delay: 0.3,
            chaos_delay_ms: 4,
            chaos_side: Side::Recv,
            chaos_cut: vec!["10.0.0.1".into()],
            protocol,
            ..NodeConfig::default()
        };
        assert_eq!(cfg, want);
    }

    #[test]
    fn a_named_node_id_flag_names_the_node_unless_a_name_is_set() {
        let named = |flags: &ConfigFlags, file: &str| {
            let f = write(file);
            load(Some(f.path()), flags).unwrap().node_name
        };
        let id = ConfigFlags {
            node_id: Some(parse_node_id_arg("web-2").unwrap()),
            ..ConfigFlags::default()
        };
        assert_eq!(named(&id, "").as_deref(), Some("web-2"));
        assert_eq!(named(&id, "node_name = \"f\"\n").as_deref(), Some("f"));
        assert_eq!(
            named(&id, "node_id = \"web-1\"\n").as_deref(),
            Some("web-1")
        );
        let both = ConfigFlags {
            node_name: Some("n".into()),
            ..id.clone()
        };
        assert_eq!(named(&both, "node_name = \"f\"\n").as_deref(), Some("n"));
        let f = write("node_id = \"web-1\"\n");
        assert_eq!(
            load(Some(f.path()), &id).unwrap().node_id,
            Some(node_id_from_name("web-2"))
        );
    }

    #[test]
    fn clap_flags() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            node: ConfigFlags,
        }
        let cli = Cli::try_parse_from([
            "x",
            "--node-id",
            "0x10",
            "--seed",
            "127.0.0.1:1",
            "--seed",
            "127.0.0.1:2",
            "--shards",
            "3",
            "--deliveries",
            "-",
            "--log-level",
            "debug",
            "--core-map",
            "/c",
            "--admin",
            "127.0.0.1:1234",
            "--bind",
            "127.0.0.1:4321",
        ])
        .unwrap();
        let chaos = Cli::try_parse_from([
            "x",
            "--chaos",
            "--chaos-drop",
            "0.05",
            "--chaos-side",
            "recv",
            "--chaos-cut",
            "127.0.0.1:7000-7002",
            "--chaos-cut",
            "10.0.0.1",
            "--admin-token-file",
            "/t",
        ])
        .unwrap();
        assert_eq!(chaos.node.chaos_drop, Some(0.05));
        assert_eq!(chaos.node.chaos_side, Some(Side::Recv));
        assert_eq!(chaos.node.chaos_cut.len(), 2);
        assert_eq!(
            chaos.node.admin_token_file.as_deref(),
            Some(Path::new("/t"))
        );
        assert!(Cli::try_parse_from(["x", "--chaos-side", "sideways"]).is_err());
        assert_eq!(cli.node.node_id, Some(NodeIdArg { id: 16, name: None }));
        assert_eq!(cli.node.seeds.len(), 2);
        assert_eq!(cli.node.shards, Some(3));
        assert!(Cli::try_parse_from(["x", "--node-id", "12nope"]).is_err());
    }

    fn invalid_key(toml_text: &str) -> String {
        let f = write(toml_text);
        let err = load_file(&f).unwrap_err();
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "one line: {msg}");
        let key = err
            .key()
            .unwrap_or_else(|| panic!("not a key error: {msg}"));
        assert!(msg.starts_with(&format!("config key `{key}`: ")), "{msg}");
        key.to_string()
    }

    #[test]
    fn validation_names_key() {
        assert_eq!(invalid_key("shards = 0"), "shards");
        assert_eq!(invalid_key("shards = 65"), "shards");
        assert_eq!(
            invalid_key("shards = 8\n[protocol]\npartitions = 4"),
            "shards"
        );
        assert_eq!(invalid_key("mtu = 10"), "mtu");
        assert_eq!(invalid_key("mtu = 70000"), "mtu");
        assert_eq!(
            invalid_key("[membership]\nactive_view = 0"),
            "membership.active_view"
        );
        assert_eq!(
            invalid_key("[membership]\nheartbeat_interval = 0"),
            "membership.heartbeat_interval"
        );
        assert_eq!(
            invalid_key("[membership]\nheartbeat_interval = 500\nfailure_timeout = 600"),
            "membership.failure_timeout"
        );
        assert_eq!(
            invalid_key("[membership]\njoin_retry = 500\njoin_retry_max = 100"),
            "membership.join_retry_max"
        );
        assert_eq!(
            invalid_key("[membership]\njoin_retry = 500\nlost_probe_max = 100"),
            "membership.lost_probe_max"
        );
        assert_eq!(invalid_key("log_level = \"\""), "log_level");
        assert_eq!(
            invalid_key("[protocol]\npartitions = 3"),
            "protocol.partitions"
        );
        assert_eq!(
            invalid_key("[protocol]\neager_fanout = 0"),
            "protocol.eager_fanout"
        );
        assert_eq!(
            invalid_key("mtu = 600\n[protocol]\nmax_payload = 1200"),
            "protocol.max_payload"
        );
        let f = write("[protocol]\npartitions = 3");
        assert_eq!(
            load_file(&f).unwrap_err().to_string(),
            "config key `protocol.partitions`: must be a power of two between 1 and 64"
        );
        // Flags are validated too.
        let args = ConfigFlags {
            shards: Some(0),
            ..ConfigFlags::default()
        };
        assert_eq!(load(None, &args).unwrap_err().key(), Some("shards"));
    }

    #[test]
    fn membership_table() {
        let f = write(
            "[membership]\nactive_view = 4\npassive_view = 12\nshuffle_interval = 500\nheartbeat_interval = 100\nfailure_timeout = 400\n",
        );
        let m = load_file(&f).unwrap().membership;
        assert_eq!(m.active_view, 4);
        assert_eq!(m.passive_view, 12);
        assert_eq!(m.shuffle_interval, std::time::Duration::from_millis(500));
        assert_eq!(m.heartbeat_interval, std::time::Duration::from_millis(100));
        assert_eq!(m.failure_timeout, std::time::Duration::from_millis(400));
        assert_eq!(m.arwl, MembershipConfig::default().arwl);
        let f = write("[membership]\nactive_view = 4\nbogus = 1\n");
        let msg = load_file(&f).unwrap_err().to_string();
        assert!(
            msg.ends_with("unknown key `membership.bogus` at line 3"),
            "{msg}"
        );
        // The membership-lite keys are gone, and say so.
        let f = write("heartbeat_interval_ms = 500\n");
        let msg = load_file(&f).unwrap_err().to_string();
        assert!(msg.contains("unknown key `heartbeat_interval_ms`"), "{msg}");
    }

    #[test]
    fn unknown_key_rejected() {
        let f = write("bind = \"127.0.0.1:1\"\n\nfoo = 1\n");
        let msg = load_file(&f).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!(
                "config file {}: unknown key `foo` at line 3",
                f.path().display()
            )
        );
        let f = write("[protocol]\npartitions = 8\nbogus = 2\n");
        let msg = load_file(&f).unwrap_err().to_string();
        assert!(
            msg.ends_with("unknown key `protocol.bogus` at line 3"),
            "{msg}"
        );
    }

    #[test]
    fn bad_toml_reports_line() {
        let f = write("bind = \"127.0.0.1:1\"\nseeds = [\nmtu = = 3\n");
        let err = load_file(&f).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, ConfigError::Parse { line: Some(_), .. }),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
        assert!(msg.ends_with(" at line 3"), "{msg}");
        assert!(!msg.contains("key `"), "syntax errors name no key: {msg}");

        // An unquoted address is a broken value on a key's line: that key is named.
        let f = write("bind = 127.0.0.1:7000\n");
        let msg = load_file(&f).unwrap_err().to_string();
        assert!(
            msg.contains("key `bind`") && msg.contains("quotes"),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");

        let f = write("mtu = 1400\n\n[protocol]\npartitions = \"many\"\n");
        let err = load_file(&f).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, ConfigError::Parse { line: Some(4), .. }),
            "{msg}"
        );
        assert!(msg.contains("key `protocol.partitions`"), "{msg}");
        assert!(msg.ends_with(" at line 4"), "{msg}");

        let f = write("bind = \"not an address\"\n");
        let msg = load_file(&f).unwrap_err().to_string();
        assert!(
            msg.contains("key `bind`") && msg.ends_with("at line 1"),
            "{msg}"
        );
    }

    #[test]
    fn missing_file() {
        let file = Path::new("/nonexistent/plumcore.toml");
        let msg = load(Some(file), &ConfigFlags::default())
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("config file /nonexistent/plumcore.toml: "),
            "{msg}"
        );
    }

    #[test]
    fn flood_flag_sets_protocol_mode() {
        assert_eq!(
            load(None, &ConfigFlags::default()).unwrap().protocol.mode,
            crate::protocol::Mode::Plumtree
        );
        let args = ConfigFlags {
            flood: true,
            ..ConfigFlags::default()
        };
        assert_eq!(
            load(None, &args).unwrap().protocol.mode,
            crate::protocol::Mode::Flood
        );
    }
}
