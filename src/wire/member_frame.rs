//! HyParView frames on the control socket.
//!
//! They share the datagram format (header, `tag | len | body` frames, auth trailer)
//! with the Plumtree frames, but only the control core reads them, so they decode
//! into their own type: a shard's decoder skips them as unknown tags and the control
//! decoder skips Plumtree frames the same way.
//!
//! A node id that names a third party (a ForwardJoin's new node, a shuffle's origin
//! and sample) travels as a [`Contact`]: the id with the control address and shard
//! count needed to reach it, so the receiver's address book covers every id that can
//! enter its views. The sender's own address is the datagram's source; its shard
//! count rides on the frames that can make it a neighbour (Join, Neighbor,
//! NeighborReply).
//!
//! ```text
//! Join          (0x10) body := shards u16                (a shard socket counts it as misrouted)
//! Disconnect    (0x11) body := (empty)                   (likewise)
//! ForwardJoin   (0x12) body := ttl u8 | contact
//! Neighbor      (0x13) body := flags u8 (bit0 = high priority) | shards u16
//! NeighborReply (0x14) body := flags u8 (bit0 = accepted) | shards u16
//! Shuffle       (0x15) body := ttl u8 | origin contact | contact{n}
//! ShuffleReply  (0x16) body := contact{n}
//! Heartbeat     (0x17) body := flags u8 (bit0 = short)   (empty from older nodes: not short)
//! Probe         (0x18) body := (empty)
//! ProbeReply    (0x19) body := (empty)
//! Splice        (0x1a) body := partner contact
//! SpliceOffer   (0x1b) body := new contact
//! SpliceReply   (0x1c) body := flags u8 (bit0 = accepted)
//! Introduce     (0x1d) body := node contact
//! NodeName      (0x1e) body := flags u8 (bit0 = chosen by the operator, not the
//!                             hostname default) | name (UTF-8, 1..=64 bytes, no
//!                             control characters);
//!                             the sender's name, next to its Join / Neighbor /
//!                             NeighborReply (see `encode_node_name`)
//! NameConflict  (0x1f) body := holder id u64 | name   (the receiver's name is taken)
//! Advertise     (0x30) body := ip [16] | port u16   (the sender's advertised control
//!                             address, in every control datagram;
//!                             peers prefer it to the datagram's source, which a port
//!                             mapping or NAT rewrites; see `encode_advertise`)
//! contact := id u64 | ip [16] (IPv4 as ::ffff:a.b.c.d) | port u16 | shards u16   (28 bytes)
//! ```

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use bytes::Bytes;

use super::codec::{decode_header, write_prefix};
use super::error::DecodeError;
use super::frame::{tag, Header};
use super::layout::FRAME_PREFIX_LEN;
use crate::ids::NodeId;

/// Bytes of one [`Contact`] on the wire.
pub const CONTACT_LEN: usize = 28;

/// A node and where to reach it: its control address and shard count (shard `k`
/// listens on control port + 1 + k).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Contact {
    /// The node.
    pub id: NodeId,
    /// Its control socket (IPv4 travels as an IPv4-mapped IPv6 address).
    pub addr: SocketAddr,
    /// How many shard sockets it runs.
    pub shards: u16,
}

impl Contact {
    /// Whether the contact can be used at all: a routable port, an address that is
    /// not unspecified and at least one shard. The decoder accepts any bytes; the
    /// driver drops contacts failing this (a peer's bug must not poison the book).
    pub fn is_usable(&self) -> bool {
        self.addr.port() != 0 && !self.addr.ip().is_unspecified() && self.shards > 0
    }
}

