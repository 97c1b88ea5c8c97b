"""State storage formats (docs/spec.md §8): how a state is rounded when it is stored and read back.

Every reference that stores a state goes through `quantize` / `dequantize` here, and every
Triton kernel's storage helper is tested against them.

Conventions
-----------
- A "row" is the last dimension of a state tensor (N for Mamba-2 (slot, head, p) rows, K for
  GDN (slot, hv, v) rows). int8 / fp8 keep one fp32 scale per row: ``scale = amax / QMAX``
  (1 when amax is 0), ``q = round(S * inv)`` with ``inv = QMAX / amax`` (one division per row),
  clamped to [-QMAX, QMAX].
- ``fp64`` is a reference-only exact format (no rounding) used by the property tests.
- Stochastic rounding takes a tensor of uniforms in [0, 1) of the values' shape; `sr_uniform`
  draws them from Philox4x32-10 keyed by seed, with counter (row, column // 8, request, step):
  16 random bits per element, one Philox call serving 8 neighbouring columns of a row (its 4
  32-bit outputs, low half first). ``request`` is the slot the batch row read its state from,
  so every state one request stores in one step (its T per-token states, its tree nodes, its
  GDN intermediate entries) is rounded with the same uniforms (docs/spec.md §8). Bit-identical
  to Triton's ``tl.philox`` with the same counters, so kernels and references see the same
  random numbers.

Rounding, exactly (what a kernel must reproduce bit for bit)
------------------------------------------------------------
- Every rounding is a single rounding of the exact input value (an fp64 input is not first
  rounded to fp32: torch's own fp64 -> bf16/fp16 casts round twice and are wrong on rare ties).
- RN: IEEE round to nearest, ties to even; subnormals kept; a finite value whose rounded
  magnitude exceeds the format's max finite becomes +-inf (IEEE overflow, what ``cvt.rn`` does).
- SR, in magnitude: ``lo <= |v| <= hi`` are the two neighbouring representable magnitudes
  (lo == hi when v is representable), ``F = (|v| - lo) / (hi - lo)``, and the result is
  ``sign(v) * (hi if u < F else lo)`` with ``u = (field + 0.5) * 2**-16`` for the element's
  16-bit random field. Rounding the magnitude (not the signed value) makes the rule the same for
  both signs, so a kernel needs no sign select; it is unbiased all the same (E = v for either
  sign). When F is a multiple of 2**-16 (bf16 from fp32, and fp16 / int8 / fp8 wherever at most
  16 bits are dropped) ``u < F`` is the integer compare ``field < F * 2**16`` and the rounding is
  exactly unbiased; otherwise P(up) is F rounded to a multiple of 2**-16, within 2**-17 of a
  spacing. A finite value beyond the max finite saturates to +-max finite (no inf is ever
  produced by SR from a finite input).
- Non-finite inputs (nan, +-inf) pass through fp32/bf16/fp16 unchanged under both roundings.
- int8 / fp8: ``v32`` = fp32 RN of the input, ``amax`` = max |v32| over the row, and per row
  ``scale = fl32(amax / QMAX)`` (stored) and ``inv = fl32(QMAX / amax)`` (both 1 when amax is 0;
  correctly rounded fp32 divisions, Triton ``tl.math.div_rn``: one per row). The pre-rounding
  quotient is ``q' = clamp(fl32(v32 * inv), -QMAX, QMAX)`` (a plain fp32 multiply per element),
  then q' is rounded (RN or SR as above) onto the int grid (int8) or the e4m3 grid (fp8,
  subnormals of spacing 2**-9 included). Dequantize is ``q * scale``. Rows with
  ``amax < 2**-64`` (where QMAX / amax could overflow fp32) are first scaled by 2**64 (exact):
  ``inv = fl32(QMAX / (amax * 2**64))``, ``q' = clamp(fl32((v32 * 2**64) * inv))`` -- the same
  real product, so the same q' whenever ``fl32(QMAX / amax)`` is finite; scale is unchanged.
  ``amax * inv`` may round to just above QMAX: the clamp keeps q' on [-QMAX, QMAX], and under
  RN the amax element still stores +-QMAX.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FORMATS: tuple[str, ...] = ("fp32", "bf16", "fp16", "int8", "fp8")
"""Storage formats a sweep can ask for (docs/spec.md §8). ``fp8`` is e4m3."""
REFERENCE_FORMATS: tuple[str, ...] = ("fp64",) + FORMATS
ROUNDINGS: tuple[str, ...] = ("rn", "sr")
QMAX: dict[str, float] = {"int8": 127.0, "fp8": 448.0}
SCALED_FORMATS = frozenset(QMAX)
SCALED_TINY_AMAX = 2.0**-64
"""int8 / fp8 rows with amax below this are scaled by 2**64 before ``inv = QMAX / amax`` (which
would overflow fp32 for amax < QMAX / 3.4e38); see the module docstring."""

_TORCH_DTYPE: dict[str, torch.dtype] = {
    "fp64": torch.float64,
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "int8": torch.int8,
    "fp8": torch.float8_e4m3fn,
}


def storage_dtype(fmt: str) -> torch.dtype:
    """The torch dtype a pool of this format is allocated with (docs/spec.md §8)."""
    try:
        return _TORCH_DTYPE[fmt]
    except KeyError:
        raise ValueError(f"unknown storage format {fmt!r}; allowed: {', '.join(REFERENCE_FORMATS)}") from None


def bytes_per_element(fmt: str) -> int:
    """Bytes of one stored element of ``fmt`` (docs/spec.md §8), scales not included (they are per row)."""
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
    """A zero-filled pool of states of ``shape`` (last dim = row) in ``fmt`` (docs/spec.md §8); int8/fp8
    pools get fp32 scales of ``shape[:-1]`` set to 1."""
    data = torch.zeros(shape, dtype=storage_dtype(fmt), device=device)
    scale = torch.ones(shape[:-1], dtype=torch.float32, device=device) if fmt in SCALED_FORMATS else None
    return StoredState(data, scale, fmt)


def quantize(
    values: torch.Tensor,
    fmt: str,
    rounding: str = "rn",
    uniform: torch.Tensor | None = None,
) -> StoredState:
    """Round ``values`` (any float dtype, shape ``(..., row)``) into ``fmt`` (docs/spec.md §8).

    ``rounding`` is ``"rn"`` (nearest even) or ``"sr"`` (stochastic, in magnitude: ``hi if u < F
    else lo`` with ``u = uniform``, a float tensor of ``values.shape`` in [0, 1), e.g. from
    `sr_uniform`). The exact rules (single rounding, overflow, scales) are in the module docstring.
    Returns data of ``values.shape`` in `storage_dtype` and, for int8/fp8, fp32 scales of
    ``values.shape[:-1]``. fp64 is exact under either rounding.
    """
    storage_dtype(fmt)
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}; allowed: {', '.join(ROUNDINGS)}")
    if not values.is_floating_point():
        raise ValueError(f"quantize expects floating-point values, got {values.dtype}")
    u = None
    if rounding == "sr" and fmt != "fp64":
        if uniform is None:
            raise ValueError("stochastic rounding needs `uniform` (e.g. from sr_uniform)")
        if uniform.shape != values.shape:
            raise ValueError(f"uniform has shape {tuple(uniform.shape)}, values {tuple(values.shape)}")
        u = uniform.to(device=values.device, dtype=torch.float64)
    v = values.to(torch.float64)
    if fmt == "fp64":
        return StoredState(v.clone(), None, fmt)
    if fmt not in SCALED_FORMATS:
        return StoredState(_round_to_grid(v, _GRIDS[fmt], u).to(storage_dtype(fmt)), None, fmt)

    if values.shape[-1] == 0:
        raise ValueError("quantize: rows of length 0 have no scale")
    qmax = QMAX[fmt]
    v32 = _round_to_grid(v, _GRIDS["fp32"], None)  # exact fp32 values, held in fp64
    amax = v32.abs().amax(dim=-1)
    # fp64 quotients of fp32 operands rounded once to fp32 equal the correctly rounded fp32
    # quotients (53 >= 2*24 + 2), independent of how the device implements fp32 division; fp64
    # products of two fp32 values are exact, so one rounding to fp32 is the fp32 multiply.
    scale = torch.where(amax > 0, (amax / qmax).to(torch.float32), torch.ones_like(amax, dtype=torch.float32))
    pre = torch.where(amax < SCALED_TINY_AMAX, 2.0**64, 1.0).to(torch.float64)  # exact power of two
    amax_s = amax * pre
    inv = torch.where(amax > 0, (qmax / amax_s).to(torch.float32), torch.ones_like(amax, dtype=torch.float32))
    q = ((v32 * pre.unsqueeze(-1)) * inv.to(torch.float64).unsqueeze(-1)).to(torch.float32).to(torch.float64)
    q = q.clamp(-qmax, qmax)
    if fmt == "int8":
        if u is None:
            qr = torch.round(q)  # half to even
        else:
            mag = q.abs()
            lo = torch.floor(mag)
            qr = torch.copysign(lo + (u < mag - lo).to(torch.float64), q)
        qr = qr.clamp(-qmax, qmax)
    else:
        qr = _round_to_grid(q, _GRIDS["fp8"], u)
    return StoredState(qr.to(storage_dtype(fmt)), scale, fmt)


def dequantize(stored: StoredState, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Read states back as ``dtype`` (docs/spec.md §8): ``data`` for float formats, ``q * scale`` (scale
    broadcast over the last dim) for int8/fp8. Shape ``stored.shape``."""
    values = stored.data.to(dtype)
    if stored.scale is not None:
        values = values * stored.scale.to(dtype).unsqueeze(-1)
    return values


