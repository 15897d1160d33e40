#!/usr/bin/env bash
# Issue 12's cold-run check: `.ci/run` RUNS times in a row (default 3), each in a fresh
# clone of this repository's HEAD with a cold target dir, while another build loads the
# machine (a looping `cargo build -j1` of LOAD_REV, default HEAD~1, in its own clone).
# Prints one line per run (commit, exit code, seconds, load) and keeps each log in OUT.
#   tools/cold-ci.sh [RUNS] [LOAD_REV] [OUT]
set -u
repo=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-3}
load_rev=${2:-HEAD~1}
out=${3:-/tmp/cold-ci}
work=$(mktemp -d /tmp/cold-ci.XXXXXX)
mkdir -p "$out"
git clone -q "$repo" "$work/loader" && git -C "$work/loader" checkout -q "$load_rev"
(
  cd "$work/loader"
  while true; do
    CARGO_TARGET_DIR="$work/loader-target" cargo build -j1 --workspace >/dev/null 2>&1
    rm -rf "$work/loader-target"
  done
) &
loader=$!
trap 'kill $loader 2>/dev/null; pkill -f "$work/loader-target"; rm -rf "$work"' EXIT
for i in $(seq 1 "$runs"); do
  rm -rf "$work/run"
  git clone -q "$repo" "$work/run"
  rev=$(git -C "$work/run" rev-parse --short HEAD)
  start=$(date +%s)
  (cd "$work/run" && CI=true bash .ci/run) >"$out/run$i.log" 2>&1
  rc=$?
  secs=$(($(date +%s) - start))
  tests=$(grep '^test result' "$out/run$i.log" | awk '{p += $4; f += $6} END {print p " passed, " f " failed"}')
  echo "cold run $i at $rev: rc=$rc, $secs s, $tests, load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/summary.txt"
  rm -rf "$work/run"
done
