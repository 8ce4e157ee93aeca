#!/usr/bin/env python3
"""Tables of scripts/study-rates.sh's runs (docs/study-rates.md).

    study_table.py OUT           the markdown tables
    study_table.py --best DIR    the base rate of DIR's selection runs (lr<r>-seed<s>) with
                                 the best mean personalised accuracy over seeds

For each data set and variant: the base rate chosen on the selection seeds; at that rate,
over the report seeds, mean ± sample standard deviation of the personalised mean and
worst-10 % accuracy and of the global accuracy; and the paired difference from the
baseline on the same seeds (uniform; for straggler-compensation, stragglers-uncompensated),
mean ± standard error, with the number of seeds where the variant is better / worse.
"""
import json
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stats import fmt_mean_sd, paired  # noqa: E402

RUN = re.compile(r"lr([0-9.e-]+)-seed(\d+)$")
BASELINE = {"straggler-compensation": "stragglers-uncompensated"}
LABEL = {"synthetic": "Synthetic(1,1)", "mnist": "MNIST, Dirichlet(α = 0.1)"}


def runs(d):
    """{(lr, seed): (personal mean, worst-10 %, global)} of the finished runs in d, and the
    number of runs that did not finish."""
    out, failed = {}, 0
    if not os.path.isdir(d):
        return out, failed
    for run in os.listdir(d):
        m = RUN.match(run)
        if not m:
            continue
        p = os.path.join(d, run, "summary.json")
        if not os.path.exists(p):
            failed += 1
            continue
        s = json.load(open(p))
        out[(float(m.group(1)), int(m.group(2)))] = (
            s["personalized"]["mean_accuracy"], s["personalized"]["worst10_accuracy"],
            s["global"]["accuracy"])
    return out, failed


def best_lr(select):
    by_lr = {}
    for (lr, _), r in select.items():
        by_lr.setdefault(lr, []).append(r[0])
    return max(by_lr, key=lambda lr: statistics.mean(by_lr[lr])) if by_lr else None


def seeds_text(seeds):
    seeds = sorted(seeds)
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds))


def table(root, ds):
    d = os.path.join(root, ds)
    rows = {}
    for name in sorted(os.listdir(d)):
        select, f1 = runs(os.path.join(d, name, "select"))
        lr = best_lr(select)
        if lr is None:
            continue
        report, f2 = runs(os.path.join(d, name, "report"))
        at = {seed: r for (l, seed), r in report.items() if l == lr}
        rows[name] = dict(lr=lr, at=at, failed=f1 + f2,
                          select_seeds={s for (_, s) in select})
    if not rows:
        return
    report_seeds = set().union(*(set(r["at"]) for r in rows.values()))
    select_seeds = set().union(*(r["select_seeds"] for r in rows.values()))
    print(f"\n### {LABEL.get(ds, ds)}\n")
    print(f"Base rate chosen on seeds {seeds_text(select_seeds)}; figures over seeds "
          f"{seeds_text(report_seeds)}: mean ± sample standard deviation (%), and the paired "
          "difference from the baseline (uniform; † stragglers-uncompensated) in points, mean ± "
          "standard error (seeds better+/worse−).\n")
    print("| variant | base lr | seeds | personalised mean | personalised worst-10 % | global "
          "| Δ personalised mean | Δ worst-10 % | Δ global | runs failed |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    order = sorted(rows, key=lambda n: (n != "uniform", n))
    for name in order:
        r = rows[name]
        vals = list(r["at"].values())
        cells = [fmt_mean_sd([v[i] for v in vals], 100) for i in range(3)]
        base = BASELINE.get(name, "uniform")
        if name == "uniform" or base not in rows:
            deltas = ["—"] * 3
        else:
            b = rows[base]["at"]
            mark = "†" if base != "uniform" else ""
            deltas = [paired({s: v[i] for s, v in b.items()},
                             {s: v[i] for s, v in r["at"].items()}).fmt(100) + mark
                      for i in range(3)]
        print(f"| {name} | {r['lr']:g} | {len(vals)} | {' | '.join(cells)} | {' | '.join(deltas)} "
              f"| {r['failed']} |")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--best":
        lr = best_lr(runs(sys.argv[2])[0])
        if lr is None:
            sys.exit(f"{sys.argv[2]}: no finished selection run")
        print(f"{lr:g}")
        return
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for ds in ("synthetic", "mnist"):
        if os.path.isdir(os.path.join(sys.argv[1], ds)):
            table(sys.argv[1], ds)


if __name__ == "__main__":
    main()
