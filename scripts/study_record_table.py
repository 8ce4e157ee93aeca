"""Tables and verdict of the study of record (docs/study-rates.md) from the outputs of
`fedpace study` (one directory per benchmark and model under OUT, as
scripts/study-record.sh writes them).

    python3 scripts/study_record_table.py OUT

Prints, per benchmark and model: every variant against the tuned uniform rate (the
study's own paired statistics, read from differences.csv); then, from results.csv, every
method with `normalize` off against the same method with `normalize = "auto"`, paired by
seed; then the issue's two bars checked on what was run. Accuracies in points (×100).
Standard library only.
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys

METRICS = [
    ("test_personalized_mean", "personalised mean"),
    ("test_personalized_worst10", "worst-10 %"),
    ("test_global_accuracy", "global"),
]


def f(x: str) -> float:
    return float(x) if x not in ("", "nan", "NaN") else math.nan


# --- Student t distribution (two-sided p), via the regularised incomplete beta function.
def _betacf(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        de = d * c
        h *= de
        if abs(de - 1.0) < 1e-14:
            break
    return h


def _ibeta(a: float, b: float, x: float) -> float:
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1 - x) / b


def p_t(t: float, df: int) -> float:
    """Two-sided p of Student's t with df degrees of freedom."""
    if not math.isfinite(t):
        return 0.0 if t == t else math.nan
    return _ibeta(df / 2.0, 0.5, df / (df + t * t))


def paired(a: dict[int, float], b: dict[int, float]) -> dict:
    """b − a over the seeds both have: mean, se, t, p, wins/ties/losses."""
    keys = sorted(set(a) & set(b))
    d = [b[k] - a[k] for k in keys if math.isfinite(a[k]) and math.isfinite(b[k])]
    n = len(d)
    if n < 2:
        return {"n": n, "diff": math.nan, "se": math.nan, "t": math.nan, "p": math.nan, "w": 0, "l": 0}
    m = sum(d) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / (n - 1))
    se = sd / math.sqrt(n)
    t = m / se if se > 0 else (0.0 if m == 0 else math.copysign(math.inf, m))
    p = p_t(t, n - 1) if se > 0 else (1.0 if m == 0 else 0.0)
    return {"n": n, "diff": m, "se": se, "t": t, "p": p, "w": sum(x > 0 for x in d), "l": sum(x < 0 for x in d)}


def pts(x: float) -> str:
    return "—" if not math.isfinite(x) else f"{100 * x:.2f}".replace("-", "−")


def signed(x: float) -> str:
    return ("+" if x >= 0 else "") + pts(x)


def rates(configs: set[str]) -> str:
    """The base rates of a variant's runs, short (`client.lr=0.00948…` → 0.00949)."""
    out = []
    for c in sorted(configs):
        for part in c.split():
            k, _, v = part.partition("=")
            out.append(f"{float(v):.3g}" if k == "client.lr" else part)
    return ", ".join(out) or "default"


def sig(diff: float, se: float) -> str:
    if not (math.isfinite(diff) and math.isfinite(se)):
        return ""
    return " **" if abs(diff) > 2 * se and se > 0 or (se == 0 and diff != 0) else ""


def pval(p: float) -> str:
    return "—" if not math.isfinite(p) else (f"{p:.3f}" if p >= 0.001 else f"{p:.0e}")


def load(study: str):
    with open(os.path.join(study, "results.csv")) as fh:
        runs = list(csv.DictReader(fh))
    with open(os.path.join(study, "differences.csv")) as fh:
        diffs = list(csv.DictReader(fh))
    with open(os.path.join(study, "summary.json")) as fh:
        summary = json.load(fh)
    return runs, diffs, summary


def per_seed(runs, variant: str, metric: str) -> dict[int, float]:
    return {int(r["seed"]): f(r[metric]) for r in runs if r["variant"] == variant and not r["error"]}


