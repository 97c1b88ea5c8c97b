"""The Mamba-2 chain as the harness sees it (docs/spec.md §4-8): conv1d -> the state update, in its
three forms (token by token, per-token states / draft trees, checkpoint replay). Everything a
change to the family touches on the harness side lives here: the workload builder, the stored
pools every impl of the family starts from, the byte model of each chain form and the reference
step verification judges against. The kernels and their fp64 references live in
kernels/ssmbench_kernels/{conv1d,mamba2_states,mamba2_replay}/.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ssmbench.families.common import (
    ACT_DTYPES,
    INDEX_BYTES,
    Workload,
    act_bytes,
    case_generator,
    conv1d_bytes,
    conv_params,
    draw_slots,
    inverse_softplus,
    real_rows,
    reference_conv,
    slot_pool,
    state_bytes,
    to_device,
    uniform,
)
from ssmbench.spec.accept import draw_k, draw_pnat, stationary_pnat
from ssmbench.spec.case import Case
from ssmbench.spec.presets import Mamba2Shape
from ssmbench_kernels.mamba2_replay.reference import ReplayState, new_replay_state
from ssmbench_kernels.mamba2_states.reference import mamba2_recurrence
from ssmbench_kernels.storage.reference import StoredState

FAMILY = "mamba2"
CONV_HAS_BIAS = True


# ---------------------------------------------------------------------------------------------
# The workload
# ---------------------------------------------------------------------------------------------

@dataclass
class Mamba2Workload(Workload):
    """One Mamba-2 decode step (docs/spec.md §4-6). Activations are (batch*T, ...) row-major, token-minor
    within a request, exactly as in_proj writes them. ``start_state`` is (batch, H, P, N) fp32."""

    shape: Mamba2Shape
    xbc: torch.Tensor  # (batch*T, conv_dim) act: conv input (in_proj output slice)
    z: torch.Tensor | None  # (batch*T, H*P) act
    dt_raw: torch.Tensor  # (batch*T, H) act
    conv_bias: torch.Tensor  # (conv_dim,) act
    A: torch.Tensor  # (H,) fp32, negative
    D: torch.Tensor  # (H,) fp32
    dt_bias: torch.Tensor  # (H,) fp32
    slot_idx: torch.Tensor  # (batch,) int64, -1 = padding
    pnat: torch.Tensor | None  # (batch,) int64 for replay cases: history tokens not yet folded
    parent: torch.Tensor | None  # (batch, T) int64 tree parents, None = linear chain

    @property
    def read_slots(self) -> torch.Tensor:
        """The slot each row reads (< 0: padding), under the name both families share."""
        return self.slot_idx

    def views(self, conv_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (batch, T, H, P), B and C (batch, T, G, N) as views of a (batch*T, conv_dim) tensor."""
        s, b, T = self.shape, self.batch, self.case.T
        hp, gn = s.nheads * s.head_dim, s.ngroups * s.dstate
        x = conv_out[:, :hp].unflatten(0, (b, T)).unflatten(-1, (s.nheads, s.head_dim))
        B = conv_out[:, hp:hp + gn].unflatten(0, (b, T)).unflatten(-1, (s.ngroups, s.dstate))
        C = conv_out[:, hp + gn:].unflatten(0, (b, T)).unflatten(-1, (s.ngroups, s.dstate))
        return x, B, C

    def conv_input(self) -> torch.Tensor:
        """The conv input as the kernels see it: (batch, conv_dim, T), a strided view."""
        return self.xbc.unflatten(0, (self.batch, self.case.T)).transpose(1, 2)


