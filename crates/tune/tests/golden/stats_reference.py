"""Golden numbers for crates/tune/src/stats.rs, from scipy.stats.

Run: python3 -m venv venv && venv/bin/pip install numpy scipy
     venv/bin/python stats_reference.py > stats.txt
Version used: scipy 1.17.1 (wilcoxon's method="auto" rules changed in 1.13 and 1.15).
Each line: name | differences | mean se t p_t | W p_w | wins losses p_sign
"""
import numpy as np
from scipy import stats

rng = np.random.default_rng(12)
cases = {
    "small-no-ties": [0.5, -0.2, 1.3, 0.8, 0.1, -0.05, 0.9],
    "ten-seeds-gain": list(np.round(rng.normal(0.4, 0.6, 10), 6)),
    "ten-seeds-null": list(np.round(rng.normal(0.0, 1.0, 10), 6)),
    "ties-and-zero-small": [1.0, -1.0, 2.0, 2.0, 0.0, 3.0, 0.5],
    "ties-n13": [0.5, 0.5, -0.5, 1.0, 2.0, -1.0, 1.5, 0.25, 0.25, 3.0, -0.25, 1.0, 0.75],
    "ties-n20-normal": list(np.round(rng.normal(0.2, 1.0, 20), 1)),
    "n60-no-ties-normal": list(np.round(rng.normal(0.1, 1.0, 60), 9)),
    "all-positive-n12": [0.1 * (i + 1) for i in range(12)],
    "two-pairs": [0.3, 0.1],
    "identical": [0.2, 0.2, 0.2, 0.2],
    "far-tail": [5.0 + 0.01 * i for i in range(30)],
}

def f(x):
    return "nan" if x is None or (isinstance(x, float) and np.isnan(x)) else repr(float(x))

print(__doc__.strip().replace("\n", "\n# ").join(["# ", ""]))
for name, d in cases.items():
    d = np.array(d, dtype=float)
    mean = d.mean()
    se = d.std(ddof=1) / np.sqrt(len(d))
    with np.errstate(all="ignore"):
        t = stats.ttest_rel(d, np.zeros_like(d))
    w = stats.wilcoxon(d)
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    ps = stats.binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
    print(" | ".join([
        name,
        " ".join(repr(float(v)) for v in d),
        " ".join(f(v) for v in [mean, se, t.statistic, t.pvalue]),
        " ".join(f(v) for v in [w.statistic, w.pvalue]),
        f"{wins} {losses} {f(ps)}",
    ]))
