"""Uncertainty, in one place: a mean with its 95% interval, clustered by prompt where images share a prompt,
and paired differences between two models scored on the same prompts and seeds.

- ``mean_interval(values)``: normal approximation ``mean +- z s / sqrt(n)`` or a percentile bootstrap;
- ``cluster_interval(rows)``: rows = prompts (clusters), each a list of per-image outcomes; the interval is
  over the per-prompt means (images of one prompt are not independent). Rows of several seeds pooled
  together make every (seed, prompt) a cluster;
- ``paired_interval(rows_a, rows_b)``: the mean per-prompt difference a - b with its interval (the same
  prompts and sampling seeds in both; pairing removes the prompt-to-prompt variance).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A mean with its confidence interval ``[low, high]`` at ``level`` over ``n`` values."""

    mean: float
    low: float
    high: float
    n: int
    level: float
    method: str

    def to_dict(self) -> dict:
        return asdict(self)


def mean_interval(values: Sequence[float], level: float = 0.95, method: str = "normal", resamples: int = 2000,
                  seed: int = 0) -> Interval:
    """Mean of ``values`` with a ``level`` confidence interval.

    ``method="normal"``: ``mean +- z s / sqrt(n)``, ``s`` the sample standard deviation (n - 1), ``z`` the
    normal quantile (1.96 for 95%); ``"bootstrap"``: percentiles of the means of ``resamples`` resamples
    with replacement (numpy generator seeded with ``seed``). With one value the interval is ``nan``.
    """
    data = np.asarray(list(values), dtype=np.float64)
    if data.size == 0:
        raise ValueError("no values: cannot take a mean (were all nouns missing from the generated images?)")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    mean = float(data.mean())
    if data.size == 1:
        return Interval(mean, math.nan, math.nan, 1, level, method)
    if method == "normal":
        z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
        half = z * float(data.std(ddof=1)) / math.sqrt(data.size)
        return Interval(mean, mean - half, mean + half, int(data.size), level, method)
    if method == "bootstrap":
        rng = np.random.default_rng(seed)
        means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
        low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
        return Interval(mean, float(low), float(high), int(data.size), level, method)
    raise ValueError(f"method must be 'normal' or 'bootstrap', got {method!r}")


def _within(value: float, low: float, high: float) -> float:
    """``value`` cut to [low, high]; NaN (too few prompts for an interval) stays NaN."""
    return value if math.isnan(value) else min(high, max(low, value))


def cluster_interval(rows: Sequence[Sequence[float]], level: float = 0.95) -> dict[str, float]:
    """Mean (percent) of a per-image outcome with a normal-approximation interval over prompts (clusters).

    Images of one prompt are not independent, so the standard error is taken over the per-prompt means:
    ``mean +- z s_prompts / sqrt(P)``, cut to the possible range [0, 100] (with few prompts the normal
    approximation can reach past it). Pass rows of several seeds together to pool them (each row one cluster).
    """
    per_prompt = [100.0 * float(np.mean(row)) for row in rows]
    interval = mean_interval(per_prompt, level=level)
    return {"mean": interval.mean, "low": _within(interval.low, 0.0, 100.0), "high": _within(interval.high, 0.0, 100.0),
            "prompts": len(per_prompt)}


def paired_interval(rows_a: Sequence[Sequence[float]], rows_b: Sequence[Sequence[float]],
                    level: float = 0.95) -> dict[str, float]:
    """Mean per-prompt difference (percent) ``a - b`` of two models' outcomes on the same prompts (rows in the
    same order, images with the same seeds), with a normal-approximation interval over prompts, cut to the
    possible range [-100, 100]."""
    if len(rows_a) != len(rows_b):
        raise ValueError(f"paired rows must match prompt for prompt: got {len(rows_a)} and {len(rows_b)} rows")
    diffs = [100.0 * (float(np.mean(x)) - float(np.mean(y))) for x, y in zip(rows_a, rows_b, strict=True)]
    interval = mean_interval(diffs, level=level)
    return {"mean": interval.mean, "low": _within(interval.low, -100.0, 100.0), "high": _within(interval.high, -100.0, 100.0),
            "prompts": len(diffs)}
