#!/usr/bin/env python3
"""The compression table (markdown) of docs/privacy.md from runs/compression-*/*/summary.json
(scripts/compression-table.sh): final global and personalised accuracy, mean ± standard
error over the seeds, bytes a client uploads per round, and the paired difference to no
compression (same seed: same data split, same cohorts) with its standard error."""
import json, os, sys

sys.path.insert(0, os.path.dirname(__file__))
from stats import mean_sd, paired  # noqa: E402

OUT = sys.argv[1] if len(sys.argv) > 1 else "runs/compression-logistic-regression"
CODECS = [
    ("none", "none"),
    ("qsgd8", "QSGD 8-bit"),
    ("qsgd4", "QSGD 4-bit"),
    ("topk10", "top-k 10 % + EF"),
    ("topk1", "top-k 1 % + EF"),
]


def load(codec):
    out = {}
    for d in os.listdir(OUT):
        if d.startswith(codec + "-seed"):
            p = os.path.join(OUT, d, "summary.json")
            if os.path.exists(p):
                out[int(d.rsplit("-seed", 1)[1])] = json.load(open(p))
    return out


def se(xs):
    m, s = mean_sd(xs)
    return m, s / len(xs) ** 0.5 if len(xs) > 1 else float("nan")


def main():
    runs = {c: load(c) for c, _ in CODECS}
    glob = {c: {k: v["global"]["accuracy"] for k, v in r.items()} for c, r in runs.items()}
    pers = {
        c: {k: v["personalized"]["mean_accuracy"] for k, v in r.items()} for c, r in runs.items()
    }
    up = {c: {k: v.get("upload_bytes_per_client") for k, v in r.items()} for c, r in runs.items()}
    seeds = sorted(runs["none"])
    print(f"{len(seeds)} paired seeds: {', '.join(map(str, seeds))}\n")
    print(
        "| compression | global acc. % | Δ global (paired) | personalised acc. % "
        "| Δ personalised (paired) | upload B/client/round | vs none |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    base_up = None
    for c, label in CODECS:
        if not runs[c]:
            continue
        g, gs = se(list(glob[c].values()))
        p, ps = se(list(pers[c].values()))
        u = [x for x in up[c].values() if x is not None]
        ub = sum(u) / len(u) if u else float("nan")
        if c == "none":
            base_up = ub
            dg = dp = "–"
        else:
            a, b = paired(glob["none"], glob[c]), paired(pers["none"], pers[c])
            dg = f"{100*a.mean:+.2f} ± {100*a.se:.2f}"
            dp = f"{100*b.mean:+.2f} ± {100*b.se:.2f}"
        ratio = f"{ub / base_up:.3f}×" if base_up else "–"
        print(
            f"| {label} | {100*g:.2f} ± {100*gs:.2f} | {dg} | {100*p:.2f} ± {100*ps:.2f} | {dp} "
            f"| {ub:,.0f} | {ratio} |"
        )


if __name__ == "__main__":
    main()
