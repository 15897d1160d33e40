//! The datagram layout: magic, versions and the fixed sizes of the header and each
//! frame body. Its own file so the codec, the builder and the sealer read the sizes
//! without importing their parent module.

/// Datagram magic, "PC".
pub const MAGIC: [u8; 2] = *b"PC";
/// Wire format version this build speaks. Version 2 put the topic in the Gossip
/// frame; nothing else changed.
pub const VERSION: u8 = 2;
/// Oldest wire version this build reads, and speaks to a peer that sends it (see
/// [`Header::version`](super::Header::version)). Membership datagrams are identical in both versions and are
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
/// Bytes of a membership Join body (its shard count), which the shard decoder
/// checks before it counts the frame as misrouted.
pub const JOIN_LEN: usize = 2;
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
