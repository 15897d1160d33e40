//! Picking free loopback ports for the node processes the load generator, the
//! integration tests and the examples start: a node needs a run of consecutive UDP ports (control
//! port, then one per shard), and nothing may reuse a port another run holds. (The node
//! binds its UDP sockets itself, with socket2 and without `SO_REUSEPORT`, so a second
//! node on a port fails to start; glommio 0.9's own `UdpSocket::bind` sets
//! `SO_REUSEPORT`, and then a second socket would silently split the port's traffic.
//! The probes here are plain `std` sockets, which fail on a port held by any socket,
//! whether or not that one set `SO_REUSEPORT`.)

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;

/// No run of free ports was found after many tries.
#[derive(Debug, Error)]
#[error("no run of {0} free UDP ports found on 127.0.0.1")]
pub struct NoFreePorts(pub u16);

/// First of `n` consecutive UDP ports on 127.0.0.1 that are free now (checked by
/// binding each) and not in `taken`; the run is added to `taken`. Starts from a
/// pseudo-random place in 20000..50000 seeded by the pid and the clock, so concurrent
/// test processes rarely collide.
pub fn free_udp_run(n: u16, taken: &mut Vec<u16>) -> Result<u16, NoFreePorts> {
    let mut x = u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let base = 20_000 + (x % 30_000) as u16;
        if (base..base + n).any(|p| taken.contains(&p)) {
            continue;
        }
        let socks: Vec<_> = (base..base + n)
            .map_while(|p| UdpSocket::bind(("127.0.0.1", p)).ok())
            .collect();
        if socks.len() == n as usize {
            taken.extend(base..base + n);
            return Ok(base);
        }
    }
    Err(NoFreePorts(n))
}

/// A TCP port on 127.0.0.1 that is free now (the kernel picks it; the listener is
/// closed again), for a node's admin plane or client port. Another process can take
/// it before the node binds it; [`super::launch`] notices such a node exiting.
pub fn free_tcp() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_free_consecutive_and_never_repeat() {
        let mut taken = Vec::new();
        let a = free_udp_run(3, &mut taken).unwrap();
        let b = free_udp_run(3, &mut taken).unwrap();
        assert!(a.abs_diff(b) >= 3, "runs {a} and {b} overlap");
        assert_eq!(taken.len(), 6);
        for p in a..a + 3 {
            UdpSocket::bind(("127.0.0.1", p)).expect("still free");
        }
    }

    #[test]
    fn a_free_tcp_port_can_be_bound() {
        let a = free_tcp().unwrap();
        assert_eq!(a.ip(), std::net::Ipv4Addr::LOCALHOST);
        assert_ne!(a.port(), 0);
        TcpListener::bind(a).expect("still free");
    }
}