def make_mamba2_workload(case: Case, device: torch.device | str = "cpu") -> Mamba2Workload:
    """Draw a Mamba-2 step: A = -exp(U(0, log 16)), dt_bias so that softplus(dt) lands in
    [1e-3, 1e-1], states ~ N(0, 1) scaled per head, inputs ~ N(0, 1)."""
    s: Mamba2Shape = case.shape  # type: ignore[assignment]
    gen = case_generator(case)
    act = ACT_DTYPES[case.act_dtype]
    bt = case.batch * case.T
    slot_idx, n_slots = draw_slots(case, gen)
    weight, conv_state = conv_params(gen, s.conv_dim, s.d_conv, n_slots, case.T, act,
                                     state_gen=case_generator(case, "conv_state", device))
    dt_target = torch.exp(uniform(gen, (s.nheads,), math.log(1e-3), math.log(1e-1)))
    tree = bool(case.option("tree", False))
    parent = _random_tree(case.batch, case.T, gen) if tree else None
    window = case.window if case.window is not None else case.T
    wl = Mamba2Workload(
        case=case, shape=s,
        xbc=torch.randn(bt, s.conv_dim, generator=gen, dtype=torch.float64).to(act),
        z=torch.randn(bt, s.nheads * s.head_dim, generator=gen).to(act) if case.option("z_gate") else None,
        dt_raw=(0.3 * torch.randn(bt, s.nheads, generator=gen, dtype=torch.float64)).to(act),
        conv_weight=weight,
        conv_bias=(0.1 * torch.randn(s.conv_dim, generator=gen, dtype=torch.float64)).to(act),
        conv_state=conv_state,
        A=(-torch.exp(uniform(gen, (s.nheads,), 0.0, math.log(16.0)))).float(),
        D=uniform(gen, (s.nheads,), 0.5, 1.5).float(),
        dt_bias=inverse_softplus(dt_target).float(),
        slot_idx=slot_idx, n_slots=n_slots,
        k_prev=draw_k(case.accept, case.T, case.batch, gen) if case.accept.kind != "fixed"
        else torch.ones(case.batch, dtype=torch.int64),
        start_state=torch.randn(case.batch, s.nheads, s.head_dim, s.dstate,
                                generator=case_generator(case, "start_state", device), device=device),
        accepted=draw_k(case.accept, case.T, case.batch, gen),
        pnat=draw_pnat(case.accept, case.T, window, case.batch, gen) if case.window is not None else None,
        parent=parent,
    )
    return to_device(wl, device)


make_workload = make_mamba2_workload


def _random_tree(batch: int, T: int, gen: torch.Generator) -> torch.Tensor:
    """parent[b, t] in [-1, t) with token 0 a root (-1)."""
    parent = torch.full((batch, T), -1, dtype=torch.int64)
    for t in range(1, T):
        parent[:, t] = torch.randint(-1, t, (batch,), generator=gen)
    return parent


# ---------------------------------------------------------------------------------------------
# Stored pools: what every impl of a chain form starts from
# ---------------------------------------------------------------------------------------------

def row_shape(workload: Mamba2Workload) -> tuple[int, int, int]:
    """One slot of a state pool: (H, P, N)."""
    s = workload.shape
    return (s.nheads, s.head_dim, s.dstate)


def state_pool(case: Case, workload: Mamba2Workload) -> StoredState:
    """The token-by-token representation: a pool of ``n_slots`` random states in the case's
    format with each row's start state stored at its read slot."""
    return slot_pool(case, workload, workload.n_slots, row_shape(workload), workload.xbc.device)


def intermediate_pool(case: Case, workload: Mamba2Workload) -> tuple[StoredState, torch.Tensor]:
    """The docs/spec.md §5 intermediate representation shared by every intermediate impl: a pool of
    ``n_slots + batch*T`` random states with each row's start state stored at its read slot, and
    per-token destination slots dst (batch, T) drawn from the extra region."""
    b, T = workload.batch, case.T
    device = workload.xbc.device
    pool = slot_pool(case, workload, workload.n_slots + b * T, row_shape(workload), device)
    gen = case_generator(case, "dst")
    dst = (workload.n_slots + torch.randperm(b * T, generator=gen)).view(b, T).to(device)
    return pool, dst


def replay_case_reason(case: Case) -> str | None:
    """Why a checkpoint-replay chain cannot run ``case`` (None: it can): shared by every replay impl."""
    if case.window is None:
        return "needs a window"
    if case.option("tree"):
        return "replay keeps a linear history: no draft trees"
    return None


def replay_state(case: Case, workload: Mamba2Workload) -> ReplayState:
    """The docs/spec.md §5 replay representation shared by every replay impl: a checkpoint pool of random
    states in the case's format with each row's start state stored at its slot, and a history
    ring (L = W + T rows; x, B in the act dtype, processed dt fp32) holding the workload's pnat
    tokens per row from a random ring start. The implied state of a row is therefore its stored
    start state followed by pnat random history tokens."""
    s = workload.shape
    ckpt = state_pool(case, workload)
    real = workload.slot_idx >= 0
    slots = workload.slot_idx[real]
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
    # The token buffers are drawn where they live (a separate generator: a batch-1024 history is
    # tens of millions of values, seconds of CPU per case on the GPU machine).
    big = case_generator(case, "history-tokens", device)
    n = len(slots)
    rs.hist_x[slots] = torch.randn((n, *rs.hist_x.shape[1:]), generator=big, device=device).to(rs.hist_x.dtype)
    rs.hist_B[slots] = torch.randn((n, *rs.hist_B.shape[1:]), generator=big, device=device).to(rs.hist_B.dtype)
    dt = torch.exp(torch.empty((n, *rs.hist_dt.shape[1:]), device=device).uniform_(-6.9, -2.3, generator=big))
    rs.hist_dt[slots] = dt.to(rs.hist_dt.dtype)


