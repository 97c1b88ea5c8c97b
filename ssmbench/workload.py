"""Workloads: the inputs of one decode step of a case, in production form (docs/spec.md §6 layout).

A workload holds what every impl of the case shares: the in_proj outputs, layer parameters,
slot indices, the conv state pool, the true starting state of every row and the acceptance
outcome. Each impl builds its own state representation (pool in its storage format, history
ring, ...) from these. Everything is drawn from a generator seeded by (spec seed, case id), so a
case is reproducible; values look like a trained model's, never zeros.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

from ssmbench.accept import draw_k, draw_pnat
from ssmbench.case import Case
from ssmbench.presets import GDNShape, Mamba2Shape

ACT_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
POOL_FACTOR = 4
"""Pool modes other than `direct` index a state pool this many times the batch."""


def case_generator(case: Case, salt: str = "", device: torch.device | str = "cpu") -> torch.Generator:
    """A generator keyed by the spec seed and the case id: same case, same numbers (per device:
    large buffers are drawn where they live, so a CPU and a CUDA run differ in those)."""
    digest = hashlib.sha256(f"{case.seed}:{case.id}:{salt}".encode()).digest()
    gen = torch.Generator(device=device)
    gen.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return gen


def _uniform(gen: torch.Generator, shape: tuple[int, ...], lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64)


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


def draw_slots(case: Case, gen: torch.Generator, n_rows: int | None = None) -> tuple[torch.Tensor, int]:
    """Read slots (batch,) int64 and the pool size for the case's pool mode (docs/spec.md §3).

    direct: slot = row; pool / split: a random injection into a pool POOL_FACTOR x the batch;
    padded: as pool, with about a quarter of the rows (at least one when batch > 1) set to -1.
    """
    batch = case.batch if n_rows is None else n_rows
    if case.pool == "direct":
        return torch.arange(batch, dtype=torch.int64), batch
    n_slots = POOL_FACTOR * batch
    slots = torch.randperm(n_slots, generator=gen)[:batch].to(torch.int64)
    if case.pool == "padded" and batch > 1:
        n_pad = max(1, batch // 4)
        rows = torch.randperm(batch, generator=gen)[:n_pad]
        slots[rows] = -1
    return slots, n_slots


@dataclass
class Mamba2Workload:
    """One Mamba-2 decode step (docs/spec.md §4-6). Activations are (batch*T, ...) row-major, token-minor
    within a request, exactly as in_proj writes them."""

    case: Case
    shape: Mamba2Shape
    xbc: torch.Tensor  # (batch*T, conv_dim) act: conv input (in_proj output slice)
    z: torch.Tensor | None  # (batch*T, H*P) act
    dt_raw: torch.Tensor  # (batch*T, H) act
    conv_weight: torch.Tensor  # (conv_dim, d_conv) act
    conv_bias: torch.Tensor  # (conv_dim,) act
    conv_state: torch.Tensor  # (n_slots, conv_dim, d_conv - 2 + T) act
    A: torch.Tensor  # (H,) fp32, negative
    D: torch.Tensor  # (H,) fp32
    dt_bias: torch.Tensor  # (H,) fp32
    slot_idx: torch.Tensor  # (batch,) int64, -1 = padding
    n_slots: int
    k_prev: torch.Tensor  # (batch,) int64, accepted count of the previous step (conv offset)
    start_state: torch.Tensor  # (batch, H, P, N) fp32: each row's true state before the step
    accepted: torch.Tensor  # (batch,) int64: tokens accepted after this step's verification
    pnat: torch.Tensor | None  # (batch,) int64 for replay cases: history tokens not yet folded
    parent: torch.Tensor | None  # (batch, T) int64 tree parents, None = linear chain

    @property
    def batch(self) -> int:
        return self.case.batch

    @property
    def read_slots(self) -> torch.Tensor:
        """The slot each row reads (< 0: padding), under the name both families share."""
        return self.slot_idx

    def views(self, conv_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (batch, T, H, P), B and C (batch, T, G, N) as views of a (batch*T, conv_dim) tensor."""
        s, b, T = self.shape, self.batch, self.case.T
        hp, gn = s.nheads * s.head_dim, s.ngroups * s.dstate
        x = conv_out[:, :hp].unflatten(0, (b, T)).unflatten(-1, (s.nheads, s.head_dim))
        B = conv_out[:, hp:hp + gn].unflatten(0, (b, T)).unflatten(-1, (s.ngroups, s.dstate))
        C = conv_out[:, hp + gn:].unflatten(0, (b, T)).unflatten(-1, (s.ngroups, s.dstate))
        return x, B, C

    def conv_input(self) -> torch.Tensor:
        """The conv input as the kernels see it: (batch, conv_dim, T), a strided view."""
        return self.xbc.unflatten(0, (self.batch, self.case.T)).transpose(1, 2)


@dataclass
class GDNWorkload:
    """One Gated DeltaNet decode step (docs/spec.md §9)."""

    case: Case
    shape: GDNShape
    qkv: torch.Tensor  # (batch*T, conv_dim) act: conv input
    a: torch.Tensor  # (batch*T, HV) act
    b: torch.Tensor  # (batch*T, HV) act
    conv_weight: torch.Tensor  # (conv_dim, d_conv) act (no bias in GDN)
    conv_state: torch.Tensor  # (n_slots, conv_dim, d_conv - 2 + T) act
    A_log: torch.Tensor  # (HV,) fp32
    dt_bias: torch.Tensor  # (HV,) fp32
    read_idx: torch.Tensor  # (batch,) int64, -1 = padding
    write_idx: torch.Tensor  # (batch,) int64 (== read_idx unless split)
    n_slots: int
    k_prev: torch.Tensor  # (batch,) int64
    start_state: torch.Tensor  # (batch, HV, V, K) fp32
    accepted: torch.Tensor  # (batch,) int64

    @property
    def batch(self) -> int:
        return self.case.batch

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


