"""Across machines: a machine-wide shift (every pair moved alike) is told apart from a regression of
some pairs, and both runs' calibration is shown. Information only: verdicts and exit codes do not
change. Synthetic records, CPU only."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.output.compare import (
    EXIT_OK,
    EXIT_SLOWER,
    Gate,
    Row,
    compare_results,
    device_calibrations,
    shift_diagnosis,
    to_markdown,
)
from ssmbench.output.results import CaseRecord, LogContents, write_results
from ssmbench.output.stats import median

runner = CliRunner()


def noisy(center: float, seed: int, n: int = 60, spread: float = 0.002) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(x) for x in center * (1 + spread * rng.standard_normal(n))]


def run(factors: list[float], copy_tbps: float, host: str, seed: int) -> LogContents:
    """One run: pair i measured at ``10 * (i + 1) * factors[i]`` us, on a GPU with that copy bandwidth."""
    records = []
    for i, factor in enumerate(factors):
        s = noisy(10.0 * (i + 1) * factor, seed * 1000 + i)
        records.append(CaseRecord(id=f"c{i}", impl="triton.x", sweep="s", status="ok", samples_us=s,
                                  median_us=median(s), n_samples=len(s)))
    device = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "uuid": f"GPU-{host}", "max_sm_mhz": 1980,
              "l2_bytes": 50 << 20, "driver": "580.159.04", "timer": "cupti",
              "bandwidth": {"measured_tbps": copy_tbps, "datasheet_tbps": 3.35}}
    return LogContents({"spec_name": "s", "hostname": host, "complete": True}, {device["uuid"]: device},
                       {r.key: r for r in records})


BASE = run([1.0] * 20, 3.00, "host-a", 1)


def test_machine_wide_shift_is_diagnosed_and_still_slower():
    comparison = compare_results(run([1.05] * 20, 2.85, "host-b", 2), BASE)
    shift = comparison.shift
    assert shift.kind == "machine-wide" and shift.pairs == 20 and shift.same_side == 20
    assert abs(shift.median_pct - 5.0) < 0.3 and shift.spread_pct < 0.5
    assert abs(shift.copy_change_pct - -5.0) < 1e-9
    assert shift.text.startswith("machine-wide shift: all 20 compared pairs moved +5.")
    assert "copy bandwidth differs by -5.0%" in shift.text
    assert comparison.counts["SLOWER"] == 20 and comparison.exit_code == EXIT_SLOWER  # verdicts unchanged


def test_regression_of_some_pairs():
    comparison = compare_results(run([1.10, 1.12] + [1.0] * 18, 3.00, "host-b", 3), BASE)
    shift = comparison.shift
    assert shift.kind == "some-pairs" and shift.slower == 2
    assert shift.text.startswith("regression of some pairs: 2 of 20 pairs SLOWER while the median pair moved")
    assert comparison.exit_code == EXIT_SLOWER


def test_no_shift_and_too_few_pairs():
    comparison = compare_results(run([1.0] * 20, 3.01, "host-b", 4), BASE)
    assert comparison.shift.kind == "none" and comparison.shift.text.startswith("no shift: the median pair moved")
    assert comparison.exit_code == EXIT_OK
    few = compare_results(run([1.05] * 2, 3.0, "b", 5), run([1.0] * 2, 3.0, "a", 6))
    assert few.shift.kind == "too-few"


def test_shift_rule_on_rows():
    """The documented rule on bare rows: |median| > t/2, >= 90% on its side, IQR <= |median|/2."""
    def rows(changes: list[float]) -> list[Row]:
        from ssmbench.output.compare import RatioInterval

        return [Row("s", f"c{i}", "x", "SAME", interval=RatioInterval(1 + c / 100, 1 + c / 100, 1 + c / 100))
                for i, c in enumerate(changes)]

    assert shift_diagnosis(rows([2.0] * 10)).kind == "machine-wide"  # 2% > 3%/2, all together
    assert shift_diagnosis(rows([1.0] * 10)).kind == "none"  # below half the band
    assert shift_diagnosis(rows([2.0] * 8 + [-1.0] * 2)).kind == "none"  # only 80% on one side
    assert shift_diagnosis(rows([0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 2.0, 2.5, 3.5])).kind == "none"  # too spread
    down = shift_diagnosis(rows([-4.0] * 9 + [-3.9]))
    assert down.text.startswith("machine-wide shift: all 10 compared pairs moved -")


def test_calibration_in_console_and_markdown(tmp_path):
    new, old = run([1.05] * 20, 2.85, "host-b", 7), BASE
    cal = device_calibrations(new, "NEW")
    assert cal[0].copy_tbps == 2.85 and cal[0].hostname == "host-b" and cal[0].max_sm_mhz == 1980
    md = to_markdown(compare_results(new, old), "new.json", "old.json", Gate())
    assert "**diagnosis**: machine-wide shift" in md
    assert "- **NEW** GPU NVIDIA H100 80GB HBM3; uuid GPU-host-b; host host-b; copy TB/s 2.850" in md
    assert "- **baseline** GPU NVIDIA H100 80GB HBM3; uuid GPU-host-a; host host-a; copy TB/s 3.000" in md
    paths = []
    for name, results in (("new", new), ("old", old)):
        paths.append(tmp_path / f"{name}.json")
        write_results(paths[-1], results.env, list(results.devices.values()), list(results.records.values()))
    result = runner.invoke(app, ["compare", str(paths[0]), str(paths[1])])
    assert result.exit_code == 1, result.output
    assert "Calibration" in result.output and "host-b" in result.output and "2.850" in result.output
    assert "diagnosis: machine-wide shift: all 20 compared pairs moved +5." in result.output
    assert json.loads(paths[0].read_text())["env"]["gpus"][0]["bandwidth"]["measured_tbps"] == 2.85
