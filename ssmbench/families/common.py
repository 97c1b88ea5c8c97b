"""What every harness family shares: the seeded generator, the draws and the common fields of a
workload, the stored-state pool builders, the conv1d head (its reference step and byte model) and
the byte-counting helpers. Nothing here knows a family by name: ssmbench/families/<family>.py
holds each family's own workload, pools, byte models and reference step.

Workloads hold the inputs of one decode step of a case in production form (docs/spec.md §6
layout): what every impl of the case shares (the in_proj outputs, layer parameters, slot indices,
the conv state pool, the true starting state of every row and the acceptance outcome). Each impl
builds its own state representation (pool in its storage format, history ring, ...) from these.
Everything is drawn from a generator seeded by (spec seed, case id), so a case is reproducible;
values look like a trained model's, never zeros.

Byte models (docs/spec.md §10): the unique bytes a kernel of a chain must move, per case. Every
tensor region a kernel reads or writes counts once per kernel that touches it; parameters
broadcast to all rows count once; padding rows read no state and write zero outputs. The models
are checked against ncu's measured DRAM bytes by `ssmbench validate-bytes` (docs/profile.md). A
region is counted at the granularity DRAM moves it (32-byte sectors) where a kernel's reads are
narrower than a sector: see `conv1d_bytes`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import torch

from ssmbench.spec.case import Case
from ssmbench_kernels.conv1d.reference import conv1d_update
from ssmbench_kernels.storage.reference import (
    QMAX,
    SCALED_FORMATS,
    StoredState,
    bytes_per_element,
    quantize,
    sr_uniform,
    storage_dtype,
)

ACT_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
POOL_FACTOR = 4
"""Pool modes other than `direct` index a state pool this many times the batch."""
SR_STEP = 1
"""The decode step number a checked case's stochastic rounding is keyed by."""
INDEX_BYTES = 8
DRAM_SECTOR_BYTES = 32


# ---------------------------------------------------------------------------------------------
# Draws
# ---------------------------------------------------------------------------------------------

def case_generator(case: Case, salt: str = "", device: torch.device | str = "cpu") -> torch.Generator:
    """A generator keyed by the spec seed and the case id: same case, same numbers (per device:
    large buffers are drawn where they live, so a CPU and a CUDA run differ in those)."""
    digest = hashlib.sha256(f"{case.seed}:{case.id}:{salt}".encode()).digest()
    gen = torch.Generator(device=device)
    gen.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return gen


def uniform(gen: torch.Generator, shape: tuple[int, ...], lo: float, hi: float) -> torch.Tensor:
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


def conv_params(gen: torch.Generator, conv_dim: int, d_conv: int, n_slots: int, T: int, act,
                state_gen: torch.Generator | None = None) -> tuple:
    """The conv1d weight (conv_dim, d_conv) and state pool (n_slots, conv_dim, d_conv - 2 + T).
    ``state_gen``: draw the pool with that generator where it lives (its device), not from ``gen``
    on the CPU (a family whose pool is large; `case_generator` with a salt and the device)."""
    weight = (torch.randn(conv_dim, d_conv, generator=gen, dtype=torch.float64) / math.sqrt(d_conv)).to(act)
    shape = (n_slots, conv_dim, d_conv - 2 + T)
    if state_gen is None:
        state = torch.randn(shape, generator=gen, dtype=torch.float64).to(act)
    else:
        state = torch.randn(shape, generator=state_gen, device=state_gen.device).to(act)
    return weight, state


def to_device(wl, device):
    """Every tensor field of a workload moved to ``device`` (in place; returns the workload)."""
    for name, value in vars(wl).items():
        if isinstance(value, torch.Tensor):
            setattr(wl, name, value.to(device))
    return wl


# ---------------------------------------------------------------------------------------------
# The workload's common fields
# ---------------------------------------------------------------------------------------------

