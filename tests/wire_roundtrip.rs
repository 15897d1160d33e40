//! Property tests for the wire codec: whatever the protocol hands the coalescer comes
//! out of `decode` unchanged and within the MTU, and no input makes `decode` panic.

use bytes::Bytes;
use plumcore::ids::{MessageId, NodeId};
use plumcore::topic::Topic;
use plumcore::wire::{
    decode, encode_frame, encode_header, encode_member_frame, encoded_len, tag, Coalescer,
    DatagramBuilder, DigestBlock, Frame, Header, IHaveEntry, MemberFrame, DIGEST_MAX_BLOCKS,
    FRAME_PREFIX_LEN, HEADER_LEN, IHAVE_ENTRY_LEN, MAX_GOSSIP_PAYLOAD, MIN_MTU,
};
use proptest::collection::vec;
use proptest::prelude::*;

/// Upper MTU clamp of the builders (largest IPv4 UDP payload).
const MAX_MTU: usize = 65_507;

fn arb_id() -> impl Strategy<Value = MessageId> {
    (any::<u64>(), any::<u64>()).prop_map(|(o, seq)| MessageId {
        origin: NodeId(o),
        seq,
    })
}

fn arb_entry() -> impl Strategy<Value = IHaveEntry> {
    (arb_id(), any::<u16>()).prop_map(|(id, round)| IHaveEntry { id, round })
}

fn arb_payload() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..64),
        2 => vec(any::<u8>(), 0..=MAX_GOSSIP_PAYLOAD),
        // Larger than a default datagram: must be rejected, not panic.
        1 => vec(any::<u8>(), MAX_GOSSIP_PAYLOAD..MAX_GOSSIP_PAYLOAD + 4000),
    ]
    .prop_map(Bytes::from)
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (arb_id(), any::<u16>(), arb_topic(), arb_payload()).prop_map(
            |(id, round, topic, payload)| Frame::Gossip {
                id,
                round,
                topic,
                payload
            }
        ),
        prop_oneof![vec(arb_entry(), 0..8), vec(arb_entry(), 0..400)]
            .prop_map(|entries| Frame::IHave { entries }),
        (arb_id(), any::<u16>(), any::<bool>()).prop_map(|(id, round, request)| Frame::Graft {
            id,
            round,
            request
        }),
        any::<u16>().prop_map(|partition| Frame::Prune { partition }),
        (any::<u16>(), any::<u64>()).prop_map(|(partition, root)| Frame::PruneRoot {
            partition,
            root: NodeId(root)
        }),
        (
            any::<u16>(),
            any::<bool>(),
            vec(arb_block(), 1..=DIGEST_MAX_BLOCKS)
        )
            .prop_map(|(partition, reply, blocks)| Frame::Digest {
                partition,
                reply,
                blocks
            }),
    ]
}

fn arb_topic() -> impl Strategy<Value = Topic> {
    prop_oneof![
        2 => Just(Topic::default()),
        3 => "[a-zA-Z0-9_$*>-]{1,12}(\\.[a-z0-9_-]{1,40}){0,5}"
            .prop_filter_map("a topic", |s| Topic::new(&s).ok()),
    ]
}

fn arb_block() -> impl Strategy<Value = DigestBlock> {
    (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(o, first, bits)| DigestBlock {
        origin: NodeId(o),
        first,
        bits,
    })
}

fn arb_header() -> impl Strategy<Value = Header> {
    (any::<u64>(), any::<u32>(), any::<u8>()).prop_map(|(s, incarnation, flags)| Header {
        sender: NodeId(s),
        incarnation,
        flags,
        version: plumcore::wire::VERSION,
    })
}

fn arb_mtu() -> impl Strategy<Value = usize> {
    prop_oneof![
        8 => MIN_MTU..2000usize,
        1 => 2000..=MAX_MTU,
        // Out of range on either side: clamped.
        1 => prop_oneof![0..MIN_MTU, MAX_MTU..200_000usize],
    ]
}

/// Frames as a receiver should see them: consecutive IHave frames merged (a split
/// batch and two adjacent batches carry the same announcements) and empty IHaves
/// dropped.
fn normalize(frames: impl IntoIterator<Item = Frame>) -> Vec<Frame> {
    let mut out: Vec<Frame> = Vec::new();
    for f in frames {
        match (f, out.last_mut()) {
            (Frame::IHave { entries }, _) if entries.is_empty() => {}
            (Frame::IHave { entries }, Some(Frame::IHave { entries: last })) => {
                last.extend(entries);
            }
            (f, _) => out.push(f),
        }
    }
    out
}

