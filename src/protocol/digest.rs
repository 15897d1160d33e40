//! Anti-entropy digests: a compact summary of recently delivered message ids.
//!
//! One partition sees every `partitions`-th sequence number of an origin, so its ids
//! of one origin are `r, r + P, r + 2P, ...`. A [`DigestBlock`] covers 64 consecutive
//! ones of those as a bitmap: 24 bytes for up to 64 ids. The builder groups ids by
//! partition (a digest frame is routed like any per-partition frame) and stops at a
//! block bound, so a digest round costs bounded bytes however fast messages arrive.

use rustc_hash::FxHashMap;

use crate::ids::{MessageId, NodeId};
use crate::wire::{DigestBlock, DIGEST_MAX_BLOCKS};

/// Collects ids into blocks, at most `max_blocks` of them.
pub(super) struct DigestBuilder {
    partitions: u32,
    max_blocks: usize,
    index: FxHashMap<(u16, NodeId, u64), usize>,
    blocks: Vec<(u16, DigestBlock)>,
}

impl DigestBuilder {
    pub(super) fn new(partitions: u32, max_blocks: usize) -> Self {
        Self {
            partitions,
            max_blocks,
            index: FxHashMap::default(),
            blocks: Vec::new(),
        }
    }

    /// Adds `id`; false (and nothing added) when it needs a new block and the bound is
    /// reached.
    pub(super) fn add(&mut self, id: MessageId) -> bool {
        let p = u64::from(self.partitions);
        let partition = id.partition(self.partitions);
        // id.seq = k * P + r; the block holds k in [64 b, 64 b + 63].
        let k = id.seq / p;
        let block = k / 64;
        let bit = 1u64 << (k % 64);
        let key = (partition, id.origin, block);
        if let Some(&i) = self.index.get(&key) {
            self.blocks[i].1.bits |= bit;
            return true;
        }
        if self.blocks.len() >= self.max_blocks {
            return false;
        }
        self.index.insert(key, self.blocks.len());
        self.blocks.push((
            partition,
            DigestBlock {
                origin: id.origin,
                first: block * 64 * p + id.seq % p,
                bits: bit,
            },
        ));
        true
    }

    /// Blocks so far.
    pub(super) fn len(&self) -> usize {
        self.blocks.len()
    }

    /// The blocks grouped by partition (ascending), each group cut into frames of at
    /// most [`DIGEST_MAX_BLOCKS`].
    pub(super) fn finish(mut self) -> Vec<(u16, Vec<DigestBlock>)> {
        self.blocks.sort_by_key(|&(p, _)| p);
        let mut out: Vec<(u16, Vec<DigestBlock>)> = Vec::new();
        for (p, b) in self.blocks {
            match out.last_mut() {
                Some((q, v)) if *q == p && v.len() < DIGEST_MAX_BLOCKS => v.push(b),
                _ => out.push((p, vec![b])),
            }
        }
        out
    }
}

/// The ids a block stands for; ids whose seq would overflow are skipped (only a
/// forged block gets there).
pub(super) fn block_ids(block: DigestBlock, partitions: u32) -> impl Iterator<Item = MessageId> {
    let p = u64::from(partitions);
    (0..64u64)
        .filter(move |i| block.bits & (1 << i) != 0)
        .filter_map(move |i| {
            let seq = block.first.checked_add(i.checked_mul(p)?)?;
            Some(MessageId {
                origin: block.origin,
                seq,
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mid(origin: u64, seq: u64) -> MessageId {
        MessageId {
            origin: NodeId(origin),
            seq,
        }
    }

    #[test]
    fn blocks_expand_back_to_the_ids_added() {
        for partitions in [1u32, 4, 64] {
            let mut b = DigestBuilder::new(partitions, 1000);
            let mut ids: Vec<MessageId> = (0..500).map(|s| mid(7, s * 3 + 1)).collect();
            ids.extend((0..50).map(|s| mid(u64::MAX, u64::MAX - s)));
            for &id in &ids {
                assert!(b.add(id));
            }
            let mut back: Vec<MessageId> = Vec::new();
            for (partition, blocks) in b.finish() {
                assert!(blocks.len() <= DIGEST_MAX_BLOCKS);
                for block in blocks {
                    for id in block_ids(block, partitions) {
                        assert_eq!(id.partition(partitions), partition);
                        back.push(id);
                    }
                }
            }
            back.sort();
            ids.sort();
            assert_eq!(back, ids, "partitions {partitions}");
        }
    }

    #[test]
    fn a_steady_stream_costs_one_block_per_64_ids_of_a_partition() {
        let mut b = DigestBuilder::new(4, 1000);
        for s in 0..256 {
            assert!(b.add(mid(1, s)));
        }
        // 256 ids over 4 partitions = 64 per partition = one block each.
        assert_eq!(b.len(), 4);
        assert!(b.finish().iter().all(|(_, v)| v[0].bits == u64::MAX));
    }

    #[test]
    fn the_block_bound_holds() {
        let mut b = DigestBuilder::new(1, 2);
        assert!(b.add(mid(1, 0)));
        assert!(b.add(mid(2, 0)));
        assert!(!b.add(mid(3, 0)), "a third block is refused");
        assert!(b.add(mid(1, 5)), "an id in an existing block still fits");
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn forged_blocks_near_the_end_of_the_sequence_space_do_not_wrap() {
        let block = DigestBlock {
            origin: NodeId(1),
            first: u64::MAX - 1,
            bits: u64::MAX,
        };
        let ids: Vec<MessageId> = block_ids(block, 64).collect();
        assert_eq!(ids, vec![mid(1, u64::MAX - 1)]);
    }
}
