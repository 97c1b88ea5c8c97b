"""Mamba-2 checkpoint replay (SPEC 5): conv1d -> **precompute** -> **main**, PDL-linked (SPEC 7).

Per slot: a checkpoint state ``ckpt`` (storage format of SPEC 8, fp32 scales beside int8/fp8)
and a history ring of ``L = W + T`` rows (x act dtype per head, B act dtype per group, processed
dt fp32 per head); ``ring_start`` and ``pnat`` per slot. The buffers have exactly the layout of
`kernels.reference.replay.ReplayState`, so a `ReplayState` holds them and the reference reads
them back. A row is a *write* row when ``pnat + T > W``.

Sequence columns
----------------
Both kernels index one combined sequence per row: columns ``0..W-1`` are history tokens in token
order (token j at ring row ``(ring_start + j) mod L``, valid for ``j < pnat``), columns
``W..W+T-1`` the T new tokens, padded to ``L_PAD`` (power of two >= 16). Invalid history
columns carry dt = 0 (an exact no-op token), so one cumulative sum ``cum`` over the columns
serves both cases.

precompute (grid ``(H, batch)``, one program per head and row)
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
main (grid ``(cdiv(P, BLOCK_P), H, batch)``, or persistent: see below)
  - write rows: ``S' = exp(cum_h) S_ckpt + (X_h^T diag(w)) B_h`` (one `tl.dot`, K = history
    columns), stored as the new checkpoint (RN / SR via `kernels.triton.storage`; SR counter
    ``(h*P + p, n // 4, slot, step)``);
  - outputs ``Y^T = (S_ref @ C^T) * cdec + X_h^T @ CB_h^T + X_new^T @ CB_new^T`` (three
    `tl.dot`s) with S_ref = S' (unrounded, as the reference) or S_ckpt, then ``+ D x``, z gate;
  - history append of x.
  History rows read (``j < pnat``) and rows written (``pnat .. pnat + T - 1``) never overlap
  because pnat <= W (``pnat + T <= L``), so precompute's appends never race main's reads.

PDL: precompute calls `gdc_launch_dependents()` first; both kernels load indices, bookkeeping,
checkpoint tile, history and parameters before `gdc_wait()` and the conv output / dt / z /
precompute's coefficients after it. The persistent form peels its first work item so that its
only `gdc_wait` is outside the loop (SPEC 7, triton-lang/triton#11905).

Persistent form (``knobs.persistent``): a fixed grid of ``min(items, programs)`` programs walks
the work list ``(row, head, P-tile)`` with a stride; rows are ordered write-first on the device
(every program ranks the batch's must_write flags itself: ``n_writes`` and the positions are
computed from pnat in registers, no extra kernel), and each item branches to the write- or
nowrite-specialized path. A CUDA graph captured once handles any write/nowrite mix.

Padding rows (slot < 0): no state / history read or write, zero outputs. Offsets are int64
(slots cast before any multiply). Non-power-of-two P / N are masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels.triton.dots import dot
from kernels.triton.intermediate import _softplus
from kernels.triton.launch import (
    interpreting,
    is_capturing,
    launch_options,
    pdl_enabled,
    pdl_launch_dependents,
    pdl_wait,
)
from kernels.triton.storage import SCALED, format_code, format_of, load_state_rows, rounding_is_sr, store_state_rows
from kernels.triton.validation import check_slot_range, check_unique_slots


@dataclass(frozen=True)
class CheckpointKnobs:
    """Tuning knobs of the replay kernels (parameters, not constants)."""

    block_p: int = 16
    """Head channels per main program (power of two >= 16: `tl.dot` needs 16 rows)."""
    num_warps: int = 4
    """Warps per main program."""
    pre_warps: int = 2
    """Warps per precompute program."""
    dots: bool = True
    """Main's fold and outputs as `tl.dot`s (True) or as rank-1 updates and row reductions."""
    persistent: bool = False
    """Main as a persistent kernel over a device-side, write-first work list."""
    programs_per_sm: int = 4
    """Persistent form: programs per SM."""


