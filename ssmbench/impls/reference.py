"""The references driven as impls: the fp64 PyTorch chains (conv1d -> state update) of docs/spec.md §4-9.

They run on any device, and `ssmbench check` cross-checks them against each other through the
same verifier the kernels face (sequential vs intermediate vs the replay formulations).
Each builds its own state representation from the workload, as a kernel impl would, with the
pool builders of its family module (`ssmbench.families.mamba2` / `.gdn`), which the kernel impls
share.
"""

from __future__ import annotations

from typing import Any

import torch

from ssmbench.families import gdn, mamba2
from ssmbench.families.common import SR_STEP, reference_conv, store_states
from ssmbench.families.gdn import GDNWorkload
from ssmbench.families.mamba2 import Mamba2Workload, intermediate_pool, replay_case_reason, replay_state
from ssmbench.impls.base import Chain, Impl, register
from ssmbench.spec.case import Case
from ssmbench_kernels.gdn.reference import gdn_decode_step
from ssmbench_kernels.mamba2_replay.reference import replay_commit, replay_implied_state, replay_step
from ssmbench_kernels.mamba2_states.reference import mamba2_intermediate_step, mamba2_mtp_step
from ssmbench_kernels.storage.reference import dequantize


class _Mamba2Reference(Impl):
    family = "mamba2"
    kind = "reference"

    def inputs(self, workload: Mamba2Workload) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
        """The state-update inputs after the reference conv, plus the conv output and new conv state."""
        return mamba2.reference_inputs(workload)


class SequentialReference(_Mamba2Reference):
    """docs/spec.md §4 token by token from a pool slot; the accepted state is stored (rounded) like a
    kernel that wrote exactly the state it needs."""

    name = "reference.sequential"

    def build(self, case: Case, workload: Mamba2Workload) -> Chain:
        result: dict[str, Any] = {}
        pool = mamba2.state_pool(case, workload)
        real = workload.slot_idx >= 0

        def run() -> None:
            args, conv_out, conv_state = self.inputs(workload)
            y, states = mamba2_mtp_step(pool, workload.slot_idx, **args, parent=workload.parent)
            rows = torch.arange(workload.batch, device=states.device)
            accepted_state = states[rows, workload.accepted - 1]
            stored = dequantize(store_states(accepted_state, workload.slot_idx, case))
            stored[~real] = 0
            start = dequantize(pool[workload.slot_idx.clamp(min=0)])
            result.update(conv_out=conv_out, conv_state=conv_state, y=y, start_state=start,
                          state_after=stored, accepted=workload.accepted)

        return Chain([run], ["reference.sequential"], outputs=lambda: result)


class IntermediateReference(_Mamba2Reference):
    """docs/spec.md §5 intermediate: every per-token state stored to its own pool slot dst[b, t]."""

    name = "reference.intermediate"

    def build(self, case: Case, workload: Mamba2Workload) -> Chain:
        result: dict[str, Any] = {}
        b = workload.batch
        real = workload.slot_idx >= 0
        pool, dst = intermediate_pool(case, workload)

        def run() -> None:
            args, conv_out, conv_state = self.inputs(workload)
            y, new_pool = mamba2_intermediate_step(pool, workload.slot_idx, dst, **args, parent=workload.parent,
                                                   rounding=case.rounding, seed=case.seed, step=SR_STEP)
            rows = torch.arange(b, device=dst.device)
            after = dequantize(new_pool[dst[rows, workload.accepted - 1]])
            after[~real] = 0
            start = dequantize(pool[workload.slot_idx.clamp(min=0)])
            result.update(conv_out=conv_out, conv_state=conv_state, y=y, start_state=start,
                          state_after=after, accepted=workload.accepted)

        return Chain([run], ["reference.intermediate"], outputs=lambda: result)


class ReplayReference(_Mamba2Reference):
    """docs/spec.md §5 checkpoint replay: checkpoint + history ring (window W, pnat from the stationary
    distribution), one step, then the bookkeeping of verification. ``formulation`` picks the
    production mix (auto), fold-then-output everywhere, or the rectangle everywhere."""

    uses_window = True

    def __init__(self, formulation: str) -> None:
        self.formulation = formulation
        self.name = "reference.replay" if formulation == "auto" else f"reference.replay.{formulation}"

    def supports(self, case: Case) -> str | None:
        if (reason := super().supports(case)) is not None:
            return reason
        return replay_case_reason(case)

    def build(self, case: Case, workload: Mamba2Workload) -> Chain:
        result: dict[str, Any] = {}
        rs = replay_state(case, workload)
        start = replay_implied_state(rs, workload.slot_idx, workload.A)

        def run() -> None:
            args, conv_out, conv_state = self.inputs(workload)
            y, must_write, stepped = replay_step(rs, workload.slot_idx, **args, rounding=case.rounding,
                                                 seed=case.seed, step=SR_STEP, formulation=self.formulation)
            committed = replay_commit(stepped, workload.slot_idx, workload.accepted, must_write)
            after = replay_implied_state(committed, workload.slot_idx, workload.A)
            result.update(conv_out=conv_out, conv_state=conv_state, y=y, start_state=start,
                          state_after=after, accepted=workload.accepted, must_write=must_write)

        return Chain([run], [self.name], outputs=lambda: result)


class GDNReference(Impl):
    """docs/spec.md §9 pool-mode GDN decode (reads read_idx, writes write_idx, optional per-token states)."""

    name = "reference.gdn"
    family = "gdn"
    kind = "reference"

    def supports(self, case: Case) -> str | None:
        if (reason := super().supports(case)) is not None:
            return reason
        if case.state_dtype not in ("fp32", "bf16"):
            return "GDN state is stored in fp32 or bf16 (docs/spec.md §9)"
        return None

    def build(self, case: Case, workload: GDNWorkload) -> Chain:
        result: dict[str, Any] = {}
        pool = gdn.state_pool(case, workload)
        real = workload.read_idx >= 0
        intermediate = bool(case.option("intermediate", False))
        write_final = bool(case.option("write_final", True))

        def run() -> None:
            conv_out, conv_state = reference_conv(workload)
            q, k, v, a, b = gdn.step_inputs(workload, conv_out)
            step = gdn_decode_step(pool, q, k, v, a, b, workload.A_log, workload.dt_bias, workload.read_idx,
                                   workload.write_idx, scale=case.option("scale"), intermediate=intermediate,
                                   write_final=write_final, rounding=case.rounding, seed=case.seed,
                                   step=SR_STEP)
            start = dequantize(pool[workload.read_idx.clamp(min=0)])
            result.update(conv_out=conv_out, conv_state=conv_state, y=step.o, start_state=start)
            rows = torch.arange(workload.batch, device=start.device)
            if intermediate:
                after = dequantize(step.intermediate)[rows, workload.accepted - 1]
                accepted = workload.accepted
            elif write_final:
                after = dequantize(step.pool[workload.write_idx.clamp(min=0)])
                accepted = torch.full_like(workload.accepted, case.T)
            else:
                return
            after[~real] = 0
            result.update(state_after=after, accepted=accepted)

        return Chain([run], ["reference.gdn"], outputs=lambda: result)


for _impl in (SequentialReference(), IntermediateReference(), ReplayReference("auto"), ReplayReference("fold"),
              ReplayReference("rectangle"), GDNReference()):
    register(_impl)
