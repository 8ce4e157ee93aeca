"""Statistics shared by the study scripts: sample standard deviations (n − 1) and paired
differences with their standard errors. Standard library only.

    mean_sd([..])           -> (mean, sample sd); sd is nan for fewer than 2 values
    paired(a, b)            -> Paired: per-key differences b − a over the keys both have
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


def mean_sd(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None]
    if not xs:
        return math.nan, math.nan
    return statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else math.nan


@dataclass
class Paired:
    """Differences b − a of two variants run on the same seeds."""

    diffs: list[float]

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def mean(self) -> float:
        return statistics.mean(self.diffs) if self.diffs else math.nan

    @property
    def se(self) -> float:
        """Standard error of the mean difference: sample sd / √n."""
        if self.n < 2:
            return math.nan
        return statistics.stdev(self.diffs) / math.sqrt(self.n)

    @property
    def better(self) -> int:
        return sum(d > 0 for d in self.diffs)

    @property
    def worse(self) -> int:
        return sum(d < 0 for d in self.diffs)

    def fmt(self, scale: float = 1.0, digits: int = 2) -> str:
        """`+0.53 ± 0.27 (12+/7−)`: mean ± standard error, seeds better / worse."""
        if not self.diffs:
            return "–"
        m = f"{scale * self.mean:+.{digits}f}".replace("-", "−")
        return f"{m} ± {scale * self.se:.{digits}f} ({self.better}+/{self.worse}−)"


def paired(a: dict, b: dict) -> Paired:
    """Pairs two {seed: value} maps on their common seeds."""
    keys = sorted(set(a) & set(b))
    return Paired([b[k] - a[k] for k in keys if a[k] is not None and b[k] is not None])


def fmt_mean_sd(xs: list[float], scale: float = 1.0, digits: int = 2) -> str:
    m, s = mean_sd(xs)
    if math.isnan(m):
        return "–"
    if math.isnan(s):
        return f"{scale * m:.{digits}f}"
    return f"{scale * m:.{digits}f} ± {scale * s:.{digits}f}"
