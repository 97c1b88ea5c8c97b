"""The Gated DeltaNet chain as the harness sees it (docs/spec.md §9): conv1d (no bias) -> GDN decode.
Everything a change to the family touches on the harness side lives here: the workload builder,
the stored pool every impl of the family starts from, the chain's byte model and the reference
step verification judges against. The kernels and their fp64 references live in
kernels/ssmbench_kernels/{conv1d,gdn}/.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ssmbench.families.common import (
    ACT_DTYPES,
    INDEX_BYTES,
    Workload,
    act_bytes,
    case_generator,
    conv1d_bytes,
    conv_params,
    draw_slots,
    inverse_softplus,
    real_rows,
    slot_pool,
    state_bytes,
    to_device,
    uniform,
)
from ssmbench.spec.accept import draw_k
from ssmbench.spec.case import Case
from ssmbench.spec.presets import GDNShape
from ssmbench_kernels.gdn.reference import gdn_recurrence
from ssmbench_kernels.storage.reference import StoredState

FAMILY = "gdn"
CONV_HAS_BIAS = False


# ---------------------------------------------------------------------------------------------
# The workload
# ---------------------------------------------------------------------------------------------

@dataclass
class GDNWorkload(Workload):
    """One Gated DeltaNet decode step (docs/spec.md §9). ``start_state`` is (batch, HV, V, K) fp32;
    the conv has no bias."""

    shape: GDNShape
    qkv: torch.Tensor  # (batch*T, conv_dim) act: conv input
    a: torch.Tensor  # (batch*T, HV) act
    b: torch.Tensor  # (batch*T, HV) act
    A_log: torch.Tensor  # (HV,) fp32
    dt_bias: torch.Tensor  # (HV,) fp32
    read_idx: torch.Tensor  # (batch,) int64, -1 = padding
    write_idx: torch.Tensor  # (batch,) int64 (== read_idx unless split)

    @property
    def read_slots(self) -> torch.Tensor:
        return self.read_idx

    def views(self, conv_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k (batch, T, H, K) and v (batch, T, HV, V) as views of a (batch*T, conv_dim) tensor."""
        s, bsz, T = self.shape, self.batch, self.case.T
        hk = s.num_k_heads * s.head_k_dim
        q = conv_out[:, :hk].unflatten(0, (bsz, T)).unflatten(-1, (s.num_k_heads, s.head_k_dim))
        k = conv_out[:, hk:2 * hk].unflatten(0, (bsz, T)).unflatten(-1, (s.num_k_heads, s.head_k_dim))
        v = conv_out[:, 2 * hk:].unflatten(0, (bsz, T)).unflatten(-1, (s.num_v_heads, s.head_v_dim))
        return q, k, v

    def conv_input(self) -> torch.Tensor:
        return self.qkv.unflatten(0, (self.batch, self.case.T)).transpose(1, 2)


def make_gdn_workload(case: Case, device: torch.device | str = "cpu") -> GDNWorkload:
    """Draw a GDN step: A_log ~ U(0, log 16), dt_bias so softplus lands in [1e-3, 1e-1]."""
    s: GDNShape = case.shape  # type: ignore[assignment]
    gen = case_generator(case)
    act = ACT_DTYPES[case.act_dtype]
    bt = case.batch * case.T
    read_idx, n_slots = draw_slots(case, gen)
    write_idx = read_idx.clone()
    if case.pool == "split":
        free = torch.ones(n_slots, dtype=torch.bool)
        free[read_idx[read_idx >= 0]] = False
        choices = torch.nonzero(free).flatten()
        write_idx = choices[torch.randperm(len(choices), generator=gen)[:case.batch]]
        write_idx[read_idx < 0] = -1
    # The two large buffers (conv state pool, start states: GBs at batch 512, 15 s of CPU draws
    # on the 2-core CI machine) are drawn on the workload's device by their own generators (ms on
    # a GPU); the rest keeps the case's CPU draw sequence (docs/design.md, Workloads).
    weight, conv_state = conv_params(gen, s.conv_dim, s.d_conv, n_slots, case.T, act,
                                     state_gen=case_generator(case, "conv_state", device))
    dt_target = torch.exp(uniform(gen, (s.num_v_heads,), math.log(1e-3), math.log(1e-1)))
    wl = GDNWorkload(
        case=case, shape=s,
        qkv=torch.randn(bt, s.conv_dim, generator=gen, dtype=torch.float64).to(act),
        a=(0.3 * torch.randn(bt, s.num_v_heads, generator=gen, dtype=torch.float64)).to(act),
        b=torch.randn(bt, s.num_v_heads, generator=gen, dtype=torch.float64).to(act),
        conv_weight=weight, conv_state=conv_state,
        A_log=uniform(gen, (s.num_v_heads,), 0.0, math.log(16.0)).float(),
        dt_bias=inverse_softplus(dt_target).float(),
        read_idx=read_idx, write_idx=write_idx, n_slots=n_slots,
        k_prev=draw_k(case.accept, case.T, case.batch, gen) if case.accept.kind != "fixed"
        else torch.ones(case.batch, dtype=torch.int64),
        start_state=0.5 * torch.randn(case.batch, s.num_v_heads, s.head_v_dim, s.head_k_dim,
                                      generator=case_generator(case, "start_state", device), device=device),
        accepted=draw_k(case.accept, case.T, case.batch, gen),
    )
    return to_device(wl, device)


