"""The references driven as impls: the fp64 PyTorch chains (conv1d -> state update) of docs/spec.md §4-9.

They run on any device, and `ssmbench check` cross-checks them against each other through the
same verifier the kernels face (sequential vs intermediate vs the replay formulations).
Each builds its own state representation from the workload, as a kernel impl would.
"""

from __future__ import annotations

from typing import Any

import torch

from ssmbench.case import Case
from ssmbench.impl import Chain, Impl, register
from ssmbench.verify import reference_conv
from ssmbench.workload import GDNWorkload, Mamba2Workload, case_generator
from ssmbench_kernels.gdn.reference import gdn_decode_step
from ssmbench_kernels.mamba2_replay.reference import (
    ReplayState,
    new_replay_state,
    replay_commit,
    replay_implied_state,
    replay_step,
)
from ssmbench_kernels.mamba2_states.reference import mamba2_intermediate_step, mamba2_mtp_step
from ssmbench_kernels.storage.reference import (
    QMAX,
    SCALED_FORMATS,
    StoredState,
    dequantize,
    quantize,
    sr_uniform,
    storage_dtype,
)

SR_STEP = 1
"""The decode step number a checked case's stochastic rounding is keyed by."""


def store_states(states: torch.Tensor, slots: torch.Tensor, case: Case) -> StoredState:
    """Round (batch, ...) states into the case's format, SR keyed by (seed, slot, step)."""
    uniform = None
    if case.rounding == "sr":
        uniform = sr_uniform(case.seed, slots.clamp(min=0), SR_STEP, tuple(states.shape[1:])).to(states.device)
    return quantize(states, case.state_dtype, case.rounding, uniform)


def random_pool(n_slots: int, row_shape: tuple[int, ...], case: Case, device, salt: str) -> StoredState:
    """A pool of random states in the case's format, so a wrong slot read shows in the results.

    Drawn on the pool's device straight in the storage dtype (no fp64 temporaries): pools of the
    big cases hold billions of elements. Only the states rows start from go through `quantize`.
    """
    gen = case_generator(case, salt, device)
    shape = (n_slots, *row_shape)
    fmt = case.state_dtype
    if fmt in SCALED_FORMATS:
        scale = 0.5 + torch.rand(shape[:-1], generator=gen, device=device)
        scale = scale / QMAX[fmt]
        codes = torch.randn(shape, generator=gen, device=device).mul_(QMAX[fmt] / 4).clamp_(-QMAX[fmt], QMAX[fmt])
        data = codes.round_() if fmt == "int8" else codes
        return StoredState(data.to(storage_dtype(fmt)), scale, fmt)
    return StoredState(torch.randn(shape, generator=gen, device=device).to(storage_dtype(fmt)), None, fmt)


def _tokens(t: torch.Tensor | None, workload: Mamba2Workload, *tail: int) -> torch.Tensor | None:
    """(batch*T, ...) activations as (batch, T, *tail)."""
    if t is None:
        return None
    return t.unflatten(0, (workload.batch, workload.case.T)).unflatten(-1, tail) if tail else t.unflatten(
        0, (workload.batch, workload.case.T))


def intermediate_pool(case: Case, workload: Mamba2Workload) -> tuple[StoredState, torch.Tensor]:
    """The docs/spec.md §5 intermediate representation shared by every intermediate impl: a pool of
    ``n_slots + batch*T`` random states with each row's start state stored at its read slot, and
    per-token destination slots dst (batch, T) drawn from the extra region."""
    s, b, T = workload.shape, workload.batch, case.T
    device = workload.xbc.device
    pool = random_pool(workload.n_slots + b * T, (s.nheads, s.head_dim, s.dstate), case, device, "pool")
    real = workload.slot_idx >= 0
    pool[workload.slot_idx[real]] = store_states(workload.start_state[real], workload.slot_idx[real], case)
    gen = case_generator(case, "dst")
    dst = (workload.n_slots + torch.randperm(b * T, generator=gen)).view(b, T).to(device)
    return pool, dst


