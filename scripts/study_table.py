#!/usr/bin/env python3
"""Aggregates scripts/study-rates.sh's runs into the markdown table of docs/study-rates.md.

For each data set and variant, the base rate is chosen from the grid by the mean (over
seeds) final personalised accuracy; the row reports that rate and, at it, the mean ± std
over seeds of the mean and worst-10 % personalised accuracy and of the global accuracy.
"""
import json, os, re, statistics, sys

root = sys.argv[1]
for ds in ("synthetic", "mnist"):
    d = os.path.join(root, ds)
    if not os.path.isdir(d):
        continue
    print(f"\n### {ds}\n")
    print("| variant | best base lr | personalised mean | personalised worst-10 % | global | runs failed |")
    print("|---|---|---|---|---|---|")
    rows = []
    for name in sorted(os.listdir(d)):
        by_lr, failed = {}, 0
        for run in os.listdir(os.path.join(d, name)):
            m = re.match(r"lr([0-9.e-]+)-seed(\d+)$", run)
            if not m:
                continue
            p = os.path.join(d, name, run, "summary.json")
            if not os.path.exists(p):
                failed += 1
                continue
            s = json.load(open(p))
            by_lr.setdefault(float(m.group(1)), []).append(
                (s["personalized"]["mean_accuracy"], s["personalized"]["worst10_accuracy"], s["global"]["accuracy"]))
        if not by_lr:
            continue
        best = max(by_lr, key=lambda lr: statistics.mean(r[0] for r in by_lr[lr]))
        rs = by_lr[best]
        f = lambda i: f"{100*statistics.mean(r[i] for r in rs):.2f} ± {100*(statistics.pstdev([r[i] for r in rs])):.2f}"
        rows.append((name, best, f(0), f(1), f(2), failed, len(rs)))
    order = lambda r: (r[0] != "uniform", r[0])
    for name, best, pm, pw, g, failed, n in sorted(rows, key=order):
        print(f"| {name} | {best:g} | {pm} | {pw} | {g} | {failed} |")
