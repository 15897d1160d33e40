//! Packing frames into MTU-sized datagrams.
//!
//! Datagrams never exceed the MTU (so they are never IP-fragmented, where losing one
//! fragment loses the whole datagram), and frame bodies therefore always fit the
//! `u16` length prefix.

use bytes::Bytes;
use thiserror::Error;

use super::codec::{encode_frame_in, encode_header, encoded_len_in, write_id_round, write_prefix};
use super::frame::{tag, Frame, Header, IHaveEntry};
use super::layout::{FRAME_PREFIX_LEN, HEADER_LEN, IHAVE_ENTRY_LEN, MIN_MTU};

/// Largest UDP payload over IPv4 (65535 - 20 IP - 8 UDP): the upper MTU clamp.
const MAX_UDP_PAYLOAD: usize = 65_507;

// An empty datagram always has room for one IHave entry, so splitting makes
// progress, and no frame body in a clamped datagram can overflow the u16 prefix.
const _: () = assert!(MIN_MTU >= HEADER_LEN + FRAME_PREFIX_LEN + IHAVE_ENTRY_LEN);
const _: () = assert!(MAX_UDP_PAYLOAD - HEADER_LEN - FRAME_PREFIX_LEN <= u16::MAX as usize);

/// A frame that cannot fit in any datagram of the builder's MTU (a Gossip whose
/// payload exceeds what the configuration should have allowed). The frame is dropped;
/// the caller counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("frame of {len} bytes does not fit a datagram of at most {mtu} bytes")]
pub struct FrameTooLarge {
    /// Encoded size of the frame (prefix plus body).
    pub len: usize,
    /// The datagram limit it was checked against.
    pub mtu: usize,
}

/// Builds one datagram at a time for a fixed header, refusing frames that would push
/// it past the MTU. The buffer is reused across datagrams; each finished datagram is
/// copied out at its exact size, so datagrams in flight (and payloads sliced from
/// them by a receiver) pin no slack capacity.
#[derive(Debug)]
pub struct DatagramBuilder {
    header: Header,
    mtu: usize,
    /// Header followed by the frames pushed so far.
    buf: Vec<u8>,
    frames: usize,
}

impl DatagramBuilder {
    /// A builder for datagrams of at most `mtu` bytes, clamped to
    /// [`MIN_MTU`]`..=65507` so that every frame kind fits and no datagram needs
    /// IP-level reassembly beyond what UDP allows.
    pub fn new(header: Header, mtu: usize) -> Self {
        let mtu = mtu.clamp(MIN_MTU, MAX_UDP_PAYLOAD);
        let mut buf = Vec::with_capacity(mtu);
        encode_header(&header, &mut buf);
        DatagramBuilder {
            header,
            mtu,
            buf,
            frames: 0,
        }
    }

    /// The effective (clamped) MTU.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// The header every datagram of this builder starts with.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Number of frames in the current datagram.
    pub fn len(&self) -> usize {
        self.frames
    }

    /// Whether the current datagram has no frames yet ([`take`](Self::take) would
    /// return `None`).
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// Size in bytes of the current datagram, header included.
    pub fn bytes_len(&self) -> usize {
        self.buf.len()
    }

    /// Bytes still free for frames (prefixes included) in the current datagram.
    pub fn remaining(&self) -> usize {
        self.mtu - self.buf.len()
    }

    /// Room for frames in an empty datagram: the largest frame that can ever fit.
    pub fn frame_capacity(&self) -> usize {
        self.mtu - HEADER_LEN
    }

    /// Appends `frame` if it fits; returns `false` (and writes nothing) if not, in
    /// which case the caller [`take`](Self::take)s the datagram and retries, or splits
    /// an IHave with [`push_ihave`](Self::push_ihave).
    ///
    /// An IHave with no entries announces nothing and is not encoded (the decoder
    /// would reject it); it reports `true`.
    pub fn try_push(&mut self, frame: &Frame) -> bool {
        if matches!(frame, Frame::IHave { entries } if entries.is_empty()) {
            return true;
        }
        if encoded_len_in(frame, self.header.version) > self.remaining() {
            return false;
        }
        encode_frame_in(frame, self.header.version, &mut self.buf);
        self.frames += 1;
        true
    }