/// A HyParView message as it travels, with addresses for every node it names. One
/// variant per `membership::Message` variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberFrame {
    /// "Let me in"; also the first contact with a seed known only by address.
    Join {
        /// How many shard sockets the sender runs.
        shards: u16,
    },
    /// The sender removed the receiver from its active view (or is leaving).
    Disconnect,
    /// A Join's random walk: `new` is taken into an active view when `ttl` reaches 0,
    /// into a passive one on the way.
    ForwardJoin {
        /// The joining node, with its address so the receiver can reach it.
        new: Contact,
        /// Hops left in the walk.
        ttl: u8,
    },
    /// "Add me to your active view."
    Neighbor {
        /// Must be accepted even by a full active view (the sender has no neighbour).
        high_priority: bool,
        /// How many shard sockets the sender runs.
        shards: u16,
    },
    /// Answer to [`MemberFrame::Neighbor`]; an accepting one also acknowledges a Join.
    NeighborReply {
        /// The sender added the receiver to its active view.
        accepted: bool,
        /// How many shard sockets the sender runs.
        shards: u16,
    },
    /// A shuffle random walk carrying a sample of `origin`'s views.
    Shuffle {
        /// The node that started it; the endpoint replies to it directly.
        origin: Contact,
        /// Hops left in the walk.
        ttl: u8,
        /// The sample of the origin's views.
        nodes: Vec<Contact>,
    },
    /// The shuffle endpoint's answer to the origin: a sample of its passive view.
    ShuffleReply {
        /// The sample, as many as it received.
        nodes: Vec<Contact>,
    },
    /// Keep-alive to an active neighbour nothing else was sent to lately.
    Heartbeat {
        /// The sender's active view has room (a short neighbour may splice with it).
        short: bool,
    },
    /// "Are you alive?", to a neighbour silent for the failure timeout.
    Probe,
    /// Answer to [`MemberFrame::Probe`].
    ProbeReply,
    /// From a node whose view stayed short to a full one it asked: "break one of your
    /// links, C–D, and make it C–sender plus D–`partner`".
    Splice {
        /// The node that takes the other end of the broken link.
        partner: Contact,
    },
    /// From the full node working on a splice to one of its neighbours: "drop our
    /// link and ask `new` to be your neighbour instead".
    SpliceOffer {
        /// The node to ask instead.
        new: Contact,
    },
    /// Answer to [`MemberFrame::SpliceOffer`].
    SpliceReply {
        /// The link to the receiver is gone and `new` was asked.
        accepted: bool,
    },
    /// "`node` has room, as you do; ask it", from a node with two short neighbours.
    Introduce {
        /// The other short node.
        node: Contact,
    },
}

/// A decoded control datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDatagram {
    /// Who sent it, in which life and wire version.
    pub header: Header,
    /// The membership frames, in datagram order.
    pub frames: Vec<MemberFrame>,
    /// Frames this decoder does not know (Plumtree frames, newer tags), skipped.
    pub skipped_unknown: u32,
}

fn body_len(f: &MemberFrame) -> usize {
    match f {
        MemberFrame::Join { .. } => 2,
        MemberFrame::Disconnect | MemberFrame::Probe | MemberFrame::ProbeReply => 0,
        MemberFrame::Heartbeat { .. } | MemberFrame::SpliceReply { .. } => 1,
        MemberFrame::Splice { .. }
        | MemberFrame::SpliceOffer { .. }
        | MemberFrame::Introduce { .. } => CONTACT_LEN,
        MemberFrame::ForwardJoin { .. } => 1 + CONTACT_LEN,
        MemberFrame::Neighbor { .. } | MemberFrame::NeighborReply { .. } => 3,
        MemberFrame::Shuffle { nodes, .. } => 1 + CONTACT_LEN * (1 + nodes.len()),
        MemberFrame::ShuffleReply { nodes } => CONTACT_LEN * nodes.len(),
    }
}

/// Bytes `f` occupies in a datagram (prefix and body).
pub fn member_encoded_len(f: &MemberFrame) -> usize {
    FRAME_PREFIX_LEN + body_len(f)
}

/// Most contacts a Shuffle (`with_origin`) or ShuffleReply can carry in a datagram
/// of `mtu` bytes; the driver truncates samples to this.
pub fn max_contacts(mtu: usize, with_origin: bool) -> usize {
    let fixed = super::layout::HEADER_LEN
        + FRAME_PREFIX_LEN
        + if with_origin { 1 + CONTACT_LEN } else { 0 };
    (mtu.saturating_sub(fixed) / CONTACT_LEN).min(usize::from(u16::MAX) / CONTACT_LEN - 1)
}

fn write_contact(c: &Contact, out: &mut Vec<u8>) {
    out.extend_from_slice(&c.id.0.to_le_bytes());
    let ip = match c.addr.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    out.extend_from_slice(&ip.octets());
    out.extend_from_slice(&c.addr.port().to_le_bytes());
    out.extend_from_slice(&c.shards.to_le_bytes());
}

fn read_contact(b: &[u8; CONTACT_LEN]) -> Contact {
    let (id, rest) = b.split_at(8);
    let (ip, rest) = rest.split_at(16);
    let id = NodeId(u64::from_le_bytes(id.try_into().unwrap_or_default()));
    let ip = Ipv6Addr::from(<[u8; 16]>::try_from(ip).unwrap_or_default());
    let ip = match ip.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(ip),
    };
    let port = u16::from_le_bytes([rest[0], rest[1]]);
    let shards = u16::from_le_bytes([rest[2], rest[3]]);
    Contact {
        id,
        addr: SocketAddr::new(ip, port),
        shards,
    }
}

