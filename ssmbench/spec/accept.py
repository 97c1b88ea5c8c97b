"""Acceptance laws (docs/spec.md §10): the distribution of accepted tokens k per step, and the stationary
distribution of pnat that the checkpoint-replay bookkeeping (docs/spec.md §5) settles into under it.

A benchmark that always starts from pnat = 0 measures a step that production rarely runs; the
workload draws pnat from the long-run distribution instead.
"""

from __future__ import annotations

import functools

import torch

from ssmbench.spec.case import AcceptLaw


def k_distribution(law: AcceptLaw, T: int) -> torch.Tensor:
    """P(k = j) for j = 1..T as a float64 tensor of length T (index j-1)."""
    if law.kind == "histogram":
        if len(law.values) != T:
            raise ValueError(f"acceptance histogram has {len(law.values)} bins, T={T}")
        probs = torch.tensor(law.values, dtype=torch.float64)
        return probs / probs.sum()
    if law.kind == "rate":
        p = law.values[0]
        j = torch.arange(1, T + 1, dtype=torch.float64)
        probs = p ** (j - 1) * (1 - p)
        probs[-1] = p ** (T - 1)  # every draft accepted
        return probs
    raise ValueError("a fixed-pnat law gives no k distribution")


def stationary_pnat(law: AcceptLaw, T: int, window: int, steps: int = 4096) -> torch.Tensor:
    """Long-run fraction of steps that start with pnat = 0..window (float64, length window+1).

    Bookkeeping: when pnat + T > window the step writes a checkpoint and pnat becomes k, else
    pnat grows by k. The chain starts at pnat = 0; a Cesaro average over ``steps`` steps gives
    the long-run fractions even where the chain is periodic (e.g. a single possible k).
    Remembered per (law, T, window, steps): the average costs ~30 ms and every replay case of a
    sweep asks it again (issue 18's profile: 0.5 s of 30).
    """
    return torch.tensor(_stationary_pnat(law, T, window, steps), dtype=torch.float64)


@functools.lru_cache(maxsize=256)
def _stationary_pnat(law: AcceptLaw, T: int, window: int, steps: int) -> tuple[float, ...]:
    if law.kind == "fixed":
        probs = torch.zeros(window + 1, dtype=torch.float64)
        for v in law.values:
            probs[int(v)] += 1
        return tuple((probs / probs.sum()).tolist())
    pk = k_distribution(law, T)
    n = window + 1
    trans = torch.zeros(n, n, dtype=torch.float64)
    for s in range(n):
        for k in range(1, T + 1):
            nxt = k if s + T > window else s + k
            trans[s, nxt] += pk[k - 1]
    dist = torch.zeros(n, dtype=torch.float64)
    dist[0] = 1.0
    total = torch.zeros(n, dtype=torch.float64)
    for _ in range(steps):
        dist = dist @ trans
        total += dist
    return tuple((total / steps).tolist())


def draw_k(law: AcceptLaw, T: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Accepted counts (batch,) int64 in 1..T drawn from the law (fixed laws: rate of draws
    is irrelevant, k cycles 1..T so every acceptance count is exercised)."""
    if law.kind == "fixed":
        return torch.arange(batch, dtype=torch.int64) % T + 1
    pk = k_distribution(law, T)
    return torch.multinomial(pk, batch, replacement=True, generator=generator) + 1


def draw_pnat(law: AcceptLaw, T: int, window: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Per-row pnat (batch,) int64 from the stationary distribution (fixed laws cycle their values)."""
    if law.kind == "fixed":
        values = torch.tensor([int(v) for v in law.values], dtype=torch.int64)
        return values[torch.arange(batch) % len(values)]
    probs = stationary_pnat(law, T, window)
    return torch.multinomial(probs, batch, replacement=True, generator=generator)
