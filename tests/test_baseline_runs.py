"""Baselines from several runs (docs/gate.md, "Baselines from several runs"): `baseline save RUN
MORE...` stores each pair's median in every run, and `compare` lays its band around the states
the pair was seen in. The case it exists for, as measured on an H200 (session 6): a latency-bound
pair that settles at 8.48 us in some runs and 8.9 us in others, each state tight within its run."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from test_baselines import h100, save  # noqa: F401 - the stored H100 run as a fixture, and writing one
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.errors import UsageError
from ssmbench.output.baselines import save_baseline
from ssmbench.output.compare import (
    SINGLE_RUN,
    Gate,
    RatioInterval,
    baseline_span,
    compare_pair,
    decide_rerun,
    verdict_for,
)
from ssmbench.output.results import CaseRecord, LogContents, load_results
from ssmbench.output.stats import median

GATE = Gate(threshold_pct=3.0, confidence=0.99)


def run_of(center_us: float, seed: int, n: int = 2000, noise: float = 0.03) -> list[float]:
    """A run's samples: tight around its state, skewed up like real spans."""
    rng = np.random.default_rng(seed)
    return [float(x) for x in center_us * (1.0 + np.abs(rng.normal(0.0, noise, n)))]


def record(samples: list[float], run_medians: list[float] | None = None) -> CaseRecord:
    return CaseRecord(id="H16P64N128G1-b4-T6-fp32-pool-w16-hist-pdl-realistic", impl="triton.checkpoint",
                      sweep="nemotron3-super-tp8", status="ok", samples_us=samples, median_us=median(samples),
                      run_medians_us=run_medians or [])


def test_verdicts_with_one_run_are_unchanged() -> None:
    for lo, hi, expected in [(1.031, 1.05, "SLOWER"), (0.95, 0.969, "FASTER"), (0.98, 1.02, "SAME"),
                             (1.01, 1.04, "AMBIGUOUS")]:
        interval = RatioInterval((lo + hi) / 2, lo, hi)
        assert verdict_for(interval, 3.0) == verdict_for(interval, 3.0, SINGLE_RUN) == expected


def test_the_band_is_laid_around_every_state_seen() -> None:
    span = (0.955, 1.0)  # a baseline whose other run sat 4.5% below its own
    assert verdict_for(RatioInterval(0.955, 0.952, 0.958), 3.0, span) == "SAME"  # the other state
    assert verdict_for(RatioInterval(0.955, 0.952, 0.958), 3.0) == "FASTER"  # one run: called faster
    assert verdict_for(RatioInterval(1.05, 1.045, 1.055), 3.0, span) == "SLOWER"  # beyond the slowest
    assert verdict_for(RatioInterval(0.91, 0.905, 0.915), 3.0, span) == "FASTER"  # beyond the fastest
    assert verdict_for(RatioInterval(0.93, 0.92, 0.94), 3.0, span) == "AMBIGUOUS"


def test_two_steady_states_no_longer_read_slower_and_a_real_regression_still_does() -> None:
    low, high = run_of(8.48, 1), run_of(8.90, 2)  # the two states of one pair, two runs
    single = record(low)
    pooled = record(low, [median(low), median(high)])
    assert baseline_span(single) == SINGLE_RUN
    assert baseline_span(pooled)[1] == pytest.approx(median(high) / median(low))
    again_high = record(run_of(8.90, 3))
    assert compare_pair(again_high, single, GATE).verdict == "SLOWER"  # the false alarm of one run
    row = compare_pair(again_high, pooled, GATE)
    assert row.verdict == "SAME" and "baseline runs" in row.note
    assert compare_pair(record(run_of(8.48, 4)), pooled, GATE).verdict == "SAME"
    regressed = record(run_of(8.90 * 1.05, 5))  # a real +5% on the slower state
    assert compare_pair(regressed, pooled, GATE).verdict == "SLOWER"
    improved = record(run_of(8.48 * 0.94, 6))
    assert compare_pair(improved, pooled, GATE).verdict == "FASTER"


