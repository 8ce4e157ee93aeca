"""Client data from NumPy arrays (docs/python.md, "Your data").

- :func:`from_arrays`: pooled samples ``x`` (``(n, *sample_shape)``) and labels ``y``
  split across clients by one of fedpace's partitioners: ``"iid"``,
  ``{"kind": "dirichlet", "alpha": 0.1}``, ``{"kind": "shards", "per_client": 2}``,
  ``{"kind": "labels", "per_client": 2}``, ``"power-law"``, … (docs/datasets.md).
- :func:`from_clients`: one ``(x, y)`` pair per client.

Either gives a :class:`~fedpace.Federation`; pass it to :func:`fedpace.run` as
``data=`` and name it in the config: ``[data] source = "<name>"``. Each client's share
is split into train and test by ``test_fraction`` (seeded); ``test=(x_test, y_test)``
gives the server a test set of its own, evaluated centrally (``summary["global"]``).

Arrays are copied once into fedpace (features as float32, labels as uint32); a bad
array raises :class:`~fedpace.SetupError` naming it.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native
from ._errors import ConfigError, SetupError
from ._native import Federation

__all__ = ["from_arrays", "from_clients", "Federation", "PARTITIONS"]

#: The partitioners by name (docs/datasets.md); a dict ``{"kind": name, ...}`` sets
#: their parameters.
PARTITIONS = ("iid", "dirichlet", "shards", "labels", "cyclic-labels", "pfedme", "power-law")

Partition = Union[str, Mapping[str, Any]]
ArrayPair = Tuple[Any, Any]


def _features(x: Any, what: str) -> np.ndarray:
    try:
        a = np.asarray(x)
    except Exception as e:  # noqa: BLE001 - any failure to view it as an array
        raise SetupError(f"{what}: {e}") from e
    if a.dtype.kind not in "fiub":
        raise SetupError(f"{what}: dtype {a.dtype}: expected numbers")
    if a.ndim < 2:
        raise SetupError(f"{what}: shape {a.shape}: expected (samples, features...)")
    a = np.require(a, dtype=np.float32, requirements=["C", "A"])
    if a.size and not np.isfinite(a).all():
        row = int(np.argwhere(~np.isfinite(a.reshape(len(a), -1)))[0][0])
        raise SetupError(f"{what}: row {row} holds nan or inf: expected finite values")
    return a


def _labels(y: Any, n: int, what: str) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1 or len(a) != n:
        raise SetupError(f"{what}: shape {a.shape}: expected ({n},), one label per sample")
    if a.size and a.dtype.kind == "f":
        if not np.all(np.equal(np.mod(a, 1), 0)):
            raise SetupError(f"{what}: dtype {a.dtype} with fractions: expected class indices")
    elif a.size and a.dtype.kind not in "iub":
        raise SetupError(f"{what}: dtype {a.dtype}: expected integer class indices")
    if a.size and (a.min() < 0 or a.max() > np.iinfo(np.uint32).max):
        bad = a.min() if a.min() < 0 else a.max()
        raise SetupError(f"{what}: label {bad}: expected class indices 0, 1, 2, ...")
    return np.require(a, dtype=np.uint32, requirements=["C", "A"])


def _classes(num_classes: Optional[int], *ys: np.ndarray) -> int:
    seen = max((int(y.max()) + 1 for y in ys if y.size), default=0)
    if num_classes is None:
        if seen < 2:
            raise SetupError(
                f"labels: {seen} class(es) seen: expected at least 2 (or pass num_classes)"
            )
        return seen
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ConfigError(f"num_classes = {num_classes!r}: expected an integer >= 2")
    if num_classes < 2 or num_classes < seen:
        raise ConfigError(
            f"num_classes = {num_classes}: expected at least 2 and above every label "
            f"(largest {seen - 1})"
        )
    return int(num_classes)


def _test(test: Optional[ArrayPair]) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    if test is None:
        return None
    if not (isinstance(test, (tuple, list)) and len(test) == 2):
        raise ConfigError(f"test = {type(test).__name__}: expected a pair (x_test, y_test)")
    tx = _features(test[0], "test x")
    return tx, _labels(test[1], len(tx), "test y")


def _partition(partition: Partition) -> dict:
    if isinstance(partition, str):
        return {"kind": partition}
    if isinstance(partition, Mapping):
        if "kind" not in partition:
            raise ConfigError(
                f"partition = {dict(partition)!r}: expected a 'kind' key, one of {PARTITIONS}"
            )
        return dict(partition)
    raise ConfigError(
        f"partition = {partition!r}: expected a name ({', '.join(PARTITIONS)}) or a dict "
        "such as {'kind': 'dirichlet', 'alpha': 0.1}"
    )


def _name(name: str) -> str:
    if not isinstance(name, str):
        raise ConfigError(f"name = {name!r}: expected a str")
    return name


def _seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed = {seed!r}: expected an integer >= 0")
    return int(seed)


def from_arrays(
    x: Any,
    y: Any,
    *,
    partition: Partition = "iid",
    num_clients: int = 10,
    test_fraction: float = 0.2,
    num_classes: Optional[int] = None,
    test: Optional[ArrayPair] = None,
    seed: int = 0,
    name: str = "arrays",
) -> Federation:
    """Pooled samples split across ``num_clients`` clients by a built-in partitioner.

    Args:
        x: features, shape ``(n, *sample_shape)`` (any real dtype; stored as float32).
        y: class labels ``0 .. num_classes-1``, shape ``(n,)``.
        partition: ``"iid"``, ``"power-law"``, … or a dict with ``kind`` and the
            partitioner's parameters: ``{"kind": "dirichlet", "alpha": 0.1}``,
            ``{"kind": "shards", "per_client": 2}`` (docs/datasets.md).
        num_clients: number of clients.
        test_fraction: share of each client's samples held out as its test split, in
            [0, 1).
        num_classes: number of classes (default: largest label + 1).
        test: ``(x_test, y_test)``, a test set the server holds and evaluates the
            global model on.
        seed: seed of the partition and the test splits (the same seed gives the
            same clients).
        name: the name a config uses: ``[data] source = "<name>"`` (1 to 64 of
            ``a-z 0-9 - _``, not a built-in source's name).
    """
    xs = _features(x, "x")
    ys = _labels(y, len(xs), "y")
    t = _test(test)
    k = _classes(num_classes, ys, *(() if t is None else (t[1],)))
    if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)):
        raise ConfigError(f"num_clients = {num_clients!r}: expected an integer >= 1")
    pool = {
        "num_clients": int(num_clients),
        "partition": _partition(partition),
        "test_fraction": float(test_fraction),
    }
    return _native.from_pooled(_name(name), xs, ys, k, json.dumps(pool), _seed(seed), t)


def from_clients(
    clients: Sequence[ArrayPair],
    *,
    test_fraction: float = 0.2,
    num_classes: Optional[int] = None,
    test: Optional[ArrayPair] = None,
    seed: int = 0,
    name: str = "clients",
) -> Federation:
    """One ``(x, y)`` pair per client (``x``: ``(n_k, *sample_shape)``, ``y``:
    ``(n_k,)``), each split into train and test by ``test_fraction`` (seeded).

    Args:
        clients: the clients' arrays, client 0 first.
        test_fraction: share of each client's samples held out as its test split.
        num_classes: number of classes (default: largest label + 1).
        test: ``(x_test, y_test)``, a test set the server holds.
        seed: seed of the test splits.
        name: the name a config uses: ``[data] source = "<name>"``.
    """
    if isinstance(clients, (str, bytes)) or not isinstance(clients, Sequence):
        raise ConfigError(
            f"clients = {type(clients).__name__}: expected a list of (x, y) pairs"
        )
    pairs = []
    for i, c in enumerate(clients):
        if not (isinstance(c, (tuple, list)) and len(c) == 2):
            raise ConfigError(f"clients[{i}]: expected a pair (x, y)")
        cx = _features(c[0], f"client {i} x")
        pairs.append((cx, _labels(c[1], len(cx), f"client {i} y")))
    t = _test(test)
    k = _classes(num_classes, *(p[1] for p in pairs), *(() if t is None else (t[1],)))
    return _native.from_clients(
        _name(name), pairs, k, float(test_fraction), _seed(seed), t
    )
