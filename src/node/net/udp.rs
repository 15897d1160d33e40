//! The node's UDP I/O edge: batched receive with `recvmmsg` into pooled buffers, and
//! batched send with `sendmmsg`, several equal-sized datagrams to one peer going out
//! as one `UDP_SEGMENT` (GSO) message where the kernel takes it. Every `unsafe` block
//! of the executors' socket I/O is in this file.
//!
//! Receive: the executor awaits readiness once (glommio's io_uring `MSG_PEEK` receive,
//! which consumes nothing), then drains the socket with non-blocking `recvmmsg` calls
//! of [`RX_BATCH`] datagrams until one comes back short. Each datagram lands in its
//! own pooled buffer of [`RxPool::slot_size`] bytes and is handed out as a [`Bytes`]
//! over that buffer: the decoder's payloads are slices of it, nothing is copied. A
//! buffer returns to the pool when the last `Bytes` over it drops (the pool keeps a
//! handle and reclaims it once that handle is the only one left). When every pooled
//! buffer is still held (payloads in the message cache pin theirs until evicted), the
//! batch gets fresh, unpooled buffers and the exhaustion is counted: the socket keeps
//! serving.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use bytes::{Bytes, BytesMut};
use socket2::SockAddr;

/// Datagrams per `recvmmsg` call.
pub const RX_BATCH: usize = 32;
/// Messages per `sendmmsg` call.
pub const TX_BATCH: usize = 64;
/// `UDP_SEGMENT` (linux/udp.h); not in the libc crate for glibc targets.
const UDP_SEGMENT: libc::c_int = 103;
/// The kernel's limit on segments in one GSO send (`UDP_MAX_SEGMENTS`).
const GSO_MAX_SEGMENTS: usize = 64;
/// Bytes in one GSO send (an IP datagram's payload limit, less headers).
const GSO_MAX_BYTES: usize = 65_000;

/// Buffer size for datagrams of at most `mtu` bytes (a power of two, at least 2 KiB,
/// so the allocator's size classes fit it without waste).
pub fn slot_size(mtu: usize) -> usize {
    mtu.max(2048).next_power_of_two()
}

/// One datagram received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The datagram's bytes, in a pooled receive buffer.
    pub data: Bytes,
    /// The sender's address.
    pub from: SocketAddr,
    /// Larger than the buffer: the kernel truncated it; the caller drops it.
    pub oversized: bool,
}

/// Receive buffers, one datagram each, reused once nothing refers to them any more.
#[derive(Debug)]
pub struct RxPool {
    slot: usize,
    cap: usize,
    /// Buffers ready to receive into (empty, capacity at least `slot`; never
    /// zeroed: the kernel writes them and only what it wrote is exposed).
    free: Vec<BytesMut>,
    /// Buffers handed out, with the pool's own handle on each.
    lent: VecDeque<Bytes>,
    /// Buffers that belong to the pool (free, lent or in the receive batch).
    pooled: usize,
    /// Receive batches that found the pool exhausted (served from fresh buffers).
    pub exhausted: u64,
}

impl RxPool {
    /// A pool of at most `cap` buffers of `slot` bytes, allocated as needed.
    pub fn new(slot: usize, cap: usize) -> Self {
        RxPool {
            slot,
            cap: cap.max(RX_BATCH),
            free: Vec::new(),
            lent: VecDeque::new(),
            pooled: 0,
            exhausted: 0,
        }
    }

    /// Bytes in each buffer (from [`slot_size`]).
    pub fn slot_size(&self) -> usize {
        self.slot
    }

    /// Buffers the pool owns now (its memory is this times the slot size).
    pub fn pooled(&self) -> usize {
        self.pooled
    }

    /// Takes back lent buffers nobody refers to any more; looks at a bounded number
    /// of them (oldest first, still-held ones go to the back).
    fn reclaim(&mut self) {
        let mut budget = self.lent.len().min(4 * RX_BATCH);
        while budget > 0 {
            budget -= 1;
            let Some(b) = self.lent.pop_front() else {
                break;
            };
            match b.try_into_mut() {
                Ok(mut m) => {
                    m.clear();
                    self.free.push(m);
                }
                Err(b) => self.lent.push_back(b),
            }
        }
    }

    /// A buffer for one datagram and whether it belongs to the pool.
    fn take(&mut self, exhausted: &mut bool) -> (BytesMut, bool) {
        if let Some(b) = self.free.pop() {
            return (b, true);
        }
        if self.pooled < self.cap {
            self.pooled += 1;
            return (BytesMut::with_capacity(self.slot), true);
        }
        *exhausted = true;
        (BytesMut::with_capacity(self.slot), false)
    }
}

