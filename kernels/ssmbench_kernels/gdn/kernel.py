"""Gated DeltaNet decode (docs/spec.md §9): one launch after conv1d runs all T tokens of every row, in
pool mode, with optional per-token states and an optional final pool write.

Design
------
- Memory-bound: per request the state is HV x V x K (1 Mi elements for Qwen3.5) against a few
  KB of q/k/v/a/b, so the kernel is built around moving the state once: read once from
  ``pool[read_idx[b]]``, kept in registers (fp32) for all T tokens, written once to
  ``pool[write_idx[b]]`` (and once per token to the intermediate buffer when asked).
- Grid ``(cdiv(V, BLOCK_V), HV, batch)``: one program owns a ``BLOCK_V x K`` slice of one value
  head's state ("K-last": a state row is one v, its K values contiguous), so every load/store is
  a run of whole rows, coalesced along K (BLOCK_K = next power of two >= max(K, 4), masked).
  The V-tile index varies fastest so the programs that share a row's q/k run together.
- Per token (all in fp32): ``g = -exp(A_log) * softplus(a + dt_bias)``, ``beta = sigmoid(b)``,
  q and k L2-normalised in-kernel (eps 1e-6 inside the sqrt, q times ``scale``), value head hv
  reads q/k head ``hv // (HV // H)`` (GVA). ``S = exp(g) S; v' = beta (v - S k); S += v' k^T;
  o = S q``. The two matrix-vector products are row reductions over K inside the tile.
- Storage (docs/spec.md §8) through `ssmbench_kernels.storage.kernel`: loads dequantize fp32 / bf16, stores round
  RN or SR with the reference's Philox keying: the request is the read index ``read_idx[b]``,
  drawn once per tile before the token loop and shared by the row's T intermediate entries and
  its final write (docs/spec.md §8); row inside the slot ``hv * V + v``.
  The T tokens run on the unrounded fp32 state (rounding only when stored, as the reference).
- Pool semantics: a negative read index is padding: no state read or write, zero output.
  Split pools: ``write_idx`` differs from ``read_idx``. With ``write_final`` off nothing goes
  back to the pool (the intermediate buffer carries the states).
- PDL: indices, the state tile and A_log/dt_bias are loaded before `gdc_wait()`; the conv
  output (q, k, v) and the in_proj outputs a, b after it. No software-pipelined loops.
- All T tokens' q, k, v, a, b are loaded as ``(T_PAD, tile)`` blocks right after `gdc_wait` (one
  memory latency instead of T; the per-token stores in between would keep per-token loads from
  being hoisted); token t is picked out with a one-hot select. On one warp (the T > 1 default,
  8-row tiles: FLA's tile) the select and the layout exchanges stay inside the warp, no barrier;
  `GDNKnobs.stream_tokens` is the alternative that loads each token on its own.
- 64-bit offsets: slots, batch rows and token rows are int64 before any multiply (a slot of
  HV*V*K = 2**20 elements passes 2**31 at slot 2048).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ssmbench_kernels.common.activation import softplus_thresholded
from ssmbench_kernels.common.launch import is_capturing, launch_options, pdl_enabled, pdl_wait
from ssmbench_kernels.common.validation import (
    check_dst_not_other_src,
    check_real_dst,
    check_slot_range,
    check_unique_slots,
)
from ssmbench_kernels.storage.kernel import (
    format_code,
    format_of,
    load_state_rows,
    request_sr_bits,
    rounding_is_sr,
    store_state_rows,
)

GDN_FORMATS = ("fp32", "bf16")
"""State storage formats of the GDN kernel (docs/spec.md §9)."""
L2_EPS = 1e-6
"""Added to sum(x^2) inside the sqrt of the q/k normalisation (docs/spec.md §9)."""


@dataclass(frozen=True)
class GDNKnobs:
    """Tuning knobs of `gdn_decode_kernel` (parameters, not constants)."""

    block_v: int = 32
    """State rows (value channels) per program (power of two); the tile is block_v x next_pow2(K)."""
    num_warps: int = 8
    num_stages: int = 1
    stream_tokens: bool = False
    """T > 1: load each token's q, k, v, a, b on its own, in the layouts the state math uses, one
    token ahead, instead of all T as (T, tile) blocks picked out by one-hot selects (whose
    cross-warp exchanges cost ~24 barriers a token at 2 warps: docs/gdn.md). Neither the default
    nor the H200 table picks it (the block form beat it on one warp in 8 of 9 tuned groups, the
    ninth a tie); it stays in the tuner's space as the one T > 1 alternative."""


