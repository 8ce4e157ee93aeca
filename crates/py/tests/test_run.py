"""fedpace.run: configs from a path, TOML text or a dict; results as Python objects;
the model handed over without a copy; progress; determinism over thread counts.

Run against the installed wheel: scripts/python-wheel.sh."""

from __future__ import annotations

import json
import os
import signal
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

import fedpace

REPO = Path(__file__).resolve().parents[3]
QUICKSTART = REPO / "examples" / "quickstart.toml"

SMALL = """
name = "small"
seed = 3
rounds = 4
[data]
source = "synthetic"
num_clients = 8
[model]
name = "logistic-regression"
[client]
lr = 0.05
batch_size = 10
epochs = 1
[strategy]
name = "fedavg"
clients_per_round = 4
[eval]
every = 2
"""

SMALL_DICT = {
    "name": "small",
    "seed": 3,
    "rounds": 4,
    "data": {"source": "synthetic", "num_clients": 8},
    "model": {"name": "logistic-regression"},
    "client": {"lr": 0.05, "batch_size": 10, "epochs": 1},
    "strategy": {"name": "fedavg", "clients_per_round": 4},
    "eval": {"every": 2},
}


def test_path_toml_text_and_dict_are_the_same_experiment(tmp_path: Path) -> None:
    p = tmp_path / "small.toml"
    p.write_text(SMALL)
    a = fedpace.run(str(p), progress=False)
    b = fedpace.run(p, progress=False)  # os.PathLike
    c = fedpace.run(SMALL, progress=False)
    d = fedpace.run(SMALL_DICT, progress=False)
    for other in (b, c, d):
        assert other.summary["global"] == a.summary["global"]
        for name in a.model:
            assert np.array_equal(a.model[name], other.model[name])
    assert a.config == d.config  # the same resolved config


def test_results_have_the_documented_shapes() -> None:
    r = fedpace.run(SMALL, progress=False)
    assert r.summary["rounds_completed"] == 4 and r.summary["interrupted"] is False
    # pandas is optional: both forms have one row per round / client.
    rows = r.metrics if isinstance(r.metrics, list) else r.metrics.to_dict("records")
    assert [row["round"] for row in rows] == [1, 2, 3, 4]
    assert "eval.global_accuracy" in rows[1] and "clients" not in rows[0]
    clients = r.clients if isinstance(r.clients, list) else r.clients.to_dict("records")
    assert sorted(c["id"] for c in clients) == list(range(8))
    per = r.client_rounds if isinstance(r.client_rounds, list) else r.client_rounds.to_dict("records")
    assert len(per) == 4 * 4  # 4 clients a round, 4 rounds
    assert {"round", "id", "lr", "loss_before", "update_norm"} <= set(per[0])
    # The logistic regression's tensors, named and shaped as in model.safetensors.
    assert {k: v.shape for k, v in r.model.items()} == {
        "linear.weight": (10, 60),
        "linear.bias": (10,),
    }
    assert all(v.dtype == np.float32 for v in r.model.values())
    assert set(r.groups.values()) <= {"body", "head"}
    assert "<fedpace.Run" in repr(r) and "global_accuracy=" in repr(r)


