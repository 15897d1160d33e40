#!/bin/sh
# plumcore bench compare --duration 5s --no-search (5 nodes, 500/s), three runs of this
# branch; memberlist-plumtree 0.1.6 from bench/compare-memberlist built in release.
export MEMBERLIST_BENCH_BIN=/work/wt14/target-memberlist/release/compare-memberlist
NEW=/work/wt14/target/release/plumcore
for i in 1 2 3; do
  { uptime; echo "\$ MEMBERLIST_BENCH_BIN=... plumcore bench compare --duration 5s --no-search --json compare-new-run$i.json"; $NEW bench compare --duration 5s --no-search --json compare-new-run$i.json; } > compare-new-run$i.txt 2>&1
done
