"""The inputs of a long decode (docs/accuracy.md): the case's layer parameters and start state
(the family's workload builder), a quarter of the heads made slow-decay, and per step fresh
activations and an acceptance count drawn from the case's law, from one seeded generator on the
device (no host round trip per step).
"""

from __future__ import annotations

import math

import torch

from ssmbench.families.common import ACT_DTYPES, case_generator
from ssmbench.families.mamba2 import Mamba2Workload, make_mamba2_workload
from ssmbench.spec.accept import k_distribution
from ssmbench.spec.case import Case

SLOW_EVERY = 4
"""Every SLOW_EVERY-th head (0, 4, ...) is a slow-decay head."""
SLOW_A = (1e-3, 1e-2)
"""|A| of the slow heads, log-uniform: with dt in [1e-3, 1e-1], A*dt is in [-1e-3, -1e-6], a
decay within 1e-3 of 1 per token, where rounding errors are not forgotten and drift shows."""


def slow_heads(nheads: int, device: torch.device | str) -> torch.Tensor:
    """(H,) bool: the slow-decay heads (at least head 0)."""
    return torch.arange(nheads, device=device) % SLOW_EVERY == 0


def make_setup(case: Case, device: torch.device | str) -> Mamba2Workload:
    """The case's workload (parameters, start state, direct slots) with the slow heads' A set
    near 0; its dt_raw / z / accepted are replaced by `InputStream.next` every step."""
    wl = make_mamba2_workload(case, device)
    slow = slow_heads(case.shape.nheads, device)
    gen = case_generator(case, "accuracy-slow")
    lo, hi = math.log(SLOW_A[0]), math.log(SLOW_A[1])
    a = -torch.exp(lo + (hi - lo) * torch.rand(case.shape.nheads, generator=gen, dtype=torch.float64))
    wl.A = torch.where(slow, a.to(device=device, dtype=torch.float32), wl.A).contiguous()
    return wl


class InputStream:
    """Fresh inputs per step, written into the workload: the conv output (x | B | C after the
    conv's SiLU, act dtype), dt_raw (0.3 N(0,1), as the workload draws it), z (when the case has
    the gate) and the accepted count k (the case's law; fixed laws cycle 1..T). The conv head is
    left out: its state is an exact copy in the act dtype, so it carries no drift."""

    def __init__(self, case: Case, wl: Mamba2Workload, device: torch.device | str) -> None:
        self.case, self.wl = case, wl
        self.device = torch.device(device)
        self.gen = case_generator(case, "accuracy-stream", self.device)
        self.act = ACT_DTYPES[case.act_dtype]
        s, b, T = case.shape, case.batch, case.T
        self.rows = b * T
        self.conv_dim = s.conv_dim
        self.hp = s.nheads * s.head_dim
        self.fixed = case.accept.kind == "fixed"
        if self.fixed:
            self.k_fixed = (torch.arange(b, device=self.device) % T + 1).to(torch.int64)
        else:
            self.pk = k_distribution(case.accept, T).to(self.device)

    def next(self) -> torch.Tensor:
        """Draw one step's inputs into the workload; returns the (batch*T, conv_dim) conv output."""
        wl, g, dev = self.wl, self.gen, self.device
        u = torch.randn(self.rows, self.conv_dim, generator=g, device=dev)
        conv_out = torch.nn.functional.silu(u).to(self.act)
        wl.dt_raw = (0.3 * torch.randn(self.rows, self.case.shape.nheads, generator=g, device=dev)).to(self.act)
        if wl.z is not None:
            wl.z = torch.randn(self.rows, self.hp, generator=g, device=dev).to(self.act)
        if self.fixed:
            wl.accepted = self.k_fixed
        else:
            wl.accepted = torch.multinomial(self.pk, self.case.batch, replacement=True, generator=g) + 1
        return conv_out
