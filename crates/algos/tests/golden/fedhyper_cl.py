#!/usr/bin/env python3
"""FedHyper-CL's client rate factor, worked independently of the Rust code
(docs/learned-rates.md, "FedHyper"; docs/algorithms.md §C.4), in float64, no packages.

After every local step s >= 2 (u_s = y_s - y_{s-1}, the step just taken):
    gamma_s = min(cap, 1 + c * <u_s, prev_agg> + <u_s, u_{s-1}>)
    b      <- clip(gamma_s * b, lo, hi)
from b = 1; step s + 1 runs at the plan's rates times b.

Prints the factor handed to the loop before each step, for the iterates the test
`fedhyper::tests::fedhyper_cl_factor_matches_the_derivation_script` feeds in.
Run: python3 crates/algos/tests/golden/fedhyper_cl.py
"""

c, cap, lo, hi = 0.1 / 2, 1.1, 0.1, 10.0  # cl_global_weight 0.1, M = 2 clients
prev_agg = [1.0, 0.0]
ys = [[0.0, 0.0], [0.5, 0.0], [1.0, 0.5], [0.9, 0.5], [0.9, 1.0], [-20.0, 1.0], [-20.0, 1.5]]


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


b, prev_step, factors = 1.0, None, []
for k, y in enumerate(ys):
    if k >= 1:
        u = [a - p for a, p in zip(y, ys[k - 1])]
        if prev_step is not None:
            gamma = min(cap, 1.0 + c * dot(u, prev_agg) + dot(u, prev_step))
            b = min(hi, max(lo, gamma * b))
        prev_step = u
    factors.append(b)
print("factors:", [round(f, 12) for f in factors])
print("mean:", round(sum(factors) / len(factors), 12))
