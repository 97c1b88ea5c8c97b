"""Adaptive stopping (docs/spec.md §10 / the spec's ``measure:`` block): how many samples a case gets.

A case takes at least ``min_samples``; it stops as soon as the noise (IQR / median) is under
``max_noise`` *and* ``min_time_s`` of sampling has passed ("converged"); else, once
``min_time_s`` has passed, as soon as the median itself is known to within ``max_median_ci``
(the 99% order-statistic interval's half-width over the median: "precise"), which a wide or
two-mode spread reaches after a few hundred samples where its IQR never falls under
``max_noise``; or at ``max_samples``, or at the hard ``timeout_s``. The reason is recorded with
the result, so a number that stopped on the timeout (or at max_samples while still noisy) is
visibly less trustworthy than one that converged.

Samples arrive in rounds (a CUPTI timer reads its records once per round); ``next_batch`` sizes
the next round so checks stay frequent and a slow case cannot overrun its timeout by much.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ssmbench.output.stats import median_ci_halfwidth, relative_iqr

STOP_REASONS = ("converged", "precise", "max_samples", "timeout")

ROUND_SECONDS = 0.25
"""Target wall time of one measuring round (between two stop checks)."""
MAX_ROUND = 256
"""Most samples in one round (a CUPTI flush per round keeps record buffers small)."""


@dataclass(frozen=True)
class StopRule:
    """The ``measure:`` settings of a spec that decide when sampling ends."""

    min_samples: int = 30
    max_samples: int = 2000
    max_noise: float = 0.02
    min_time_s: float = 0.2
    timeout_s: float = 60.0
    max_median_ci: float = 0.005
    """The "precise" stop: the median's 99% interval within +-this fraction of it (0: off)."""

    @classmethod
    def from_measure(cls, measure: Any) -> StopRule:
        """From a `ssmbench.spec.load.Measure` (or its dict form)."""
        data = measure if isinstance(measure, dict) else measure.model_dump()
        keys = ("min_samples", "max_samples", "max_noise", "min_time_s", "timeout_s", "max_median_ci")
        return cls(**{k: data[k] for k in keys if k in data})  # a dict from before a field existed: its default


class Stopper:
    """Collects spans and says when to stop. ``clock`` is injectable for tests."""

    def __init__(self, rule: StopRule, clock: Callable[[], float] = time.monotonic) -> None:
        self.rule = rule
        self.clock = clock
        self.start = clock()
        self.samples: list[float] = []

    def add(self, spans: Iterable[float]) -> None:
        self.samples.extend(spans)

    @property
    def elapsed(self) -> float:
        return self.clock() - self.start

    def noise(self) -> float:
        return relative_iqr(self.samples)

    def reason(self) -> str | None:
        """Why sampling is over, or None to go on. Convergence wins when several hold at once."""
        r, n, elapsed = self.rule, len(self.samples), self.elapsed
        if n >= r.min_samples and elapsed >= r.min_time_s:
            if self.noise() <= r.max_noise:
                return "converged"
            if r.max_median_ci > 0 and median_ci_halfwidth(self.samples) <= r.max_median_ci:
                return "precise"
        if n >= r.max_samples:
            return "max_samples"
        if elapsed >= r.timeout_s:
            return "timeout"
        return None

    def next_batch(self) -> int:
        """Samples to take in the next round: one first (it prices a sample), then up to
        ``min_samples``, then a quarter of what is there; never past ``max_samples``, about
        ``ROUND_SECONDS`` of work, or the time left before the timeout."""
        r, n = self.rule, len(self.samples)
        if n == 0:
            return 1
        per_sample = max(self.elapsed / n, 1e-7)
        want = r.min_samples - n if n < r.min_samples else max(1, n // 4)
        by_round = int(ROUND_SECONDS / per_sample)
        by_timeout = int(max(r.timeout_s - self.elapsed, 0.0) / per_sample)
        return max(1, min(want, r.max_samples - n, by_round, by_timeout, MAX_ROUND))


def run_until_stopped(stopper: Stopper, take: Callable[[int], list[float]]) -> str:
    """Drive ``take(n) -> spans`` in rounds until the stopper says stop; return the reason."""
    while (reason := stopper.reason()) is None:
        spans = take(stopper.next_batch())
        if not spans:
            raise RuntimeError("the timer returned no samples")
        if any(not math.isfinite(s) or s < 0 for s in spans):
            raise RuntimeError(f"the timer returned an invalid span: {spans}")
        stopper.add(spans)
    return reason