def one_step_bound(fmt: str, ref: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Per-element bound a kernel's stored state may differ from the fp64 reference's by: one
    storage step of ``fmt`` at the reference value (an SR step; RN is half of it) with 1% slack,
    plus an fp32 drift of 1e-5 of the row's max. ``scale``: the int8/fp8 row scales (decode
    factors). The kernel unit tests judge every stored element against it (docs/design.md)."""
    drift = 1e-5 * ref.abs().amax(-1, keepdim=True)
    if fmt == "fp32":
        return drift
    if fmt == "bf16":
        return 1.01 * 2.0**-7 * ref.abs() + drift + 1e-30
    if fmt == "fp16":
        return 1.01 * (2.0**-10 * ref.abs() + 2.0**-24) + drift
    s = scale.double().unsqueeze(-1)
    if fmt == "int8":
        return 1.01 * s + drift
    return 1.01 * (2.0**-3 * ref.abs() + 2.0**-9 * s) + drift


# --------------------------------------------------------------------------------------------
# Rounding onto a binary floating-point grid, exactly, in fp64 arithmetic.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    """A binary float format: ``mant`` stored mantissa bits, ``emin`` the smallest normal
    exponent (subnormal spacing 2**(emin - mant)), ``max_finite``, and what RN overflow gives."""

    mant: int
    emin: int
    max_finite: float
    rn_overflow_inf: bool


_GRIDS: dict[str, _Grid] = {
    "fp32": _Grid(23, -126, float(torch.finfo(torch.float32).max), True),
    "bf16": _Grid(7, -126, float(torch.finfo(torch.bfloat16).max), True),
    "fp16": _Grid(10, -14, float(torch.finfo(torch.float16).max), True),
    # e4m3fn has no inf; the scaled path clamps to +-448 first, so overflow cannot happen there.
    "fp8": _Grid(3, -6, 448.0, False),
}


def _pow2(e: torch.Tensor) -> torch.Tensor:
    """2**e as fp64, built from the exponent bits (exact; e must lie in [-1022, 1023])."""
    return ((e.to(torch.int64) + 1023) << 52).view(torch.float64)


def _round_to_grid(v: torch.Tensor, grid: _Grid, u: torch.Tensor | None) -> torch.Tensor:
    """Round fp64 ``v`` onto ``grid`` (RN when ``u`` is None, else SR with uniforms ``u``);
    returns fp64 holding representable values (or +-inf on RN overflow, nan/inf passed through).

    Why this is exact: for |v| in [2**e, 2**(e+1)) the grid spacing is 2**(max(e, emin) - mant);
    scaling by a power of two, floor, and the integer-valued products are all exact in fp64
    because every grid value needs at most 24 significant bits.
    """
    finite = torch.isfinite(v)
    vf = torch.where(finite, v, torch.zeros_like(v))
    _, exp = torch.frexp(vf)  # |v| = m * 2**exp, m in [0.5, 1)  ->  e = exp - 1
    e_ulp = torch.clamp(exp.to(torch.int64) - 1, min=grid.emin) - grid.mant
    s = vf * _pow2(-e_ulp)  # v in units of the local spacing (exact)
    if u is None:
        k = torch.round(s)  # half to even; an even k is an even mantissa
    else:  # in magnitude (module docstring); the sign comes back below
        mag = s.abs()
        lo = torch.floor(mag)
        k = lo + (u < mag - lo).to(torch.float64)
    r = k * _pow2(e_ulp)
    big = r.abs() > grid.max_finite
    if u is None and grid.rn_overflow_inf:
        r = torch.where(big, torch.full_like(r, float("inf")), r)
    else:
        r = torch.where(big, torch.full_like(r, grid.max_finite), r)
    r = torch.copysign(r, vf)  # never crosses zero; keeps the sign of zero results
    return torch.where(finite, r, v)


# --------------------------------------------------------------------------------------------
# Philox4x32-10, bit-identical to triton.language.random.philox with 32-bit counters.
# --------------------------------------------------------------------------------------------

_M32 = 0xFFFFFFFF
_PHILOX_KEY_A = 0x9E3779B9
_PHILOX_KEY_B = 0xBB67AE85
_PHILOX_ROUND_A = 0xD2511F53
_PHILOX_ROUND_B = 0xCD9E8D57
_PHILOX_ROUNDS = 10


def _mulhilo32(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) 32-bit halves of the 64-bit product a * b (a < 2**32, b int64 in [0, 2**32)),
    via 16-bit limbs so nothing overflows int64."""
    p_lo = a * (b & 0xFFFF)  # < 2**48
    p_hi = a * (b >> 16)  # < 2**48
    hi = (p_hi + (p_lo >> 16)) >> 16
    lo = (((p_hi & 0xFFFF) << 16) + p_lo) & _M32
    return hi, lo


