"""The Triton Gated DeltaNet chain as an impl: `triton.gdn` = conv1d (shared kernel, no bias) ->
GDN decode (docs/spec.md §9), PDL-linked when the case asks.

Buffers are allocated once in `build`; the launches only enqueue kernels (no allocation, no host
sync), so the chain can be captured in a CUDA graph. Outputs and the intermediate buffer are
poisoned with NaN so an element the kernels fail to write fails verification.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import ssmbench_kernels.gdn as gdn_pkg
from ssmbench.families import gdn
from ssmbench.families.common import SR_STEP
from ssmbench.families.gdn import GDNWorkload
from ssmbench.impls.base import Chain, Impl, register
from ssmbench.impls.knobs import Knob, KnobSpace
from ssmbench.impls.tuned import Tunable
from ssmbench.spec.case import Case
from ssmbench_kernels.conv1d.kernel import KERNEL_NAMES as CONV1D_KERNELS
from ssmbench_kernels.conv1d.kernel import Conv1dKnobs, conv1d_grid, conv1d_update, default_conv1d_knobs
from ssmbench_kernels.gdn.kernel import GDN_FORMATS, default_gdn_knobs, gdn_decode
from ssmbench_kernels.gdn.kernel import KERNEL_NAMES as GDN_KERNELS
from ssmbench_kernels.storage.reference import StoredState, dequantize


def restore_rows(tensor: torch.Tensor, rows: torch.Tensor) -> Callable[[], None]:
    """A restore that puts back only ``tensor[rows]`` (the slots a step overwrites): a copy of a
    whole pool per timed sample would cost far more than the step (pools are 4x the batch)."""
    saved = tensor.index_select(0, rows)

    def restore() -> None:
        tensor.index_copy_(0, rows, saved)

    return restore


GDN_SPACE = KnobSpace(
    knobs=(
        Knob("block_v", (4, 8, 16, 32, 64), "state rows (value channels) per program; the tile is block_v x "
             "next_pow2(K) (clamped to next_pow2(V))"),
        Knob("num_warps", (1, 2, 4, 8), "warps per program"),
        Knob("stream_tokens", (False, True), "each token's q/k/v/a/b loaded on its own, one token ahead, instead "
             "of all T as blocks picked by one-hot selects (fewer registers and barriers at T > 1; docs/gdn.md)"),
    ),
    # Rows and warps move together (a tile's registers and instructions per element depend on both:
    # from 32 x 8 the one-warp tiles at 32 rows spill, so moving one knob at a time never reached the
    # 8 x 1 / 16 x 1 tiles the H200 measured fastest at T = 1, docs/tuning.md, session 8); then the
    # streamed form with the warps (it pays off with more warps: 74-120 registers at 8 warps at T = 4).
    blocks=(("block_v", "num_warps"), ("stream_tokens", "num_warps")),
)
"""`GDNKnobs` as the tuner sees it (``num_stages`` stays 1: no loop to pipeline)."""


ONE_WAVE_PROGRAMS = 4096
"""conv1d programs (of 2 warps) one wave holds: 32 an SM on 128 SMs (the H100 and H200 have 132).
Qwen3.5's conv1d has 96 a row: one wave up to batch 42."""


