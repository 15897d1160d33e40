//! The address a node tells its peers, when the operator did not set one.

use std::net::SocketAddr;

/// The address a node describes itself by: `configured`, else `bind` unless that
/// is a wildcard, else the local address of the interface that routes to the first
/// seed (asked of the kernel with an unconnected-then-connected UDP socket; nothing
/// is sent), with the bind port.
pub(crate) fn advertise_addr(
    configured: Option<SocketAddr>,
    bind: SocketAddr,
    first_seed: Option<SocketAddr>,
) -> SocketAddr {
    if let Some(a) = configured {
        return a;
    }
    if !bind.ip().is_unspecified() {
        return bind;
    }
    let routed = first_seed.and_then(|seed| {
        let probe = std::net::UdpSocket::bind(SocketAddr::new(bind.ip(), 0)).ok()?;
        probe.connect(seed).ok()?;
        probe.local_addr().ok().map(|a| a.ip())
    });
    match routed {
        Some(ip) if !ip.is_unspecified() => SocketAddr::new(ip, bind.port()),
        _ => {
            tracing::warn!(%bind, "wildcard bind with no seed to route to and no --advertise: peers learn this node's address only from its datagrams' source");
            bind
        }
    }
}