def default_gdn_knobs(HV: int, V: int, K: int, batch: int, T: int, fmt: str, rounding: str = "rn") -> GDNKnobs:
    """T > 1, and T = 1 from batch 64: one warp on 8-row tiles (FLA's fused_recurrent tile) for an
    fp32 state, 16-row tiles for bf16 (fewer instructions per element where a halved state leaves
    the kernel issue-bound: 24 against 34 static SASS instructions per element for the old 32 x 8).
    One warp is what fixes T > 1: the block form's per-token selects and layout exchanges stay
    inside the warp (no barrier), and 72-128 registers let 16-28 programs share an SM, where the
    old 2-warp default waited on ~24 barriers a token. T = 1 below batch 64: 32-row tiles on 8
    warps (the H100 knob sweep of docs/gdn.md; kept by the H200 tune at b8). Measured on the H200
    side by side (docs/gdn.md, session 8): T = 1 b64-b512 fp32 8 x 1 -1 to -3% against 32 x 8,
    bf16 16 x 1 -6 to -19% against the tuned table's picks; a knob table overrides all of it."""
    del HV, K, rounding
    if T == 1 and batch < 64:
        return GDNKnobs(block_v=max(1, min(32, triton.next_power_of_2(V))), num_warps=8)
    rows = 16 if T == 1 and fmt == "bf16" else 8
    return GDNKnobs(block_v=max(1, min(rows, triton.next_power_of_2(V))), num_warps=1)


@triton.jit
def _delta_rule_token(state, q_t, k_t, v_t, decay_t, beta_t):
    """One token of the gated delta rule on a (BLOCK_V, K) state tile, in fp32:
    ``S = decay S; v' = beta (v - S k); S += v' k^T; o = S q``. Returns (S, o)."""
    state = state * decay_t
    sk = tl.sum(state * k_t[None, :], axis=1)
    v_new = beta_t * (v_t - sk)
    state = state + v_new[:, None] * k_t[None, :]
    return state, tl.sum(state * q_t[None, :], axis=1)


@triton.jit
def _token_inputs(q_ptr, k_ptr, v_ptr, a_ptr, b_ptr, row, h, hv, offs_k, mask_k, offs_v, mask_v, neg_a, dt_bias,
                  scale, stride_qkv_row, stride_a_row, stride_b_row, K: tl.constexpr, V: tl.constexpr):
    """One token's normalised q, k (K,), v (BLOCK_V,), decay and beta: the same arithmetic as the
    block path's, for the streamed-token form."""
    qk = row * stride_qkv_row + h * K + offs_k
    q = tl.load(q_ptr + qk, mask=mask_k, other=0.0).to(tl.float32)
    k = tl.load(k_ptr + qk, mask=mask_k, other=0.0).to(tl.float32)
    v = tl.load(v_ptr + row * stride_qkv_row + hv * V + offs_v, mask=mask_v, other=0.0).to(tl.float32)
    a = tl.load(a_ptr + row * stride_a_row + hv).to(tl.float32)
    bb = tl.load(b_ptr + row * stride_b_row + hv).to(tl.float32)
    decay = tl.exp(neg_a * softplus_thresholded(a + dt_bias))
    beta = tl.sigmoid(bb)
    q = q * (scale / tl.sqrt(tl.sum(q * q, axis=0) + 1e-6))
    k = k * (1.0 / tl.sqrt(tl.sum(k * k, axis=0) + 1e-6))
    return q, k, v, decay, beta


