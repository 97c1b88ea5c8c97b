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
- the state streams in ``BLOCK_P x N`` chunks (a small register tile: 16 x 128 fp32 on 4 warps is
  16 registers a thread), loaded only after `gdc_wait` (no state held across the wait; before it
  only the bookkeeping and history B);
- every product on the tensor cores in bf16 parts with exact products and fp32 sums: outputs
  ``S C^T`` as hi + lo (2^-17 relative, inside the act-dtype tolerance; one product for a bf16
  checkpoint), the write rows' fold ``(X_h^T diag(w)) B_h`` as hi + mid + lo parts of the fp32
  ``x w`` (~2^-24 relative: fp32 checkpoints keep fp32 accuracy, unlike one bf16 pass), against
  bf16 B / C / x operands (activations are bf16, as the fused form assumes);
- the fold runs once per write row and chunk, and the outputs of write rows come from the
  unrounded S' (docs/spec.md §5b), nowrite rows' from S_ckpt over the rectangle.

Storage goes through `load_state_rows` / `store_state_rows`; SR fields are drawn once per chunk by
`request_sr_bits` with request = the slot (docs/spec.md §8). Padding rows (slot < 0) touch no
state or history and write zero outputs. Per-slot bases are int64 scalars, offsets inside a slot
int32; ring rows by `_ring`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ssmbench_kernels.common.dots import dot
from ssmbench_kernels.common.launch import interpreting, launch_options, pdl_wait
from ssmbench_kernels.mamba2_replay.kernel import CheckpointKnobs, ReplayScratch, _dot_bf16x2, _dot_bf16x2_rhs, _ring
from ssmbench_kernels.storage.kernel import FMT_BF16, load_state_rows, request_sr_bits, store_state_rows


