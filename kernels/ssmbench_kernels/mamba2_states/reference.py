"""Mamba-2 decode reference (docs/spec.md §4, §5): the sequential recurrence every Mamba-2 kernel is judged against.

Three layers:
- `mamba2_recurrence` is the pure math on dequantized states (no pools, no rounding), with
  optional tree parents (docs/spec.md §5);
- `mamba2_mtp_step` reads a pool (docs/spec.md §3 padding and slot rules) and returns every per-token
  state: the sequential reference of a speculative step;
- `mamba2_intermediate_step` is docs/spec.md §5 "intermediate": every per-token state S_t is stored into
  its own pool slot ``dst[b, t]`` in the pool's storage format (docs/spec.md §8).

Rounding happens only when a state is stored (docs/spec.md §8): the T tokens of a step run on the
unrounded compute-dtype state; the stored per-token states are rounded copies.

Tree parents (docs/spec.md §5): ``parent[b, t]`` lies in [-1, t). Token 0 always continues from the read
state, so ``parent[b, 0]`` must be -1. For t >= 1 a parent p >= 0 continues from S_p, and -1
continues from S_{t-1} (so "parent = t-1 or -1 is the linear chain").

SR uniforms (documented contract, kernels must draw the same numbers): every state a batch row
stores in one step (its T per-token states, its tree nodes) uses the uniforms of its request,
the slot it read: ``sr_uniform(seed, src_idx[b], step, (H, P, N))`` (docs/spec.md §8).
"""

from __future__ import annotations

import torch

from ssmbench_kernels.common.reference import check_slots, softplus_thresholded
from ssmbench_kernels.storage.reference import (
    REFERENCE_FORMATS,
    ROUNDINGS,
    StoredState,
    dequantize,
    quantize,
    sr_uniform,
)


def _check_shapes(
    x: torch.Tensor,
    dt_raw: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    dt_bias: torch.Tensor,
    z: torch.Tensor | None,
) -> tuple[int, int, int, int, int, int]:
    """Validate the docs/spec.md §2/§4 shapes; returns (batch, T, H, P, G, N)."""
    if x.dim() != 4:
        raise ValueError(f"x must be (batch, T, H, P); got {tuple(x.shape)}")
    batch, T, H, P = x.shape
    if B.dim() != 4 or B.shape[:2] != (batch, T):
        raise ValueError(f"B must be (batch={batch}, T={T}, G, N); got {tuple(B.shape)}")
    G, N = B.shape[2], B.shape[3]
    if C.shape != B.shape:
        raise ValueError(f"C must have B's shape {tuple(B.shape)}; got {tuple(C.shape)}")
    if G == 0 or H % G != 0:
        raise ValueError(f"H={H} must be a multiple of G={G} (head h uses group h // (H // G))")
    if dt_raw.shape != (batch, T, H):
        raise ValueError(f"dt_raw must be (batch, T, H) = {(batch, T, H)}; got {tuple(dt_raw.shape)}")
    for name, t in (("A", A), ("D", D), ("dt_bias", dt_bias)):
        if t.shape != (H,):
            raise ValueError(f"{name} must be (H,) = ({H},); got {tuple(t.shape)}")
    if z is not None and z.shape != x.shape:
        raise ValueError(f"z must be (batch, T, H, P) = {tuple(x.shape)}; got {tuple(z.shape)}")
    return batch, T, H, P, G, N


def _group_of_head(H: int, G: int, device: torch.device) -> torch.Tensor:
    """Index h -> h // (H // G) (docs/spec.md §2), to expand per-group B / C to per-head."""
    return torch.arange(H, device=device) // (H // G)