    /// Appends one IHave frame holding as many leading `entries` as fit, and returns
    /// how many that was (0 if not even one fits, or `entries` is empty). Encodes
    /// straight from the slice, so splitting a batch allocates nothing.
    pub fn push_ihave(&mut self, entries: &[IHaveEntry]) -> usize {
        let room = self.remaining().saturating_sub(FRAME_PREFIX_LEN) / IHAVE_ENTRY_LEN;
        let n = room.min(entries.len());
        if n == 0 {
            return 0;
        }
        // n * IHAVE_ENTRY_LEN <= mtu - HEADER_LEN - FRAME_PREFIX_LEN <= u16::MAX
        // (const-asserted above), so the conversion cannot fail.
        let Ok(len) = u16::try_from(n * IHAVE_ENTRY_LEN) else {
            return 0;
        };
        write_prefix(tag::IHAVE, len, &mut self.buf);
        for e in &entries[..n] {
            write_id_round(&e.id, e.round, &mut self.buf);
        }
        self.frames += 1;
        n
    }

    /// Finishes the current datagram and starts an empty one with the same header;
    /// `None` if no frame was pushed (a header-only datagram is never sent).
    pub fn take(&mut self) -> Option<Bytes> {
        if self.is_empty() {
            return None;
        }
        let datagram = Bytes::copy_from_slice(&self.buf);
        self.buf.truncate(HEADER_LEN);
        self.frames = 0;
        Some(datagram)
    }
}

/// Packs the frames for one peer into as few datagrams as possible, in order.
///
/// Frames are appended greedily; when the next frame does not fit, the current
/// datagram is emitted and a new one started. An IHave batch is split instead: as
/// many entries as fit go into the current datagram, the rest into the next ones, so
/// a receiver sees the same entry sequence (possibly as several IHave frames).
#[derive(Debug)]
pub struct Coalescer {
    builder: DatagramBuilder,
}

impl Coalescer {
    /// A coalescer for datagrams of at most `mtu` bytes (clamped as in
    /// [`DatagramBuilder::new`]).
    pub fn new(header: Header, mtu: usize) -> Self {
        Coalescer {
            builder: DatagramBuilder::new(header, mtu),
        }
    }

    /// The effective (clamped) MTU.
    pub fn mtu(&self) -> usize {
        self.builder.mtu()
    }

    /// Whether no frames are waiting for [`flush`](Self::flush).
    pub fn is_empty(&self) -> bool {
        self.builder.is_empty()
    }

    /// Adds `frame`, appending any datagrams it completes to `out`.
    ///
    /// A non-IHave frame larger than an empty datagram (only possible for a Gossip
    /// with an oversized payload) is dropped and reported as `FrameTooLarge`;
    /// nothing is emitted and the frames already queued are unaffected, so the caller
    /// can count the error and carry on. IHave frames never fail.
    pub fn push(&mut self, frame: Frame, out: &mut Vec<Bytes>) -> Result<(), FrameTooLarge> {
        if let Frame::IHave { entries } = &frame {
            self.push_ihave(entries, out);
            return Ok(());
        }
        let len = encoded_len_in(&frame, self.builder.header().version);
        if len > self.builder.frame_capacity() {
            return Err(FrameTooLarge {
                len,
                mtu: self.builder.mtu(),
            });
        }
        if !self.builder.try_push(&frame) {
            out.extend(self.builder.take());
            let pushed = self.builder.try_push(&frame);
            debug_assert!(pushed, "a frame within capacity fits an empty datagram");
        }
        Ok(())
    }

    /// Emits the datagram being built, if it has any frames.
    pub fn flush(&mut self, out: &mut Vec<Bytes>) {
        out.extend(self.builder.take());
    }

