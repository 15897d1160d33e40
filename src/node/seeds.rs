//! Seeds as operators write them, `IP:PORT` or `host:port`, and the resolver that
//! turns names into addresses. A name is looked up again at every join attempt (DNS
//! records of a cluster change: containers move, services scale), and every address
//! it resolves to is tried. Lookups run on a thread of their own, so a slow or dead
//! DNS server never stalls the control core: a join attempt uses what the lookup
//! started by the previous attempt found, plus every `IP:PORT` seed.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer};
use thiserror::Error;

/// Longest a seed name may be (a DNS name is at most 253 characters).
const MAX_NAME: usize = 253;

/// How often one failing name is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// One configured seed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Seed {
    /// A literal address, used as it is.
    Addr(SocketAddr),
    /// A DNS name (or `localhost`) and the control port, resolved at each join
    /// attempt.
    Name {
        /// The host name.
        host: String,
        /// The control port (1 to 65535).
        port: u16,
    },
}

/// Why a seed string was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SeedError {
    /// The string, as given, is neither an address nor has a `:PORT`.
    #[error("`{0}` is not IP:PORT or HOST:PORT")]
    Syntax(String),
    /// The string, as given, has port 0 or a port that is not a number up to 65535.
    #[error("`{0}`: the port must be 1 to 65535")]
    Port(String),
    /// The string, as given, has a host that is not a valid DNS name.
    #[error("`{0}`: a host name has 1 to 253 characters: letters, digits, `-` and `.`")]
    Host(String),
}

impl FromStr for Seed {
    type Err = SeedError;

