//! The shard's neighbour table. Neighbours get a dense index (at most 64), so each
//! partition's eager set is one `u64` mask: cheap to copy, to scan and to keep for
//! 64 partitions per shard.

use crate::ids::NodeId;

/// Bit for neighbour index `i`.
#[inline]
pub fn bit(i: usize) -> u64 {
    1u64 << i
}

/// Dense, order-unstable list of neighbours (removal swaps the last one in).
#[derive(Debug, Default, Clone)]
pub struct Neighbors {
    ids: Vec<NodeId>,
}

/// What a removal did to indices, so per-index state can follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Index the removed neighbour had.
    pub index: usize,
    /// Index of the neighbour that moved into `index` (the old last one), if any.
    pub moved_from: Option<usize>,
}

impl Neighbors {
    /// Index of `peer`, if it is a neighbour.
    #[inline]
    pub fn index_of(&self, peer: NodeId) -> Option<usize> {
        self.ids.iter().position(|&p| p == peer)
    }

    /// The neighbour at `index`.
    #[inline]
    pub fn get(&self, index: usize) -> NodeId {
        self.ids[index]
    }

    /// Neighbours held (at most 64).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there is no neighbour.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The neighbours by index: `ids()[i]` is the one `bit(i)` stands for.
    pub fn ids(&self) -> &[NodeId] {
        &self.ids
    }

    /// Mask with one bit per current neighbour.
    #[inline]
    pub fn all_mask(&self) -> u64 {
        if self.ids.len() == 64 {
            u64::MAX
        } else {
            bit(self.ids.len()) - 1
        }
    }

    /// Adds `peer` and returns its index; the caller checks the capacity bound.
    pub fn push(&mut self, peer: NodeId) -> usize {
        debug_assert!(self.ids.len() < 64 && self.index_of(peer).is_none());
        self.ids.push(peer);
        self.ids.len() - 1
    }

    /// Removes `peer`, swapping the last neighbour into its slot.
    pub fn remove(&mut self, peer: NodeId) -> Option<Removed> {
        let index = self.index_of(peer)?;
        let last = self.ids.len() - 1;
        self.ids.swap_remove(index);
        Some(Removed {
            index,
            moved_from: (index != last).then_some(last),
        })
    }
}

/// Rewrites a neighbour mask after a removal: clears the removed bit and moves the
/// last neighbour's bit into the freed slot.
#[inline]
pub fn remap_mask(mask: u64, r: Removed) -> u64 {
    let mut m = mask & !bit(r.index);
    if let Some(from) = r.moved_from {
        if m & bit(from) != 0 {
            m = (m & !bit(from)) | bit(r.index);
        }
    }
    m
}

/// Iterates over the set bits of a mask, lowest first.
#[inline]
pub fn bits(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if mask == 0 {
            None
        } else {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            Some(i)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_swaps_last_into_slot_and_masks_follow() {
        let mut n = Neighbors::default();
        for i in 0..4 {
            n.push(NodeId(10 + i));
        }
        let mask = bit(1) | bit(3);
        let r = n.remove(NodeId(11)).unwrap();
        assert_eq!(
            r,
            Removed {
                index: 1,
                moved_from: Some(3)
            }
        );
        assert_eq!(n.ids(), &[NodeId(10), NodeId(13), NodeId(12)]);
        // Neighbour 13 was in the mask at index 3; it is now at index 1.
        assert_eq!(remap_mask(mask, r), bit(1));
        assert_eq!(n.all_mask(), 0b111);
    }

    #[test]
    fn remove_last_moves_nothing() {
        let mut n = Neighbors::default();
        n.push(NodeId(1));
        n.push(NodeId(2));
        let r = n.remove(NodeId(2)).unwrap();
        assert_eq!(r.moved_from, None);
        assert_eq!(remap_mask(0b11, r), 0b01);
        assert!(n.remove(NodeId(2)).is_none());
    }

    #[test]
    fn bits_iterates_set_bits() {
        assert_eq!(bits(0b1010_0001).collect::<Vec<_>>(), vec![0, 5, 7]);
        assert_eq!(bits(0).count(), 0);
        assert_eq!(bits(u64::MAX).count(), 64);
    }
}