@triton.jit
def _streamed_tokens(state, pool_ptr, inter_ptr, q_ptr, k_ptr, v_ptr, a_ptr, b_ptr, o_col, b, h, hv, src,
                     offs_v, mask_v, offs_k, mask_k, head_rows, sr_fields, neg_a, dt_bias, scale,
                     stride_qkv_row, stride_a_row, stride_b_row, stride_o_row, dst,
                     T: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr, FMT: tl.constexpr,
                     SR: tl.constexpr, INTERMEDIATE: tl.constexpr, WRITE_FINAL: tl.constexpr):
    """The T tokens of a real row with each token's inputs loaded on its own, token t + 1's issued
    before token t's math and stores (one memory latency per step, not per token), and no
    one-hot select: the per-token vectors are loaded in the layouts the state math uses."""
    q_n, k_n, v_n, decay_n, beta_n = _token_inputs(
        q_ptr, k_ptr, v_ptr, a_ptr, b_ptr, b * T, h, hv, offs_k, mask_k, offs_v, mask_v, neg_a, dt_bias, scale,
        stride_qkv_row, stride_a_row, stride_b_row, K, V)
    for t in tl.static_range(T):
        q_t, k_t, v_t, decay_t, beta_t = q_n, k_n, v_n, decay_n, beta_n
        if t + 1 < T:
            q_n, k_n, v_n, decay_n, beta_n = _token_inputs(
                q_ptr, k_ptr, v_ptr, a_ptr, b_ptr, b * T + t + 1, h, hv, offs_k, mask_k, offs_v, mask_v, neg_a,
                dt_bias, scale, stride_qkv_row, stride_a_row, stride_b_row, K, V)
        state, o = _delta_rule_token(state, q_t, k_t, v_t, decay_t, beta_t)
        tl.store(o_col + (b * T + t) * stride_o_row, o.to(o_col.dtype.element_ty), mask=mask_v)
        if INTERMEDIATE:
            entry = b * T + t  # flat (batch, T) index of the intermediate buffer
            store_state_rows(inter_ptr, inter_ptr, entry * (HV * V) + head_rows, mask_v, offs_k, mask_k, state, K,
                             FMT, SR, sr_fields)
    if WRITE_FINAL:
        store_state_rows(pool_ptr, pool_ptr, dst * (HV * V) + head_rows, mask_v & ((offs_v * 0 + dst) >= 0), offs_k,
                         mask_k, state, K, FMT, SR, sr_fields)