fn read_contacts(mut b: &[u8]) -> Vec<Contact> {
    let mut v = Vec::with_capacity(b.len() / CONTACT_LEN);
    while let Some((c, rest)) = b.split_first_chunk::<CONTACT_LEN>() {
        v.push(read_contact(c));
        b = rest;
    }
    v
}

/// Appends `f` (prefix and body) to `out`.
///
/// # Panics
///
/// If the body exceeds the `u16` length prefix (more than 2,339 contacts); the
/// driver caps samples with [`max_contacts`] far below that.
pub fn encode_member_frame(f: &MemberFrame, out: &mut Vec<u8>) {
    let len = body_len(f);
    let Ok(len16) = u16::try_from(len) else {
        panic!("member frame body of {len} bytes exceeds the u16 length prefix");
    };
    let flag = |b: bool| u8::from(b);
    match f {
        MemberFrame::Join { shards } => {
            write_prefix(tag::JOIN, len16, out);
            out.extend_from_slice(&shards.to_le_bytes());
        }
        MemberFrame::Disconnect => write_prefix(tag::DISCONNECT, len16, out),
        MemberFrame::ForwardJoin { new, ttl } => {
            write_prefix(tag::FORWARD_JOIN, len16, out);
            out.push(*ttl);
            write_contact(new, out);
        }
        MemberFrame::Neighbor {
            high_priority,
            shards,
        } => {
            write_prefix(tag::NEIGHBOR, len16, out);
            out.push(flag(*high_priority));
            out.extend_from_slice(&shards.to_le_bytes());
        }
        MemberFrame::NeighborReply { accepted, shards } => {
            write_prefix(tag::NEIGHBOR_REPLY, len16, out);
            out.push(flag(*accepted));
            out.extend_from_slice(&shards.to_le_bytes());
        }
        MemberFrame::Shuffle { origin, ttl, nodes } => {
            write_prefix(tag::SHUFFLE, len16, out);
            out.push(*ttl);
            write_contact(origin, out);
            for c in nodes {
                write_contact(c, out);
            }
        }
        MemberFrame::ShuffleReply { nodes } => {
            write_prefix(tag::SHUFFLE_REPLY, len16, out);
            for c in nodes {
                write_contact(c, out);
            }
        }
        MemberFrame::Heartbeat { short } => {
            write_prefix(tag::HEARTBEAT, len16, out);
            out.push(flag(*short));
        }
        MemberFrame::Probe => write_prefix(tag::PROBE, len16, out),
        MemberFrame::ProbeReply => write_prefix(tag::PROBE_REPLY, len16, out),
        MemberFrame::Splice { partner } => {
            write_prefix(tag::SPLICE, len16, out);
            write_contact(partner, out);
        }
        MemberFrame::SpliceOffer { new } => {
            write_prefix(tag::SPLICE_OFFER, len16, out);
            write_contact(new, out);
        }
        MemberFrame::SpliceReply { accepted } => {
            write_prefix(tag::SPLICE_REPLY, len16, out);
            out.push(flag(*accepted));
        }
        MemberFrame::Introduce { node } => {
            write_prefix(tag::INTRODUCE, len16, out);
            write_contact(node, out);
        }
    }
}

/// One datagram: header plus frames (the caller seals it when the cluster is keyed).
pub fn encode_member_datagram(h: &Header, frames: &[MemberFrame]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        super::layout::HEADER_LEN + frames.iter().map(member_encoded_len).sum::<usize>(),
    );
    super::encode_header(h, &mut out);
    for f in frames {
        encode_member_frame(f, &mut out);
    }
    out
}

/// Most bytes of a node name.
pub const MAX_NODE_NAME: usize = 64;

/// Whether `name` can be a node name: 1 to [`MAX_NODE_NAME`] bytes of UTF-8 with no
/// control characters.
pub fn is_valid_node_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NODE_NAME && !name.chars().any(char::is_control)
}

/// Appends the sender's NodeName frame (an operator-chosen name) to an encoded
/// control datagram. Names that are not valid (see [`is_valid_node_name`]) are not
/// sent.
pub fn encode_node_name(name: &str, out: &mut Vec<u8>) {
    encode_node_name_with(name, true, out);
}