/// Encodes a datagram directly, with no MTU limit.
fn raw_datagram(header: &Header, frames: &[Frame]) -> Vec<u8> {
    let mut b = DatagramBuilder::new(*header, MAX_MTU);
    for f in frames {
        assert!(b.try_push(f), "test frames fit one maximal datagram");
    }
    b.take().map(|d| d.to_vec()).unwrap_or_default()
}

/// Small frames that always fit together in one maximal datagram.
fn arb_small_frames() -> impl Strategy<Value = Vec<Frame>> {
    let small = prop_oneof![
        (arb_id(), any::<u16>(), vec(any::<u8>(), 0..100)).prop_map(|(id, round, p)| {
            Frame::Gossip {
                id,
                round,
                topic: plumcore::topic::Topic::default(),
                payload: Bytes::from(p),
            }
        }),
        vec(arb_entry(), 1..10).prop_map(|entries| Frame::IHave { entries }),
        (arb_id(), any::<u16>(), any::<bool>()).prop_map(|(id, round, request)| Frame::Graft {
            id,
            round,
            request
        }),
        any::<u16>().prop_map(|partition| Frame::Prune { partition }),
        (any::<u16>(), any::<u64>()).prop_map(|(partition, root)| Frame::PruneRoot {
            partition,
            root: NodeId(root)
        }),
        (any::<u16>(), any::<bool>(), vec(arb_block(), 1..4)).prop_map(
            |(partition, reply, blocks)| Frame::Digest {
                partition,
                reply,
                blocks
            }
        ),
    ];
    vec(small, 1..20)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Coalesced frames decode back to the input (IHave batches possibly split),
    /// every datagram is within the MTU, and packing is greedy: a datagram is only
    /// closed when the next frame (or IHave entry) does not fit.
    #[test]
    fn coalescer_roundtrip(header in arb_header(), mtu in arb_mtu(), frames in vec(arb_frame(), 0..40)) {
        let mut c = Coalescer::new(header, mtu);
        let limit = c.mtu();
        let mut out = Vec::new();
        let mut expected = Vec::new();
        for f in frames {
            let fits = matches!(f, Frame::IHave { .. }) || encoded_len(&f) <= limit - HEADER_LEN;
            let r = c.push(f.clone(), &mut out);
            prop_assert_eq!(r.is_ok(), fits);
            if fits {
                expected.push(f);
            }
        }
        c.flush(&mut out);
        prop_assert!(c.is_empty());

        let mut decoded = Vec::new();
        for (i, d) in out.iter().enumerate() {
            prop_assert!(d.len() <= limit, "datagram {} bytes > mtu {}", d.len(), limit);
            let dg = decode(d).expect("coalescer output decodes");
            prop_assert_eq!(dg.header, header);
            prop_assert_eq!(dg.skipped_unknown, 0);
            prop_assert!(!dg.frames.is_empty());
            if let Some(next) = out.get(i + 1) {
                let first = decode(next).expect("decodes").frames.remove(0);
                let needed = match first {
                    Frame::IHave { .. } => FRAME_PREFIX_LEN + IHAVE_ENTRY_LEN,
                    ref f => encoded_len(f),
                };
                prop_assert!(d.len() + needed > limit, "datagram closed early");
            }
            decoded.extend(dg.frames);
        }
        prop_assert_eq!(normalize(decoded), normalize(expected));
    }

    /// The plain builder keeps frames intact: push until full, take, continue.
    #[test]
    fn builder_roundtrip(header in arb_header(), mtu in arb_mtu(), frames in vec(arb_frame(), 0..40)) {
        let mut b = DatagramBuilder::new(header, mtu);
        let limit = b.mtu();
        let mut out = Vec::new();
        let mut expected = Vec::new();
        for f in frames {
            if matches!(&f, Frame::IHave { entries } if entries.is_empty()) {
                prop_assert!(b.try_push(&f));
                continue;
            }
            if encoded_len(&f) > b.frame_capacity() {
                prop_assert!(!b.try_push(&f));
                continue;
            }
            if !b.try_push(&f) {
                out.extend(b.take());
                prop_assert!(b.try_push(&f));
            }
            expected.push(f);
        }
        out.extend(b.take());
        prop_assert_eq!(b.take(), None);
        let mut decoded = Vec::new();
        for d in &out {
            prop_assert!(d.len() <= limit);
            decoded.extend(decode(d).expect("builder output decodes").frames);
        }
        prop_assert_eq!(decoded, expected);
    }

    /// Arbitrary bytes never panic, and whatever decodes re-encodes to the same frames.
    #[test]
    fn decode_arbitrary_bytes(bytes in vec(any::<u8>(), 0..2048)) {
        if let Ok(dg) = decode(&Bytes::from(bytes)) {
            reencode_matches(&dg.header, &dg.frames)?;
        }
    }

    /// Arbitrary bodies behind a valid header reach the frame parser.
    #[test]
    fn decode_arbitrary_body(header in arb_header(), body in vec(any::<u8>(), 0..2048)) {
        let mut raw = raw_datagram(&header, &[Frame::Prune { partition: 0 }]);
        raw.truncate(HEADER_LEN);
        raw.extend_from_slice(&body);
        if let Ok(dg) = decode(&Bytes::from(raw)) {
            prop_assert_eq!(dg.header, header);
            reencode_matches(&dg.header, &dg.frames)?;
        }
    }

    /// Any cut of a valid datagram is an error or a valid datagram of the leading
    /// frames; never a panic or a mangled frame.
    #[test]
    fn truncated_datagram_is_err_or_prefix(header in arb_header(), frames in arb_small_frames(), cut in any::<prop::sample::Index>()) {
        let raw = raw_datagram(&header, &frames);
        let cut = cut.index(raw.len() + 1);
        match decode(&Bytes::copy_from_slice(&raw[..cut])) {
            Ok(dg) => {
                prop_assert!(cut < raw.len() || dg.frames == frames);
                prop_assert!(dg.frames.len() <= frames.len());
                prop_assert_eq!(&dg.frames[..], &frames[..dg.frames.len()]);
                let end = HEADER_LEN + dg.frames.iter().map(encoded_len).sum::<usize>();
                prop_assert_eq!(end, cut);
            }
            Err(_) => prop_assert!(cut < raw.len()),
        }
    }

    /// Frames with unknown tags (future membership or anti-entropy frames) are
    /// skipped by length and counted, and the known frames around them survive.
    #[test]
    fn unknown_tags_are_skipped(
        header in arb_header(),
        frames in arb_small_frames(),
        unknown in vec((any::<u8>(), vec(any::<u8>(), 0..64), any::<prop::sample::Index>()), 0..8),
    ) {
        let mut pieces = encoded_frames(&frames);
        let mut inserted = 0u32;
        for (t, body, at) in unknown {
            let known = (tag::GOSSIP..=tag::PRUNE_ROOT).contains(&t)
                || [tag::JOIN, tag::DISCONNECT, tag::DIGEST].contains(&t);
            let t = if known { t + 0x30 } else { t };
            let mut v = vec![t];
            v.extend_from_slice(&u16::try_from(body.len()).expect("small").to_le_bytes());
            v.extend_from_slice(&body);
            pieces.insert(at.index(pieces.len() + 1), v);
            inserted += 1;
        }
        let raw = datagram_of_pieces(&header, pieces);
        let dg = decode(&Bytes::from(raw)).expect("unknown frames are not errors");
        prop_assert_eq!(dg.frames, frames);
        prop_assert_eq!(dg.skipped_unknown, inserted);
    }

    /// Membership Join and Disconnect frames (control-socket frames that reached a
    /// shard socket) are dropped and counted apart from unknown tags, and the frames
    /// around them survive.
    #[test]
    fn membership_frames_are_dropped_and_counted(
        header in arb_header(),
        frames in arb_small_frames(),
        joins in vec((prop::option::of(any::<u16>()), any::<prop::sample::Index>()), 0..8),
    ) {
        let mut pieces = encoded_frames(&frames);
        for (shards, at) in &joins {
            let member = match shards {
                Some(shards) => MemberFrame::Join { shards: *shards },
                None => MemberFrame::Disconnect,
            };
            let mut v = Vec::new();
            encode_member_frame(&member, &mut v);
            pieces.insert(at.index(pieces.len() + 1), v);
        }
        let raw = datagram_of_pieces(&header, pieces);
        let dg = decode(&Bytes::from(raw)).expect("membership frames are not errors");
        prop_assert_eq!(dg.frames, frames);
        prop_assert_eq!(dg.skipped_unknown, 0);
        prop_assert_eq!(dg.misrouted_member_frames as usize, joins.len());
    }

    /// Bit flips in a valid datagram never panic; what still decodes re-encodes
    /// consistently.
    #[test]
    fn bit_flips_never_panic(
        header in arb_header(),
        frames in arb_small_frames(),
        flips in vec(any::<(prop::sample::Index, u8)>(), 1..8),
    ) {
        let mut raw = raw_datagram(&header, &frames);
        for (at, bit) in flips {
            let i = at.index(raw.len());
            raw[i] ^= 1 << (bit % 8);
        }
        if let Ok(dg) = decode(&Bytes::from(raw)) {
            reencode_matches(&dg.header, &dg.frames)?;
        }
    }
}

