"""Gated DeltaNet decode in the WY form within a step (docs/gdn.md, "Why T > 1 costs triton.gdn
...", issue 20): a candidate successor of `gdn_decode_kernel` for T > 1, not registered as an
impl yet. Same contract as `kernel.gdn_decode` (docs/spec.md §9: pools, split writes, padding
rows, optional per-token states and final write, fp32/bf16 state, RN/SR with the revised keying).

Why: `gdn_decode_kernel` does, per token and state element, the decay, two row reductions over K
(shuffles) and the rank-1 update, plus per-token cross-warp token selects; at T=4 that work
stops hiding behind the state traffic (2.3x the T=1 time at equal bytes). Here the T tokens
touch the start state S0 only through the 2T products S0 k_t and S0 q_t, one tensor-core product
per tile; the rest is T x T algebra per head and reduction-free state reconstruction:

- ``g_t`` the log decays, ``D[t, j] = exp(g_{j+1} + ... + g_t)`` for j <= t (<= 1: no overflow; each
  pair's sum taken on its own, not as a difference of cumulative sums), ``gamma_t = exp(g_1 + ... + g_t)``;
- ``u_t = beta_t (v_t - gamma_t S0 k_t - sum_{j<t} D[t, j] (k_j . k_t) u_j)``: ``U (I + A)^T = R``
  with ``A[t, j] = beta_t D[t, j] (k_j . k_t)`` (j < t) and ``R[:, t] = beta_t (v_t - gamma_t S0 k_t)``,
  so ``U = R M^T`` with ``M = (I + A)^-1`` (unit lower triangular, the same for every row of the
  head: inverted once per program by forward substitution on a T x T tile);
- ``o_t = gamma_t S0 q_t + sum_{j<=t} D[t, j] (k_j . q_t) u_j``: all T outputs in one (BLOCK_V, T) store;
- ``S_t = gamma_t S0 + (U * D[t, :]) @ K``: one small product per stored state (T for the
  intermediate buffer, the last one for the final write), no reduction over K on the CUDA cores.

Products go through `common.dots.dot_precision`: fp32 operands in ``tf32x3`` by default (three
TF32 tensor-core products, ~2^-22 relative, as the checkpoint fold; ``"ieee"``: FMA units, exact
products); the interpreter computes in fp32. Token-padded tiles are TD = max(16, T) wide (tl.dot's
minimum), rows BLOCK_V >= 16. Storage exactly as `gdn_decode_kernel`: `load_state_rows`,
`request_sr_bits` drawn once per tile (request = the read slot) and shared by every
`store_state_rows` of the request; the states are rounded only when stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ssmbench_kernels.common.activation import softplus_thresholded
from ssmbench_kernels.common.dots import dot_precision
from ssmbench_kernels.common.launch import is_capturing, launch_options, pdl_enabled, pdl_wait
from ssmbench_kernels.gdn.kernel import GDN_FORMATS, validate_gdn_inputs
from ssmbench_kernels.storage.kernel import (
    format_code,
    format_of,
    load_state_rows,
    request_sr_bits,
    rounding_is_sr,
    store_state_rows,
)

MIN_DOT = 16
"""tl.dot's smallest tile side on the GPU: token tiles and row tiles are padded to it."""
PRECISIONS = ("tf32x3", "ieee")


@dataclass(frozen=True)
class GDNWYKnobs:
    """Tuning knobs of `gdn_decode_wy_kernel` (untuned: to be swept on the GPU)."""

    block_v: int = 32
    """State rows per program (power of two, >= 16)."""
    num_warps: int = 4
    num_stages: int = 1
    precision: str = "tf32x3"
    """Input precision of the fp32 products (`PRECISIONS`)."""


@triton.jit
def _row(x, idx, t):
    """Row t of the (TD, N) tile ``x`` as an (N,) vector (``idx`` = arange(TD)); a one-hot pick on a
    token tile, never on the state tile."""
    return tl.sum(tl.where(idx[:, None] == t, x, 0.0), axis=0)