def test_the_model_is_a_view_of_rusts_buffer_and_matches_model_safetensors(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    r = fedpace.run(SMALL, out=out, progress=False)
    w, b = r.model["linear.weight"], r.model["linear.bias"]
    # No copy: both are read-only views of one buffer that Rust filled.
    assert not w.flags.owndata and not w.flags.writeable
    assert w.base is b.base or w.base.base is b.base.base
    root = w
    while isinstance(root, np.ndarray) and root.base is not None:
        root = root.base
    assert type(root).__name__ == "Weights" and len(root) == w.size + b.size
    with pytest.raises(ValueError):
        w[0, 0] = 1.0
    # The same numbers as the run directory's model.safetensors, read by hand
    # (u64 header length, JSON header, little-endian f32 data).
    raw = (out / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    for name, arr in r.model.items():
        lo, hi = header[name]["data_offsets"]
        stored = np.frombuffer(data[lo:hi], dtype="<f4").reshape(header[name]["shape"])
        assert np.array_equal(stored, arr), name
    assert r.dir == str(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["global"] == r.summary["global"]


def test_same_seed_same_bits_whatever_the_thread_count() -> None:
    one = fedpace.run(SMALL, threads=1, progress=False)
    two = fedpace.run(SMALL, threads=2, progress=False)
    for name in one.model:
        assert np.array_equal(one.model[name], two.model[name])
    other = fedpace.run(SMALL, seed=4, progress=False)
    assert not np.array_equal(one.model["linear.weight"], other.model["linear.weight"])


def test_set_overrides_as_on_the_command_line() -> None:
    r = fedpace.run(
        QUICKSTART,
        set={"rounds": 2, "strategy.clients_per_round": 5, "policy": {"name": "constant"}},
        progress=False,
    )
    assert r.summary["rounds"] == 2 and r.summary["policy"] == "constant"
    assert 'name = "constant"' in r.config
    rows = r.metrics if isinstance(r.metrics, list) else r.metrics.to_dict("records")
    # Every client at client.lr (an f32 in the plans).
    assert all(row["rates.min"] == row["rates.max"] == np.float32(0.01) for row in rows)


def test_tables_are_lists_of_dicts_without_pandas(monkeypatch: pytest.MonkeyPatch) -> None:
    import fedpace._run

    monkeypatch.setattr(fedpace._run, "_pandas", lambda: None)
    r = fedpace.run(SMALL, progress=False)
    assert isinstance(r.metrics, list) and isinstance(r.metrics[0], dict)
    assert isinstance(r.clients, list) and isinstance(r.client_rounds, list)


def test_tables_are_dataframes_with_pandas() -> None:
    pd = pytest.importorskip("pandas")
    r = fedpace.run(SMALL, progress=False)
    assert isinstance(r.metrics, pd.DataFrame) and len(r.metrics) == 4
    assert isinstance(r.clients, pd.DataFrame) and len(r.clients) == 8


def test_progress_callback_sees_every_round() -> None:
    seen = []
    fedpace.run(SMALL, progress=lambda rnd, m: seen.append((rnd, m["round"])))
    assert seen == [(1, 1), (2, 2), (3, 3), (4, 4)]


def test_default_progress_prints_without_tqdm(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import builtins

    real = builtins.__import__

    def no_tqdm(name, *a, **k):  # type: ignore[no-untyped-def]
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    fedpace.run(SMALL, progress=True)
    out = capsys.readouterr().out
    assert "fedpace: synthetic" in out and "round 4/4" in out and "accuracy" in out


def test_ctrl_c_stops_after_the_round_and_keeps_the_run(tmp_path: Path) -> None:
    # SIGINT arrives while Rust runs (the GIL released): the run stops at the next
    # round boundary, writes its directory marked interrupted, then raises.
    cfg = dict(SMALL_DICT, rounds=1_000_000, eval={"every": 1_000_000})
    out = tmp_path / "run"
    # Python's own SIGINT handler, as in a terminal or a notebook: a process started in
    # the background by a non-interactive shell (`cmd &`, nohup) inherits SIGINT ignored,
    # and Python then installs none, so the run would never hear the signal.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            fedpace.run(cfg, out=out, progress=False)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert summary["interrupted_by"] == "KeyboardInterrupt"
    assert 0 < summary["rounds_completed"] < 1_000_000


def test_progress_shows_the_servers_accuracy_when_it_has_a_test_set() -> None:
    import fedpace._run

    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 2))
    y = (x[:, 0] > 0).astype(int)
    fed = fedpace.data.from_arrays(x, y, num_clients=5, test=(x[:50], y[:50]), name="b")
    cfg = {
        "rounds": 2,
        "data": {"source": "b"},
        "strategy": {"name": "fedavg", "clients_per_round": 3},
        "eval": {"every": 1},
    }
    lines = []
    r = fedpace.run(cfg, data=fed, progress=lambda rnd, m: lines.append(fedpace._run._accuracy(m)))
    assert lines[-1] == r.summary["global"]["accuracy"]  # correct / count of the 50
    assert r.summary["global"]["evaluated_on"] == "held-out test set"
