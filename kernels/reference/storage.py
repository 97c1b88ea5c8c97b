"""State storage formats (SPEC 8): how a state is rounded when it is stored and read back.

Every reference that stores a state goes through `quantize` / `dequantize` here, and every
Triton kernel's storage helper is tested against them.

Conventions
-----------
- A "row" is the last dimension of a state tensor (N for Mamba-2 (slot, head, p) rows, K for
  GDN (slot, hv, v) rows). int8 / fp8 keep one fp32 scale per row: ``scale = amax / QMAX``
  (1 when amax is 0), ``q = round(S / scale)`` clamped to [-QMAX, QMAX].
- ``fp64`` is a reference-only exact format (no rounding) used by the property tests.
- Stochastic rounding takes a tensor of uniforms in [0, 1) of the values' shape; `sr_uniform`
  draws them from Philox4x32-10 keyed by (seed, slot, element, step), bit-identical to Triton's
  ``tl.philox`` with the same counters, so kernels and references see the same random numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FORMATS: tuple[str, ...] = ("fp32", "bf16", "fp16", "int8", "fp8")
"""Storage formats a sweep can ask for (SPEC 8). ``fp8`` is e4m3."""
REFERENCE_FORMATS: tuple[str, ...] = ("fp64",) + FORMATS
ROUNDINGS: tuple[str, ...] = ("rn", "sr")
QMAX: dict[str, float] = {"int8": 127.0, "fp8": 448.0}
SCALED_FORMATS = frozenset(QMAX)

_TORCH_DTYPE: dict[str, torch.dtype] = {
    "fp64": torch.float64,
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "int8": torch.int8,
    "fp8": torch.float8_e4m3fn,
}


def storage_dtype(fmt: str) -> torch.dtype:
    """The torch dtype a pool of this format is allocated with."""
    try:
        return _TORCH_DTYPE[fmt]
    except KeyError:
        raise ValueError(f"unknown storage format {fmt!r}; allowed: {', '.join(REFERENCE_FORMATS)}") from None


def bytes_per_element(fmt: str) -> int:
    return torch.empty((), dtype=storage_dtype(fmt)).element_size()


@dataclass
class StoredState:
    """States in a storage format: ``data`` (storage dtype, ``(..., row)``) and, for int8/fp8,
    ``scale`` (fp32, ``data.shape[:-1]``)."""

    data: torch.Tensor
    scale: torch.Tensor | None
    fmt: str

    def __getitem__(self, index) -> StoredState:
        """Index the leading (slot) dimensions; rows are never split."""
        scale = None if self.scale is None else self.scale[index]
        return StoredState(self.data[index], scale, self.fmt)

    def __setitem__(self, index, value: StoredState) -> None:
        if value.fmt != self.fmt:
            raise ValueError(f"cannot store {value.fmt} states into a {self.fmt} pool")
        self.data[index] = value.data
        if self.scale is not None:
            self.scale[index] = value.scale

    def clone(self) -> StoredState:
        return StoredState(self.data.clone(), None if self.scale is None else self.scale.clone(), self.fmt)

    @property
    def shape(self) -> torch.Size:
        return self.data.shape


def empty_pool(shape: tuple[int, ...], fmt: str, device: torch.device | str = "cpu") -> StoredState:
    """A zero-filled pool of states of ``shape`` (last dim = row) in ``fmt``."""
    data = torch.zeros(shape, dtype=storage_dtype(fmt), device=device)
    scale = torch.ones(shape[:-1], dtype=torch.float32, device=device) if fmt in SCALED_FORMATS else None
    return StoredState(data, scale, fmt)


def quantize(
    values: torch.Tensor,
    fmt: str,
    rounding: str = "rn",
    uniform: torch.Tensor | None = None,
) -> StoredState:
    """Round ``values`` (any float dtype, rows along the last dim) into ``fmt``.

    ``rounding`` is ``"rn"`` (nearest even) or ``"sr"`` (stochastic: the upper neighbour is
    chosen with probability (v - lo) / (hi - lo); needs ``uniform`` of ``values.shape``).
    fp32 under SR rounds from the fp64 value; fp64 is exact under either.
    """
    # Provisional RN-only body (SR, exact e4m3 grid checks and tests: storage work in progress).
    if rounding != "rn":
        raise NotImplementedError("stochastic rounding: storage work in progress")
    if fmt in SCALED_FORMATS:
        v32 = values.to(torch.float32)
        amax = v32.abs().amax(dim=-1)
        scale = torch.where(amax > 0, amax / QMAX[fmt], torch.ones_like(amax))
        q = (v32 / scale.unsqueeze(-1)).clamp(-QMAX[fmt], QMAX[fmt])
        q = torch.round(q) if fmt == "int8" else q
        return StoredState(q.to(storage_dtype(fmt)), scale, fmt)
    return StoredState(values.to(storage_dtype(fmt)), None, fmt)


def dequantize(stored: StoredState, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Read states back as ``dtype`` (scales applied)."""
    values = stored.data.to(dtype)
    if stored.scale is not None:
        values = values * stored.scale.to(dtype).unsqueeze(-1)
    return values


def sr_uniform(seed: int, slot: torch.Tensor, step: int, row_shape: tuple[int, ...]) -> torch.Tensor:
    """Uniforms in [0, 1) for stochastic rounding of states stored at ``slot``.

    ``slot``: int64 tensor of any shape S; returns float64 of shape ``S + row_shape`` where the
    element index is the row-major position inside one slot's state (e.g. ``(h*P + p)*N + n``).
    Philox4x32-10, key = seed (lo, hi 32 bits), counter = (element, slot, step, 0); the uniform
    is ``(c0_out >> 8) * 2**-24``.
    """
    raise NotImplementedError
