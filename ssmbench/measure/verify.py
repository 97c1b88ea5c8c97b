"""The correctness gate: compare what an impl's chain produced with the fp64 reference.

Truth for a case is computed from the impl's own starting state (each representation — a pool
slot, a checkpoint plus history — stores it with its own rounding) and from the impl's own conv
output (itself checked against the reference conv rounded to the activation dtype). So the tolerances below cover only
what one step of that impl may legitimately differ by: its output dtype and its storage format.

Nothing here knows a family: the reference conv and step come from the case's family module
(`ssmbench.families`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ssmbench.families import reference_step
from ssmbench.families.common import Workload, reference_conv
from ssmbench.spec.case import Case

STATE_TOL: dict[str, float] = {
    "fp64": 1e-12,
    "fp32": 2e-5,  # fp32 accumulation over T tokens
    "bf16": 1.2e-2,  # 2^-8 relative half-ulp steps, one rounding per stored state + fp32 math
    "fp16": 2e-3,  # 2^-11
    "int8": 2e-2,  # one SR step of amax/127 plus math
    "fp8": 0.14,  # e4m3: one SR step is 2^-3 of the value's binade
}
"""Max |impl - ref| / max |ref| allowed for a stored state, by storage format."""

OUT_TOL: dict[str, float] = {"fp32": 1e-4, "bf16": 2e-2, "fp16": 4e-3}
"""Max |impl - ref| / max |ref| for outputs written in the activation dtype."""


@dataclass
class Comparison:
    name: str
    error: float
    tolerance: float
    note: str = ""
    """Set when the impl declared a looser tolerance than the shared one (why, and both values)."""

    @property
    def ok(self) -> bool:
        return bool(self.error <= self.tolerance)  # NaN fails

    def describe(self) -> str:
        return f"{self.name}: {self.error:.2e} (tol {self.tolerance:.1e}{'; ' + self.note if self.note else ''})"


def state_tolerance(case: Case, declared: tuple[float, str] | None) -> tuple[float, str]:
    """The state tolerance for this case and the note that goes with it. A peer impl whose
    arithmetic is documented to be coarser than its storage format (e.g. FlashInfer's fold with
    bf16 operands into an fp32 checkpoint) declares ``(tolerance, reason)`` in its outputs as
    ``state_tolerance``: the case is then judged, timed and flagged, never silently passed. A
    declaration can only loosen, never tighten, and never past the bf16 format's tolerance (a
    wrong slot or ring row is O(1) and still fails)."""
    shared = STATE_TOL[case.state_dtype]
    if declared is None:
        return shared, ""
    tol, reason = declared
    if not shared < tol <= STATE_TOL["bf16"]:
        raise ValueError(f"declared state tolerance {tol:g} for {case.state_dtype}: allowed "
                         f"{shared:g} < tol <= {STATE_TOL['bf16']:g}")
    return tol, f"impl-declared, shared {shared:.0e}: {reason}"


def normalized_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |a - e| / max |e| in fp64; NaN or inf anywhere in ``actual`` gives inf. Computed on
    ``expected``'s device (a batch-1024 state comparison is ~1 GB in fp64: no host round trip)."""
    e = expected.to(torch.float64)
    a = actual.to(device=e.device, dtype=torch.float64)
    if a.shape != e.shape:
        raise ValueError(f"shape mismatch: {tuple(a.shape)} vs {tuple(e.shape)}")
    if not torch.isfinite(a).all():
        return float("inf")
    scale = e.abs().max().item() if e.numel() else 0.0
    diff = (a - e).abs().max().item() if e.numel() else 0.0
    return diff / scale if scale > 0 else diff


def verify(case: Case, workload: Workload, outputs: dict[str, Any]) -> list[Comparison]:
    """Compare an impl's outputs with the reference. Keys an impl may return:

    ``conv_out`` (batch*T, conv_dim), ``conv_state`` (n_slots, conv_dim, S), ``y`` (batch, T, heads,
    dim), ``start_state`` (batch, ...) the state its representation started from (required with
    ``y``/``state_after``), ``state_after`` (batch, ...) the state implied after accepting
    ``accepted`` (batch,) tokens; ``state_tolerance`` (tol, reason) a declared looser state
    tolerance (`state_tolerance`).
    """
    results: list[Comparison] = []
    conv_ref, conv_state_ref = reference_conv(workload)
    act_tol = OUT_TOL[case.act_dtype]
    if "conv_out" in outputs:
        results.append(Comparison("conv_out", normalized_error(outputs["conv_out"], conv_ref), act_tol))
    if "conv_state" in outputs:
        results.append(Comparison("conv_state", normalized_error(outputs["conv_state"], conv_state_ref), 0.0))
    if "y" not in outputs and "state_after" not in outputs:
        return results
    start = outputs["start_state"]
    # The state update is judged on the conv output it was given (already checked above): a
    # one-ulp bf16 difference in conv_out would otherwise masquerade as a state error.
    step_input = outputs["conv_out"].to(conv_ref.device) if "conv_out" in outputs else conv_ref
    y_ref, states_ref = reference_step(workload, step_input, start)
    if "y" in outputs:
        results.append(Comparison("y", normalized_error(outputs["y"], y_ref), act_tol))
    if "state_after" in outputs:
        accepted = outputs["accepted"].to(states_ref.device)
        rows = torch.arange(workload.batch, device=states_ref.device)
        expected = states_ref[rows, (accepted - 1).clamp(min=0)]
        expected[workload.read_slots.to(expected.device) < 0] = 0
        tol, note = state_tolerance(case, outputs.get("state_tolerance"))
        results.append(Comparison(f"state[{case.state_dtype}]", normalized_error(outputs["state_after"], expected),
                                  tol, note))
    return results