# ---------------------------------------------------------------------------------------------
# Byte models of each chain form (docs/spec.md §10)
# ---------------------------------------------------------------------------------------------

def mamba2_intermediate_bytes(case: Case, n_real: int) -> int:
    """Per-token-state kernel: read one state and write T states per real row; read x, B, C, dt
    (and z), write y for every row; A, D, dt_bias once; src and dst indices."""
    s, act, T, b = case.shape, act_bytes(case), case.T, case.batch
    one_state = state_bytes(case.state_dtype, s.nheads * s.head_dim, s.dstate)
    inputs = T * (s.nheads * s.head_dim + 2 * s.ngroups * s.dstate + s.nheads) * act
    z = T * s.nheads * s.head_dim * act if case.option("z_gate") else 0
    y = T * s.nheads * s.head_dim * act
    return n_real * (1 + T) * one_state + b * (inputs + z + y + (1 + T) * INDEX_BYTES) + 3 * s.nheads * 4


def mamba2_checkpoint_fused_bytes(case: Case, n_rows: int, pnat_real: list[int]) -> int:
    """Checkpoint replay in one kernel (docs/spec.md §7's conv1d -> main variant; conv1d not included): no
    coefficients handed between kernels. Per real row: indices and bookkeeping, the checkpoint,
    pnat history rows of x, B (per group) and processed dt (per head; every row needs them: the
    outputs come from the old checkpoint), this step's x, B, C, dt (and z); writes the checkpoint
    (write rows, pnat + T > W) and appends T rows of x, B and dt. y for every row (zeros for
    padding), slot indices for every row, A, dt_bias, D once."""
    s, act, T, W = case.shape, act_bytes(case), case.T, case.window
    H, P, N, G = s.nheads, s.head_dim, s.dstate, s.ngroups
    one_state = state_bytes(case.state_dtype, H * P, N)
    x_tok, bc_tok, dt_hist = H * P * act, G * N * act, H * 4
    total = n_rows * INDEX_BYTES + 3 * H * 4 + n_rows * T * x_tok  # slots, params, y
    for p in pnat_real:
        row = 2 * INDEX_BYTES + one_state + p * (x_tok + bc_tok + dt_hist)
        row += T * (x_tok + 2 * bc_tok + H * act)  # this step's x, B, C, dt
        row += T * (x_tok + bc_tok + dt_hist)  # history appends
        if p + T > W:
            row += one_state
        if case.option("z_gate"):
            row += T * x_tok
        total += row
    return total


def mamba2_checkpoint_bytes(case: Case, n_rows: int, pnat_real: list[int]) -> int:
    """Checkpoint replay (docs/spec.md §5) in two kernels, precompute + main (conv1d not included), summed row by row
    from each real row's pnat (``pnat_real``; write rows are those with pnat + T > W).

    precompute, per real row: indices and bookkeeping, pnat history dt (per head) and B (per
    group), this step's dt, B, C; writes the coefficients (CB T x (W+T), T decays, W fold
    weights, one fold decay per head; written for padding rows too) and appends T rows of dt and
    B. main, per real row: indices and bookkeeping, the checkpoint, pnat history x (and B on
    write rows), this step's x, C (and z), the coefficients it uses (nowrite: CB over pnat + T
    columns and T decays; write: CB over T columns, T decays, pnat fold weights, the fold decay),
    D once; writes the checkpoint (write rows), y (every row, zeros for padding) and appends T
    rows of x. Slot indices are read by every row of both kernels; A, dt_bias, D once.
    """
    s, act, T, W = case.shape, act_bytes(case), case.T, case.window
    H, P, N, G = s.nheads, s.head_dim, s.dstate, s.ngroups
    one_state = state_bytes(case.state_dtype, H * P, N)
    x_tok, bc_tok = H * P * act, G * N * act
    coef = H * 4 * (T * (W + T) + T + W + 1)
    total = 2 * n_rows * INDEX_BYTES + n_rows * coef + 3 * H * 4 + n_rows * T * x_tok  # y
    for p in pnat_real:
        write = p + T > W
        pre = 2 * INDEX_BYTES + p * (H * 4 + bc_tok) + T * (H * act + 2 * bc_tok) + T * (H * 4 + bc_tok)
        used = H * 4 * (T * T + T + ((p + 1) if write else T * p))
        main = 2 * INDEX_BYTES + one_state + p * x_tok + T * (x_tok + G * N * act) + used + T * x_tok
        if write:
            main += p * bc_tok + one_state
        if case.option("z_gate"):
            main += T * x_tok
        total += pre + main
    return total


