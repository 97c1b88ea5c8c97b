"""Mamba-2 "intermediate" state update (docs/spec.md §5): one launch after conv1d runs all T tokens of
every row and stores each per-token state S_t into ``pool[dst_idx[b, t]]`` in the storage format.

Design
------
- Grid ``(cdiv(P, BLOCK_P), H, batch)``: one program owns a ``BLOCK_P x N`` state tile of one
  (row, head) in registers for all T tokens (BLOCK_N = next power of two >= max(N, 4);
  non-power-of-two P = 80 or N are masked). Small tiles on one warp are fastest (see
  `default_knobs`). The P-tile index varies fastest so programs that share a row's B/C run
  together.
- State read from ``pool[src_idx[b]]`` (dequantized), each S_t stored with
  `ssmbench_kernels.storage.kernel.store_state_rows` (RN or SR). SR draws the tile's random bits
  once, before the token loop (Philox counter ``(row, n // 8, src slot, step)`` with row
  ``h*P + p``, one call per 8 columns, as the reference's `sr_fields`), and all T stores (tree
  nodes too) share them (docs/spec.md §8).
- Inputs come straight from the conv1d output ``(batch*T, conv_dim)``: x, B, C are column slices
  (head h uses group ``h // (H // G)``); dt_raw ``(batch*T, H)`` and z ``(batch*T, H*P)`` bypass
  the conv; A, D, dt_bias fp32 ``(H,)``. softplus with the threshold-20 branch chosen before exp.
- Tree drafts (``HAS_PARENT``): the reference continues token t from the *unrounded* S_p. A tile
  cannot index a register array by a runtime parent, and re-reading S_p from its dst slot would
  continue from the *rounded* state, so token t's state is rebuilt from the tile's initial state
  by walking its ancestor path (t, p(t), p(p(t)), ..., 0):
  ``S_t = (prod a) S_in + sum_j (prod of a after j) dt_j x_j B_j^T`` -- exactly the reference's
  math in another association order (fp32 differences only), O(T * depth) rank-1 updates on
  the prefetched x/B/dt (no extra memory traffic). ``parent[b, t] = -1`` (t >= 1)
  means t - 1, as docs/spec.md §5 says; a parent >= t is treated as t - 1 too (never loops forever).
- Padding rows (``src_idx[b] < 0``) write zeros to y for all T tokens and touch no state.
  A real row's ``dst_idx[b, t] < 0`` skips that token's store.
- PDL: indices (src, all dst, parents), the state tile and A/D/dt_bias are loaded before
  `gdc_wait()`; conv outputs and dt/z (older in_proj outputs, covered transitively) after it.
  No software-pipelined loops.
- All T tokens' x, B, C, dt, z are loaded as ``(T_PAD, tile)`` blocks right after `gdc_wait`
  (one memory latency instead of T: the state stores between tokens would keep the compiler
  from hoisting per-token loads); token t is picked out with a one-hot select.
- 64-bit offsets: slots are cast to int64 before any multiply; token rows are int64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import triton
import triton.language as tl

from ssmbench_kernels.common.activation import softplus_thresholded
from ssmbench_kernels.common.launch import is_capturing, launch_options, pdl_enabled, pdl_wait
from ssmbench_kernels.common.validation import (
    check_dst_not_other_src,
    check_parents,
    check_real_dst,
    check_slot_range,
    check_unique_slots,
)
from ssmbench_kernels.storage.kernel import (
    SCALED,
    format_code,
    format_of,
    load_state_rows,
    request_sr_bits,
    rounding_is_sr,
    store_state_rows,
)


class Mamba2ShapeLike(Protocol):
    nheads: int
    head_dim: int
    dstate: int
    ngroups: int


@dataclass(frozen=True)
class IntermediateKnobs:
    """Tuning knobs of `mamba2_intermediate_kernel` (parameters, not constants)."""

    block_p: int = 4
    """Head channels per program (power of two); the state tile is block_p x next_pow2(N)."""
    num_warps: int = 1
    num_stages: int = 1


def default_knobs(
    shape: Mamba2ShapeLike, batch: int, T: int, fmt: str, rounding: str = "rn"
) -> IntermediateKnobs:
    """Heuristic from a knob sweep on the H100 (headline shape N=128, T=6, batch 1..256, every
    format; docs in the kernel report): one warp per program holding ~16 state elements per
    thread (a 4 x 128 tile) was best or within 3% of best everywhere -- more warps pay for
    moving the prefetched per-token inputs between thread layouts. SR at tiny batch
    (``batch * nheads <= 32``) keeps 2 warps to spread Philox over more threads."""
    del T, fmt
    block_n = triton.next_power_of_2(shape.dstate)
    block_p = max(1, min(512 // block_n, triton.next_power_of_2(shape.head_dim)))
    num_warps = 2 if (rounding == "sr" and batch * shape.nheads <= 32) else 1
    return IntermediateKnobs(block_p=block_p, num_warps=num_warps)


@triton.jit(do_not_specialize=["seed", "step"])
def mamba2_intermediate_kernel(
    pool_ptr,
    scale_ptr,
    src_ptr,
    dst_ptr,
    parent_ptr,
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
    stride_dst_b,
    stride_dst_t,
    stride_par_b,
    stride_par_t,
    T: tl.constexpr,
    T_PAD: tl.constexpr,
    H: tl.constexpr,
    P: tl.constexpr,
    N: tl.constexpr,
    HEADS_PER_GROUP: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
    FMT: tl.constexpr,
    SR: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_PARENT: tl.constexpr,
    PDL: tl.constexpr,
):
    pid_p = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    g = h // HEADS_PER_GROUP

    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    mask_p = offs_p < P
    mask_n = offs_n < N
    head_rows = h * P + offs_p  # row index inside one slot's state (SR counter word 0)

    # ---- everything that does not depend on the producer (conv1d) ----
    src = tl.load(src_ptr + b).to(tl.int64)
    real = src >= 0
    # Masks from tensor comparisons (a scalar-bool & tensor-bool is int32 in the interpreter).
    read_p = mask_p & ((offs_p * 0 + src) >= 0)
    state = load_state_rows(pool_ptr, scale_ptr, src * (H * P) + head_rows, read_p, offs_n, mask_n, N, FMT)
    sr_fields = request_sr_bits(seed, head_rows, src, step, 0, BLOCK_N, FMT, SR)  # shared by the T stores
    A = tl.load(A_ptr + h).to(tl.float32)
    Dh = tl.load(D_ptr + h).to(tl.float32)
    dt_bias = tl.load(dt_bias_ptr + h).to(tl.float32)

    # Indices of all T tokens (dst slots, parents) do not depend on the producer either.
    offs_t = tl.arange(0, T_PAD)
    mask_t = offs_t < T
    dst_all = tl.load(dst_ptr + b * stride_dst_b + offs_t * stride_dst_t, mask=mask_t, other=-1).to(tl.int64)
    if HAS_PARENT:
        par_all = tl.load(parent_ptr + b * stride_par_b + offs_t * stride_par_t, mask=mask_t, other=-1)
        par_all = par_all.to(tl.int32)

    pdl_wait(PDL)

    # All T tokens' inputs in one go, so their memory latencies overlap instead of adding up
    # token after token (the per-token state stores in between would otherwise keep later loads
    # from being hoisted). Token t is extracted with a one-hot select (T_PAD x tile, cheap).
    rows_t = b * T + offs_t
    read_t = mask_t & ((offs_t * 0 + src) >= 0)
    tok_p = read_t[:, None] & mask_p[None, :]
    tok_n = read_t[:, None] & mask_n[None, :]
    x_all = tl.load(x_ptr + rows_t[:, None] * stride_x_row + h * P + offs_p[None, :], mask=tok_p, other=0.0)
    x_all = x_all.to(tl.float32)
    b_all = tl.load(b_ptr + rows_t[:, None] * stride_b_row + g * N + offs_n[None, :], mask=tok_n, other=0.0)
    b_all = b_all.to(tl.float32)
    c_all = tl.load(c_ptr + rows_t[:, None] * stride_c_row + g * N + offs_n[None, :], mask=tok_n, other=0.0)
    c_all = c_all.to(tl.float32)
    dt_all = tl.load(dt_ptr + rows_t * stride_dt_row + h, mask=read_t, other=0.0).to(tl.float32)
    dt_all = softplus_thresholded(dt_all + dt_bias)
    a_all = tl.exp(A * dt_all)
    if HAS_Z:
        z_all = tl.load(
            z_ptr + rows_t[:, None] * stride_z_row + h * P + offs_p[None, :], mask=tok_p, other=0.0
        )
        z_all = z_all.to(tl.float32)
        z_all = z_all * tl.sigmoid(z_all)

    y_col = y_ptr + h * P + offs_p
    if real:
        for t in tl.static_range(T):
            sel = offs_t == t
            x_t = tl.sum(tl.where(sel[:, None], x_all, 0.0), axis=0)
            if HAS_PARENT:
                # S_t from S_in along the ancestor path (see module docstring).
                acc = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
                decay = tl.full((), 1.0, tl.float32)
                cur = tl.full((), t, tl.int32)
                while cur >= 0:
                    sel_c = offs_t == cur
                    dt_c = tl.sum(tl.where(sel_c, dt_all, 0.0), axis=0)
                    x_c = tl.sum(tl.where(sel_c[:, None], x_all, 0.0), axis=0)
                    b_c = tl.sum(tl.where(sel_c[:, None], b_all, 0.0), axis=0)
                    acc += (decay * dt_c * x_c)[:, None] * b_c[None, :]
                    decay = decay * tl.sum(tl.where(sel_c, a_all, 0.0), axis=0)
                    par = tl.sum(tl.where(sel_c, par_all, 0), axis=0)
                    par = tl.where((par >= 0) & (par < cur), par, cur - 1)
                    cur = tl.where(cur > 0, par, -1)
                s_t = acc + decay * state
            else:
                dt_t = tl.sum(tl.where(sel, dt_all, 0.0), axis=0)
                a_t = tl.sum(tl.where(sel, a_all, 0.0), axis=0)
                b_t = tl.sum(tl.where(sel[:, None], b_all, 0.0), axis=0)
                state = state * a_t + (dt_t * x_t)[:, None] * b_t[None, :]
                s_t = state
            c_t = tl.sum(tl.where(sel[:, None], c_all, 0.0), axis=0)
            y = tl.sum(s_t * c_t[None, :], axis=1) + Dh * x_t
            if HAS_Z:
                y = y * tl.sum(tl.where(sel[:, None], z_all, 0.0), axis=0)
            tl.store(y_col + (b * T + t) * stride_y_row, y.to(y_ptr.dtype.element_ty), mask=mask_p)

            dst = tl.sum(tl.where(sel, dst_all, 0), axis=0)
            store_state_rows(
                pool_ptr,
                scale_ptr,
                dst * (H * P) + head_rows,
                mask_p & ((offs_p * 0 + dst) >= 0),
                offs_n,
                mask_n,
                s_t,
                N,
                FMT,
                SR,
                sr_fields,
            )
    else:
        zero = tl.zeros((BLOCK_P,), dtype=y_ptr.dtype.element_ty)
        for t in tl.static_range(T):
            tl.store(y_col + (b * T + t) * stride_y_row, zero, mask=mask_p)


KERNEL_NAMES: tuple[str, ...] = (mamba2_intermediate_kernel.fn.__name__,)
"""Kernel names `mamba2_intermediate` launches, for CUPTI attribution."""


def validate_intermediate_inputs(
    src_idx: torch.Tensor, dst_idx: torch.Tensor, parent: torch.Tensor | None, n_slots: int, T: int
) -> None:
    """Host-side checks that read index values (one device sync; docs/spec.md §3, §5), the same rules
    as the reference: real src slots distinct; real rows' dst slots non-negative, distinct
    (across rows and tokens) and never another row's src; all in range; parents in [-1, t).
    Raises ValueError."""
    batch = src_idx.shape[0]
    check_unique_slots(src_idx, "src_idx")
    check_slot_range(src_idx, n_slots, "src_idx")
    check_real_dst(src_idx, dst_idx)
    real_dst = dst_idx[src_idx >= 0]
    check_unique_slots(real_dst, "dst_idx")
    check_slot_range(real_dst, n_slots, "dst_idx")
    check_dst_not_other_src(src_idx, dst_idx)
    if parent is not None:
        check_parents(parent, batch, T)


def mamba2_intermediate(
    pool_data: torch.Tensor,
    pool_scale: torch.Tensor | None,
    src_idx: torch.Tensor,
    dst_idx: torch.Tensor,
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
    z: torch.Tensor | None = None,
    parent: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    fmt: str | None = None,
    rounding: str = "rn",
    seed: int = 0,
    step: int = 0,
    pdl: bool = False,
    knobs: IntermediateKnobs | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """Run T tokens of the Mamba-2 recurrence per row, storing every per-token state; returns y.

    pool_data: contiguous ``(n_slots, H, P, N)`` in the storage dtype of ``fmt`` (inferred from
    the dtype when None); pool_scale: contiguous fp32 ``(n_slots, H, P)`` for int8/fp8, else None.
    src_idx ``(batch,)``: slot read per row (< 0: padding row); dst_idx ``(batch, T)``: slot of
    each token's state. conv_out: ``(batch*T, conv_dim)`` with unit column stride, conv_dim =
    H*P + 2*G*N (x | B | C). dt_raw ``(batch*T, H)``; z ``(batch*T, H*P)`` or None (unit
    column strides, any row stride); A, D, dt_bias fp32 ``(H,)``. parent ``(batch, T)`` int or
    None (linear chain). y: optional preallocated ``(batch*T, H*P)`` contiguous output
    (activation dtype); no allocation happens when it is given.

    rounding "rn" | "sr"; seed/step key the SR Philox stream (step is baked into a captured
    graph). ``validate`` syncs to check indices (skipped during graph capture; pass False in timed
    loops).
    """
    H, P, N, G = nheads, head_dim, dstate, ngroups
    if H % G:
        raise ValueError(f"ngroups={G} must divide nheads={H}")
    fmt = fmt or format_of(pool_data)
    fmt_code = format_code(fmt)
    if format_of(pool_data) != fmt:
        raise ValueError(f"pool dtype {pool_data.dtype} does not hold format {fmt!r}")
    sr = rounding_is_sr(rounding)
    if pool_data.dim() != 4 or tuple(pool_data.shape[1:]) != (H, P, N) or not pool_data.is_contiguous():
        raise ValueError(
            f"pool_data must be a contiguous (n_slots, {H}, {P}, {N}) tensor, got {tuple(pool_data.shape)}"
        )
    if fmt in SCALED:
        if pool_scale is None or pool_scale.shape != pool_data.shape[:3] or not pool_scale.is_contiguous():
            raise ValueError(f"{fmt} pools need a contiguous fp32 scale (n_slots, {H}, {P})")
        if pool_scale.dtype != torch.float32:
            raise ValueError("pool_scale must be fp32")
    batch = src_idx.shape[0]
    conv_dim = H * P + 2 * G * N
    rows = batch * T
    if conv_out.shape != (rows, conv_dim) or conv_out.stride(1) != 1:
        raise ValueError(
            f"conv_out must be ({rows}, {conv_dim}) with unit column stride, got {tuple(conv_out.shape)}"
        )
    if dst_idx.shape != (batch, T):
        raise ValueError(f"dst_idx must be ({batch}, {T}), got {tuple(dst_idx.shape)}")
    if dt_raw.shape != (rows, H) or dt_raw.stride(1) != 1:
        raise ValueError(f"dt_raw must be ({rows}, {H}) with unit column stride, got {tuple(dt_raw.shape)}")
    if z is not None and (z.shape != (rows, H * P) or z.stride(1) != 1):
        raise ValueError(f"z must be ({rows}, {H * P}) with unit column stride, got {tuple(z.shape)}")
    for name, p in (("A", A), ("D", D), ("dt_bias", dt_bias)):
        if p.shape != (H,) or p.dtype != torch.float32 or not p.is_contiguous():
            raise ValueError(f"{name} must be a contiguous fp32 ({H},) tensor")
    if y is None:
        y = torch.empty(rows, H * P, dtype=conv_out.dtype, device=conv_out.device)
    elif y.shape != (rows, H * P) or not y.is_contiguous():
        raise ValueError(f"y must be a contiguous ({rows}, {H * P}) tensor")
    if validate and not is_capturing():
        validate_intermediate_inputs(src_idx, dst_idx, parent, pool_data.shape[0], T)
    if batch == 0:
        return y

    x = conv_out[:, : H * P]
    Bm = conv_out[:, H * P : H * P + G * N]
    Cm = conv_out[:, H * P + G * N :]
    knobs = knobs or default_knobs(_Shape(H, P, N, G), batch, T, fmt, rounding)
    block_p = min(knobs.block_p, triton.next_power_of_2(P))
    use_pdl = pdl_enabled(pdl, conv_out.device)
    par = parent if parent is not None else dst_idx
    grid = (triton.cdiv(P, block_p), H, batch)
    mamba2_intermediate_kernel[grid](
        pool_data,
        pool_scale if pool_scale is not None else A,
        src_idx,
        dst_idx,
        par,
        x,
        Bm,
        Cm,
        dt_raw,
        z if z is not None else dt_raw,
        y,
        A,
        D,
        dt_bias,
        seed,
        step,
        x.stride(0),
        Bm.stride(0),
        Cm.stride(0),
        dt_raw.stride(0),
        z.stride(0) if z is not None else 0,
        y.stride(0),
        dst_idx.stride(0),
        dst_idx.stride(1),
        par.stride(0),
        par.stride(1),
        T=T,
        T_PAD=triton.next_power_of_2(T),
        H=H,
        P=P,
        N=N,
        HEADS_PER_GROUP=H // G,
        BLOCK_P=block_p,
        BLOCK_N=max(4, triton.next_power_of_2(N)),  # SR draws Philox per 4 columns
        FMT=fmt_code,
        SR=sr,
        HAS_Z=z is not None,
        HAS_PARENT=parent is not None,
        PDL=use_pdl,
        **launch_options(use_pdl, knobs.num_warps, knobs.num_stages),
    )
    return y


@dataclass(frozen=True)
class _Shape:
    nheads: int
    head_dim: int
    dstate: int
    ngroups: int
