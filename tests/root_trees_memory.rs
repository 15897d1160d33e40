//! Measures what the per-root trees cost, with a counting global allocator, and checks
//! the bound the `max_roots` documentation states (10,000 roots over 64 partitions in
//! a few MB). Run with `--nocapture` to see the figures bench/results/HISTORY.md quotes.

use std::time::Duration;

use plumcore::ids::NodeId;
use plumcore::protocol::roots::RootTrees;

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static A: counting_alloc::Counting = counting_alloc::Counting;

/// Heap bytes per root once `roots` roots have a tree in each of `partitions`.
fn bytes_per_root(roots: u64, partitions: u32, max_roots: usize) -> (f64, f64) {
    let before = counting_alloc::live();
    let mut t = RootTrees::new(partitions, max_roots);
    for r in 0..roots {
        for p in 0..partitions {
            t.get_or_seed(Duration::ZERO, p as u16, NodeId(r * 7919 + 1), 0b101);
        }
    }
    let used = counting_alloc::live() - before;
    let n = t.len() as f64;
    (used as f64 / n, t.heap_bytes() as f64 / n)
}

#[test]
fn per_root_trees_fit_in_a_few_megabytes_and_stay_bounded() {
    for (roots, partitions) in [(10_000u64, 64u32), (10_000, 4), (1_000, 64), (16, 64)] {
        let (per_root, estimate) = bytes_per_root(roots, partitions, 10_000);
        println!(
            "{roots} roots x {partitions} partitions: {per_root:.0} bytes per root \
             ({:.2} MB), estimate {estimate:.0}",
            per_root * roots as f64 / 1e6
        );
        // One u64 per partition and a valid bit per root (an eighth of growth room),
        // plus the root table, which is sized for max_roots up front.
        let total = per_root * roots as f64;
        let bound = 9.2 * partitions as f64 * roots as f64 + 100.0 * 10_000.0;
        assert!(total <= bound, "{total} bytes for {roots} x {partitions}");
        // The gauge's estimate stays within a factor of two of the allocator.
        assert!(
            estimate >= per_root / 2.0 && estimate <= per_root * 2.0,
            "estimate {estimate} against {per_root} measured"
        );
    }
    let (per_root, _) = bytes_per_root(10_000, 64, 10_000);
    assert!(
        per_root * 10_000.0 < 8e6,
        "10,000 roots take {per_root} B each"
    );
    a_flood_of_roots_stays_within_max_roots();
}

/// Part of the test above: the allocator count is process-wide, so the measurements
/// must not run on parallel test threads.
fn a_flood_of_roots_stays_within_max_roots() {
    let before = counting_alloc::live();
    let mut t = RootTrees::new(64, 1_000);
    for r in 0..200_000u64 {
        t.get_or_seed(Duration::ZERO, (r % 64) as u16, NodeId(r), 1);
    }
    assert_eq!(t.len(), 1_000);
    assert_eq!(t.evictions(), 199_000);
    let used = counting_alloc::live() - before;
    assert!(
        used < 1_000 * (64 * 9 + 200),
        "{used} bytes for 1,000 roots"
    );
}
