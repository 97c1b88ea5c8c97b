"""`ssmbench accuracy` on a CPU: a planted biased rounding (always round down, registered through
``SSMBENCH_PLUGINS=test_accuracy``) drifts where the correct stochastic rounding does not; the
Triton stepper follows the reference's; results files round-trip and bad ones are refused; bad
input exits 2. Tiny shapes, few steps."""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.errors import UsageError
from ssmbench.impls.base import register, registered
from ssmbench.impls.reference import SequentialReference
from ssmbench.impls.registry import PLUGINS_ENV, registry
from ssmbench.output.accuracy_report import (
    SCHEMA,
    AccuracyRecord,
    growth_slope,
    load_accuracy,
    summarize_series,
    summary_dicts,
    write_accuracy,
    write_plot,
)
from ssmbench.runs.accuracy.run import AccuracyOptions, accuracy_cases, run_pair
from ssmbench.runs.accuracy.steppers import SequentialStepper
from ssmbench.spec.load import load_sweep_file
from ssmbench_kernels.storage.reference import quantize

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "sweeps" / "smoke.yaml"
CASE = "H4P12N16G2-b4-T4-bf16sr-direct-w4-*"


# -- the planted bias (registered here, and wherever SSMBENCH_PLUGINS names this module) --------


class RoundDownStepper(SequentialStepper):
    """The sequential stepper storing with a biased rounding: always the lower neighbour (SR's
    rule with a uniform of ~1 never rounds up)."""

    def store(self, values: torch.Tensor, sr_step: int):
        return quantize(values, self.case.state_dtype, "sr", torch.full_like(values, 1 - 2**-20))


class RoundDown(SequentialReference):
    name = "test.round_down"

    def accuracy_stepper(self, case, workload) -> RoundDownStepper:
        return RoundDownStepper(case, workload)


if RoundDown.name not in registered():
    register(RoundDown())


def run_cli(*args: str):
    return CliRunner().invoke(app, ["accuracy", *args])


# -- the point of the command ------------------------------------------------------------------