/// The `recvmmsg` headers, reused across calls, and the buffers of the next batch.
pub struct RxBatch {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    /// Buffers ready for the next call (kept across calls: only consumed ones are
    /// replaced).
    bufs: Vec<(BytesMut, bool)>,
}

impl Default for RxBatch {
    fn default() -> Self {
        RxBatch {
            // SAFETY: all-zero is a valid value of these plain C structs (null
            // pointers, zero lengths); every pointer is set before each call.
            hdrs: (0..RX_BATCH)
                .map(|_| unsafe { std::mem::zeroed() })
                .collect(),
            // SAFETY: as above.
            iovs: (0..RX_BATCH)
                .map(|_| unsafe { std::mem::zeroed() })
                .collect(),
            // SAFETY: as above (family 0, AF_UNSPEC).
            names: (0..RX_BATCH)
                .map(|_| unsafe { std::mem::zeroed() })
                .collect(),
            bufs: Vec::with_capacity(RX_BATCH),
        }
    }
}

impl std::fmt::Debug for RxBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RxBatch")
            .field("ready", &self.bufs.len())
            .finish()
    }
}

fn sockaddr_to_std(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in; storage is
            // larger than and aligned at least as sockaddr_in.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// One non-blocking `recvmmsg` on `fd`: appends what arrived to `out` and returns
/// how many datagrams the kernel handed over (0 when the socket was empty).
pub fn recv_batch(
    fd: RawFd,
    pool: &mut RxPool,
    batch: &mut RxBatch,
    out: &mut Vec<Received>,
) -> io::Result<usize> {
    pool.reclaim();
    let mut exhausted = false;
    while batch.bufs.len() < RX_BATCH {
        let b = pool.take(&mut exhausted);
        batch.bufs.push(b);
    }
    if exhausted {
        pool.exhausted += 1;
    }
    let slot = pool.slot;
    for i in 0..RX_BATCH {
        let buf = &mut batch.bufs[i].0;
        debug_assert!(buf.is_empty() && buf.capacity() >= slot);
        batch.iovs[i] = libc::iovec {
            iov_base: buf.spare_capacity_mut().as_mut_ptr().cast(),
            iov_len: slot,
        };
        let h = &mut batch.hdrs[i];
        h.msg_len = 0;
        h.msg_hdr.msg_name = (&mut batch.names[i] as *mut libc::sockaddr_storage).cast();
        h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        h.msg_hdr.msg_iov = &mut batch.iovs[i];
        h.msg_hdr.msg_iovlen = 1;
        h.msg_hdr.msg_control = std::ptr::null_mut();
        h.msg_hdr.msg_controllen = 0;
        h.msg_hdr.msg_flags = 0;
    }
    // SAFETY: `hdrs` holds RX_BATCH headers; each names a sockaddr_storage in `names`
    // and one iovec in `iovs` that covers the spare capacity (at least `iov_len`
    // bytes) of a live buffer in `bufs`. None of them moves or is freed during the call, and the kernel writes
    // only within those bounds. MSG_DONTWAIT: the call never blocks the executor.
    let n = unsafe {
        libc::recvmmsg(
            fd,
            batch.hdrs.as_mut_ptr(),
            RX_BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock {
            Ok(0)
        } else {
            Err(e)
        };
    }
    let n = n as usize;
    for (i, (mut buf, pooled)) in batch.bufs.drain(..n).enumerate() {
        let h = &batch.hdrs[i];
        let len = (h.msg_len as usize).min(slot);
        let oversized = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        // SAFETY: the kernel wrote `msg_len` bytes (at most the iovec's `slot`, which
        // the buffer's capacity covers) at the start of this buffer's spare capacity;
        // only those initialised bytes become its contents.
        unsafe { buf.set_len(len) };
        let data = buf.freeze();
        if pooled {
            pool.lent.push_back(data.clone());
        }
        if let Some(from) = sockaddr_to_std(&batch.names[i]) {
            out.push(Received {
                data,
                from,
                oversized,
            });
        }
    }
    Ok(n)
}

/// What one batched send did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendStats {
    /// Datagrams the kernel took.
    pub datagrams: u64,
    /// Payload bytes of those datagrams.
    pub bytes: u64,
    /// Datagrams whose send failed (not counting a full socket buffer, which only
    /// ends the batch early).
    pub errors: u64,
    /// `sendmmsg` calls made.
    pub calls: u64,
    /// Datagrams that went out as segments of a GSO send.
    pub gso_segments: u64,
}

impl SendStats {
    /// Adds `o`'s counts to these.
    pub fn add(&mut self, o: SendStats) {
        self.datagrams += o.datagrams;
        self.bytes += o.bytes;
        self.errors += o.errors;
        self.calls += o.calls;
        self.gso_segments += o.gso_segments;
    }
}

/// The `sendmmsg` headers and buffers, reused across calls.
pub struct TxBatch {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    names: Vec<SockAddr>,
    /// One control buffer per message (room for one `UDP_SEGMENT` cmsg).
    cmsgs: Vec<[u64; 4]>,
    /// (first item, items, gso segment size or 0) per message.
    msgs: Vec<(usize, usize, u16)>,
}

impl Default for TxBatch {
    fn default() -> Self {
        TxBatch {
            // SAFETY: all-zero is a valid value of these plain C structs; every
            // pointer is set before each call.
            hdrs: (0..TX_BATCH)
                .map(|_| unsafe { std::mem::zeroed() })
                .collect(),
            iovs: Vec::with_capacity(TX_BATCH),
            names: Vec::with_capacity(TX_BATCH),
            cmsgs: vec![[0u64; 4]; TX_BATCH],
            msgs: Vec::with_capacity(TX_BATCH),
        }
    }
}

impl std::fmt::Debug for TxBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxBatch").finish()
    }
}