class _Mamba2Reference(Impl):
    family = "mamba2"
    kind = "reference"

    def inputs(self, workload: Mamba2Workload) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
        """The state-update inputs after the reference conv, plus the conv output and new conv state."""
        conv_out, conv_state = reference_conv(workload)
        x, B, C = workload.views(conv_out)
        s = workload.shape
        args = dict(x=x, dt_raw=_tokens(workload.dt_raw, workload), A=workload.A, B=B, C=C, D=workload.D,
                    dt_bias=workload.dt_bias, z=_tokens(workload.z, workload, s.nheads, s.head_dim))
        return args, conv_out, conv_state

    def row_shape(self, workload: Mamba2Workload) -> tuple[int, int, int]:
        s = workload.shape
        return (s.nheads, s.head_dim, s.dstate)


class SequentialReference(_Mamba2Reference):
    """docs/spec.md §4 token by token from a pool slot; the accepted state is stored (rounded) like a
    kernel that wrote exactly the state it needs."""

    name = "reference.sequential"

    def build(self, case: Case, workload: Mamba2Workload) -> Chain:
        result: dict[str, Any] = {}
        pool = random_pool(workload.n_slots, self.row_shape(workload), case, workload.xbc.device, "pool")
        real = workload.slot_idx >= 0
        pool[workload.slot_idx[real]] = store_states(workload.start_state[real], workload.slot_idx[real], case)

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


def replay_case_reason(case: Case) -> str | None:
    """Why a checkpoint-replay chain cannot run ``case`` (None: it can): shared by every replay impl."""
    if case.window is None:
        return "needs a window"
    if case.option("tree"):
        return "replay keeps a linear history: no draft trees"
    return None


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


def replay_state(case: Case, workload: Mamba2Workload) -> ReplayState:
    """The docs/spec.md §5 replay representation shared by every replay impl: a checkpoint pool of random
    states in the case's format with each row's start state stored at its slot, and a history
    ring (L = W + T rows; x, B in the act dtype, processed dt fp32) holding the workload's pnat
    tokens per row from a random ring start. The implied state of a row is therefore its stored
    start state followed by pnat random history tokens."""
    s, device = workload.shape, workload.xbc.device
    ckpt = random_pool(workload.n_slots, (s.nheads, s.head_dim, s.dstate), case, device, "pool")
    real = workload.slot_idx >= 0
    slots = workload.slot_idx[real]
    ckpt[slots] = store_states(workload.start_state[real], slots, case)
    rs = new_replay_state(ckpt, case.T, case.window, s.ngroups, act_dtype=workload.xbc.dtype,
                          dt_dtype=torch.float32)
    fill_history(rs, slots, workload.pnat[real], case)
    return rs


def fill_history(rs: ReplayState, slots: torch.Tensor, pnat: torch.Tensor, case: Case) -> None:
    """Random ring starts and pnat history tokens (x, B, processed dt in [1e-3, 1e-1])."""
    gen = case_generator(case, "history")
    L = rs.hist_x.shape[1]
    device = rs.hist_x.device
    rs.ring_start[slots] = torch.randint(0, L, (len(slots),), generator=gen).to(device)
    rs.pnat[slots] = pnat.to(device)
    rs.hist_x[slots] = torch.randn(rs.hist_x[slots].shape, generator=gen).to(device, rs.hist_x.dtype)
    rs.hist_B[slots] = torch.randn(rs.hist_B[slots].shape, generator=gen).to(device, rs.hist_B.dtype)
    dt = torch.exp(torch.empty(rs.hist_dt[slots].shape).uniform_(-6.9, -2.3, generator=gen))
    rs.hist_dt[slots] = dt.to(device, rs.hist_dt.dtype)


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
        s = workload.shape
        row_shape = (s.num_v_heads, s.head_v_dim, s.head_k_dim)
        pool = random_pool(workload.n_slots, row_shape, case, workload.qkv.device, "pool")
        real = workload.read_idx >= 0
        pool[workload.read_idx[real]] = store_states(workload.start_state[real], workload.read_idx[real], case)
        intermediate = bool(case.option("intermediate", False))
        write_final = bool(case.option("write_final", True))

        def run() -> None:
            conv_out, conv_state = reference_conv(workload)
            q, k, v = workload.views(conv_out)
            bt = (workload.batch, case.T)
            step = gdn_decode_step(pool, q, k, v, workload.a.unflatten(0, bt), workload.b.unflatten(0, bt),
                                   workload.A_log, workload.dt_bias, workload.read_idx, workload.write_idx,
                                   scale=case.option("scale"), intermediate=intermediate,
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
