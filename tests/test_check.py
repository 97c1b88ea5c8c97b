"""`ssmbench check`: the references agree with each other, and a wrong impl is caught."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.families import make_workload
from ssmbench.impls.base import Chain
from ssmbench.impls.reference import GDNReference, IntermediateReference, ReplayReference
from ssmbench.runs.check import check_pair
from ssmbench.spec.expand import expand
from ssmbench.spec.load import load_sweep_file

SMOKE = Path(__file__).resolve().parent.parent / "sweeps" / "smoke.yaml"


def smoke_case(part: int, pattern: str):
    sweep = load_sweep_file(SMOKE).sweeps[part]
    return next(c for c in expand(sweep).cases if pattern in c.id)


class Perturbed(IntermediateReference):
    """An intermediate impl with one planted bug, to show the gate can fail."""

    def __init__(self, bug: str) -> None:
        self.bug = bug

    def build(self, case, workload) -> Chain:
        chain = super().build(case, workload)
        out = chain.outputs()

        def outputs():
            result = dict(out)
            if self.bug == "y":
                result["y"] = result["y"] * 1.05
            elif self.bug == "state":
                result["state_after"] = result["state_after"].roll(1, dims=0)  # wrong row's state
            elif self.bug == "nan":
                result["y"] = result["y"].clone()
                result["y"][0, 0, 0, 0] = float("nan")
            elif self.bug == "conv_state":
                result["conv_state"] = result["conv_state"].clone()
                result["conv_state"][0, 0, 0] += 1
            return result

        return Chain(chain.launches, chain.kernel_names, outputs)


@pytest.mark.parametrize("bug", ["y", "state", "nan", "conv_state"])
def test_planted_bugs_fail(bug: str) -> None:
    case = smoke_case(0, "T4-bf16-pool-w4")
    result = check_pair(case, Perturbed(bug), make_workload(case))
    assert result.status == "fail", result


def test_exceptions_are_recorded_not_raised() -> None:
    case = smoke_case(0, "T4-fp32-pool-w4")

    class Broken(IntermediateReference):
        def build(self, case, workload):
            raise RuntimeError("boom")

    result = check_pair(case, Broken(), make_workload(case))
    assert result.status == "error" and "boom" in result.message


@pytest.mark.parametrize("pattern", ["T4-int8sr-padded-w8", "T4-fp8-pool-w4", "T1-fp16sr-padded-w1"])
def test_replay_formulations_pass(pattern: str) -> None:
    case = smoke_case(0, pattern)
    workload = make_workload(case)
    for formulation in ("auto", "fold", "rectangle"):
        result = check_pair(case, ReplayReference(formulation), workload)
        assert result.status == "ok", result


def test_gdn_split_padded() -> None:
    case = smoke_case(1, "T5-bf16sr-split")
    assert check_pair(case, GDNReference(), make_workload(case)).status == "ok"


def test_padding_rows_really_padded() -> None:
    case = smoke_case(0, "T4-fp32-padded-w4")
    wl = make_workload(case)
    assert (wl.slot_idx < 0).any() and (wl.slot_idx >= 0).any()


def test_cli_check_line_and_exit_code() -> None:
    result = CliRunner().invoke(app, ["check", str(SMOKE), "--case", "*T4-bf16-*-w4-*",
                                      "--impl", "reference.intermediate", "--impl", "reference.replay"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == "4 passed, 0 failed, 0 errors"
    bad = CliRunner().invoke(app, ["check", str(SMOKE), "--impl", "reference.nope"])
    assert bad.exit_code == 2 and "unknown" in bad.output


def test_workload_reproducible() -> None:
    case = smoke_case(0, "T4-fp32-pool-w4")
    a, b = make_workload(case), make_workload(case)
    assert torch.equal(a.xbc, b.xbc) and torch.equal(a.slot_idx, b.slot_idx) and torch.equal(a.pnat, b.pnat)


def test_declared_state_tolerance_loosens_only_within_bounds_and_is_flagged() -> None:
    """A peer may declare a looser state tolerance (documented arithmetic), never a tighter one or
    one that would hide a wrong row; the comparison carries the note, so reports flag it."""
    from ssmbench.measure.verify import STATE_TOL, state_tolerance, verify

    case = smoke_case(0, "T4-fp32-pool-w4")
    assert state_tolerance(case, None) == (STATE_TOL["fp32"], "")
    tol, note = state_tolerance(case, (4e-3, "bf16 fold operands"))
    assert tol == 4e-3 and "bf16 fold operands" in note
    for bad in (1e-6, 0.5):
        with pytest.raises(ValueError, match="allowed"):
            state_tolerance(case, (bad, "x"))
    workload = make_workload(case)
    chain = IntermediateReference().build(case, workload)
    chain()
    outputs = dict(chain.outputs())
    outputs["state_after"] = outputs["state_after"] * (1 + 1e-3)  # a bf16-sized error: fails fp32's 2e-5
    plain = {c.name: c for c in verify(case, workload, outputs)}
    assert not plain["state[fp32]"].ok
    outputs["state_tolerance"] = (4e-3, "bf16 fold operands")
    declared = {c.name: c for c in verify(case, workload, outputs)}
    assert declared["state[fp32]"].ok and "bf16 fold operands" in declared["state[fp32]"].describe()
    outputs["state_after"] = outputs["state_after"].roll(1, dims=0)  # a wrong row still fails
    assert not {c.name: c for c in verify(case, workload, outputs)}["state[fp32]"].ok
