# 2026-12-01, 2-core development machine (shared), release build with the client port and
# the nats-server column (issue 16), after the bench learned to restart a cluster whose
# node failed its start.
target/release/plumcore bench compare --duration 3s --publishers 4 --probe-duration 3s \
  --max-rate 256000 --json bench/results/app/compare-nats-2core-run3.json \
  > bench/results/app/compare-nats-2core-run3.txt 2> bench/results/app/compare-nats-2core-run3.log
