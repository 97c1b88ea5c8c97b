"""Checkpoint-replay reference for Mamba-2 (docs/spec.md §5): a state checkpoint plus a history ring.

Per slot the true current state is the checkpoint S_ckpt followed by the ``pnat`` history tokens
(history token j lives at ring row ``(ring_start + j) mod L``, ring length ``L = W + T``). A step
with T new tokens either folds the history into a new checkpoint ("write", when
``pnat + T > W``) or computes its outputs straight from S_ckpt over history + new tokens
("nowrite", the "rectangle"). Both are closed forms of the docs/spec.md §4 recurrence and must equal the
sequential reference (`ssmbench_kernels.mamba2_states.reference.mamba2_mtp_step`) for any acceptance sequence.

Reference decisions (documented contract):
- New tokens' x, B and processed dt are rounded to the history dtypes before use, so the outputs
  of this step and every later fold see the same values (in production x, B arrive in the act
  dtype and dt is computed in fp32, so this rounding is the identity there).
- Outputs of write rows come from the UNROUNDED fold S'; the stored checkpoint is the rounded
  copy (docs/spec.md §8: rounding happens only when a state is stored).
- SR uniforms for the checkpoint of slot s at step ``step``: ``sr_uniform(seed, s, step, (H, P, N))``
  (the request is the slot itself, docs/spec.md §8).
- ``formulation``: "auto" (production: write rows fold then output, nowrite rows rectangle),
  "fold" (every row folds, then outputs from S' over the new tokens; only write rows store) or
  "rectangle" (every row's outputs from S_ckpt over history + new tokens; write rows still fold
  and store). All three agree to rounding error in the compute dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ssmbench_kernels.common.reference import softplus_thresholded
from ssmbench_kernels.mamba2_states.reference import _as_index, _check_shapes, _check_slots_in_pool, _group_of_head
from ssmbench_kernels.storage.reference import (
    REFERENCE_FORMATS,
    ROUNDINGS,
    StoredState,
    dequantize,
    quantize,
    sr_uniform,
)

FORMULATIONS: tuple[str, ...] = ("auto", "fold", "rectangle")


@dataclass
class ReplayState:
    """Everything checkpoint replay keeps per slot (docs/spec.md §5).

    ckpt: StoredState (n_slots, H, P, N) in the state storage format.
    hist_x: (n_slots, L, H, P) act dtype; hist_B: (n_slots, L, G, N) act dtype;
    hist_dt: (n_slots, L, H) processed dt (fp32 in production; the reference keeps any dtype).
    ring_start, pnat: (n_slots,) int64. window: W (>= T); L = W + T.
    """

    ckpt: StoredState
    hist_x: torch.Tensor
    hist_B: torch.Tensor
    hist_dt: torch.Tensor
    ring_start: torch.Tensor
    pnat: torch.Tensor
    window: int

    @property
    def ring_len(self) -> int:
        """L = W + T rows per slot."""
        return self.hist_x.shape[1]

    @property
    def T(self) -> int:
        """Tokens per step the ring was sized for (L - W)."""
        return self.ring_len - self.window

    @property
    def n_slots(self) -> int:
        return self.ckpt.shape[0]

    def clone(self) -> ReplayState:
        return ReplayState(
            self.ckpt.clone(), self.hist_x.clone(), self.hist_B.clone(), self.hist_dt.clone(),
            self.ring_start.clone(), self.pnat.clone(), self.window,
        )

    def validate(self) -> None:
        """Raise ValueError when the shapes or the bookkeeping break the docs/spec.md §5 invariants
        (W >= T >= 1, 0 <= pnat <= W, 0 <= ring_start < L)."""
        if self.ckpt.fmt not in REFERENCE_FORMATS:
            raise ValueError(f"unknown storage format {self.ckpt.fmt!r}")
        if self.ckpt.data.dim() != 4:
            raise ValueError(f"ckpt must be (n_slots, H, P, N); got {tuple(self.ckpt.shape)}")
        n, H, P, N = self.ckpt.shape
        L = self.ring_len
        if self.hist_x.dim() != 4 or tuple(self.hist_x.shape) != (n, L, H, P):
            raise ValueError(
                f"hist_x must be (n_slots, L, H, P) = {(n, L, H, P)}; got {tuple(self.hist_x.shape)}"
            )
        if self.hist_B.dim() != 4 or tuple(self.hist_B.shape[:2]) != (n, L) or self.hist_B.shape[3] != N:
            raise ValueError(
                f"hist_B must be (n_slots, L, G, N) = ({n}, {L}, G, {N}); got {tuple(self.hist_B.shape)}"
            )
        if tuple(self.hist_dt.shape) != (n, L, H):
            raise ValueError(
                f"hist_dt must be (n_slots, L, H) = {(n, L, H)}; got {tuple(self.hist_dt.shape)}"
            )
        for name, t in (("ring_start", self.ring_start), ("pnat", self.pnat)):
            if tuple(t.shape) != (n,) or t.dtype != torch.int64:
                raise ValueError(f"{name} must be int64 (n_slots,) = ({n},); got {t.dtype} {tuple(t.shape)}")
        if not 1 <= self.T <= self.window:
            raise ValueError(f"need W >= T >= 1; got W={self.window}, T={self.T} (L={L})")
        if bool(((self.pnat < 0) | (self.pnat > self.window)).any()):
            raise ValueError(f"pnat must lie in [0, W={self.window}]")
        if bool(((self.ring_start < 0) | (self.ring_start >= L)).any()):
            raise ValueError(f"ring_start must lie in [0, L={L})")


def new_replay_state(
    ckpt: StoredState,
    T: int,
    window: int,
    ngroups: int,
    *,
    act_dtype: torch.dtype = torch.float64,
    dt_dtype: torch.dtype = torch.float64,
) -> ReplayState:
    """A replay state around the checkpoint pool ``ckpt`` (n_slots, H, P, N) (adopted, not copied)
    with empty history: ring L = window + T rows, ring_start = pnat = 0 (docs/spec.md §5).

    History: hist_x (n_slots, L, H, P) and hist_B (n_slots, L, ngroups, N) in ``act_dtype``;
    hist_dt (n_slots, L, H) in ``dt_dtype`` (production: bf16 act, fp32 dt).
    """
    if ckpt.data.dim() != 4:
        raise ValueError(f"ckpt must be (n_slots, H, P, N); got {tuple(ckpt.shape)}")
    n, H, P, N = ckpt.shape
    if not 1 <= T <= window:
        raise ValueError(f"need window >= T >= 1; got window={window}, T={T}")
    if ngroups < 1 or H % ngroups != 0:
        raise ValueError(f"H={H} must be a multiple of ngroups={ngroups}")
    L = window + T
    dev = ckpt.data.device
    rs = ReplayState(
        ckpt=ckpt,
        hist_x=torch.zeros((n, L, H, P), dtype=act_dtype, device=dev),
        hist_B=torch.zeros((n, L, ngroups, N), dtype=act_dtype, device=dev),
        hist_dt=torch.zeros((n, L, H), dtype=dt_dtype, device=dev),
        ring_start=torch.zeros((n,), dtype=torch.int64, device=dev),
        pnat=torch.zeros((n,), dtype=torch.int64, device=dev),
        window=window,
    )
    rs.validate()
    return rs


def _fold(
    S0: torch.Tensor, xs: torch.Tensor, Bs: torch.Tensor, dts: torch.Tensor, A: torch.Tensor
) -> torch.Tensor:
    """S' = exp(cum_h) S0 + X^T diag(w) B with w_j = exp(cum_h - cum_j) dt_j (docs/spec.md §5 write).

    S0 (n, H, P, N); xs (n, J, H, P); Bs (n, J, H, N) per head; dts (n, J, H) with invalid
    tokens already zeroed (dt = 0 is an exact no-op token: decay 1, no input).
    """
    cum = (A * dts).cumsum(dim=1)  # (n, J, H)
    cum_h = cum[:, -1]  # (n, H)
    w = torch.exp(cum_h[:, None] - cum) * dts  # exponents <= 0 for A <= 0
    xw = (xs * w[..., None]).permute(0, 2, 3, 1)  # (n, H, P, J)
    return torch.exp(cum_h)[..., None, None] * S0 + xw @ Bs.permute(0, 2, 1, 3)


def _cb_outputs(
    S_ref: torch.Tensor,
    xs: torch.Tensor,
    Bs: torch.Tensor,
    dts: torch.Tensor,
    Cn: torch.Tensor,
    A: torch.Tensor,
) -> torch.Tensor:
    """Outputs (without D x and z) of the last T tokens of a J-token run after S_ref, in the docs/spec.md §4
    CB matrix form: y_m = exp(cum_m) S_ref C_m + sum_{j <= m} CB[m, j] x_j.

    S_ref (n, H, P, N); xs (n, J, H, P); Bs (n, J, H, N); dts (n, J, H) (invalid tokens zeroed);
    Cn (n, T, H, N) for positions J-T..J-1. Returns (n, T, H, P). CB is T x J ("rectangle").
    """
    J, T = xs.shape[1], Cn.shape[1]
    dev = xs.device
    cum = (A * dts).cumsum(dim=1)  # (n, J, H)
    cum_out = cum[:, J - T :]  # (n, T, H)
    causal = torch.arange(J, device=dev)[None, :] <= torch.arange(J - T, J, device=dev)[:, None]  # (T, J)
    causal = causal[None, :, :, None]
    expo = cum_out[:, :, None, :] - cum[:, None, :, :]  # (n, T, J, H); > 0 only where not causal
    decay = torch.where(causal, torch.exp(torch.where(causal, expo, 0.0)), 0.0)
    CB = decay * dts[:, None] * torch.einsum("bthn,bjhn->btjh", Cn, Bs)
    y = torch.exp(cum_out)[..., None] * torch.einsum("bhpn,bthn->bthp", S_ref, Cn)
    return y + torch.einsum("btjh,bjhp->bthp", CB, xs)


def _check_ring(rs: ReplayState, H: int, P: int, G: int, N: int, T: int) -> None:
    rs.validate()
    if tuple(rs.ckpt.shape[1:]) != (H, P, N) or rs.hist_B.shape[2] != G:
        held = (*rs.ckpt.shape[1:3], rs.hist_B.shape[2], rs.ckpt.shape[3])
        raise ValueError(f"replay state holds (H, P, G, N) = {held}, inputs have {(H, P, G, N)}")
    if T != rs.T:
        raise ValueError(f"the ring was sized for T={rs.T} tokens per step (L = W + T); got T={T}")


def _history(
    rs: ReplayState, s: torch.Tensor, hg: torch.Tensor, cd: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """History of slots s in token order, W rows each, tokens j >= pnat zeroed (dt = 0 makes
    them exact no-ops). Returns x (n, W, H, P), B per head (n, W, H, N), dt (n, W, H)."""
    W, L = rs.window, rs.ring_len
    j = torch.arange(W, device=s.device)
    ridx = (rs.ring_start[s][:, None] + j[None, :]) % L  # (n, W)
    valid = (j[None, :] < rs.pnat[s][:, None])[..., None]  # (n, W, 1)
    hx = torch.where(valid[..., None], rs.hist_x[s[:, None], ridx].to(cd), 0.0)
    hB = torch.where(valid[..., None], rs.hist_B[s[:, None], ridx].to(cd).index_select(2, hg), 0.0)
    hdt = torch.where(valid, rs.hist_dt[s[:, None], ridx].to(cd), 0.0)
    return hx, hB, hdt


def replay_step(
    rs: ReplayState,
    slot_idx: torch.Tensor,
    x: torch.Tensor,
    dt_raw: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    dt_bias: torch.Tensor,
    z: torch.Tensor | None = None,
    *,
    rounding: str = "rn",
    seed: int = 0,
    step: int = 0,
    formulation: str = "auto",
    compute_dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor, ReplayState]:
    """One checkpoint-replay step of T tokens per row (docs/spec.md §5; padding and slots per docs/spec.md §3,
    checkpoint storage per docs/spec.md §8).

    Shapes: slot_idx (batch,) integer, negative = padding; x (batch, T, H, P); dt_raw
    (batch, T, H); B, C (batch, T, G, N); A, D, dt_bias (H,); z (batch, T, H, P) or None; T must
    equal rs.T. Returns y (batch, T, H, P) in ``compute_dtype`` (zero on padding rows),
    must_write (batch,) bool (pnat + T > W; False on padding rows) and the NEW ReplayState (the
    input is not mutated): write rows get a new checkpoint, every real row gets its T new
    tokens at ring rows (ring_start + pnat + i) mod L; padding rows are untouched. Bookkeeping
    (ring_start, pnat) changes only in `replay_commit`. ``formulation``: see the module docstring.
    """
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}; allowed: {', '.join(ROUNDINGS)}")
    if formulation not in FORMULATIONS:
        raise ValueError(f"unknown formulation {formulation!r}; allowed: {', '.join(FORMULATIONS)}")
    batch, T, H, P, G, N = _check_shapes(x, dt_raw, A, B, C, D, dt_bias, z)
    _check_ring(rs, H, P, G, N, T)
    dev, cd = rs.ckpt.data.device, compute_dtype
    slot_idx = _as_index(slot_idx, (batch,), "slot_idx", dev)
    _check_slots_in_pool(slot_idx, rs.n_slots, "slot_idx")
    rows = (slot_idx >= 0).nonzero().squeeze(1)
    y = torch.zeros((batch, T, H, P), dtype=cd, device=dev)
    must_write = torch.zeros((batch,), dtype=torch.bool, device=dev)
    new = rs.clone()
    if rows.numel() == 0:
        return y, must_write, new

    W, L = rs.window, rs.ring_len
    s = slot_idx[rows]
    pnat, start = rs.pnat[s], rs.ring_start[s]
    # Read rows (ring_start + j, j < pnat) and written rows (ring_start + pnat + i, i < T) are
    # disjoint mod L exactly when pnat + T <= L: the invariant that keeps the ring race-free.
    if bool((pnat + T > L).any()):
        raise AssertionError(f"ring overlap: pnat + T > L = {L} (pnat must stay <= W = {W})")

    def sel(t: torch.Tensor) -> torch.Tensor:
        return t.to(dev).index_select(0, rows)

    hg = _group_of_head(H, G, dev)
    Ac, Dc = A.to(device=dev, dtype=cd), D.to(device=dev, dtype=cd)
    # New tokens as the history will hold them (see module docstring), then in compute dtype.
    x_st = sel(x).to(rs.hist_x.dtype)
    B_st = sel(B).to(rs.hist_B.dtype)
    dt_st = softplus_thresholded(sel(dt_raw).to(cd) + dt_bias.to(device=dev, dtype=cd)).to(rs.hist_dt.dtype)
    xn, Bn, dtn = x_st.to(cd), B_st.to(cd).index_select(2, hg), dt_st.to(cd)
    Cn = sel(C).to(cd).index_select(2, hg)

    hx, hB, hdt = _history(rs, s, hg, cd)
    S_ckpt = dequantize(rs.ckpt[s], cd)
    mw = pnat + T > W
    if formulation == "auto":
        rect = ~mw
    else:
        rect = torch.full_like(mw, formulation == "rectangle")

    n = len(s)
    S_fold = torch.zeros_like(S_ckpt)
    f = (mw | ~rect).nonzero().squeeze(1)  # rows that need S'
    if f.numel():
        S_fold[f] = _fold(S_ckpt[f], hx[f], hB[f], hdt[f], Ac)
    y_real = torch.empty((n, T, H, P), dtype=cd, device=dev)
    r = rect.nonzero().squeeze(1)
    if r.numel():  # rectangle: S_ckpt over history + new tokens (CB is T x (W + T), masked to pnat + T)
        y_real[r] = _cb_outputs(
            S_ckpt[r], torch.cat([hx[r], xn[r]], 1), torch.cat([hB[r], Bn[r]], 1),
            torch.cat([hdt[r], dtn[r]], 1), Cn[r], Ac,
        )
    o = (~rect).nonzero().squeeze(1)
    if o.numel():  # fold then output: S' (unrounded) over the new tokens (CB is T x T)
        y_real[o] = _cb_outputs(S_fold[o], xn[o], Bn[o], dtn[o], Cn[o], Ac)
    y_real = y_real + Dc[:, None] * xn
    if z is not None:
        zz = sel(z).to(cd)
        y_real = y_real * (zz * torch.sigmoid(zz))
    y[rows] = y_real
    must_write[rows] = mw

    w = mw.nonzero().squeeze(1)
    if w.numel():
        ws = s[w]
        uniform = sr_uniform(seed, ws, step, (H, P, N)).to(dev) if rounding == "sr" else None
        new.ckpt[ws] = quantize(S_fold[w], rs.ckpt.fmt, rounding, uniform)
    wrow = (start[:, None] + pnat[:, None] + torch.arange(T, device=dev)[None, :]) % L  # (n, T)
    new.hist_x[s[:, None], wrow] = x_st
    new.hist_B[s[:, None], wrow] = B_st
    new.hist_dt[s[:, None], wrow] = dt_st
    return y, must_write, new


def replay_commit(
    rs: ReplayState, slot_idx: torch.Tensor, accepted: torch.Tensor, must_write: torch.Tensor
) -> ReplayState:
    """Bookkeeping after verification (docs/spec.md §5): write rows ring_start = (ring_start + pnat) mod L,
    pnat = k; nowrite rows pnat += k. Padding rows untouched.

    Shapes: slot_idx (batch,); accepted (batch,) integer k in [1, T] for real rows (ignored on
    padding); must_write (batch,) bool as returned by `replay_step` (it must match pnat + T > W:
    commit runs on the same bookkeeping the step saw). Returns the NEW ReplayState.
    """
    rs.validate()
    dev = rs.ckpt.data.device
    batch = slot_idx.shape[0] if isinstance(slot_idx, torch.Tensor) else len(slot_idx)
    slot_idx = _as_index(slot_idx, (batch,), "slot_idx", dev)
    _check_slots_in_pool(slot_idx, rs.n_slots, "slot_idx")
    accepted = _as_index(accepted, (batch,), "accepted", dev)
    if not isinstance(must_write, torch.Tensor) or must_write.dtype != torch.bool:
        raise ValueError(f"must_write must be a bool tensor; got {type(must_write).__name__}")
    if must_write.shape != (batch,):
        raise ValueError(f"must_write must be a bool tensor of shape ({batch},)")
    rows = (slot_idx >= 0).nonzero().squeeze(1)
    new = rs.clone()
    if rows.numel() == 0:
        return new
    s, k, mw = slot_idx[rows], accepted[rows], must_write.to(dev)[rows]
    if bool(((k < 1) | (k > rs.T)).any()):
        raise ValueError(f"accepted must lie in [1, T={rs.T}] for real rows")
    pnat, start = rs.pnat[s], rs.ring_start[s]
    if not torch.equal(mw, pnat + rs.T > rs.window):
        raise ValueError("must_write does not match pnat + T > W for these slots (commit out of order?)")
    new.ring_start[s] = torch.where(mw, (start + pnat) % rs.ring_len, start)
    new.pnat[s] = torch.where(mw, k, pnat + k)
    return new


def replay_implied_state(
    rs: ReplayState, slot_idx: torch.Tensor, A: torch.Tensor, *, compute_dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """The true current state of each row's slot (docs/spec.md §5): dequantized S_ckpt followed by the
    pnat history tokens (a fold, no rounding).

    Shapes: slot_idx (batch,) (negative = padding); A (H,). Returns (batch, H, P, N) in
    ``compute_dtype``, zero on padding rows.
    """
    rs.validate()
    n_slots, H, P, N = rs.ckpt.shape
    dev = rs.ckpt.data.device
    if A.shape != (H,):
        raise ValueError(f"A must be (H,) = ({H},); got {tuple(A.shape)}")
    batch = slot_idx.shape[0] if isinstance(slot_idx, torch.Tensor) else len(slot_idx)
    slot_idx = _as_index(slot_idx, (batch,), "slot_idx", dev)
    _check_slots_in_pool(slot_idx, n_slots, "slot_idx")
    out = torch.zeros((batch, H, P, N), dtype=compute_dtype, device=dev)
    rows = (slot_idx >= 0).nonzero().squeeze(1)
    if rows.numel() == 0:
        return out
    s = slot_idx[rows]
    hg = _group_of_head(H, rs.hist_B.shape[2], dev)
    hx, hB, hdt = _history(rs, s, hg, compute_dtype)
    S_ckpt = dequantize(rs.ckpt[s], compute_dtype)
    out[rows] = _fold(S_ckpt, hx, hB, hdt, A.to(device=dev, dtype=compute_dtype))
    return out