@triton.jit(do_not_specialize=["seed", "step", "scale"])
def gdn_decode_wy_kernel(
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
    TD: tl.constexpr,
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
    PRECISION: tl.constexpr,
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

    # ---- everything that does not depend on the producer (conv1d), as gdn_decode_kernel ----
    src = tl.load(read_ptr + b).to(tl.int64)
    real = src >= 0
    read_v = mask_v & ((offs_v * 0 + src) >= 0)
    s0 = load_state_rows(pool_ptr, pool_ptr, src * (HV * V) + head_rows, read_v, offs_k, mask_k, K, FMT)
    sr_fields = request_sr_bits(seed, head_rows, src, step, BLOCK_K, FMT, SR)  # shared by every store
    if WRITE_FINAL:
        dst = tl.load(write_ptr + b).to(tl.int64)
    neg_a = -tl.exp(tl.load(A_log_ptr + hv).to(tl.float32))
    dt_bias = tl.load(dt_bias_ptr + hv).to(tl.float32)

    pdl_wait(PDL)

    # ---- the step's T tokens as (TD, .) tiles; tokens past T (and padding rows) read as zeros ----
    offs_t = tl.arange(0, TD)
    rows_t = b * T + offs_t  # int64 token rows
    read_t = (offs_t < T) & ((offs_t * 0 + src) >= 0)
    tok_k = read_t[:, None] & mask_k[None, :]
    qk_off = rows_t[:, None] * stride_qkv_row + h * K + offs_k[None, :]
    q_all = tl.load(q_ptr + qk_off, mask=tok_k, other=0.0).to(tl.float32)
    k_all = tl.load(k_ptr + qk_off, mask=tok_k, other=0.0).to(tl.float32)
    v_vt = tl.load(  # (BLOCK_V, TD): v_t as columns
        v_ptr + rows_t[None, :] * stride_qkv_row + hv * V + offs_v[:, None],
        mask=mask_v[:, None] & read_t[None, :],
        other=0.0,
    ).to(tl.float32)
    a_all = tl.load(a_ptr + rows_t * stride_a_row + hv, mask=read_t, other=0.0).to(tl.float32)
    b_all = tl.load(b_ptr + rows_t * stride_b_row + hv, mask=read_t, other=0.0).to(tl.float32)
    g_all = tl.where(read_t, neg_a * softplus_thresholded(a_all + dt_bias), 0.0)  # log decays
    beta_all = tl.where(read_t, tl.sigmoid(b_all), 0.0)  # 0 past T: those columns of U stay 0
    q_all = q_all * (scale / tl.sqrt(tl.sum(q_all * q_all, axis=1) + 1e-6))[:, None]
    k_all = k_all * (1.0 / tl.sqrt(tl.sum(k_all * k_all, axis=1) + 1e-6))[:, None]

    # ---- T x T algebra of the head (rows t, columns j) ----
    gamma = tl.exp(tl.cumsum(g_all, axis=0))
    t_i = offs_t[:, None]
    j_i = offs_t[None, :]
    causal = (j_i <= t_i) & read_t[:, None] & read_t[None, :]
    # D[t, j] = exp(g_{j+1} + ... + g_t), each row j a running sum from j + 1 on (Y[j, t]), not
    # G_t - G_j: a difference of two cumulative sums loses |G| * 2^-24, too much for strong decays.
    Y = tl.cumsum(tl.where(j_i > t_i, g_all[None, :], 0.0), axis=1)  # Y[j, i] = sum_{j < i' <= i} g_i'
    Dm = tl.where(causal, tl.exp(tl.where(causal, tl.trans(Y), 0.0)), 0.0)
    zero_tt = tl.zeros((TD, TD), tl.float32)
    KK = dot_precision(k_all, tl.trans(k_all), zero_tt, PRECISION)  # k_j . k_t (symmetric)
    KQ = dot_precision(k_all, tl.trans(q_all), zero_tt, PRECISION)  # [j, t] = k_j . q_t
    A = tl.where(causal & (j_i < t_i), beta_all[:, None] * Dm * KK, 0.0)
    Minv = tl.where(t_i == j_i, 1.0, 0.0)  # (I + A)^-1 by forward substitution, row by row
    for t in tl.static_range(1, T):
        a_row = _row(A, offs_t, t)  # A[t, j] over j
        Minv = tl.where(t_i == t, Minv - tl.sum(a_row[:, None] * Minv, axis=0)[None, :], Minv)
    C = tl.where(causal, Dm * tl.trans(KQ), 0.0)  # C[t, j] = D[t, j] (k_j . q_t)

    # ---- the start state enters only here: S0 k_t and S0 q_t for every token ----
    zero_vt = tl.zeros((BLOCK_V, TD), tl.float32)
    Pk = dot_precision(s0, tl.trans(k_all), zero_vt, PRECISION)
    Pq = dot_precision(s0, tl.trans(q_all), zero_vt, PRECISION)
    R = beta_all[None, :] * (v_vt - gamma[None, :] * Pk)
    U = dot_precision(R, tl.trans(Minv), zero_vt, PRECISION)  # U[:, t] = u_t
    O = gamma[None, :] * Pq + dot_precision(U, tl.trans(C), zero_vt, PRECISION)
    tl.store(  # padding rows: every input read as 0, so O == 0 (docs/spec.md §3's zero outputs)
        o_ptr + rows_t[None, :] * stride_o_row + hv * V + offs_v[:, None],
        O.to(o_ptr.dtype.element_ty),
        mask=mask_v[:, None] & (offs_t < T)[None, :],
    )

    # ---- stored states: S_t = gamma_t S0 + (U * D[t, :]) @ K, rounded only when stored ----
    if real:
        for t in tl.static_range(T):
            if INTERMEDIATE or (WRITE_FINAL and t == T - 1):
                gamma_t = tl.sum(tl.where(offs_t == t, gamma, 0.0), axis=0)
                state = dot_precision(U * _row(Dm, offs_t, t)[None, :], k_all, gamma_t * s0, PRECISION)
                if INTERMEDIATE:
                    entry = b * T + t  # flat (batch, T) index of the intermediate buffer
                    store_state_rows(inter_ptr, inter_ptr, entry * (HV * V) + head_rows, mask_v, offs_k, mask_k,
                                     state, K, FMT, SR, sr_fields)
                if WRITE_FINAL and t == T - 1:
                    store_state_rows(pool_ptr, pool_ptr, dst * (HV * V) + head_rows,
                                     mask_v & ((offs_v * 0 + dst) >= 0), offs_k, mask_k, state, K, FMT, SR,
                                     sr_fields)


KERNEL_NAMES: tuple[str, ...] = (gdn_decode_wy_kernel.fn.__name__,)
"""Kernel names `gdn_decode_wy` launches, for CUPTI attribution."""


def gdn_decode_wy(
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
    knobs: GDNWYKnobs | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """`kernel.gdn_decode`'s contract and arguments (see there), with the WY-form kernel; returns
    ``out`` (batch*T, HV*V). The argument checks are the same rules, shortened here: when this
    kernel replaces the old one, the two wrappers become one."""
    H, HV, K, V = num_k_heads, num_v_heads, head_k_dim, head_v_dim
    knobs = knobs or GDNWYKnobs()
    if H <= 0 or HV % H:
        raise ValueError(f"num_v_heads={HV} must be a multiple of num_k_heads={H}")
    if not 1 <= T <= 16:
        raise ValueError(f"T={T} unsupported (1..16)")
    if knobs.precision not in PRECISIONS:
        raise ValueError(f"precision {knobs.precision!r}; allowed: {', '.join(PRECISIONS)}")
    fmt = fmt or format_of(pool_data)
    if fmt not in GDN_FORMATS or format_of(pool_data) != fmt:
        raise ValueError(f"GDN state format {fmt!r} with pool dtype {pool_data.dtype} unsupported; allowed: "
                         f"{', '.join(GDN_FORMATS)}")
    if pool_data.dim() != 4 or tuple(pool_data.shape[1:]) != (HV, V, K) or not pool_data.is_contiguous():
        raise ValueError(f"pool_data must be a contiguous (n_slots, {HV}, {V}, {K}) tensor")
    batch, rows = read_idx.shape[0], read_idx.shape[0] * T
    write_idx = (read_idx if write_idx is None else write_idx) if write_final else None
    if conv_out.shape != (rows, 2 * H * K + HV * V) or conv_out.stride(1) != 1:
        raise ValueError(f"conv_out must be ({rows}, {2 * H * K + HV * V}) with unit column stride")
    if a.shape != (rows, HV) or b.shape != (rows, HV) or a.stride(1) != 1 or b.stride(1) != 1:
        raise ValueError(f"a and b must be ({rows}, {HV}) with unit column stride")
    if intermediate is not None and (tuple(intermediate.shape) != (batch, T, HV, V, K)
                                     or intermediate.dtype != pool_data.dtype or not intermediate.is_contiguous()):
        raise ValueError(f"intermediate must be a contiguous {pool_data.dtype} ({batch}, {T}, {HV}, {V}, {K}) tensor")
    if out is None:
        out = torch.empty(rows, HV * V, dtype=conv_out.dtype, device=conv_out.device)
    elif out.shape != (rows, HV * V) or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous ({rows}, {HV * V}) tensor")
    if validate and not is_capturing():
        validate_gdn_inputs(read_idx, write_idx, pool_data.shape[0])
    if batch == 0:
        return out

    block_v = max(MIN_DOT, min(knobs.block_v, triton.next_power_of_2(V)))
    use_pdl = pdl_enabled(pdl, conv_out.device)
    grid = (triton.cdiv(V, block_v), HV, batch)
    gdn_decode_wy_kernel[grid](
        pool_data, read_idx, write_idx if write_idx is not None else read_idx,
        intermediate if intermediate is not None else pool_data,
        conv_out[:, : H * K], conv_out[:, H * K : 2 * H * K], conv_out[:, 2 * H * K :], a, b, out, A_log, dt_bias,
        float(K**-0.5 if scale is None else scale), seed, step,
        conv_out.stride(0), a.stride(0), b.stride(0), out.stride(0),
        T=T, TD=max(MIN_DOT, triton.next_power_of_2(T)), HV=HV, K=K, V=V, GROUP=HV // H, BLOCK_V=block_v,
        BLOCK_K=max(MIN_DOT, triton.next_power_of_2(K)), FMT=format_code(fmt), SR=rounding_is_sr(rounding),
        INTERMEDIATE=intermediate is not None, WRITE_FINAL=write_final, PDL=use_pdl, PRECISION=knobs.precision,
        **launch_options(use_pdl, knobs.num_warps, knobs.num_stages),
    )
    return out
