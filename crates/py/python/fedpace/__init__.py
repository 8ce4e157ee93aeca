"""fedpace from Python: federated learning with personalised learning rates.

Run an experiment from a config file, TOML text or a dict; bring NumPy data
(:mod:`fedpace.data`); write a rate policy in Python — an object with
``plan(round, client, base)`` and, optionally, ``observe(round, client, report)`` —
while everything else runs at Rust speed with the GIL released::

    import fedpace

    class DampBigClients:
        def plan(self, round, client, base):
            return base.lr * min(1.0, 100 / client.num_train)

    run = fedpace.run("examples/quickstart.toml", policy=DampBigClients(), seed=1)
    run.summary["global"]["accuracy"], run.metrics, run.model["linear.weight"]

Errors are exceptions carrying fedpace's one-line messages: :class:`ConfigError`,
:class:`SetupError`, :class:`RunError`, :class:`PolicyError` (all
:class:`FedpaceError`). See docs/python.md.
"""

from __future__ import annotations

from . import data
from ._errors import ConfigError, FedpaceError, PolicyError, RunError, SetupError
from ._native import Client, Federation, Plan, Report
from ._native import version as _version
from ._run import Run, run

__version__: str = _version()

__all__ = [
    "run",
    "Run",
    "data",
    "Client",
    "Plan",
    "Report",
    "Federation",
    "FedpaceError",
    "ConfigError",
    "SetupError",
    "RunError",
    "PolicyError",
    "__version__",
]