@triton.jit(do_not_specialize=["seed", "step", "scale"])
def gdn_decode_kernel(
    pool_ptr,
    read_ptr,
    write_ptr,
    inter_ptr,
    q_ptr,
    k_ptr,
    v_ptr,
    a_ptr,
    b_ptr,
    o_ptr,
    A_log_ptr,
    dt_bias_ptr,
    scale,
    seed,
    step,
    stride_qkv_row,
    stride_a_row,
    stride_b_row,
    stride_o_row,
    T: tl.constexpr,
    T_PAD: tl.constexpr,
    HV: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    GROUP: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_K: tl.constexpr,
    FMT: tl.constexpr,
    SR: tl.constexpr,
    INTERMEDIATE: tl.constexpr,
    WRITE_FINAL: tl.constexpr,
    PDL: tl.constexpr,
    STREAM: tl.constexpr = False,
):
    pid_v = tl.program_id(0)
    hv = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    h = hv // GROUP

    offs_v = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    offs_k = tl.arange(0, BLOCK_K)
    mask_v = offs_v < V
    mask_k = offs_k < K
    head_rows = hv * V + offs_v  # row inside one slot's state (SR counter word 0)

    # ---- everything that does not depend on the producer (conv1d) ----
    src = tl.load(read_ptr + b).to(tl.int64)
    real = src >= 0
    # Masks from tensor comparisons (a scalar-bool & tensor-bool is int32 in the interpreter).
    read_v = mask_v & ((offs_v * 0 + src) >= 0)
    state = load_state_rows(pool_ptr, pool_ptr, src * (HV * V) + head_rows, read_v, offs_k, mask_k, K, FMT)
    sr_fields = request_sr_bits(seed, head_rows, src, step, 0, BLOCK_K, FMT, SR)  # shared by every store
    dst = src
    if WRITE_FINAL:
        dst = tl.load(write_ptr + b).to(tl.int64)
    neg_a = -tl.exp(tl.load(A_log_ptr + hv).to(tl.float32))
    dt_bias = tl.load(dt_bias_ptr + hv).to(tl.float32)

    pdl_wait(PDL)
    o_col = o_ptr + hv * V + offs_v
    if STREAM:
        if real:
            _streamed_tokens(
                state, pool_ptr, inter_ptr, q_ptr, k_ptr, v_ptr, a_ptr, b_ptr, o_col, b, h, hv, src,
                offs_v, mask_v, offs_k, mask_k, head_rows, sr_fields, neg_a, dt_bias, scale,
                stride_qkv_row, stride_a_row, stride_b_row, stride_o_row, dst,
                T, HV, K, V, FMT, SR, INTERMEDIATE, WRITE_FINAL,
            )
        else:
            zero = tl.zeros((BLOCK_V,), dtype=o_ptr.dtype.element_ty)
            for t in tl.static_range(T):
                tl.store(o_col + (b * T + t) * stride_o_row, zero, mask=mask_v)
        return

    # All T tokens' inputs at once (see module docstring); padding rows load nothing.
    offs_t = tl.arange(0, T_PAD)
    rows_t = b * T + offs_t  # int64 token rows
    read_t = (offs_t < T) & ((offs_t * 0 + src) >= 0)
    tok_k = read_t[:, None] & mask_k[None, :]
    qk_off = rows_t[:, None] * stride_qkv_row + h * K + offs_k[None, :]
    q_all = tl.load(q_ptr + qk_off, mask=tok_k, other=0.0).to(tl.float32)
    k_all = tl.load(k_ptr + qk_off, mask=tok_k, other=0.0).to(tl.float32)
    v_all = tl.load(
        v_ptr + rows_t[:, None] * stride_qkv_row + hv * V + offs_v[None, :],
        mask=read_t[:, None] & mask_v[None, :],
        other=0.0,
    ).to(tl.float32)
    a_all = tl.load(a_ptr + rows_t * stride_a_row + hv, mask=read_t, other=0.0).to(tl.float32)
    b_all = tl.load(b_ptr + rows_t * stride_b_row + hv, mask=read_t, other=0.0).to(tl.float32)
    # Per-token scalars and normalised q/k, vectorised over tokens.
    decay_all = tl.exp(neg_a * softplus_thresholded(a_all + dt_bias))
    beta_all = tl.sigmoid(b_all)
    q_all = q_all * (scale / tl.sqrt(tl.sum(q_all * q_all, axis=1) + 1e-6))[:, None]
    k_all = k_all * (1.0 / tl.sqrt(tl.sum(k_all * k_all, axis=1) + 1e-6))[:, None]

    if real:
        for t in tl.static_range(T):
            if T == 1:
                q_t = tl.sum(q_all, axis=0)
                k_t = tl.sum(k_all, axis=0)
                v_t = tl.sum(v_all, axis=0)
                decay_t = tl.sum(decay_all, axis=0)
                beta_t = tl.sum(beta_all, axis=0)
            else:
                sel = offs_t == t
                q_t = tl.sum(tl.where(sel[:, None], q_all, 0.0), axis=0)
                k_t = tl.sum(tl.where(sel[:, None], k_all, 0.0), axis=0)
                v_t = tl.sum(tl.where(sel[:, None], v_all, 0.0), axis=0)
                decay_t = tl.sum(tl.where(sel, decay_all, 0.0), axis=0)
                beta_t = tl.sum(tl.where(sel, beta_all, 0.0), axis=0)
            state, o = _delta_rule_token(state, q_t, k_t, v_t, decay_t, beta_t)
            tl.store(o_col + (b * T + t) * stride_o_row, o.to(o_ptr.dtype.element_ty), mask=mask_v)
            if INTERMEDIATE:
                entry = b * T + t  # flat (batch, T) index of the intermediate buffer
                store_state_rows(
                    inter_ptr,
                    inter_ptr,
                    entry * (HV * V) + head_rows,
                    mask_v,
                    offs_k,
                    mask_k,
                    state,
                    K,
                    FMT,
                    SR,
                    sr_fields,
                )
        if WRITE_FINAL:
            store_state_rows(
                pool_ptr,
                pool_ptr,
                dst * (HV * V) + head_rows,
                mask_v & ((offs_v * 0 + dst) >= 0),
                offs_k,
                mask_k,
                state,
                K,
                FMT,
                SR,
                sr_fields,
            )
    else:
        zero = tl.zeros((BLOCK_V,), dtype=o_ptr.dtype.element_ty)
        for t in tl.static_range(T):
            tl.store(o_col + (b * T + t) * stride_o_row, zero, mask=mask_v)


