//! Encoding and decoding of datagrams and frames.
//!
//! Decoding is total: any byte string yields a [`Datagram`] or a [`DecodeError`],
//! never a panic, and nothing is allocated from a length that was not first checked
//! against the bytes actually present. Payloads are zero-copy slices of the input.

use bytes::Bytes;

use super::error::DecodeError;
use super::frame::{tag, DigestBlock, Frame, Header, IHaveEntry};
use super::layout::{
    DIGEST_BLOCK_LEN, DIGEST_FIXED_LEN, DIGEST_MAX_BLOCKS, FRAME_PREFIX_LEN, GOSSIP_FIXED_LEN,
    GRAFT_LEN, HEADER_LEN, IHAVE_ENTRY_LEN, JOIN_LEN, MAGIC, MIN_VERSION, PRUNE_LEN,
    PRUNE_ROOT_LEN, VERSION,
};
use crate::ids::{MessageId, NodeId};
use crate::topic::Topic;

// A Graft body is the shared id block plus one flags byte; the decoder relies on it.
const _: () = assert!(GRAFT_LEN == GOSSIP_FIXED_LEN + 1 && IHAVE_ENTRY_LEN == GOSSIP_FIXED_LEN);

/// A decoded datagram: who sent it and the frames it carried, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// Who sent it, in which life and wire version.
    pub header: Header,
    /// The known frames, in datagram order.
    pub frames: Vec<Frame>,
    /// Frames with tags this build does not know, skipped by their length prefix.
    /// Non-zero means a newer peer (or a protocol layer not enabled here) is talking.
    pub skipped_unknown: u32,
    /// Membership Join and Disconnect frames, which belong on the control socket:
    /// dropped here but counted, so a shard reports them as misrouted instead of
    /// losing them silently.
    pub misrouted_member_frames: u32,
}

/// Decodes the fixed header, returning it and the offset of the first frame.
///
/// Checks the magic before the version, so stray traffic is reported as
/// [`DecodeError::BadMagic`] rather than as a version mismatch.
pub fn decode_header(buf: &[u8]) -> Result<(Header, usize), DecodeError> {
    let Some(h) = buf.first_chunk::<HEADER_LEN>() else {
        return Err(DecodeError::TooShort { len: buf.len() });
    };
    let [m0, m1, version, flags, s0, s1, s2, s3, s4, s5, s6, s7, i0, i1, i2, i3] = *h;
    if [m0, m1] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if !(MIN_VERSION..=VERSION).contains(&version) {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let header = Header {
        sender: NodeId(u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7])),
        incarnation: u32::from_le_bytes([i0, i1, i2, i3]),
        flags,
        version,
    };
    Ok((header, HEADER_LEN))
}

/// Decodes a whole datagram.
///
/// Stops at the first malformed frame and rejects the datagram: a frame boundary
/// that cannot be trusted makes everything after it suspect. A header followed by
/// nothing is [`DecodeError::NoFrames`]; a datagram of only unknown frames is `Ok`
/// with no frames and a non-zero [`Datagram::skipped_unknown`].
pub fn decode(buf: &Bytes) -> Result<Datagram, DecodeError> {
    let (header, offset) = decode_header(buf)?;
    let mut iter = FrameIter::with_version(buf, offset, header.version);
    let mut frames = Vec::new();
    for frame in iter.by_ref() {
        frames.push(frame?);
    }
    let skipped_unknown = iter.skipped_unknown();
    let misrouted_member_frames = iter.misrouted_member_frames();
    if frames.is_empty() && skipped_unknown == 0 && misrouted_member_frames == 0 {
        return Err(DecodeError::NoFrames);
    }
    Ok(Datagram {
        header,
        frames,
        skipped_unknown,
        misrouted_member_frames,
    })
}

/// Iterator over the frames of a datagram body, for callers that want to handle
/// frames as they are parsed instead of collecting them.
///
/// Unknown tags are skipped (and counted) using their length prefix; so are Join and
/// Disconnect, counted apart as misrouted membership frames. After the first error
/// the iterator is fused and yields `None`.
#[derive(Debug)]
pub struct FrameIter<'a> {
    buf: &'a Bytes,
    pos: usize,
    skipped: u32,
    misrouted: u32,
    done: bool,
    /// The datagram's wire version: version 1 Gossip frames carry no topic.
    version: u8,
}

