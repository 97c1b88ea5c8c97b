"""Triton storage helpers (docs/spec.md §8) against the reference `quantize` / `dequantize` / `sr_uniform`.

A tiny kernel that only stores (and reads back) a tile of given fp32 values: with identical fp32
inputs and identical Philox uniforms the stored bits and scales must be *identical* to the
reference for every format and both roundings (no tolerance). Runs in the CPU interpreter (and
on the GPU when there is one).
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():  # CPU machines: the interpreter (tests/conftest.py does the same)
    os.environ.setdefault("TRITON_INTERPRET", "1")
DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0") else "cuda"
"""Where the kernels run: the interpreter on CPU machines; on a GPU machine the same checks run
on the GPU (bit-exactness of the GPU's rounding paths included)."""

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from ssmbench_kernels.common.dots import dot  # noqa: E402
from ssmbench_kernels.storage.kernel import (  # noqa: E402
    STORAGE_DTYPES,
    format_code,
    load_state_rows,
    request_sr_bits,
    sr_bits,
    store_state_rows,
)
from ssmbench_kernels.storage.reference import dequantize, quantize, sr_fields, sr_uniform  # noqa: E402

R, C, RB, BC = 6, 12, 8, 16  # rows per slot, row length (both non-pow2: masked), padded blocks
SEED, STEP = 0x1234_5678_9ABC, 7


@triton.jit(do_not_specialize=["seed", "step"])
def _store_kernel(
    v_ptr,
    data_ptr,
    scale_ptr,
    back_ptr,
    slot_ptr,
    seed,
    step,
    R: tl.constexpr,
    C: tl.constexpr,
    RB: tl.constexpr,
    BC: tl.constexpr,
    FMT: tl.constexpr,
    SR: tl.constexpr,
):
    pid = tl.program_id(0)
    slot = tl.load(slot_ptr + pid).to(tl.int64)
    offs_r = tl.arange(0, RB)
    offs_c = tl.arange(0, BC)
    cm = offs_c < C
    rm = (offs_r < R) & ((offs_r * 0 + slot) >= 0)
    tile = pid * R * C + offs_r[:, None] * C + offs_c[None, :]
    v = tl.load(v_ptr + tile, mask=(offs_r < R)[:, None] & cm[None, :], other=0.0)
    rows = slot * R + offs_r
    bits = request_sr_bits(seed, offs_r, slot, step, 0, BC, FMT, SR)
    store_state_rows(data_ptr, scale_ptr, rows, rm, offs_c, cm, v, C, FMT, SR, bits)
    tl.debug_barrier()  # on the GPU other threads may have stored the elements read back below
    back = load_state_rows(data_ptr, scale_ptr, rows, rm, offs_c, cm, C, FMT)
    tl.store(back_ptr + tile, back, mask=rm[:, None] & cm[None, :])


@triton.jit(do_not_specialize=["seed", "step"])
def _uniform_kernel(
    u_ptr, slot_ptr, seed, step, ROW0, NR: tl.constexpr, NC: tl.constexpr, RB: tl.constexpr, BN: tl.constexpr,
    COL0: tl.constexpr = 0,
):
    """Random fields of rows ROW0 .. ROW0 + NR - 1 (columns COL0 .. COL0 + NC - 1) of request
    ``slot_ptr[pid]``, drawn by `sr_bits` on an (RB, BN) tile, stored as (NR, NC) per program."""
    pid = tl.program_id(0)
    slot = tl.load(slot_ptr + pid).to(tl.int64)
    r = tl.arange(0, RB)
    n = tl.arange(0, BN)
    bits = sr_bits(seed, ROW0 + r, slot, step, COL0, BN)
    m = (r < NR)[:, None] & (n < NC)[None, :]
    tl.store(u_ptr + pid * NR * NC + r[:, None] * NC + n[None, :], bits, mask=m)


def _values(fmt: str) -> torch.Tensor:
    """(3 programs, R, C) fp32 values with the edge cases of ``fmt`` spliced into random rows."""
    g = torch.Generator().manual_seed(11)
    v = torch.randn(3, R, C, generator=g) * torch.logspace(-9, 4, C).float()
    v[0, 0] = 0.0  # all-zero row: scale 1
    v[0, 1, :4] = torch.tensor([-0.0, 1e-45, -3e-41, 2.0**-24])  # signed zero, fp32 subnormals
    if fmt in ("bf16", "fp16"):
        one = 1.0 + (2.0**-8 if fmt == "bf16" else 2.0**-11)  # ties to even
        three = 1.0 + 3 * (2.0**-8 if fmt == "bf16" else 2.0**-11)
        big = 3.3961e38 if fmt == "bf16" else 65519.0
        v[1, 2, :8] = torch.tensor([one, -one, three, -three, big, -big, 65520.0, 7.0e4])
        v[1, 3, :6] = torch.tensor(
            [2.0**-25, 3 * 2.0**-26, -(2.0**-20) * 1.3, float("inf"), -float("inf"), 5.9e-8]
        )
    elif fmt == "int8":
        v[1, 2, :6] = torch.tensor([127.0, 2.5, 3.5, -2.5, -0.5, 1.5])  # scale 1: exact ties
    elif fmt == "fp8":
        v[1, 2, :8] = torch.tensor(
            [448.0, 1.0625, 1.1875, -1.0625, 2.0**-10, 3 * 2.0**-11, -(2.0**-8), 440.0]
        )
    if fmt in ("int8", "fp8"):
        # amax whose fl32(amax * fl32(QMAX / amax)) rounds above QMAX (the clamp matters)
        v[1, 3, :2] = torch.tensor([49.62665939331055 if fmt == "int8" else 49.01034164428711, -3.0])
        # tiny rows (amax < 2**-64, pre-scaled by 2**64): QMAX / amax finite, then overflowing
        # fp32 without the pre-scaling (amax < ~3.7e-37), then a subnormal amax; zeros included
        v[2, 3] = torch.randn(C, generator=g) * 1e-30
        v[2, 4] = torch.randn(C, generator=g) * 1e-38
        v[2, 5] = torch.randn(C, generator=g) * 1e-41
        v[2, 3:6, 1] = 0.0
        v[2, 3:6, 2] = -0.0
    return v


def _bits(t: torch.Tensor) -> torch.Tensor:
    return (
        t.view(torch.uint8) if t.element_size() == 1 else t.view(getattr(torch, f"int{8 * t.element_size()}"))
    )


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy on the inf/nan edge inputs
@pytest.mark.parametrize("rounding", ["rn", "sr"])
@pytest.mark.parametrize("fmt", ["fp32", "bf16", "fp16", "int8", "fp8"])
def test_store_bit_identical_to_reference(fmt: str, rounding: str) -> None:
    v = _values(fmt)
    n_slots = 5
    slots = torch.tensor([4, -1, 1])  # program 1 is padding: must touch nothing
    sentinel = {"fp32": 123.0, "bf16": 123.0, "fp16": 123.0, "int8": 99, "fp8": 3.0}[fmt]
    data = torch.full((n_slots, R, C), sentinel).to(STORAGE_DTYPES[fmt])
    scale = torch.full((n_slots, R), -7.0)
    back = torch.full_like(v, float("nan"))
    dv, ddata, dscale, dback, dslots = (t.to(DEVICE) for t in (v, data, scale, back, slots))
    _store_kernel[(3,)](
        dv, ddata, dscale, dback, dslots, SEED, STEP, R, C, RB, BC, format_code(fmt), rounding == "sr"
    )
    data, scale, back = ddata.cpu(), dscale.cpu(), dback.cpu()

    real = slots >= 0
    uni = sr_uniform(SEED, slots[real], STEP, (R, C)) if rounding == "sr" else None
    ref = quantize(v[real], fmt, rounding, uni)
    got = data[slots[real]]
    if fmt in ("fp32", "bf16", "fp16"):
        nan = torch.isnan(ref.data.float())
        assert torch.equal(torch.isnan(got.float()), nan)
        mismatch = (_bits(got) != _bits(ref.data)) & ~nan
        assert not mismatch.any(), f"{fmt}/{rounding}: {int(mismatch.sum())} elements differ: " + str(
            list(
                zip(
                    v[real][mismatch][:5].tolist(),
                    got[mismatch][:5].float().tolist(),
                    ref.data[mismatch][:5].float().tolist(),
                    strict=False,
                )
            )
        )
    else:
        assert torch.equal(_bits(got), _bits(ref.data)), f"{fmt}/{rounding}: codes differ"
        assert torch.equal(scale[slots[real]], ref.scale), f"{fmt}/{rounding}: scales differ"
    # Untouched slots and the padding program's slot keep the sentinel; scales untouched too.
    untouched = [s for s in range(n_slots) if s not in slots.tolist()]
    assert (data[untouched].float() == float(sentinel)).all()
    if fmt in ("int8", "fp8"):
        assert (scale[untouched] == -7.0).all()
    # Loads dequantize exactly as the reference does in fp32.
    want = dequantize(
        StoredView(got, scale[slots[real]] if fmt in ("int8", "fp8") else None, fmt), torch.float32
    )
    finite = torch.isfinite(want)
    assert torch.equal(back[real][finite], want[finite])
    assert torch.isnan(back[1]).all(), "padding program must not load or write"


class StoredView:
    """Duck-typed StoredState for `dequantize` (data, scale)."""

    def __init__(self, data: torch.Tensor, scale: torch.Tensor | None, fmt: str) -> None:
        self.data, self.scale, self.fmt = data, scale, fmt


def test_sr_bits_match_reference_fields() -> None:
    """Kernel Philox stream == reference `sr_fields` (key = 64-bit seed, counter (row, n // 8,
    request, step), 16-bit field (out[(n % 8) // 2] >> 16 * (n % 2)) & 0xFFFF for column n; one
    Philox call per 8 columns interleaved back by tl.join + tl.reshape): rows from an offset,
    row lengths not a multiple of 8, wide seeds, requests and steps, and the 4-column tile."""
    slots = torch.tensor([0, 3, 2**31 + 5, 77])
    for seed, step, row0, nr, nc, rb, bn in (
        (0, 0, 0, 3, 64, 4, 64),
        (SEED, 123456, 5, 6, 10, 8, 16),  # rows 5..10 of a (11, 10) state; columns masked
        (SEED, 9, 1, 3, 8, 4, 8),  # one group of 8
        (2**63 - 1, 2**32 - 1, 0, 2, 4, 2, 4),  # the smallest tile: half a group
    ):
        u = torch.empty(len(slots), nr, nc, dtype=torch.int32, device=DEVICE)
        _uniform_kernel[(len(slots),)](u, slots.to(DEVICE), seed, step, row0, nr, nc, rb, bn)
        ref = sr_fields(seed, slots, step, (row0 + nr, nc))[:, row0:].to(torch.int32)
        assert torch.equal(u.cpu(), ref), f"seed={seed} step={step}"
    # Column tiles (kernels that stream a row in parts): tile [c0, c0 + 16) of a 64-column row.
    for c0 in (0, 16, 48):
        u = torch.empty(len(slots), 3, 16, dtype=torch.int32, device=DEVICE)
        _uniform_kernel[(len(slots),)](u, slots.to(DEVICE), SEED, 7, 2, 3, 16, 4, 16, c0)
        ref = sr_fields(SEED, slots, 7, (5, 64))[:, 2:, c0:c0 + 16].to(torch.int32)
        assert torch.equal(u.cpu(), ref), f"column tile at {c0}"
    assert torch.equal(sr_uniform(SEED, slots, 5, (3, 12)),
                       (sr_fields(SEED, slots, 5, (3, 12)).double() + 0.5) / 65536)


def test_sr_bits_slot_independent_of_batch() -> None:
    """A slot's uniforms do not depend on which program (batch position) draws them, and
    differ between slots and steps."""
    def draw(slots: list[int], step: int = 3) -> torch.Tensor:
        u = torch.empty(len(slots), 4, 16, dtype=torch.int32, device=DEVICE)
        _uniform_kernel[(len(slots),)](u, torch.tensor(slots, device=DEVICE), SEED, step, 2, 4, 16, 4, 16)
        return u.cpu()

    alone = draw([9])[0]
    assert torch.equal(draw([4, 1, 9])[2], alone)
    assert torch.equal(draw([9, 0])[0], alone)
    assert (draw([8])[0] != alone).float().mean() > 0.9
    assert (draw([9], step=4)[0] != alone).float().mean() > 0.9


def test_sr_unbiased_small() -> None:
    """Mean of many SR stores of one bf16-unrepresentable value approaches the value (CPU-sized)."""
    n_prog = 64
    v = torch.full((n_prog, R, C), 1.0 + 2.0**-9 + 2.0**-12)  # 5/16 of the way past 1 + 2**-9... bf16
    v = v.to(DEVICE)
    slots = torch.arange(n_prog, device=DEVICE)
    data = torch.zeros(n_prog, R, C, dtype=torch.bfloat16, device=DEVICE)
    back = torch.empty_like(v)
    _store_kernel[(n_prog,)](v, data, data, back, slots, 3, 0, R, C, RB, BC, format_code("bf16"), True)
    mean = data.double().mean().item()
    ulp = 2.0**-7
    p_hi = ((v[0, 0, 0].double() - 1.0) / ulp).item()
    # Binomial std of the mean over n_prog*R*C draws, 5 sigma.
    n = n_prog * R * C
    assert abs(mean - v[0, 0, 0].item()) < 5 * ulp * (p_hi * (1 - p_hi) / n) ** 0.5


@triton.jit
def _dot_kernel(a_ptr, b_ptr, c_ptr, M: tl.constexpr, K: tl.constexpr, N: tl.constexpr):
    m = tl.arange(0, M)
    k = tl.arange(0, K)
    n = tl.arange(0, N)
    a = tl.load(a_ptr + m[:, None] * K + k[None, :])
    b = tl.load(b_ptr + k[:, None] * N + n[None, :])
    acc = dot(a, b, tl.zeros((M, N), dtype=tl.float32))
    tl.store(c_ptr + m[:, None] * N + n[None, :], acc)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_dot_helper(dtype: torch.dtype) -> None:
    """The one dot helper gives the fp32-accumulated product for bf16 inputs in the interpreter
    (a raw tl.dot multiplies bf16 bit patterns there: GPU.md)."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(16, 32, generator=g).to(dtype)
    b = torch.randn(32, 16, generator=g).to(dtype)
    c = torch.empty(16, 16, device=DEVICE)
    _dot_kernel[(1,)](a.to(DEVICE), b.to(DEVICE), c, 16, 32, 16)
    torch.testing.assert_close(c.cpu(), a.float() @ b.float(), rtol=1e-5, atol=1e-5)