/// Each frame encoded on its own, so a test can put other frames between them.
fn encoded_frames(frames: &[Frame]) -> Vec<Vec<u8>> {
    frames
        .iter()
        .map(|f| {
            let mut v = Vec::new();
            encode_frame(f, &mut v);
            v
        })
        .collect()
}

/// A datagram of `header` and the encoded frames in `pieces`, in order.
fn datagram_of_pieces(header: &Header, pieces: Vec<Vec<u8>>) -> Vec<u8> {
    let mut raw = Vec::new();
    encode_header(header, &mut raw);
    raw.extend(pieces.concat());
    raw
}

/// Re-encodes decoded frames through a coalescer and checks they decode the same.
fn reencode_matches(header: &Header, frames: &[Frame]) -> Result<(), TestCaseError> {
    let mut c = Coalescer::new(*header, MAX_MTU);
    let mut out = Vec::new();
    for f in frames {
        prop_assert!(c.push(f.clone(), &mut out).is_ok());
    }
    c.flush(&mut out);
    let mut again = Vec::new();
    for d in &out {
        let dg = decode(d).expect("re-encoded datagram decodes");
        prop_assert_eq!(&dg.header, header);
        again.extend(dg.frames);
    }
    prop_assert_eq!(normalize(again), normalize(frames.iter().cloned()));
    Ok(())
}