impl<'a> FrameIter<'a> {
    /// Iterates the frames of `buf` starting at `offset` (normally the value returned
    /// by [`decode_header`]) as frames of this build's [`VERSION`]. An offset at or
    /// past the end yields no frames.
    pub fn new(buf: &'a Bytes, offset: usize) -> Self {
        Self::with_version(buf, offset, VERSION)
    }

    /// Like [`FrameIter::new`], for a datagram whose header says `version`.
    pub fn with_version(buf: &'a Bytes, offset: usize, version: u8) -> Self {
        FrameIter {
            buf,
            pos: offset,
            skipped: 0,
            misrouted: 0,
            done: false,
            version,
        }
    }

    /// Number of unknown-tag frames skipped so far.
    pub fn skipped_unknown(&self) -> u32 {
        self.skipped
    }

    /// Number of membership Join and Disconnect frames skipped so far (see
    /// [`Datagram::misrouted_member_frames`]).
    pub fn misrouted_member_frames(&self) -> u32 {
        self.misrouted
    }

    /// Parses the next frame or reports why it cannot be; `None` at the end.
    fn step(&mut self) -> Option<Result<Frame, DecodeError>> {
        loop {
            let rest = self.buf.get(self.pos..).unwrap_or_default();
            let Some((&[t, l0, l1], after)) = rest.split_first_chunk::<FRAME_PREFIX_LEN>() else {
                // Nothing left is the normal end; one or two bytes are a cut prefix.
                return rest.first().map(|&t| {
                    Err(DecodeError::Truncated {
                        tag: t,
                        needed: FRAME_PREFIX_LEN,
                        have: rest.len(),
                    })
                });
            };
            let len = usize::from(u16::from_le_bytes([l0, l1]));
            let Some(body) = after.get(..len) else {
                return Some(Err(DecodeError::Truncated {
                    tag: t,
                    needed: len,
                    have: after.len(),
                }));
            };
            let body_start = self.pos + FRAME_PREFIX_LEN;
            self.pos = body_start + len;
            let bad_length = DecodeError::BadLength { tag: t, len };
            let frame = match t {
                tag::GOSSIP => {
                    let Some((fixed, _)) = body.split_first_chunk::<GOSSIP_FIXED_LEN>() else {
                        return Some(Err(bad_length));
                    };
                    let (id, round) = read_id_round(fixed);
                    let mut start = body_start + GOSSIP_FIXED_LEN;
                    let topic = if self.version >= 2 {
                        let Some(&tlen) = body.get(GOSSIP_FIXED_LEN) else {
                            return Some(Err(bad_length));
                        };
                        let tlen = usize::from(tlen);
                        if GOSSIP_FIXED_LEN + 1 + tlen > len {
                            return Some(Err(bad_length));
                        }
                        let t = self.buf.slice(start + 1..start + 1 + tlen);
                        start += 1 + tlen;
                        match Topic::from_bytes(t) {
                            Ok(t) => t,
                            Err(e) => return Some(Err(DecodeError::BadTopic(e.reason()))),
                        }
                    } else {
                        Topic::default_topic()
                    };
                    let payload = self.buf.slice(start..self.pos);
                    Frame::Gossip {
                        id,
                        round,
                        topic,
                        payload,
                    }
                }
                tag::IHAVE => {
                    if len == 0 || len % IHAVE_ENTRY_LEN != 0 {
                        return Some(Err(bad_length));
                    }
                    // `len` was checked against the bytes present above.
                    let mut entries = Vec::with_capacity(len / IHAVE_ENTRY_LEN);
                    let mut chunks = body;
                    while let Some((entry, tail)) = chunks.split_first_chunk::<IHAVE_ENTRY_LEN>() {
                        let (id, round) = read_id_round(entry);
                        entries.push(IHaveEntry { id, round });
                        chunks = tail;
                    }
                    Frame::IHave { entries }
                }
                tag::GRAFT => {
                    // Exactly the id block plus one flags byte (`GRAFT_LEN`).
                    let Some((fixed, &[flags])) = body.split_first_chunk::<GOSSIP_FIXED_LEN>()
                    else {
                        return Some(Err(bad_length));
                    };
                    let (id, round) = read_id_round(fixed);
                    // Bits other than bit 0 are reserved and ignored.
                    Frame::Graft {
                        id,
                        round,
                        request: flags & 1 != 0,
                    }
                }
                tag::PRUNE => {
                    let Ok(&[p0, p1]) = <&[u8; PRUNE_LEN]>::try_from(body) else {
                        return Some(Err(bad_length));
                    };
                    Frame::Prune {
                        partition: u16::from_le_bytes([p0, p1]),
                    }
                }
                tag::PRUNE_ROOT => {
                    let Ok(&[p0, p1, r0, r1, r2, r3, r4, r5, r6, r7]) =
                        <&[u8; PRUNE_ROOT_LEN]>::try_from(body)
                    else {
                        return Some(Err(bad_length));
                    };
                    Frame::PruneRoot {
                        partition: u16::from_le_bytes([p0, p1]),
                        root: NodeId(u64::from_le_bytes([r0, r1, r2, r3, r4, r5, r6, r7])),
                    }
                }
                // Control-socket frames (same bytes as `MemberFrame::Join` and
                // `Disconnect`): still length-checked, then dropped and counted.
                tag::JOIN | tag::DISCONNECT => {
                    let want = if t == tag::JOIN { JOIN_LEN } else { 0 };
                    if len != want {
                        return Some(Err(bad_length));
                    }
                    self.misrouted = self.misrouted.saturating_add(1);
                    continue;
                }
                tag::DIGEST => {
                    let Some((&[p0, p1, flags], mut chunks)) =
                        body.split_first_chunk::<DIGEST_FIXED_LEN>()
                    else {
                        return Some(Err(bad_length));
                    };
                    if chunks.is_empty() || chunks.len() % DIGEST_BLOCK_LEN != 0 {
                        return Some(Err(bad_length));
                    }
                    if chunks.len() / DIGEST_BLOCK_LEN > DIGEST_MAX_BLOCKS {
                        return Some(Err(DecodeError::DigestTooLarge {
                            blocks: chunks.len() / DIGEST_BLOCK_LEN,
                            max: DIGEST_MAX_BLOCKS,
                        }));
                    }
                    let mut blocks = Vec::with_capacity(chunks.len() / DIGEST_BLOCK_LEN);
                    while let Some((b, tail)) = chunks.split_first_chunk::<DIGEST_BLOCK_LEN>() {
                        blocks.push(read_digest_block(b));
                        chunks = tail;
                    }
                    // Bits other than bit 0 are reserved and ignored.
                    Frame::Digest {
                        partition: u16::from_le_bytes([p0, p1]),
                        reply: flags & 1 != 0,
                        blocks,
                    }
                }
                _ => {
                    self.skipped = self.skipped.saturating_add(1);
                    continue;
                }
            };
            return Some(Ok(frame));
        }
    }
}

