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
//! Digest   (0x20) body := partition u16 | flags u8 (bit0 = reply) | (origin u64 | first u64 | bits u64){n}
//!                        (anti-entropy; bit i of a block stands for seq first + i * partitions)
//! ```
//!
//! The control socket carries the HyParView frames (0x10..=0x19), decoded by
//! [`decode_members`] into [`MemberFrame`]s; see [`member_frame`] for their layout. On a
//! shard socket [`decode`] drops a Join or Disconnect and counts it in
//! [`Datagram::misrouted_member_frames`].
//!
//! With a cluster key, header flag bit 0x01 is set and an auth trailer follows the
//! frames (see [`auth`]); it is verified and stripped before decoding.
//!
//! Every frame is length-prefixed, so a decoder skips tags it does not know (counted)
//! instead of failing the datagram: membership (0x10..=0x1f) and anti-entropy
//! (0x20..=0x2f) frames can be added without a version bump.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
mod builder;
mod codec;
mod error;
mod frame;
mod layout;
pub mod member_frame;

pub use builder::{Coalescer, DatagramBuilder, FrameTooLarge};
pub use codec::{
    decode, decode_header, encode_frame, encode_frame_in, encode_header, encoded_len,
    encoded_len_in, Datagram, FrameIter,
};
pub use error::DecodeError;
pub use frame::{tag, DigestBlock, Frame, Header, IHaveEntry};
pub use member_frame::{
    decode_members, encode_member_datagram, encode_member_frame, member_encoded_len, Contact,
    MemberDatagram, MemberFrame, CONTACT_LEN,
};

pub use layout::{
    DEFAULT_MTU, DIGEST_BLOCK_LEN, DIGEST_FIXED_LEN, DIGEST_MAX_BLOCKS, FRAME_PREFIX_LEN,
    GOSSIP_FIXED_LEN, GRAFT_LEN, HEADER_LEN, IHAVE_ENTRY_LEN, JOIN_LEN, MAGIC, MAX_GOSSIP_PAYLOAD,
    MIN_MTU, MIN_VERSION, PRUNE_LEN, PRUNE_ROOT_LEN, VERSION,
};
