//! The raw UDP baseline: a receive-and-forward loop with no protocol, batched with
//! `recvmmsg`/`sendmmsg`. Whatever plumcore's shard achieves is quoted against what
//! this loop achieves on the same machine, with the same traffic, in the same run.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Datagrams per `recvmmsg`/`sendmmsg` call.
const BATCH: usize = 64;
const BUF: usize = 2048;

/// Counters of the raw loop.
#[derive(Default)]
pub struct RawCounters {
    pub received: AtomicU64,
    pub forwarded: AtomicU64,
}

fn sockaddr_in(addr: SocketAddr) -> libc::sockaddr_in {
    let SocketAddr::V4(v4) = addr else {
        panic!("the raw baseline forwards over IPv4 loopback only");
    };
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(v4.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

/// Receives on `sock` and forwards every datagram to each of `targets`, until `stop`.
pub fn run_raw_forwarder(
    sock: UdpSocket,
    targets: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    counters: Arc<RawCounters>,
) {
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("set timeout");
    let fd = sock.as_raw_fd();
    let mut bufs = vec![[0u8; BUF]; BATCH];
    let dests: Vec<libc::sockaddr_in> = targets.iter().map(|&a| sockaddr_in(a)).collect();
    while !stop.load(Ordering::Relaxed) {
        let mut iovs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: BUF,
            })
            .collect();
        // SAFETY: zeroed mmsghdr is a valid "no name, no control" header.
        let mut msgs: Vec<libc::mmsghdr> =
            (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs` points at BATCH headers whose iovecs point into `bufs`, all of
        // which outlive the call; the fd is our open socket.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue;
        }
        let n = n as usize;
        counters.received.fetch_add(n as u64, Ordering::Relaxed);
        // One sendmmsg per destination, each carrying the whole received batch.
        for dest in &dests {
            let mut out_iovs: Vec<libc::iovec> = (0..n)
                .map(|i| libc::iovec {
                    iov_base: bufs[i].as_mut_ptr().cast(),
                    iov_len: msgs[i].msg_len as usize,
                })
                .collect();
            // SAFETY: as above; zeroed headers are then filled with valid pointers.
            let mut out: Vec<libc::mmsghdr> =
                (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
            for (m, iov) in out.iter_mut().zip(out_iovs.iter_mut()) {
                m.msg_hdr.msg_name = (dest as *const libc::sockaddr_in).cast_mut().cast();
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: `out` holds n headers pointing at live buffers and at `dest`.
            let sent = unsafe { libc::sendmmsg(fd, out.as_mut_ptr(), n as u32, 0) };
            if sent > 0 {
                counters.forwarded.fetch_add(sent as u64, Ordering::Relaxed);
            }
        }
        drop(iovs);
    }
}
