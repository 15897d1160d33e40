#!/bin/sh
# Re-run while the machine was quiet (load ~1): blast old/new alternating with thread
# CPU, then compare (3 runs new, 1 run old). Binaries: this branch at 46b2fa5
# (release), old main 18661ac with this branch's bench harness.
NEW=/work/wt14/target/release/plumcore
OLD=/work/old14/target/release/plumcore
export MEMBERLIST_BENCH_BIN=/work/wt14/target-memberlist/release/compare-memberlist
run() { name=$1; bin=$2; shift 2; { uptime; echo "\$ plumcore bench blast --duration 5s --runs 3 $* --json blast-$name.json   ($name: $bin)"; "$bin" bench blast --duration 5s --runs 3 "$@" --json blast-$name.json ; } > blast-$name.txt 2>&1; }
run old-a $OLD
run new-a $NEW
run old-b $OLD
run new-b $NEW
for i in 1 2 3; do
  { uptime; echo "\$ plumcore bench compare --duration 5s --no-search --json compare-new-run$i.json"; $NEW bench compare --duration 5s --no-search --json compare-new-run$i.json; } > compare-new-run$i.txt 2>&1
done
{ uptime; echo "\$ plumcore bench compare --duration 5s --no-search --json compare-old-run1.json   (old main)"; $OLD bench compare --duration 5s --no-search --json compare-old-run1.json; } > compare-old-run1.txt 2>&1