// ---- HyParView frames on the control socket ----------------------------------------

use plumcore::wire::{decode_members, encode_member_datagram, Contact};

fn arb_contact() -> impl Strategy<Value = Contact> {
    (
        any::<u64>(),
        prop_oneof![
            any::<[u8; 4]>().prop_map(std::net::IpAddr::from),
            any::<[u8; 16]>().prop_map(|b| std::net::IpAddr::from(std::net::Ipv6Addr::from(b))),
        ],
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(|(id, ip, port, shards)| {
            // An IPv4-mapped IPv6 address travels as (and decodes to) its IPv4 form.
            let ip = match ip {
                std::net::IpAddr::V6(v6) => v6
                    .to_ipv4_mapped()
                    .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
                v4 => v4,
            };
            Contact {
                id: NodeId(id),
                addr: std::net::SocketAddr::new(ip, port),
                shards,
            }
        })
}

fn arb_member_frame() -> impl Strategy<Value = MemberFrame> {
    prop_oneof![
        any::<u16>().prop_map(|shards| MemberFrame::Join { shards }),
        Just(MemberFrame::Disconnect),
        (arb_contact(), any::<u8>()).prop_map(|(new, ttl)| MemberFrame::ForwardJoin { new, ttl }),
        (any::<bool>(), any::<u16>()).prop_map(|(high_priority, shards)| MemberFrame::Neighbor {
            high_priority,
            shards
        }),
        (any::<bool>(), any::<u16>())
            .prop_map(|(accepted, shards)| MemberFrame::NeighborReply { accepted, shards }),
        (arb_contact(), any::<u8>(), vec(arb_contact(), 0..40))
            .prop_map(|(origin, ttl, nodes)| MemberFrame::Shuffle { origin, ttl, nodes }),
        vec(arb_contact(), 0..40).prop_map(|nodes| MemberFrame::ShuffleReply { nodes }),
        any::<bool>().prop_map(|short| MemberFrame::Heartbeat { short }),
        Just(MemberFrame::Probe),
        Just(MemberFrame::ProbeReply),
        arb_contact().prop_map(|partner| MemberFrame::Splice { partner }),
        arb_contact().prop_map(|new| MemberFrame::SpliceOffer { new }),
        any::<bool>().prop_map(|accepted| MemberFrame::SpliceReply { accepted }),
        arb_contact().prop_map(|node| MemberFrame::Introduce { node }),
    ]
}

proptest! {
    #[test]
    fn member_frames_roundtrip(header in arb_header(), frames in vec(arb_member_frame(), 1..6)) {
        let raw = encode_member_datagram(&header, &frames);
        let dg = decode_members(&Bytes::from(raw)).expect("valid datagram");
        prop_assert_eq!(dg.header, header);
        prop_assert_eq!(dg.frames, frames);
        prop_assert_eq!(dg.skipped_unknown, 0);
    }

    #[test]
    fn member_decode_arbitrary_body(header in arb_header(), body in vec(any::<u8>(), 0..2048)) {
        let mut raw = Vec::new();
        plumcore::wire::encode_header(&header, &mut raw);
        raw.extend_from_slice(&body);
        let _ = decode_members(&Bytes::from(raw));
    }

    #[test]
    fn member_bit_flips_never_panic(
        header in arb_header(),
        frames in vec(arb_member_frame(), 1..4),
        flips in vec(any::<prop::sample::Index>(), 1..8),
    ) {
        let mut raw = encode_member_datagram(&header, &frames);
        for f in flips {
            let i = f.index(raw.len());
            raw[i] ^= 1 << (i % 8);
        }
        let _ = decode_members(&Bytes::from(raw));
    }
}