    fn from_str(s: &str) -> Result<Self, SeedError> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            if a.port() == 0 {
                return Err(SeedError::Port(s.into()));
            }
            return Ok(Seed::Addr(a));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| SeedError::Syntax(s.into()))?;
        let port: u16 = port.parse().map_err(|_| SeedError::Port(s.into()))?;
        if port == 0 {
            return Err(SeedError::Port(s.into()));
        }
        let valid = !host.is_empty()
            && host.len() <= MAX_NAME
            && host.split('.').all(|l| {
                !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-')
            })
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid {
            return Err(SeedError::Host(s.into()));
        }
        Ok(Seed::Name {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seed::Addr(a) => write!(f, "{a}"),
            Seed::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl<'de> Deserialize<'de> for Seed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl From<SocketAddr> for Seed {
    fn from(a: SocketAddr) -> Self {
        Seed::Addr(a)
    }
}

/// What the last lookups found.
#[derive(Debug, Default)]
struct Resolved {
    /// Bumped by every finished round of lookups.
    generation: u64,
    /// Every literal seed, then every address the names resolved to (deduplicated).
    addrs: Vec<SocketAddr>,
    /// Names that did not resolve, per lookup.
    failures: u64,
    /// A round was asked for and has not started yet.
    wanted: bool,
    stop: bool,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<Resolved>,
    cv: Condvar,
}

/// Resolves the seed names on a thread of its own when asked ([`SeedResolver::kick`]);
/// the control core reads the latest addresses with [`SeedResolver::current`].
/// Without names there is no thread and the addresses never change.
#[derive(Debug)]
pub struct SeedResolver {
    literal: Vec<SocketAddr>,
    names: Vec<(String, u16)>,
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

impl SeedResolver {
    /// Starts resolving `seeds` (the first round at once, when there are names).
    pub fn start(seeds: &[Seed]) -> SeedResolver {
        let mut literal = Vec::new();
        let mut names = Vec::new();
        for s in seeds {
            match s {
                Seed::Addr(a) if !literal.contains(a) => literal.push(*a),
                Seed::Addr(_) => {}
                Seed::Name { host, port } => names.push((host.clone(), *port)),
            }
        }
        let inner = Arc::new(Inner::default());
        {
            let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
            st.addrs = literal.clone();
            st.wanted = !names.is_empty();
        }
        let thread = (!names.is_empty()).then(|| {
            let (inner, literal, names) = (inner.clone(), literal.clone(), names.clone());
            std::thread::Builder::new()
                .name("seed-resolver".into())
                .spawn(move || resolve_loop(&inner, &literal, &names))
                .expect("spawn the seed resolver thread")
        });
        SeedResolver {
            literal,
            names,
            inner,
            thread,
        }
    }

    /// Whether any seed is a name.
    pub fn has_names(&self) -> bool {
        !self.names.is_empty()
    }

    /// Asks for a new round of lookups (at most one waits; never blocks).
    pub fn kick(&self) {
        if self.names.is_empty() {
            return;
        }
        let mut st = self.lock();
        st.wanted = true;
        self.inner.cv.notify_one();
    }

    /// The latest addresses and the generation they belong to.
    pub fn current(&self) -> (u64, Vec<SocketAddr>) {
        let st = self.lock();
        (st.generation, st.addrs.clone())
    }

    /// Names that failed to resolve so far, counted per lookup.
    pub fn failures(&self) -> u64 {
        self.lock().failures
    }

    /// The first seed's address for choosing the interface to advertise: a literal
    /// one at once; for a name, the first round's answer, waited for up to `wait`.
    pub fn first_addr(&self, seeds: &[Seed], wait: Duration) -> Option<SocketAddr> {
        match seeds.first()? {
            Seed::Addr(a) => Some(*a),
            Seed::Name { .. } => {
                let deadline = Instant::now() + wait;
                let mut st = self.lock();
                while st.generation == 0 {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    st = self
                        .inner
                        .cv
                        .wait_timeout(st, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                st.addrs.get(self.literal.len()).copied()
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Resolved> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for SeedResolver {
    fn drop(&mut self) {
        self.lock().stop = true;
        self.inner.cv.notify_all();
        if let Some(t) = self.thread.take() {
            // A lookup in flight is not interrupted; do not wait for a dead DNS server.
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

fn resolve_loop(inner: &Inner, literal: &[SocketAddr], names: &[(String, u16)]) {
    let mut last_warn: Vec<Option<Instant>> = vec![None; names.len()];
    loop {
        {
            let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
            while !st.wanted && !st.stop {
                st = inner.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if st.stop {
                return;
            }
            st.wanted = false;
        }
        let mut addrs = literal.to_vec();
        let mut failures = 0;
        for (i, (host, port)) in names.iter().enumerate() {
            match (host.as_str(), *port).to_socket_addrs() {
                Ok(found) => {
                    let mut any = false;
                    for a in found {
                        any = true;
                        if !addrs.contains(&a) {
                            addrs.push(a);
                        }
                    }
                    if !any {
                        failures += 1;
                    }
                }
                Err(e) => {
                    failures += 1;
                    if last_warn[i].is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                        last_warn[i] = Some(Instant::now());
                        tracing::warn!(
                            "config key `seeds`: `{host}:{port}` does not resolve ({e}); retried at every join attempt"
                        );
                    }
                }
            }
        }
        let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
        st.addrs = addrs;
        st.failures += failures;
        st.generation += 1;
        inner.cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_as_addresses_or_names_and_bad_ones_are_typed_errors() {
        assert_eq!(
            "127.0.0.1:7000".parse::<Seed>(),
            Ok(Seed::Addr("127.0.0.1:7000".parse().unwrap()))
        );
        assert_eq!(
            "[::1]:7000".parse::<Seed>(),
            Ok(Seed::Addr("[::1]:7000".parse().unwrap()))
        );
        assert_eq!(
            "Seed-1.Cluster.local:7000".parse::<Seed>(),
            Ok(Seed::Name {
                host: "seed-1.cluster.local".into(),
                port: 7000
            })
        );
        assert!(matches!("seed".parse::<Seed>(), Err(SeedError::Syntax(_))));
        assert!(matches!("seed:0".parse::<Seed>(), Err(SeedError::Port(_))));
        assert!(matches!(
            "seed:70000".parse::<Seed>(),
            Err(SeedError::Port(_))
        ));
        assert!(matches!(
            "127.0.0.1:0".parse::<Seed>(),
            Err(SeedError::Port(_))
        ));
        assert!(matches!(
            "bad_name:1".parse::<Seed>(),
            Err(SeedError::Host(_))
        ));
        assert!(matches!("a..b:1".parse::<Seed>(), Err(SeedError::Host(_))));
        assert!(matches!(":1".parse::<Seed>(), Err(SeedError::Host(_))));
        assert_eq!(
            "seed-1:7000".parse::<Seed>().unwrap().to_string(),
            "seed-1:7000"
        );
    }

    #[test]
    fn names_resolve_on_request_to_every_address_and_literals_stay() {
        let seeds: Vec<Seed> = vec![
            "127.0.0.9:7000".parse().unwrap(),
            "localhost:7100".parse().unwrap(),
        ];
        let r = SeedResolver::start(&seeds);
        assert!(r.has_names());
        // The first round starts at once; wait for it.
        assert_eq!(
            r.first_addr(&seeds, Duration::from_secs(5)),
            Some("127.0.0.9:7000".parse().unwrap())
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let (generation, addrs) = loop {
            let (g, a) = r.current();
            if g >= 1 || Instant::now() > deadline {
                break (g, a);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(generation >= 1);
        assert_eq!(addrs[0], "127.0.0.9:7000".parse().unwrap());
        assert!(
            addrs[1..]
                .iter()
                .any(|a| a.ip().is_loopback() && a.port() == 7100),
            "{addrs:?}"
        );
        r.kick();
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.current().0 == generation && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(r.current().0 > generation, "a kick starts another round");
        assert_eq!(r.failures(), 0);
    }

    #[test]
    fn an_unresolvable_name_is_counted_and_the_other_seeds_remain() {
        // `.invalid` never resolves (RFC 6761).
        let seeds: Vec<Seed> = vec![
            "no-such-seed.invalid:7000".parse().unwrap(),
            "127.0.0.9:7000".parse().unwrap(),
        ];
        let r = SeedResolver::start(&seeds);
        let deadline = Instant::now() + Duration::from_secs(20);
        while r.current().0 == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let (g, addrs) = r.current();
        assert!(g >= 1);
        assert_eq!(addrs, vec!["127.0.0.9:7000".parse().unwrap()]);
        assert_eq!(r.failures(), 1);
        assert_eq!(r.first_addr(&seeds, Duration::from_secs(1)), None);
    }

    #[test]
    fn literal_seeds_need_no_thread() {
        let r = SeedResolver::start(&["127.0.0.1:1".parse().unwrap()]);
        assert!(!r.has_names());
        assert!(r.thread.is_none());
        assert_eq!(r.current(), (0, vec!["127.0.0.1:1".parse().unwrap()]));
    }
}