impl Iterator for FrameIter<'_> {
    type Item = Result<Frame, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.step();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

impl std::iter::FusedIterator for FrameIter<'_> {}

/// Reads the `origin u64 | seq u64 | round u16` block shared by Gossip, IHave
/// entries and Graft. Taking a fixed-size array makes it bounds-check free.
#[inline]
fn read_id_round(b: &[u8; 18]) -> (MessageId, u16) {
    let [o0, o1, o2, o3, o4, o5, o6, o7, s0, s1, s2, s3, s4, s5, s6, s7, r0, r1] = *b;
    let id = MessageId {
        origin: NodeId(u64::from_le_bytes([o0, o1, o2, o3, o4, o5, o6, o7])),
        seq: u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]),
    };
    (id, u16::from_le_bytes([r0, r1]))
}

/// Reads one `origin u64 | first u64 | bits u64` digest block.
#[inline]
fn read_digest_block(b: &[u8; DIGEST_BLOCK_LEN]) -> DigestBlock {
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i * 8..i * 8 + 8]);
        u64::from_le_bytes(w)
    };
    DigestBlock {
        origin: NodeId(word(0)),
        first: word(1),
        bits: word(2),
    }
}

/// Writes the `origin u64 | seq u64 | round u16` block.
#[inline]
pub(super) fn write_id_round(id: &MessageId, round: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&id.origin.0.to_le_bytes());
    out.extend_from_slice(&id.seq.to_le_bytes());
    out.extend_from_slice(&round.to_le_bytes());
}