def conv_chain_bytes(case: Case, workload: Mamba2Workload | None = None) -> int:
    """The conv1d head alone (with bias)."""
    s = case.shape
    return conv1d_bytes(case, s.conv_dim, s.d_conv, CONV_HAS_BIAS, real_rows(case, workload))


def intermediate_chain_bytes(case: Case, workload: Mamba2Workload | None = None) -> int:
    """conv1d -> the per-token-state kernel."""
    s, n_real = case.shape, real_rows(case, workload)
    return conv1d_bytes(case, s.conv_dim, s.d_conv, CONV_HAS_BIAS, n_real) + mamba2_intermediate_bytes(case, n_real)


def checkpoint_chain_bytes(case: Case, workload: Mamba2Workload | None = None) -> int:
    """conv1d plus the replay form the default knobs pick for this case (one fused kernel, or
    precompute + main with the coefficients between them). Imports the replay kernel module (for
    its default knobs) when called: ImportError where Triton is missing."""
    from ssmbench_kernels.mamba2_replay.kernel import default_knobs

    s = case.shape
    n_real = real_rows(case, workload)
    conv = conv1d_bytes(case, s.conv_dim, s.d_conv, CONV_HAS_BIAS, n_real)
    knobs = default_knobs(case.batch, case.state_dtype, case.rounding, s.head_dim, window=case.window, T=case.T)
    model = mamba2_checkpoint_fused_bytes if knobs.fused else mamba2_checkpoint_bytes
    if workload is not None and workload.pnat is not None:
        pnat = workload.pnat[workload.slot_idx >= 0].tolist()
        return conv + model(case, case.batch, pnat)
    # No workload: every row real, pnat at its stationary distribution (expected bytes).
    probs = stationary_pnat(case.accept, case.T, case.window).tolist()
    base = model(case, case.batch, [])
    per_row = sum(pr * (model(case, 0, [p]) - model(case, 0, [])) for p, pr in enumerate(probs))
    return conv + base + round(case.batch * per_row)


# ---------------------------------------------------------------------------------------------
# The reference step
# ---------------------------------------------------------------------------------------------

def tokens(t: torch.Tensor | None, workload: Mamba2Workload, *tail: int) -> torch.Tensor | None:
    """(batch*T, ...) activations as (batch, T, *tail)."""
    if t is None:
        return None
    return t.unflatten(0, (workload.batch, workload.case.T)).unflatten(-1, tail) if tail else t.unflatten(
        0, (workload.batch, workload.case.T))


def step_inputs(workload: Mamba2Workload, conv_out: torch.Tensor) -> dict[str, Any]:
    """The state-update inputs (x, dt_raw, A, B, C, D, dt_bias, z) of the reference steps in
    ``ssmbench_kernels.mamba2_{states,replay}.reference``, from a (batch*T, conv_dim) conv output."""
    x, B, C = workload.views(conv_out)
    s = workload.shape
    return dict(x=x, dt_raw=tokens(workload.dt_raw, workload), A=workload.A, B=B, C=C, D=workload.D,
                dt_bias=workload.dt_bias, z=tokens(workload.z, workload, s.nheads, s.head_dim))


def reference_inputs(workload: Mamba2Workload) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """The state-update inputs after the reference conv, plus the conv output and new conv state."""
    conv_out, conv_state = reference_conv(workload)
    return step_inputs(workload, conv_out), conv_out, conv_state


def reference_step(workload: Mamba2Workload, conv_out: torch.Tensor,
                   start_state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp64 outputs (batch, T, H, P) and per-token states (batch, T, H, P, N) from ``start_state``
    (tree parents followed when the workload has them); padding rows are not zeroed here."""
    case = workload.case
    x, B, C = workload.views(conv_out)
    z = None if workload.z is None else workload.z.unflatten(0, (workload.batch, case.T)).unflatten(
        -1, (workload.shape.nheads, workload.shape.head_dim))
    dt = workload.dt_raw.unflatten(0, (workload.batch, case.T))
    return mamba2_recurrence(start_state, x, dt, workload.A, B, C, workload.D, workload.dt_bias,
                             z=z, parent=workload.parent)