def _conv_params(gen, conv_dim: int, d_conv: int, n_slots: int, T: int, act) -> tuple:
    weight = (torch.randn(conv_dim, d_conv, generator=gen, dtype=torch.float64) / math.sqrt(d_conv)).to(act)
    state = torch.randn(n_slots, conv_dim, d_conv - 2 + T, generator=gen, dtype=torch.float64).to(act)
    return weight, state


def make_mamba2_workload(case: Case, device: torch.device | str = "cpu") -> Mamba2Workload:
    """Draw a Mamba-2 step: A = -exp(U(0, log 16)), dt_bias so that softplus(dt) lands in
    [1e-3, 1e-1], states ~ N(0, 1) scaled per head, inputs ~ N(0, 1)."""
    s: Mamba2Shape = case.shape  # type: ignore[assignment]
    gen = case_generator(case)
    act = ACT_DTYPES[case.act_dtype]
    bt = case.batch * case.T
    slot_idx, n_slots = draw_slots(case, gen)
    weight, conv_state = _conv_params(gen, s.conv_dim, s.d_conv, n_slots, case.T, act)
    dt_target = torch.exp(_uniform(gen, (s.nheads,), math.log(1e-3), math.log(1e-1)))
    tree = bool(case.option("tree", False))
    parent = _random_tree(case.batch, case.T, gen) if tree else None
    window = case.window if case.window is not None else case.T
    wl = Mamba2Workload(
        case=case, shape=s,
        xbc=torch.randn(bt, s.conv_dim, generator=gen, dtype=torch.float64).to(act),
        z=torch.randn(bt, s.nheads * s.head_dim, generator=gen).to(act) if case.option("z_gate") else None,
        dt_raw=(0.3 * torch.randn(bt, s.nheads, generator=gen, dtype=torch.float64)).to(act),
        conv_weight=weight,
        conv_bias=(0.1 * torch.randn(s.conv_dim, generator=gen, dtype=torch.float64)).to(act),
        conv_state=conv_state,
        A=(-torch.exp(_uniform(gen, (s.nheads,), 0.0, math.log(16.0)))).float(),
        D=_uniform(gen, (s.nheads,), 0.5, 1.5).float(),
        dt_bias=inverse_softplus(dt_target).float(),
        slot_idx=slot_idx, n_slots=n_slots,
        k_prev=draw_k(case.accept, case.T, case.batch, gen) if case.accept.kind != "fixed"
        else torch.ones(case.batch, dtype=torch.int64),
        start_state=torch.randn(case.batch, s.nheads, s.head_dim, s.dstate, generator=gen).float(),
        accepted=draw_k(case.accept, case.T, case.batch, gen),
        pnat=draw_pnat(case.accept, case.T, window, case.batch, gen) if case.window is not None else None,
        parent=parent,
    )
    return _to_device(wl, device)


def _random_tree(batch: int, T: int, gen: torch.Generator) -> torch.Tensor:
    """parent[b, t] in [-1, t) with token 0 a root (-1)."""
    parent = torch.full((batch, T), -1, dtype=torch.int64)
    for t in range(1, T):
        parent[:, t] = torch.randint(-1, t, (batch,), generator=gen)
    return parent


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
    weight, conv_state = _conv_params(gen, s.conv_dim, s.d_conv, n_slots, case.T, act)
    dt_target = torch.exp(_uniform(gen, (s.num_v_heads,), math.log(1e-3), math.log(1e-1)))
    wl = GDNWorkload(
        case=case, shape=s,
        qkv=torch.randn(bt, s.conv_dim, generator=gen, dtype=torch.float64).to(act),
        a=(0.3 * torch.randn(bt, s.num_v_heads, generator=gen, dtype=torch.float64)).to(act),
        b=torch.randn(bt, s.num_v_heads, generator=gen, dtype=torch.float64).to(act),
        conv_weight=weight, conv_state=conv_state,
        A_log=_uniform(gen, (s.num_v_heads,), 0.0, math.log(16.0)).float(),
        dt_bias=inverse_softplus(dt_target).float(),
        read_idx=read_idx, write_idx=write_idx, n_slots=n_slots,
        k_prev=draw_k(case.accept, case.T, case.batch, gen) if case.accept.kind != "fixed"
        else torch.ones(case.batch, dtype=torch.int64),
        start_state=(0.5 * torch.randn(case.batch, s.num_v_heads, s.head_v_dim, s.head_k_dim,
                                       generator=gen)).float(),
        accepted=draw_k(case.accept, case.T, case.batch, gen),
    )
    return _to_device(wl, device)


def _to_device(wl, device):
    for name, value in vars(wl).items():
        if isinstance(value, torch.Tensor):
            setattr(wl, name, value.to(device))
    return wl


def make_workload(case: Case, device: torch.device | str = "cpu") -> Mamba2Workload | GDNWorkload:
    return make_mamba2_workload(case, device) if case.family == "mamba2" else make_gdn_workload(case, device)