@triton.jit
def _dot_bf16x3(a, b, acc):
    """``acc + a @ b`` for fp32 ``a`` and bf16 ``b`` as three bf16 tensor-core products: a = hi +
    mid + lo (|a - hi - mid - lo| <= ~2^-24 |a|), products exact, fp32 sums. For the fold of a
    stored fp32 checkpoint (fp32 accuracy without TF32's operand conversions)."""
    hi = a.to(tl.bfloat16)
    r = a - hi.to(tl.float32)
    mid = r.to(tl.bfloat16)
    lo = (r - mid.to(tl.float32)).to(tl.bfloat16)
    return dot(lo, b, dot(mid, b, dot(hi, b, acc)))


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
    FMT: tl.constexpr,
    SR: tl.constexpr,
    HAS_Z: tl.constexpr,
    PDL: tl.constexpr,
):
    h = tl.program_id(0)  # heads fastest: neighbouring programs stream neighbouring state tiles
    b = tl.program_id(1).to(tl.int64)
    g = h // HEADS_PER_GROUP
    L: tl.constexpr = W + T
    slot = tl.load(slot_ptr + b)
    real = slot >= 0
    s = tl.maximum(slot, 0).to(tl.int64)
    pnat = tl.load(pnat_ptr + s, mask=real, other=0).to(tl.int32)
    start = tl.load(rs_ptr + s, mask=real, other=0).to(tl.int32)
    mw = real & (pnat + T > W)

    offs_n = tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    offs_j = tl.arange(0, W_PAD)
    j_ok = (offs_j < W) & (offs_j < (offs_j * 0 + pnat)) & ((offs_j * 0 + slot) >= 0)
    fold_j = j_ok & ((offs_j * 0 + mw.to(tl.int32)) != 0)  # history B: write rows only
    rect_j = j_ok & ((offs_j * 0 + mw.to(tl.int32)) == 0)  # history CB columns: nowrite rows only
    rj = _ring(start + offs_j, L)
    # Per-slot bases in int64 (scalars), offsets inside a slot in int32.
    ckpt_base = ckpt_ptr + s * (H * P * N)
    scale_base = scale_ptr + s * (H * P)  # (a dummy pointer, never read, for unscaled formats)
    hx_base = hist_x_ptr + s * (L * H * P) + h * P
    b_hist = tl.load(
        hist_B_ptr + s * (L * G * N) + (rj[:, None] * G + g) * N + offs_n[None, :],
        mask=fold_j[:, None] & mask_n[None, :],
        other=0.0,
    )
    Dh = tl.load(D_ptr + h).to(tl.float32)

    pdl_wait(PDL)

    # Per-(row, head) operands, once for every P-chunk.
    offs_t = tl.arange(0, T_PAD)
    t_ok = (offs_t < T) & ((offs_t * 0 + slot) >= 0)
    row0 = b * T  # int64; token offsets below are int32
    c_new = tl.load(
        c_ptr + row0 * stride_c_row + offs_t[:, None] * stride_c_row + g * N + offs_n[None, :],
        mask=t_ok[:, None] & mask_n[None, :],
        other=0.0,
    )
    ct = tl.trans(c_new)
    bh = b * H + h
    cb_t = cb_ptr + (bh * T + offs_t[:, None]) * L_PAD
    cb_hist = tl.load(cb_t + offs_j[None, :], mask=t_ok[:, None] & rect_j[None, :], other=0.0)
    cb_new = tl.load(cb_t + W + offs_t[None, :], mask=t_ok[:, None] & t_ok[None, :], other=0.0)
    cdec = tl.load(cdec_ptr + bh * T_PAD + offs_t, mask=t_ok, other=0.0)
    w = tl.load(w_ptr + bh * L_PAD + offs_j, mask=fold_j, other=0.0)
    fdec = tl.load(fdec_ptr + bh + offs_n * 0, mask=(offs_n * 0 + mw.to(tl.int32)) != 0, other=0.0)
    wrow = _ring(start + pnat + offs_t, L)  # append rows (disjoint from every row read)

    for pc in range(N_CHUNKS):
        offs_p = pc * BLOCK_P + tl.arange(0, BLOCK_P)
        mask_p = offs_p < P
        srow = h * P + offs_p
        read_p = mask_p & ((offs_p * 0 + slot) >= 0)  # (vector forms of scalar masks: the interpreter)
        state = load_state_rows(ckpt_base, scale_base, srow, read_p, offs_n, mask_n, N, FMT)
        x_hist = tl.load(
            hx_base + rj[:, None] * (H * P) + offs_p[None, :], mask=j_ok[:, None] & mask_p[None, :], other=0.0
        )
        if mw:
            # S' = exp(cum_h) S_ckpt + (X_h^T diag(w)) B_h: stored, and the outputs' reference point.
            xw = x_hist.to(tl.float32) * w[:, None]
            state = _dot_bf16x3(tl.trans(xw), b_hist, state * fdec[None, :])
            sr_fields = request_sr_bits(seed, srow, s, step, BLOCK_N, FMT, SR)  # request = the slot
            store_state_rows(ckpt_base, scale_base, srow, read_p, offs_n, mask_n, state, N, FMT, SR, sr_fields)
            yt = _dot_bf16x2(state, ct, tl.zeros((BLOCK_P, T_PAD), dtype=tl.float32)) * cdec[None, :]
        else:
            if FMT == FMT_BF16:  # a bf16 checkpoint is bf16-exact: one product
                yt = dot(state.to(tl.bfloat16), ct, tl.zeros((BLOCK_P, T_PAD), dtype=tl.float32))
            else:
                yt = _dot_bf16x2(state, ct, tl.zeros((BLOCK_P, T_PAD), dtype=tl.float32))
            yt = _dot_bf16x2_rhs(tl.trans(x_hist), tl.trans(cb_hist), yt * cdec[None, :])
        x_new = tl.load(
            x_ptr + row0 * stride_x_row + offs_t[:, None] * stride_x_row + h * P + offs_p[None, :],
            mask=t_ok[:, None] & mask_p[None, :],
            other=0.0,
        )
        yt = _dot_bf16x2_rhs(tl.trans(x_new), tl.trans(cb_new), yt)
        yt = yt + Dh * tl.trans(x_new.to(tl.float32))
        if HAS_Z:
            zt = tl.load(
                z_ptr + row0 * stride_z_row + offs_t[None, :] * stride_z_row + h * P + offs_p[:, None],
                mask=mask_p[:, None] & t_ok[None, :],
                other=0.0,
            ).to(tl.float32)
            yt = yt * (zt * tl.sigmoid(zt))
        yt = tl.where(t_ok[None, :], yt, 0.0)  # padding rows: exact zeros
        tl.store(
            y_ptr + row0 * stride_y_row + offs_t[None, :] * stride_y_row + h * P + offs_p[:, None],
            yt.to(y_ptr.dtype.element_ty),
            mask=mask_p[:, None] & (offs_t[None, :] < T),
        )
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
    fmt_code: int,
    sr: bool,
    seed: int,
    step: int,
    pads: tuple[int, int, int],
    knobs: CheckpointKnobs,
    pdl: bool,
) -> None:
    """Enqueue the bandwidth-first main on grid ``(H, batch)`` (inputs checked by `replay_step`)."""
    t_pad, w_pad, l_pad = pads
    block_p = max(16, min(knobs.block_p, triton.next_power_of_2(P)))
    batch = slot_idx.shape[0]
    replay_bw_main_kernel[(H, batch)](
        rs.ckpt.data, rs.ckpt.scale if rs.ckpt.scale is not None else D, slot_idx, rs.pnat, rs.ring_start,
        rs.hist_x, rs.hist_B, x, Cm, z if z is not None else y, y, D,
        scratch.cb, scratch.cdec, scratch.w, scratch.fdec, seed, step,
        x.stride(0), Cm.stride(0), z.stride(0) if z is not None else 0, y.stride(0),
        T=T, W=rs.window, H=H, P=P, N=N, G=G, HEADS_PER_GROUP=H // G, T_PAD=t_pad, W_PAD=w_pad, L_PAD=l_pad,
        BLOCK_P=block_p, BLOCK_N=max(16, triton.next_power_of_2(N)), N_CHUNKS=triton.cdiv(P, block_p),
        FMT=fmt_code, SR=sr, HAS_Z=z is not None, PDL=pdl,
        **launch_options(pdl, knobs.num_warps, 1),
        **({"maxnreg": knobs.max_regs} if knobs.max_regs and not interpreting() else {}),
    )
