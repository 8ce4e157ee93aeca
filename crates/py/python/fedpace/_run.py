"""``fedpace.run``: one experiment, run in Rust with the GIL released, its results as
Python objects (docs/python.md)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping as _Mapping
from collections.abc import Sequence as _Sequence
import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from . import _native
from ._errors import ConfigError

__all__ = ["run", "Run"]

#: A config: a path (str or os.PathLike) to a TOML file, TOML text, or a dict.
Config = Union[str, "os.PathLike[str]", Mapping[str, Any]]
#: A progress callback: ``callback(round, metrics)`` after every round.
ProgressCallback = Callable[[int, Dict[str, Any]], Any]


def _pandas() -> Any:
    """pandas, when it is importable (tables are DataFrames then), else None."""
    try:
        import pandas
    except ImportError:
        return None
    return pandas


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Nested dicts to one level, keys joined by "." (``eval.global_accuracy``)."""
    out: Dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, _Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _table(rows: List[Dict[str, Any]]) -> Any:
    pd = _pandas()
    if pd is None:
        return rows
    return pd.DataFrame(rows)


def _accuracy(line: Mapping[str, Any]) -> Optional[float]:
    """The round's headline accuracy: the server's test set, else the clients' splits."""
    ev = line.get("eval") or {}
    central = ev.get("central") or {}
    if central.get("count"):
        return central["correct"] / central["count"]
    return ev.get("global_accuracy")


class _Display:
    """Default progress: a tqdm bar when tqdm is installed (``tqdm.auto``, which draws a
    widget in notebooks), else a printed line every tenth of the run."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.every = 1

    def __call__(self, event: str, round: int, rounds: int, payload: str) -> None:
        if event == "start":
            try:
                from tqdm.auto import tqdm
            except ImportError:
                self.every = max(1, rounds // 10)
                print(f"fedpace: {payload}", flush=True)
                return
            self.bar = tqdm(total=rounds, desc="fedpace", unit="round")
            return
        line = json.loads(payload)
        acc = _accuracy(line)
        if self.bar is not None:
            self.bar.update(1)
            if acc is not None:
                self.bar.set_postfix(accuracy=f"{acc:.4f}", refresh=False)
        elif round % self.every == 0 or round == rounds:
            text = f"round {round}/{rounds}  train loss {line.get('train_loss', float('nan')):.4f}"
            if acc is not None:
                text += f"  accuracy {acc:.4f}"
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _Callback:
    """A user's ``callback(round, metrics)`` behind the native progress protocol."""

    def __init__(self, f: ProgressCallback) -> None:
        self.f = f

    def __call__(self, event: str, round: int, rounds: int, payload: str) -> None:
        if event == "round":
            self.f(round, json.loads(payload))

    def close(self) -> None:
        pass


class Run:
    """The results of :func:`run`.

    Attributes:
        summary: ``summary.json``'s content: final global and personalised accuracy,
            rounds completed, wall time, … (docs/outputs.md).
        metrics: one row per round (``metrics.jsonl`` without the per-client lists,
            nested keys joined by "."): a pandas DataFrame when pandas is importable,
            else a list of dicts.
        client_rounds: one row per client and round it trained (``round``, ``id``,
            ``lr``, ``loss_before``, ``update_norm``, …): what the rate policy decided
            and what came of it. DataFrame or list of dicts.
        clients: the per-client table (``clients.csv``): samples, rounds trained, mean
            assigned rate, personalised accuracy. DataFrame or list of dicts.
        model: the final global model, tensor name → NumPy float32 array: read-only
            views of one buffer filled by Rust, no copy (``.copy()`` one to change it).
        groups: tensor name → its parameter group label.
        metrics_lines: the ``metrics.jsonl`` lines as dicts, unflattened.
        config: the resolved config as TOML (every default written out).
        warnings: warnings for the user, one line each (also issued as
            ``RuntimeWarning``).
        dir: the run directory when ``out`` was given, else None.
    """

    summary: Dict[str, Any]
    metrics: Any
    client_rounds: Any
    clients: Any
    model: Dict[str, np.ndarray]
    groups: Dict[str, str]
    metrics_lines: List[Dict[str, Any]]
    config: str
    warnings: List[str]
    dir: Optional[str]

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.summary = json.loads(raw["summary"])
        self.metrics_lines = json.loads(raw["metrics"])
        rows = []
        per_client = []
        for line in self.metrics_lines:
            rows.append(_flatten({k: v for k, v in line.items() if k != "clients"}))
            for c in line.get("clients") or []:
                per_client.append(_flatten({"round": line.get("round"), **c}))
        self.metrics = _table(rows)
        self.client_rounds = _table(per_client)
        self.clients = _table(json.loads(raw["clients"]))
        self.config = raw["config"]
        self.warnings = list(raw["warnings"])
        self.dir = raw["dir"]
        flat = np.asarray(raw["weights"])
        self.model = {}
        self.groups = {}
        for name, shape, offset, group in raw["tensors"]:
            size = int(np.prod(shape, dtype=np.int64)) if shape else 1
            self.model[name] = flat[offset : offset + size].reshape(shape)
            self.groups[name] = group

    def __repr__(self) -> str:
        g = self.summary.get("global") or {}
        p = self.summary.get("personalized") or {}
        acc = g.get("accuracy")
        pacc = p.get("mean_accuracy")
        parts = [
            f"name={self.summary.get('name')!r}",
            f"rounds={self.summary.get('rounds_completed')}/{self.summary.get('rounds')}",
        ]
        if acc is not None:
            parts.append(f"global_accuracy={acc:.4f}")
        if pacc is not None:
            parts.append(f"personalized_mean_accuracy={pacc:.4f}")
        return f"<fedpace.Run {' '.join(parts)}>"