def test_rerun_keeps_slower_only_beyond_the_slowest_state() -> None:
    low, high = run_of(8.48, 1), run_of(8.90, 2)
    span = (1.0, median(high) / median(low))
    fresh = [run_of(8.90 * 1.05, 10 + i, n=400) for i in range(3)]
    assert decide_rerun("s", "c", "i", fresh, low, GATE, span).verdict == "SLOWER"
    mixed = [run_of(8.90 * 1.05, 20, n=400), run_of(8.90, 21, n=400), run_of(8.90 * 1.05, 22, n=400)]
    assert decide_rerun("s", "c", "i", mixed, low, GATE, span).verdict != "SLOWER"


def test_save_from_several_runs_stores_each_pairs_medians(h100: LogContents, tmp_path: Path) -> None:  # noqa: F811
    first = save(h100, tmp_path / "a.json")
    other = copy.deepcopy(h100)
    key = next(k for k, r in other.records.items() if r.status == "ok")
    slower = [x * 1.045 for x in other.records[key].samples_us]
    other.records[key].samples_us = slower
    missing = next(k for k, r in other.records.items() if r.status == "ok" and k != key)
    other.records[missing].status, other.records[missing].samples_us = "skip", []
    second = save(other, tmp_path / "b.json")
    result = CliRunner().invoke(app, ["baseline", "save", str(first), str(second), "--dir", str(tmp_path / "base")])
    assert result.exit_code == 0, result.output
    assert "from 2 runs" in result.output
    stored = load_results(next((tmp_path / "base").glob("*/*.json")))
    own = median(h100.records[key].samples_us)
    assert stored.records[key].run_medians_us == [own, median(slower)]
    assert stored.records[key].samples_us == h100.records[key].samples_us  # the first run's samples
    assert stored.records[missing].run_medians_us == []  # seen ok in one run only: a single state
    assert [run["file"] for run in stored.env["baseline_runs"]] == ["a.json", "b.json"]
    assert stored.env["baseline_runs"][0]["gpus"] == sorted(str(d["uuid"]) for d in h100.devices.values())
    new = copy.deepcopy(h100)
    new.records[key].samples_us = [x * 1.045 for x in new.records[key].samples_us]
    again = save(new, tmp_path / "new.json")
    gated = CliRunner().invoke(app, ["compare", str(again), str(next((tmp_path / "base").glob("*/*.json")))])
    assert gated.exit_code == 0, gated.output  # the +4.5% state was seen in the baseline's runs
    alone = CliRunner().invoke(app, ["compare", str(again), str(first)])
    assert alone.exit_code == 1, alone.output  # against one run it reads SLOWER


def test_runs_of_another_sweep_or_gpu_are_refused(h100: LogContents, tmp_path: Path) -> None:  # noqa: F811
    first = save(h100, tmp_path / "a.json")
    other = copy.deepcopy(h100)
    for device in other.devices.values():
        device["name"] = "NVIDIA H200"
    with pytest.raises(UsageError, match="same sweep and GPU model"):
        save_baseline(first, tmp_path / "base", more=[save(other, tmp_path / "b.json")])
    interrupted = copy.deepcopy(h100)
    interrupted.env["complete"] = False
    with pytest.raises(UsageError, match="interrupted"):
        save_baseline(first, tmp_path / "base", more=[save(interrupted, tmp_path / "c.json")])
    assert not (tmp_path / "base").exists()


def test_runs_of_other_workload_draws_are_refused(h100: LogContents, tmp_path: Path) -> None:  # noqa: F811
    """A MORE run that timed other draws of a case (another workload digest) would put another
    workload's median into the band: refused, nothing stored. Without digests (older files) the
    runs are taken as before."""
    stamped = copy.deepcopy(h100)
    for r in stamped.records.values():
        r.workload = "aaaaaaaaaaaa"
    first = save(stamped, tmp_path / "a.json")
    redrawn = copy.deepcopy(stamped)
    next(r for r in redrawn.records.values() if r.status == "ok").workload = "bbbbbbbbbbbb"
    with pytest.raises(UsageError, match="other workload draws"):
        save_baseline(first, tmp_path / "base", more=[save(redrawn, tmp_path / "b.json")])
    assert not (tmp_path / "base").exists()
    unstamped = copy.deepcopy(h100)
    for r in unstamped.records.values():
        r.workload = None
    save_baseline(first, tmp_path / "base", more=[save(unstamped, tmp_path / "c.json")])  # no digests there
