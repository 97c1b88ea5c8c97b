"""`triton.checkpoint`: the Triton checkpoint-replay chain (docs/spec.md §5), conv1d -> precompute -> main,
or conv1d -> fused (docs/spec.md §7's one-kernel variant, `CheckpointKnobs.fused`: the default on the GPU),
PDL-linked when the case asks (docs/spec.md §7). The window axis is a case parameter: W = T is classic
replay, W = 16 the checkpointing variant.

The chain starts from exactly the reference's replay state (`ssmbench.families.mamba2.replay_state`:
same checkpoint pool, ring starts, pnat and history), held in device buffers the kernels update
in place. Buffers are allocated once in `build`; the launches only enqueue kernels, so the chain
is captured in a CUDA graph. The bookkeeping of verification (`ssmbench_kernels.mamba2_replay.kernel.commit`)
is not part of the timed chain: `outputs` applies it to copies to get the implied state after
accepting the workload's k tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import ssmbench_kernels.mamba2_replay as mamba2_replay_pkg
from ssmbench.families.common import SR_STEP
from ssmbench.families.mamba2 import Mamba2Workload, checkpoint_chain_bytes, replay_case_reason, replay_state
from ssmbench.impls.base import Chain, register
from ssmbench.impls.knobs import Constraint, Knob, KnobSpace
from ssmbench.impls.triton_mamba import ConvHead, _TritonMamba2
from ssmbench.impls.tuned import Tunable
from ssmbench.spec.case import Case
from ssmbench_kernels.conv1d.kernel import KERNEL_NAMES as CONV1D_KERNELS
from ssmbench_kernels.conv1d.kernel import validate_conv1d_inputs
from ssmbench_kernels.mamba2_replay.kernel import (
    commit,
    default_knobs,
    kernel_names,
    make_scratch,
    replay_step,
    validate_replay_inputs,
)
from ssmbench_kernels.mamba2_replay.reference import ReplayState, replay_implied_state


def _dot_form(config: dict) -> bool:
    return bool(config["fused"] or config["bandwidth"])


def _two_kernel(config: dict) -> bool:
    return not config["fused"]


def _bandwidth_main(config: dict) -> bool:
    return bool(config["bandwidth"] and not config["fused"])


CHECKPOINT_SPACE = KnobSpace(
    knobs=(
        Knob("fused", (False, True), "one kernel (docs/spec.md §7's variant) instead of precompute + main"),
        Knob("bandwidth", (False, True), "two-kernel form with the bandwidth-first main (kernel_bw.py); else the "
             "rank-1 main", active=_two_kernel, active_doc="two-kernel form"),
        Knob("block_p", (4, 8, 16, 32, 64), "head channels per main (or fused) program"),
        Knob("num_warps", (1, 2, 4, 8), "warps per main (or fused) program"),
        Knob("precision", ("ieee", "tf32x3"), "tl.dot input precision of the fused form's fp32 fold operands",
             active=lambda c: c["fused"], active_doc="fused"),
        Knob("ring_rows", (False, True), "fused form: the history read by ring row before pnat / ring_start arrive",
             active=lambda c: c["fused"], active_doc="fused", legacy=False),
        Knob("max_regs", (0, 64, 80, 128, 168), "registers per thread cap (ptxas maxnreg; 0: the compiler's choice)",
             active=_dot_form, active_doc="fused or bandwidth"),
        Knob("n_tile", (0, 16, 32, 64), "state columns per step of the bandwidth main (0: whole rows)",
             active=_bandwidth_main, active_doc="bandwidth main", legacy=0),
        Knob("stages", (1, 2, 3, 4), "pipeline depth of the bandwidth main's column-tile loop",
             active=lambda c: _bandwidth_main(c) and c["n_tile"] > 0, active_doc="bandwidth main with n_tile",
             legacy=1),
        Knob("rect_outputs", (False, True), "bandwidth main: every row's outputs from S_ckpt, S C^T outside the "
             "tile loop's branch", active=_bandwidth_main, active_doc="bandwidth main", legacy=False),
        Knob("split_loops", (False, True), "bandwidth main: write and nowrite rows in their own tile loops (nowrite "
             "rows skip the fold operands)", active=_bandwidth_main, active_doc="bandwidth main", legacy=False),
        Knob("prefetch", (False, True), "bandwidth main: the program's state tile into L2 before the grid-dependency "
             "wait", active=_bandwidth_main, active_doc="bandwidth main", legacy=False),
        Knob("tma", (False, True), "bandwidth main: the state tiles by tensor descriptor (TMA) instead of per-thread "
             "loads", active=_bandwidth_main, active_doc="bandwidth main", legacy=False),
        Knob("pre_heads", (1, 2, 4, 8, 16), "heads of one group per precompute program (CB computed once for "
             "them)", active=_two_kernel, active_doc="two-kernel form"),
        Knob("pre_warps", (1, 2, 4, 8), "warps per precompute program",
             active=_two_kernel, active_doc="two-kernel form"),
    ),
    constraints=(
        Constraint("block_p >= 16 in the dot forms (fused or bandwidth): tl.dot needs 16 rows",
                   lambda c: not _dot_form(c) or c["block_p"] >= 16),
        Constraint("pipelined 32-column tiles only with rect_outputs: in the other form they fault on the H200 "
                   "under Triton 3.6 (illegal shared-memory reads by the warpgroup MMA, wrong outputs; session 11)",
                   lambda c: not _bandwidth_main(c) or c["n_tile"] != 32 or c["stages"] == 1 or c["rect_outputs"]),
        Constraint("register caps below 128 only on column tiles: whole rows do not fit 64 or 80 registers (ptxas "
                   "fails; session 12)",
                   lambda c: not _dot_form(c) or c["max_regs"] == 0 or c["max_regs"] >= 128
                   or (_bandwidth_main(c) and c["n_tile"] > 0)),
        Constraint("split_loops without rect_outputs: split loops take write rows' outputs from S' (the pair lost "
                   "on the H200 in both forms tried: write loop at 128 registers, session 12; an outputs loop and "
                   "a fold pass, 0.72-1.02, session 13)",
                   lambda c: not _bandwidth_main(c) or not (c["split_loops"] and c["rect_outputs"])),
        Constraint("64-column tiles unpipelined (stages 1): pipelined, they gave wrong outputs on the H200 in both "
                   "forms (session 11)",
                   lambda c: not _bandwidth_main(c) or c["n_tile"] != 64 or c["stages"] == 1),
    ),
    blocks=(("fused", "bandwidth", "block_p"), ("n_tile", "stages", "rect_outputs", "split_loops", "prefetch"),
            ("pre_heads", "pre_warps")),
)
"""`CheckpointKnobs` as the tuner sees it: the form and its tile move together (a form change
alone often breaks the tile constraint); one-pass ``tf32`` is left out (outside the fp32 contract).
Three forms: fused (the default but at W = T from batch 64), the rank-1 two-kernel main (the
default at W = T from batch 64) and the bandwidth-first main (the H200 table's pick from batch 64),
whole rows or column tiles (session 11).
The two-kernel `tl.dot` main and the persistent variants were removed in session 7 (issue 19: no
default or table picked them)."""


class TritonCheckpoint(_TritonMamba2):
    """docs/spec.md §5 checkpoint replay: conv1d -> precompute (dt, decays, CB, B/dt appends) -> main (fold
    and checkpoint store on write rows, outputs by dots, x append); every storage format of docs/spec.md §8."""

    name = "triton.checkpoint"
    uses_window = True
    tunable = Tunable(name, CHECKPOINT_SPACE, Path(mamba2_replay_pkg.__file__).parent / "tuned",
                      lambda case: default_knobs(case.batch, case.state_dtype, case.rounding, case.shape.head_dim,
                                                 window=case.window, T=case.T), uses_window=True)

    def supports(self, case: Case) -> str | None:
        if (reason := super().supports(case)) is not None:
            return reason
        return replay_case_reason(case)

    def build(self, case: Case, workload: Mamba2Workload) -> Chain:
        s, b, T = workload.shape, workload.batch, case.T
        slot_idx = workload.slot_idx
        head = ConvHead(case, workload, pdl_dependents=True, knobs=self.conv_knobs(case))
        rs = replay_state(case, workload)
        start = replay_implied_state(rs, slot_idx, workload.A)
        device = workload.xbc.device
        y = torch.full((b * T, s.nheads * s.head_dim), float("nan"), dtype=workload.xbc.dtype,
                       device=device)  # poisoned: unwritten elements show
        scratch = make_scratch(b, s.nheads, T, case.window, device)
        knobs = self.tunable.knobs(case, device)

        def step(launch: str) -> None:
            replay_step(rs, slot_idx, head.conv_out, workload.dt_raw, workload.A, workload.D, workload.dt_bias,
                        nheads=s.nheads, head_dim=s.head_dim, dstate=s.dstate, ngroups=s.ngroups, T=T, y=y,
                        scratch=scratch, z=workload.z, rounding=case.rounding, seed=case.seed, step=SR_STEP,
                        pdl=case.pdl, knobs=knobs, validate=False, launch=launch)

        def precompute() -> None:
            step("precompute")

        def main() -> None:
            step("main")

        # Only the rows' own slots change: save those and copy them back (device copies only).
        slots = slot_idx[slot_idx >= 0]
        mutated = [rs.ckpt.data, rs.ckpt.scale, rs.hist_x, rs.hist_B, rs.hist_dt, head.conv_state]
        # (fp8 has no index_copy on the CPU: move its bytes.)
        mutated = [t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t for t in mutated if t is not None]
        saved = [(t, t.index_select(0, slots)) for t in mutated]

        def restore() -> None:
            for live, rows in saved:
                live.index_copy_(0, slots, rows)

        # Validate the indices and bookkeeping once (host checks, outside any timed loop).
        validate_conv1d_inputs(head.conv_state, slot_idx, workload.k_prev, T)
        validate_replay_inputs(rs, slot_idx, T)

        def outputs() -> dict[str, Any]:
            real = slot_idx >= 0
            must_write = (rs.pnat[slot_idx.clamp(min=0)] + T > case.window) & real
            committed = ReplayState(rs.ckpt, rs.hist_x, rs.hist_B, rs.hist_dt, rs.ring_start.clone(),
                                    rs.pnat.clone(), rs.window)
            commit(committed, slot_idx, workload.accepted, T)
            return {
                "conv_out": head.conv_out, "conv_state": head.conv_state,
                "y": y.view(b, T, s.nheads, s.head_dim), "start_state": start,
                "state_after": replay_implied_state(committed, slot_idx, workload.A),
                "accepted": workload.accepted, "must_write": must_write,
            }

        # The fused form (docs/spec.md §7's one-kernel variant) launches only main's kernel.
        launches = [head.launch, main] if knobs.fused else [head.launch, precompute, main]
        return Chain(launches, [*CONV1D_KERNELS, *kernel_names(knobs)], outputs=outputs, restore=restore)

    def bytes_moved(self, case: Case, workload: Mamba2Workload | None = None) -> int:
        """conv1d plus the replay form the default knobs pick for this case (one fused kernel, or
        precompute + main with the coefficients between them): `mamba2.checkpoint_chain_bytes`."""
        return checkpoint_chain_bytes(case, workload)


register(TritonCheckpoint())