class TritonGDN(Impl):
    """docs/spec.md §9 pool-mode GDN decode: read slots, split write slots, padding rows, optional
    per-token states (``intermediate``) and final pool write (``write_final``), fp32 or bf16
    state (RN / SR), in-kernel gates, q/k L2 norm and GVA."""

    name = "triton.gdn"
    family = "gdn"
    kind = "triton"
    tunable = Tunable(name, GDN_SPACE, Path(gdn_pkg.__file__).parent / "tuned",
                      lambda case: default_gdn_knobs(case.shape.num_v_heads, case.shape.head_v_dim,
                                                     case.shape.head_k_dim, case.batch, case.T, case.state_dtype,
                                                     case.rounding))

    def conv_knobs(self, case: Case) -> Conv1dKnobs:
        """The conv1d head's knobs: `conv1d_update`'s default rule, with the PDL trigger only when
        conv1d runs in one wave (`ONE_WAVE_PROGRAMS`). Then the early trigger lets the decode grid
        start and load its state during conv1d (H200, b1 T=1: 5.8 us chain against 7.1 without).
        In more waves it moves no overlap (the decode grid may launch only once the last wave has
        started) and cost conv1d 16 us at T=1 b512 (59.7 -> 43.5 us without it, first or last
        placement alike; docs/gdn.md, session 9). A variant may override it
        (tools/gpu/gdn_forms_plugin.py)."""
        s = case.shape
        default = default_conv1d_knobs(s.conv_dim, case.batch, case.T, s.d_conv)
        blocks, row_groups = conv1d_grid(s.conv_dim, case.batch, default)
        programs = blocks * row_groups
        return dataclasses.replace(default, trigger="first" if programs <= ONE_WAVE_PROGRAMS else "none")

    def supports(self, case: Case) -> str | None:
        if (reason := super().supports(case)) is not None:
            return reason
        if case.state_dtype not in GDN_FORMATS:
            return "GDN state is stored in fp32 or bf16 (docs/spec.md §9)"
        if not 2 <= case.shape.d_conv <= 4:
            return "conv widths 2..4"
        if not (case.option("intermediate", False) or case.option("write_final", True)):
            return "stores no state (intermediate and write_final both off): nothing to verify"
        return None

    def build(self, case: Case, workload: GDNWorkload) -> Chain:
        s, batch, T = workload.shape, workload.batch, case.T
        device = workload.qkv.device
        intermediate = bool(case.option("intermediate", False))
        write_final = bool(case.option("write_final", True))
        real = workload.read_idx >= 0

        pool = gdn.state_pool(case, workload)
        start_rows = pool.data.index_select(0, workload.read_idx.clamp(min=0))
        inter = None
        if intermediate:  # poisoned: an unwritten per-token state shows
            inter = torch.full((batch, T, s.num_v_heads, s.head_v_dim, s.head_k_dim), float("nan"),
                               dtype=pool.data.dtype, device=device)
        conv_state = workload.conv_state.clone()  # updated in place by conv1d
        conv_out = torch.full_like(workload.qkv, float("nan"))
        y = torch.full((batch * T, s.num_v_heads * s.head_v_dim), float("nan"), dtype=workload.qkv.dtype,
                       device=device)
        conv_knobs = self.conv_knobs(case)
        knobs = self.tunable.knobs(case, device)

        def conv(validate: bool = False) -> None:
            conv1d_update(workload.qkv, conv_state, workload.conv_weight, None, workload.read_idx, workload.k_prev,
                          T=T, out=conv_out, pdl=case.pdl, knobs=conv_knobs, validate=validate)

        def decode(validate: bool = False) -> None:
            gdn_decode(pool.data, workload.read_idx, workload.write_idx, conv_out, workload.a, workload.b,
                       workload.A_log, workload.dt_bias, num_k_heads=s.num_k_heads, num_v_heads=s.num_v_heads,
                       head_k_dim=s.head_k_dim, head_v_dim=s.head_v_dim, T=T, scale=case.option("scale"),
                       intermediate=inter, write_final=write_final, out=y, fmt=case.state_dtype,
                       rounding=case.rounding, seed=case.seed, step=SR_STEP, pdl=case.pdl, knobs=knobs,
                       validate=validate)

        # Restores touch only what a step overwrites: the real rows' conv-state slots and the
        # final write slots (the intermediate buffer is written, never read).
        conv_restore = restore_rows(conv_state, workload.read_idx[real])
        pool_restore = restore_rows(pool.data, workload.write_idx[real]) if write_final else None

        def restore() -> None:
            conv_restore()
            if pool_restore is not None:
                pool_restore()

        # Validate the index tensors once, then put every mutated buffer back.
        conv(validate=True)
        decode(validate=True)
        restore()

        def outputs() -> dict[str, Any]:
            after, accepted = gdn.state_after(workload, pool.data, inter)
            return {
                "conv_out": conv_out, "conv_state": conv_state,
                "y": y.view(batch, T, s.num_v_heads, s.head_v_dim),
                "start_state": dequantize(StoredState(start_rows, None, case.state_dtype), torch.float32),
                "state_after": after, "accepted": accepted,
            }

        return Chain([conv, decode], [*CONV1D_KERNELS, *GDN_KERNELS], outputs=outputs, restore=restore)

    def bytes_moved(self, case: Case, workload: GDNWorkload | None = None) -> int:
        return gdn.chain_bytes(case, workload)


register(TritonGDN())