make_workload = make_gdn_workload


# ---------------------------------------------------------------------------------------------
# The stored pool every impl starts from
# ---------------------------------------------------------------------------------------------

def row_shape(workload: GDNWorkload) -> tuple[int, int, int]:
    """One slot of the state pool: (HV, V, K)."""
    s = workload.shape
    return (s.num_v_heads, s.head_v_dim, s.head_k_dim)


def state_pool(case: Case, workload: GDNWorkload) -> StoredState:
    """docs/spec.md §9's pool: ``n_slots`` random states in the case's format with each row's
    start state stored at its read slot (the step writes write_idx)."""
    return slot_pool(case, workload, workload.n_slots, row_shape(workload), workload.qkv.device)


def state_after(workload: GDNWorkload, pool_data: torch.Tensor,
                intermediate: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The state an impl's step leaves for verification, in fp32, and the accepted counts it stands
    for: with per-token states (``intermediate``, ``(batch, T, HV, V, K)``) each row's state at its
    accepted token, else the final state at its write slot (all T accepted); padding rows zero."""
    rows = torch.arange(workload.batch, device=pool_data.device)
    if intermediate is not None:
        after, accepted = intermediate[rows, workload.accepted - 1].float(), workload.accepted
    else:
        after = pool_data.index_select(0, workload.write_idx.clamp(min=0)).float()
        accepted = torch.full_like(workload.accepted, workload.case.T)
    after[workload.read_idx < 0] = 0
    return after, accepted


# ---------------------------------------------------------------------------------------------
# The byte model (docs/spec.md §10)
# ---------------------------------------------------------------------------------------------

def gdn_bytes(case: Case, n_real: int) -> int:
    """GDN chain (docs/spec.md §9): conv1d (no bias) then the decode kernel, which per real row reads one
    state and writes T per-token states (``intermediate``) and/or one final state
    (``write_final``), and reads its q, k, v, a, b; writes o for every row (zeros for padding);
    A_log and dt_bias once; read (and write) indices for every row."""
    s, act, T, b = case.shape, act_bytes(case), case.T, case.batch
    one_state = state_bytes(case.state_dtype, s.num_v_heads * s.head_v_dim, s.head_k_dim)
    write_final = bool(case.option("write_final", True))
    stores = (T if case.option("intermediate", False) else 0) + (1 if write_final else 0)
    inputs = T * (s.conv_dim + 2 * s.num_v_heads) * act
    o = T * s.num_v_heads * s.head_v_dim * act
    indices = (2 if write_final else 1) * INDEX_BYTES
    decode = n_real * ((1 + stores) * one_state + inputs) + b * (o + indices) + 2 * s.num_v_heads * 4
    return conv1d_bytes(case, s.conv_dim, s.d_conv, CONV_HAS_BIAS, n_real) + decode


def chain_bytes(case: Case, workload: GDNWorkload | None = None) -> int:
    """conv1d -> GDN decode, counting the workload's real rows (all rows without one)."""
    return gdn_bytes(case, real_rows(case, workload))


# ---------------------------------------------------------------------------------------------
# The reference step
# ---------------------------------------------------------------------------------------------

def step_inputs(workload: GDNWorkload, conv_out: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """q, k, v, a, b of the step as (batch, T, ...) views, from a (batch*T, conv_dim) conv output."""
    q, k, v = workload.views(conv_out)
    bt = (workload.batch, workload.case.T)
    return q, k, v, workload.a.unflatten(0, bt), workload.b.unflatten(0, bt)


def reference_step(workload: GDNWorkload, conv_out: torch.Tensor,
                   start_state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp64 outputs (batch, T, HV, V) and per-token states (batch, T, HV, V, K) from
    ``start_state``; padding rows are not zeroed here."""
    q, k, v, a, b = step_inputs(workload, conv_out)
    return gdn_recurrence(start_state, q, k, v, a, b, workload.A_log, workload.dt_bias,
                          scale=workload.case.option("scale"))
