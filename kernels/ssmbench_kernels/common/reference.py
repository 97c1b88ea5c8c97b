"""Helpers shared by the references: padding masks and slot validation (docs/spec.md §3)."""

from __future__ import annotations

import torch


def check_slots(slot_idx: torch.Tensor, name: str = "slot_idx") -> None:
    """Raise ValueError when two real (>= 0) rows share a slot: they would race (docs/spec.md §3)."""
    real = slot_idx[slot_idx >= 0]
    if real.numel() != torch.unique(real).numel():
        values, counts = torch.unique(real, return_counts=True)
        dup = values[counts > 1].tolist()
        raise ValueError(f"{name}: duplicate slot indices {dup[:8]} among real rows (they would race)")


def softplus_thresholded(u: torch.Tensor, threshold: float = 20.0) -> torch.Tensor:
    """softplus(u) = u if u > threshold else log1p(exp(u)); the branch is selected before exp
    so a large u never produces inf * 0 (docs/spec.md §4, §9)."""
    safe = torch.where(u > threshold, torch.zeros_like(u), u)
    return torch.where(u > threshold, u, torch.log1p(torch.exp(safe)))
