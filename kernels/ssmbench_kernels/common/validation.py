"""Host-side input checks of the Triton wrappers (docs/spec.md §3).

They read index values, so each one syncs with the device: the wrappers run them only when asked
(``validate=True``) and never during CUDA-graph capture. Duplicated real slots are a caller bug
that makes two programs race on one state, so they are rejected with a ValueError.
"""

from __future__ import annotations

import torch

from ssmbench_kernels.common.reference import check_slots


def check_unique_slots(slot_idx: torch.Tensor, name: str) -> None:
    """ValueError when two real (>= 0) entries of ``slot_idx`` (any shape) are equal."""
    check_slots(slot_idx.reshape(-1), name)


def check_slot_range(slot_idx: torch.Tensor, n_slots: int, name: str) -> None:
    """ValueError when a real entry of ``slot_idx`` is not a valid pool slot."""
    if slot_idx.numel() and int(slot_idx.max()) >= n_slots:
        raise ValueError(f"{name}: slot {int(slot_idx.max())} out of range for a pool of {n_slots} slots")


def check_k_prev(k_prev: torch.Tensor, slot_idx: torch.Tensor, T: int) -> None:
    """ValueError unless every real row's accepted count of the previous step is in [1, T]."""
    real = k_prev[slot_idx >= 0]
    if real.numel() and (int(real.min()) < 1 or int(real.max()) > T):
        raise ValueError(
            f"k_prev must be in [1, T={T}] for real rows, got [{int(real.min())}, {int(real.max())}]"
        )


def check_parents(parent: torch.Tensor, batch: int, T: int) -> None:
    """ValueError unless ``parent`` is (batch, T) with ``-1 <= parent[b, t] < t`` (docs/spec.md §5; so
    ``parent[b, 0] == -1``, as the reference requires)."""
    if parent.shape != (batch, T):
        raise ValueError(f"parent must be ({batch}, {T}), got {tuple(parent.shape)}")
    t = torch.arange(T, device=parent.device).expand(batch, T)
    bad = (parent < -1) | (parent >= t)
    if bool(bad.any()):
        b, tt = (int(i) for i in bad.nonzero()[0])
        raise ValueError(f"parent[{b}, {tt}] = {int(parent[b, tt])} must be in [-1, {tt})")


def check_dst_not_other_src(src_idx: torch.Tensor, dst_idx: torch.Tensor) -> None:
    """ValueError when a real row stores into a slot that another row reads: the reader may see
    the new state (a race). A row may store into its own src slot (it reads it first)."""
    real = src_idx >= 0
    s_real = src_idx[real]
    d_real = dst_idx[real]
    if not s_real.numel():
        return
    owner = torch.arange(s_real.numel(), device=src_idx.device)
    clash = (d_real[:, :, None] == s_real[None, None, :]) & (owner[:, None, None] != owner[None, None, :])
    if bool(clash.any()):
        raise ValueError("dst_idx: a dst slot is the src slot of another row in the same batch (race)")


def check_real_dst(src_idx: torch.Tensor, dst_idx: torch.Tensor) -> None:
    """ValueError when a real row has a negative dst slot (its state would be silently dropped)."""
    if bool((dst_idx[src_idx >= 0] < 0).any()):
        raise ValueError("dst_idx: a real row has a negative dst slot")