def default_knobs(batch: int, fmt: str, rounding: str = "rn", head_dim: int = 64) -> CheckpointKnobs:
    """Heuristic (H100, docs/checkpoint.md): the rank-1 / row-reduction form of main on 4 x N tiles
    and one warp, as the intermediate kernel (fp32 `tl.dot`s with ieee precision run on the FMA
    units through shared memory and were ~4x slower); one-row-per-program grid."""
    del batch, fmt, rounding
    if interpreting():  # CPU: the dot form runs ~3x faster in the interpreter (both are unit-tested)
        return CheckpointKnobs(dots=True, block_p=16, num_warps=4)
    return CheckpointKnobs(dots=False, block_p=min(4, triton.next_power_of_2(head_dim)), num_warps=1)


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


# --------------------------------------------------------------------------------------------
# precompute
# --------------------------------------------------------------------------------------------


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
    L_PAD: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PDL: tl.constexpr,
):
    pdl_launch_dependents(PDL)
    h = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    g = h // HEADS_PER_GROUP
    L: tl.constexpr = W + T

    slot = tl.load(slot_ptr + b).to(tl.int64)
    real = slot >= 0
    s = tl.maximum(slot, 0)
    pnat = tl.load(pnat_ptr + s, mask=real, other=0).to(tl.int64)
    start = tl.load(rs_ptr + s, mask=real, other=0).to(tl.int64)
    mw = real & (pnat + T > W)
    A = tl.load(A_ptr + h).to(tl.float32)
    dt_bias = tl.load(dt_bias_ptr + h).to(tl.float32)

    cols = tl.arange(0, L_PAD)
    offs_n = tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    zero_c = cols * 0
    is_hist = cols < W
    hist_ok = is_hist & (cols < (zero_c + pnat)) & ((zero_c + slot) >= 0)
    ring = (start + cols) % L
    hrow = s * L + ring  # int64 ring rows of this slot
    dt_hist = tl.load(hist_dt_ptr + hrow * H + h, mask=hist_ok, other=0.0)
    b_hist = tl.load(
        hist_B_ptr + (hrow[:, None] * G + g) * N + offs_n[None, :], mask=hist_ok[:, None] & mask_n[None, :], other=0.0
    )

    pdl_wait(PDL)

    tok = cols - W
    new_ok = (cols >= W) & (cols < W + T) & ((zero_c + slot) >= 0)
    trow = b * T + tok
    dt_new = tl.load(dt_ptr + trow * stride_dt_row + h, mask=new_ok, other=0.0).to(tl.float32)
    dt_new = tl.where(new_ok, _softplus(dt_new + dt_bias), 0.0)
    b_new = tl.load(
        b_ptr + trow[:, None] * stride_b_row + g * N + offs_n[None, :],
        mask=new_ok[:, None] & mask_n[None, :],
        other=0.0,
    )
    dt_seq = tl.where(is_hist, dt_hist, dt_new)
    b_seq = tl.where(is_hist[:, None], b_hist, b_new)

    offs_t = tl.arange(0, T_PAD)
    t_ok = (offs_t < T) & ((offs_t * 0 + slot) >= 0)
    c_new = tl.load(
        c_ptr + (b * T + offs_t)[:, None] * stride_c_row + g * N + offs_n[None, :],
        mask=t_ok[:, None] & mask_n[None, :],
        other=0.0,
    )
    cb_raw = dot(c_new, tl.trans(b_seq), tl.zeros((T_PAD, L_PAD), dtype=tl.float32))  # C_t . B_j

    cum = tl.cumsum(A * dt_seq, axis=0)
    cum_h = tl.sum(tl.where(is_hist, A * dt_seq, 0.0), axis=0)
    # cum at output token t is cum at column W + t.
    cum_out = tl.sum(tl.where(cols[None, :] == (offs_t[:, None] + W), cum[None, :], 0.0), axis=1)
    causal_new = (cols[None, :] >= W) & (cols[None, :] <= offs_t[:, None] + W)
    keep_hist = hist_ok[None, :] & ((offs_t[:, None] * 0 + mw.to(tl.int32)) == 0)
    keep = (causal_new | keep_hist) & t_ok[:, None]
    decay = tl.exp(tl.where(keep, cum_out[:, None] - cum[None, :], 0.0))
    cb = tl.where(keep, decay * dt_seq[None, :] * cb_raw, 0.0)
    cdec = tl.where(mw, tl.exp(cum_out - cum_h), tl.exp(cum_out))
    w = tl.where(hist_ok & mw, tl.exp(cum_h - cum) * dt_seq, 0.0)
    fdec = tl.exp(cum_h)

    bh = b * H + h
    tl.store(
        cb_ptr + (bh * T + offs_t[:, None]) * L_PAD + cols[None, :], cb,
        mask=(offs_t[:, None] < T) & (cols[None, :] < W + T),
    )
    tl.store(cdec_ptr + bh * T_PAD + offs_t, cdec, mask=offs_t < T)
    tl.store(w_ptr + bh * L_PAD + cols, w, mask=is_hist)
    tl.store(fdec_ptr + bh, fdec)

    # History appends of this step's tokens (ring rows disjoint from the rows read above).
    wrow = s * L + (start + pnat + tok) % L
    tl.store(hist_dt_ptr + wrow * H + h, dt_new, mask=new_ok)
    if h % HEADS_PER_GROUP == 0:
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
    USE_DOT: tl.constexpr,
    WAIT: tl.constexpr,
):
    """One work item (row b, head h, P-tile pid_p). WAIT: call `gdc_wait` after the
    producer-independent loads (only the first item of a program)."""
    g = h // HEADS_PER_GROUP
    L: tl.constexpr = W + T
    slot = tl.load(slot_ptr + b).to(tl.int64)
    real = slot >= 0
    s = tl.maximum(slot, 0)
    pnat = tl.load(pnat_ptr + s, mask=real, other=0).to(tl.int64)
    start = tl.load(rs_ptr + s, mask=real, other=0).to(tl.int64)
    mw = real & (pnat + T > W)

    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    mask_p = offs_p < P
    mask_n = offs_n < N
    srow = h * P + offs_p
    read_p = mask_p & ((offs_p * 0 + slot) >= 0)
    state = load_state_rows(ckpt_ptr, scale_ptr, s * (H * P) + srow, read_p, offs_n, mask_n, N, FMT)

    offs_j = tl.arange(0, W_PAD)
    j_ok = (offs_j < W) & (offs_j < (offs_j * 0 + pnat)) & ((offs_j * 0 + slot) >= 0)
    hrow = s * L + (start + offs_j) % L
    fold_j = j_ok & ((offs_j * 0 + mw.to(tl.int32)) != 0)  # history B: write rows only
    if USE_DOT:
        x_hist = tl.load(
            hist_x_ptr + (hrow[:, None] * H + h) * P + offs_p[None, :], mask=j_ok[:, None] & mask_p[None, :], other=0.0
        )
        b_hist = tl.load(
            hist_B_ptr + (hrow[:, None] * G + g) * N + offs_n[None, :],
            mask=fold_j[:, None] & mask_n[None, :],
            other=0.0,
        )
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
    if USE_DOT:
        c_new = tl.load(
            c_ptr + rows_t[:, None] * stride_c_row + g * N + offs_n[None, :],
            mask=t_ok[:, None] & mask_n[None, :],
            other=0.0,
        )
    bh = b * H + h
    cb_t = cb_ptr + (bh * T + offs_t[:, None]) * L_PAD
    if USE_DOT:
        rect_j = j_ok & ((offs_j * 0 + mw.to(tl.int32)) == 0)  # history CB columns: nowrite rows only
        cb_hist = tl.load(cb_t + offs_j[None, :], mask=t_ok[:, None] & rect_j[None, :], other=0.0)
        cb_new = tl.load(cb_t + W + offs_t[None, :], mask=t_ok[:, None] & t_ok[None, :], other=0.0)
    cdec = tl.load(cdec_ptr + bh * T_PAD + offs_t, mask=t_ok, other=0.0)

    xt = tl.trans(x_new.to(tl.float32))
    if mw:
        # Fold the history into S', store the checkpoint.
        fdec = tl.load(fdec_ptr + bh)
        if USE_DOT:  # one dot over the history columns
            w = tl.load(w_ptr + bh * L_PAD + offs_j, mask=fold_j, other=0.0)
            xw = x_hist.to(tl.float32) * w[:, None]
            state = dot(tl.trans(xw), b_hist.to(tl.float32), state * fdec)
        else:  # rank-1 updates, history rows loaded one by one (all independent: one latency)
            state = state * fdec
            for j in tl.static_range(W):
                ok_p = mask_p & ((offs_p * 0 + j) < pnat)
                ok_n = mask_n & ((offs_n * 0 + j) < pnat)
                row_j = s * L + (start + j) % L
                x_j = tl.load(hist_x_ptr + (row_j * H + h) * P + offs_p, mask=ok_p, other=0.0).to(tl.float32)
                b_j = tl.load(hist_B_ptr + (row_j * G + g) * N + offs_n, mask=ok_n, other=0.0).to(tl.float32)
                w_j = tl.load(w_ptr + bh * L_PAD + j + offs_p * 0, mask=ok_p, other=0.0)
                state += (x_j * w_j)[:, None] * b_j[None, :]
        store_state_rows(
            ckpt_ptr, scale_ptr, s * (H * P) + srow, read_p, offs_n, mask_n, state, N, FMT, SR, seed, s, step, srow
        )

    # Outputs, transposed: Y^T (BLOCK_P, T_PAD).
    if USE_DOT:
        yt = dot(state, tl.trans(c_new.to(tl.float32)), tl.zeros((BLOCK_P, T_PAD), dtype=tl.float32))
        yt = yt * cdec[None, :]
        if not mw:
            yt = dot(tl.trans(x_hist.to(tl.float32)), tl.trans(cb_hist), yt)
        yt = dot(xt, tl.trans(cb_new), yt)
    else:
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
                row_j = s * L + (start + j) % L
                x_j = tl.load(hist_x_ptr + (row_j * H + h) * P + offs_p, mask=ok_p, other=0.0).to(tl.float32)
                cb_j = tl.load(cb_t + j, mask=t_ok[:, None] & ((offs_t * 0 + j) < pnat)[:, None], other=0.0)
                yt += x_j[:, None] * tl.sum(cb_j, axis=1)[None, :]
        for i in tl.static_range(T):  # new-token columns
            x_i = tl.sum(tl.where(offs_t[None, :] == i, xt, 0.0), axis=1)
            cb_i = tl.load(cb_t + W + i, mask=t_ok[:, None], other=0.0)
            yt += x_i[:, None] * tl.sum(cb_i, axis=1)[None, :]
    yt = yt + Dh * xt
    if HAS_Z:
        zt = tl.load(
            z_ptr + rows_t[None, :] * stride_z_row + h * P + offs_p[:, None],
            mask=mask_p[:, None] & t_ok[None, :],
            other=0.0,
        ).to(tl.float32)
        yt = yt * (zt * tl.sigmoid(zt))
    yt = tl.where(t_ok[None, :], yt, 0.0)  # padding rows: exact zeros
    tl.store(
        y_ptr + rows_t[None, :] * stride_y_row + h * P + offs_p[:, None],
        yt.to(y_ptr.dtype.element_ty),
        mask=mask_p[:, None] & (offs_t[None, :] < T),
    )

    # History append of x at ring rows (ring_start + pnat + i) mod L.
    wrow = s * L + (start + pnat + offs_t) % L
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
    batch,
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
    BLOCK_B: tl.constexpr,
    N_PTILES: tl.constexpr,
    FMT: tl.constexpr,
    SR: tl.constexpr,
    HAS_Z: tl.constexpr,
    USE_DOT: tl.constexpr,
    PERSISTENT: tl.constexpr,
    PDL: tl.constexpr,
):
    if not PERSISTENT:
        _main_item(
            tl.program_id(2).to(tl.int64), tl.program_id(1), tl.program_id(0),
            ckpt_ptr, scale_ptr, slot_ptr, pnat_ptr, rs_ptr, hist_x_ptr, hist_B_ptr, x_ptr, c_ptr, z_ptr, y_ptr,
            D_ptr, cb_ptr, cdec_ptr, w_ptr, fdec_ptr, seed, step,
            stride_x_row, stride_c_row, stride_z_row, stride_y_row,
            T, W, H, P, N, G, HEADS_PER_GROUP, T_PAD, W_PAD, L_PAD, BLOCK_P, BLOCK_N, FMT, SR, HAS_Z, USE_DOT, PDL,
        )
    else:
        # Work list: rows ordered write-first (ranked here from the bookkeeping), then heads and
        # P-tiles of a row. Every program computes the same order.
        rows = tl.arange(0, BLOCK_B)
        rows_ok = rows < batch
        slots = tl.load(slot_ptr + rows, mask=rows_ok, other=-1).to(tl.int64)
        pn = tl.load(pnat_ptr + tl.maximum(slots, 0), mask=slots >= 0, other=0).to(tl.int64)
        mw_all = ((slots >= 0) & (pn + T > W)).to(tl.int32)
        n_writes = tl.sum(mw_all, axis=0)
        pos = tl.where(mw_all != 0, tl.cumsum(mw_all, axis=0) - 1, n_writes + tl.cumsum(1 - mw_all, axis=0) - 1)
        pos = tl.where(rows_ok, pos, -1)
        per_row: tl.constexpr = H * N_PTILES
        n_items = batch * per_row
        pid = tl.program_id(0)
        nprog = tl.num_programs(0)
        # First item peeled: the only gdc_wait stays outside the loop.
        r = pid // per_row
        rem = pid % per_row
        b = tl.sum(tl.where(pos == r, rows, 0), axis=0).to(tl.int64)
        _main_item(
            b, rem // N_PTILES, rem % N_PTILES,
            ckpt_ptr, scale_ptr, slot_ptr, pnat_ptr, rs_ptr, hist_x_ptr, hist_B_ptr, x_ptr, c_ptr, z_ptr, y_ptr,
            D_ptr, cb_ptr, cdec_ptr, w_ptr, fdec_ptr, seed, step,
            stride_x_row, stride_c_row, stride_z_row, stride_y_row,
            T, W, H, P, N, G, HEADS_PER_GROUP, T_PAD, W_PAD, L_PAD, BLOCK_P, BLOCK_N, FMT, SR, HAS_Z, USE_DOT, PDL,
        )
        for item in range(pid + nprog, n_items, nprog):
            r = item // per_row
            rem = item % per_row
            b = tl.sum(tl.where(pos == r, rows, 0), axis=0).to(tl.int64)
            _main_item(
                b, rem // N_PTILES, rem % N_PTILES,
                ckpt_ptr, scale_ptr, slot_ptr, pnat_ptr, rs_ptr, hist_x_ptr, hist_B_ptr, x_ptr, c_ptr, z_ptr, y_ptr,
                D_ptr, cb_ptr, cdec_ptr, w_ptr, fdec_ptr, seed, step,
                stride_x_row, stride_c_row, stride_z_row, stride_y_row,
                T, W, H, P, N, G, HEADS_PER_GROUP, T_PAD, W_PAD, L_PAD, BLOCK_P, BLOCK_N, FMT, SR, HAS_Z, USE_DOT,
                False,
            )


