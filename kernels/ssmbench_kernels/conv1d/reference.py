"""Causal conv1d decode update with a draft-tolerant state (docs/spec.md §6), the front of the chain.

``conv_state[slot]`` keeps the last ``d_conv - 2 + T`` input columns of the previous step, so a
partial acceptance (k of T tokens) needs no copy: the next step starts its window at
``off = k_prev - 1``. Every kernel's conv1d is tested against `conv1d_update`; the property test
checks `conv1d_update` itself against `conv1d_full_history` (a plain causal convolution of the
accepted token history).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssmbench_kernels.common.reference import check_slots

ACTIVATIONS: tuple[str | None, ...] = (None, "silu")


def _activate(v: torch.Tensor, activation: str | None) -> torch.Tensor:
    if activation is None:
        return v
    if activation == "silu":
        return v * torch.sigmoid(v)
    raise ValueError(f"unknown activation {activation!r}; allowed: None, 'silu'")


def _check_weight(weight: torch.Tensor, bias: torch.Tensor | None, conv_dim: int) -> int:
    """Validate weight (conv_dim, d_conv) and bias (conv_dim,) or None; return d_conv."""
    if weight.dim() != 2 or weight.shape[0] != conv_dim:
        raise ValueError(f"weight must be (conv_dim={conv_dim}, d_conv), got {tuple(weight.shape)}")
    d_conv = weight.shape[1]
    if d_conv < 2:
        raise ValueError(f"d_conv must be >= 2, got {d_conv}")
    if bias is not None and tuple(bias.shape) != (conv_dim,):
        raise ValueError(f"bias must be (conv_dim={conv_dim},) or None, got {tuple(bias.shape)}")
    return d_conv


def conv1d_update(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    slot_idx: torch.Tensor,
    k_prev: torch.Tensor,
    *,
    activation: str | None = "silu",
    compute_dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One speculative decode step of the causal conv1d (docs/spec.md §6; padding and slots: docs/spec.md §3).

    Shapes: ``x`` (batch, conv_dim, T), any strides (production: a contiguous (batch*T, conv_dim)
    in_proj output viewed as (batch, T, conv_dim).transpose(1, 2)); ``conv_state`` pool
    (n_slots, conv_dim, d_conv - 2 + T); ``weight`` (conv_dim, d_conv); ``bias`` (conv_dim,) or
    None; ``slot_idx`` (batch,) int, negative = padding; ``k_prev`` (batch,) int in [1, T], the
    previous step's accepted count (1 on the first step).

    With ``off = k_prev - 1`` the row's token sequence is
    ``seq = conv_state[slot, :, off : off + d_conv - 1] ++ x[b]`` and token t's output is
    ``act(bias + sum_j weight[:, j] * seq[:, t + j])``; the new state is ``seq[:, 1:]``.

    Returns ``(out, new_conv_state)``: ``out`` (batch, conv_dim, T) in ``compute_dtype`` (zeros on
    padding rows); ``new_conv_state`` a new pool tensor (the input is not mutated) of
    ``conv_state``'s dtype with the real rows' slots replaced. State columns are copied, input
    columns cast from ``x``'s dtype to the pool's dtype (exact when they match, as in production).
    """
    if x.dim() != 3:
        raise ValueError(f"x must be (batch, conv_dim, T), got {tuple(x.shape)}")
    batch, conv_dim, T = x.shape
    if T < 1:
        raise ValueError("T must be >= 1")
    d_conv = _check_weight(weight, bias, conv_dim)
    width = d_conv - 2 + T
    if conv_state.dim() != 3 or conv_state.shape[1:] != (conv_dim, width):
        raise ValueError(
            f"conv_state must be (n_slots, conv_dim={conv_dim}, d_conv-2+T={width}), "
            f"got {tuple(conv_state.shape)}"
        )
    if tuple(slot_idx.shape) != (batch,) or tuple(k_prev.shape) != (batch,):
        raise ValueError(f"slot_idx and k_prev must be (batch={batch},)")
    if slot_idx.is_floating_point() or k_prev.is_floating_point():
        raise ValueError("slot_idx and k_prev must be integer tensors")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; allowed: None, 'silu'")
    n_slots = conv_state.shape[0]
    device = conv_state.device
    slot_idx = slot_idx.to(device=device, dtype=torch.int64)
    k_prev = k_prev.to(device=device, dtype=torch.int64)
    real = slot_idx >= 0
    if bool((slot_idx[real] >= n_slots).any()):
        raise ValueError(f"slot_idx has slots >= n_slots={n_slots}")
    check_slots(slot_idx)
    k_real = k_prev[real]
    if bool(((k_real < 1) | (k_real > T)).any()):
        raise ValueError(f"k_prev must lie in [1, T={T}] for real rows, got {k_real.tolist()}")

    # Old columns of each row's window: conv_state[slot, :, off : off + d_conv - 1].
    slot_safe = torch.where(real, slot_idx, torch.zeros_like(slot_idx))
    off = torch.where(real, k_prev - 1, torch.zeros_like(k_prev))
    cols = off[:, None] + torch.arange(d_conv - 1, device=device)  # (batch, d_conv - 1)
    rows = conv_state[slot_safe]  # (batch, conv_dim, width), a copy
    old = torch.gather(rows, 2, cols[:, None, :].expand(batch, conv_dim, d_conv - 1))
    x_dev = x.to(device)

    seq = torch.cat([old.to(compute_dtype), x_dev.to(compute_dtype)], dim=2)  # (batch, conv_dim, d_conv-1+T)
    windows = seq.unfold(2, d_conv, 1)  # (batch, conv_dim, T, d_conv)
    acc = torch.einsum("bctj,cj->bct", windows, weight.to(device=device, dtype=compute_dtype))
    if bias is not None:
        acc = acc + bias.to(device=device, dtype=compute_dtype)[None, :, None]
    out = _activate(acc, activation)
    out = torch.where(real[:, None, None], out, torch.zeros_like(out))

    new_state = conv_state.clone()
    new_rows = torch.cat([old[:, :, 1:], x_dev.to(conv_state.dtype)], dim=2)  # (batch, conv_dim, width)
    new_state[slot_idx[real]] = new_rows[real]
    return out, new_state


def conv1d_full_history(
    x_hist: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str | None = "silu",
    *,
    compute_dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Causal conv1d over a whole token history with zero left padding (docs/spec.md §6 ground truth).

    ``x_hist`` (..., conv_dim, L), ``weight`` (conv_dim, d_conv), ``bias`` (conv_dim,) or None;
    returns (..., conv_dim, L) in ``compute_dtype``: ``out[:, t] = act(bias + sum_j weight[:, j] *
    x[:, t - d_conv + 1 + j])`` with x = 0 before the first token. Deliberately computed another
    way (grouped ``F.conv1d``) than `conv1d_update`, so the property test compares two paths.
    """
    if x_hist.dim() < 2:
        raise ValueError(f"x_hist must be (..., conv_dim, L), got {tuple(x_hist.shape)}")
    conv_dim, length = x_hist.shape[-2:]
    d_conv = _check_weight(weight, bias, conv_dim)
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; allowed: None, 'silu'")
    lead = x_hist.shape[:-2]
    xs = x_hist.reshape(-1, conv_dim, length).to(compute_dtype)
    w = weight.to(device=xs.device, dtype=compute_dtype)[:, None, :]
    b = None if bias is None else bias.to(device=xs.device, dtype=compute_dtype)
    out = F.conv1d(F.pad(xs, (d_conv - 1, 0)), w, b, groups=conv_dim)
    return _activate(out, activation).reshape(*lead, conv_dim, length)
