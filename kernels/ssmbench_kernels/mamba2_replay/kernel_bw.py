"""Checkpoint replay's bandwidth-first main kernel (issue 19; ``CheckpointKnobs.bandwidth``).

Why: the fused kernel carries the whole chain (slot -> state and ring -> fold -> outputs) in one
program at 255 registers, 2 programs per SM; its time barely moves when the state bytes halve
(docs/perf-notes.md, "Where FlashInfer wins, and why"). This main kernel runs after the shared
`replay_precompute_kernel` (CB rectangle / causal columns, cdec, fold weights, dt and B appends)
and is built to keep DRAM busy instead:

- one program per (row, head), heads fastest (grid ``(H, batch)``): neighbouring programs read
  neighbouring 32 KB (fp32) state tiles; the per-(row, head) operands (C, CB, cdec, history B and
  the fold weights) are loaded once and reused by every P-chunk of the head, not once per P-tile
  (the two-kernel dot main re-reads them for each of its 4 P-tiles: ~2x its state bytes in L2);
- the state streams in ``BLOCK_P x N_TILE`` tiles (`CheckpointKnobs.n_tile`; whole rows when 0,
  always for int8 / fp8, whose row scale needs every column): S C^T is a sum over the columns and
  the fold is elementwise in them, so a tile needs only its own columns of C and history B, and
  64 x 16 or 64 x 32 tiles on one warpgroup hold 67-96 registers where whole 64-row chunks held 255
  (ncu, session 11: 8 warps an SM, latency-bound). The tile loop is software-pipelined by Triton
  (``stages``: tiles ahead in shared memory by asynchronous copies). State loads only after
  `gdc_wait` (no state held across the wait; before it only the bookkeeping and, with
  ``prefetch``, a request that L2 fetch the program's state tile: the resident wave's state moves
  while conv1d and the precompute run; bf16 5-7% faster, session 12);
- every product on the tensor cores in bf16 parts with exact products and fp32 sums: outputs
  ``S C^T`` as hi + lo (2^-17 relative, inside the act-dtype tolerance; one product for a bf16
  checkpoint), the write rows' fold ``(X_h^T diag(w)) B_h`` as hi + mid + lo parts of the fp32
  ``x w`` (~2^-24 relative: fp32 checkpoints keep fp32 accuracy, unlike one bf16 pass), against
  bf16 B / C / x operands (activations are bf16, as the fused form assumes);
- the fold runs once per write row and tile; write rows' outputs either come from the unrounded
  S' inside the loop's branch (docs/spec.md §5b), or (``rect_outputs``) from S_ckpt like every
  row's, term by term: ``S' C^T = fdec S C^T + (X_h^T diag(w)) (B_h C^T)``, the product outside the
  branch and a bf16 tile fed to it as loaded (the pipelined copy straight into the warpgroup
  MMA: 7-10% faster for bf16, slower for the other formats; session 11). Nowrite rows' outputs
  come from S_ckpt over the rectangle. With ``split_loops`` write and nowrite rows run their own
  tile loop (nowrite rows never build the fold's operands: fp16 SR up to 8% faster with
  ``prefetch``; bf16 slower, at 128 registers; session 12);
- with ``tma`` the state tiles come by tensor descriptor (`state_descriptor`), one copy a tile: on
  the H200 bf16 and fp16 SR 3-6% faster at some batches, fp32 5-11% slower (session 17).

Triton 3.6 miscompiles some pipelined forms on Hopper (the warpgroup MMA reading shared memory
past the allocation, or stale buffers: wrong outputs): pipelined 32-column tiles without
``rect_outputs``, pipelined 64-column tiles, and a pipelined bf16 tile consumed by an MMA inside
the loop's branch. The knob space excludes the first two (`ssmbench.impls.triton_checkpoint`);
this kernel has none of the third. See docs/checkpoint.md, session 11.

Storage goes through `load_state_rows` / `store_state_rows`; SR fields are drawn once per tile by
`request_sr_bits` (from the tile's first column) with request = the slot (docs/spec.md §8).
Padding rows (slot < 0) touch no state or history and write zero outputs. Per-slot bases are int64
scalars, offsets inside a slot int32; ring rows by `_ring`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from ssmbench_kernels.common.dots import dot
from ssmbench_kernels.common.launch import interpreting, l2_lines, pdl_wait, prefetch_l2
from ssmbench_kernels.mamba2_replay.kernel import (
    CheckpointKnobs,
    ReplayScratch,
    _coefficients,
    _dot_bf16x2,
    _dot_bf16x2_rhs,
    _hist_B_tile,
    _hist_columns,
    _launch_main,
    _outputs_store,
    _ring,
    _row_ring,
    _row_slot,
    _state_ct,
    _store_checkpoint,
    _token_tile,
    _z_tile,
)
from ssmbench_kernels.storage.kernel import FMT_BF16, SCALED, bf16_to_fp32, format_code, load_state_rows


@triton.jit
def _bf16x3_parts(a):
    """fp32 ``a`` as three bf16 parts hi + mid + lo (|a - hi - mid - lo| <= ~2^-24 |a|): the fold's
    left operand, split once and used by every column tile (`_dot_bf16x3`)."""
    hi = a.to(tl.bfloat16)
    r = a - hi.to(tl.float32)
    mid = r.to(tl.bfloat16)
    lo = (r - mid.to(tl.float32)).to(tl.bfloat16)
    return hi, mid, lo


@triton.jit
def _fold_operand(x_hist, w):
    """The fold's left operand ``X_h^T diag(w)`` (BLOCK_P, W_PAD) from the history x rows and the fold
    weights, in fp32 and split into its three bf16 parts (`_bf16x3_parts`)."""
    return _bf16x3_parts(tl.trans(x_hist.to(tl.float32) * w[:, None]))


@triton.jit
def _dot_bf16x3(hi, mid, lo, b, acc):
    """``acc + (hi + mid + lo) @ b`` for bf16 ``b`` as three tensor-core products, exact products,
    fp32 sums: the fold of a stored fp32 checkpoint at fp32 accuracy without TF32's operand
    conversions."""
    return dot(lo, b, dot(mid, b, dot(hi, b, acc)))


@triton.jit
def _state_tile(ckpt_base, scale_base, srow, read_p, offs_n, mask_n, ckpt_desc, drow, n0, N: tl.constexpr,
                FMT: tl.constexpr, TMA: tl.constexpr):
    """A (rows, columns) tile of the checkpoint as the products take it: a bf16 checkpoint as loaded
    (S C^T's bf16 operand as it is, no trip through fp32 and back: session 11's ncu had the bf16 main
    issue-bound at 60%), any other format dequantized to fp32 (`load_state_rows`). Masked elements
    read as 0. With ``TMA`` (`CheckpointKnobs.tma`) one descriptor copy of the rows from pool row ``drow``
    and the columns from ``n0``: no row mask (what rows past P or a padding row read is never used)."""
    if TMA:
        tile = ckpt_desc.load([drow, n0])
        if FMT != FMT_BF16:
            tile = tile.to(tl.float32)
    elif FMT == FMT_BF16:
        tile = tl.load(ckpt_base + srow[:, None] * N + offs_n[None, :], mask=read_p[:, None] & mask_n[None, :],
                       other=0.0)
    else:
        tile = load_state_rows(ckpt_base, scale_base, srow, read_p, offs_n, mask_n, N, FMT)
    return tile


@triton.jit
def _fp32_tile(tile, FMT: tl.constexpr):
    """`_state_tile`'s tile in fp32 (the fold's operand)."""
    if FMT == FMT_BF16:
        tile = bf16_to_fp32(tile)
    return tile


@triton.jit
def _column_tile(ckpt_base, scale_base, c_ptr, n0, offs_k, srow, read_p, row0, stride_c_row, offs_t, c_col0, t_ok,
                 ckpt_desc, drow, N: tl.constexpr, FMT: tl.constexpr, TMA: tl.constexpr):
    """One step of a tile loop: the columns ``n0 + offs_k`` (offsets, mask), the state tile
    (`_state_tile`; ``drow``: its first pool row, for ``TMA``) and C^T over those columns (``c_col0``: the
    group's first C column)."""
    offs_nt = n0 + offs_k
    mask_nt = offs_nt < N
    state = _state_tile(ckpt_base, scale_base, srow, read_p, offs_nt, mask_nt, ckpt_desc, drow, n0, N, FMT, TMA)
    ct = tl.trans(_token_tile(c_ptr, row0, stride_c_row, offs_t, c_col0, offs_nt, t_ok, mask_nt))
    return offs_nt, mask_nt, state, ct


@triton.jit
def _fold_store(xw_hi, xw_mid, xw_lo, b_hist, state, fdec, ckpt_base, scale_base, srow, read_p, offs_nt, mask_nt, seed,
                s, step, n0, N: tl.constexpr, N_TILE: tl.constexpr, FMT: tl.constexpr, SR: tl.constexpr):
    """A write row's column tile: ``S' = exp(cum_h) S_ckpt + (X_h^T diag(w)) B_h`` (``state``: S_ckpt's
    tile in fp32, ``fdec``: exp(cum_h) per column), stored as the slot's checkpoint; returns S'."""
    folded = _dot_bf16x3(xw_hi, xw_mid, xw_lo, b_hist, state * fdec[None, :])
    _store_checkpoint(ckpt_base, scale_base, srow, srow, read_p, offs_nt, mask_nt, folded, seed, s, step, n0, N, N_TILE,
                      FMT, SR)
    return folded


@triton.jit
def _history_outputs(xw_hi, xw_mid, hb_base, rj, g, offs_n, fold_j, mask_n, c_ptr, row0, stride_c_row, offs_t, t_ok,
                     G: tl.constexpr, N: tl.constexpr, BLOCK_P: tl.constexpr, W_PAD: tl.constexpr,
                     T_PAD: tl.constexpr):
    """A write row's outputs beyond ``fdec S_ckpt C^T`` (``rect_outputs``): ``(X_h^T diag(w)) (B_h C^T)``,
    B_h C^T once per (row, head) from whole history-B and C rows (it does not involve the state);
    the fold operand's hi + mid parts (outputs need the act-dtype tolerance only)."""
    b_full = _hist_B_tile(hb_base, rj, g, offs_n, fold_j, mask_n, G, N)
    c_full = _token_tile(c_ptr, row0, stride_c_row, offs_t, g * N, offs_n, t_ok, mask_n)
    bc = dot(b_full, tl.trans(c_full), tl.zeros((W_PAD, T_PAD), dtype=tl.float32))
    hist = tl.zeros((BLOCK_P, T_PAD), dtype=tl.float32)
    return _dot_bf16x2_rhs(xw_mid, bc, _dot_bf16x2_rhs(xw_hi, bc, hist))


@triton.jit(do_not_specialize=["seed", "step"])
def replay_bw_main_kernel(
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
    ckpt_desc,  # `CheckpointKnobs.tma`: the pool's tensor descriptor (else ckpt_ptr again, never read)
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
    N_CHUNKS: tl.constexpr,
    N_TILE: tl.constexpr,
    STAGES: tl.constexpr,
    RECT: tl.constexpr,
    SPLIT: tl.constexpr,
    PREFETCH: tl.constexpr,
    PREFETCH_LINES: tl.constexpr,
    TMA: tl.constexpr,
    FMT: tl.constexpr,
    SR: tl.constexpr,
    HAS_Z: tl.constexpr,
    PDL: tl.constexpr,
):
    h = tl.program_id(0)  # heads fastest: neighbouring programs stream neighbouring state tiles
    b = tl.program_id(1).to(tl.int64)
    g = h // HEADS_PER_GROUP
    L: tl.constexpr = W + T
    slot, real, s = _row_slot(slot_ptr, b)
    pnat, start, mw = _row_ring(pnat_ptr, rs_ptr, s, real, T, W)

    offs_j, j_ok, rj, fold_j = _hist_columns(slot, pnat, start, mw, L, W, W_PAD)
    rect_j = j_ok & ((offs_j * 0 + mw.to(tl.int32)) == 0)  # history CB columns: nowrite rows only
    # Per-slot bases in int64 (scalars), offsets inside a slot in int32.
    ckpt_base = ckpt_ptr + s * (H * P * N)
    scale_base = scale_ptr + s * (H * P)  # (a dummy pointer, never read, for unscaled formats)
    hx_base = hist_x_ptr + s * (L * H * P) + h * P
    hb_base = hist_B_ptr + s * (L * G * N)
    Dh = tl.load(D_ptr + h).to(tl.float32)
    # (`CheckpointKnobs.prefetch`) The head's state rows are one contiguous run that no producer writes:
    # they move into L2 while conv1d and the precompute run, instead of after the wait.
    prefetch_l2(ckpt_base + h * (P * N), P * N, PREFETCH_LINES, PREFETCH)

    pdl_wait(PDL)

    # Per-(row, head) operands, once for every P-chunk and column tile.
    offs_t = tl.arange(0, T_PAD)
    t_ok = (offs_t < T) & ((offs_t * 0 + slot) >= 0)
    row0 = b * T  # int64; token offsets below are int32
    bh = b * H + h
    _, cb_hist, cb_new, cdec = _coefficients(cb_ptr, cdec_ptr, bh, offs_t, offs_j, t_ok, rect_j, T, W, T_PAD, L_PAD)
    w = tl.load(w_ptr + bh * L_PAD + offs_j, mask=fold_j, other=0.0)
    offs_k = tl.arange(0, N_TILE)
    fdec = tl.load(fdec_ptr + bh + offs_k * 0, mask=(offs_k * 0 + mw.to(tl.int32)) != 0, other=0.0)
    fdec_t = tl.load(fdec_ptr + bh + offs_t * 0, mask=(offs_t * 0 + mw.to(tl.int32)) != 0, other=0.0)
    offs_n = tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    wrow = _ring(start + pnat + offs_t, L)  # append rows (disjoint from every row read)

    for pc in range(N_CHUNKS):
        offs_p = pc * BLOCK_P + tl.arange(0, BLOCK_P)
        mask_p = offs_p < P
        srow = h * P + offs_p
        drow = (s * (H * P) + h * P + pc * BLOCK_P).to(tl.int32)  # the tile's first pool row (`TMA`)
        read_p = mask_p & ((offs_p * 0 + slot) >= 0)  # (vector forms of scalar masks: the interpreter)
        x_hist = tl.load(
            hx_base + rj[:, None] * (H * P) + offs_p[None, :], mask=j_ok[:, None] & mask_p[None, :], other=0.0
        )
        # The epilogue's operands too, issued with the first state tile instead of after the products.
        x_new = _token_tile(x_ptr, row0, stride_x_row, offs_t, h * P, offs_p, t_ok, mask_p)
        zt = _z_tile(z_ptr, row0, offs_t, h * P, offs_p, t_ok, mask_p, stride_z_row, HAS_Z)
        if SPLIT:  # `CheckpointKnobs.split_loops` (write rows' outputs from S', as without `rect_outputs`)
            # The state streams in (BLOCK_P, N_TILE) column tiles: S C^T and the fold are sums over /
            # elementwise in the columns, so a tile needs only its own columns of C and history B.
            # Write and nowrite rows run their own tile loop, neither with a branch inside: a nowrite
            # row (~70% of them at W = 16) never builds the fold's operands.
            yt = tl.zeros((BLOCK_P, T_PAD), dtype=tl.float32)
            if mw:
                xw_hi, xw_mid, xw_lo = _fold_operand(x_hist, w)
                for n0 in tl.range(0, BLOCK_N, N_TILE, num_stages=STAGES):
                    offs_nt, mask_nt, state, ct = _column_tile(
                        ckpt_base, scale_base, c_ptr, n0, offs_k, srow, read_p, row0, stride_c_row, offs_t, g * N, t_ok,
                        ckpt_desc, drow, N, FMT, TMA)
                    b_hist = _hist_B_tile(hb_base, rj, g, offs_nt, fold_j, mask_nt, G, N)
                    folded = _fold_store(xw_hi, xw_mid, xw_lo, b_hist, _fp32_tile(state, FMT), fdec, ckpt_base,
                                         scale_base, srow, read_p, offs_nt, mask_nt, seed, s, step, n0, N, N_TILE, FMT,
                                         SR)
                    yt = _dot_bf16x2(folded, ct, yt)
                yt = yt * cdec[None, :]
            else:
                for n0 in tl.range(0, BLOCK_N, N_TILE, num_stages=STAGES):
                    offs_nt, mask_nt, state, ct = _column_tile(
                        ckpt_base, scale_base, c_ptr, n0, offs_k, srow, read_p, row0, stride_c_row, offs_t, g * N, t_ok,
                        ckpt_desc, drow, N, FMT, TMA)
                    yt = _state_ct(state, ct, yt, FMT)
                yt = _dot_bf16x2_rhs(tl.trans(x_hist), tl.trans(cb_hist), yt * cdec[None, :])
        elif RECT:  # `CheckpointKnobs.rect_outputs`
            xw_hi, xw_mid, xw_lo = _fold_operand(x_hist, w)
            yt = tl.zeros((BLOCK_P, T_PAD), dtype=tl.float32)
            # The loop's only branch holds the write rows' fold and store; S C^T runs for every row outside
            # it (a product inside a branch of the pipelined loop, reading the pipelined tile, gave wrong
            # outputs on the H200 under Triton 3.6: session 11).
            for n0 in tl.range(0, BLOCK_N, N_TILE, num_stages=STAGES):
                offs_nt, mask_nt, state, ct = _column_tile(
                    ckpt_base, scale_base, c_ptr, n0, offs_k, srow, read_p, row0, stride_c_row, offs_t, g * N, t_ok,
                    ckpt_desc, drow, N, FMT, TMA)
                b_hist = _hist_B_tile(hb_base, rj, g, offs_nt, fold_j, mask_nt, G, N)
                yt = _state_ct(state, ct, yt, FMT)
                if mw:
                    _fold_store(xw_hi, xw_mid, xw_lo, b_hist, _fp32_tile(state, FMT), fdec, ckpt_base, scale_base, srow,
                                read_p, offs_nt, mask_nt, seed, s, step, n0, N, N_TILE, FMT, SR)
            if mw:
                yt = (yt * fdec_t[None, :] + _history_outputs(xw_hi, xw_mid, hb_base, rj, g, offs_n, fold_j, mask_n,
                                                              c_ptr, row0, stride_c_row, offs_t, t_ok, G, N, BLOCK_P,
                                                              W_PAD, T_PAD)) * cdec[None, :]
            else:
                yt = _dot_bf16x2_rhs(tl.trans(x_hist), tl.trans(cb_hist), yt * cdec[None, :])
        else:
            xw_hi, xw_mid, xw_lo = _fold_operand(x_hist, w)
            yt = tl.zeros((BLOCK_P, T_PAD), dtype=tl.float32)
            for n0 in tl.range(0, BLOCK_N, N_TILE, num_stages=STAGES):
                offs_nt, mask_nt, state, ct = _column_tile(
                    ckpt_base, scale_base, c_ptr, n0, offs_k, srow, read_p, row0, stride_c_row, offs_t, g * N, t_ok,
                    ckpt_desc, drow, N, FMT, TMA)
                # In fp32 before the branch: a pipelined bf16 tile read by an MMA inside it gave wrong
                # outputs under Triton 3.6 (session 11).
                state = _fp32_tile(state, FMT)
                b_hist = _hist_B_tile(hb_base, rj, g, offs_nt, fold_j, mask_nt, G, N)
                if mw:
                    state = _fold_store(xw_hi, xw_mid, xw_lo, b_hist, state, fdec, ckpt_base, scale_base, srow, read_p,
                                        offs_nt, mask_nt, seed, s, step, n0, N, N_TILE, FMT, SR)
                    yt = _dot_bf16x2(state, ct, yt)
                else:
                    yt = _state_ct(state, ct, yt, FMT)
            yt = yt * cdec[None, :]
            if not mw:
                yt = _dot_bf16x2_rhs(tl.trans(x_hist), tl.trans(cb_hist), yt)
        _outputs_store(yt, x_new, cb_new, Dh, zt, y_ptr, row0, offs_t, h * P, offs_p, t_ok, mask_p, stride_y_row, T,
                       HAS_Z)
        tl.store(hx_base + wrow[:, None] * (H * P) + offs_p[None, :], x_new, mask=t_ok[:, None] & mask_p[None, :])


KERNEL_NAME: str = replay_bw_main_kernel.fn.__name__
"""The main kernel's name (after `replay_precompute_kernel`), for CUPTI attribution."""


def launch_bw_main(
    rs,
    slot_idx: torch.Tensor,
    x: torch.Tensor,
    Cm: torch.Tensor,
    z: torch.Tensor | None,
    y: torch.Tensor,
    D: torch.Tensor,
    scratch: ReplayScratch,
    *,
    H: int,
    P: int,
    N: int,
    G: int,
    T: int,
    fmt: str,
    sr: bool,
    seed: int,
    step: int,
    pads: tuple[int, int, int],
    knobs: CheckpointKnobs,
    pdl: bool,
) -> None:
    """Enqueue the bandwidth-first main on grid ``(H, batch)`` (inputs checked by `replay_step`)."""
    block_p = max(16, min(knobs.block_p, triton.next_power_of_2(P)))
    block_n = max(16, triton.next_power_of_2(N))
    n_tile = column_tile(knobs, block_n, fmt)
    desc = state_descriptor(rs.ckpt.data, fmt, block_p, n_tile) if knobs.tma else None
    _launch_main(
        replay_bw_main_kernel, (H, slot_idx.shape[0]), rs, slot_idx, x, Cm, z, y, D, scratch, seed, step,
        H=H, P=P, N=N, G=G, T=T, pads=pads, pdl=pdl, num_warps=knobs.num_warps,
        ckpt_desc=desc if desc is not None else rs.ckpt.data, TMA=desc is not None,
        BLOCK_P=block_p, BLOCK_N=block_n, N_CHUNKS=triton.cdiv(P, block_p),
        N_TILE=n_tile, STAGES=knobs.stages if not interpreting() else 1,
        RECT=knobs.rect_outputs, SPLIT=knobs.split_loops, PREFETCH=knobs.prefetch and not interpreting(),
        PREFETCH_LINES=l2_lines(rs.ckpt.data, P * N),
        FMT=format_code(fmt), SR=sr, HAS_Z=z is not None, max_regs=knobs.max_regs,
    )


def state_descriptor(data: torch.Tensor, fmt: str, block_p: int, n_tile: int) -> TensorDescriptor | None:
    """`CheckpointKnobs.tma`'s tensor descriptor: the pool's ``(n_slots, H, P, N)`` checkpoint as
    ``(n_slots * H * P, N)`` rows in ``block_p x n_tile`` boxes; None (the loads) where TMA cannot take
    it: a scaled format (row scales over whole rows), a row not a multiple of 16 bytes, a box wider than
    TMA's 256 elements, or more rows than int32 coordinates reach."""
    rows, n = data.shape[0] * data.shape[1] * data.shape[2], data.shape[3]
    if (fmt in SCALED or (n * data.element_size()) % 16 or n_tile > 256 or block_p > 256
            or rows >= 2**31 or data.data_ptr() % 16):
        return None
    return TensorDescriptor(data.view(rows, n), shape=[rows, n], strides=[n, 1], block_shape=[block_p, n_tile])


def column_tile(knobs: CheckpointKnobs, block_n: int, fmt: str) -> int:
    """State columns per step of the main's tile loop: ``knobs.n_tile`` (0: whole rows), whole rows
    for the scaled formats (int8 / fp8: a stored row's scale is the max over all its columns, which
    a column tile cannot know before the last one)."""
    if knobs.n_tile == 0 or fmt in SCALED:
        return block_n
    return max(16, min(knobs.n_tile, block_n))
