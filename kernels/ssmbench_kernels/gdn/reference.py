"""Gated DeltaNet decode reference (docs/spec.md §9): the recurrence every GDN kernel is tested against.

Two layers:
- `gdn_recurrence` is the pure math on dequantized states (no pools, no rounding);
- `gdn_decode_step` adds the pool semantics of a decode step (docs/spec.md §3, §8, §9): read slots, split
  write slots, padding rows, the batch-scoped intermediate buffer and storage rounding.

Rounding happens only when a state is stored (docs/spec.md §8): the T tokens of one step run on the
unrounded compute-dtype state, and the pool write / intermediate entries are rounded copies.

SR uniforms (documented contract, kernels must draw the same numbers): the request is the row's
read index, and every state the row stores in one step (its T intermediate entries and its
final pool write) uses ``sr_uniform(seed, read_idx[b], step, (HV, V, K))`` (docs/spec.md §8).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ssmbench_kernels.common.reference import check_slots, softplus_thresholded
from ssmbench_kernels.storage.reference import (
    REFERENCE_FORMATS,
    ROUNDINGS,
    StoredState,
    dequantize,
    empty_pool,
    quantize,
    sr_uniform,
)

L2_EPS = 1e-6
"""Added to sum(x^2) inside the sqrt of the q/k normalization (docs/spec.md §9)."""


@dataclass
class GDNStepResult:
    """What one pool-mode decode step produces (docs/spec.md §9).

    o: (batch, T, HV, V) in the compute dtype, zero on padding rows.
    pool: the new pool (a copy; the input pool is never mutated).
    intermediate: per-token states (batch, T, HV, V, K) in pool.fmt, or None; padding rows zero.
    """

    o: torch.Tensor
    pool: StoredState
    intermediate: StoredState | None


def _l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """x / sqrt(sum x^2 + 1e-6) over the last dim (docs/spec.md §9); eps inside the sqrt, as kernels do."""
    return x / torch.sqrt((x * x).sum(dim=-1, keepdim=True) + L2_EPS)


def _check_shapes(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    A_log: torch.Tensor,
    dt_bias: torch.Tensor,
) -> tuple[int, int, int, int, int, int, int]:
    """Validate the docs/spec.md §9 shapes; returns (batch, T, H, HV, K, V, group)."""
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(f"q, k must both be (batch, T, H, K); got {tuple(q.shape)}, {tuple(k.shape)}")
    batch, T, H, K = q.shape
    if v.dim() != 4 or v.shape[:2] != (batch, T):
        raise ValueError(f"v must be (batch={batch}, T={T}, HV, V); got {tuple(v.shape)}")
    HV, V = v.shape[2], v.shape[3]
    if H == 0 or HV % H != 0:
        raise ValueError(f"HV={HV} must be a multiple of H={H} (value head hv uses q/k head hv // (HV // H))")
    for name, t in (("a", a), ("b", b)):
        if t.shape != (batch, T, HV):
            raise ValueError(f"{name} must be (batch, T, HV) = {(batch, T, HV)}; got {tuple(t.shape)}")
    for name, t in (("A_log", A_log), ("dt_bias", dt_bias)):
        if t.shape != (HV,):
            raise ValueError(f"{name} must be (HV,) = ({HV},); got {tuple(t.shape)}")
    return batch, T, H, HV, K, V, HV // H


def gdn_recurrence(
    state0: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    A_log: torch.Tensor,
    dt_bias: torch.Tensor,
    *,
    scale: float | None = None,
    compute_dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the GDN recurrence over T tokens from dequantized states (docs/spec.md §9), no storage rounding.

    Shapes: state0 (batch, HV, V, K) ("K-last": S is V x K); q, k (batch, T, H, K);
    v (batch, T, HV, V); a, b (batch, T, HV); A_log, dt_bias (HV,).
    Returns o (batch, T, HV, V) and the per-token states S_t (batch, T, HV, V, K), both in
    ``compute_dtype``. Value head hv uses q/k head hv // (HV // H). ``scale`` defaults to K**-0.5.
    """
    batch, T, H, HV, K, V, group = _check_shapes(q, k, v, a, b, A_log, dt_bias)
    if state0.shape != (batch, HV, V, K):
        raise ValueError(f"state0 must be (batch, HV, V, K) = {(batch, HV, V, K)}; got {tuple(state0.shape)}")
    dev, cd = state0.device, compute_dtype
    scale = K**-0.5 if scale is None else float(scale)

    # GVA: gather q/k head hv // group for every value head (batch, T, HV, K).
    head_of = torch.arange(HV, device=dev) // group
    qh = _l2_normalize(q.to(cd).index_select(2, head_of)) * scale
    kh = _l2_normalize(k.to(cd).index_select(2, head_of))
    vv = v.to(cd)
    # Gates per (batch, T, HV); softplus branch selected before exp (docs/spec.md §4/§9).
    g = -torch.exp(A_log.to(cd)) * softplus_thresholded(a.to(cd) + dt_bias.to(cd))
    decay = torch.exp(g)
    beta = torch.sigmoid(b.to(cd))

    S = state0.to(cd).clone()
    o = torch.empty((batch, T, HV, V), dtype=cd, device=dev)
    states = torch.empty((batch, T, HV, V, K), dtype=cd, device=dev)
    for t in range(T):
        k_t = kh[:, t]  # (batch, HV, K)
        S = decay[:, t, :, None, None] * S
        Sk = torch.einsum("bhvk,bhk->bhv", S, k_t)
        v_new = beta[:, t, :, None] * (vv[:, t] - Sk)  # (batch, HV, V)
        S = S + v_new[..., :, None] * k_t[..., None, :]
        o[:, t] = torch.einsum("bhvk,bhk->bhv", S, qh[:, t])
        states[:, t] = S
    return o, states