def _config(config: Config) -> Tuple[str, Any]:
    if isinstance(config, os.PathLike):
        return "path", os.fspath(config)
    if isinstance(config, _Mapping):
        return "dict", dict(config)
    if isinstance(config, str):
        if "\n" in config or "=" in config or not config.strip():
            return "toml", config
        return "path", config
    raise ConfigError(
        f"config = {config!r} ({type(config).__name__}): expected a path, TOML text or a dict"
    )


def _federations(data: Any) -> List[Tuple[str, _native.Federation]]:
    if data is None:
        return []
    if isinstance(data, _native.Federation):
        return [(data.name, data)]
    if isinstance(data, _Mapping):
        items = list(data.items())
    elif isinstance(data, _Sequence) and not isinstance(data, (str, bytes)):
        items = [(getattr(f, "name", None), f) for f in data]
    else:
        raise ConfigError(
            f"data = {data!r}: expected a Federation (fedpace.data.from_arrays), a list of "
            "them, or a dict name → Federation"
        )
    out = []
    for name, fed in items:
        if not isinstance(fed, _native.Federation):
            raise ConfigError(
                f"data[{name!r}] = {fed!r}: expected a Federation (fedpace.data.from_arrays)"
            )
        out.append((str(name), fed))
    return out


def _check_policy(name: str, obj: Any) -> None:
    if not callable(getattr(obj, "plan", None)):
        raise ConfigError(
            f"policy {name!r} = {obj!r}: expected an object (or class) with a method "
            "plan(round, client, base)"
        )
    observe = getattr(obj, "observe", None)
    if observe is not None and not callable(observe):
        raise ConfigError(f"policy {name!r}: observe = {observe!r}: expected a method")


def run(
    config: Config,
    *,
    set: Optional[Mapping[str, Any]] = None,
    seed: Optional[int] = None,
    threads: Optional[int] = None,
    out: Union[str, "os.PathLike[str]", None] = None,
    force: bool = False,
    data: Any = None,
    policy: Any = None,
    progress: Union[bool, ProgressCallback, None] = True,
) -> Run:
    """Runs one experiment and returns its :class:`Run`.

    Args:
        config: a path to an experiment file (``str`` without ``=`` or newline, or an
            ``os.PathLike``), TOML text, or a dict of the same tables
            (``{"rounds": 20, "strategy": {"name": "fedavg"}}``); docs/configuration.md.
        set: overrides, ``{"strategy.server_lr": 0.5}``: as ``fedpace run --set``.
        seed: the run seed (an override of ``seed``).
        threads: clients trained at once (an override of ``threads``; 0 = all cores).
            Results are bit-identical whatever the thread count.
        out: write the run directory here (docs/outputs.md): metrics.jsonl,
            metrics.csv, clients.csv, model.safetensors, summary.json, TensorBoard
            events with ``[output] tensorboard = true``. It must not exist or be empty
            unless ``force``, which replaces an earlier run there. Default: nothing is
            written.
        data: data sets of your own for ``[data] source = "<name>"``: a
            :class:`Federation` (registered under its name), a list of them, or a dict
            name → Federation (see :mod:`fedpace.data`).
        policy: a rate policy written in Python: an object with ``plan(round, client,
            base)`` and optionally ``observe(round, client, report)``, used for this
            run in place of the config's ``[policy]`` (registered as ``"python"``). Or
            a dict name → object or class, for configs that say ``[policy] name =
            "<name>"``; a class is instantiated with the ``[policy]`` table's other
            keys as keyword arguments.
        progress: True (default): a tqdm bar if tqdm is installed, else a printed line
            every tenth of the run; False: silent; a callable ``f(round, metrics)``:
            called after every round with its ``metrics.jsonl`` line.

    Raises:
        ConfigError: the config, an override or an argument is wrong.
        SetupError: the data or the model cannot be built, ``out`` is taken.
        RunError: the run failed after it started.
        PolicyError: the Python policy raised (the exception is ``__cause__``) or
            returned what fedpace cannot use.
        KeyboardInterrupt: Ctrl-C (or the notebook's stop button) ends the run after
            the round in progress; with ``out`` its directory holds the run so far,
            marked interrupted.
    """
    kind, value = _config(config)
    overrides: List[Tuple[str, Any]] = []
    if set is not None:
        if not isinstance(set, _Mapping):
            raise ConfigError(f"set = {set!r}: expected a dict of config key → value")
        for k, v in set.items():
            if not isinstance(k, str):
                raise ConfigError(f"set: key {k!r}: expected a str such as 'client.lr'")
            overrides.append((k, v))
    for key, v in (("seed", seed), ("threads", threads)):
        if v is not None:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ConfigError(f"{key} = {v!r}: expected an integer >= 0")
            overrides.append((key, int(v)))
    policies: List[Tuple[str, Any]] = []
    if isinstance(policy, _Mapping):
        for name, obj in policy.items():
            _check_policy(str(name), obj)
            policies.append((str(name), obj))
    elif policy is not None:
        _check_policy("python", policy)
        policies.append(("python", policy))
        # The object replaces the config's whole [policy] table (its other keys belong
        # to another policy).
        overrides.append(("policy", {"name": "python"}))
    if progress is True:
        display: Any = _Display()
    elif progress is False or progress is None:
        display = None
    elif callable(progress):
        display = _Callback(progress)
    else:
        raise ConfigError(f"progress = {progress!r}: expected True, False or a callable")
    try:
        raw = _native.run(
            kind,
            value,
            overrides,
            _federations(data),
            policies,
            None if out is None else os.fspath(out),
            bool(force),
            display,
        )
    finally:
        if display is not None:
            display.close()
    result = Run(raw)
    for w in result.warnings:
        warnings.warn(w, RuntimeWarning, stacklevel=2)
    return result