KERNEL_NAMES: tuple[str, ...] = (gdn_decode_kernel.fn.__name__,)
"""Kernel names `gdn_decode` launches, for CUPTI attribution."""


def validate_gdn_inputs(read_idx: torch.Tensor, write_idx: torch.Tensor | None, n_slots: int) -> None:
    """Host-side checks that read index values (one device sync; docs/spec.md §3, §9), the reference's rules:
    real read slots distinct and in range; with a final write, real rows' write slots
    non-negative, distinct, in range and never another row's read slot. Raises ValueError."""
    check_unique_slots(read_idx, "read_idx")
    check_slot_range(read_idx, n_slots, "read_idx")
    if write_idx is None:
        return
    dst = write_idx[:, None]
    check_real_dst(read_idx, dst)
    real_dst = write_idx[read_idx >= 0]
    check_unique_slots(real_dst, "write_idx")
    check_slot_range(real_dst, n_slots, "write_idx")
    check_dst_not_other_src(read_idx, dst)


def _check_index(idx: torch.Tensor, batch: int, name: str) -> None:
    if idx.shape != (batch,) or idx.dtype not in (torch.int32, torch.int64) or not idx.is_contiguous():
        raise ValueError(f"{name} must be a contiguous int32/int64 ({batch},) tensor, got {idx.dtype} "
                         f"{tuple(idx.shape)}")