def test_planted_round_down_drifts_where_sr_does_not(tmp_path, monkeypatch):
    monkeypatch.setenv(PLUGINS_ENV, "test_accuracy")
    out = tmp_path / "acc.json"
    result = run_cli(str(SMOKE), "--steps", "48", "--batch", "4", "--case", CASE, "--impl", "reference.sequential",
                     "--impl", "test.round_down", "-o", str(out), "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "test.round_down" in result.output and "results:" in result.output
    rows = {r["impl"]: r for r in summary_dicts(load_accuracy(out).records)}
    sr, down = rows["reference.sequential"]["state"], rows["test.round_down"]["state"]
    # SR: a random walk on the slow-decay heads (slope ~0.5); round-down: a bias that adds up (~1).
    assert sr["slope"] < 0.65, sr
    assert down["slope"] > sr["slope"] + 0.25, (sr, down)
    assert down["last"] > 4 * sr["last"], (sr, down)
    assert rows["test.round_down"]["state_slow"]["last"] > 4 * rows["reference.sequential"]["state_slow"]["last"]


@pytest.mark.parametrize("reference, kernel, case_glob", [
    ("reference.intermediate", "triton.intermediate", "*T4-fp16sr-direct-w4-*"),
    ("reference.replay", "triton.checkpoint", "*T4-int8sr-direct-w4-*"),
])
def test_triton_stepper_follows_the_reference_stepper(reference, kernel, case_glob):
    """Same Philox stream, same stored states: the kernel's state errors equal the reference's
    (y differs by the kernel's act-dtype output rounding), and the errors grow step by step."""
    sweep = load_sweep_file(SMOKE).sweeps[0]
    case = accuracy_cases(sweep, AccuracyOptions(case_glob=case_glob, batch=3))[0]
    impls = registry()
    ref = run_pair(case, impls[reference], 3, torch.device("cpu"))
    tri = run_pair(case, impls[kernel], 3, torch.device("cpu"))
    for r, t in zip(ref, tri, strict=True):
        assert t[1] == pytest.approx(r[1], rel=0.05, abs=1e-7)
        assert t[0] < 1e-2
    assert ref[-1][1] > ref[0][1] > 0


def test_cases_every_format_collapse_pool_modes():
    sweep = load_sweep_file(SMOKE).sweeps[0]
    cases = accuracy_cases(sweep, AccuracyOptions(every_format=True, batch=2, case_glob="*-T1-*-w1-*"))
    labels = [(c.state_dtype, c.rounding) for c in cases]
    assert len(labels) == len(set(labels)) == 9  # direct/pool/padded collapse into one per format
    assert all(c.pool == "direct" and c.batch == 2 and "-b2-" in c.id for c in cases)


# -- summary, results file, plot -----------------------------------------------------------------


def test_growth_slope_and_summary():
    assert growth_slope([0.01 * k for k in range(1, 65)]) == pytest.approx(1.0)
    assert growth_slope([0.01 * math.sqrt(k) for k in range(1, 65)]) == pytest.approx(0.5)
    assert growth_slope([0.0, None]) is None
    s = summarize_series([1e-3, 5e-3, None, 2e-3])
    assert (s.first, s.last, s.worst_step) == (1e-3, 2e-3, 3)


def record(**kw) -> AccuracyRecord:
    base = dict(id="c1", impl="triton.intermediate", sweep="smoke", status="ok", steps=2,
                errors={"y": [1e-3, 2e-3], "state": [1e-3, float("nan")], "state_slow": [1e-3, 1e-3]})
    return AccuracyRecord(**{**base, **kw})


def test_results_round_trip_and_validation(tmp_path):
    out = tmp_path / "a.json"
    write_accuracy(out, {"spec": "smoke", "steps": 2}, [record()])
    back = load_accuracy(out)
    assert back.records[0].errors["state"] == [1e-3, None]  # NaN written as null
    assert back.env["steps"] == 2
    data = json.loads(out.read_text())
    assert data["schema"] == SCHEMA

    def bad(mutate, match):
        d = json.loads(out.read_text())
        mutate(d)
        out.write_text(json.dumps(d))
        with pytest.raises(UsageError, match=match):
            load_accuracy(out)
        write_accuracy(out, {"spec": "smoke"}, [record()])

    bad(lambda d: d.update(schema="ssmbench.results/1"), "expected 'ssmbench.accuracy/1'")
    bad(lambda d: d.pop("records"), "records: expected a list")
    bad(lambda d: d["records"][0]["errors"]["y"].__setitem__(0, "x"), r"records\[0\]\.errors\.y\[0\]")
    bad(lambda d: d["records"][0]["errors"]["y"].pop(), r"records\[0\]\.errors\.y: expected 2 values")
    bad(lambda d: d["records"][0].update(status="weird"), r"records\[0\]\.status")


def test_a_stopped_run_keeps_the_pairs_it_finished(tmp_path, monkeypatch):
    """Ctrl-C in the second pair: the first pair's record is in the results file (complete: false)."""
    import ssmbench.runs.accuracy.run as run_module

    pair = (None, SimpleNamespace(id="c1"), SimpleNamespace(name="triton.intermediate"))
    monkeypatch.setattr(run_module, "planned_pairs", lambda *a: [pair, pair])
    answers = iter([record(seconds=0.5), KeyboardInterrupt()])

    def one_pair(*a):
        answer = next(answers)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    monkeypatch.setattr(run_module, "accuracy_record", one_pair)
    out = tmp_path / "a.json"
    with pytest.raises(KeyboardInterrupt):
        run_module.run_accuracy(load_sweep_file(SMOKE), AccuracyOptions(steps=2), "cpu", out, {},
                                Console(file=io.StringIO()))
    kept = load_accuracy(out)
    assert [r.id for r in kept.records] == ["c1"] and kept.env["complete"] is False


def test_plot_written_or_skipped(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    note = write_plot([record(), record(impl="triton.checkpoint", params={"window": 16, "format": "bf16"})],
                      tmp_path / "a.png")
    assert note.startswith("plot:") and (tmp_path / "a.png").stat().st_size > 0
    (tmp_path / "dir.png").mkdir()  # unwritable: a note (the results are written already), not a traceback
    assert write_plot([record()], tmp_path / "dir.png").startswith("plot skipped: ")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert write_plot([record()], tmp_path / "b.png").startswith("plot skipped: matplotlib")


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "--steps 0"),
    (["--case", "nothing-*"], "nothing to run"),
    (["--impl", "nope"], "--impl nope: unknown"),
    (["--impl", "triton.conv1d", "--case", CASE], "nothing to run"),
])
def test_bad_input_exits_2(tmp_path, args, message):
    result = run_cli(str(SMOKE), "-o", str(tmp_path / "a.json"), "--device", "cpu", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "a.json").exists()
