#!/usr/bin/env python3
"""Summarises runs named <config>-s<seed> under a directory: per config, mean ± sample
standard deviation over seeds of the final and the best (max over evaluated rounds)
personalised accuracy (sample-weighted and client mean), plus std / worst-10 % / best-10 %
at the last round. `--paired A B …`: per seed, and the paired difference of each adjacent
pair, mean ± standard error."""
import json, os, re, statistics as st, sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stats import paired  # noqa: E402

root = sys.argv[1]
runs = defaultdict(list)
by_seed = defaultdict(dict)  # config -> seed -> best weighted accuracy
for d in sorted(os.listdir(root)):
    m = re.match(r"(.+)-s(\d+)$", d)
    path = os.path.join(root, d, "metrics.jsonl")
    if not m or not os.path.exists(path):
        continue
    ev = [json.loads(l)["eval"] for l in open(path) if '"eval":{' in l]
    ev = [e for e in ev if e]
    if ev:
        runs[m.group(1)].append(ev)
        by_seed[m.group(1)][int(m.group(2))] = max(x["personalized_weighted_accuracy"] for x in ev)

if len(sys.argv) > 3 and sys.argv[2] == "--paired":
    # Per seed (the same federation for every config), best weighted accuracy of each
    # config, and in how many seeds each adjacent pair of the given order holds.
    cfgs = sys.argv[3:]
    seeds = sorted(set.intersection(*(set(by_seed[c]) for c in cfgs)))
    print("| seed | " + " | ".join(cfgs) + " |")
    print("|---" * (len(cfgs) + 1) + "|")
    for s in seeds:
        print(f"| {s} | " + " | ".join(f"{100 * by_seed[c][s]:.2f}" for c in cfgs) + " |")
    for a, b in zip(cfgs, cfgs[1:]):
        d = paired(by_seed[b], by_seed[a])
        print(f"{a} > {b}: {d.better} of {d.n} seeds; mean difference "
              f"{100 * d.mean:+.2f} ± {100 * d.se:.2f} points (standard error)")
    sys.exit(0)

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
