#!/usr/bin/env bash
# Issue 12's no-regression check: the previous build (OLD) and this one (NEW) run
# alternately on the same machine, 3 runs each, of `plumcore-bench blast` and of the
# default `plumcore-bench cluster`. Each directory holds `plumcore` and `plumcore-bench`
# release binaries (cargo build --release --workspace --bins).
#   bench/results/arch/ab-compare.sh OLD_DIR NEW_DIR OUT_DIR
set -euo pipefail
old=$1 new=$2 out=$3
mkdir -p "$out"
for i in 1 2 3; do
  for which in old new; do
    dir=$old; [ "$which" = new ] && dir=$new
    echo "== run $i $which blast"
    "$dir/plumcore-bench" blast --duration 5s --runs 1 --json "$out/blast-$which-$i.json" \
      > "$out/blast-$which-$i.txt" 2>&1 || echo "blast $which $i failed: rc $?"
    echo "== run $i $which cluster"
    "$dir/plumcore-bench" cluster --runs 1 --json "$out/cluster-$which-$i.json" \
      > "$out/cluster-$which-$i.txt" 2>&1 || echo "cluster $which $i failed: rc $?"
  done
done