@dataclass
class Workload:
    """What every family's decode step holds; a family's workload adds its activations and
    parameters, ``read_slots`` (the slot each row reads, < 0: padding), ``conv_input`` and
    ``views`` (docs/spec.md §6)."""

    case: Case
    shape: Any
    conv_weight: torch.Tensor  # (conv_dim, d_conv) act
    conv_state: torch.Tensor  # (n_slots, conv_dim, d_conv - 2 + T) act
    n_slots: int
    k_prev: torch.Tensor  # (batch,) int64, accepted count of the previous step (conv offset)
    start_state: torch.Tensor  # (batch, ...) fp32: each row's true state before the step
    accepted: torch.Tensor  # (batch,) int64: tokens accepted after this step's verification

    @property
    def batch(self) -> int:
        return self.case.batch

    def work_digest(self) -> str:
        """12 hex digits over what sets the work of this step: every integer tensor field (slots,
        accepted lengths, pnat, tree parents: drawn on the CPU generator, so identical on every
        machine) and ``n_slots``. Recorded with each result; `compare` refuses to compare two
        records of one case whose digests differ (the workload was redrawn: docs/gate.md)."""
        digest = hashlib.sha256(f"n_slots={self.n_slots}".encode())
        for name, value in sorted(vars(self).items()):
            if isinstance(value, torch.Tensor) and not value.is_floating_point():
                digest.update(f";{name}:{tuple(value.shape)}:".encode())
                digest.update(value.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
        return digest.hexdigest()[:12]


# ---------------------------------------------------------------------------------------------
# Stored-state pools
# ---------------------------------------------------------------------------------------------

def store_states(states: torch.Tensor, slots: torch.Tensor, case: Case) -> StoredState:
    """Round (batch, ...) states into the case's format, SR keyed by (seed, slot, step)."""
    uniform_ = None
    if case.rounding == "sr":
        uniform_ = sr_uniform(case.seed, slots.clamp(min=0), SR_STEP, tuple(states.shape[1:])).to(states.device)
    return quantize(states, case.state_dtype, case.rounding, uniform_)


def random_pool(n_slots: int, row_shape: tuple[int, ...], case: Case, device, salt: str) -> StoredState:
    """A pool of random states in the case's format, so a wrong slot read shows in the results.

    Drawn on the pool's device straight in the storage dtype (no fp64 temporaries): pools of the
    big cases hold billions of elements. Only the states rows start from go through `quantize`.
    """
    gen = case_generator(case, salt, device)
    shape = (n_slots, *row_shape)
    fmt = case.state_dtype
    if fmt in SCALED_FORMATS:
        scale = 0.5 + torch.rand(shape[:-1], generator=gen, device=device)
        scale = scale / QMAX[fmt]
        codes = torch.randn(shape, generator=gen, device=device).mul_(QMAX[fmt] / 4).clamp_(-QMAX[fmt], QMAX[fmt])
        data = codes.round_() if fmt == "int8" else codes
        return StoredState(data.to(storage_dtype(fmt)), scale, fmt)
    return StoredState(torch.randn(shape, generator=gen, device=device).to(storage_dtype(fmt)), None, fmt)


def slot_pool(case: Case, workload: Workload, n_slots: int, row_shape: tuple[int, ...], device) -> StoredState:
    """A `random_pool` of ``n_slots`` with each real row's start state stored at its read slot."""
    pool = random_pool(n_slots, row_shape, case, device, "pool")
    slots = workload.read_slots  # type: ignore[attr-defined]
    real = slots >= 0
    pool[slots[real]] = store_states(workload.start_state[real], slots[real], case)
    return pool


# ---------------------------------------------------------------------------------------------
# The conv1d head every chain starts with (docs/spec.md §6)
# ---------------------------------------------------------------------------------------------

def reference_conv(workload) -> tuple[torch.Tensor, torch.Tensor]:
    """The conv1d step (docs/spec.md §6): output as a (batch*T, conv_dim) act-dtype tensor, and the new
    conv state pool."""
    bias = getattr(workload, "conv_bias", None)
    out, new_state = conv1d_update(workload.conv_input(), workload.conv_state, workload.conv_weight, bias,
                                   workload.read_slots, workload.k_prev)
    act = ACT_DTYPES[workload.case.act_dtype]
    flat = out.transpose(1, 2).reshape(workload.batch * workload.case.T, -1).to(act)
    return flat, new_state


# ---------------------------------------------------------------------------------------------
# Byte counting (docs/spec.md §10)
# ---------------------------------------------------------------------------------------------

def act_bytes(case: Case) -> int:
    return ACT_DTYPES[case.act_dtype].itemsize


def real_rows(case: Case, workload) -> int:
    """Rows that are not padding (from the workload when given, else all rows)."""
    if workload is None:
        return case.batch
    return int((workload.read_slots >= 0).sum())


def state_bytes(fmt: str, rows: int, row_len: int) -> int:
    """One state of ``rows`` rows of ``row_len`` values in ``fmt`` (plus fp32 per-row scales)."""
    scale = 4 * rows if fmt in SCALED_FORMATS else 0
    return rows * row_len * bytes_per_element(fmt) + scale


def conv_window_read_bytes(act: int, d_conv: int, T: int) -> int:
    """Bytes DRAM moves per channel to read the d_conv-1 window columns out of a channel's
    d_conv-2+T contiguous state columns: the window starts at a data-dependent offset, so a
    window narrower than a sector drags its whole sector(s) along. With bf16 and T=6 a channel's
    row is 16 bytes, so the whole row is read (measured by ncu on an H100: docs/profile.md)."""
    row = (d_conv - 2 + T) * act
    window = (d_conv - 1) * act
    sectors = -(-window // DRAM_SECTOR_BYTES) + 1  # the window may straddle a sector boundary
    return min(row, sectors * DRAM_SECTOR_BYTES)


def conv1d_bytes(case: Case, conv_dim: int, d_conv: int, has_bias: bool, n_real: int) -> int:
    """conv1d update: read x (all rows) and the window columns (`conv_window_read_bytes`), write
    d_conv-2+T state columns (real rows), write the output (all rows, zeros for padding),
    weights once."""
    act, T, b = act_bytes(case), case.T, case.batch
    per_real = conv_dim * (conv_window_read_bytes(act, d_conv, T) + act * (d_conv - 2 + T))
    all_rows = b * (2 * T * conv_dim * act + 2 * INDEX_BYTES)
    params = conv_dim * d_conv * act + (conv_dim * act if has_bias else 0)
    return n_real * per_real + all_rows + params
