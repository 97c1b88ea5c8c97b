"""The Triton Mamba-2 chains as impls: `triton.conv1d` (the conv1d update alone) and
`triton.intermediate` (conv1d -> per-token-state kernel, PDL-linked when the case asks).

Buffers are allocated once in `build`; the launches only enqueue kernels (no allocation, no
host sync), so the chain can be captured in a CUDA graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import ssmbench_kernels.mamba2_states as mamba2_states_pkg
from ssmbench.families.common import SR_STEP
from ssmbench.families.mamba2 import Mamba2Workload, conv_chain_bytes, intermediate_chain_bytes, intermediate_pool
from ssmbench.impls.base import Chain, Impl, register, snapshot
from ssmbench.impls.knobs import Knob, KnobSpace
from ssmbench.impls.tuned import Tunable
from ssmbench.spec.case import Case
from ssmbench_kernels.conv1d.kernel import KERNEL_NAMES as CONV1D_KERNELS
from ssmbench_kernels.conv1d.kernel import Conv1dKnobs, conv1d_update, default_conv1d_knobs
from ssmbench_kernels.mamba2_states.kernel import KERNEL_NAMES as INTERMEDIATE_KERNELS
from ssmbench_kernels.mamba2_states.kernel import default_knobs, mamba2_intermediate
from ssmbench_kernels.storage.reference import StoredState, dequantize


class ConvHead:
    """The conv1d head shared by every Triton Mamba-2 chain: its buffers and its launch."""

    def __init__(self, case: Case, workload: Mamba2Workload, *, pdl_dependents: bool,
                 knobs: Conv1dKnobs | None = None) -> None:
        """``knobs``: the conv1d knobs (None: `conv1d_update`'s default rule)."""
        self.workload = workload
        self.conv_state = workload.conv_state.clone()  # updated in place by the kernel
        self.conv_out = torch.full_like(workload.xbc, float("nan"))  # poisoned: unwritten shows
        self.knobs = knobs
        self.pdl = case.pdl and pdl_dependents
        self.T = case.T

    def launch(self, validate: bool = False) -> None:
        wl = self.workload
        conv1d_update(wl.xbc, self.conv_state, wl.conv_weight, wl.conv_bias, wl.slot_idx, wl.k_prev, T=self.T,
                      out=self.conv_out, pdl=self.pdl, knobs=self.knobs, validate=validate)


class _TritonMamba2(Impl):
    """What every Triton Mamba-2 chain shares: the family and the conv1d head's limits."""

    family = "mamba2"
    kind = "triton"

    def supports(self, case: Case) -> str | None:
        if (reason := super().supports(case)) is not None:
            return reason
        if not 2 <= case.shape.d_conv <= 4:
            return "conv widths 2..4"
        return None

    def conv_knobs(self, case: Case) -> Conv1dKnobs:
        """The conv1d head's knobs for ``case``: `conv1d_update`'s default rule. Variants that time
        other forms side by side override it or change its fields (tools/gpu/conv1d_forms_plugin.py,
        tools/gpu/picked.py's `ConvChanges`)."""
        s = case.shape
        return default_conv1d_knobs(s.conv_dim, case.batch, case.T, s.d_conv)


class TritonConv1d(_TritonMamba2):
    """docs/spec.md §6 conv1d update alone (the head of every chain)."""

    name = "triton.conv1d"

    def build(self, case: Case, workload: Mamba2Workload) -> Chain:
        head = ConvHead(case, workload, pdl_dependents=False, knobs=self.conv_knobs(case))
        head.launch(validate=True)  # validate once, on the real indices, outside any timed loop
        head.conv_state.copy_(workload.conv_state)

        def outputs() -> dict[str, Any]:
            return {"conv_out": head.conv_out, "conv_state": head.conv_state}

        return Chain([head.launch], list(CONV1D_KERNELS), outputs=outputs, restore=snapshot(head.conv_state))

    def bytes_moved(self, case: Case, workload: Mamba2Workload | None = None) -> int:
        return conv_chain_bytes(case, workload)


INTERMEDIATE_SPACE = KnobSpace(
    knobs=(
        Knob("block_p", (1, 2, 4, 8, 16, 32), "head channels per program; the state tile is block_p x next_pow2(N) "
             "(clamped to next_pow2(P))"),
        Knob("num_warps", (1, 2, 4, 8), "warps per program"),
    ),
)
"""`IntermediateKnobs` as the tuner sees it (``num_stages`` is left at 1: the kernel has no loop to
pipeline)."""


class TritonIntermediate(_TritonMamba2):
    """docs/spec.md §5 intermediate: conv1d -> one launch over all T tokens storing every per-token state
    (storage formats of docs/spec.md §8, SR in software), tree parents when the sweep asks for trees."""

    name = "triton.intermediate"
    tunable = Tunable(name, INTERMEDIATE_SPACE, Path(mamba2_states_pkg.__file__).parent / "tuned",
                      lambda case: default_knobs(case.shape, case.batch, case.T, case.state_dtype, case.rounding))

    def build(self, case: Case, workload: Mamba2Workload) -> Chain:
        s, b, T = workload.shape, workload.batch, case.T
        head = ConvHead(case, workload, pdl_dependents=True, knobs=self.conv_knobs(case))
        pool, dst = intermediate_pool(case, workload)
        initial = pool.clone()
        y = torch.full((b * T, s.nheads * s.head_dim), float("nan"), dtype=workload.xbc.dtype,
                       device=workload.xbc.device)  # poisoned: unwritten elements show
        knobs = self.tunable.knobs(case, workload.xbc.device)

        def state_update(validate: bool = False) -> None:
            mamba2_intermediate(pool.data, pool.scale, workload.slot_idx, dst, head.conv_out, workload.dt_raw,
                                workload.A, workload.D, workload.dt_bias, nheads=s.nheads, head_dim=s.head_dim,
                                dstate=s.dstate, ngroups=s.ngroups, T=T, z=workload.z, parent=workload.parent,
                                y=y, fmt=case.state_dtype, rounding=case.rounding, seed=case.seed, step=SR_STEP,
                                pdl=case.pdl, knobs=knobs, validate=validate)

        # Validate the index tensors once, then put every mutated buffer back.
        head.launch(validate=True)
        state_update(validate=True)
        head.conv_state.copy_(workload.conv_state)
        _copy_into(pool, initial)

        def outputs() -> dict[str, Any]:
            return per_token_state_outputs(head, y, pool, initial, dst, workload)

        # Each sample starts from the same conv state; the pool needs no restore: the kernel reads
        # src slots and writes only dst slots, which nothing reads.
        return Chain([head.launch, state_update], [*CONV1D_KERNELS, *INTERMEDIATE_KERNELS], outputs=outputs,
                     restore=snapshot(head.conv_state))

    def bytes_moved(self, case: Case, workload: Mamba2Workload | None = None) -> int:
        return intermediate_chain_bytes(case, workload)


def per_token_state_outputs(head: ConvHead, y: torch.Tensor, pool: StoredState, initial: StoredState,
                            dst: torch.Tensor, workload: Mamba2Workload) -> dict[str, Any]:
    """What a per-token-state chain left, for `verify`: the state at the accepted token's
    destination slot (``dst[b, k-1]``), zeros for padding rows, and the start state it read."""
    s, b, T = workload.shape, workload.batch, workload.case.T
    rows = torch.arange(b, device=dst.device)
    after = dequantize(pool[dst[rows, workload.accepted - 1]])
    after[workload.slot_idx < 0] = 0
    return {
        "conv_out": head.conv_out, "conv_state": head.conv_state,
        "y": y.view(b, T, s.nheads, s.head_dim),
        "start_state": dequantize(initial[workload.slot_idx.clamp(min=0)]),
        "state_after": after, "accepted": workload.accepted,
    }


def _copy_into(dst: StoredState, src: StoredState) -> None:
    dst.data.copy_(src.data)
    if dst.scale is not None:
        dst.scale.copy_(src.scale)


for _impl in (TritonConv1d(), TritonIntermediate()):
    register(_impl)
