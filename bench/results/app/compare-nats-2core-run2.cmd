# 2026-12-01, 2-core development machine (shared), release build with the client port and
# the nats-server column (issue 16). The run stopped in the flood search: a node exited
# during start-up (the bench now restarts the cluster once in that case).
target/release/plumcore bench compare --duration 3s --publishers 4 --probe-duration 3s \
  --max-rate 256000 --json bench/results/app/compare-nats-2core-run2.json \
  > bench/results/app/compare-nats-2core-run2.txt 2> bench/results/app/compare-nats-2core-run2.log