/// [`encode_node_name`]; `chosen` is false for a default name (the hostname), which
/// several nodes on one host share, so duplicates of it are not refused.
pub fn encode_node_name_with(name: &str, chosen: bool, out: &mut Vec<u8>) {
    if is_valid_node_name(name) {
        write_prefix(tag::NODE_NAME, 1 + name.len() as u16, out);
        out.push(u8::from(chosen));
        out.extend_from_slice(name.as_bytes());
    }
}

/// Bytes [`encode_node_name`] adds for `name`.
pub fn node_name_len(name: &str) -> usize {
    if is_valid_node_name(name) {
        FRAME_PREFIX_LEN + 1 + name.len()
    } else {
        0
    }
}

/// Appends a NameConflict frame: `name` is already used by live node `holder`.
pub fn encode_name_conflict(holder: NodeId, name: &str, out: &mut Vec<u8>) {
    if is_valid_node_name(name) {
        write_prefix(tag::NAME_CONFLICT, (8 + name.len()) as u16, out);
        out.extend_from_slice(&holder.0.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
    }
}

/// The NameConflict frame of a control datagram, if it has a valid one.
pub fn read_name_conflict(buf: &[u8]) -> Option<(NodeId, String)> {
    let body = find_frame(buf, tag::NAME_CONFLICT)?;
    let (id, name) = body.split_first_chunk::<8>()?;
    let name = std::str::from_utf8(name)
        .ok()
        .filter(|n| is_valid_node_name(n))?;
    Some((NodeId(u64::from_le_bytes(*id)), name.to_string()))
}

/// Bytes of an Advertise frame's body.
const ADVERTISE_LEN: usize = 18;
/// Bytes [`encode_advertise`] adds at most: what a control datagram's builder must
/// leave free of its MTU.
pub const ADVERTISE_FRAME_LEN: usize = FRAME_PREFIX_LEN + ADVERTISE_LEN;

/// Appends the sender's Advertise frame (its advertised control address) to an
/// encoded control datagram. An address nobody can reach (wildcard IP, port 0) is
/// not sent: the receiver then goes by the datagram's source.
pub fn encode_advertise(addr: SocketAddr, out: &mut Vec<u8>) {
    if addr.port() == 0 || addr.ip().is_unspecified() {
        return;
    }
    write_prefix(tag::ADVERTISE, ADVERTISE_LEN as u16, out);
    let ip = match addr.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    out.extend_from_slice(&ip.octets());
    out.extend_from_slice(&addr.port().to_le_bytes());
}

/// The sender's advertised control address from a control datagram that decoded
/// (see [`decode_members`]), if it carries a usable one. Total like
/// [`read_node_name`].
pub fn read_advertise(buf: &[u8]) -> Option<SocketAddr> {
    let body: &[u8; ADVERTISE_LEN] = find_frame(buf, tag::ADVERTISE)?.try_into().ok()?;
    let (ip, port) = body.split_at(16);
    let ip = Ipv6Addr::from(<[u8; 16]>::try_from(ip).ok()?);
    let ip = match ip.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(ip),
    };
    let port = u16::from_le_bytes([port[0], port[1]]);
    (port != 0 && !ip.is_unspecified()).then_some(SocketAddr::new(ip, port))
}

/// The body of the first frame tagged `t` in a datagram, scanning the prefixes only.
fn find_frame(buf: &[u8], t: u8) -> Option<&[u8]> {
    let mut pos = super::layout::HEADER_LEN;
    while let Some(rest) = buf.get(pos..).filter(|r| !r.is_empty()) {
        let (&[tag, l0, l1], after) = rest.split_first_chunk::<FRAME_PREFIX_LEN>()?;
        let len = usize::from(u16::from_le_bytes([l0, l1]));
        let body = after.get(..len)?;
        if tag == t {
            return Some(body);
        }
        pos += FRAME_PREFIX_LEN + len;
    }
    None
}

/// The sender's name from a control datagram that decoded (see [`decode_members`]),
/// if it carries a valid one. Total: any bytes give `None` or a valid name.
pub fn read_node_name(buf: &[u8]) -> Option<String> {
    read_node_name_with(buf).map(|(n, _)| n)
}

/// [`read_node_name`] with the frame's "chosen by the operator" bit.
pub fn read_node_name_with(buf: &[u8]) -> Option<(String, bool)> {
    let (&flags, name) = find_frame(buf, tag::NODE_NAME)?.split_first()?;
    std::str::from_utf8(name)
        .ok()
        .filter(|n| is_valid_node_name(n))
        .map(|n| (n.to_string(), flags & 1 != 0))
}

