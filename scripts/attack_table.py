#!/usr/bin/env python3
"""The attack table (markdown) of docs/privacy.md from runs/attack/*/summary.json
(scripts/attack-table.sh): final global accuracy, mean ± standard error over the paired
seeds, per attack (rows) and defence (columns), for each rate policy."""
import json, os, statistics, sys

OUT = sys.argv[1] if len(sys.argv) > 1 else "runs/attack"
DEFENCES = ["mean", "median", "trimmed", "krum", "multikrum", "bulyan", "normbound"]
ATTACKS = ["none", "sign-flip", "scale", "random", "label-flip"]
POLICIES = ["constant", "by-data-size"]


def acc(name):
    p = os.path.join(OUT, name, "summary.json")
    if not os.path.exists(p):
        return None
    return json.load(open(p))["global"]["accuracy"]


def seeds():
    s = set()
    for d in os.listdir(OUT):
        if "-seed" in d and os.path.isdir(os.path.join(OUT, d)):
            s.add(int(d.rsplit("-seed", 1)[1]))
    return sorted(s)


def cell(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    m = statistics.mean(xs)
    se = statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else 0.0
    return f"{100*m:.1f} ± {100*se:.1f}"


def main():
    ss = seeds()
    for pol in POLICIES:
        print(f"\n**policy = {pol}** ({len(ss)} seeds: {', '.join(map(str, ss))}; accuracy %, mean ± SE)\n")
        print("| attack | " + " | ".join(DEFENCES) + " |")
        print("|---|" + "---:|" * len(DEFENCES))
        for a in ATTACKS:
            row = [cell([acc(f"{pol}-{a}-{d}-seed{s}") for s in ss]) for d in DEFENCES]
            print(f"| {a} | " + " | ".join(row) + " |")
    # Paired effect of personalised rates: by-data-size − constant, per cell.
    print("\n**by-data-size − constant** (paired by seed; accuracy points, mean ± SE)\n")
    print("| attack | " + " | ".join(DEFENCES) + " |")
    print("|---|" + "---:|" * len(DEFENCES))
    for a in ATTACKS:
        row = []
        for d in DEFENCES:
            diffs = []
            for s in ss:
                x, y = acc(f"by-data-size-{a}-{d}-seed{s}"), acc(f"constant-{a}-{d}-seed{s}")
                if x is not None and y is not None:
                    diffs.append(x - y)
            if len(diffs) > 1:
                m = statistics.mean(diffs)
                se = statistics.stdev(diffs) / len(diffs) ** 0.5
                row.append(f"{100*m:+.1f} ± {100*se:.1f}")
            else:
                row.append("–")
        print(f"| {a} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
