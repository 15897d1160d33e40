#!/bin/sh
# Same blast, with the shard's and the raw loop's thread CPU time measured (figures
# per CPU second), alternating old main (18661ac, with this branch's bench harness
# copied in) and this branch.
NEW=/work/wt14/target/release/plumcore
OLD=/work/old14/target/release/plumcore
run() { name=$1; bin=$2; shift 2; { uptime; echo "\$ plumcore bench blast --duration 5s --runs 3 $* --json blast-$name.json   ($name: $bin)"; "$bin" bench blast --duration 5s --runs 3 "$@" --json blast-$name.json ; } > blast-$name.txt 2>&1; }
run cpu-old-a $OLD
run cpu-new-a $NEW
run cpu-old-b $OLD
run cpu-new-b $NEW
run cpu-new-nogso $NEW --no-gso
run cpu-new-chaos $NEW --chaos
run cpu-new-ratelimit $NEW --rate-limit