/// Writes the 16-byte datagram header.
pub fn encode_header(h: &Header, out: &mut Vec<u8>) {
    out.extend_from_slice(&MAGIC);
    out.push(h.version);
    out.push(h.flags);
    out.extend_from_slice(&h.sender.0.to_le_bytes());
    out.extend_from_slice(&h.incarnation.to_le_bytes());
}

/// Length of a frame's body (without the prefix) in wire `version`.
#[inline]
fn body_len(frame: &Frame, version: u8) -> usize {
    match frame {
        Frame::Gossip { payload, .. } if version < 2 => GOSSIP_FIXED_LEN + payload.len(),
        Frame::Gossip { topic, payload, .. } => GOSSIP_FIXED_LEN + 1 + topic.len() + payload.len(),
        Frame::IHave { entries } => IHAVE_ENTRY_LEN * entries.len(),
        Frame::Graft { .. } => GRAFT_LEN,
        Frame::Prune { .. } => PRUNE_LEN,
        Frame::PruneRoot { .. } => PRUNE_ROOT_LEN,
        Frame::Digest { blocks, .. } => DIGEST_FIXED_LEN + DIGEST_BLOCK_LEN * blocks.len(),
    }
}

/// Bytes `frame` occupies in a datagram (prefix plus body), so builders can decide
/// whether it fits before writing anything.
#[inline]
pub fn encoded_len(frame: &Frame) -> usize {
    encoded_len_in(frame, VERSION)
}

/// [`encoded_len`] in wire `version`.
#[inline]
pub fn encoded_len_in(frame: &Frame, version: u8) -> usize {
    FRAME_PREFIX_LEN + body_len(frame, version)
}

/// Appends `frame` (prefix and body) to `out`.
///
/// The length prefix is a `u16`, so a body longer than `u16::MAX` cannot be encoded.
/// Callers never get there: [`DatagramBuilder`](super::DatagramBuilder) caps
/// datagrams at 65507 bytes, the [`Coalescer`](super::Coalescer) splits IHave batches
/// across datagrams, and Gossip payloads are bounded by the protocol configuration
/// (at most [`MAX_GOSSIP_PAYLOAD`](super::layout::MAX_GOSSIP_PAYLOAD)). An empty IHave
/// encodes to a frame the decoder rejects; builders drop those instead.
///
/// # Panics
///
/// If the body is longer than `u16::MAX` bytes: writing a wrapped length would
/// silently corrupt the datagram, which is worse than a loud caller bug.
pub fn encode_frame(frame: &Frame, out: &mut Vec<u8>) {
    encode_frame_in(frame, VERSION, out)
}

/// [`encode_frame`] in wire `version`: a version 1 Gossip frame leaves its topic out
/// (what a peer that predates topics can read; it delivers the message as `default`).
///
/// # Panics
///
/// As [`encode_frame`].
pub fn encode_frame_in(frame: &Frame, version: u8, out: &mut Vec<u8>) {
    let len = body_len(frame, version);
    let Ok(len16) = u16::try_from(len) else {
        panic!("frame body of {len} bytes exceeds the u16 length prefix");
    };
    out.reserve(FRAME_PREFIX_LEN + len);
    match frame {
        Frame::Gossip {
            id,
            round,
            topic,
            payload,
        } => {
            write_prefix(tag::GOSSIP, len16, out);
            write_id_round(id, *round, out);
            if version >= 2 {
                // A topic is at most MAX_TOPIC_LEN (255) bytes by construction.
                out.push(u8::try_from(topic.len()).unwrap_or(u8::MAX));
                out.extend_from_slice(topic.as_bytes());
            }
            out.extend_from_slice(payload);
        }
        Frame::IHave { entries } => {
            write_prefix(tag::IHAVE, len16, out);
            for e in entries {
                write_id_round(&e.id, e.round, out);
            }
        }
        Frame::Graft { id, round, request } => {
            write_prefix(tag::GRAFT, len16, out);
            write_id_round(id, *round, out);
            out.push(u8::from(*request));
        }
        Frame::Prune { partition } => {
            write_prefix(tag::PRUNE, len16, out);
            out.extend_from_slice(&partition.to_le_bytes());
        }
        Frame::PruneRoot { partition, root } => {
            write_prefix(tag::PRUNE_ROOT, len16, out);
            out.extend_from_slice(&partition.to_le_bytes());
            out.extend_from_slice(&root.0.to_le_bytes());
        }
        Frame::Digest {
            partition,
            reply,
            blocks,
        } => {
            write_prefix(tag::DIGEST, len16, out);
            out.extend_from_slice(&partition.to_le_bytes());
            out.push(u8::from(*reply));
            for b in blocks {
                out.extend_from_slice(&b.origin.0.to_le_bytes());
                out.extend_from_slice(&b.first.to_le_bytes());
                out.extend_from_slice(&b.bits.to_le_bytes());
            }
        }
    }
}

