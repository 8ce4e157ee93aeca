"""A rate policy written in Python: called for every sampled client, equal to the same
policy in Rust bit for bit, and failing as a Python exception with fedpace's message."""

from __future__ import annotations

from typing import Any, List, Tuple

import numpy as np
import pytest

import fedpace

EXPERIMENT = {
    "name": "py-policy",
    "seed": 5,
    "rounds": 3,
    "data": {"source": "synthetic", "num_clients": 12},
    "model": {"name": "logistic-regression"},
    "client": {"lr": 0.02, "batch_size": 10, "epochs": 1},
    "strategy": {"name": "fedavg", "clients_per_round": 6},
    "eval": {"every": 3},
}


class ByDataSize:
    """fedpace's by-data-size (docs/algorithms.md §C.5) in Python:
    η_k = η · clamp((n_k / n̄)^γ, min, max)."""

    def __init__(self, mean_n: float, gamma: float = -0.5, lo: float = 0.25, hi: float = 4.0):
        self.mean_n, self.gamma, self.lo, self.hi = mean_n, gamma, lo, hi
        self.calls = 0

    def plan(self, round: int, client: fedpace.Client, base: fedpace.Plan) -> float:
        self.calls += 1
        m = min(max((client.num_train / self.mean_n) ** self.gamma, self.lo), self.hi)
        return base.lr * m


def blobs(n: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])
    y = rng.integers(0, 3, n)
    return centres[y] + 0.8 * rng.standard_normal((n, 2)), y


def test_python_by_data_size_equals_rusts_bit_for_bit() -> None:
    x, y = blobs(600, 1)
    fed = fedpace.data.from_arrays(
        x, y, partition={"kind": "dirichlet", "alpha": 0.5}, num_clients=12, name="blobs"
    )
    train = [t for t, _ in fed.client_sizes()]
    mean_n = sum(train) / len(train)
    cfg = dict(EXPERIMENT, data={"source": "blobs"})
    rust = fedpace.run(
        cfg, data=fed, set={"policy": {"name": "by-data-size", "gamma": -0.5}}, progress=False
    )
    py_policy = ByDataSize(mean_n)
    py = fedpace.run(cfg, data=fed, policy=py_policy, progress=False)
    assert py_policy.calls == 3 * 6  # every sampled client, every round
    assert py.summary["policy"] == "python" and rust.summary["policy"] == "by-data-size"
    for name in rust.model:
        assert np.array_equal(rust.model[name], py.model[name]), name
    rows = lambda t: t if isinstance(t, list) else t.to_dict("records")  # noqa: E731
    assert [r["lr"] for r in rows(py.client_rounds)] == [r["lr"] for r in rows(rust.client_rounds)]
    assert len({r["lr"] for r in rows(py.client_rounds)}) > 1  # rates do differ


class Recorder:
    def __init__(self) -> None:
        self.plans: List[Tuple[int, int]] = []
        self.seen: List[Tuple[int, int, Any]] = []

    def plan(self, round, client, base):  # type: ignore[no-untyped-def]
        self.plans.append((round, client.id))
        assert isinstance(base, fedpace.Plan) and base.lr == pytest.approx(0.02)
        assert base.epochs == 1 and base.steps is None and base.batch_size == 10
        assert set(base.multipliers) == {"head"} or set(base.multipliers) == {"body", "head"}
        if client.id % 2:
            base.lr = 0.01
            return base
        return {"lr": 0.03, "prox_mu": 0.0}

    def observe(self, round, client, report):  # type: ignore[no-untyped-def]
        self.seen.append((round, client.id, report))


def test_plan_and_observe_see_every_sampled_client() -> None:
    rec = Recorder()
    r = fedpace.run(EXPERIMENT, policy=rec, progress=False)
    assert len(rec.plans) == 18 and [p[0] for p in rec.plans] == [1] * 6 + [2] * 6 + [3] * 6
    assert sorted((s[0], s[1]) for s in rec.seen) == sorted(rec.plans)
    rep = rec.seen[0][2]
    assert rep.steps >= 1 and rep.loss_before > 0 and rep.update_norm > 0
    assert len(rep.rate_sum) >= 1
    rows = r.client_rounds if isinstance(r.client_rounds, list) else r.client_rounds.to_dict("records")
    for row in rows:
        assert row["lr"] == pytest.approx(0.01 if row["id"] % 2 else 0.03)


def test_a_policy_class_takes_its_options_from_the_config() -> None:
    class Scaled:
        def __init__(self, factor: float) -> None:
            self.factor = factor

        def plan(self, round, client, base):  # type: ignore[no-untyped-def]
            return base.lr * self.factor

    toml = (
        'rounds = 2\n[data]\nsource = "synthetic"\nnum_clients = 6\n'
        '[strategy]\nname = "fedavg"\nclients_per_round = 3\n'
        '[policy]\nname = "scaled"\nfactor = 0.5\n'
    )
    r = fedpace.run(toml, policy={"scaled": Scaled}, progress=False)
    assert r.summary["policy"] == "scaled"
    assert 'name = "scaled"' in r.config and "factor = 0.5" in r.config
    rows = r.metrics if isinstance(r.metrics, list) else r.metrics.to_dict("records")
    base = 0.05  # client.lr's default
    assert all(row["rates.max"] == np.float32(base * 0.5) for row in rows)


def test_a_policy_object_replaces_the_configs_policy_table() -> None:
    from pathlib import Path

    quickstart = Path(__file__).resolve().parents[3] / "examples" / "quickstart.toml"
    r = fedpace.run(quickstart, set={"rounds": 1}, policy=ByDataSize(100.0), progress=False)
    assert r.summary["policy"] == "python"


def test_the_overhead_probe_plans_as_the_rust_policy() -> None:
    # 100 client sizes (7 to 700 samples): the Python by-data-size's f32 rates equal the
    # built-in policy's on every call (scripts/python-policy-overhead.py times this).
    t_py, t_rust, mean_n, differ = fedpace._native.policy_overhead(ByDataSize, 2000)
    assert differ == 0 and mean_n == pytest.approx(353.5)
    assert t_py > 0 and t_rust > 0

    class Raises(ByDataSize):
        def plan(self, round, client, base):  # type: ignore[no-untyped-def]
            raise ValueError("no")

    with pytest.raises(fedpace.PolicyError, match="ValueError: no"):
        fedpace._native.policy_overhead(Raises, 10)
