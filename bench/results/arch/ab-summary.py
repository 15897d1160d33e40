#!/usr/bin/env python3
"""Table of an ab-compare.sh output folder: each run of each build, the medians, and
new ÷ old.  Usage: ab-summary.py DIR"""
import json
import statistics as st
import sys

d = sys.argv[1]
rows = {"old": [], "new": []}
print("| run | build | blast msg/s | raw loop pkt/s | msg/s ÷ raw pkt/s | msg per shard-CPU-s "
      "| cluster p50 µs | p99 µs | reliability |")
print("|---|---|---|---|---|---|---|---|---|")
for i in (1, 2, 3):
    for w in ("old", "new"):
        b = json.load(open(f"{d}/blast-{w}-{i}.json"))
        c = json.load(open(f"{d}/cluster-{w}-{i}.json"))["median"]
        r = (b["median_plumcore_msgs_per_s"], b["median_raw_packets_per_s"],
             b["median_ratio_vs_raw"], b["median_msgs_per_shard_cpu_s"],
             c["p50_us"], c["p99_us"], c["reliability"])
        rows[w].append(r)
        print(f"| {i} | {w} | {r[0]:,.0f} | {r[1]:,.0f} | {r[2]:.2f} | {r[3]:,.0f} "
              f"| {r[4]:,.0f} | {r[5]:,.0f} | {r[6]} |")
med = {w: [st.median(c) for c in zip(*rows[w])] for w in rows}
for w in ("old", "new"):
    m = med[w]
    print(f"| **median** | {w} | {m[0]:,.0f} | {m[1]:,.0f} | {m[2]:.2f} | {m[3]:,.0f} "
          f"| {m[4]:,.0f} | {m[5]:,.0f} | {m[6]} |")
o, n = med["old"], med["new"]
print(f"\nnew ÷ old, medians: blast msg/s {n[0] / o[0]:.2f}, msg/s ÷ raw {n[2] / o[2]:.2f}, "
      f"msg per shard-CPU-s {n[3] / o[3]:.2f}, cluster p50 {n[4] / o[4]:.2f}, p99 {n[5] / o[5]:.2f}")
