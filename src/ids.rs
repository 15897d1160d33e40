//! Identifiers shared by the wire codec, the protocol and the simulator.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;

/// A node's cluster-wide identity. Random 64-bit values in practice; the simulator
/// uses small integers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub u64);

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{:x}", self.0)
    }
}

/// 16 lower-case hex digits, zero-padded: how a node id is printed everywhere (admin
/// views, deliveries lines, logs, the client port's server id), so one id always reads
/// the same.
impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One broadcast. `seq` is allocated by the origin from a counter that never repeats
/// (the node starts it from its incarnation), so two broadcasts of the same bytes are
/// two messages and the seen map can track each origin as a dense sequence window.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct MessageId {
    /// The node that broadcast it.
    pub origin: NodeId,
    /// The origin's sequence number for it.
    pub seq: u64,
}

/// Largest partition count; partition sets are kept as `u64` bit masks.
pub const MAX_PARTITIONS: u32 = 64;

/// Mixes an origin id into a partition offset, so that different origins start their
/// round-robin over partitions at different places.
#[inline]
pub fn origin_offset(origin: NodeId) -> u64 {
    // SplitMix64 finaliser: cheap and well spread.
    let mut z = origin.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl MessageId {
    /// The partition (independent Plumtree) this message travels in. Consecutive
    /// sequence numbers of one origin visit the partitions round-robin, which spreads
    /// one origin's load over every tree and keeps each shard's share of an origin's
    /// sequence space periodic (see `protocol::seen`). `partitions` is a power of two
    /// no larger than [`MAX_PARTITIONS`].
    #[inline]
    pub fn partition(&self, partitions: u32) -> u16 {
        debug_assert!(partitions.is_power_of_two() && partitions <= MAX_PARTITIONS);
        (origin_offset(self.origin).wrapping_add(self.seq) & (partitions as u64 - 1)) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::NodeId;

    #[test]
    fn node_id_displays_as_sixteen_hex_digits() {
        assert_eq!(NodeId(1).to_string(), "0000000000000001");
        assert_eq!(NodeId(0xab).to_string(), "00000000000000ab");
        assert_eq!(NodeId(u64::MAX).to_string(), "ffffffffffffffff");
    }
}
