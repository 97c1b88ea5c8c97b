"""Triton storage helpers (docs/spec.md §8): round / quantize a state tile when it is stored, dequantize
it when it is loaded. Every ssmbench kernel that keeps state (Mamba-2 intermediate, GDN, replay)
stores and loads through `store_state_rows` / `load_state_rows`, so all of them round the same
way as the reference `ssmbench_kernels.storage.reference.quantize`.

Addressing is by *row*: a pool of ``(n_slots, ..., ROW)`` states is viewed as ``(n_rows, ROW)``
with ``row = slot * rows_per_slot + index_inside_slot`` (int64), element ``row * ROW_STRIDE + n``;
scaled formats keep one fp32 scale per row at ``scale_ptr + row``. A tile is ``(R, C)`` with the
whole row in C (the per-row amax needs it), column c of the tile being column n = c of the row
(``offs_n = tl.arange(0, C)``, C a power of two >= 4, masked past the row length).

Bit-exactness with the reference (checked in the CPU interpreter by tests/test_triton_storage.py):

- SR (and, in the interpreter, RN into bf16 / fp8) never relies on a Triton float cast to
  round: the interpreter's fp32 -> bf16 cast truncates and its fp32 -> fp8 cast rounds ties up
  and mishandles mantissa carry. Values are rounded onto the target grid in fp32 with exact
  integer / power-of-two arithmetic first, so the final cast only converts an exactly
  representable value. On the GPU, RN into bf16 / fp16 / fp8 is the hardware ``cvt.rn`` (IEEE
  RN-even, the same result, fewer instructions); fp16 RN uses the cast in the interpreter too.
- SR rounds the magnitude: ``|v|`` moves to its upper neighbour iff ``u < F`` (F the exact
  fraction of |v| between its neighbours), with the element's 16-bit random field ``f`` from
  Philox4x32-10, counter ``(row inside the slot, n // 8, request, step)``, key ``seed``: one
  Philox call per 8 columns (`sr_bits`), ``f = (out[(n % 8) // 2] >> 16 * (n % 2)) & 0xFFFF``
  and ``u = (f + 0.5) * 2**-16``. ``request`` is the slot the row read its state from: a kernel
  draws the bits once per tile, before its token loop, and every state it stores for that
  request in this step (T per-token states, tree nodes, GDN intermediate entries) reuses them
  (docs/spec.md §8). bf16 compares integers: ``f < (the 16 dropped bits)`` is exactly
  ``u < F``. fp16 / int8 / fp8 compare ``u < F`` in fp32, both sides exact (F is a short binary
  fraction, u has 17 significant bits), so no rounding can flip a decision.
- int8 / fp8 scales: per row ``scale = amax / QMAX`` and ``inv = QMAX / amax`` (1 when amax is
  0) with `tl.math.div_rn` (IEEE division; plain ``/`` is approximate on the GPU), two per row;
  per element ``q' = v * inv`` (an fp32 multiply, correctly rounded), then clamp, then round.
  Rows with amax < 2**-64 multiply v and amax by 2**64 first (exact), as the reference does.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from ssmbench_kernels.common.launch import INTERPRET

FMT_FP32 = tl.constexpr(0)
FMT_BF16 = tl.constexpr(1)
FMT_FP16 = tl.constexpr(2)
FMT_INT8 = tl.constexpr(3)
FMT_FP8 = tl.constexpr(4)

FORMAT_CODES: dict[str, int] = {"fp32": 0, "bf16": 1, "fp16": 2, "int8": 3, "fp8": 4}
"""Storage format name (docs/spec.md §8, `ssmbench_kernels.storage.reference.FORMATS`) -> the kernels' FMT constexpr."""

STORAGE_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "int8": torch.int8,
    "fp8": torch.float8_e4m3fn,
}
SCALED = frozenset({"int8", "fp8"})

_TWO_M16 = tl.constexpr(1.0 / 65536.0)
_TINY_AMAX = tl.constexpr(2.0**-64)
"""Scaled rows with amax below this are scaled by _TWO_P64 first (reference SCALED_TINY_AMAX)."""
_TWO_P64 = tl.constexpr(2.0**64)


def format_code(fmt: str) -> int:
    """The FMT constexpr for a storage format name; ValueError for unknown names."""
    try:
        return FORMAT_CODES[fmt]
    except KeyError:
        raise ValueError(f"unknown storage format {fmt!r}; allowed: {', '.join(FORMAT_CODES)}") from None


def rounding_is_sr(rounding: str) -> bool:
    """``"rn"`` -> False, ``"sr"`` -> True; ValueError otherwise."""
    if rounding not in ("rn", "sr"):
        raise ValueError(f"unknown rounding {rounding!r}; allowed: rn, sr")
    return rounding == "sr"