KERNEL_NAMES: tuple[str, ...] = (replay_precompute_kernel.fn.__name__, replay_main_kernel.fn.__name__)
"""Kernel names `replay_step` launches (precompute, main), for CUPTI attribution."""


# --------------------------------------------------------------------------------------------
# wrappers
# --------------------------------------------------------------------------------------------


def validate_replay_inputs(rs, slot_idx: torch.Tensor, T: int) -> None:
    """Host-side checks that read values (one device sync; SPEC 3, 5): distinct real slots in
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
    """One checkpoint-replay step (SPEC 5) of T tokens per row: precompute then main.

    rs: a `kernels.reference.replay.ReplayState` of device buffers (mutated in place: write rows'
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

    knobs = knobs or default_knobs(batch, fmt, rounding, P)
    use_pdl = pdl_enabled(pdl, conv_out.device)
    x = conv_out[:, : H * P]
    Bm = conv_out[:, H * P : H * P + G * N]
    Cm = conv_out[:, H * P + G * N :]
    block_n = max(16, triton.next_power_of_2(N))
    if launch in ("both", "precompute"):
        replay_precompute_kernel[(H, batch)](
            slot_idx, rs.pnat, rs.ring_start, rs.hist_B, rs.hist_dt, Bm, Cm, dt_raw, A, dt_bias,
            scratch.cb, scratch.cdec, scratch.w, scratch.fdec,
            Bm.stride(0), Cm.stride(0), dt_raw.stride(0),
            T=T, W=rs.window, H=H, N=N, G=G, HEADS_PER_GROUP=H // G, T_PAD=t_pad, L_PAD=l_pad, BLOCK_N=block_n,
            PDL=use_pdl, **launch_options(use_pdl, knobs.pre_warps, 1),
        )
    if launch in ("both", "main"):
        block_p = max(16, knobs.block_p) if knobs.dots else knobs.block_p
        n_ptiles = triton.cdiv(P, block_p)
        if knobs.persistent:
            programs = knobs.programs_per_sm * _sm_count(conv_out.device)
            grid = (max(1, min(batch * H * n_ptiles, programs)), 1, 1)
        else:
            grid = (n_ptiles, H, batch)
        replay_main_kernel[grid](
            rs.ckpt.data, rs.ckpt.scale if rs.ckpt.scale is not None else A, slot_idx, rs.pnat, rs.ring_start,
            rs.hist_x, rs.hist_B, x, Cm, z if z is not None else dt_raw, y, D,
            scratch.cb, scratch.cdec, scratch.w, scratch.fdec, seed, step, batch,
            x.stride(0), Cm.stride(0), z.stride(0) if z is not None else 0, y.stride(0),
            T=T, W=rs.window, H=H, P=P, N=N, G=G, HEADS_PER_GROUP=H // G, T_PAD=t_pad, W_PAD=w_pad, L_PAD=l_pad,
            BLOCK_P=block_p, BLOCK_N=block_n, BLOCK_B=max(16, triton.next_power_of_2(batch)), N_PTILES=n_ptiles,
            FMT=format_code(fmt), SR=sr, HAS_Z=z is not None, USE_DOT=knobs.dots, PERSISTENT=knobs.persistent,
            PDL=use_pdl,
            **launch_options(use_pdl, knobs.num_warps, 1),
        )
    return y


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 4  # the interpreter: a few programs, so the grid-stride loop is exercised
    return torch.cuda.get_device_properties(device).multi_processor_count


def commit(rs, slot_idx: torch.Tensor, accepted: torch.Tensor, T: int) -> None:
    """Bookkeeping after verification (SPEC 5), in place and graph-safe (torch ops only, no
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
