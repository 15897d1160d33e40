//! Measures what the seen map really costs per remembered message, with a counting
//! global allocator, and checks the 32-byte budget. Run with `--nocapture` to see the
//! figures bench/results/HISTORY.md quotes.

use std::time::Duration;

use plumcore::ids::{MessageId, NodeId};
use plumcore::protocol::seen::{Seen, SeenMap};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static A: counting_alloc::Counting = counting_alloc::Counting;

/// Heap bytes per remembered message after `origins` origins each broadcast
/// `per_origin` messages, delivered with neighbouring pairs swapped (reordering inside
/// a window). Returns the measured cost and `SeenMap::heap_bytes`'s estimate per message.
fn bytes_per_message(origins: u64, per_origin: u64, partitions: u32, owned: u64) -> (f64, f64) {
    let before = counting_alloc::live();
    let mut m = SeenMap::new(
        partitions,
        owned,
        1 << 20,
        1 << 16,
        Duration::from_secs(60),
        Duration::from_secs(60),
    );
    let mut remembered = 0u64;
    let t = Duration::from_secs(1);
    for k in 0..per_origin {
        let seq = if k % 2 == 0 && k + 1 < per_origin {
            k + 1
        } else if k % 2 == 1 {
            k - 1
        } else {
            k
        };
        for o in 0..origins {
            let id = MessageId {
                origin: NodeId(o * 7919 + 1),
                seq,
            };
            if owned & (1 << id.partition(partitions)) != 0 && m.insert(t, id) == Seen::New {
                remembered += 1;
            }
        }
    }
    let used = counting_alloc::live() - before;
    let estimate = m.heap_bytes();
    drop(m);
    let n = remembered.max(1) as f64;
    (used as f64 / n, estimate as f64 / n)
}

/// One test, so no other test allocates while the counter is read.
#[test]
fn seen_map_costs_at_most_32_bytes_per_message() {
    println!("origins x msgs/origin, partitions owned/total -> measured (estimate) B/message");
    for (origins, per, partitions, owned) in [
        (1000u64, 1000u64, 1u32, 1u64),
        (10_000, 100, 1, 1),
        (1000, 1000, 64, 0xFFFF),
        (10_000, 10, 64, u64::MAX),
        (10_000, 2, 1, 1),
        (10_000, 1, 1, 1),
    ] {
        let (per_msg, estimate) = bytes_per_message(origins, per, partitions, owned);
        println!(
            "{origins:>6} x {per:>5}, {:>2}/{partitions:<2} -> {per_msg:>6.2} ({estimate:.2})",
            owned.count_ones().min(partitions)
        );
        if per >= 10 {
            assert!(
                per_msg <= 32.0,
                "{origins}x{per}: {per_msg:.2} bytes per message"
            );
        } else {
            // One or two messages per origin: the per-origin entry (key + 32-byte window +
            // hash-table slack) is the whole cost.
            assert!(
                per_msg <= 96.0,
                "{origins}x{per}: {per_msg:.2} bytes per message"
            );
        }
        // The estimate the node exports as a metric tracks the real figure.
        assert!(
            (estimate - per_msg).abs() <= per_msg * 0.25 + 0.5,
            "{estimate} vs {per_msg}"
        );
    }
}