/// Parses one known frame body; `None` when its length is wrong for the tag.
fn parse(t: u8, body: &[u8]) -> Option<MemberFrame> {
    let empty = |f: MemberFrame| body.is_empty().then_some(f);
    let flag_shards = || match *body {
        [f, s0, s1] => Some((f & 1 != 0, u16::from_le_bytes([s0, s1]))),
        _ => None,
    };
    Some(match t {
        tag::JOIN => match *body {
            [s0, s1] => MemberFrame::Join {
                shards: u16::from_le_bytes([s0, s1]),
            },
            _ => return None,
        },
        tag::DISCONNECT => return empty(MemberFrame::Disconnect),
        tag::HEARTBEAT => match *body {
            [] => MemberFrame::Heartbeat { short: false },
            [f] => MemberFrame::Heartbeat { short: f & 1 != 0 },
            _ => return None,
        },
        tag::PROBE => return empty(MemberFrame::Probe),
        tag::PROBE_REPLY => return empty(MemberFrame::ProbeReply),
        tag::FORWARD_JOIN => {
            let (&ttl, rest) = body.split_first()?;
            let c = <&[u8; CONTACT_LEN]>::try_from(rest).ok()?;
            MemberFrame::ForwardJoin {
                new: read_contact(c),
                ttl,
            }
        }
        tag::NEIGHBOR => {
            let (high_priority, shards) = flag_shards()?;
            MemberFrame::Neighbor {
                high_priority,
                shards,
            }
        }
        tag::NEIGHBOR_REPLY => {
            let (accepted, shards) = flag_shards()?;
            MemberFrame::NeighborReply { accepted, shards }
        }
        tag::SHUFFLE => {
            let (&ttl, rest) = body.split_first()?;
            let (origin, rest) = rest.split_first_chunk::<CONTACT_LEN>()?;
            if rest.len() % CONTACT_LEN != 0 {
                return None;
            }
            MemberFrame::Shuffle {
                origin: read_contact(origin),
                ttl,
                nodes: read_contacts(rest),
            }
        }
        tag::SPLICE => MemberFrame::Splice {
            partner: read_contact(<&[u8; CONTACT_LEN]>::try_from(body).ok()?),
        },
        tag::SPLICE_OFFER => MemberFrame::SpliceOffer {
            new: read_contact(<&[u8; CONTACT_LEN]>::try_from(body).ok()?),
        },
        tag::INTRODUCE => MemberFrame::Introduce {
            node: read_contact(<&[u8; CONTACT_LEN]>::try_from(body).ok()?),
        },
        tag::SPLICE_REPLY => match *body {
            [f] => MemberFrame::SpliceReply {
                accepted: f & 1 != 0,
            },
            _ => return None,
        },
        tag::SHUFFLE_REPLY => {
            if body.len() % CONTACT_LEN != 0 {
                return None;
            }
            MemberFrame::ShuffleReply {
                nodes: read_contacts(body),
            }
        }
        _ => return None,
    })
}

/// Whether `t` is a membership tag this build decodes.
fn is_member_tag(t: u8) -> bool {
    (tag::JOIN..=tag::INTRODUCE).contains(&t)
}

