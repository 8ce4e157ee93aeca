#!/usr/bin/env python3
"""The overhead of a rate policy written in Python (docs/python.md, "Overhead").

The same policy — fedpace's by-data-size, η_k = η·clamp((n_k/n̄)^γ, 0.25, 4), γ = −0.5
(docs/algorithms.md §C.5) — once built in (Rust) and once as a Python class passed to
``fedpace.run(policy=...)``, on two workloads, interleaved (Rust, Python, Rust, …) in one
process so both see the same machine load:

- ``quickstart``: examples/quickstart.toml as shipped (Synthetic(1,1), 30 clients, 10 a
  round, 5 local epochs, 40 rounds): a typical small experiment.
- ``plan-bound``: 2,000 clients of 10 two-feature samples, 1,000 a round, one local step
  of logistic regression each, 20 rounds: almost nothing but planning, the worst case.

Both runs of a pair must give the same model bit for bit (checked): the Python policy
computes the same f32 rates. Reported: median wall time of each (``fedpace.run`` from
call to return) and their ratio; median process CPU time (all threads) and the marginal
CPU cost of one Python call, ``(cpu_python − cpu_rust) / calls``, as calls per second —
CPU time is the steadier measure on a shared machine. Then the cost of one call where
fedpace makes it (``fedpace._native.policy_overhead``: the same 200,000 plans through the
Python object and through the Rust policy, GIL released between calls as in a run), and
of the Python code alone (``plan`` called from a Python loop).

Usage (with the wheel installed, e.g. scripts/python-wheel.sh's target/py-test-venv):
    target/py-test-venv/bin/python scripts/python-policy-overhead.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import fedpace

REPO = Path(__file__).resolve().parents[1]


class ByDataSize:
    """by-data-size in Python (the built-in one is Rust)."""

    def __init__(self, mean_n: float, gamma: float = -0.5, lo: float = 0.25, hi: float = 4.0):
        self.mean_n, self.gamma, self.lo, self.hi = mean_n, gamma, lo, hi
        self.calls = 0

    def plan(self, round, client, base):  # noqa: A002 - fedpace's argument name
        self.calls += 1
        return base.lr * min(max((client.num_train / self.mean_n) ** self.gamma, self.lo), self.hi)


def rows(table):
    return table if isinstance(table, list) else table.to_dict("records")


def workloads():
    x = np.random.default_rng(0).standard_normal((20_000, 2))
    y = (x[:, 0] > 0).astype(np.int64)
    fed = fedpace.data.from_arrays(
        x, y, partition="iid", num_clients=2000, test_fraction=0.0, name="plan-bound"
    )
    plan_bound = {
        "name": "plan-bound",
        "rounds": 20,
        "data": {"source": "plan-bound"},
        "model": {"name": "logistic-regression"},
        "client": {"lr": 0.1, "batch_size": 10, "steps": 1},
        "strategy": {"name": "fedavg", "clients_per_round": 1000},
        "eval": {"every": 20, "max_clients": 10},
    }
    return [
        ("quickstart", str(REPO / "examples" / "quickstart.toml"), None),
        ("plan-bound", plan_bound, fed),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    # One training thread: no idle worker threads spinning, so process CPU time isolates
    # the policy's cost (the thread count changes nothing else: results are the same bits).
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# Python rate policy overhead, {now}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} logical CPUs, load average "
        f"{' '.join(f'{v:.1f}' for v in os.getloadavg())} (1/5/15 min) at start; "
        f"Python {platform.python_version()}, fedpace {fedpace.__version__}, threads={args.threads}"
    )
    print()
    print(
        "| workload | policy calls | wall, Rust policy (s) | wall, Python policy (s) | wall ratio "
        "| CPU, Rust policy (s) | CPU, Python policy (s) | CPU per Python call | calls/s (CPU) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, cfg, fed in workloads():
        common = dict(threads=args.threads, progress=False, data=fed)
        rust_policy = {"policy": {"name": "by-data-size", "gamma": -0.5, "min": 0.25, "max": 4.0}}
        first = fedpace.run(cfg, set=rust_policy, **common)
        train = [c["train_samples"] for c in rows(first.clients)]
        mean_n = sum(train) / len(train)
        t_rust, t_py, c_rust, c_py, calls = [], [], [], [], 0
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            r = fedpace.run(cfg, set=rust_policy, **common)
            t_rust.append(time.perf_counter() - t0)
            c_rust.append(time.process_time() - c0)
            pol = ByDataSize(mean_n)
            t0, c0 = time.perf_counter(), time.process_time()
            p = fedpace.run(cfg, policy=pol, **common)
            t_py.append(time.perf_counter() - t0)
            c_py.append(time.process_time() - c0)
            calls = pol.calls
            for k in r.model:
                assert np.array_equal(r.model[k], p.model[k]), f"{name}: models differ at {k}"
        tr, tp = statistics.median(t_rust), statistics.median(t_py)
        cr, cp = statistics.median(c_rust), statistics.median(c_py)
        per_call = (cp - cr) / calls
        rate = f"{1 / per_call:,.0f}" if per_call > 0 else "not measurable"
        print(
            f"| {name} | {calls:,} | {tr:.3f} | {tp:.3f} | {tp / tr:.3f} | {cr:.3f} | {cp:.3f} | "
            f"{per_call * 1e6:.2f} µs | {rate} |"
        )
    # The cost of one call, measured where fedpace makes it: the same plans through the
    # Python object and through the Rust policy, alternating in blocks of 1,000, the GIL
    # released between calls as in a run (fedpace._native.policy_overhead).
    print()
    print("| plans (calls) | Python policy, per call | Rust policy, per call | Python calls/s | rates equal |")
    print("|---:|---:|---:|---:|---:|")
    for _ in range(3):
        n = 200_000
        tp, tr, _mean, differ = fedpace._native.policy_overhead(ByDataSize, n)
        print(
            f"| {n:,} | {tp / n * 1e6:.2f} µs | {tr / n * 1e6:.3f} µs | {n / tp:,.0f} | "
            f"{'yes' if differ == 0 else f'NO: {differ} differ'} |"
        )
        assert differ == 0
    # The Python code alone: plan() called from a Python loop, no fedpace in between.
    pol = ByDataSize(10.0)

    class C:
        num_train = 12

    class B:
        lr = 0.1

    c, b, n = C(), B(), 200_000
    t0 = time.perf_counter()
    for _ in range(n):
        pol.plan(1, c, b)
    dt = time.perf_counter() - t0
    print()
    print(
        f"plan() alone, called from a Python loop: {dt / n * 1e6:.2f} µs a call "
        f"({n / dt:,.0f} calls/s)"
    )
    print(
        f"load average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}; "
        f"{args.repeats} interleaved pairs, medians; models equal bit for bit in every pair"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
