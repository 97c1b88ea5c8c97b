"""The harness side of each family, one module per family (issue 16): `ssmbench.families.mamba2`
(conv1d -> per-token states / trees / checkpoint replay) and `ssmbench.families.gdn` each hold
their family's workload builder, stored pools, byte models and reference step; `common` holds
what they share. This is the one place a case's family name picks its module.
"""

from __future__ import annotations

from types import ModuleType

import torch

from ssmbench.families import gdn, mamba2
from ssmbench.families.common import Workload
from ssmbench.spec.case import Case

FAMILIES: dict[str, ModuleType] = {mamba2.FAMILY: mamba2, gdn.FAMILY: gdn}
"""Family name (``Case.family``) -> its harness module."""


def family_module(family: str) -> ModuleType:
    """The harness module of ``family`` (a case's ``family``)."""
    try:
        return FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown family {family!r} (known: {', '.join(FAMILIES)})") from None


def make_workload(case: Case, device: torch.device | str = "cpu") -> Workload:
    """One decode step's inputs for ``case``, drawn by its family's builder."""
    return family_module(case.family).make_workload(case, device)


def reference_step(workload: Workload, conv_out: torch.Tensor,
                   start_state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp64 outputs (batch, T, heads, dim) and per-token states (batch, T, ...) from ``start_state``
    by the workload's family; padding rows are zero."""
    y, states = family_module(workload.case.family).reference_step(workload, conv_out, start_state)
    pad = workload.read_slots < 0  # type: ignore[attr-defined]
    y[pad] = 0
    states[pad] = 0
    return y, states
