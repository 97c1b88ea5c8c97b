"""Order statistics of a sample list: the numbers a results record carries and the noise figure
the stopping rule watches. Pure Python, so the rule is testable without numpy or a GPU."""

from __future__ import annotations

import math
from collections.abc import Sequence


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile with linear interpolation between order statistics (numpy's default), so
    numbers match what anyone recomputes from ``samples_us``. NaN for an empty list."""
    if not values:
        return math.nan
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q={q} outside [0, 1]")
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return quantile(values, 0.5)


def relative_iqr(values: Sequence[float]) -> float:
    """(p75 - p25) / median: the spread the stopping rule compares with ``max_noise``. Robust to
    the occasional preempted sample, unlike a standard deviation. inf when undefined."""
    if len(values) < 2:
        return math.inf
    mid = median(values)
    if not mid > 0:
        return math.inf
    return (quantile(values, 0.75) - quantile(values, 0.25)) / mid


def median_ci_halfwidth(values: Sequence[float], z: float = 2.576) -> float:
    """Half the width of a distribution-free confidence interval of the median, relative to it:
    the order statistics at ranks (n -+ z sqrt(n)) / 2 (the binomial count of samples below the
    median, normal approximation; z = 2.576: 99%). Unlike `relative_iqr`, which measures the
    samples' spread and does not shrink with more of them, this is how well the median itself is
    known: it shrinks as 1/sqrt(n) even for a wide or two-mode distribution. inf when undefined."""
    n = len(values)
    ordered = sorted(values)
    mid = median(ordered)  # (sorted input: the second sort is linear)
    lo = math.floor((n - z * math.sqrt(n)) / 2)
    if n < 2 or lo < 0 or not mid > 0:
        return math.inf
    return (ordered[n - 1 - lo] - ordered[lo]) / 2 / mid


def summarize(values: Sequence[float]) -> dict[str, float | None]:
    """median / p10 / p90 / noise of a sample list (None where there are no samples)."""
    if not values:
        return {"median_us": None, "p10_us": None, "p90_us": None, "noise": None}
    noise = relative_iqr(values)
    return {
        "median_us": median(values),
        "p10_us": quantile(values, 0.1),
        "p90_us": quantile(values, 0.9),
        "noise": None if math.isinf(noise) else noise,
    }
