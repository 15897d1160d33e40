//! Overload detection and priority shedding for one shard. A shard is overloaded
//! when its socket's receive backlog fills more than half the receive buffer or its
//! command queue is more than half full; while it is, the shard sheds the work whose
//! loss the protocol repairs (IHave frames received, its own anti-entropy rounds)
//! and keeps what the tree needs now (Gossip, Graft, Prune). Frames are classified
//! after decoding, in the runtime, so the protocol is unchanged.

use std::os::fd::RawFd;

/// The backlog is re-read every this many datagrams received (and on every tick).
pub const PROBE_EVERY: u32 = 32;

/// What the shard shed, by kind, and how often it found itself overloaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShedStats {
    /// IHave frames received and not handled.
    pub ihave: u64,
    /// Anti-entropy rounds skipped.
    pub anti_entropy: u64,
    /// Probes that found the shard overloaded.
    pub overloaded: u64,
}

/// One shard's overload state.
#[derive(Debug, Default)]
pub struct Overload {
    since_probe: u32,
    overloaded: bool,
    pub stats: ShedStats,
}

/// Bytes queued in the socket's receive buffer and the buffer's size, from
/// `SO_MEMINFO`; `None` where the kernel does not say.
pub fn socket_backlog(fd: RawFd) -> Option<(u32, u32)> {
    let mut info = [0u32; 9]; // SK_MEMINFO_VARS
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: `info` is a writable buffer of `len` bytes that outlives the call; the
    // kernel writes at most `len` bytes and updates `len`. A bad fd is an error return.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    (rc == 0 && len as usize >= 2 * std::mem::size_of::<u32>()).then_some((info[0], info[1]))
}

/// Whether these levels mean overload: backlog above half the receive buffer, or
/// command queue above half its bound.
pub fn is_overloaded(backlog: Option<(u32, u32)>, queue: usize, queue_cap: usize) -> bool {
    let socket =
        backlog.is_some_and(|(used, size)| size > 0 && u64::from(used) * 2 > u64::from(size));
    socket || queue * 2 > queue_cap
}

impl Overload {
    /// Re-reads the levels now.
    pub fn probe(&mut self, fd: RawFd, queue: usize, queue_cap: usize) {
        self.since_probe = 0;
        self.overloaded = is_overloaded(socket_backlog(fd), queue, queue_cap);
        if self.overloaded {
            self.stats.overloaded += 1;
        }
    }

    /// Called per datagram received: re-reads the levels every [`PROBE_EVERY`].
    pub fn on_receive(&mut self, fd: RawFd, queue: usize, queue_cap: usize) {
        self.since_probe += 1;
        if self.since_probe >= PROBE_EVERY {
            self.probe(fd, queue, queue_cap);
        }
    }

    /// Whether to shed IHave and anti-entropy work now.
    pub fn shedding(&self) -> bool {
        self.overloaded
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn thresholds() {
        assert!(!is_overloaded(None, 0, 100));
        assert!(!is_overloaded(Some((50, 100)), 50, 100));
        assert!(is_overloaded(Some((51, 100)), 0, 100));
        assert!(is_overloaded(None, 51, 100));
        assert!(!is_overloaded(Some((10, 0)), 0, 100));
    }

    #[test]
    fn a_backlogged_socket_reads_as_overloaded() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let mut o = Overload::default();
        o.probe(rx.as_raw_fd(), 0, 100);
        assert!(!o.shedding());
        let (used, size) = socket_backlog(rx.as_raw_fd()).expect("SO_MEMINFO");
        assert_eq!(used, 0);
        // Nobody reads: fill the buffer.
        let d = [0u8; 1200];
        for _ in 0..(size as usize / 1200 + 64) {
            let _ = tx.send_to(&d, to);
        }
        let (used, _) = socket_backlog(rx.as_raw_fd()).unwrap();
        assert!(used * 2 > size, "backlog {used} of {size}");
        for _ in 0..PROBE_EVERY {
            o.on_receive(rx.as_raw_fd(), 0, 100);
        }
        assert!(o.shedding());
        assert_eq!(o.stats.overloaded, 1);
        // Drained: no longer overloaded.
        rx.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 2048];
        while rx.recv_from(&mut buf).is_ok() {}
        o.probe(rx.as_raw_fd(), 0, 100);
        assert!(!o.shedding());
    }
}