def format_of(data: torch.Tensor) -> str:
    """The storage format a pool tensor's dtype stands for."""
    for name, dtype in STORAGE_DTYPES.items():
        if data.dtype == dtype:
            return name
    raise ValueError(f"pool dtype {data.dtype} is not a storage format ({', '.join(FORMAT_CODES)})")


# --------------------------------------------------------------------------------------------
# random bits
# --------------------------------------------------------------------------------------------


@triton.jit
def _halves(word):
    """The two 16-bit fields of a uint32 Philox output, low half first, as int32."""
    return (word & 0xFFFF).to(tl.int32), (word >> 16).to(tl.int32)


@triton.jit
def sr_bits(seed, row, request, step, col0, BLOCK_N: tl.constexpr):
    """16 random bits per element of a ``(R, BLOCK_N)`` tile of columns ``col0 .. col0 + BLOCK_N``
    (int32 in [0, 2**16)), the same fields as the reference `sr_fields`: Philox4x32-10 with key
    ``seed`` and counter ``(row, n // 8, request, step)`` runs once per group of 8 columns, on an
    ``(R, BLOCK_N // 8)`` tile; column 8g + j takes the low (j even) or high (j odd) half of
    output ``j // 2``. ``col0``: a multiple of 8 (0 for whole rows; a column tile's first column
    for kernels that stream a row in parts).

    Called once per tile before the token loop: every store of the request in this step shares
    the result. ``row``: int tile ``(R,)`` of row indices inside one slot's state (counter word
    0); ``request``/``step``: scalars (counter words 2 and 3, truncated to 32 bits as counter
    words are). BLOCK_N: power of two >= 4; tile column c is row column n = col0 + c.
    """
    tl.static_assert(BLOCK_N >= 4, "sr_bits needs BLOCK_N >= 4")
    GROUPS: tl.constexpr = BLOCK_N // 8 if BLOCK_N >= 8 else 1
    grp = tl.arange(0, GROUPS)
    zero = (row[:, None] * 0 + grp[None, :] * 0).to(tl.int64)  # (R, GROUPS)
    c0 = (zero + row[:, None]).to(tl.uint32)
    c1 = (zero + grp[None, :] + col0 // 8).to(tl.uint32)
    c2 = (zero + request).to(tl.uint32)
    c3 = (zero + step).to(tl.uint32)
    r0, r1, r2, r3 = tl.philox(seed, c0, c1, c2, c3)
    lo0, hi0 = _halves(r0)
    lo1, hi1 = _halves(r1)
    # tl.join adds a new innermost dim: join(a, b)[..., k] is a (k = 0) or b (k = 1), so the
    # row-major flattening of nested joins lists the leaves in the order below.
    if BLOCK_N >= 8:
        lo2, hi2 = _halves(r2)
        lo3, hi3 = _halves(r3)
        # index [a, b, c] -> column 4a + 2b + c = field of output 2a + b, half c
        lows = tl.join(tl.join(lo0, lo2), tl.join(lo1, lo3))
        highs = tl.join(tl.join(hi0, hi2), tl.join(hi1, hi3))
        bits = tl.reshape(tl.join(lows, highs), (row.shape[0], BLOCK_N))
    else:  # 4 columns: the first two outputs of the call
        bits = tl.reshape(tl.join(tl.join(lo0, lo1), tl.join(hi0, hi1)), (row.shape[0], 4))
    return bits


@triton.jit
def request_sr_bits(seed, row, request, step, col0, BLOCK_N: tl.constexpr, FMT: tl.constexpr, SR: tl.constexpr):
    """`sr_bits` when FMT is stored with SR, else zeros (never read; compiled away): what a
    kernel draws once per tile and hands to every `store_state_rows` of the request."""
    if SR and FMT != FMT_FP32:
        return sr_bits(seed, row, request, step, col0, BLOCK_N)
    else:
        return tl.zeros((row.shape[0], BLOCK_N), tl.int32)


@triton.jit
def _round_up(F, k_odd, bits16, SR: tl.constexpr):
    """Whether |v| moves to its upper grid neighbour, given the exact fraction F in [0, 1) of
    |v| between its lower (magnitude k) and upper neighbour. RN: F > 1/2, ties to the even
    neighbour. SR: ``u < F`` with ``u = (bits16 + 0.5) * 2**-16`` (exact in fp32)."""
    if SR:
        u = (bits16.to(tl.float32) + 0.5) * _TWO_M16
        up = u < F
    else:
        up = (F > 0.5) | ((F == 0.5) & k_odd)
    return up


@triton.jit
def _with_sign(r, bits):
    """|r| with the sign bit of ``bits`` (int32 pattern of the input), via the bits: a float
    ``where(neg, -r, r)`` lost the sign of zero results on the GPU (signed-zero-insensitive
    folding), and the reference keeps it (-tiny rounds to -0.0)."""
    rb = r.to(tl.int32, bitcast=True) | (bits & -2147483648)
    return rb.to(tl.float32, bitcast=True)


@triton.jit
def round_bf16(v, bits16, SR: tl.constexpr):
    """fp32 -> the nearest bf16 neighbour chosen by RN / SR, returned as an (exact) fp32 value.

    bf16 is fp32 with the low 16 bits cleared, so the neighbours come straight from the bit
    pattern (subnormals and binade edges included). SR is all integer: the magnitude rounds up
    iff ``bits16 < low`` (the 16 dropped bits), which is ``u < F`` exactly (F = low / 2**16, u =
    (bits16 + 0.5) / 2**16); adding 0x10000 to the truncated magnitude carries into the
    exponent at a binade edge, as it should.
    """
    bits = v.to(tl.uint32, bitcast=True)
    sign = bits & 0x80000000
    mag = bits & 0x7FFFFFFF
    low = mag & 0xFFFF
    base = mag - low
    if SR:
        up = bits16.to(tl.uint32) < low
        above = base + 0x10000
        # SR never turns a finite value into inf: saturate at the largest finite bf16.
        above = tl.where((above >= 0x7F800000) & (mag < 0x7F800000), 0x7F7F0000, above)
    else:
        up = (low > 0x8000) | ((low == 0x8000) & (((base >> 16) & 1) == 1))
        above = base + 0x10000
    out = tl.where(up, above, base) | sign
    return out.to(tl.float32, bitcast=True)


@triton.jit
def round_grid(v, bits16, MANT: tl.constexpr, EMIN: tl.constexpr, MAXF: tl.constexpr, SR: tl.constexpr):
    """fp32 -> the RN / SR neighbour on the grid of a float format with MANT mantissa bits,
    minimum normal exponent EMIN and largest finite value MAXF (fp16: 10, -14, 65504; fp8 e4m3:
    3, -6, 448), as an exact fp32 value.

    The spacing at |v| is ``2**(max(e, EMIN) - MANT)``; scaling by a power of two, ``floor`` and
    the subtraction are exact, so F is exact. Overflow as the reference: RN past MAXF is left to
    the final cast (inf for fp16, like ``cvt.rn``); SR saturates finite values at MAXF. inf and
    nan pass through.
    """
    bits = v.to(tl.int32, bitcast=True)
    a = tl.abs(v)
    e = ((bits >> 23) & 0xFF) - 127
    e = tl.maximum(e, EMIN)
    inv_ulp = ((MANT - e + 127) << 23).to(tl.float32, bitcast=True)
    ulp = ((e - MANT + 127) << 23).to(tl.float32, bitcast=True)
    s = a * inv_ulp
    k = tl.floor(s)
    F = s - k
    up = _round_up(F, (k.to(tl.int32) & 1) == 1, bits16, SR)
    r = tl.where(up, k + 1.0, k) * ulp
    if SR:
        r = tl.where((r > MAXF) & (a <= 3.4028234663852886e38), MAXF, r)
    return _with_sign(r, bits)


@triton.jit
def round_int(v, bits16, SR: tl.constexpr):
    """fp32 -> an integer neighbour (RN: ties to even like torch.round; SR), as fp32."""
    a = tl.abs(v)
    k = tl.floor(a)
    F = a - k
    up = _round_up(F, (k.to(tl.int32) & 1) == 1, bits16, SR)
    r = tl.where(up, k + 1.0, k)
    return _with_sign(r, v.to(tl.int32, bitcast=True))


@triton.jit
def quantize_tile(values, mask, bits16, FMT: tl.constexpr, SR: tl.constexpr):
    """Round an fp32 ``(R, C)`` tile (whole rows) into format FMT.

    Returns ``(q, scale)``: q is fp32 holding exactly representable values of the format (for
    int8 / fp8: the scaled codes) -- except where NATIVE_RN leaves the rounding to the final
    cast, where q is the unrounded value -- and scale the per-row fp32 scale (ones for
    unscaled formats).

    int8 RN on the GPU is ``rint`` (``cvt.rni``, RN-even) of the scaled value.

    NATIVE_RN: RN into FMT is left to the hardware cast (``cvt.rn``: exact IEEE RN-even with
    subnormals and signed zeros, fewer instructions than the software grid): fp16 everywhere
    (the interpreter casts with numpy, also RN); bf16 and fp8 only on the GPU (the interpreter's
    casts truncate / round ties up). fp8 values are clamped to +-448 first, so ``satfinite``
    never engages.
    """
    NATIVE_RN: tl.constexpr = (not SR) and (
        FMT == FMT_FP16 or ((FMT == FMT_BF16 or FMT == FMT_FP8) and not INTERPRET)
    )
    scale = tl.full((values.shape[0],), 1.0, tl.float32)
    if FMT == FMT_FP32 or NATIVE_RN:
        q = values
    elif FMT == FMT_BF16:
        q = round_bf16(values, bits16, SR)
    elif FMT == FMT_FP16:
        q = round_grid(values, bits16, 10, -14, 65504.0, SR)
    if FMT == FMT_INT8 or FMT == FMT_FP8:
        QMAX: tl.constexpr = 127.0 if FMT == FMT_INT8 else 448.0
        amax = tl.max(tl.where(mask, tl.abs(values), 0.0), axis=1)
        qmax_t = tl.full((values.shape[0],), QMAX, tl.float32)
        scale = tl.where(amax > 0.0, tl.math.div_rn(amax, qmax_t), 1.0)
        # Rows with a tiny amax: scale v and amax by 2**64 (exact) so QMAX / amax stays finite.
        pre = tl.where(amax < _TINY_AMAX, _TWO_P64, 1.0)
        inv = tl.math.div_rn(qmax_t, tl.where(amax > 0.0, amax * pre, QMAX))  # 1 when amax is 0
        q = (values * pre[:, None]) * inv[:, None]
        q = tl.minimum(tl.maximum(q, -QMAX), QMAX)
        if FMT == FMT_INT8 and (SR or INTERPRET):
            q = round_int(q, bits16, SR)
        elif FMT == FMT_INT8:
            # RN-even in one instruction (cvt.rni) on the GPU, the same integer as round_int's RN
            # (the interpreter has no libdevice: it takes round_int): ~10 fewer SASS instructions
            # per element-store at the headline shape (docs/perf-notes.md)
            q = libdevice.rint(q)
        elif not NATIVE_RN:
            q = round_grid(q, bits16, 3, -6, 448.0, SR)
    return q, scale


@triton.jit
def store_state_rows(
    data_ptr,
    scale_ptr,
    rows,
    row_mask,
    offs_n,
    col_mask,
    values,
    ROW_STRIDE,
    FMT: tl.constexpr,
    SR: tl.constexpr,
    bits16,
):
    """Store the fp32 tile ``values`` (R, C) as rows ``rows`` (int64, (R,)) of a pool in FMT.

    ``bits16``: the request's random fields for this tile (`request_sr_bits`, drawn once per
    tile and step and shared by all its stores; unused unless SR). ``offs_n`` must be
    ``tl.arange(0, C)`` (column c is row column c). Masked-off rows (``row_mask`` False, e.g.
    padding) touch neither data nor scales.
    """
    row_mask = row_mask != 0  # interpreter quirk: scalar-bool & tensor-bool yields int32 there
    mask = (row_mask[:, None] & col_mask[None, :]) != 0
    q, scale = quantize_tile(values, mask, bits16, FMT, SR)
    ptrs = data_ptr + rows[:, None] * ROW_STRIDE + offs_n[None, :]
    if FMT == FMT_BF16 and (SR or INTERPRET):
        # Through the bits: exact, and the interpreter's fp32 -> bf16 cast mishandles subnormals.
        q16 = (q.to(tl.uint32, bitcast=True) >> 16).to(tl.uint16)
        tl.store(ptrs, q16.to(tl.bfloat16, bitcast=True), mask=mask)
    else:
        tl.store(ptrs, q.to(data_ptr.dtype.element_ty), mask=mask)
    if FMT == FMT_INT8 or FMT == FMT_FP8:
        tl.store(scale_ptr + rows, scale, mask=row_mask)


@triton.jit
def bf16_to_fp32(raw):
    """A bf16 tile widened to fp32 through its bits (exact; the interpreter's cast is not trusted
    with subnormals)."""
    return (raw.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)


@triton.jit
def load_state_rows(data_ptr, scale_ptr, rows, row_mask, offs_n, col_mask, ROW_STRIDE, FMT: tl.constexpr):
    """Load rows ``rows`` (int64, (R,)) of a pool in FMT as an fp32 (R, C) tile, dequantized
    (``data * scale``); masked-off elements read as 0 and touch no memory."""
    row_mask = row_mask != 0  # interpreter quirk: scalar-bool & tensor-bool yields int32 there
    mask = (row_mask[:, None] & col_mask[None, :]) != 0
    ptrs = data_ptr + rows[:, None] * ROW_STRIDE + offs_n[None, :]
    raw = tl.load(ptrs, mask=mask)
    if FMT == FMT_BF16:
        values = bf16_to_fp32(raw)
    else:
        values = raw.to(tl.float32)
    values = tl.where(mask, values, 0.0)
    if FMT == FMT_INT8 or FMT == FMT_FP8:
        scale = tl.load(scale_ptr + rows, mask=row_mask, other=1.0)
        values = values * scale[:, None]
    return values
