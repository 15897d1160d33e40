#!/bin/bash
# partition sweep with gap accounting
B=/work/sweep/plumcore
OUT=/work/sweep/out.txt
echo "command: plumcore sim --nodes 1000 --messages 400 --partition-heal --split-ms S --seed N [--origins 20] (release build $(cd /work/main && git rev-parse --short HEAD)), 2-core machine" > $OUT
for extra in "" "--origins 20"; do
for S in 5000 30000 55000 120000; do for seed in 1 2 3; do
  $B sim --nodes 1000 --messages 400 --partition-heal --split-ms $S --seed $seed $extra --json > /work/sweep/r.json 2>/dev/null
  python3 - "$S" "$seed" "$extra" >> $OUT <<'PY'
import json,sys
r=json.load(open('/work/sweep/r.json'))
S,seed,extra=sys.argv[1:4]
keys=['messages','closing_messages','partition_messages','partition_reliability','duplicate_deliveries','gap_reported','gap_missed','false_gaps','unrecovered','before_first_contact','remerge_seconds','wall_seconds']
print(f"split_ms {S} seed {seed} {extra}".strip()+": "+"; ".join(f"{k} {r.get(k)}" for k in keys))
PY
done; done; done
echo done >> $OUT