def main() -> None:
    out = sys.argv[1]
    order = ["synthetic-lr", "mnist-lr", "fmnist-lr", "synthetic-mlp", "mnist-mlp", "fmnist-mlp"]
    studies = sorted(
        (d for d in os.listdir(out) if os.path.exists(os.path.join(out, d, "differences.csv"))),
        key=lambda d: (order.index(d) if d in order else len(order), d),
    )
    verdict_free: dict[str, dict[str, tuple]] = {}
    verdict_equal: dict[str, dict[str, tuple]] = {}
    for name in studies:
        study = os.path.join(out, name)
        runs, diffs, summary = load(study)
        variants = summary["variants"]
        tuned = {v["variant"]: v for v in variants}
        bench = variants[0]["benchmark"]
        seeds = sorted({int(r["seed"]) for r in runs})
        print(f"\n### {bench}\n")
        print(
            f"Report seeds {seeds[0]}–{seeds[-1]} ({len(seeds)}); baseline: uniform (tuned). Mean ± se over seeds; "
            "Δ = variant − uniform, paired by seed, ± se of the paired difference, "
            "p of the paired t-test, seeds better/worse; ** where |Δ| > 2 se.\n"
        )
        print(
            "| variant | tuning (client-epochs) | base rate | client-epochs / run | personalised mean | Δ pers. mean | worst-10 % | Δ worst-10 % | global | Δ global |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        dd = {(x["variant"], x["metric"]): x for x in diffs}
        for v in variants:
            vn = v["variant"]
            vr = [r for r in runs if r["variant"] == vn]
            conf = sorted({r["configuration"] for r in vr})
            lr = rates(set(conf))
            cost = sum(f(r["cost"]) for r in vr) / max(len(vr), 1)
            spent = v.get("tuning_spent", 0)
            cells = [vn, f"{spent:.0f}" if spent else "0 (untuned)", lr, f"{cost:.0f}"]
            for metric, _ in METRICS:
                x = dd.get((vn, metric))
                if x is None:
                    cells += ["—", "—"]
                    continue
                mean = f"{pts(f(x['mean']))} ± {pts(f(x['se']))}"
                if vn == "uniform":
                    cells += [mean, "—"]
                    continue
                d, se = f(x["diff"]), f(x["diff_se"])
                cell = f"{signed(d)} ± {pts(se)}{sig(d, se)} (p {pval(f(x['p_t']))}; {x['wins']}+/{x['losses']}−)"
                if x["worst_rule_ok"] == "false" and x["bootstrap_diff_low"]:
                    cell += f" [boot {pts(f(x['bootstrap_diff_low']))}, {pts(f(x['bootstrap_diff_high']))}]"
                cells += [mean, cell]
                if metric == "test_personalized_mean":
                    (verdict_free if not spent else verdict_equal).setdefault(vn, {})[bench] = (d, se)
                elif metric == "test_personalized_worst10" and spent:
                    verdict_equal[vn][bench] = verdict_equal[vn][bench] + (d, se)
            print("| " + " | ".join(cells) + " |")
        rule = [x for x in diffs if x["metric"] == "test_personalized_worst10" and x["worst_units"]]
        if rule:
            u = min(int(x["worst_units"]) for x in rule)
            s = min(int(x["worst_min_samples"]) for x in rule)
            ok = all(x["worst_rule_ok"] == "true" for x in rule)
            print(
                f"\nWorst-10 % rests on at least {u} clients with at least {s} test samples each"
                + (" (the rule holds for every variant)." if ok else " (below the rule for some variant: bootstrap interval shown).")
            )
        # normalize off vs auto, paired by seed
        names = [v["variant"] for v in variants]
        pairs = [(n, n + "-off") for n in names if n + "-off" in names]
        if "fednova" in names:
            pairs.append(("uniform", "fednova"))
        print(f"\n#### {bench}: `normalize` off − `normalize = \"auto\"` (same method, same seeds)\n")
        print("| method | base rates (auto / off) | Δ personalised mean | Δ worst-10 % | Δ global |")
        print("|---|---|---|---|---|")
        for a, b in pairs:
            ca = rates({r["configuration"] for r in runs if r["variant"] == a})
            cb = rates({r["configuration"] for r in runs if r["variant"] == b})
            cells = [f"fednova − uniform (auto)" if b == "fednova" else a, f"{ca} / {cb}"]
            for metric, _ in METRICS:
                p = paired(per_seed(runs, a, metric), per_seed(runs, b, metric))
                if p["n"] < 2:
                    cells.append("—")
                    continue
                cells.append(
                    f"{signed(p['diff'])} ± {pts(p['se'])}{sig(p['diff'], p['se'])} (p {pval(p['p'])}; {p['w']}+/{p['l']}−)"
                )
            print("| " + " | ".join(cells) + " |")
    print("\n### The bars\n")
    # The bars are judged on the three benchmarks with logistic regression (run for every
    # variant); other models are listed beside them.
    seen = {b for v in list(verdict_free.values()) + list(verdict_equal.values()) for b in v}
    benches = [b for b in order if b in seen and b.endswith("-lr")]
    others = [b for b in order if b in seen and not b.endswith("-lr")]
    print(f"Judged on {', '.join(benches)}" + (f"; {', '.join(others)} shown beside them, not judged." if others else ".") + "\n")
    print("Tuning-free (zero budget) within 0.5 points of tuned uniform on personalised mean (Δ ≥ −0.50):\n")
    for v, per in sorted(verdict_free.items()):
        marks = [f"{b}: {signed(per[b][0])} ± {pts(per[b][1])} {'yes' if per[b][0] >= -0.005 else 'no'}" for b in benches + others if b in per]
        allok = all(b in per and per[b][0] >= -0.005 for b in benches)
        print(f"* {v}: " + "; ".join(marks) + f" → {'MEETS' if allok else 'misses'} the bar")
    print("\nEqual budget: beats tuned uniform on personalised mean AND worst-10 % by > 2 se, on ≥ 2 benchmarks:\n")
    for v, per in sorted(verdict_equal.items()):
        wins = []
        marks = []
        for b in benches + others:
            if b not in per or len(per[b]) < 4:
                continue
            dm, sm, dw, sw = per[b]
            ok = dm > 2 * sm and dw > 2 * sw
            if b in benches:
                wins.append(ok)
            marks.append(f"{b}: {signed(dm)} ± {pts(sm)} / {signed(dw)} ± {pts(sw)} {'yes' if ok else 'no'}")
        print(f"* {v}: " + "; ".join(marks) + f" → {'MEETS' if sum(wins) >= 2 else 'misses'} the bar")


if __name__ == "__main__":
    main()
