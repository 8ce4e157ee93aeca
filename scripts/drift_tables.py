#!/usr/bin/env python3
"""Tables (markdown) and SVG plots for docs/drift-and-systems.md from runs/drift/*/metrics.jsonl.

Spreads are sample standard deviations over seeds; comparisons are paired by seed (the
same federation for both methods): mean difference ± standard error, and in how many seeds
the method is better / worse. Seeds: $SEEDS (default "0 1 2").
"""
import json, os, statistics, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stats import mean_sd, paired  # noqa: E402

OUT = sys.argv[1] if len(sys.argv) > 1 else "runs/drift"
DOCS = sys.argv[2] if len(sys.argv) > 2 else "docs/img"
SEEDS = [int(s) for s in os.environ.get("SEEDS", "0 1 2").split()]


def curve(name):
    path = os.path.join(OUT, name, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    pts = []
    for line in open(path):
        r = json.loads(line)
        if r.get("eval"):
            pts.append((r["round"], r["eval"]["global_accuracy"], r["eval"]["global_loss"],
                        r.get("sim_seconds")))
    return pts


def ms(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    m, s = mean_sd(xs)
    s = 0.0 if len(xs) < 2 else s
    return f"{100*m:.1f} ± {100*s:.1f}" if m <= 1.0 else f"{m:.3f} ± {s:.3f}"


def loss_ms(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    m, s = mean_sd(xs)
    return f"{m:.3f} ± {0.0 if len(xs) < 2 else s:.3f}"


def final_acc(name):
    """{seed: final accuracy} of the runs name.format(seed=…) that finished."""
    out = {}
    for seed in SEEDS:
        c = curve(name.format(seed=seed))
        if c:
            out[seed] = c[-1][1]
    return out


def z2(prefix="z2"):
    rows = []
    methods = [("fedavg-drop", "FedAvg (stragglers dropped)"), ("fedprox-mu0", "FedProx μ=0 (partial work)"),
               ("fedprox-mu1", "FedProx μ=1 (partial work)")]
    print("| stragglers | method | final test acc % (r200) | best acc % | final test loss | max loss rise between evals "
          "| Δ final acc vs FedAvg-drop, points (paired) |")
    print("|---|---|---|---|---|---|---|")
    for s in ["0", "0.5", "0.9"]:
        for key, label in methods:
            fin, best, loss, rise = [], [], [], []
            for seed in SEEDS:
                c = curve(f"{prefix}-{key}-s{s}-seed{seed}")
                if not c:
                    continue
                fin.append(c[-1][1]); best.append(max(p[1] for p in c)); loss.append(c[-1][2])
                rise.append(max(0.0, max(b[2] - a[2] for a, b in zip(c, c[1:]))))
            base = final_acc(f"{prefix}-fedavg-drop-s{s}-seed{{seed}}")
            diff = "—" if key == "fedavg-drop" else paired(
                base, final_acc(f"{prefix}-{key}-s{s}-seed{{seed}}")).fmt(100)
            print(f"| {int(float(s)*100)} % | {label} | {ms(fin)} | {ms(best)} | {loss_ms(loss)} | {loss_ms(rise)} | {diff} |")
    plot_z2(prefix)


def per_seed(prefix):
    print("| stragglers | seed | accuracy % (FedAvg-drop / μ=0 / μ=1) | test loss (same order) |")
    print("|---|---|---|---|")
    for s in ["0", "0.5", "0.9"]:
        for seed in SEEDS:
            cs = [curve(f"{prefix}-{k}-s{s}-seed{seed}") for k in ["fedavg-drop", "fedprox-mu0", "fedprox-mu1"]]
            if not all(cs):
                continue
            acc = " / ".join(f"{100*c[-1][1]:.1f}" for c in cs)
            loss = " / ".join(f"{c[-1][2]:.2f}" for c in cs)
            print(f"| {int(float(s)*100)} % | {seed} | {acc} | {loss} |")


def rate_sum_spread(name):
    """Mean over rounds of the coefficient of variation of the clients' rate sums Λ_k = Σ_s η_k,s
    (η_k·τ_k for plain SGD), from the per-client records in metrics.jsonl."""
    path = os.path.join(OUT, name, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    cvs = []
    for line in open(path):
        r = json.loads(line)
        v = [c["effective_step"] for c in r.get("clients", []) if c.get("effective_step")]
        if len(v) > 1 and statistics.mean(v) > 0:
            # The spread of this round's clients (a whole population, not a sample of seeds).
            cvs.append(statistics.pstdev(v) / statistics.mean(v))
    return statistics.mean(cvs) if cvs else None


def z3():
    pols = [("constant", "constant lr 0.01"), ("dsneg", "by-data-size γ=−0.5"), ("dspos", "by-data-size γ=+0.5")]
    print("| local epochs | rate policy | spread of η_kτ_k (CV) | aggregation | final test acc % (r200) | final test loss "
          "| best acc % | Δ final acc vs FedAvg, points (paired) |")
    print("|---|---|---|---|---|---|---|---|")
    per = []
    for pol, plabel in pols:
        cv = [rate_sum_spread(f"z3-{pol}-fedavg-seed{seed}") for seed in SEEDS]
        cv = [c for c in cv if c is not None]
        cvs = f"{statistics.mean(cv):.2f}" if cv else "–"
        res = {}
        for algo, alabel in [("fedavg", "FedAvg (plain mean)"), ("fednova", "FedNova (normalised by Σ rates)")]:
            fin, loss, best = [], [], []
            for seed in SEEDS:
                c = curve(f"z3-{pol}-{algo}-seed{seed}")
                if c:
                    fin.append(c[-1][1]); loss.append(c[-1][2]); best.append(max(p[1] for p in c))
            res[algo] = (fin, loss)
            diff = "—" if algo == "fedavg" else paired(
                final_acc(f"z3-{pol}-fedavg-seed{{seed}}"),
                final_acc(f"z3-{pol}-fednova-seed{{seed}}")).fmt(100)
            print(f"| U{{2..5}} | {plabel} | {cvs} | {alabel} | {ms(fin)} | {loss_ms(loss)} | {ms(best)} | {diff} |")
        per.append((plabel, res))
    print()
    print("| rate policy | seed | accuracy % (FedAvg / FedNova) | test loss (FedAvg / FedNova) |")
    print("|---|---|---|---|")
    for plabel, res in per:
        (fa, la), (fn, ln) = res["fedavg"], res["fednova"]
        for k in range(min(len(fa), len(fn))):
            print(f"| {plabel} | {SEEDS[k]} | {100*fa[k]:.1f} / {100*fn[k]:.1f} | {la[k]:.3f} / {ln[k]:.3f} |")
    series = []
    for pol, plabel in pols:
        for algo in ["fedavg", "fednova"]:
            series.append((f"{plabel}, {algo}", mean_curve([f"z3-{pol}-{algo}-seed{k}" for k in SEEDS], 2)))
    svg_lines(series, "Synthetic(1,1), E_k ~ U{2..5}: FedAvg vs FedNova", "test loss (global model)",
              os.path.join(DOCS, "z3-loss.svg"), ymax=2.0)


COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"]


def svg_lines(series, title, ylabel, path, ymax=None):
    W, H, L, B, T, R = 420, 280, 50, 35, 25, 10
    xs = [x for _, pts in series for x, _ in pts]
    ys = [y for _, pts in series for _, y in pts]
    if not xs:
        return
    x0, x1 = 0, max(xs)
    y0, y1 = min(0.0, min(ys)), (ymax if ymax is not None else max(ys)) * 1.05
    fx = lambda x: L + (W - L - R) * (x - x0) / max(1e-9, x1 - x0)
    fy = lambda y: H - B - (H - B - T) * (min(y, y1) - y0) / max(1e-9, y1 - y0)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W/2}" y="15" text-anchor="middle">{title}</text>',
           f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/>',
           f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>',
           f'<text x="{W/2}" y="{H-5}" text-anchor="middle">round</text>',
           f'<text x="12" y="{H/2}" transform="rotate(-90 12 {H/2})" text-anchor="middle">{ylabel}</text>']
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        out.append(f'<text x="{L-4}" y="{fy(yv)+4:.1f}" text-anchor="end">{yv:.2f}</text>')
        xv = x0 + (x1 - x0) * i / 4
        out.append(f'<text x="{fx(xv):.1f}" y="{H-B+14}" text-anchor="middle">{xv:.0f}</text>')
    for i, (label, pts) in enumerate(series):
        d = " ".join(f"{fx(x):.1f},{fy(y):.1f}" for x, y in pts)
        out.append(f'<polyline fill="none" stroke="{COLORS[i % len(COLORS)]}" stroke-width="1.5" points="{d}"/>')
        out.append(f'<text x="{L+10}" y="{T+14+13*i}" fill="{COLORS[i % len(COLORS)]}">{label}</text>')
    out.append("</svg>")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").write("\n".join(out))


def mean_curve(names, idx):
    cs = [curve(n) for n in names]
    cs = [c for c in cs if c]
    if not cs:
        return []
    n = min(len(c) for c in cs)
    return [(cs[0][i][0], statistics.mean(c[i][idx] for c in cs)) for i in range(n)]


def plot_z2(prefix):
    for s in ["0", "0.5", "0.9"]:
        series = []
        for key, label in [("fedavg-drop", "FedAvg, drop"), ("fedprox-mu0", "FedProx μ=0"), ("fedprox-mu1", "FedProx μ=1")]:
            series.append((label, mean_curve([f"{prefix}-{key}-s{s}-seed{k}" for k in SEEDS], 2)))
        svg_lines(series, f"Synthetic(1,1), {int(float(s)*100)} % stragglers, normalize={'off' if prefix == 'z2' else 'auto'}",
                  "test loss (global model)", os.path.join(DOCS, f"{prefix}-loss-s{s}.svg"), ymax=4.0)


if __name__ == "__main__" and len(sys.argv) > 3 and sys.argv[3] == "z3":
    print("### Z #3\n"); z3(); sys.exit(0)

if __name__ == "__main__":
    print("### Z #2 (normalize=off)\n"); z2("z2"); print(); per_seed("z2"); print("\n### Z #2 (normalize=auto)\n"); z2("z2auto"); print(); per_seed("z2auto"); print("\n### Z #3\n"); z3()


def async_table():
    print("| algorithm | client rate decay | final test acc % | final test loss | simulated seconds at the end "
          "| Δ final acc, decay − no decay, points (paired) |")
    print("|---|---|---|---|---|---|")
    for algo in ["fedasync", "fedbuff"]:
        for decay in ["true", "false"]:
            acc, loss, sim = [], [], []
            for seed in SEEDS:
                c = curve(f"async-{algo}-decay{decay}-seed{seed}")
                if c:
                    acc.append(c[-1][1]); loss.append(c[-1][2]); sim.append(c[-1][3])
            diff = paired(final_acc(f"async-{algo}-decayfalse-seed{{seed}}"),
                          final_acc(f"async-{algo}-decaytrue-seed{{seed}}")).fmt(100) if decay == "true" else "—"
            print(f"| {algo} | {decay} | {ms(acc)} | {loss_ms(loss)} | {loss_ms(sim)} | {diff} |")
            print(f"|  | per seed | {' / '.join(f'{100*a:.1f}' for a in acc)} | {' / '.join(f'{l:.2f}' for l in loss)} | | |")


if __name__ == "__main__" and len(sys.argv) > 3 and sys.argv[3] == "async":
    print("\n### Async\n"); async_table()