    fn push_ihave(&mut self, mut entries: &[IHaveEntry], out: &mut Vec<Bytes>) {
        while !entries.is_empty() {
            let n = self.builder.push_ihave(entries);
            entries = &entries[n..];
            if !entries.is_empty() {
                // Current datagram is full. An empty one always takes at least one
                // entry (const-asserted above), so this loop terminates.
                out.extend(self.builder.take());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{MessageId, NodeId};
    use crate::wire::decode;
    use crate::wire::{DEFAULT_MTU, MAX_GOSSIP_PAYLOAD};

    fn header() -> Header {
        Header {
            sender: NodeId(42),
            incarnation: 7,
            flags: 0,
            version: crate::wire::VERSION,
        }
    }

    fn entry(seq: u64) -> IHaveEntry {
        IHaveEntry {
            id: MessageId {
                origin: NodeId(1),
                seq,
            },
            round: (seq % 7) as u16,
        }
    }

    fn gossip(seq: u64, payload_len: usize) -> Frame {
        Frame::Gossip {
            id: MessageId {
                origin: NodeId(3),
                seq,
            },
            round: 1,
            topic: crate::topic::Topic::default(),
            payload: Bytes::from(vec![seq as u8; payload_len]),
        }
    }

    fn decode_all(datagrams: &[Bytes]) -> Vec<Frame> {
        datagrams
            .iter()
            .flat_map(|d| decode(d).expect("builder output decodes").frames)
            .collect()
    }

    #[test]
    fn mtu_is_clamped() {
        assert_eq!(DatagramBuilder::new(header(), 0).mtu(), MIN_MTU);
        assert_eq!(
            DatagramBuilder::new(header(), 1 << 20).mtu(),
            MAX_UDP_PAYLOAD
        );
        assert_eq!(DatagramBuilder::new(header(), 1000).mtu(), 1000);
    }

    #[test]
    fn builder_fills_exactly_to_mtu_then_refuses() {
        let mut b = DatagramBuilder::new(header(), DEFAULT_MTU);
        assert!(b.is_empty());
        assert_eq!(b.take(), None);
        let big = gossip(1, MAX_GOSSIP_PAYLOAD);
        assert!(b.try_push(&big));
        assert_eq!(b.bytes_len(), DEFAULT_MTU);
        assert_eq!(b.remaining(), 0);
        assert!(!b.try_push(&Frame::Prune { partition: 0 }));
        assert_eq!(b.len(), 1);
        let d = b.take().expect("one frame");
        assert_eq!(d.len(), DEFAULT_MTU);
        assert!(b.is_empty());
        assert_eq!(b.bytes_len(), HEADER_LEN);
        assert_eq!(decode(&d).expect("valid").frames, vec![big]);
    }

    #[test]
    fn empty_ihave_is_not_encoded() {
        let mut b = DatagramBuilder::new(header(), DEFAULT_MTU);
        assert!(b.try_push(&Frame::IHave { entries: vec![] }));
        assert!(b.is_empty());
        assert_eq!(b.push_ihave(&[]), 0);
        assert!(b.is_empty());
    }

    #[test]
    fn push_ihave_takes_what_fits() {
        let mut b = DatagramBuilder::new(header(), MIN_MTU);
        let entries: Vec<_> = (0..10).map(entry).collect();
        let fit = (MIN_MTU - HEADER_LEN - FRAME_PREFIX_LEN) / IHAVE_ENTRY_LEN;
        assert_eq!(b.push_ihave(&entries), fit);
        assert_eq!(b.push_ihave(&entries), 0);
        let d = b.take().expect("one frame");
        assert_eq!(
            decode(&d).expect("valid").frames,
            vec![Frame::IHave {
                entries: entries[..fit].to_vec()
            }]
        );
    }

    #[test]
    fn coalescer_packs_small_frames_into_one_datagram() {
        let mut c = Coalescer::new(header(), DEFAULT_MTU);
        let mut out = Vec::new();
        let frames: Vec<_> = (0..20).map(|p| Frame::Prune { partition: p }).collect();
        for f in frames.clone() {
            c.push(f, &mut out).expect("fits");
        }
        assert!(out.is_empty());
        assert!(!c.is_empty());
        c.flush(&mut out);
        assert!(c.is_empty());
        assert_eq!(out.len(), 1);
        assert_eq!(decode_all(&out), frames);
        c.flush(&mut out);
        assert_eq!(out.len(), 1, "flushing an empty coalescer emits nothing");
    }

    #[test]
    fn coalescer_starts_new_datagram_when_full_and_keeps_order() {
        let mut c = Coalescer::new(header(), DEFAULT_MTU);
        let mut out = Vec::new();
        let frames: Vec<_> = (0..10).map(|i| gossip(i, 500)).collect();
        for f in frames.clone() {
            c.push(f, &mut out).expect("fits");
        }
        c.flush(&mut out);
        // Two 521-byte frames fit in 1384 bytes of room, three do not.
        assert_eq!(out.len(), 5);
        assert!(out.iter().all(|d| d.len() <= DEFAULT_MTU));
        assert_eq!(decode_all(&out), frames);
    }

    #[test]
    fn coalescer_splits_ihave_across_datagrams() {
        let mut c = Coalescer::new(header(), DEFAULT_MTU);
        let mut out = Vec::new();
        let first = gossip(0, 1000);
        c.push(first.clone(), &mut out).expect("fits");
        let entries: Vec<_> = (0..200).map(entry).collect();
        c.push(
            Frame::IHave {
                entries: entries.clone(),
            },
            &mut out,
        )
        .expect("ihave never fails");
        c.flush(&mut out);
        assert!(out.iter().all(|d| d.len() <= DEFAULT_MTU));
        let frames = decode_all(&out);
        assert_eq!(frames[0], first);
        let mut got = Vec::new();
        for f in &frames[1..] {
            let Frame::IHave { entries } = f else {
                panic!("expected ihave, got {f:?}");
            };
            got.extend_from_slice(entries);
        }
        assert_eq!(got, entries);
        // The first datagram was topped up with entries rather than closed early.
        let room = DEFAULT_MTU - HEADER_LEN - crate::wire::encoded_len(&first) - FRAME_PREFIX_LEN;
        let Frame::IHave { entries: head } = &frames[1] else {
            panic!("expected ihave");
        };
        assert_eq!(head.len(), room / IHAVE_ENTRY_LEN);
        // 19 entries top up the first datagram (its Gossip carries the 8 bytes of
        // the `default` topic); the other 181 need three more at 76 entries each.
        assert_eq!(head.len(), 19);
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn oversized_gossip_is_rejected_without_disturbing_queue() {
        let mut c = Coalescer::new(header(), DEFAULT_MTU);
        let mut out = Vec::new();
        c.push(Frame::Prune { partition: 1 }, &mut out)
            .expect("fits");
        let err = c
            .push(gossip(1, MAX_GOSSIP_PAYLOAD + 1), &mut out)
            .expect_err("too large");
        assert_eq!(
            err,
            FrameTooLarge {
                len: DEFAULT_MTU - HEADER_LEN + 1,
                mtu: DEFAULT_MTU
            }
        );
        assert!(out.is_empty());
        c.flush(&mut out);
        assert_eq!(decode_all(&out), vec![Frame::Prune { partition: 1 }]);
    }

    #[test]
    fn huge_payload_beyond_u16_is_rejected_not_panicking() {
        let mut c = Coalescer::new(header(), usize::MAX);
        let mut out = Vec::new();
        assert!(c.push(gossip(1, 100_000), &mut out).is_err());
        let mut b = DatagramBuilder::new(header(), usize::MAX);
        assert!(!b.try_push(&gossip(1, 100_000)));
    }

    #[test]
    fn largest_mtu_datagram_roundtrips() {
        let mut c = Coalescer::new(header(), usize::MAX);
        let mut out = Vec::new();
        let entries: Vec<_> = (0..10_000).map(entry).collect();
        c.push(
            Frame::IHave {
                entries: entries.clone(),
            },
            &mut out,
        )
        .expect("ihave never fails");
        c.flush(&mut out);
        assert!(out.iter().all(|d| d.len() <= MAX_UDP_PAYLOAD));
        let got: Vec<_> = decode_all(&out)
            .into_iter()
            .flat_map(|f| match f {
                Frame::IHave { entries } => entries,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(got, entries);
    }
}