def philox4x32(
    seed: int,
    c0: torch.Tensor | int,
    c1: torch.Tensor | int,
    c2: torch.Tensor | int,
    c3: torch.Tensor | int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32-10 of counter (c0, c1, c2, c3) under key (seed lo 32 bits, seed hi 32 bits)
    (docs/spec.md §8), bit-identical to Triton's ``tl.philox(seed, c0, c1, c2, c3)`` with 32-bit counters
    (and to Random123's philox4x32_10).

    ``seed``: Python int in [-2**63, 2**64) (negative seeds are taken as their 64-bit two's
    complement, as Triton's int64 -> uint64 cast does). Counters: int tensors or ints, any
    broadcastable shapes; values are taken modulo 2**32 (an int32 -1 is 0xffffffff). Returns four
    int64 tensors of the broadcast shape holding the uint32 outputs in [0, 2**32).
    """
    seed = int(seed)
    if not -(2**63) <= seed < 2**64:
        raise ValueError(f"philox seed {seed} does not fit 64 bits")
    seed &= 2**64 - 1
    k0, k1 = seed & _M32, seed >> 32
    device = next((c.device for c in (c0, c1, c2, c3) if isinstance(c, torch.Tensor)), torch.device("cpu"))
    cs = [torch.as_tensor(c, device=device).to(torch.int64) & _M32 for c in (c0, c1, c2, c3)]
    x0, x1, x2, x3 = torch.broadcast_tensors(*cs)
    for _ in range(_PHILOX_ROUNDS):
        hi_b, lo_b = _mulhilo32(_PHILOX_ROUND_B, x2)
        hi_a, lo_a = _mulhilo32(_PHILOX_ROUND_A, x0)
        x0, x1, x2, x3 = hi_b ^ x1 ^ k0, lo_b, hi_a ^ x3 ^ k1, lo_a
        k0 = (k0 + _PHILOX_KEY_A) & _M32
        k1 = (k1 + _PHILOX_KEY_B) & _M32
    return x0, x1, x2, x3


SR_FIELD_BITS = 16
"""Random bits per stored element (docs/spec.md §8)."""
SR_COLUMNS_PER_CALL = 8
"""Columns served by one Philox4x32 call: 128 bits / 16."""


def sr_fields(seed: int, request: torch.Tensor, step: int, row_shape: tuple[int, ...]) -> torch.Tensor:
    """The 16-bit random field of every element of the states one step stores for ``request``
    (docs/spec.md §8), as int64 in [0, 2**16).

    ``request``: int64 tensor of any shape S (the slot each batch row read its state from);
    ``row_shape = (..., N)``: one slot's state (e.g. ``(H, P, N)``); returns shape
    ``S + row_shape``. Rows are every leading index inside one slot's state, ``r`` their
    row-major position (e.g. ``h*P + p``), ``n`` the column. Philox4x32-10, key = seed (lo, hi
    32 bits), counter = ``(r, n // 8, request, step)``; column n takes
    ``(out[(n % 8) // 2] >> (16 * (n % 2))) & 0xFFFF``. Counters are 32-bit: rows per slot must
    be <= 2**32, N <= 2**35, step < 2**32; request is taken modulo 2**32 (padding rows, request
    < 0, store nothing).
    """
    row_shape = tuple(int(n) for n in row_shape)
    if not row_shape:
        raise ValueError("sr_fields: row_shape needs at least the row length N")
    n_rows = 1
    for n in row_shape[:-1]:
        n_rows *= n
    n_col = row_shape[-1]
    n_grp = -(-n_col // SR_COLUMNS_PER_CALL)
    if n_rows > 2**32 or n_grp > 2**32:
        raise ValueError(f"state of shape {row_shape} per slot overflows the 32-bit Philox counters")
    if not 0 <= int(step) < 2**32:
        raise ValueError(f"step {step} does not fit the 32-bit Philox counter")
    request = torch.as_tensor(request, dtype=torch.int64)
    row = torch.arange(n_rows, dtype=torch.int64, device=request.device)[:, None]
    grp = torch.arange(n_grp, dtype=torch.int64, device=request.device)[None, :]
    req_b = request.reshape(tuple(request.shape) + (1, 1))
    outs = philox4x32(seed, row, grp, req_b, int(step))  # 4 x (S..., rows, groups)
    words = torch.stack(outs, dim=-1)  # (..., groups, 4): out0..out3 of each call
    halves = torch.stack((words & 0xFFFF, words >> 16), dim=-1)  # (..., groups, 4, 2): low half first
    fields = halves.reshape(tuple(request.shape) + (n_rows, SR_COLUMNS_PER_CALL * n_grp))[..., :n_col]
    return fields.reshape(tuple(request.shape) + row_shape)


def sr_uniform(seed: int, request: torch.Tensor, step: int, row_shape: tuple[int, ...]) -> torch.Tensor:
    """Uniforms in (0, 1) for stochastic rounding (docs/spec.md §8): ``(field + 0.5) * 2**-16`` of
    `sr_fields` (same arguments and shape), as float64. Every state a request stores in one step
    takes these same uniforms: broadcast them over its T tokens / tree nodes."""
    return (sr_fields(seed, request, step, row_shape).to(torch.float64) + 0.5) * 2.0**-SR_FIELD_BITS
