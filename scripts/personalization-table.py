#!/usr/bin/env python3
"""Summarises runs named <config>-s<seed> under a directory: per config, mean ± std over
seeds of the final and the best (max over evaluated rounds) personalised accuracy
(sample-weighted and client mean), plus std / worst-10 % / best-10 % at the last round."""
import json, os, re, statistics as st, sys
from collections import defaultdict

root = sys.argv[1]
runs = defaultdict(list)
for d in sorted(os.listdir(root)):
    m = re.match(r"(.+)-s(\d+)$", d)
    path = os.path.join(root, d, "metrics.jsonl")
    if not m or not os.path.exists(path):
        continue
    ev = [json.loads(l)["eval"] for l in open(path) if '"eval":{' in l]
    ev = [e for e in ev if e]
    if ev:
        runs[m.group(1)].append(ev)

def ms(xs):
    xs = [100 * x for x in xs]
    return f"{st.mean(xs):.2f} ± {st.stdev(xs) if len(xs) > 1 else 0:.2f}"

print("| config | seeds | final weighted | best weighted | final mean | std | worst 10 % | best 10 % | global (final) |")
print("|---|---|---|---|---|---|---|---|---|")
for cfg, evs in runs.items():
    last = [e[-1] for e in evs]
    print(f"| {cfg} | {len(evs)} | {ms([e['personalized_weighted_accuracy'] for e in last])} "
          f"| {ms([max(x['personalized_weighted_accuracy'] for x in e) for e in evs])} "
          f"| {ms([e['personalized_mean_accuracy'] for e in last])} "
          f"| {ms([e['personalized_std_accuracy'] for e in last])} "
          f"| {ms([e['personalized_worst10_accuracy'] for e in last])} "
          f"| {ms([e['personalized_best10_accuracy'] for e in last])} "
          f"| {ms([e['global_accuracy'] for e in last])} |")
