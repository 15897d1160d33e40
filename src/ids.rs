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

/// The shard that owns `partition` on a node of `shards` shards: shard `k` owns every
/// partition `p` with `p % shards == k`. The node routes its own broadcasts by it and
/// sends to a peer's shard by it (shard `k` listens on the control port + 1 + k), so
/// both ends must use this one rule; `shards` of 0 counts as 1.
#[inline]
pub fn shard_of(partition: u16, shards: usize) -> usize {
    partition as usize % shards.max(1)
}

/// The partitions shard `k` of `shards` owns by [`shard_of`], as a bit mask over the
/// first `partitions` (at most [`MAX_PARTITIONS`]). The simulator's nodes are one
/// shard each and own every partition: `owned_mask(0, 1, partitions)`.
pub fn owned_mask(k: usize, shards: usize, partitions: u32) -> u64 {
    (0..partitions.min(MAX_PARTITIONS) as u16)
        .filter(|&p| shard_of(p, shards) == k)
        .fold(0u64, |m, p| m | 1 << p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_has_exactly_one_owning_shard() {
        for shards in 1..=8usize {
            let masks: Vec<u64> = (0..shards).map(|k| owned_mask(k, shards, 64)).collect();
            assert_eq!(masks.iter().fold(0, |a, m| a | m), u64::MAX);
            for (k, m) in masks.iter().enumerate() {
                assert_eq!(masks.iter().filter(|o| *o & m != 0).count(), 1);
                for p in 0..64u16 {
                    assert_eq!(m >> p & 1 == 1, shard_of(p, shards) == k);
                }
            }
        }
        assert_eq!(owned_mask(0, 1, 16), 0xFFFF);
        assert_eq!(owned_mask(1, 2, 8), 0b1010_1010);
    }

    #[test]
    fn node_id_displays_as_sixteen_hex_digits() {
        assert_eq!(NodeId(1).to_string(), "0000000000000001");
        assert_eq!(NodeId(0xab).to_string(), "00000000000000ab");
        assert_eq!(NodeId(u64::MAX).to_string(), "ffffffffffffffff");
    }
}
