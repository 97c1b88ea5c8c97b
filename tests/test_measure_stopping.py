"""The adaptive stopping rule and the order statistics it reads, on synthetic sample streams."""

from __future__ import annotations

import math
import random

import pytest

from ssmbench.measure.stopping import MAX_ROUND, Stopper, StopRule, run_until_stopped
from ssmbench.output.stats import median, median_ci_halfwidth, quantile, relative_iqr, summarize
from ssmbench.spec.load import Measure


class FakeClock:
    """A clock that advances only when told (each sample costs ``per_sample`` seconds)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def stream(rng: random.Random, center: float, noise: float):
    """Spans around ``center`` with uniform relative noise +-noise."""
    while True:
        yield center * (1 + noise * (2 * rng.random() - 1))


def drive(rule: StopRule, values, per_sample: float) -> tuple[str, Stopper, list[int]]:
    clock = FakeClock()
    stopper = Stopper(rule, clock=clock)
    batches: list[int] = []

    def take(n: int) -> list[float]:
        batches.append(n)
        clock.now += n * per_sample
        return [next(values) for _ in range(n)]

    return run_until_stopped(stopper, take), stopper, batches


def test_quantiles_match_linear_interpolation() -> None:
    data = [4.0, 1.0, 3.0, 2.0]
    assert quantile(data, 0.0) == 1.0 and quantile(data, 1.0) == 4.0
    assert quantile(data, 0.25) == pytest.approx(1.75)  # numpy.quantile([1,2,3,4], 0.25)
    assert median(data) == pytest.approx(2.5)
    assert quantile([7.0], 0.9) == 7.0
    assert math.isnan(quantile([], 0.5))
    with pytest.raises(ValueError):
        quantile(data, 1.5)


def test_relative_iqr() -> None:
    assert relative_iqr([10.0] * 9) == 0.0
    assert relative_iqr([1.0]) == math.inf
    assert relative_iqr([0.0, 0.0, 0.0]) == math.inf
    data = [float(x) for x in range(1, 102)]  # median 51, IQR 50
    assert relative_iqr(data) == pytest.approx(50 / 51)


def test_summarize() -> None:
    s = summarize([float(x) for x in range(1, 11)])
    assert s["median_us"] == pytest.approx(5.5)
    assert s["p10_us"] == pytest.approx(1.9) and s["p90_us"] == pytest.approx(9.1)
    assert summarize([])["median_us"] is None
    assert summarize([3.0])["noise"] is None  # undefined, not inf in JSON


def test_quiet_stream_converges_after_min_samples_and_min_time() -> None:
    rule = StopRule(min_samples=30, max_samples=2000, max_noise=0.02, min_time_s=0.2, timeout_s=60)
    reason, stopper, batches = drive(rule, stream(random.Random(0), 50.0, 0.005), per_sample=1e-3)
    assert reason == "converged"
    assert len(stopper.samples) >= 30 and stopper.elapsed >= 0.2
    assert len(stopper.samples) < 400  # stops soon after min_time, not at max_samples
    assert batches[0] == 1 and batches[1] == 29  # one to price a sample, then up to min_samples


def test_min_time_zero_stops_at_min_samples() -> None:
    rule = StopRule(min_samples=10, max_samples=100, max_noise=0.05, min_time_s=0.0, timeout_s=60)
    reason, stopper, _ = drive(rule, stream(random.Random(1), 5.0, 0.001), per_sample=1e-4)
    assert reason == "converged" and len(stopper.samples) == 10


def test_median_ci_halfwidth_shrinks_with_n_where_the_spread_does_not() -> None:
    rng = random.Random(9)
    two_modes = [10.0 * (1.06 if rng.random() < 0.4 else 1.0) * (1 + 0.002 * rng.gauss(0, 1)) for _ in range(4000)]
    assert relative_iqr(two_modes[:200]) > 0.05 and relative_iqr(two_modes) > 0.05  # never under 2%
    widths = [median_ci_halfwidth(two_modes[:n]) for n in (50, 200, 800, 3200)]
    assert widths == sorted(widths, reverse=True) and widths[-1] < 0.005
    assert median_ci_halfwidth([1.0, 2.0, 3.0]) == math.inf  # too few for a 99% interval
    assert median_ci_halfwidth([0.0] * 100) == math.inf
    ordered = [float(i) for i in range(1, 101)]  # ranks 37 and 62 (0-based) for n = 100
    assert median_ci_halfwidth(ordered) == pytest.approx((ordered[62] - ordered[37]) / 2 / 50.5)


def test_a_wide_spread_stops_precise_once_its_median_is_known() -> None:
    """Two kernel states 6% apart (a bimodal span, IQR/median ~6%): max_noise is never met, but
    the median is known to +-0.5% after a few hundred samples; 0 turns the rule off."""
    rng = random.Random(11)

    def two_modes():
        while True:
            yield 10.0 * (1.06 if rng.random() < 0.3 else 1.0) * (1 + 0.003 * rng.gauss(0, 1))

    rule = StopRule(min_samples=30, max_samples=2000, max_noise=0.02, min_time_s=0.2, timeout_s=60)
    reason, stopper, _ = drive(rule, two_modes(), per_sample=1e-3)
    assert reason == "precise" and 200 <= len(stopper.samples) < 2000
    assert median_ci_halfwidth(stopper.samples) <= 0.005 and stopper.noise() > 0.02
    reason, stopper, _ = drive(StopRule(min_samples=30, max_samples=2000, max_noise=0.02, min_time_s=0.2,
                                        timeout_s=60, max_median_ci=0), two_modes(), per_sample=1e-3)
    assert reason == "max_samples" and len(stopper.samples) == 2000


def test_noisy_stream_stops_at_max_samples() -> None:
    rule = StopRule(min_samples=30, max_samples=500, max_noise=0.02, min_time_s=0.0, timeout_s=60)
    reason, stopper, batches = drive(rule, stream(random.Random(2), 50.0, 0.5), per_sample=1e-5)
    assert reason == "max_samples"
    assert len(stopper.samples) == 500  # never more than max_samples
    assert max(batches) <= MAX_ROUND


def test_slow_noisy_case_stops_on_timeout_near_the_limit() -> None:
    rule = StopRule(min_samples=30, max_samples=2000, max_noise=0.02, min_time_s=0.2, timeout_s=2.0)
    reason, stopper, _ = drive(rule, stream(random.Random(3), 50.0, 0.5), per_sample=0.05)
    assert reason == "timeout"
    assert 2.0 <= stopper.elapsed <= 2.0 + 0.05 * 2  # rounds are sized to end near the timeout


def test_timeout_before_min_samples() -> None:
    rule = StopRule(min_samples=30, max_samples=2000, max_noise=0.02, min_time_s=0.0, timeout_s=1.0)
    reason, stopper, _ = drive(rule, stream(random.Random(4), 50.0, 0.0), per_sample=0.3)
    assert reason == "timeout" and len(stopper.samples) < 30


def test_convergence_wins_when_the_timeout_also_holds() -> None:
    clock = FakeClock()
    rule = StopRule(min_samples=5, max_samples=10, max_noise=0.1, min_time_s=0, timeout_s=1)
    stopper = Stopper(rule, clock)
    stopper.add([1.0] * 5)
    clock.now = 5.0
    assert stopper.reason() == "converged"


def test_next_batch_respects_limits() -> None:
    clock = FakeClock()
    rule = StopRule(min_samples=30, max_samples=40, max_noise=0.01, min_time_s=0, timeout_s=10)
    stopper = Stopper(rule, clock)
    assert stopper.next_batch() == 1
    stopper.add([1.0] * 35)
    clock.now = 35e-6
    assert stopper.next_batch() == 5  # max_samples - n, though n // 4 = 8
    clock.now = 9.9  # 0.28 s per sample: 0.1 s left before the timeout
    assert stopper.next_batch() == 1


def test_invalid_spans_are_rejected() -> None:
    stopper = Stopper(StopRule(min_samples=5), FakeClock())
    with pytest.raises(RuntimeError, match="invalid span"):
        run_until_stopped(stopper, lambda n: [float("nan")] * n)
    with pytest.raises(RuntimeError, match="no samples"):
        run_until_stopped(Stopper(StopRule(min_samples=5), FakeClock()), lambda n: [])


def test_rule_from_the_spec_measure_block() -> None:
    measure = Measure(min_samples=40, max_noise=0.01, timeout_s=5)
    rule = StopRule.from_measure(measure)
    assert rule == StopRule(min_samples=40, max_samples=2000, max_noise=0.01, min_time_s=0.2, timeout_s=5)
    assert StopRule.from_measure(measure.model_dump()) == rule
    assert StopRule.from_measure(Measure(max_median_ci=0)).max_median_ci == 0  # off
    old = {k: v for k, v in measure.model_dump().items() if k != "max_median_ci"}  # a results file of before
    assert StopRule.from_measure(old) == rule