def _as_index(idx: torch.Tensor, shape: tuple[int, ...], name: str, device: torch.device) -> torch.Tensor:
    """Integer index tensor of exactly ``shape`` as int64 on ``device`` (64-bit offsets, docs/spec.md §9)."""
    if not isinstance(idx, torch.Tensor):
        idx = torch.as_tensor(idx)
    if idx.dtype.is_floating_point or idx.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor; got {idx.dtype}")
    if tuple(idx.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {tuple(idx.shape)}")
    return idx.to(device=device, dtype=torch.int64)


def _check_slots_in_pool(slot_idx: torch.Tensor, n_slots: int, name: str) -> None:
    """Distinct real slots (docs/spec.md §3) that exist in the pool."""
    check_slots(slot_idx, name)
    if bool((slot_idx >= n_slots).any()):
        raise ValueError(f"{name}: slot out of range for a pool of {n_slots} slots")


def _check_parent(parent: torch.Tensor, T: int) -> None:
    """docs/spec.md §5: parent[b, t] in [-1, t) for every t (so parent[b, 0] == -1)."""
    t = torch.arange(T, device=parent.device)
    bad = (parent < -1) | (parent >= t)
    if bool(bad.any()):
        b, tt = bad.nonzero()[0].tolist()
        raise ValueError(f"parent[{b}, {tt}] = {int(parent[b, tt])} is outside [-1, {tt}) (docs/spec.md §5)")


def _check_pool(pool: StoredState, H: int, P: int, N: int) -> int:
    if pool.fmt not in REFERENCE_FORMATS:
        raise ValueError(f"unknown storage format {pool.fmt!r}")
    if pool.data.dim() != 4 or tuple(pool.shape[1:]) != (H, P, N):
        raise ValueError(f"pool must be (n_slots, H, P, N) = (n, {H}, {P}, {N}); got {tuple(pool.shape)}")
    return pool.shape[0]


def mamba2_recurrence(
    state0: torch.Tensor,
    x: torch.Tensor,
    dt_raw: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    dt_bias: torch.Tensor,
    z: torch.Tensor | None = None,
    parent: torch.Tensor | None = None,
    *,
    compute_dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the Mamba-2 recurrence token by token from dequantized states (docs/spec.md §4), no rounding.

    Shapes: state0 (batch, H, P, N); x (batch, T, H, P); dt_raw (batch, T, H); B, C
    (batch, T, G, N); A, D, dt_bias (H,); z (batch, T, H, P) or None; parent (batch, T) integer
    or None (docs/spec.md §5 tree: parent[b, t] in [-1, t); t >= 1 with p >= 0 continues from S_p, -1 from
    S_{t-1}; token 0 from state0). Returns y (batch, T, H, P) and every per-token state
    S_t (batch, T, H, P, N), both in ``compute_dtype``.
    """
    batch, T, H, P, G, N = _check_shapes(x, dt_raw, A, B, C, D, dt_bias, z)
    if state0.shape != (batch, H, P, N):
        raise ValueError(f"state0 must be (batch, H, P, N) = {(batch, H, P, N)}; got {tuple(state0.shape)}")
    dev, cd = state0.device, compute_dtype
    if parent is not None:
        parent = _as_index(parent, (batch, T), "parent", dev)
        _check_parent(parent, T)

    hg = _group_of_head(H, G, dev)
    xx = x.to(device=dev, dtype=cd)
    Bh = B.to(device=dev, dtype=cd).index_select(2, hg)  # (batch, T, H, N)
    Ch = C.to(device=dev, dtype=cd).index_select(2, hg)
    # Branch select before exp (docs/spec.md §4): a huge dt_raw + dt_bias never produces inf * 0.
    dt = softplus_thresholded(dt_raw.to(device=dev, dtype=cd) + dt_bias.to(device=dev, dtype=cd))
    a = torch.exp(A.to(device=dev, dtype=cd) * dt)  # (batch, T, H)

    rows = torch.arange(batch, device=dev)
    S = state0.to(cd)
    states = torch.empty((batch, T, H, P, N), dtype=cd, device=dev)
    for t in range(T):
        if parent is not None and t >= 1:
            p = parent[:, t]
            S = states[rows, torch.where(p >= 0, p, torch.full_like(p, t - 1))]
        dx = dt[:, t, :, None] * xx[:, t]  # (batch, H, P)
        S = a[:, t, :, None, None] * S + dx[..., :, None] * Bh[:, t, :, None, :]
        states[:, t] = S
    y = torch.einsum("bthpn,bthn->bthp", states, Ch) + D.to(device=dev, dtype=cd)[:, None] * xx
    if z is not None:
        zz = z.to(device=dev, dtype=cd)
        y = y * (zz * torch.sigmoid(zz))
    return y, states


def _run_pool_rows(
    pool: StoredState,
    slot_idx: torch.Tensor,
    x: torch.Tensor,
    dt_raw: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    dt_bias: torch.Tensor,
    z: torch.Tensor | None,
    parent: torch.Tensor | None,
    compute_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validated pool read + recurrence on the real rows; returns (slot_idx, rows, y, states_real)."""
    batch, T, H, P, _, N = _check_shapes(x, dt_raw, A, B, C, D, dt_bias, z)
    n_slots = _check_pool(pool, H, P, N)
    dev = pool.data.device
    slot_idx = _as_index(slot_idx, (batch,), "slot_idx", dev)
    _check_slots_in_pool(slot_idx, n_slots, "slot_idx")
    rows = (slot_idx >= 0).nonzero().squeeze(1)
    if parent is not None:
        parent = _as_index(parent, (batch, T), "parent", dev)

    y = torch.zeros((batch, T, H, P), dtype=compute_dtype, device=dev)
    if rows.numel() == 0:
        return slot_idx, rows, y, torch.zeros((0, T, H, P, N), dtype=compute_dtype, device=dev)

    def sel(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(dev).index_select(0, rows)

    state0 = dequantize(pool[slot_idx[rows]], compute_dtype)
    y_real, states = mamba2_recurrence(
        state0, sel(x), sel(dt_raw), A.to(dev), sel(B), sel(C), D.to(dev), dt_bias.to(dev),
        sel(z), sel(parent), compute_dtype=compute_dtype,
    )
    y[rows] = y_real
    return slot_idx, rows, y, states


def mamba2_mtp_step(
    pool: StoredState,
    slot_idx: torch.Tensor,
    x: torch.Tensor,
    dt_raw: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    dt_bias: torch.Tensor,
    z: torch.Tensor | None = None,
    parent: torch.Tensor | None = None,
    *,
    compute_dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One speculative step of T tokens per row from pool states (docs/spec.md §3, §4): the sequential
    reference that intermediate and replay (docs/spec.md §5) are judged against. Stores nothing.

    Shapes: pool (n_slots, H, P, N) any storage format; slot_idx (batch,) integer, negative =
    padding; x (batch, T, H, P); dt_raw (batch, T, H); B, C (batch, T, G, N); A, D, dt_bias
    (H,); z (batch, T, H, P) or None; parent (batch, T) or None (only real rows are validated).
    Returns y (batch, T, H, P) and states (batch, T, H, P, N) in ``compute_dtype``; padding rows
    read nothing and get zeros in both. Raises ValueError on duplicate or out-of-range slots.
    """
    batch, T, H, P, _, N = _check_shapes(x, dt_raw, A, B, C, D, dt_bias, z)
    slot_idx, rows, y, states_real = _run_pool_rows(
        pool, slot_idx, x, dt_raw, A, B, C, D, dt_bias, z, parent, compute_dtype
    )
    states = torch.zeros((batch, T, H, P, N), dtype=compute_dtype, device=y.device)
    states[rows] = states_real
    return y, states


def mamba2_intermediate_step(
    pool: StoredState,
    src_idx: torch.Tensor,
    dst_idx: torch.Tensor,
    x: torch.Tensor,
    dt_raw: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    dt_bias: torch.Tensor,
    z: torch.Tensor | None = None,
    parent: torch.Tensor | None = None,
    *,
    rounding: str = "rn",
    seed: int = 0,
    step: int = 0,
    compute_dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, StoredState]:
    """docs/spec.md §5 "intermediate": run the step from pool[src_idx[b]] and store every per-token state
    S_t into pool slot dst_idx[b, t] (rounded into pool.fmt per docs/spec.md §8); the next step reads
    dst_idx[b, k-1] (or the accepted leaf's slot for trees).

    Shapes: pool (n_slots, H, P, N); src_idx (batch,); dst_idx (batch, T); other inputs as in
    `mamba2_mtp_step`. Returns y (batch, T, H, P) in ``compute_dtype`` and the NEW pool (the
    input is not mutated). Padding rows (src < 0): no read, no write, y = 0, dst ignored.
    SR uniforms: ``sr_uniform(seed, src_idx[b], step, (H, P, N))``, shared by the row's T stores.
    Raises ValueError on duplicate real src slots, on a real row with a negative or
    out-of-range dst slot, on a dst slot used twice, and on a dst slot that is another row's src
    (a race in any parallel kernel). A row may write its own src slot: it reads it first.
    """
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}; allowed: {', '.join(ROUNDINGS)}")
    batch, T, H, P, _, N = _check_shapes(x, dt_raw, A, B, C, D, dt_bias, z)
    n_slots = _check_pool(pool, H, P, N)
    dev = pool.data.device
    src = _as_index(src_idx, (batch,), "src_idx", dev)
    dst = _as_index(dst_idx, (batch, T), "dst_idx", dev)
    real = src >= 0
    d_real = dst[real]  # (n_real, T)
    if bool((d_real < 0).any()) or bool((d_real >= n_slots).any()):
        raise ValueError(f"dst_idx: a real row has a negative or out-of-range slot (pool of {n_slots})")
    check_slots(d_real.reshape(-1), "dst_idx")
    s_real = src[real]
    owner = torch.arange(len(s_real), device=dev)
    clash = (d_real[:, :, None] == s_real[None, None, :]) & (owner[:, None, None] != owner[None, None, :])
    if bool(clash.any()):
        raise ValueError("dst_idx: a dst slot is the src slot of another row in the same batch (race)")

    src, rows, y, states = _run_pool_rows(pool, src, x, dt_raw, A, B, C, D, dt_bias, z, parent, compute_dtype)
    new_pool = pool.clone()
    if rows.numel() == 0:
        return y, new_pool
    d = dst[rows]
    uniform = None
    if rounding == "sr":  # one draw per request, the same for its T stores
        uniform = sr_uniform(seed, src[rows], step, (H, P, N)).to(dev).unsqueeze(1).expand(-1, T, -1, -1, -1)
    new_pool[d] = quantize(states, pool.fmt, rounding, uniform)
    return y, new_pool