/// Whether a send error means the kernel or the route does not take GSO sends.
fn gso_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
    )
}

/// Sends `items` with as few `sendmmsg` calls as possible, without blocking. With
/// `gso` set, runs of datagrams to one address whose sizes are equal (the last may be
/// shorter) go out as one `UDP_SEGMENT` message; a kernel that refuses clears `gso`
/// and the batch goes again without it. Returns how many items were handled (sent,
/// or counted as errors) and what happened; fewer than `items.len()` means the send
/// buffer is full (`EAGAIN`) and the caller should send the rest by waiting.
pub fn send_batch(
    fd: RawFd,
    items: &[(SocketAddr, Bytes)],
    gso: &mut bool,
    tx: &mut TxBatch,
) -> (usize, SendStats) {
    let mut st = SendStats::default();
    let mut i = 0;
    while i < items.len() {
        // Plan up to TX_BATCH messages from items[i..].
        tx.msgs.clear();
        tx.iovs.clear();
        tx.names.clear();
        let mut j = i;
        while j < items.len() && tx.msgs.len() < TX_BATCH {
            let (addr, d) = &items[j];
            let size = d.len();
            let mut k = 1;
            if *gso && size > 0 && size <= u16::MAX as usize {
                let mut total = size;
                while j + k < items.len() && k < GSO_MAX_SEGMENTS {
                    let (a2, d2) = &items[j + k];
                    if a2 != addr || d2.len() > size || d2.is_empty() {
                        break;
                    }
                    if total + d2.len() > GSO_MAX_BYTES {
                        break;
                    }
                    total += d2.len();
                    k += 1;
                    if d2.len() < size {
                        break; // only the last segment may be shorter
                    }
                }
            }
            tx.msgs.push((j, k, if k > 1 { size as u16 } else { 0 }));
            tx.names.push(SockAddr::from(*addr));
            j += k;
        }
        for (_, d) in &items[i..j] {
            tx.iovs.push(libc::iovec {
                iov_base: d.as_ptr().cast_mut().cast(),
                iov_len: d.len(),
            });
        }
        let mut iov_at = 0;
        for (m, &(_, k, seg)) in tx.msgs.iter().enumerate() {
            let h = &mut tx.hdrs[m];
            h.msg_len = 0;
            h.msg_hdr.msg_name = tx.names[m].as_ptr().cast_mut().cast();
            h.msg_hdr.msg_namelen = tx.names[m].len();
            h.msg_hdr.msg_iov = tx.iovs[iov_at..].as_mut_ptr();
            h.msg_hdr.msg_iovlen = k as _;
            h.msg_hdr.msg_flags = 0;
            iov_at += k;
            if seg == 0 {
                h.msg_hdr.msg_control = std::ptr::null_mut();
                h.msg_hdr.msg_controllen = 0;
                continue;
            }
            let space = std::mem::size_of::<[u64; 4]>();
            h.msg_hdr.msg_control = tx.cmsgs[m].as_mut_ptr().cast();
            // SAFETY: CMSG_SPACE only computes a length.
            let clen = unsafe { libc::CMSG_SPACE(2) } as usize;
            debug_assert!(clen <= space);
            // `msg_controllen` is `size_t` on glibc and `socklen_t` on musl.
            #[allow(clippy::unnecessary_cast)]
            {
                h.msg_hdr.msg_controllen = clen as _;
            }
            // SAFETY: msg_control points at a live, 8-aligned buffer of `space`
            // bytes, at least CMSG_SPACE(2); CMSG_FIRSTHDR returns its start and the
            // writes stay within one cmsghdr plus 2 data bytes.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(2) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg);
            }
        }
        let count = tx.msgs.len();
        // SAFETY: `hdrs[..count]` point at addresses in `names`, iovecs in `iovs`
        // (which point into the `Bytes` of `items`, alive and unmoved for the call)
        // and control buffers in `cmsgs`; the kernel only reads them, except for
        // `msg_len`. MSG_DONTWAIT: never blocks the executor.
        let rc = unsafe {
            libc::sendmmsg(
                fd,
                tx.hdrs.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        st.calls += 1;
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return (i, st);
            }
            let (first, k, seg) = tx.msgs[0];
            if seg != 0 && gso_refused(&e) {
                tracing::info!(error = %e, "UDP GSO refused by the kernel; sending datagrams one by one");
                *gso = false;
                continue;
            }
            // The first message failed: count its datagrams, go on after it.
            st.errors += k as u64;
            i = first + k;
            continue;
        }
        for &(first, k, seg) in &tx.msgs[..rc as usize] {
            st.datagrams += k as u64;
            st.bytes += items[first..first + k]
                .iter()
                .map(|(_, d)| d.len() as u64)
                .sum::<u64>();
            if seg != 0 {
                st.gso_segments += k as u64;
            }
            i = first + k;
        }
    }
    (i, st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        (a, b)
    }

    fn drain(fd: RawFd, pool: &mut RxPool, batch: &mut RxBatch) -> Vec<Received> {
        let mut out = Vec::new();
        for _ in 0..100 {
            recv_batch(fd, pool, batch, &mut out).unwrap();
            if !out.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        out
    }

    #[test]
    fn a_batch_keeps_good_datagrams_around_oversized_ones() {
        let (rx, tx) = pair();
        let to = rx.local_addr().unwrap();
        tx.send_to(b"one", to).unwrap();
        tx.send_to(&vec![7u8; 3000], to).unwrap(); // larger than the 2 KiB slot
        tx.send_to(b"", to).unwrap();
        tx.send_to(b"two", to).unwrap();
        let mut pool = RxPool::new(2048, 64);
        let mut batch = RxBatch::default();
        let got = drain(rx.as_raw_fd(), &mut pool, &mut batch);
        let shape: Vec<(usize, bool)> = got.iter().map(|r| (r.data.len(), r.oversized)).collect();
        assert_eq!(
            shape,
            vec![(3, false), (2048, true), (0, false), (3, false)]
        );
        assert_eq!(&got[0].data[..], b"one");
        assert_eq!(&got[3].data[..], b"two");
        assert_eq!(got[0].from, tx.local_addr().unwrap());
    }

    #[test]
    fn buffers_come_back_when_the_last_slice_drops_and_exhaustion_keeps_serving() {
        let (rx, tx) = pair();
        let to = rx.local_addr().unwrap();
        let mut pool = RxPool::new(2048, RX_BATCH);
        let mut batch = RxBatch::default();
        tx.send_to(b"held", to).unwrap();
        let held = drain(rx.as_raw_fd(), &mut pool, &mut batch);
        let slice = held[0].data.slice(1..3); // a payload slice, as the decoder makes
        drop(held);
        assert_eq!(pool.pooled(), RX_BATCH);
        // The one pooled buffer still referred to cannot come back: the next batch
        // needs one more than the pool has, so it is served from a fresh buffer.
        tx.send_to(b"next", to).unwrap();
        let got = drain(rx.as_raw_fd(), &mut pool, &mut batch);
        assert_eq!(&got[0].data[..], b"next");
        assert_eq!(pool.exhausted, 1);
        drop(got);
        drop(slice);
        // Everything released: no more exhaustion, the pool stays at its bound.
        for _ in 0..3 {
            tx.send_to(b"again", to).unwrap();
            let got = drain(rx.as_raw_fd(), &mut pool, &mut batch);
            assert_eq!(&got[0].data[..], b"again");
        }
        assert_eq!(pool.exhausted, 1);
        assert_eq!(pool.pooled(), RX_BATCH);
    }

    #[test]
    fn batched_sends_arrive_whole_with_and_without_gso() {
        let (rx, tx) = pair();
        let to = rx.local_addr().unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        for mut gso in [true, false] {
            // Five full datagrams and a short one to the same peer: one GSO message.
            let mut items: Vec<(SocketAddr, Bytes)> =
                (0..5u8).map(|i| (to, Bytes::from(vec![i; 1000]))).collect();
            items.push((to, Bytes::from_static(b"tail")));
            let mut t = TxBatch::default();
            let (done, st) = send_batch(tx.as_raw_fd(), &items, &mut gso, &mut t);
            assert_eq!(done, items.len());
            assert_eq!(st.datagrams, 6);
            assert_eq!(st.errors, 0);
            let mut buf = [0u8; 2048];
            for (_, d) in &items {
                let n = rx.recv(&mut buf).unwrap();
                assert_eq!(&buf[..n], &d[..]);
            }
        }
    }
}
