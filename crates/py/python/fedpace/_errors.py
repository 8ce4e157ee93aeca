"""fedpace's exceptions. Each carries fedpace's one-line message: the file or key, the
value and what was expected."""

from __future__ import annotations

__all__ = ["FedpaceError", "ConfigError", "SetupError", "RunError", "PolicyError"]


class FedpaceError(Exception):
    """Base of every fedpace error (also raised as is for an I/O failure)."""


class ConfigError(FedpaceError, ValueError):
    """The config or an argument is wrong: syntax, an unknown key, a value out of range,
    a combination that cannot do what it says, a config file that cannot be read."""


class SetupError(FedpaceError, ValueError):
    """The experiment cannot be built as configured: data missing or malformed (arrays
    of the wrong shape, labels out of range), a model too large, an output directory
    that is taken."""


class RunError(FedpaceError, RuntimeError):
    """The run failed after it started (a model error, no client trained for many
    rounds in a row, …)."""


class PolicyError(RunError):
    """The Python rate policy raised (its exception is ``__cause__``) or returned what
    fedpace cannot use; the message names the call: ``policy "python": plan(round 3,
    client 7): ZeroDivisionError: division by zero``."""
