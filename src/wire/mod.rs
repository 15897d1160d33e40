//! Versioned binary codec for plumcore datagrams.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! datagram := header frame+
//! header   := magic "PC" (2) | version u8 | flags u8 | sender u64 | incarnation u32   (16 bytes)
//! frame    := tag u8 | len u16 | body[len]
//! Gossip   (0x01) body := origin u64 | seq u64 | round u16 | topic_len u8 | topic | payload   (version 2)
//!                   v1 := origin u64 | seq u64 | round u16 | payload[len-18]   (topic `default`)
//! IHave    (0x02) body := (origin u64 | seq u64 | round u16){n}, len = 18*n, n >= 1
//! Graft    (0x03) body := origin u64 | seq u64 | round u16 | flags u8 (bit0 = request)
//! Prune    (0x04) body := partition u16
//! PruneRoot(0x05) body := partition u16 | root u64   (per-root trees; older nodes skip it)
//! Ping     (0x10) body := shards u16          (membership Join, control socket)
//! Leave    (0x11) body := (empty)             (membership Disconnect, control socket)
//! Digest   (0x20) body := partition u16 | flags u8 (bit0 = reply) | (origin u64 | first u64 | bits u64){n}
//!                        (anti-entropy; bit i of a block stands for seq first + i * partitions)
//! ```
//!
//! The control socket carries the HyParView frames (0x10..=0x19), decoded by
//! [`decode_members`] into [`MemberFrame`]s; see [`members`] for their layout.
//!
//! With a cluster key, header flag bit 0x01 is set and an auth trailer follows the
//! frames (see [`auth`]); it is verified and stripped before decoding.
//!
//! Every frame is length-prefixed, so a decoder skips tags it does not know (counted)
//! instead of failing the datagram: membership (0x10..=0x1f) and anti-entropy
//! (0x20..=0x2f) frames can be added without a version bump.

#![forbid(unsafe_code)]

pub mod auth;
mod builder;
mod codec;
mod error;
mod frame;
pub mod members;

pub use builder::{Coalescer, DatagramBuilder, FrameTooLarge};
pub use codec::{
    decode, decode_header, encode_frame, encode_frame_in, encode_header, encoded_len,
    encoded_len_in, Datagram, FrameIter,
};
pub use error::DecodeError;
pub use frame::{tag, DigestBlock, Frame, Header, IHaveEntry};
pub use members::{
    decode_members, encode_member_datagram, encode_member_frame, member_encoded_len, Contact,
    MemberDatagram, MemberFrame, CONTACT_LEN,
};

/// Datagram magic, "PC".
pub const MAGIC: [u8; 2] = *b"PC";
/// Wire format version this build speaks. Version 2 put the topic in the Gossip
/// frame; nothing else changed.
pub const VERSION: u8 = 2;
/// Oldest wire version this build reads, and speaks to a peer that sends it (see
/// [`Header::version`]). Membership datagrams are identical in both versions and are
/// always sent as this version, so nodes of either version join through each other.
pub const MIN_VERSION: u8 = 1;
/// Bytes of the datagram header.
pub const HEADER_LEN: usize = 16;
/// Bytes of a frame's tag and length prefix.
pub const FRAME_PREFIX_LEN: usize = 3;
/// Bytes of a Gossip body before the topic (version 2) or the payload (version 1).
pub const GOSSIP_FIXED_LEN: usize = 18;
/// Bytes of one IHave entry.
pub const IHAVE_ENTRY_LEN: usize = 18;
/// Bytes of a Graft body.
pub const GRAFT_LEN: usize = 19;
/// Bytes of a Prune body.
pub const PRUNE_LEN: usize = 2;
/// Bytes of a PruneRoot body.
pub const PRUNE_ROOT_LEN: usize = 10;
/// Bytes of a Ping body.
pub const PING_LEN: usize = 2;
/// Bytes of a Digest body before its blocks (partition and flags).
pub const DIGEST_FIXED_LEN: usize = 3;
/// Bytes of one Digest block.
pub const DIGEST_BLOCK_LEN: usize = 24;
/// Most blocks a sender puts in one Digest frame, so the frame (about 1 KB) fits a
/// datagram of the default MTU with the auth trailer.
pub const DIGEST_MAX_BLOCKS: usize = 40;
/// Default datagram size limit (path MTU minus IP/UDP headers, with margin).
pub const DEFAULT_MTU: usize = 1400;
/// Smallest MTU a builder accepts: a header plus one Graft.
pub const MIN_MTU: usize = HEADER_LEN + FRAME_PREFIX_LEN + GRAFT_LEN + 32;
/// Largest payload a Gossip frame with a topic of [`crate::topic::DEFAULT_TOPIC`]'s
/// length (or shorter) can carry in a datagram of [`DEFAULT_MTU`]; every byte of a
/// longer topic comes off it.
pub const MAX_GOSSIP_PAYLOAD: usize = DEFAULT_MTU
    - HEADER_LEN
    - FRAME_PREFIX_LEN
    - GOSSIP_FIXED_LEN
    - 1
    - crate::topic::DEFAULT_TOPIC.len();
