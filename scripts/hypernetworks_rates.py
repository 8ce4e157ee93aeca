#!/usr/bin/env python3
"""What the learned components of the hypernetwork study learned (docs/hypernetworks.md,
"Sanity comparison"): from each run's metrics.jsonl, the spread of the rates they set.

Usage: python3 scripts/hypernetworks_rates.py runs/study-hypernetworks
Prints, per benchmark and learned variant, over the study seeds: for the hypernetwork
policy, each client's rate multiplier per group (its group rate over the base rate) in
the last round — median, 10th and 90th percentile over clients, and the mean over seeds
of each; for FedL2P, the fine-tuning multipliers r_g of the last meta-step, the same way.
"""
import json
import os
import statistics
import sys
import tomllib  # Python 3.11+


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def last_line(path):
    with open(path) as f:
        lines = [l for l in f if l.strip()]
    return json.loads(lines[-1])


def base_lr(run):
    with open(os.path.join(run, "config.toml"), "rb") as f:
        return float(tomllib.load(f)["client"]["lr"])


def multipliers(run, variant):
    line = last_line(os.path.join(run, "metrics.jsonl"))
    groups = line["groups"]
    out = {g: [] for g in groups}
    if variant.startswith("hypernet"):
        lr = base_lr(run)
        for c in line["clients"]:
            for g, r in zip(groups, c["group_rates"]):
                out[g].append(r / lr)
    else:
        for c in line["clients"]:
            rep = (c.get("report_ext") or {}).get("fedl2p-report")
            if rep:
                for g, r in zip(groups, rep["multipliers"]):
                    out[g].append(r)
    return out


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "runs/study-hypernetworks"
    runs = os.path.join(root, "runs")
    for bench in sorted(os.listdir(runs)):
        for variant in sorted(os.listdir(os.path.join(runs, bench))):
            if not (variant.startswith("hypernet") or variant == "fedl2p"):
                continue
            per_group = {}
            vdir = os.path.join(runs, bench, variant)
            for s in sorted(os.listdir(vdir)):
                for g, xs in multipliers(os.path.join(vdir, s), variant).items():
                    if xs:
                        per_group.setdefault(g, []).append(
                            (pct(xs, 0.1), statistics.median(xs), pct(xs, 0.9)))
            for g, rows in per_group.items():
                p10, med, p90 = (statistics.mean(r[i] for r in rows) for i in range(3))
                print(f"{bench:14} {variant:24} {g:10} p10 {p10:.3f}  median {med:.3f}  "
                      f"p90 {p90:.3f}  ({len(rows)} seeds)")


if __name__ == "__main__":
    main()
