"""Mamba-2 checkpoint replay (docs/spec.md §5): conv1d -> **precompute** -> **main**, PDL-linked (docs/spec.md §7).

Per slot: a checkpoint state ``ckpt`` (storage format of docs/spec.md §8, fp32 scales beside int8/fp8)
and a history ring of ``L = W + T`` rows (x act dtype per head, B act dtype per group, processed
dt fp32 per head); ``ring_start`` and ``pnat`` per slot. The buffers have exactly the layout of
`ssmbench_kernels.mamba2_replay.reference.ReplayState`, so a `ReplayState` holds them and the reference reads
them back. A row is a *write* row when ``pnat + T > W``.

Sequence columns
----------------
Both kernels index one combined sequence per row: columns ``0..W-1`` are history tokens in token
order (token j at ring row ``(ring_start + j) mod L``, valid for ``j < pnat``), columns
``W..W+T-1`` the T new tokens, padded to ``L_PAD`` (power of two >= 16). Invalid history
columns carry dt = 0 (an exact no-op token), so one cumulative sum ``cum`` over the columns
serves both cases.

precompute (grid ``(cdiv(H / G, pre_heads), G, batch)``, one program per row and block of one group's heads)
  - processed dt of the new tokens (softplus, threshold branch before exp), ``cum``;
  - ``CB[t, j] = exp(cum_out_t - cum_j) dt_j (C_t . B_j)`` for the T new tokens t: ``C @ B^T``
    is one `tl.dot` (act-dtype operands, fp32 accumulation) over all columns; nowrite rows keep
    the history columns and the causal new ones ("rectangle", reference point S_ckpt), write rows
    only the causal new ones (reference point the folded S');
  - ``cdec[t]``: the decay from the reference state to token t (exp(cum_out_t) for nowrite,
    exp(cum_out_t - cum_h) for write), fold weights ``w_j = exp(cum_h - cum_j) dt_j`` and the fold
    decay ``exp(cum_h)`` (write rows);
  - history appends of dt (every head) and B (the first head of each group) at ring rows
    ``(ring_start + pnat + i) mod L``.
main (grid ``(cdiv(P, BLOCK_P), H, batch)``; rank-1 updates and row reductions, the form the
defaults pick at W = T from batch 64 -- the bandwidth-first main of `kernel_bw` is the other)
  - write rows: ``S' = exp(cum_h) S_ckpt + (X_h^T diag(w)) B_h`` (one `tl.dot`, K = history
    columns), stored as the new checkpoint (RN / SR via `ssmbench_kernels.storage.kernel`; SR counter
    ``(h*P + p, n // 8, slot, step)``: the request is the slot itself);
  - outputs ``Y^T = (S_ref @ C^T) * cdec + X_h^T @ CB_h^T + X_new^T @ CB_new^T`` (three
    `tl.dot`s) with S_ref = S' (unrounded, as the reference) or S_ckpt, then ``+ D x``, z gate;
  - history append of x.
  History rows read (``j < pnat``) and rows written (``pnat .. pnat + T - 1``) never overlap
  because pnat <= W (``pnat + T <= L``), so precompute's appends never race main's reads.

PDL: precompute calls `gdc_launch_dependents()` first; both kernels load indices, bookkeeping,
checkpoint tile, history and parameters before `gdc_wait()` and the conv output / dt / z /
precompute's coefficients after it.

Fused form (``knobs.fused``, `replay_fused_kernel`; docs/spec.md §7's conv1d -> main variant, the
default on the GPU except W = T from batch 64): one program per (row, head, P-tile) computes what
precompute would hand over itself, in registers, with history columns (W_PAD) and new-token
columns (T_PAD) as separate blocks: processed dt and cumulative decays, ``C @ B^T`` for the
history and the new tokens (bf16 tensor-core products, exact, fp32 sums). Before `gdc_wait` it
loads the state tile, bookkeeping, history x/B/dt and parameters and, on write rows, folds and
stores the checkpoint (the fold reads only the history). The fold's fp32 operands run as 3xTF32
(``knobs.precision = "tf32x3"``, ~2^-22 relative; measured 2-3e-7 of the state's max on the
H100 against the fp32 tolerance 2e-5). Outputs come from S_ckpt for *every* row (the rectangle:
write rows' ``S' C_t`` expands to the same sum), so they depend neither on the fold nor on a layout
change of its result; fp32 state and coefficient operands go to the tensor cores as a sum of two
bf16 parts (|error| <= 2^-17 relative, far inside the act-dtype output tolerance), a bf16 state as
itself. The program with P-tile 0 appends dt (and B for the group's first head). No scratch.
Per-slot bases are int64 scalars, offsets inside a slot int32; ring rows use a conditional
subtract, not a 64-bit modulo.

Padding rows (slot < 0): no state / history read or write, zero outputs. Offsets are int64
(slots cast before any multiply). Non-power-of-two P / N are masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ssmbench_kernels.common.activation import softplus_thresholded
from ssmbench_kernels.common.dots import dot, dot_precision
from ssmbench_kernels.common.launch import (
    interpreting,
    is_capturing,
    launch_options,
    pdl_enabled,
    pdl_launch_dependents,
    pdl_wait,
)
from ssmbench_kernels.common.validation import check_slot_range, check_unique_slots
from ssmbench_kernels.storage.kernel import (
    FMT_BF16,
    SCALED,
    format_code,
    format_of,
    load_state_rows,
    request_sr_bits,
    rounding_is_sr,
    store_state_rows,
)


@dataclass(frozen=True)
class CheckpointKnobs:
    """Tuning knobs of the replay kernels (parameters, not constants)."""

    block_p: int = 16
    """Head channels per main program (power of two; >= 16 in the fused and bandwidth forms: `tl.dot`
    needs 16 rows)."""
    num_warps: int = 4
    """Warps per main program."""
    pre_warps: int = 4
    """Warps per precompute program."""
    pre_heads: int = 16
    """Heads of one group per precompute program (power of two, clamped to the group's heads): the
    group's ``C @ B^T`` and its B loads are shared by them, where one program per head redoes both
    (session 7's precompute: 43 us of a 360 us chain at b1024, docs/checkpoint.md). 16 heads on 4
    warps: 132 registers, no spills, 8.8k warp instructions a row against 24k for 16 one-head
    programs on 2 warps (static SASS for sm_90, `tools/gpu/sass_replay.py`)."""
    fused: bool = False
    """One kernel (`replay_fused_kernel`, docs/spec.md §7's one-kernel variant) instead of precompute + main:
    every (row, head, P-tile) program computes its own coefficients in registers (cheap: T x W
    exps and a T x N x L product on the tensor cores) and the fold before `gdc_wait`."""
    ring_rows: bool = False
    """Fused form: the history read by ring row (all ``L = W + T`` rows, padded) as soon as the slot is known,
    not by token after pnat / ring_start arrive: one round trip less before the fold, at twice the history
    tile (cumulative sums turned to token order in registers). H200, session 16 (one run against the table's pick):
    b1 bf16 1.10x, b2 fp32 1.12x, b8 and up slower (0.79-1.04); the tuned table picks it at W = 16 fp32 b2 / b4 and
    bf16 b1 / b2."""
    max_regs: int = 0
    """Fused form: registers per thread cap (ptxas ``maxnreg``; 0 = the compiler's choice). Fewer
    registers, more programs per SM (memory-level parallelism), at the price of some spills."""
    precision: str = "ieee"
    """Fused form: `tl.dot` input precision of fp32 fold operands: "ieee" (FMA, exact products) or
    "tf32x3" (3 TF32 tensor-core products, ~2^-22 relative: inside the fp32 state tolerance)."""
    bandwidth: bool = False
    """Two-kernel form with the bandwidth-first main (`kernel_bw.replay_bw_main_kernel`, issue 19):
    one program per (row, head) streaming the state in ``block_p x N`` chunks after `gdc_wait`,
    bf16-part tensor-core products; ``precision`` does not apply. Neither fused nor bandwidth: the
    two-kernel rank-1 main (`replay_main_kernel`).
    The hand-picked defaults never pick it; the H200 knob table does at batch >= 64 for fp32,
    bf16 and fp16-SR (measured beside the default form: docs/checkpoint.md)."""
    n_tile: int = 0
    """Bandwidth main: state columns per step of its tile loop (0: whole rows). A ``block_p x
    n_tile`` tile holds a fraction of the registers of a whole-row chunk (the fold's accumulator,
    the C and history-B operands shrink with it): more programs per SM, more state bytes in flight
    (ncu, session 11: the whole-row main runs at 255 registers, 8 warps an SM). Whole rows for
    int8 / fp8 (a row's scale needs all its columns)."""
    stages: int = 1
    """Bandwidth main with column tiles: software-pipeline depth of the tile loop (Triton's
    ``num_stages``: tiles ahead brought into shared memory by asynchronous copies; 1 = none)."""
    rect_outputs: bool = False
    """Bandwidth main: every row's outputs from S_ckpt, the state tile straight into ``S C^T``
    outside the tile loop's branch (a bf16 tile as loaded: the pipelined copy feeds the warpgroup
    MMA), write rows adding ``(X_h^T diag(w)) (B_h C^T)``; else write rows' outputs from S' inside
    the branch. Session 11, one H200 run: 7-10% faster for a bf16 state, 3-12% slower for fp32 and
    fp16 (their tile goes through registers either way, and the products add registers)."""
    split_loops: bool = False
    """Bandwidth main: write and nowrite rows each in their own tile loop, no branch inside either:
    a nowrite row (~70% of the rows at W = 16) skips the fold operands' split and staging (with
    ``rect_outputs``, about two thirds of a nowrite bf16 program's instructions ran outside the
    tile loop: static SASS, session 11); else one loop whose body branches on the row. Write rows'
    outputs then come from S' (``rect_outputs`` does not apply: with it the write loop took 128
    registers and lost, session 12; the knob space excludes the pair)."""
    prefetch: bool = False
    """Bandwidth main: before `gdc_wait`, ask L2 for the program's whole state tile (one contiguous
    run, no producer writes it): the first wave of programs, resident while conv1d and the
    precompute run, finds its state in L2 after the wait instead of starting its DRAM round trips
    then. Holds nothing in registers across the wait. (No-op in the interpreter.)"""
    tma: bool = False
    """Bandwidth main, unscaled formats (fp32, bf16, fp16): the state tiles come in by the Tensor Memory
    Accelerator (one host-made tensor descriptor over the pool's ``(n_slots * H * P, N)`` rows, one copy
    instruction a tile) instead of per-thread masked loads, whose address and mask arithmetic is part of
    the main's issue-bound instruction stream (ncu, session 11: bf16 at 60% of issue slots). The
    pipelined tile loop then stages tiles by TMA and barriers. Rows past P read the next head's rows (never
    used: products and stores are per row), columns past N read 0, padding rows read slot 0's tile (no
    store uses it). int8 / fp8 (row scales, whole rows) keep the loads. Needs ``N`` x element bytes a
    multiple of 16 (TMA's stride rule); else the loads."""


def default_knobs(
    batch: int, fmt: str, rounding: str = "rn", head_dim: int = 64, *, window: int | None = None, T: int | None = None
) -> CheckpointKnobs:
    """Heuristic from the H100 knob sweeps (docs/checkpoint.md; `ssmbench tune` searches this space
    now, docs/tuning.md):

    - the fused one-kernel form, 2 warps on 32 x N tiles (16 x N up to batch 16: more programs for
      few rows), fp32 fold products as 3xTF32: fastest at W = 16 for every batch and format, and
      at W = T for small batches;
    - W = T (classic replay, every row writes) from batch 64: round 1's two-kernel rank-1 form
      (4 x N tiles, one warp) is 0-15% faster than the fused form there.
    ``window`` / ``T`` unknown: the W = 16 choice."""
    del rounding, fmt
    if interpreting():  # CPU: the dot forms run fastest in the interpreter (every form is unit-tested)
        return CheckpointKnobs(fused=True, block_p=16, num_warps=4)
    if window is not None and window == T and batch >= 64:
        return CheckpointKnobs(block_p=min(4, triton.next_power_of_2(head_dim)), num_warps=1)
    return CheckpointKnobs(fused=True, block_p=16 if batch <= 16 else 32, num_warps=2, precision="tf32x3")


@dataclass
class ReplayScratch:
    """precompute -> main coefficients, per (row, head): CB (T, L_PAD), cdec (T_PAD,),
    fold weights w (L_PAD,) and the fold decay (1,). fp32, allocated once."""

    cb: torch.Tensor
    cdec: torch.Tensor
    w: torch.Tensor
    fdec: torch.Tensor


def pads(T: int, window: int) -> tuple[int, int, int]:
    """(T_PAD, W_PAD, L_PAD): token, history and sequence paddings (powers of two >= 16)."""
    return (
        max(16, triton.next_power_of_2(T)),
        max(16, triton.next_power_of_2(window)),
        max(16, triton.next_power_of_2(window + T)),
    )


def make_scratch(batch: int, nheads: int, T: int, window: int, device) -> ReplayScratch:
    """Scratch buffers of one step (poisoned with NaN: a coefficient main reads unwritten shows)."""
    t_pad, _, l_pad = pads(T, window)
    nan = float("nan")
    return ReplayScratch(
        cb=torch.full((batch, nheads, T, l_pad), nan, device=device),
        cdec=torch.full((batch, nheads, t_pad), nan, device=device),
        w=torch.full((batch, nheads, l_pad), nan, device=device),
        fdec=torch.full((batch, nheads), nan, device=device),
    )


@triton.jit
def _ring(r, L: tl.constexpr):
    """``r mod L`` for ``0 <= r < 2L`` (ring rows: ring_start < L plus an offset < L): an int32
    conditional subtract instead of a 64-bit modulo."""
    return tl.where(r >= L, r - L, r)


# --------------------------------------------------------------------------------------------
# pieces of the main forms (main, fused, kernel_bw's bandwidth-first main); jit helpers inline
# --------------------------------------------------------------------------------------------


@triton.jit
def _row_slot(slot_ptr, b):
    """Row b's slot (< 0: a padding row), whether it is real, and its int64 slot index (0 for
    padding rows)."""
    slot = tl.load(slot_ptr + b)
    real = slot >= 0
    return slot, real, tl.maximum(slot, 0).to(tl.int64)


@triton.jit
def _row_ring(pnat_ptr, rs_ptr, s, real, T: tl.constexpr, W: tl.constexpr):
    """Slot ``s``'s int32 pnat and ring_start (padding rows read nothing: 0) and whether the row
    writes (``pnat + T > W``). Apart from `_row_slot` so that the fused form loads its state tile
    in between."""
    pnat = tl.load(pnat_ptr + s, mask=real, other=0).to(tl.int32)
    start = tl.load(rs_ptr + s, mask=real, other=0).to(tl.int32)
    return pnat, start, real & (pnat + T > W)


@triton.jit
def _hist_columns(slot, pnat, start, mw, L: tl.constexpr, W: tl.constexpr, W_PAD: tl.constexpr):
    """History columns ``j < W_PAD``: (offs_j, j_ok: a token of a real row (j < pnat), rj: their
    ring rows, fold_j: j_ok on write rows (the fold's history B and weights))."""
    offs_j = tl.arange(0, W_PAD)
    j_ok = (offs_j < W) & (offs_j < (offs_j * 0 + pnat)) & ((offs_j * 0 + slot) >= 0)
    rj = _ring(start + offs_j, L)
    return offs_j, j_ok, rj, j_ok & ((offs_j * 0 + mw.to(tl.int32)) != 0)


@triton.jit
def _token_tile(ptr, row0, stride_row, offs_t, col0, offs_c, t_ok, mask_c):
    """Rows ``row0 + t`` (int64 row base, int32 token offsets) and columns ``col0 + offs_c`` of a
    token-major activation (x, B, C of the conv output); masked rows / columns read 0."""
    return tl.load(
        ptr + row0 * stride_row + offs_t[:, None] * stride_row + col0 + offs_c[None, :],
        mask=t_ok[:, None] & mask_c[None, :],
        other=0.0,
    )


@triton.jit
def _hist_B_tile(hb_base, rj, g, offs_n, mask_j, mask_n, G: tl.constexpr, N: tl.constexpr):
    """Group g's history B at ring rows ``rj`` of one slot (``hb_base``: the slot's int64 base)."""
    return tl.load(hb_base + (rj[:, None] * G + g) * N + offs_n[None, :], mask=mask_j[:, None] & mask_n[None, :],
                   other=0.0)


@triton.jit
def _coefficients(cb_ptr, cdec_ptr, bh, offs_t, offs_j, t_ok, rect_j, T: tl.constexpr, W: tl.constexpr,
                  T_PAD: tl.constexpr, L_PAD: tl.constexpr):
    """precompute's coefficients of (row, head) ``bh``: (the CB rows' pointers, CB's history columns
    ``rect_j`` (the rectangle: nowrite rows), CB's new-token columns, cdec). ``rect_j`` comes from
    the caller: where it is computed moves the SASS of the register-bound forms."""
    cb_t = cb_ptr + (bh * T + offs_t[:, None]) * L_PAD
    cb_hist = tl.load(cb_t + offs_j[None, :], mask=t_ok[:, None] & rect_j[None, :], other=0.0)
    cb_new = tl.load(cb_t + W + offs_t[None, :], mask=t_ok[:, None] & t_ok[None, :], other=0.0)
    cdec = tl.load(cdec_ptr + bh * T_PAD + offs_t, mask=t_ok, other=0.0)
    return cb_t, cb_hist, cb_new, cdec


@triton.jit
def _store_checkpoint(ckpt, scale, rows, srow, read_p, offs_n, mask_n, state, seed, s, step, col0, N: tl.constexpr,
                      BLOCK_N: tl.constexpr, FMT: tl.constexpr, SR: tl.constexpr):
    """A write row's folded state S' (columns ``col0 + arange(BLOCK_N)``) stored as the slot's
    checkpoint (state rows ``rows`` of ``ckpt`` / ``scale``); SR fields drawn once, counter rows
    ``srow``, request = the slot ``s``."""
    sr_fields = request_sr_bits(seed, srow, s, step, col0, BLOCK_N, FMT, SR)
    store_state_rows(ckpt, scale, rows, read_p, offs_n, mask_n, state, N, FMT, SR, sr_fields)


@triton.jit
def _state_ct(state, ct, acc, FMT: tl.constexpr):
    """``acc + S C^T`` (BLOCK_P, T_PAD) on the tensor cores: a bf16 checkpoint as itself (bf16-exact:
    one product), others as two bf16 parts (`_dot_bf16x2`)."""
    if FMT == FMT_BF16:
        yt = dot(state.to(tl.bfloat16), ct, acc)
    else:
        yt = _dot_bf16x2(state, ct, acc)
    return yt


@triton.jit
def _outputs_store(yt, x_new, cb_new, Dh, zt, y_ptr, row0, offs_t, col0, offs_p, t_ok, mask_p, stride_y_row,
                   T: tl.constexpr, HAS_Z: tl.constexpr):
    """Finish and store Y^T (BLOCK_P, T_PAD) of the dot forms: ``+ X_new^T CB_new^T`` (bf16 parts),
    then `_gate_store`."""
    yt = _dot_bf16x2_rhs(tl.trans(x_new), tl.trans(cb_new), yt)
    _gate_store(yt, tl.trans(x_new.to(tl.float32)), Dh, zt, y_ptr, row0, offs_t, col0, offs_p, t_ok, mask_p,
                stride_y_row, T, HAS_Z)


@triton.jit
def _z_tile(z_ptr, row0, offs_t, col0, offs_p, t_ok, mask_p, stride_z_row, HAS_Z: tl.constexpr):
    """Z^T (BLOCK_P, T_PAD) in fp32 for `_gate_store` (0 without z: never read). Apart from the
    epilogue so that a main can issue it with its other loads instead of one round trip after its
    products (the bandwidth-first main does)."""
    zt = 0.0
    if HAS_Z:
        zt = tl.load(
            z_ptr + (row0 + offs_t)[None, :] * stride_z_row + col0 + offs_p[:, None],
            mask=mask_p[:, None] & t_ok[None, :],
            other=0.0,
        ).to(tl.float32)
    return zt


@triton.jit
def _gate_store(yt, xt, Dh, zt, y_ptr, row0, offs_t, col0, offs_p, t_ok, mask_p, stride_y_row,
                T: tl.constexpr, HAS_Z: tl.constexpr):
    """Every main's epilogue of Y^T (BLOCK_P, T_PAD): ``+ D x`` (``xt``: X_new^T in fp32), the z gate
    (``zt``: `_z_tile`), exact zeros on padding rows, the store; y rows ``row0 + t``, columns
    ``col0 + offs_p``."""
    yt = yt + Dh * xt
    if HAS_Z:
        yt = yt * (zt * tl.sigmoid(zt))
    yt = tl.where(t_ok[None, :], yt, 0.0)  # padding rows: exact zeros
    tl.store(
        y_ptr + (row0 + offs_t)[None, :] * stride_y_row + col0 + offs_p[:, None],
        yt.to(y_ptr.dtype.element_ty),
        mask=mask_p[:, None] & (offs_t[None, :] < T),
    )


# --------------------------------------------------------------------------------------------
# precompute
# --------------------------------------------------------------------------------------------


@triton.jit
def _first_half_rows(x, HALF: tl.constexpr, COLS: tl.constexpr):
    """Rows ``0 .. HALF - 1`` of the (2 HALF, COLS) ``x`` (Triton has no slicing: a reshape that splits
    the row index, then `tl.split` on it)."""
    first, _ = tl.split(tl.permute(tl.reshape(x, (2, HALF, COLS)), (1, 2, 0)))
    return first


def precompute_token_rows(T: int, t_pad: int) -> int:
    """Token rows of the precompute's per-head blocks: half the product's ``t_pad`` when T fits
    (the (heads, tokens, sequence) decays and CB cost per row: T = 6 on 8 rows, not 16), else
    ``t_pad``."""
    return t_pad // 2 if triton.next_power_of_2(T) <= t_pad // 2 else t_pad


@triton.jit
def replay_precompute_kernel(
    slot_ptr,
    pnat_ptr,
    rs_ptr,
    hist_B_ptr,
    hist_dt_ptr,
    b_ptr,
    c_ptr,
    dt_ptr,
    A_ptr,
    dt_bias_ptr,
    cb_ptr,
    cdec_ptr,
    w_ptr,
    fdec_ptr,
    stride_b_row,
    stride_c_row,
    stride_dt_row,
    T: tl.constexpr,
    W: tl.constexpr,
    H: tl.constexpr,
    N: tl.constexpr,
    G: tl.constexpr,
    HEADS_PER_GROUP: tl.constexpr,
    T_PAD: tl.constexpr,
    T_H: tl.constexpr,
    L_PAD: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_H: tl.constexpr,
    PDL: tl.constexpr,
):
    """One program per (block of BLOCK_H heads of one group, row): the group's B history, new B
    and C are loaded and ``C @ B^T`` computed once for the block's heads (not once per head);
    per-head quantities are (BLOCK_H, ...) blocks, heads along the contiguous axis of dt / hist_dt
    and of the scratch."""
    pdl_launch_dependents(PDL)
    hb = tl.program_id(0)
    g = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    L: tl.constexpr = W + T

    slot = tl.load(slot_ptr + b).to(tl.int64)
    real = slot >= 0
    s = tl.maximum(slot, 0)
    pnat = tl.load(pnat_ptr + s, mask=real, other=0).to(tl.int32)
    start = tl.load(rs_ptr + s, mask=real, other=0).to(tl.int32)
    mw = real & (pnat + T > W)

    offs_h = hb * BLOCK_H + tl.arange(0, BLOCK_H)  # head inside the group
    h_ok = offs_h < HEADS_PER_GROUP
    heads = g * HEADS_PER_GROUP + offs_h
    A = tl.load(A_ptr + heads, mask=h_ok, other=0.0).to(tl.float32)
    dt_bias = tl.load(dt_bias_ptr + heads, mask=h_ok, other=0.0).to(tl.float32)

    cols = tl.arange(0, L_PAD)
    offs_n = tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    zero_c = cols * 0
    is_hist = cols < W
    hist_ok = is_hist & (cols < (zero_c + pnat)) & ((zero_c + slot) >= 0)
    hrow = s * L + _ring(start + cols, L)  # int64 ring rows of this slot (valid columns: start + j < 2L)
    dt_hist = tl.load(hist_dt_ptr + hrow[None, :] * H + heads[:, None], mask=h_ok[:, None] & hist_ok[None, :],
                      other=0.0)
    b_hist = tl.load(
        hist_B_ptr + (hrow[:, None] * G + g) * N + offs_n[None, :], mask=hist_ok[:, None] & mask_n[None, :], other=0.0
    )

    pdl_wait(PDL)

    tok = cols - W
    new_ok = (cols >= W) & (cols < W + T) & ((zero_c + slot) >= 0)
    trow = b * T + tok
    new_h = h_ok[:, None] & new_ok[None, :]
    dt_new = tl.load(dt_ptr + trow[None, :] * stride_dt_row + heads[:, None], mask=new_h, other=0.0).to(tl.float32)
    dt_new = tl.where(new_h, softplus_thresholded(dt_new + dt_bias[:, None]), 0.0)
    b_new = tl.load(
        b_ptr + trow[:, None] * stride_b_row + g * N + offs_n[None, :],
        mask=new_ok[:, None] & mask_n[None, :],
        other=0.0,
    )
    dt_seq = tl.where(is_hist[None, :], dt_hist, dt_new)  # (BLOCK_H, L_PAD)
    b_seq = tl.where(is_hist[:, None], b_hist, b_new)

    offs_c = tl.arange(0, T_PAD)
    c_new = tl.load(
        c_ptr + (b * T + offs_c)[:, None] * stride_c_row + g * N + offs_n[None, :],
        mask=((offs_c < T) & ((offs_c * 0 + slot) >= 0))[:, None] & mask_n[None, :],
        other=0.0,
    )
    cb_raw = dot(c_new, tl.trans(b_seq), tl.zeros((T_PAD, L_PAD), dtype=tl.float32))  # C_t . B_j, once per group
    if T_H < T_PAD:  # the per-head (BLOCK_H, T_H, L_PAD) work on T_H rows, not the product's 16
        cb_raw = _first_half_rows(cb_raw, T_H, L_PAD)
    offs_t = tl.arange(0, T_H)
    t_ok = (offs_t < T) & ((offs_t * 0 + slot) >= 0)

    adt = A[:, None] * dt_seq
    cum = tl.cumsum(adt, axis=1)  # (BLOCK_H, L_PAD)
    cum_h = tl.sum(tl.where(is_hist[None, :], adt, 0.0), axis=1)  # (BLOCK_H,)
    # cum at output token t is cum at column W + t: (BLOCK_H, T_H).
    out_col = cols[None, :] == (offs_t[:, None] + W)
    cum_out = tl.sum(tl.where(out_col[None, :, :], cum[:, None, :], 0.0), axis=2)
    causal_new = (cols[None, :] >= W) & (cols[None, :] <= offs_t[:, None] + W)
    keep_hist = hist_ok[None, :] & ((offs_t[:, None] * 0 + mw.to(tl.int32)) == 0)
    keep = (causal_new | keep_hist) & t_ok[:, None]  # (T_H, L_PAD), the same for every head
    decay = tl.exp(tl.where(keep[None, :, :], cum_out[:, :, None] - cum[:, None, :], 0.0))
    cb = tl.where(keep[None, :, :], decay * dt_seq[:, None, :] * cb_raw[None, :, :], 0.0)
    cdec = tl.where(mw, tl.exp(cum_out - cum_h[:, None]), tl.exp(cum_out))
    w = tl.where((hist_ok & mw)[None, :], tl.exp(cum_h[:, None] - cum) * dt_seq, 0.0)
    fdec = tl.exp(cum_h)

    bh = b * H + heads  # (BLOCK_H,) int64
    cb_rows = (bh[:, None] * T + offs_t[None, :]) * L_PAD  # (BLOCK_H, T_H)
    tl.store(
        cb_ptr + cb_rows[:, :, None] + cols[None, None, :], cb,
        mask=h_ok[:, None, None] & ((offs_t[:, None] < T) & (cols[None, :] < W + T))[None, :, :],
    )
    tl.store(cdec_ptr + bh[:, None] * T_PAD + offs_t[None, :], cdec, mask=h_ok[:, None] & (offs_t[None, :] < T))
    tl.store(w_ptr + bh[:, None] * L_PAD + cols[None, :], w, mask=h_ok[:, None] & is_hist[None, :])
    tl.store(fdec_ptr + bh, fdec, mask=h_ok)

    # History appends of this step's tokens (ring rows disjoint from the rows read above).
    wrow = s * L + _ring(start + pnat + tok, L)
    tl.store(hist_dt_ptr + wrow[None, :] * H + heads[:, None], dt_new, mask=new_h)
    if hb == 0:  # the block holding the group's first head appends the group's B
        tl.store(
            hist_B_ptr + (wrow[:, None] * G + g) * N + offs_n[None, :], b_new, mask=new_ok[:, None] & mask_n[None, :]
        )


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


@triton.jit
def _main_item(
    b,
    h,
    pid_p,
    ckpt_ptr,
    scale_ptr,
    slot_ptr,
    pnat_ptr,
    rs_ptr,
    hist_x_ptr,
    hist_B_ptr,
    x_ptr,
    c_ptr,
    z_ptr,
    y_ptr,
    D_ptr,
    cb_ptr,
    cdec_ptr,
    w_ptr,
    fdec_ptr,
    seed,
    step,
    stride_x_row,
    stride_c_row,
    stride_z_row,
    stride_y_row,
    T: tl.constexpr,
    W: tl.constexpr,
    H: tl.constexpr,
    P: tl.constexpr,
    N: tl.constexpr,
    G: tl.constexpr,
    HEADS_PER_GROUP: tl.constexpr,
    T_PAD: tl.constexpr,
    W_PAD: tl.constexpr,
    L_PAD: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
    FMT: tl.constexpr,
    SR: tl.constexpr,
    HAS_Z: tl.constexpr,
    WAIT: tl.constexpr,
):
    """One program's work (row b, head h, P-tile pid_p) of the rank-1 main: the fold as rank-1
    updates over the history rows, outputs as row reductions. WAIT: call `gdc_wait` after the
    producer-independent loads."""
    g = h // HEADS_PER_GROUP
    L: tl.constexpr = W + T
    slot = tl.load(slot_ptr + b).to(tl.int64)
    real = slot >= 0
    s = tl.maximum(slot, 0)
    pnat = tl.load(pnat_ptr + s, mask=real, other=0).to(tl.int32)
    start = tl.load(rs_ptr + s, mask=real, other=0).to(tl.int32)
    mw = real & (pnat + T > W)

    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    mask_p = offs_p < P
    mask_n = offs_n < N
    srow = h * P + offs_p
    read_p = mask_p & ((offs_p * 0 + slot) >= 0)
    state = load_state_rows(ckpt_ptr, scale_ptr, s * (H * P) + srow, read_p, offs_n, mask_n, N, FMT)

    offs_j, j_ok, rj, fold_j = _hist_columns(slot, pnat, start, mw, L, W, W_PAD)
    Dh = tl.load(D_ptr + h).to(tl.float32)

    pdl_wait(WAIT)

    offs_t = tl.arange(0, T_PAD)
    t_ok = (offs_t < T) & ((offs_t * 0 + slot) >= 0)
    rows_t = b * T + offs_t
    x_new = tl.load(
        x_ptr + rows_t[:, None] * stride_x_row + h * P + offs_p[None, :],
        mask=t_ok[:, None] & mask_p[None, :],
        other=0.0,
    )
    bh = b * H + h
    rect_j = j_ok & ((offs_j * 0 + mw.to(tl.int32)) == 0)  # history CB columns: nowrite rows only
    cb_t, cb_hist, cb_new, cdec = _coefficients(cb_ptr, cdec_ptr, bh, offs_t, offs_j, t_ok, rect_j, T, W, T_PAD, L_PAD)

    xt = tl.trans(x_new.to(tl.float32))
    if mw:
        # Fold the history into S', store the checkpoint.
        fdec = tl.load(fdec_ptr + bh)
        # rank-1 updates, history rows loaded one by one (all independent: one latency)
        state = state * fdec
        for j in tl.static_range(W):
            ok_p = mask_p & ((offs_p * 0 + j) < pnat)
            ok_n = mask_n & ((offs_n * 0 + j) < pnat)
            row_j = s * L + _ring(start + j, L)
            x_j = tl.load(hist_x_ptr + (row_j * H + h) * P + offs_p, mask=ok_p, other=0.0).to(tl.float32)
            b_j = tl.load(hist_B_ptr + (row_j * G + g) * N + offs_n, mask=ok_n, other=0.0).to(tl.float32)
            w_j = tl.load(w_ptr + bh * L_PAD + j + offs_p * 0, mask=ok_p, other=0.0)
            state += (x_j * w_j)[:, None] * b_j[None, :]
        _store_checkpoint(ckpt_ptr, scale_ptr, s * (H * P) + srow, srow, read_p, offs_n, mask_n, state, seed, s, step,
                          0, N, BLOCK_N, FMT, SR)

    # Outputs, transposed: Y^T (BLOCK_P, T_PAD), as row reductions.
    yt = tl.zeros((BLOCK_P, T_PAD), dtype=tl.float32)
    for t in tl.static_range(T):
        c_ok = mask_n & ((offs_n * 0 + slot) >= 0)
        c_t = tl.load(c_ptr + (b * T + t) * stride_c_row + g * N + offs_n, mask=c_ok, other=0.0)
        col = tl.sum(state * c_t.to(tl.float32)[None, :], axis=1)
        yt = tl.where(offs_t[None, :] == t, col[:, None], yt)
    yt = yt * cdec[None, :]
    if not mw:  # rectangle: history columns
        for j in tl.static_range(W):
            ok_p = mask_p & ((offs_p * 0 + j) < pnat)
            row_j = s * L + _ring(start + j, L)
            x_j = tl.load(hist_x_ptr + (row_j * H + h) * P + offs_p, mask=ok_p, other=0.0).to(tl.float32)
            cb_j = tl.load(cb_t + j, mask=t_ok[:, None] & ((offs_t * 0 + j) < pnat)[:, None], other=0.0)
            yt += x_j[:, None] * tl.sum(cb_j, axis=1)[None, :]
    for i in tl.static_range(T):  # new-token columns
        x_i = tl.sum(tl.where(offs_t[None, :] == i, xt, 0.0), axis=1)
        cb_i = tl.load(cb_t + W + i, mask=t_ok[:, None], other=0.0)
        yt += x_i[:, None] * tl.sum(cb_i, axis=1)[None, :]
    zt = _z_tile(z_ptr, b * T, offs_t, h * P, offs_p, t_ok, mask_p, stride_z_row, HAS_Z)
    _gate_store(yt, xt, Dh, zt, y_ptr, b * T, offs_t, h * P, offs_p, t_ok, mask_p, stride_y_row, T, HAS_Z)

    # History append of x at ring rows (ring_start + pnat + i) mod L.
    wrow = s * L + _ring(start + pnat + offs_t, L)
    tl.store(hist_x_ptr + (wrow[:, None] * H + h) * P + offs_p[None, :], x_new, mask=t_ok[:, None] & mask_p[None, :])


@triton.jit(do_not_specialize=["seed", "step"])
def replay_main_kernel(
    ckpt_ptr,
    scale_ptr,
    slot_ptr,
    pnat_ptr,
    rs_ptr,
    hist_x_ptr,
    hist_B_ptr,
    x_ptr,
    c_ptr,
    z_ptr,
    y_ptr,
    D_ptr,
    cb_ptr,
    cdec_ptr,
    w_ptr,
    fdec_ptr,
    seed,
    step,
    stride_x_row,
    stride_c_row,
    stride_z_row,
    stride_y_row,
    T: tl.constexpr,
    W: tl.constexpr,
    H: tl.constexpr,
    P: tl.constexpr,
    N: tl.constexpr,
    G: tl.constexpr,
    HEADS_PER_GROUP: tl.constexpr,
    T_PAD: tl.constexpr,
    W_PAD: tl.constexpr,
    L_PAD: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
    FMT: tl.constexpr,
    SR: tl.constexpr,
    HAS_Z: tl.constexpr,
    PDL: tl.constexpr,
):
    _main_item(
        tl.program_id(2).to(tl.int64), tl.program_id(1), tl.program_id(0),
        ckpt_ptr, scale_ptr, slot_ptr, pnat_ptr, rs_ptr, hist_x_ptr, hist_B_ptr, x_ptr, c_ptr, z_ptr, y_ptr,
        D_ptr, cb_ptr, cdec_ptr, w_ptr, fdec_ptr, seed, step,
        stride_x_row, stride_c_row, stride_z_row, stride_y_row,
        T, W, H, P, N, G, HEADS_PER_GROUP, T_PAD, W_PAD, L_PAD, BLOCK_P, BLOCK_N, FMT, SR, HAS_Z, PDL,
    )


# --------------------------------------------------------------------------------------------
# fused (one kernel: docs/spec.md §7's conv1d -> main variant)
# --------------------------------------------------------------------------------------------


@triton.jit
def _dot_bf16x2(a, b, acc):
    """``acc + a @ b`` for fp32 ``a`` and bf16 ``b`` as two bf16 tensor-core products: a = hi + lo
    (bf16 parts, |a - hi - lo| <= 2^-17 |a|), products exact, fp32 sums. For outputs (act-dtype
    tolerance), not for stored states."""
    hi = a.to(tl.bfloat16)
    lo = (a - hi.to(tl.float32)).to(tl.bfloat16)
    return dot(lo, b, dot(hi, b, acc))


@triton.jit
def _dot_bf16x2_rhs(a, b, acc):
    """``acc + a @ b`` for bf16 ``a`` and fp32 ``b`` (split as in `_dot_bf16x2`)."""
    hi = b.to(tl.bfloat16)
    lo = (b - hi.to(tl.float32)).to(tl.bfloat16)
    return dot(a, lo, dot(a, hi, acc))


@triton.jit
def _fused_item(
    b,
    h,
    pid_p,
    ckpt_ptr,
    scale_ptr,
    slot_ptr,
    pnat_ptr,
    rs_ptr,
    hist_x_ptr,
    hist_B_ptr,
    hist_dt_ptr,
    x_ptr,
    b_ptr,
    c_ptr,
    dt_ptr,
    z_ptr,
    y_ptr,
    A_ptr,
    D_ptr,
    dt_bias_ptr,
    seed,
    step,
    stride_x_row,
    stride_b_row,
    stride_c_row,
    stride_dt_row,
    stride_z_row,
    stride_y_row,
    T: tl.constexpr,
    W: tl.constexpr,
    H: tl.constexpr,
    P: tl.constexpr,
    N: tl.constexpr,
    G: tl.constexpr,
    HEADS_PER_GROUP: tl.constexpr,
    T_PAD: tl.constexpr,
    W_PAD: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
    FMT: tl.constexpr,
    SR: tl.constexpr,
    HAS_Z: tl.constexpr,
    PREC: tl.constexpr,
    WAIT: tl.constexpr,
    RING: tl.constexpr = False,
):
    """One work item (row b, head h, P-tile pid_p) of the one-kernel form: everything precompute
    would hand over is computed here, history columns (W_PAD) and new-token columns (T_PAD) as
    separate blocks. Write rows fold and store the checkpoint before `gdc_wait` (the fold reads only
    the history, not conv1d's output). WAIT: call `gdc_wait` (only the first item of a program)."""
    g = h // HEADS_PER_GROUP
    L: tl.constexpr = W + T
    slot, real, s = _row_slot(slot_ptr, b)

    # Producer-independent loads: state tile first (the big one), bookkeeping, history, parameters.
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    mask_p = offs_p < P
    mask_n = offs_n < N
    srow = h * P + offs_p
    read_p = mask_p & ((offs_p * 0 + slot) >= 0)  # (vector forms of scalar masks: the interpreter needs them)
    # Per-slot / per-row bases in int64 (scalars), offsets inside them in int32 (fewer registers).
    ckpt_base = ckpt_ptr + s * (H * P * N)
    scale_base = scale_ptr + s * (H * P)  # (a dummy pointer, never read, for unscaled formats)
    state = load_state_rows(ckpt_base, scale_base, srow, read_p, offs_n, mask_n, N, FMT)
    pnat, start, mw = _row_ring(pnat_ptr, rs_ptr, s, real, T, W)
    hx_base = hist_x_ptr + s * (L * H * P)
    hb_base = hist_B_ptr + s * (L * G * N)
    hd_base = hist_dt_ptr + s * (L * H)
    if RING:
        rj = tl.arange(0, W_PAD)
        r_ok = (rj < L) & ((rj * 0 + slot) >= 0)
        x_hist = tl.load(hx_base + (rj[:, None] * H + h) * P + offs_p[None, :], mask=r_ok[:, None] & mask_p[None, :],
                         other=0.0)
        b_hist = _hist_B_tile(hb_base, rj, g, offs_n, r_ok, mask_n, G, N)
        dt_hist = tl.load(hd_base + rj * H + h, mask=r_ok, other=0.0)
        tok = rj - start
        tok = tl.where(tok < 0, tok + L, tok)
        j_ok = r_ok & (tok < pnat)
        x_hist = tl.where(j_ok[:, None], x_hist, 0.0)
        b_hist = tl.where(j_ok[:, None], b_hist, 0.0)
        dt_hist = tl.where(j_ok, dt_hist, 0.0)
    else:
        offs_j, j_ok, rj, _ = _hist_columns(slot, pnat, start, mw, L, W, W_PAD)
        x_hist = tl.load(
            hx_base + (rj[:, None] * H + h) * P + offs_p[None, :], mask=j_ok[:, None] & mask_p[None, :], other=0.0
        )
        b_hist = _hist_B_tile(hb_base, rj, g, offs_n, j_ok, mask_n, G, N)
        dt_hist = tl.load(hd_base + rj * H + h, mask=j_ok, other=0.0)
    A = tl.load(A_ptr + h).to(tl.float32)
    Dh = tl.load(D_ptr + h).to(tl.float32)
    dt_bias = tl.load(dt_bias_ptr + h).to(tl.float32)

    a_hist = A * dt_hist  # invalid columns: dt = 0, an exact no-op
    cum_hist = tl.cumsum(a_hist, axis=0)
    cum_h = tl.sum(a_hist, axis=0)
    if RING:  # cumulative sums in token order from ring order: tokens run from ring row `start`, wrapping
        before = tl.sum(tl.where(rj < start, a_hist, 0.0), axis=0)
        cum_hist = tl.where(rj >= start, cum_hist - before, cum_hist + cum_h - before)
    if mw:
        # S' = exp(cum_h) S_ckpt + (X_h^T diag(w)) B_h, w_j = exp(cum_h - cum_j) dt_j; stored now.
        # S' is only stored: the outputs below come from S_ckpt (the rectangle) for every row.
        w = tl.where(j_ok, tl.exp(cum_h - cum_hist) * dt_hist, 0.0)
        xw = x_hist.to(tl.float32) * w[:, None]
        folded = dot_precision(tl.trans(xw), b_hist.to(tl.float32), state * tl.exp(cum_h), PREC)
        _store_checkpoint(ckpt_base, scale_base, srow, srow, read_p, offs_n, mask_n, folded, seed, s, step, 0, N,
                          BLOCK_N, FMT, SR)

    pdl_wait(WAIT)

    offs_t = tl.arange(0, T_PAD)
    t_ok = (offs_t < T) & ((offs_t * 0 + slot) >= 0)
    row0 = b * T  # int64; token offsets below are int32
    x_new = _token_tile(x_ptr, row0, stride_x_row, offs_t, h * P, offs_p, t_ok, mask_p)
    b_new = _token_tile(b_ptr, row0, stride_b_row, offs_t, g * N, offs_n, t_ok, mask_n)
    c_new = _token_tile(c_ptr, row0, stride_c_row, offs_t, g * N, offs_n, t_ok, mask_n)
    dt_raw = tl.load(dt_ptr + row0 * stride_dt_row + offs_t * stride_dt_row + h, mask=t_ok, other=0.0).to(tl.float32)
    dt_new = tl.where(t_ok, softplus_thresholded(dt_raw + dt_bias), 0.0)
    cl = tl.cumsum(A * dt_new, axis=0)  # cum over the new tokens only (from the fold point cum_h)

    # CB of the new tokens: exp(cl_t - cl_i) dt_i (C_t . B_i), i <= t (bf16 products exact, fp32 sums).
    cb_raw = dot(c_new, tl.trans(b_new), tl.zeros((T_PAD, T_PAD), dtype=tl.float32))
    causal = (offs_t[None, :] <= offs_t[:, None]) & t_ok[:, None]
    cb_new = tl.where(causal, tl.exp(tl.where(causal, cl[:, None] - cl[None, :], 0.0)) * dt_new[None, :] * cb_raw, 0.0)
    # Outputs from S_ckpt for every row (the rectangle: write rows' S' C_t expands to the same sum),
    # so they need neither the fold nor a layout change of its result. Y^T = (S_ckpt C^T) diag(cdec)
    # + X_h^T CB_h^T + X_new^T CB_new^T; fp32 operands as sums of bf16 parts (C, x are bf16-exact).
    yt = _state_ct(state, tl.trans(c_new), tl.zeros((BLOCK_P, T_PAD), dtype=tl.float32), FMT)
    yt = yt * tl.exp(cum_h + cl)[None, :]
    cb_rh = dot(c_new, tl.trans(b_hist), tl.zeros((T_PAD, W_PAD), dtype=tl.float32))
    keep = t_ok[:, None] & j_ok[None, :]
    expo = tl.where(keep, cum_h + cl[:, None] - cum_hist[None, :], 0.0)
    cb_hist = tl.where(keep, tl.exp(expo) * dt_hist[None, :] * cb_rh, 0.0)
    yt = _dot_bf16x2_rhs(tl.trans(x_hist), tl.trans(cb_hist), yt)
    zt = _z_tile(z_ptr, row0, offs_t, h * P, offs_p, t_ok, mask_p, stride_z_row, HAS_Z)
    _outputs_store(yt, x_new, cb_new, Dh, zt, y_ptr, row0, offs_t, h * P, offs_p, t_ok, mask_p, stride_y_row, T, HAS_Z)

    # History appends at ring rows (ring_start + pnat + i) mod L (disjoint from every row read).
    wrow = _ring(start + pnat + offs_t, L)
    tl.store(hx_base + (wrow[:, None] * H + h) * P + offs_p[None, :], x_new, mask=t_ok[:, None] & mask_p[None, :])
    if pid_p == 0:
        tl.store(hd_base + wrow * H + h, dt_new, mask=t_ok)
        if h % HEADS_PER_GROUP == 0:
            b_rows = hb_base + (wrow[:, None] * G + g) * N + offs_n[None, :]
            tl.store(b_rows, b_new, mask=t_ok[:, None] & mask_n[None, :])


@triton.jit(do_not_specialize=["seed", "step"])
def replay_fused_kernel(
    ckpt_ptr,
    scale_ptr,
    slot_ptr,
    pnat_ptr,
    rs_ptr,
    hist_x_ptr,
    hist_B_ptr,
    hist_dt_ptr,
    x_ptr,
    b_ptr,
    c_ptr,
    dt_ptr,
    z_ptr,
    y_ptr,
    A_ptr,
    D_ptr,
    dt_bias_ptr,
    seed,
    step,
    stride_x_row,
    stride_b_row,
    stride_c_row,
    stride_dt_row,
    stride_z_row,
    stride_y_row,
    T: tl.constexpr,
    W: tl.constexpr,
    H: tl.constexpr,
    P: tl.constexpr,
    N: tl.constexpr,
    G: tl.constexpr,
    HEADS_PER_GROUP: tl.constexpr,
    T_PAD: tl.constexpr,
    W_PAD: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
    FMT: tl.constexpr,
    SR: tl.constexpr,
    HAS_Z: tl.constexpr,
    PREC: tl.constexpr,
    PDL: tl.constexpr,
    RING: tl.constexpr = False,
):
    _fused_item(
        tl.program_id(2).to(tl.int64), tl.program_id(1), tl.program_id(0),
        ckpt_ptr, scale_ptr, slot_ptr, pnat_ptr, rs_ptr, hist_x_ptr, hist_B_ptr, hist_dt_ptr, x_ptr, b_ptr, c_ptr,
        dt_ptr, z_ptr, y_ptr, A_ptr, D_ptr, dt_bias_ptr, seed, step,
        stride_x_row, stride_b_row, stride_c_row, stride_dt_row, stride_z_row, stride_y_row,
        T, W, H, P, N, G, HEADS_PER_GROUP, T_PAD, W_PAD, BLOCK_P, BLOCK_N, FMT, SR, HAS_Z, PREC, PDL, RING,
    )


KERNEL_NAMES: tuple[str, ...] = (replay_precompute_kernel.fn.__name__, replay_main_kernel.fn.__name__)
"""Kernel names `replay_step` launches (precompute, main), for CUPTI attribution."""
FUSED_KERNEL_NAME: str = replay_fused_kernel.fn.__name__
"""The one kernel `replay_step` launches when ``knobs.fused``."""


def kernel_names(knobs: CheckpointKnobs) -> tuple[str, ...]:
    """Kernel names one `replay_step` with these knobs launches, in launch order."""
    if knobs.fused:
        return (FUSED_KERNEL_NAME,)
    if knobs.bandwidth:
        from ssmbench_kernels.mamba2_replay.kernel_bw import KERNEL_NAME as BW_KERNEL_NAME  # (imports this module)

        return (KERNEL_NAMES[0], BW_KERNEL_NAME)
    return KERNEL_NAMES


# --------------------------------------------------------------------------------------------
# wrappers
# --------------------------------------------------------------------------------------------


def _launch_main(kernel, grid, rs, slot_idx, x, Cm, z, y, D, scratch, seed: int, step: int, *, H: int, P: int,
                N: int, G: int, T: int, pads: tuple[int, int, int], pdl: bool, num_warps: int, max_regs: int = 0,
                **consts) -> None:
    """Enqueue a two-kernel main (`replay_main_kernel`, `kernel_bw.replay_bw_main_kernel`: the same
    operands ckpt .. step, the four row strides and shape constexprs);
    ``consts``: the kernel's own constexprs; ``max_regs``: the register cap (`launch_options`). Unscaled
    formats and ``z = None``
    pass dummy pointers, never read."""
    t_pad, w_pad, l_pad = pads
    kernel[grid](
        rs.ckpt.data, rs.ckpt.scale if rs.ckpt.scale is not None else D, slot_idx, rs.pnat, rs.ring_start,
        rs.hist_x, rs.hist_B, x, Cm, z if z is not None else y, y, D,
        scratch.cb, scratch.cdec, scratch.w, scratch.fdec, seed, step,
        x.stride(0), Cm.stride(0), z.stride(0) if z is not None else 0, y.stride(0),
        T=T, W=rs.window, H=H, P=P, N=N, G=G, HEADS_PER_GROUP=H // G, T_PAD=t_pad, W_PAD=w_pad, L_PAD=l_pad,
        PDL=pdl, **consts, **launch_options(pdl, num_warps, 1, max_regs),
    )


def validate_replay_inputs(rs, slot_idx: torch.Tensor, T: int) -> None:
    """Host-side checks that read values (one device sync; docs/spec.md §3, §5): distinct real slots in
    range, ``0 <= pnat <= W`` and ``0 <= ring_start < L`` on the rows' slots. ValueError."""
    check_unique_slots(slot_idx, "slot_idx")
    check_slot_range(slot_idx, rs.ckpt.data.shape[0], "slot_idx")
    s = slot_idx[slot_idx >= 0]
    pnat, start = rs.pnat[s], rs.ring_start[s]
    if bool(((pnat < 0) | (pnat > rs.window)).any()):
        raise ValueError(f"pnat must lie in [0, W={rs.window}] (pnat + T <= L keeps the ring race-free)")
    if bool(((start < 0) | (start >= rs.window + T)).any()):
        raise ValueError(f"ring_start must lie in [0, L={rs.window + T})")


def _check_layout(rs, H: int, P: int, N: int, G: int, T: int) -> tuple[str, int]:
    """The storage format and ring length; ValueError naming the buffer that is off."""
    data, scale = rs.ckpt.data, rs.ckpt.scale
    fmt = format_of(data)
    if rs.ckpt.fmt != fmt:
        raise ValueError(f"checkpoint dtype {data.dtype} does not hold format {rs.ckpt.fmt!r}")
    n = data.shape[0]
    L = rs.window + T
    if tuple(data.shape) != (n, H, P, N) or not data.is_contiguous():
        raise ValueError(f"ckpt must be a contiguous (n_slots, {H}, {P}, {N}) tensor, got {tuple(data.shape)}")
    if fmt in SCALED and (scale is None or tuple(scale.shape) != (n, H, P) or scale.dtype != torch.float32
                          or not scale.is_contiguous()):
        raise ValueError(f"{fmt} checkpoints need a contiguous fp32 scale (n_slots, {H}, {P})")
    for name, t, shape in (("hist_x", rs.hist_x, (n, L, H, P)), ("hist_B", rs.hist_B, (n, L, G, N)),
                           ("hist_dt", rs.hist_dt, (n, L, H))):
        if tuple(t.shape) != shape or not t.is_contiguous():
            raise ValueError(f"{name} must be a contiguous {shape} tensor (L = W + T = {L}), got {tuple(t.shape)}")
    if rs.hist_dt.dtype != torch.float32:
        raise ValueError("hist_dt must be fp32 (processed dt)")
    for name, t in (("ring_start", rs.ring_start), ("pnat", rs.pnat)):
        if tuple(t.shape) != (n,) or not t.is_contiguous():
            raise ValueError(f"{name} must be a contiguous ({n},) tensor")
    if rs.window < T:
        raise ValueError(f"need W >= T; got W={rs.window}, T={T}")
    return fmt, L


def replay_step(
    rs,
    slot_idx: torch.Tensor,
    conv_out: torch.Tensor,
    dt_raw: torch.Tensor,
    A: torch.Tensor,
    D: torch.Tensor,
    dt_bias: torch.Tensor,
    *,
    nheads: int,
    head_dim: int,
    dstate: int,
    ngroups: int,
    T: int,
    y: torch.Tensor,
    scratch: ReplayScratch,
    z: torch.Tensor | None = None,
    rounding: str = "rn",
    seed: int = 0,
    step: int = 0,
    pdl: bool = False,
    knobs: CheckpointKnobs | None = None,
    validate: bool = True,
    launch: str = "both",
) -> torch.Tensor:
    """One checkpoint-replay step (docs/spec.md §5) of T tokens per row: precompute then main.

    rs: a `ssmbench_kernels.mamba2_replay.reference.ReplayState` of device buffers (mutated in place: write rows'
    checkpoints, the history rows of the new tokens; ring_start / pnat are only read: the
    bookkeeping is `commit`). slot_idx (batch,) int (< 0: padding). conv_out (batch*T, conv_dim)
    unit column stride (x | B | C); dt_raw (batch*T, H), z (batch*T, H*P) or None (unit column
    strides); A, D, dt_bias fp32 (H,). y: contiguous (batch*T, H*P) output (act dtype). scratch:
    `make_scratch(batch, H, T, W)`. ``launch``: "both", "precompute" or "main" (the chain
    launches them separately). Returns y. ``validate`` syncs to check indices and bookkeeping
    (skipped during graph capture; pass False in timed loops).
    """
    H, P, N, G = nheads, head_dim, dstate, ngroups
    if H % G:
        raise ValueError(f"ngroups={G} must divide nheads={H}")
    fmt, L = _check_layout(rs, H, P, N, G, T)
    sr = rounding_is_sr(rounding)
    batch = slot_idx.shape[0]
    rows = batch * T
    conv_dim = H * P + 2 * G * N
    if conv_out.shape != (rows, conv_dim) or conv_out.stride(1) != 1:
        raise ValueError(f"conv_out must be ({rows}, {conv_dim}) with unit column stride, got {tuple(conv_out.shape)}")
    if conv_out.dtype != rs.hist_x.dtype or rs.hist_B.dtype != rs.hist_x.dtype:
        raise ValueError(f"history x/B must be in the activation dtype {conv_out.dtype}")
    if dt_raw.shape != (rows, H) or dt_raw.stride(1) != 1:
        raise ValueError(f"dt_raw must be ({rows}, {H}) with unit column stride, got {tuple(dt_raw.shape)}")
    if z is not None and (z.shape != (rows, H * P) or z.stride(1) != 1):
        raise ValueError(f"z must be ({rows}, {H * P}) with unit column stride, got {tuple(z.shape)}")
    for name, p in (("A", A), ("D", D), ("dt_bias", dt_bias)):
        if p.shape != (H,) or p.dtype != torch.float32 or not p.is_contiguous():
            raise ValueError(f"{name} must be a contiguous fp32 ({H},) tensor")
    if y.shape != (rows, H * P) or not y.is_contiguous():
        raise ValueError(f"y must be a contiguous ({rows}, {H * P}) tensor")
    t_pad, w_pad, l_pad = pads(T, rs.window)
    if tuple(scratch.cb.shape) != (batch, H, T, l_pad) or tuple(scratch.cdec.shape) != (batch, H, t_pad):
        raise ValueError("scratch does not fit this step: use make_scratch(batch, H, T, W)")
    if launch not in ("both", "precompute", "main"):
        raise ValueError(f"launch must be both, precompute or main; got {launch!r}")
    if validate and not is_capturing():
        validate_replay_inputs(rs, slot_idx, T)
    if batch == 0:
        return y

    knobs = knobs or default_knobs(batch, fmt, rounding, P, window=rs.window, T=T)
    use_pdl = pdl_enabled(pdl, conv_out.device)
    x = conv_out[:, : H * P]
    Bm = conv_out[:, H * P : H * P + G * N]
    Cm = conv_out[:, H * P + G * N :]
    block_n = max(16, triton.next_power_of_2(N))
    if knobs.fused:
        if launch in ("both", "main"):  # launch="precompute" enqueues nothing: main does its work
            block_p = max(16, knobs.block_p)
            replay_fused_kernel[(triton.cdiv(P, block_p), H, batch)](
                rs.ckpt.data, rs.ckpt.scale if rs.ckpt.scale is not None else A, slot_idx, rs.pnat, rs.ring_start,
                rs.hist_x, rs.hist_B, rs.hist_dt, x, Bm, Cm, dt_raw, z if z is not None else dt_raw, y, A, D, dt_bias,
                seed, step,
                x.stride(0), Bm.stride(0), Cm.stride(0), dt_raw.stride(0), z.stride(0) if z is not None else 0,
                y.stride(0),
                T=T, W=rs.window, H=H, P=P, N=N, G=G, HEADS_PER_GROUP=H // G, T_PAD=t_pad,
                W_PAD=l_pad if knobs.ring_rows else w_pad,
                BLOCK_P=block_p, BLOCK_N=block_n, FMT=format_code(fmt), SR=sr, HAS_Z=z is not None,
                PREC=knobs.precision, PDL=use_pdl, RING=knobs.ring_rows,
                **launch_options(use_pdl, knobs.num_warps, 1, knobs.max_regs),
            )
        return y
    if launch in ("both", "precompute"):
        block_h = min(knobs.pre_heads, triton.next_power_of_2(H // G))
        replay_precompute_kernel[(triton.cdiv(H // G, block_h), G, batch)](
            slot_idx, rs.pnat, rs.ring_start, rs.hist_B, rs.hist_dt, Bm, Cm, dt_raw, A, dt_bias,
            scratch.cb, scratch.cdec, scratch.w, scratch.fdec,
            Bm.stride(0), Cm.stride(0), dt_raw.stride(0),
            T=T, W=rs.window, H=H, N=N, G=G, HEADS_PER_GROUP=H // G, T_PAD=t_pad, T_H=precompute_token_rows(T, t_pad),
            L_PAD=l_pad, BLOCK_N=block_n,
            BLOCK_H=block_h, PDL=use_pdl, **launch_options(use_pdl, knobs.pre_warps, 1),
        )
    if launch in ("both", "main") and knobs.bandwidth:
        from ssmbench_kernels.mamba2_replay.kernel_bw import launch_bw_main  # (imports this module)

        launch_bw_main(rs, slot_idx, x, Cm, z, y, D, scratch, H=H, P=P, N=N, G=G, T=T, fmt=fmt,
                       sr=sr, seed=seed, step=step, pads=(t_pad, w_pad, l_pad), knobs=knobs, pdl=use_pdl)
    elif launch in ("both", "main"):
        _launch_main(
            replay_main_kernel, (triton.cdiv(P, knobs.block_p), H, batch), rs, slot_idx, x, Cm, z, y, D, scratch,
            seed, step, H=H, P=P, N=N, G=G, T=T, pads=(t_pad, w_pad, l_pad), pdl=use_pdl, num_warps=knobs.num_warps,
            BLOCK_P=knobs.block_p, BLOCK_N=block_n, FMT=format_code(fmt), SR=sr, HAS_Z=z is not None,
        )
    return y


def commit(rs, slot_idx: torch.Tensor, accepted: torch.Tensor, T: int) -> None:
    """Bookkeeping after verification (docs/spec.md §5), in place and graph-safe (torch ops only, no
    host sync): write rows (pnat + T > W) ring_start = (ring_start + pnat) mod L, pnat = k;
    nowrite rows pnat += k; padding rows untouched. Must run after the step and before the next.

    Padding rows are aimed at slot 0 with a zero delta (an integer `index_add_`), so no boolean
    indexing (which syncs) is needed.
    """
    real = slot_idx >= 0
    s = slot_idx.clamp(min=0)
    pnat, start = rs.pnat[s], rs.ring_start[s]
    mw = pnat + T > rs.window
    k = accepted.to(pnat.dtype)
    new_start = torch.where(mw, (start + pnat) % (rs.window + T), start)
    new_pnat = torch.where(mw, k, pnat + k)
    zero = torch.zeros_like(pnat)
    rs.ring_start.index_add_(0, s, torch.where(real, new_start - start, zero))
    rs.pnat.index_add_(0, s, torch.where(real, new_pnat - pnat, zero))
