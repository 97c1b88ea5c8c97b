"""Acceptance laws: k distributions and the stationary pnat distribution (docs/spec.md §10)."""

from __future__ import annotations

import torch

from ssmbench.spec.accept import k_distribution, stationary_pnat
from ssmbench.spec.case import DEFAULT_ACCEPT, AcceptLaw


def simulate_pnat(law: AcceptLaw, T: int, window: int, steps: int, seed: int = 0) -> torch.Tensor:
    """Monte Carlo of the docs/spec.md §5 bookkeeping, an independent path to the same distribution."""
    gen = torch.Generator().manual_seed(seed)
    ks = torch.multinomial(k_distribution(law, T), steps, replacement=True, generator=gen) + 1
    counts = torch.zeros(window + 1, dtype=torch.float64)
    pnat = 0
    for k in ks.tolist():
        counts[pnat] += 1
        pnat = k if pnat + T > window else pnat + k
    return counts / steps


def test_rate_law_is_geometric() -> None:
    p = k_distribution(AcceptLaw("rate", (0.5,)), 4)
    assert torch.allclose(p, torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64))


def test_stationary_matches_simulation() -> None:
    for law, T, W in [(DEFAULT_ACCEPT, 6, 16), (DEFAULT_ACCEPT, 6, 6), (AcceptLaw("rate", (0.7,)), 4, 16)]:
        exact = stationary_pnat(law, T, W)
        sim = simulate_pnat(law, T, W, 40000)
        assert abs(exact.sum().item() - 1) < 1e-12
        # 40000 correlated steps: allow 0.02 absolute per bin
        assert (exact - sim).abs().max().item() < 0.02, (exact, sim)


def test_window_T_writes_every_step() -> None:
    """W = T: any pnat > 0 forces a write, so pnat is just the last k (classic replay)."""
    exact = stationary_pnat(DEFAULT_ACCEPT, 6, 6)
    assert exact[0] < 1e-3
    assert torch.allclose(exact[1:], k_distribution(DEFAULT_ACCEPT, 6), atol=1e-3)