def gdn_decode(
    pool_data: torch.Tensor,
    read_idx: torch.Tensor,
    write_idx: torch.Tensor | None,
    conv_out: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    A_log: torch.Tensor,
    dt_bias: torch.Tensor,
    *,
    num_k_heads: int,
    num_v_heads: int,
    head_k_dim: int,
    head_v_dim: int,
    T: int,
    scale: float | None = None,
    intermediate: torch.Tensor | None = None,
    write_final: bool = True,
    out: torch.Tensor | None = None,
    fmt: str | None = None,
    rounding: str = "rn",
    seed: int = 0,
    step: int = 0,
    pdl: bool = False,
    knobs: GDNKnobs | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """Run one GDN decode step of T tokens per row (docs/spec.md §9); returns ``out`` (batch*T, HV*V).

    pool_data: contiguous ``(n_slots, HV, V, K)`` fp32 or bf16 state pool, updated in place at the
    write slots. read_idx ``(batch,)``: slot read per row (< 0: padding row); write_idx
    ``(batch,)`` or None (= read_idx): slot the final state goes to when ``write_final``.
    conv_out: the conv1d output ``(batch*T, 2*H*K + HV*V)`` (q | k | v) with unit column stride;
    a, b: ``(batch*T, HV)`` in_proj outputs (unit column stride, any row stride); A_log, dt_bias:
    fp32 ``(HV,)``. intermediate: optional contiguous ``(batch, T, HV, V, K)`` buffer in the pool's
    dtype receiving every per-token state (padding rows untouched). out: optional preallocated
    contiguous ``(batch*T, HV*V)`` output in the activation dtype (no allocation when given).
    ``scale`` defaults to K**-0.5. rounding "rn" | "sr"; seed/step key the SR Philox stream (step
    is baked into a captured graph). ``validate`` syncs to check the indices (skipped during
    graph capture; pass False in timed loops).
    """
    H, HV, K, V = num_k_heads, num_v_heads, head_k_dim, head_v_dim
    if H <= 0 or HV % H:
        raise ValueError(f"num_v_heads={HV} must be a multiple of num_k_heads={H}")
    if not 1 <= T <= 16:
        raise ValueError(f"T={T} unsupported (1..16)")
    fmt = fmt or format_of(pool_data)
    if fmt not in GDN_FORMATS:
        raise ValueError(f"GDN state format {fmt!r} unsupported; allowed: {', '.join(GDN_FORMATS)}")
    if format_of(pool_data) != fmt:
        raise ValueError(f"pool dtype {pool_data.dtype} does not hold format {fmt!r}")
    sr = rounding_is_sr(rounding)
    if pool_data.dim() != 4 or tuple(pool_data.shape[1:]) != (HV, V, K) or not pool_data.is_contiguous():
        raise ValueError(
            f"pool_data must be a contiguous (n_slots, {HV}, {V}, {K}) tensor, got {tuple(pool_data.shape)}"
        )
    batch = read_idx.shape[0]
    _check_index(read_idx, batch, "read_idx")
    if write_final:
        write_idx = read_idx if write_idx is None else write_idx
        _check_index(write_idx, batch, "write_idx")
    else:
        write_idx = None
    rows = batch * T
    conv_dim = 2 * H * K + HV * V
    if conv_out.shape != (rows, conv_dim) or conv_out.stride(1) != 1:
        raise ValueError(
            f"conv_out must be ({rows}, {conv_dim}) with unit column stride, got {tuple(conv_out.shape)}"
        )
    for name, t in (("a", a), ("b", b)):
        if t.shape != (rows, HV) or t.stride(1) != 1:
            raise ValueError(f"{name} must be ({rows}, {HV}) with unit column stride, got {tuple(t.shape)}")
    for name, p in (("A_log", A_log), ("dt_bias", dt_bias)):
        if p.shape != (HV,) or p.dtype != torch.float32 or not p.is_contiguous():
            raise ValueError(f"{name} must be a contiguous fp32 ({HV},) tensor")
    if intermediate is not None and (
        tuple(intermediate.shape) != (batch, T, HV, V, K)
        or intermediate.dtype != pool_data.dtype
        or not intermediate.is_contiguous()
    ):
        raise ValueError(f"intermediate must be a contiguous {pool_data.dtype} ({batch}, {T}, {HV}, {V}, {K}) "
                         f"tensor, got {intermediate.dtype} {tuple(intermediate.shape)}")
    if out is None:
        out = torch.empty(rows, HV * V, dtype=conv_out.dtype, device=conv_out.device)
    elif out.shape != (rows, HV * V) or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous ({rows}, {HV * V}) tensor")
    if validate and not is_capturing():
        validate_gdn_inputs(read_idx, write_idx, pool_data.shape[0])
    if batch == 0:
        return out

    knobs = knobs or default_gdn_knobs(HV, V, K, batch, T, fmt, rounding)
    block_v = min(knobs.block_v, triton.next_power_of_2(V))
    use_pdl = pdl_enabled(pdl, conv_out.device)
    q = conv_out[:, : H * K]
    k = conv_out[:, H * K : 2 * H * K]
    v = conv_out[:, 2 * H * K :]
    grid = (triton.cdiv(V, block_v), HV, batch)
    gdn_decode_kernel[grid](
        pool_data,
        read_idx,
        write_idx if write_idx is not None else read_idx,
        intermediate if intermediate is not None else pool_data,
        q,
        k,
        v,
        a,
        b,
        out,
        A_log,
        dt_bias,
        float(K**-0.5 if scale is None else scale),
        seed,
        step,
        conv_out.stride(0),
        a.stride(0),
        b.stride(0),
        out.stride(0),
        T=T,
        T_PAD=triton.next_power_of_2(T),
        HV=HV,
        K=K,
        V=V,
        GROUP=HV // H,
        BLOCK_V=block_v,
        BLOCK_K=max(4, triton.next_power_of_2(K)),  # sr_bits needs >= 4 columns
        FMT=format_code(fmt),
        SR=sr,
        INTERMEDIATE=intermediate is not None,
        WRITE_FINAL=write_final,
        PDL=use_pdl,
        STREAM=knobs.stream_tokens,
        **launch_options(use_pdl, knobs.num_warps, knobs.num_stages),
    )
    return out