/// Decodes a control datagram. Total like [`decode`](super::decode): any bytes give a
/// datagram or a [`DecodeError`], never a panic; a malformed frame rejects the whole
/// datagram; unknown tags are skipped by their length prefix and counted.
pub fn decode_members(buf: &Bytes) -> Result<MemberDatagram, DecodeError> {
    let (header, mut pos) = decode_header(buf)?;
    let mut frames = Vec::new();
    let mut skipped = 0u32;
    loop {
        let rest = buf.get(pos..).unwrap_or_default();
        if rest.is_empty() {
            break;
        }
        let Some((&[t, l0, l1], after)) = rest.split_first_chunk::<FRAME_PREFIX_LEN>() else {
            return Err(DecodeError::Truncated {
                tag: rest[0],
                needed: FRAME_PREFIX_LEN,
                have: rest.len(),
            });
        };
        let len = usize::from(u16::from_le_bytes([l0, l1]));
        let Some(body) = after.get(..len) else {
            return Err(DecodeError::Truncated {
                tag: t,
                needed: len,
                have: after.len(),
            });
        };
        pos += FRAME_PREFIX_LEN + len;
        if t == tag::NODE_NAME || t == tag::NAME_CONFLICT || t == tag::ADVERTISE {
            // Known, carry no membership message: read by `read_node_name`,
            // `read_name_conflict` and `read_advertise`.
            continue;
        }
        if !is_member_tag(t) {
            skipped = skipped.saturating_add(1);
            continue;
        }
        match parse(t, body) {
            Some(f) => frames.push(f),
            None => return Err(DecodeError::BadLength { tag: t, len }),
        }
    }
    if frames.is_empty() && skipped == 0 {
        // (A datagram holding only NodeName / NameConflict frames lands here too; the
        // control core reads those before decoding.)
        return Err(DecodeError::NoFrames);
    }
    Ok(MemberDatagram {
        header,
        frames,
        skipped_unknown: skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::HEADER_LEN;
    use crate::wire::{decode, encode_frame, Frame};

    fn header() -> Header {
        Header {
            sender: NodeId(0x0102_0304_0506_0708),
            incarnation: 9,
            flags: 0,
            version: crate::wire::VERSION,
        }
    }

    fn contact(id: u64, addr: &str, shards: u16) -> Contact {
        Contact {
            id: NodeId(id),
            addr: addr.parse().unwrap(),
            shards,
        }
    }

    fn samples() -> Vec<MemberFrame> {
        let a = contact(1, "127.0.0.1:7000", 2);
        let b = contact(u64::MAX, "[2001:db8::1]:65535", 64);
        vec![
            MemberFrame::Join { shards: 3 },
            MemberFrame::Disconnect,
            MemberFrame::ForwardJoin { new: a, ttl: 6 },
            MemberFrame::Neighbor {
                high_priority: true,
                shards: 1,
            },
            MemberFrame::Neighbor {
                high_priority: false,
                shards: 7,
            },
            MemberFrame::NeighborReply {
                accepted: true,
                shards: 2,
            },
            MemberFrame::NeighborReply {
                accepted: false,
                shards: 2,
            },
            MemberFrame::Shuffle {
                origin: a,
                ttl: 5,
                nodes: vec![a, b],
            },
            MemberFrame::Shuffle {
                origin: b,
                ttl: 0,
                nodes: vec![],
            },
            MemberFrame::ShuffleReply { nodes: vec![b, a] },
            MemberFrame::ShuffleReply { nodes: vec![] },
            MemberFrame::Heartbeat { short: true },
            MemberFrame::Heartbeat { short: false },
            MemberFrame::Probe,
            MemberFrame::ProbeReply,
            MemberFrame::Splice { partner: b },
            MemberFrame::SpliceOffer { new: a },
            MemberFrame::SpliceReply { accepted: true },
            MemberFrame::SpliceReply { accepted: false },
            MemberFrame::Introduce { node: a },
        ]
    }

    #[test]
    fn roundtrip_every_member_frame() {
        let frames = samples();
        let raw = encode_member_datagram(&header(), &frames);
        assert_eq!(
            raw.len(),
            HEADER_LEN + frames.iter().map(member_encoded_len).sum::<usize>()
        );
        let dg = decode_members(&Bytes::from(raw)).unwrap();
        assert_eq!(dg.header, header());
        assert_eq!(dg.frames, frames);
        assert_eq!(dg.skipped_unknown, 0);
    }

    #[test]
    fn advertise_rides_beside_join_and_old_datagrams_still_decode() {
        let join = MemberFrame::Join { shards: 2 };
        let mut raw = encode_member_datagram(&header(), std::slice::from_ref(&join));
        let old = raw.clone();
        for a in ["198.18.1.14:27000", "[2001:db8::7]:7000"] {
            let a: SocketAddr = a.parse().unwrap();
            let mut r = old.clone();
            encode_advertise(a, &mut r);
            encode_node_name("web-1", &mut r);
            assert_eq!(
                r.len(),
                old.len() + FRAME_PREFIX_LEN + ADVERTISE_LEN + node_name_len("web-1")
            );
            let dg = decode_members(&Bytes::from(r.clone())).unwrap();
            assert_eq!(dg.frames, vec![join.clone()]);
            assert_eq!(dg.skipped_unknown, 0, "new decoders know the tag");
            assert_eq!(read_advertise(&r), Some(a));
            assert_eq!(read_node_name(&r).as_deref(), Some("web-1"));
            // The shard decoder (like a node that predates the tag) skips it.
            assert!(decode(&Bytes::from(r)).is_ok_and(|d| d.skipped_unknown >= 1));
        }
        assert_eq!(read_advertise(&old), None);
        // Unreachable addresses are neither sent nor read.
        for bad in ["0.0.0.0:7000", "198.18.1.14:0"] {
            encode_advertise(bad.parse().unwrap(), &mut raw);
            assert_eq!(raw, old, "{bad} not sent");
        }
        let mut forged = old.clone();
        write_prefix(tag::ADVERTISE, ADVERTISE_LEN as u16, &mut forged);
        forged.extend_from_slice(&[0; ADVERTISE_LEN]);
        assert_eq!(read_advertise(&forged), None, "wildcard, port 0");
        let mut short = old.clone();
        write_prefix(tag::ADVERTISE, 2, &mut short);
        short.extend_from_slice(&[1, 2]);
        assert_eq!(read_advertise(&short), None, "wrong length");
    }

    #[test]
    fn node_name_rides_beside_join_and_old_datagrams_still_decode() {
        let join = MemberFrame::Join { shards: 2 };
        let mut raw = encode_member_datagram(&header(), std::slice::from_ref(&join));
        let old = raw.clone();
        encode_node_name("web-1", &mut raw);
        assert_eq!(raw.len(), old.len() + node_name_len("web-1"));
        let dg = decode_members(&Bytes::from(raw.clone())).unwrap();
        assert_eq!(dg.frames, vec![join.clone()]);
        assert_eq!(dg.skipped_unknown, 0, "new decoders know the tag");
        assert_eq!(read_node_name(&raw).as_deref(), Some("web-1"));
        assert_eq!(read_node_name_with(&raw), Some(("web-1".into(), true)));
        let mut dflt = old.clone();
        encode_node_name_with("host", false, &mut dflt);
        assert_eq!(read_node_name_with(&dflt), Some(("host".into(), false)));
        // A datagram from a node that predates names: no name, same frames.
        assert_eq!(read_node_name(&old), None);
        assert_eq!(
            decode_members(&Bytes::from(old)).unwrap().frames,
            vec![join]
        );
        // What a decoder that predates the tag does: the shard decoder skips it.
        let mut shard_view = encode_member_datagram(&header(), &[]);
        encode_node_name("web-1", &mut shard_view);
        assert!(decode(&Bytes::from(shard_view)).is_ok_and(|d| d.skipped_unknown == 1));
        // Invalid names are neither sent nor read.
        for bad in ["", "a\u{7}b", &"x".repeat(65)] {
            let mut r = encode_member_datagram(&header(), &[MemberFrame::Probe]);
            let before = r.len();
            encode_node_name(bad, &mut r);
            assert_eq!(r.len(), before, "{bad:?} not sent");
        }
        let mut forged = encode_member_datagram(&header(), &[MemberFrame::Probe]);
        write_prefix(tag::NODE_NAME, 3, &mut forged);
        forged.extend_from_slice(&[0xff, 0xfe, 0x01]);
        assert_eq!(read_node_name(&forged), None);
        assert_eq!(read_node_name(&forged[..forged.len() - 1]), None);
        assert!(is_valid_node_name("ünïcode-ok"));
    }

    #[test]
    fn a_join_and_a_disconnect_on_a_shard_socket_are_dropped_and_counted() {
        let mut raw = encode_member_datagram(
            &header(),
            &[MemberFrame::Join { shards: 4 }, MemberFrame::Disconnect],
        );
        // The bytes every node has always sent: tag, length, shard count.
        assert_eq!(
            raw[HEADER_LEN..],
            [tag::JOIN, 2, 0, 4, 0, tag::DISCONNECT, 0, 0]
        );
        let only_members = decode(&Bytes::from(raw.clone())).expect("not an error");
        assert!(only_members.frames.is_empty());
        assert_eq!(only_members.misrouted_member_frames, 2);
        assert_eq!(only_members.skipped_unknown, 0);
        encode_frame(&Frame::Prune { partition: 3 }, &mut raw);
        let dg = decode(&Bytes::from(raw)).expect("valid datagram");
        assert_eq!(dg.frames, vec![Frame::Prune { partition: 3 }]);
        assert_eq!(dg.misrouted_member_frames, 2);
        // Their lengths are still checked: a malformed one rejects the datagram.
        for (t, len) in [(tag::JOIN, 1usize), (tag::JOIN, 3), (tag::DISCONNECT, 1)] {
            let mut bad = encode_member_datagram(&header(), &[]);
            write_prefix(t, len as u16, &mut bad);
            bad.resize(bad.len() + len, 0);
            assert_eq!(
                decode(&Bytes::from(bad)),
                Err(DecodeError::BadLength { tag: t, len })
            );
        }
    }

    #[test]
    fn plumtree_and_member_decoders_skip_each_other() {
        let hb = MemberFrame::Heartbeat { short: true };
        let mut raw = encode_member_datagram(&header(), std::slice::from_ref(&hb));
        encode_frame(&Frame::Prune { partition: 3 }, &mut raw);
        let bytes = Bytes::from(raw);
        let m = decode_members(&bytes).unwrap();
        assert_eq!(m.frames, vec![hb]);
        assert_eq!(m.skipped_unknown, 1);
        let p = decode(&bytes).unwrap();
        assert_eq!(p.frames, vec![Frame::Prune { partition: 3 }]);
        assert_eq!(p.skipped_unknown, 1);
    }

    #[test]
    fn bad_lengths_are_typed_errors() {
        let cases: &[(u8, usize)] = &[
            (tag::JOIN, 1),
            (tag::JOIN, 3),
            (tag::DISCONNECT, 1),
            (tag::HEARTBEAT, 2),
            (tag::PROBE, 1),
            (tag::PROBE_REPLY, 5),
            (tag::FORWARD_JOIN, 0),
            (tag::FORWARD_JOIN, CONTACT_LEN),
            (tag::FORWARD_JOIN, CONTACT_LEN + 2),
            (tag::NEIGHBOR, 2),
            (tag::NEIGHBOR_REPLY, 4),
            (tag::SHUFFLE, 0),
            (tag::SHUFFLE, CONTACT_LEN),
            (tag::SHUFFLE, 1 + CONTACT_LEN + 1),
            (tag::SHUFFLE_REPLY, CONTACT_LEN - 1),
            (tag::SHUFFLE_REPLY, CONTACT_LEN + 1),
            (tag::SPLICE, 0),
            (tag::SPLICE, CONTACT_LEN + 1),
            (tag::SPLICE_OFFER, CONTACT_LEN - 1),
            (tag::SPLICE_REPLY, 0),
            (tag::SPLICE_REPLY, 2),
            (tag::INTRODUCE, CONTACT_LEN - 1),
        ];
        for &(t, len) in cases {
            let mut raw = Vec::new();
            crate::wire::encode_header(&header(), &mut raw);
            write_prefix(t, len as u16, &mut raw);
            raw.resize(raw.len() + len, 0);
            assert_eq!(
                decode_members(&Bytes::from(raw)),
                Err(DecodeError::BadLength { tag: t, len }),
                "tag {t:#x} len {len}"
            );
        }
    }

    #[test]
    fn every_prefix_decodes_or_errors_without_panic() {
        let raw = encode_member_datagram(&header(), &samples());
        let full = Bytes::from(raw);
        let mut ok = 0;
        for cut in 0..full.len() {
            if decode_members(&full.slice(..cut)).is_ok() {
                ok += 1;
            }
        }
        // Only cuts on frame boundaries (one per frame, header-only excluded) decode.
        assert_eq!(ok, samples().len() - 1);
        assert!(matches!(
            decode_members(&full.slice(..HEADER_LEN)),
            Err(DecodeError::NoFrames)
        ));
    }

    #[test]
    fn contacts_ipv4_ipv6_and_usability() {
        let v4 = contact(5, "10.1.2.3:9", 1);
        let v6 = contact(6, "[::1]:9", 1);
        for c in [v4, v6] {
            let raw =
                encode_member_datagram(&header(), &[MemberFrame::ShuffleReply { nodes: vec![c] }]);
            let dg = decode_members(&Bytes::from(raw)).unwrap();
            assert_eq!(
                dg.frames,
                vec![MemberFrame::ShuffleReply { nodes: vec![c] }]
            );
            assert!(c.is_usable());
        }
        assert!(!contact(1, "0.0.0.0:9", 1).is_usable());
        assert!(!contact(1, "10.0.0.1:0", 1).is_usable());
        assert!(!contact(1, "10.0.0.1:9", 0).is_usable());
    }

    #[test]
    fn max_contacts_fit_the_mtu() {
        for mtu in [200, 1400, 65507] {
            for with_origin in [false, true] {
                let n = max_contacts(mtu, with_origin);
                let c = contact(1, "127.0.0.1:1", 1);
                let f = if with_origin {
                    MemberFrame::Shuffle {
                        origin: c,
                        ttl: 1,
                        nodes: vec![c; n],
                    }
                } else {
                    MemberFrame::ShuffleReply { nodes: vec![c; n] }
                };
                let len = encode_member_datagram(&header(), &[f]).len();
                assert!(len <= mtu, "mtu {mtu}: {len}");
                assert!(len + CONTACT_LEN > mtu || mtu == 65507);
            }
        }
    }
}