def _as_index(idx: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    """Slot indices as int64 (docs/spec.md §9: offsets are 64-bit)."""
    if not isinstance(idx, torch.Tensor):
        idx = torch.as_tensor(idx)
    if idx.dtype.is_floating_point or idx.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor; got {idx.dtype}")
    if idx.shape != (batch,):
        raise ValueError(f"{name} must be (batch,) = ({batch},); got {tuple(idx.shape)}")
    return idx.to(torch.int64)


def gdn_decode_step(
    pool: StoredState,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    A_log: torch.Tensor,
    dt_bias: torch.Tensor,
    read_idx: torch.Tensor,
    write_idx: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    intermediate: bool = False,
    write_final: bool = True,
    rounding: str = "rn",
    seed: int = 0,
    step: int = 0,
    compute_dtype: torch.dtype = torch.float64,
) -> GDNStepResult:
    """One pool-mode GDN decode step of T tokens per row (docs/spec.md §9, padding and slots per docs/spec.md §3,
    storage per docs/spec.md §8).

    Shapes: pool (n_slots, HV, V, K) in fp64 / fp32 / bf16 (any storage format is accepted);
    q, k (batch, T, H, K); v (batch, T, HV, V); a, b (batch, T, HV); A_log, dt_bias (HV,);
    read_idx, write_idx (batch,) integer slots. Row b reads pool[read_idx[b]]; a negative read
    index is padding (no read, no write, o = 0, its intermediate row stays zero; its write_idx is
    ignored). When ``write_final`` the final state goes to pool[write_idx[b]] (default
    write_idx = read_idx; split pool otherwise). With ``intermediate`` every S_t is stored to a
    batch-scoped buffer (batch, T, HV, V, K) in pool.fmt. Rounding: ``rounding`` with the SR
    uniforms of the module docstring. Raises ValueError on duplicate real read or write slots, on
    a real row whose write slot is negative, on a write slot that another row reads (a race in
    any parallel kernel), and on out-of-range slots.
    """
    if pool.fmt not in REFERENCE_FORMATS:
        raise ValueError(f"unknown storage format {pool.fmt!r}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}; allowed: {', '.join(ROUNDINGS)}")
    batch, T, _, HV, K, V, _ = _check_shapes(q, k, v, a, b, A_log, dt_bias)
    if pool.data.dim() != 4 or tuple(pool.shape[1:]) != (HV, V, K):
        raise ValueError(f"pool must be (n_slots, HV, V, K) = (n, {HV}, {V}, {K}); got {tuple(pool.shape)}")
    n_slots = pool.shape[0]
    dev = pool.data.device

    read_idx = _as_index(read_idx, batch, "read_idx").to(dev)
    real = read_idx >= 0
    check_slots(read_idx, "read_idx")
    if bool((read_idx >= n_slots).any()):
        raise ValueError(f"read_idx: slot out of range for a pool of {n_slots} slots")
    if write_final:
        write_idx = read_idx if write_idx is None else _as_index(write_idx, batch, "write_idx").to(dev)
        w_real = write_idx[real]
        if bool((w_real < 0).any()):
            raise ValueError("write_idx: a real row (read slot >= 0) has a negative write slot")
        if bool((w_real >= n_slots).any()):
            raise ValueError(f"write_idx: slot out of range for a pool of {n_slots} slots")
        check_slots(w_real, "write_idx")
        # Row b writing a slot that another row b' reads races in a parallel kernel.
        r_real = read_idx[real]
        clash = (w_real[:, None] == r_real[None, :]) & ~torch.eye(len(r_real), dtype=torch.bool, device=dev)
        if bool(clash.any()):
            raise ValueError("write_idx: a write slot is read by another row in the same batch (race)")

    rows = real.nonzero().squeeze(1)  # real batch rows
    o = torch.zeros((batch, T, HV, V), dtype=compute_dtype, device=dev)
    new_pool = pool.clone()
    inter = empty_pool((batch, T, HV, V, K), pool.fmt, device=dev) if intermediate else None
    if rows.numel() == 0:
        return GDNStepResult(o, new_pool, inter)

    def sel(x: torch.Tensor) -> torch.Tensor:
        return x.to(dev).index_select(0, rows)

    state0 = dequantize(pool[read_idx[rows]], compute_dtype)
    o_real, states = gdn_recurrence(
        state0,
        sel(q),
        sel(k),
        sel(v),
        sel(a),
        sel(b),
        A_log.to(dev),
        dt_bias.to(dev),
        scale=scale,
        compute_dtype=compute_dtype,
    )
    o[rows] = o_real

    if inter is not None:
        uniform = None
        if rounding == "sr":  # the request's uniforms, shared by its T entries
            uniform = sr_uniform(seed, read_idx[rows], step, (HV, V, K)).unsqueeze(1).expand(-1, T, -1, -1, -1)
        inter[rows] = quantize(states, pool.fmt, rounding, uniform)
    if write_final:
        w = write_idx[rows]
        uniform = sr_uniform(seed, read_idx[rows], step, (HV, V, K)) if rounding == "sr" else None
        new_pool[w] = quantize(states[:, -1], pool.fmt, rounding, uniform)
    return GDNStepResult(o, new_pool, inter)