/// Writes a frame's `tag | len` prefix.
#[inline]
pub(super) fn write_prefix(t: u8, len: u16, out: &mut Vec<u8>) {
    out.push(t);
    out.extend_from_slice(&len.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(origin: u64, seq: u64) -> MessageId {
        MessageId {
            origin: NodeId(origin),
            seq,
        }
    }

    fn header() -> Header {
        Header {
            sender: NodeId(0x0102_0304_0506_0708),
            incarnation: 0xdead_beef,
            flags: 0x80,
            version: crate::wire::VERSION,
        }
    }

    fn datagram(frames: &[Frame]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_header(&header(), &mut out);
        for f in frames {
            encode_frame(f, &mut out);
        }
        out
    }

    fn sample_frames() -> Vec<Frame> {
        vec![
            Frame::Gossip {
                id: id(7, 9),
                round: 3,
                topic: crate::topic::Topic::default(),
                payload: Bytes::from_static(b"hello"),
            },
            Frame::IHave {
                entries: vec![
                    IHaveEntry {
                        id: id(1, 2),
                        round: 4,
                    },
                    IHaveEntry {
                        id: id(u64::MAX, 0),
                        round: u16::MAX,
                    },
                ],
            },
            Frame::Graft {
                id: id(5, 6),
                round: 1,
                request: true,
            },
            Frame::Graft {
                id: id(5, 7),
                round: 0,
                request: false,
            },
            Frame::Prune { partition: 63 },
            Frame::PruneRoot {
                partition: 62,
                root: NodeId(0x0102_0304_0506_0708),
            },
            Frame::Digest {
                partition: 17,
                reply: true,
                blocks: vec![
                    DigestBlock {
                        origin: NodeId(5),
                        first: 3,
                        bits: 0b1011,
                    },
                    DigestBlock {
                        origin: NodeId(u64::MAX),
                        first: u64::MAX - 64,
                        bits: u64::MAX,
                    },
                ],
            },
            Frame::Gossip {
                id: id(0, 0),
                round: 0,
                topic: crate::topic::Topic::default(),
                payload: Bytes::new(),
            },
        ]
    }

    #[test]
    fn header_layout_is_little_endian() {
        let mut out = Vec::new();
        encode_header(&header(), &mut out);
        assert_eq!(
            out,
            [b'P', b'C', VERSION, 0x80, 8, 7, 6, 5, 4, 3, 2, 1, 0xef, 0xbe, 0xad, 0xde]
        );
        assert_eq!(decode_header(&out), Ok((header(), HEADER_LEN)));
    }

    #[test]
    fn frame_layouts() {
        let mut out = Vec::new();
        encode_frame(&Frame::Prune { partition: 0x0102 }, &mut out);
        assert_eq!(out, [tag::PRUNE, 2, 0, 0x02, 0x01]);

        out.clear();
        let graft = Frame::Graft {
            id: id(1, 2),
            round: 3,
            request: true,
        };
        encode_frame(&graft, &mut out);
        assert_eq!(out.len(), encoded_len(&graft));
        assert_eq!(&out[..3], [tag::GRAFT, GRAFT_LEN as u8, 0]);
        assert_eq!(&out[3..11], 1u64.to_le_bytes());
        assert_eq!(&out[11..19], 2u64.to_le_bytes());
        assert_eq!(&out[19..21], 3u16.to_le_bytes());
        assert_eq!(out[21], 1);
    }

    #[test]
    fn roundtrip_all_frame_kinds() {
        let frames = sample_frames();
        let bytes = Bytes::from(datagram(&frames));
        let expected: usize = HEADER_LEN + frames.iter().map(encoded_len).sum::<usize>();
        assert_eq!(bytes.len(), expected);
        let dg = decode(&bytes).expect("valid datagram");
        assert_eq!(dg.header, header());
        assert_eq!(dg.frames, frames);
        assert_eq!(dg.skipped_unknown, 0);
    }

    fn topic_gossip(topic: &str) -> Frame {
        Frame::Gossip {
            id: id(5, 6),
            round: 2,
            topic: Topic::new(topic).unwrap(),
            payload: Bytes::from_static(b"body"),
        }
    }

    #[test]
    fn version_2_gossip_carries_its_topic() {
        let f = topic_gossip("orders.eu.created");
        let bytes = Bytes::from(datagram(std::slice::from_ref(&f)));
        // tag, len, origin, seq, round, then the topic behind its length byte.
        let body = &bytes[HEADER_LEN + FRAME_PREFIX_LEN..];
        assert_eq!(body[GOSSIP_FIXED_LEN], 17);
        assert_eq!(
            &body[GOSSIP_FIXED_LEN + 1..GOSSIP_FIXED_LEN + 18],
            b"orders.eu.created"
        );
        assert_eq!(&body[GOSSIP_FIXED_LEN + 18..], b"body");
        assert_eq!(decode(&bytes).unwrap().frames, vec![f]);
    }

    #[test]
    fn version_1_datagrams_are_read_and_written_without_topics() {
        // What a node that predates topics sends: header version 1, no topic bytes.
        let mut v1 = Vec::new();
        encode_header(
            &Header {
                version: 1,
                ..header()
            },
            &mut v1,
        );
        let plain = [5u64.to_le_bytes(), 6u64.to_le_bytes()].concat();
        v1.extend_from_slice(&[tag::GOSSIP, 22, 0]);
        v1.extend_from_slice(&plain);
        v1.extend_from_slice(&2u16.to_le_bytes());
        v1.extend_from_slice(b"body");
        let dg = decode(&Bytes::from(v1.clone())).expect("version 1 is read");
        assert_eq!(dg.header.version, 1);
        assert_eq!(dg.frames, vec![topic_gossip("default")]);
        // Written in version 1, a topic is left out: the very bytes an old node sends.
        let mut out = Vec::new();
        encode_header(
            &Header {
                version: 1,
                ..header()
            },
            &mut out,
        );
        encode_frame_in(&topic_gossip("orders.eu"), 1, &mut out);
        assert_eq!(out, v1);
        assert_eq!(encoded_len_in(&topic_gossip("orders.eu"), 1), 3 + 22);
    }

    #[test]
    fn a_bad_topic_rejects_the_datagram() {
        let mut bytes = datagram(&[topic_gossip("ab.cd")]);
        // "ab.cd" -> "ab..d": an empty token.
        let at = HEADER_LEN + FRAME_PREFIX_LEN + GOSSIP_FIXED_LEN + 1 + 3;
        bytes[at] = b'.';
        assert_eq!(
            decode(&Bytes::from(bytes.clone())),
            Err(DecodeError::BadTopic("empty_token"))
        );
        // A topic length running past the frame.
        bytes[HEADER_LEN + FRAME_PREFIX_LEN + GOSSIP_FIXED_LEN] = 200;
        assert!(matches!(
            decode(&Bytes::from(bytes)),
            Err(DecodeError::BadLength {
                tag: tag::GOSSIP,
                ..
            })
        ));
        // A version 2 Gossip with no topic byte at all.
        let mut short = datagram(&[]);
        short.extend_from_slice(&[tag::GOSSIP, 18, 0]);
        short.extend_from_slice(&[0; 18]);
        assert!(matches!(
            decode(&Bytes::from(short)),
            Err(DecodeError::BadLength {
                tag: tag::GOSSIP,
                ..
            })
        ));
    }

    #[test]
    fn gossip_payload_is_zero_copy() {
        let frames = sample_frames();
        let bytes = Bytes::from(datagram(&frames));
        let dg = decode(&bytes).expect("valid datagram");
        let Frame::Gossip { payload, .. } = &dg.frames[0] else {
            panic!("first frame is gossip");
        };
        let inside = bytes.as_ptr_range();
        assert!(inside.contains(&payload.as_ptr()));
    }

    #[test]
    fn header_errors() {
        assert_eq!(decode_header(b""), Err(DecodeError::TooShort { len: 0 }));
        assert_eq!(
            decode_header(&[0; 15]),
            Err(DecodeError::TooShort { len: 15 })
        );
        let mut good = datagram(&[]);
        good[0] = b'X';
        assert_eq!(decode_header(&good), Err(DecodeError::BadMagic));
        good[0] = b'P';
        good[2] = VERSION + 1;
        assert_eq!(
            decode_header(&good),
            Err(DecodeError::UnsupportedVersion(VERSION + 1))
        );
    }

    #[test]
    fn header_only_is_no_frames() {
        let bytes = Bytes::from(datagram(&[]));
        assert_eq!(decode(&bytes), Err(DecodeError::NoFrames));
    }

    #[test]
    fn unknown_tags_are_skipped_and_counted() {
        let mut raw = datagram(&[Frame::Prune { partition: 1 }]);
        write_prefix(tag::MEMBERSHIP_LAST, 4, &mut raw);
        raw.extend_from_slice(&[9, 9, 9, 9]);
        write_prefix(0xff, 0, &mut raw);
        encode_frame(&Frame::Prune { partition: 2 }, &mut raw);
        let dg = decode(&Bytes::from(raw)).expect("valid datagram");
        assert_eq!(
            dg.frames,
            [Frame::Prune { partition: 1 }, Frame::Prune { partition: 2 }]
        );
        assert_eq!(dg.skipped_unknown, 2);
    }

    #[test]
    fn digest_layout_and_bad_lengths() {
        let digest = Frame::Digest {
            partition: 0x0102,
            reply: false,
            blocks: vec![DigestBlock {
                origin: NodeId(1),
                first: 2,
                bits: 3,
            }],
        };
        let mut out = Vec::new();
        encode_frame(&digest, &mut out);
        let mut want = vec![tag::DIGEST, 27, 0, 0x02, 0x01, 0];
        for w in [1u64, 2, 3] {
            want.extend_from_slice(&w.to_le_bytes());
        }
        assert_eq!(out, want);
        // No blocks, a partial block, or no fixed part: rejected, never a panic.
        for body_len in [
            0usize,
            2,
            3,
            3 + DIGEST_BLOCK_LEN - 1,
            3 + DIGEST_BLOCK_LEN + 1,
        ] {
            let mut raw = datagram(&[]);
            write_prefix(tag::DIGEST, body_len as u16, &mut raw);
            raw.extend(std::iter::repeat_n(0u8, body_len));
            assert_eq!(
                decode(&Bytes::from(raw)),
                Err(DecodeError::BadLength {
                    tag: tag::DIGEST,
                    len: body_len
                }),
                "body of {body_len} bytes"
            );
        }
        // The most blocks a sender puts in a frame decode; one more is refused by size.
        for (blocks, ok) in [(DIGEST_MAX_BLOCKS, true), (DIGEST_MAX_BLOCKS + 1, false)] {
            let body_len = DIGEST_FIXED_LEN + blocks * DIGEST_BLOCK_LEN;
            let mut raw = datagram(&[]);
            write_prefix(tag::DIGEST, body_len as u16, &mut raw);
            raw.extend(std::iter::repeat_n(0xffu8, body_len));
            let got = decode(&Bytes::from(raw));
            if ok {
                assert!(got.is_ok(), "{blocks} blocks: {got:?}");
            } else {
                assert_eq!(
                    got,
                    Err(DecodeError::DigestTooLarge {
                        blocks,
                        max: DIGEST_MAX_BLOCKS
                    })
                );
            }
        }
        // Reserved flag bits are ignored.
        let mut raw = datagram(&[digest]);
        raw[HEADER_LEN + FRAME_PREFIX_LEN + 2] = 0xfe;
        let dg = decode(&Bytes::from(raw)).expect("valid datagram");
        assert!(matches!(dg.frames[0], Frame::Digest { reply: false, .. }));
    }

    #[test]
    fn only_unknown_frames_is_ok_and_empty() {
        let mut raw = datagram(&[]);
        write_prefix(0x2f, 1, &mut raw);
        raw.push(0);
        let dg = decode(&Bytes::from(raw)).expect("valid datagram");
        assert!(dg.frames.is_empty());
        assert_eq!(dg.skipped_unknown, 1);
    }

    #[test]
    fn truncated_prefix_and_body() {
        let mut raw = datagram(&[Frame::Prune { partition: 1 }]);
        raw.push(tag::GRAFT);
        assert_eq!(
            decode(&Bytes::from(raw.clone())),
            Err(DecodeError::Truncated {
                tag: tag::GRAFT,
                needed: FRAME_PREFIX_LEN,
                have: 1
            })
        );
        raw.extend_from_slice(&[GRAFT_LEN as u8, 0, 1, 2, 3]);
        assert_eq!(
            decode(&Bytes::from(raw)),
            Err(DecodeError::Truncated {
                tag: tag::GRAFT,
                needed: GRAFT_LEN,
                have: 3
            })
        );
        // Unknown frames are length-checked too.
        let mut raw = datagram(&[]);
        write_prefix(0x42, 10, &mut raw);
        assert_eq!(
            decode(&Bytes::from(raw)),
            Err(DecodeError::Truncated {
                tag: 0x42,
                needed: 10,
                have: 0
            })
        );
    }

    #[test]
    fn bad_lengths() {
        let cases: &[(u8, usize)] = &[
            (tag::GOSSIP, 0),
            (tag::GOSSIP, 17),
            (tag::IHAVE, 0),
            (tag::IHAVE, 17),
            (tag::IHAVE, 19),
            (tag::IHAVE, 37),
            (tag::GRAFT, 18),
            (tag::GRAFT, 20),
            (tag::PRUNE, 1),
            (tag::PRUNE, 3),
        ];
        for &(t, len) in cases {
            let mut raw = datagram(&[]);
            write_prefix(t, len as u16, &mut raw);
            raw.resize(raw.len() + len, 0);
            assert_eq!(
                decode(&Bytes::from(raw)),
                Err(DecodeError::BadLength { tag: t, len }),
                "tag {t} len {len}"
            );
        }
    }

    #[test]
    fn graft_reserved_flag_bits_are_ignored() {
        let mut raw = datagram(&[Frame::Graft {
            id: id(1, 1),
            round: 0,
            request: false,
        }]);
        *raw.last_mut().expect("non-empty") = 0xfe;
        let dg = decode(&Bytes::from(raw)).expect("valid datagram");
        assert!(matches!(dg.frames[0], Frame::Graft { request: false, .. }));
    }

    #[test]
    fn iterator_yields_frames_then_stops_after_error() {
        let mut raw = datagram(&[Frame::Prune { partition: 1 }]);
        write_prefix(tag::PRUNE, 1, &mut raw);
        raw.push(0);
        encode_frame(&Frame::Prune { partition: 2 }, &mut raw);
        let bytes = Bytes::from(raw);
        let mut it = FrameIter::new(&bytes, HEADER_LEN);
        assert_eq!(it.next(), Some(Ok(Frame::Prune { partition: 1 })));
        assert_eq!(
            it.next(),
            Some(Err(DecodeError::BadLength {
                tag: tag::PRUNE,
                len: 1
            }))
        );
        assert_eq!(it.next(), None);
        assert_eq!(it.next(), None);
    }

    #[test]
    fn iterator_offset_past_end_is_empty() {
        let bytes = Bytes::from_static(b"abc");
        assert_eq!(FrameIter::new(&bytes, 3).next(), None);
        assert_eq!(FrameIter::new(&bytes, 100).next(), None);
    }

    #[test]
    fn every_prefix_of_a_valid_datagram_is_rejected_without_panic() {
        let raw = datagram(&sample_frames());
        let full = Bytes::from(raw);
        // A cut exactly on a frame boundary is a valid shorter datagram; any other
        // cut must be an error.
        let mut boundaries = vec![HEADER_LEN];
        for f in sample_frames() {
            boundaries.push(boundaries.last().copied().unwrap_or(0) + encoded_len(&f));
        }
        for cut in 0..full.len() {
            let r = decode(&full.slice(..cut));
            if cut > HEADER_LEN && boundaries.contains(&cut) {
                let n = boundaries.iter().position(|&b| b == cut).unwrap_or(0);
                assert_eq!(r.map(|d| d.frames), Ok(sample_frames()[..n].to_vec()));
            } else {
                assert!(r.is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "exceeds the u16 length prefix")]
    fn oversized_frame_panics_on_encode() {
        let frame = Frame::Gossip {
            id: id(1, 1),
            round: 0,
            topic: crate::topic::Topic::default(),
            payload: Bytes::from(vec![0; usize::from(u16::MAX)]),
        };
        encode_frame(&frame, &mut Vec::new());
    }
}
