# 2026-12-01, 2-core development machine (shared; load average about 2 before the run),
# release build of commit with the client port (issue 16), one run:
target/release/plumcore bench compare --duration 3s --publishers 4 --probe-duration 3s \
  --max-rate 128000 --json bench/results/app/compare-nats-2core.json \
  > bench/results/app/compare-nats-2core.txt
# plumcore publishes through each node's NATS client port (async-nats, --publish nats, the
# default); memberlist-plumtree through its own in-process API (bench/compare-memberlist).
