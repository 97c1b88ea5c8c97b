"""Storage formats (docs/spec.md §8): exact RN, unbiased reproducible SR, per-row scales, Philox == Triton."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ssmbench_kernels.storage.reference import (
    FORMATS,
    QMAX,
    REFERENCE_FORMATS,
    StoredState,
    bytes_per_element,
    dequantize,
    empty_pool,
    philox4x32,
    quantize,
    sr_fields,
    sr_uniform,
    storage_dtype,
)

REPO = Path(__file__).resolve().parents[1]
U_LAST = 1.0 - 2.0**-17  # the largest uniform sr_uniform can produce: (65535 + 0.5) / 2**16
# (stored mantissa bits, smallest normal exponent, torch dtype, integer view dtype)
FLOAT_FMTS = {
    "fp32": (23, -126, torch.float32, torch.int32),
    "bf16": (7, -126, torch.bfloat16, torch.int16),
    "fp16": (10, -14, torch.float16, torch.int16),
}
E4M3 = (3, -6)
MANT = {dtype: mant for mant, _, dtype, _ in FLOAT_FMTS.values()}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _log_uniform(n: int, lo_exp: float, hi_exp: float, g: torch.Generator) -> torch.Tensor:
    """fp64 values with magnitudes log-uniform in [2**lo_exp, 2**hi_exp) and random signs."""
    e = lo_exp + (hi_exp - lo_exp) * torch.rand(n, generator=g, dtype=torch.float64)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
    return sign * torch.exp2(e)


def _spacing(v: float, mant: int, emin: int) -> float:
    """Grid spacing around v in a binary format, computed with Python's math (independently)."""
    if v == 0.0:
        return math.ldexp(1.0, emin - mant)
    _, e = math.frexp(abs(v))
    return math.ldexp(1.0, max(e - 1, emin) - mant)


def _bits(t: torch.Tensor, view: torch.dtype) -> torch.Tensor:
    return t.contiguous().view(view)


def _midpoints(dtype: torch.dtype, n: int, g: torch.Generator) -> torch.Tensor:
    """fp64 midpoints between random finite neighbours of ``dtype`` (normal and subnormal)."""
    fi = torch.finfo(dtype)
    lo_exp = math.log2(fi.smallest_normal) - MANT[dtype]
    h = _log_uniform(n, lo_exp, math.log2(fi.max) - 0.01, g).to(dtype)
    nxt = torch.nextafter(h, torch.full_like(h, float("inf")))
    return (h.double() + nxt.double()) / 2


# ---------------------------------------------------------------------------------------------
# RN
# ---------------------------------------------------------------------------------------------


def test_rn_matches_torch_single_roundings() -> None:
    """Where torch rounds once (fp32 -> bf16/fp16, fp64 -> fp32), RN must match it bit for bit,
    over normals, subnormals, overflow and exact ties."""
    g = _gen(1)
    for fmt, (_, _, dtype, view) in FLOAT_FMTS.items():
        if fmt == "fp32":
            src = torch.cat([_log_uniform(20000, -152, 128.5, g), _midpoints(torch.float32, 5000, g)])
        else:
            fi = torch.finfo(dtype)
            hi = math.log2(fi.max) + 0.5
            lo = math.log2(fi.smallest_normal) - MANT[dtype] - 3
            ties = _midpoints(dtype, 5000, g)
            src = torch.cat([_log_uniform(20000, lo, hi, g), ties]).to(torch.float32)
            assert torch.equal(src.double()[-5000:], ties)  # the ties are exact fp32 values
        ours = quantize(src, fmt, "rn").data
        assert ours.dtype == dtype
        assert torch.equal(_bits(ours, view), _bits(src.to(dtype), view)), fmt
        assert torch.isinf(ours).any(), f"{fmt}: overflow to inf not exercised"


def test_rn_fp64_input_rounds_once() -> None:
    """fp64 values just off a bf16/fp16 midpoint must round to the near side; going through
    fp32 first would land on the midpoint and round to even (torch's own casts do that)."""
    g = _gen(2)
    for fmt in ("bf16", "fp16"):
        dtype, view = FLOAT_FMTS[fmt][2], FLOAT_FMTS[fmt][3]
        mid = _midpoints(dtype, 4000, g)
        below = mid.to(dtype)  # mid is exact in fp32 and torch rounds it once here: the even side
        up = torch.nextafter(below, torch.full_like(below, float("inf")))
        down = torch.nextafter(below, torch.full_like(below, float("-inf")))
        even_is_lower = below.double() < mid  # mid rounded down
        lower = torch.where(even_is_lower, below, down)
        upper = torch.where(even_is_lower, up, below)
        gap = upper.double() - lower.double()
        for sign, want in ((1.0, upper), (-1.0, lower)):
            v = mid + sign * gap * 2.0**-30
            assert torch.equal(_bits(quantize(v, fmt, "rn").data, view), _bits(want, view)), fmt
        # known case: 1 + 2**-8 + 2**-30 is above the bf16 midpoint 1 + 2**-8
    v = torch.tensor([1 + 2**-8 + 2**-30, -(1 + 2**-11 + 2**-40)], dtype=torch.float64)
    assert quantize(v[:1], "bf16").data.item() == 1 + 2**-7
    assert quantize(v[1:], "fp16").data.item() == -(1 + 2**-10)


def test_rn_nonfinite_and_signed_zero() -> None:
    v = torch.tensor([float("nan"), float("inf"), float("-inf"), -0.0, 0.0, -1e-300], dtype=torch.float64)
    for fmt in ("fp32", "bf16", "fp16"):
        for rounding in ("rn", "sr"):
            out = quantize(v, fmt, rounding, torch.zeros_like(v)).data.double()
            assert math.isnan(out[0]) and out[1] == math.inf and out[2] == -math.inf
            assert [math.copysign(1.0, x) for x in out[3:].tolist()] == [-1.0, 1.0, -1.0]
            assert out[3:].abs().max() == 0.0 or rounding == "sr"


# ---------------------------------------------------------------------------------------------
# SR on float grids
# ---------------------------------------------------------------------------------------------


def _sr_cases(fmt: str, g: torch.Generator) -> torch.Tensor:
    """Inputs whose correct RN torch computes (single rounding): fp64 for fp32, fp32 for 16-bit."""
    dtype = FLOAT_FMTS[fmt][2]
    fi = torch.finfo(dtype)
    lo = math.log2(fi.smallest_normal) - MANT[dtype] - 3
    hi = math.log2(fi.max) + 0.3
    if fmt == "bf16":  # stay finite in fp32, and add values between bf16's and fp32's max
        hi = 127.99
        extra = torch.tensor([3.39e38, -3.4e38, float(torch.finfo(torch.float32).max)], dtype=torch.float64)
    else:
        extra = torch.zeros(0, dtype=torch.float64)
    v = torch.cat([_log_uniform(20000, lo, hi, g), extra])
    return v if fmt == "fp32" else v.to(torch.float32)


def test_sr_picks_the_two_neighbours() -> None:
    """SR rounds the magnitude: the smallest uniform gives the neighbour farther from zero, the
    largest (1 - 2**-17) the one nearer to zero (unless |v|'s fraction between them exceeds it);
    neighbours from torch's RN and nextafter. Beyond max finite SR saturates to +-max."""
    g = _gen(3)
    for fmt, (_, _, dtype, view) in FLOAT_FMTS.items():
        v = _sr_cases(fmt, g)
        v64 = v.double()
        c = v.to(dtype)
        lo = torch.where(c.double() > v64, torch.nextafter(c, torch.full_like(c, -math.inf)), c)
        hi = torch.where(c.double() < v64, torch.nextafter(c, torch.full_like(c, math.inf)), c)
        fmax = torch.finfo(dtype).max
        lo, hi = lo.clamp(-fmax, fmax), hi.clamp(-fmax, fmax)  # saturation
        neg = v64 < 0
        far, near = torch.where(neg, lo, hi), torch.where(neg, hi, lo)  # in magnitude
        assert (v64.abs() > fmax).any() and (v64.abs() < torch.finfo(dtype).smallest_normal).any()
        assert neg.any() and (~neg).any()
        up = quantize(v, fmt, "sr", torch.full_like(v64, 2.0**-17)).data
        assert torch.equal(_bits(up, view), _bits(far, view)), fmt
        down = quantize(v, fmt, "sr", torch.full_like(v64, U_LAST)).data
        frac = (v64.abs() - near.double().abs()) / (far.double().abs() - near.double().abs())
        ok = ~(frac > U_LAST)  # nan (exact values) counts as ok
        assert ok.float().mean() > 0.99
        assert torch.equal(_bits(down[ok], view), _bits(near[ok], view)), fmt
        assert not torch.isinf(up).any() and not torch.isinf(down).any()


def test_sr_decision_rule_is_exact() -> None:
    """The magnitude moves up iff u < F, F = (|v| - near) / (far - near), at the exact boundary,
    for normals, subnormals (fp16's too), below the smallest subnormal, and both signs (the rule
    is the same for -v: it is stated on |v|)."""
    for fmt, (mant, emin, dtype, _) in FLOAT_FMTS.items():
        for base, spacing in (
            (1.5, 2.0**-mant),  # normal
            (2.0, 2.0 ** (1 - mant)),  # normal, next binade
            (2.0 ** (emin - 2), 2.0 ** (emin - mant)),  # subnormal
            (2.0 ** (emin - mant), 2.0 ** (emin - mant)),  # smallest subnormal
            (0.0, 2.0 ** (emin - mant)),  # below the smallest subnormal
        ):
            for f in (0.25, 0.5, 0.75, 2.0**-20):
                for sign in (1.0, -1.0):
                    v = torch.tensor([sign * (base + f * spacing)] * 2, dtype=torch.float64)
                    u = torch.tensor([f - 2.0**-24, f], dtype=torch.float64)
                    out = quantize(v, fmt, "sr", u).data.double()
                    assert out.tolist() == [sign * (base + spacing), sign * base], (fmt, base, f, sign)
                    assert quantize(v, fmt, "sr", u).data.dtype == dtype


def test_sr_keeps_representable_values_exact() -> None:
    g = _gen(4)
    for fmt, (_, _, dtype, _) in FLOAT_FMTS.items():
        fi = torch.finfo(dtype)
        v = _log_uniform(5000, math.log2(fi.smallest_normal) - MANT[dtype], math.log2(fi.max), g).to(dtype)
        v = torch.cat([v, torch.tensor([0.0, -0.0, fi.max, -fi.max, fi.tiny], dtype=dtype)]).double()
        for u in (0.0, 0.5, U_LAST):
            out = quantize(v, fmt, "sr", torch.full_like(v, u)).data.double()
            assert torch.equal(out, v), (fmt, u)


def _q_prime(v: torch.Tensor, fmt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent restatement of the scaled path before grid rounding, in plain fp32 arithmetic
    (IEEE division and multiplication on the CPU): (scale, q'), with scale = amax / QMAX,
    inv = QMAX / amax per row and q' = clamp(v * inv); rows with amax < 2**-64 pre-scaled by
    2**64 (exact)."""
    v32 = v.to(torch.float32)
    amax = v32.abs().amax(dim=-1)
    qmax = torch.tensor(QMAX[fmt], dtype=torch.float32)
    one = torch.ones_like(amax)
    scale = torch.where(amax > 0, amax / qmax, one)
    pre = torch.where(amax < 2.0**-64, torch.full_like(amax, 2.0**64), one)
    inv = torch.where(amax > 0, qmax / (amax * pre), one)
    q = ((v32 * pre.unsqueeze(-1)) * inv.unsqueeze(-1)).double().clamp(-QMAX[fmt], QMAX[fmt])
    return scale, q


def _stat_values(fmt: str, m: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row of M values, q' = the values on the grid's scale, spacing of q') for the SR test."""
    if fmt in FLOAT_FMTS:
        mant, emin, dtype, _ = FLOAT_FMTS[fmt]
        fi = torch.finfo(dtype)
        v = _log_uniform(m, math.log2(fi.smallest_normal) - MANT[dtype] - 2, 10.0, g)
        # a few values at known fractions between neighbours, subnormal and normal
        for i, (base, sp) in enumerate(((2.0 ** (emin - 3), 2.0 ** (emin - mant)), (1.0, 2.0**-mant))):
            v[8 * i : 8 * i + 8] = base + sp * torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9, 0.01, 0.99, 0.37])
        q = v
        sp = torch.tensor([_spacing(x, mant, emin) for x in q.tolist()], dtype=torch.float64)
        return v, q, sp
    # scaled formats: amax = QMAX (scale exactly 1 if not for the fp32 roundings) + smaller values
    v = _log_uniform(m, -12.0, math.log2(QMAX[fmt]), g)
    v[0] = QMAX[fmt] * 0.999
    _, q = _q_prime(v, fmt)
    if fmt == "int8":
        sp = torch.ones_like(q)
    else:
        sp = torch.tensor([_spacing(x, *E4M3) for x in q.tolist()], dtype=torch.float64)
    return v, q, sp


def test_sr_is_unbiased() -> None:
    """E[SR(v)] = v (int8/fp8: E[q] = q'), subnormals included, for every format.

    Statistic: per value i, d_i = (mean over n draws of SR(v_i) - v_i) / spacing_i. Under a
    correct SR every draw lies in {lo - v, hi - v}, an interval of width spacing_i, and the true
    mean bias is at most 2**-17 spacing (u has 16 bits, centred), so Hoeffding's inequality gives
    P(|d_i| >= t + 2**-17) <= 2 exp(-2 n t**2) with no normal approximation. With M = 256
    values in each of 5 formats (1280 tests), n = 8192 draws and
    t = sqrt(ln(2 * 1280 / 1e-6) / (2 n)) ~= 0.036, the union bound puts the false-failure
    probability below 1e-6 (treating Philox outputs as independent uniforms; with the fixed seed
    the test is deterministic). A truncating, RN or off-grid implementation is biased by up to
    half a spacing on most values and fails.
    """
    n, m, n_tests = 8192, 256, 5 * 256
    t = math.sqrt(math.log(2 * n_tests / 1e-6) / (2 * n)) + 2.0**-17
    g = _gen(5)
    for k, fmt in enumerate(FORMATS):
        v, q, sp = _stat_values(fmt, m, g)
        u = sr_uniform(1234 + k, torch.arange(n), 7, (m,))  # (n, m): a fresh uniform per draw
        stored = quantize(v.expand(n, m), fmt, "sr", u)
        if fmt in FLOAT_FMTS:
            got = stored.data.double()
        else:
            got = stored.data.double()
            assert torch.equal(stored.scale, stored.scale[:1].expand(n))  # one row, one scale
        assert ((got - q).abs() < sp).all(), fmt  # every draw is a neighbour
        d = (got.mean(dim=0) - q) / sp
        assert d.abs().max().item() < t, (fmt, d.abs().max().item(), t)
        # the draws did mix: most non-representable values went both ways
        both = ((got > q).any(dim=0) & (got < q).any(dim=0)).float().mean()
        assert both > 0.5, fmt


# ---------------------------------------------------------------------------------------------
# Reproducibility and Philox
# ---------------------------------------------------------------------------------------------


def test_sr_uniform_reproducible_and_distinct() -> None:
    requests = torch.tensor([3, 0, 7])
    base = sr_uniform(42, requests, 5, (4, 8, 16))
    fields = sr_fields(42, requests, 5, (4, 8, 16))
    assert base.shape == fields.shape == (3, 4, 8, 16) and base.dtype == torch.float64
    assert ((fields >= 0) & (fields < 2**16)).all()
    assert torch.equal(base, (fields.double() + 0.5) * 2.0**-16)  # 16-bit fields, centred
    assert torch.equal(base, sr_uniform(42, requests.clone(), 5, (4, 8, 16)))
    # a request's numbers do not depend on the batch it is drawn in
    assert torch.equal(base[1], sr_uniform(42, torch.tensor(0), 5, (4, 8, 16)))
    for other in (
        sr_uniform(43, requests, 5, (4, 8, 16)),
        sr_uniform(42, requests, 6, (4, 8, 16)),
        sr_uniform(42, requests + 1, 5, (4, 8, 16)),
        sr_uniform(2**32 + 42, requests, 5, (4, 8, 16)),  # the seed's high word matters
    ):
        assert (other != base).float().mean() > 0.99
    # elements within a row differ too (8 columns share one call's 128 bits, 16 each)
    assert torch.unique(base).numel() > 0.97 * base.numel()
    # the keying, restated: counter (row, n // 8, request, step), column n gets the 16-bit
    # half n % 2 of out[(n % 8) // 2]
    for i, h, p, n in ((0, 0, 0, 0), (0, 3, 7, 15), (1, 2, 5, 6), (2, 1, 0, 13), (1, 0, 4, 3), (2, 3, 7, 9)):
        out = philox4x32(42, h * 8 + p, n // 8, int(requests[i]), 5)
        want = (int(out[(n % 8) // 2]) >> (16 * (n % 2))) & 0xFFFF
        assert fields[i, h, p, n].item() == want, (i, h, p, n)
    # row lengths that are not a multiple of 8: the first columns of the longer row's numbers
    assert torch.equal(sr_uniform(42, requests, 5, (4, 8, 10)), base[..., :10])
    assert torch.equal(sr_uniform(42, requests, 5, (32, 3)), base.reshape(3, 32, 16)[..., :3])
    v = torch.randn(3, 4, 8, 16, generator=_gen(6), dtype=torch.float64)
    for fmt in FORMATS:
        a = quantize(v, fmt, "sr", base)
        b = quantize(v.clone(), fmt, "sr", base.clone())
        assert torch.equal(_bits(a.data, torch.uint8), _bits(b.data, torch.uint8)), fmt
        c = quantize(v, fmt, "sr", sr_uniform(43, requests, 5, (4, 8, 16)))
        assert not torch.equal(dequantize(a), dequantize(c)), fmt


def test_philox_known_answers() -> None:
    """Random123's philox4x32_10 known-answer vectors (kat_vectors), which Triton also matches."""
    cases = [
        (0, (0, 0, 0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        (2**64 - 1, (0xFFFFFFFF,) * 4, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            0x299F31D0A4093822,
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ]
    for seed, ctr, want in cases:
        got = philox4x32(seed, *ctr)
        assert tuple(int(x) for x in got) == want
    # -1 as int32 counters and an int64 seed of -1 are the same bits
    assert tuple(int(x) for x in philox4x32(-1, -1, -1, -1, -1)) == cases[1][2]


_TRITON_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    import triton
    import triton.language as tl

    @triton.jit
    def philox_kernel(seed, c0p, c1p, c2p, c3p, out, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        c0 = tl.load(c0p + offs, mask=m)
        c1 = tl.load(c1p + offs, mask=m)
        c2 = tl.load(c2p + offs, mask=m)
        c3 = tl.load(c3p + offs, mask=m)
        r0, r1, r2, r3 = tl.philox(seed, c0, c1, c2, c3)
        tl.store(out + offs, r0.to(tl.int32, bitcast=True), mask=m)
        tl.store(out + n + offs, r1.to(tl.int32, bitcast=True), mask=m)
        tl.store(out + 2 * n + offs, r2.to(tl.int32, bitcast=True), mask=m)
        tl.store(out + 3 * n + offs, r3.to(tl.int32, bitcast=True), mask=m)

    @triton.jit
    def uniform_kernel(seed, slot, step, out, n_rows, n_col, RB: tl.constexpr, GB: tl.constexpr):
        # the storage keying: counter (row, n // 8, request, step), column n gets the 16-bit
        # half n % 2 of out[(n % 8) // 2]; here each half is stored at its own column (no join)
        r = tl.program_id(0) * RB + tl.arange(0, RB)
        grp = tl.arange(0, GB)
        zero = (r[:, None] * 0 + grp[None, :] * 0).to(tl.int64)
        c0 = (zero + r[:, None]).to(tl.uint32)
        c1 = (zero + grp[None, :]).to(tl.uint32)
        r0, r1, r2, r3 = tl.philox(seed, c0, c1, (zero + slot).to(tl.uint32), (zero + step).to(tl.uint32))
        base = out + r[:, None] * n_col + 8 * grp[None, :]
        for k, rk in ((0, r0), (1, r1), (2, r2), (3, r3)):
            for half in (0, 1):
                f = ((rk >> (16 * half)) & 0xFFFF).to(tl.float32)
                u = (f + 0.5) * (1.0 / 65536.0)
                tl.store(base + 2 * k + half, u, mask=(r < n_rows)[:, None] & (8 * grp[None, :] + 2 * k + half < n_col))

    data = torch.load(sys.argv[1])
    c = data["counters"]
    n = c.shape[1]
    res = {"philox": [], "uniform": []}
    for seed in data["seeds"]:
        out = torch.empty(4 * n, dtype=torch.int32)
        philox_kernel[(triton.cdiv(n, 128),)](seed, c[0], c[1], c[2], c[3], out, n, BLOCK=128)
        res["philox"].append(out.view(4, n))
    for seed, slot, step, n_rows, n_col in data["uniform_cases"]:
        out = torch.empty(n_rows, n_col, dtype=torch.float32)
        gb = triton.next_power_of_2(triton.cdiv(n_col, 8))
        uniform_kernel[(triton.cdiv(n_rows, 8),)](seed, slot, step, out, n_rows, n_col, RB=8, GB=gb)
        res["uniform"].append(out)
    torch.save(res, sys.argv[2])
    """
)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_philox_bit_identical_to_triton(tmp_path: Path) -> None:
    """Our torch Philox against Triton's own tl.philox, run by the Triton interpreter in a
    subprocess (TRITON_INTERPRET must be set before triton is imported; other tests may have
    imported it already in this process)."""
    g = _gen(7)
    counters = torch.randint(-(2**31), 2**31, (4, 1000), generator=g, dtype=torch.int64).to(torch.int32)
    counters[:, :3] = torch.tensor([[0, -1, 2**31 - 1]] * 4, dtype=torch.int32)
    seeds = [0, 1, 12345, 2**32 - 1, 2**32, 0x299F31D0A4093822, 2**63 - 1, -1, -(2**40) + 7]
    uniform_cases = [
        (0, 0, 0, 3, 300),
        (987654321, 4095, 17, 20, 37),
        (2**33 + 5, 2**31 - 1, 2**32 - 1, 2, 64),
        (-7, -1, 5, 9, 6),  # a padding slot (-1: counter word 0xffffffff)
    ]
    inp, outp = tmp_path / "in.pt", tmp_path / "out.pt"
    torch.save({"counters": counters, "seeds": seeds, "uniform_cases": uniform_cases}, inp)
    script = tmp_path / "run_triton_philox.py"
    script.write_text(_TRITON_SCRIPT)
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, str(script), str(inp), str(outp)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = torch.load(outp)
    c64 = counters.to(torch.int64)
    for seed, triton_out in zip(seeds, res["philox"], strict=True):
        ours = torch.stack(philox4x32(seed, c64[0], c64[1], c64[2], c64[3]))
        assert torch.equal(ours, triton_out.to(torch.int64) & 0xFFFFFFFF), hex(seed)
    for (seed, slot, step, n_rows, n_col), triton_u in zip(uniform_cases, res["uniform"], strict=True):
        ours = sr_uniform(seed, torch.tensor(slot), step, (n_rows, n_col))
        assert torch.equal(ours, triton_u.double()), (seed, slot, step)


# ---------------------------------------------------------------------------------------------
# int8 / fp8 with per-row scales
# ---------------------------------------------------------------------------------------------


def _e4m3_spacing(q: torch.Tensor) -> torch.Tensor:
    return torch.tensor([_spacing(x, *E4M3) for x in q.flatten().tolist()], dtype=torch.float64).view(q.shape)


def _scaled_rows(g: torch.Generator) -> torch.Tensor:
    """Rows (64, 32) with magnitudes over many decades, so fp8 rows reach e4m3 subnormals."""
    rows = torch.randn(64, 32, generator=g, dtype=torch.float64)
    rows = rows * torch.exp2(torch.randint(-20, 20, (64, 1), generator=g)).double()
    rows[:8] *= torch.exp2(-12 * torch.rand(8, 32, generator=g, dtype=torch.float64))  # wide rows
    rows[8, :] = 0.0  # a zero row
    rows[9, :] = -0.0
    return rows


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_scaled_error_bounds(fmt: str) -> None:
    """RN error <= half a local step (times scale), SR error < one step; the error is measured
    against q' (the fp32 quotient the kernel rounds) and, looser, against the fp64 input."""
    g = _gen(8)
    v = _scaled_rows(g)
    scale, q = _q_prime(v, fmt)
    step = torch.ones_like(q) if fmt == "int8" else _e4m3_spacing(q)
    rn = quantize(v, fmt, "rn")
    assert rn.data.dtype == storage_dtype(fmt) and rn.scale.dtype == torch.float32
    assert rn.scale.shape == v.shape[:-1] and torch.equal(rn.scale, scale)
    err_rn = (rn.data.double() - q).abs()
    assert (err_rn <= step / 2).all()
    assert (err_rn == step / 2).sum() < 5  # exact ties are rare here: the bound is not vacuous
    assert (rn.data.double().abs() <= QMAX[fmt]).all()
    # against the input: half a step plus the four fp32 roundings (v -> fp32, scale, inv and
    # the product v * inv; q' * scale = v (1 + d)**4 with |d| <= 2**-24), with slack
    tol = step / 2 * scale.double()[:, None] + v.abs() * 5 * 2.0**-24
    assert ((dequantize(rn) - v).abs() <= tol).all()
    for seed in range(3):
        u = sr_uniform(seed, torch.arange(v.shape[0]), 0, (v.shape[1],))
        sr = quantize(v, fmt, "sr", u)
        assert torch.equal(sr.scale, scale)
        assert ((sr.data.double() - q).abs() < step).all()
    if fmt == "fp8":  # RN on the e4m3 grid is torch's fp32 -> e4m3fn cast, bit for bit
        want = q.float().to(torch.float8_e4m3fn)
        assert torch.equal(_bits(rn.data, torch.uint8), _bits(want, torch.uint8))
        assert ((q.abs() > 0) & (q.abs() < 2.0**-6)).any()  # e4m3 subnormals exercised
    else:
        assert torch.equal(rn.data.double(), torch.round(q))


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_scaled_amax_zero_rows_and_exact_grids(fmt: str) -> None:
    qmax = QMAX[fmt]
    g = _gen(9)
    v = torch.randn(50, 16, generator=g, dtype=torch.float64) * torch.rand(
        50, 1, generator=g, dtype=torch.float64
    )
    # amax elements with fl32(amax * fl32(QMAX / amax)) > QMAX (~13% of random amax): the clamp
    # brings q' back to exactly +-QMAX there, so SR with any u stores +-QMAX (without the clamp,
    # int8 SR with a small u would pick 128). Elsewhere q' is within an fp32 ulp below QMAX, so
    # under RN the amax element always stores exactly +-QMAX.
    v[0, 0] = 49.62665939331055 if fmt == "int8" else 49.01034164428711
    idx = v.abs().argmax(dim=-1)
    amax32 = v.float().abs().amax(-1)
    above = amax32 * (torch.tensor(qmax, dtype=torch.float32) / amax32) > qmax
    assert above.any() and not above.all(), "test rows must include amax whose q' rounds above QMAX"
    s = quantize(v, fmt, "rn")
    q_amax = s.data.double().gather(1, idx[:, None]).squeeze(1)
    assert torch.equal(q_amax, torch.sign(v.gather(1, idx[:, None]).squeeze(1)) * qmax)
    s0 = quantize(v, fmt, "sr", torch.zeros_like(v))
    assert torch.equal(s0.data.double().gather(1, idx[:, None]).squeeze(1)[above], q_amax[above])
    # zero rows: scale 1, zeros stored, zeros read back
    z = torch.zeros(3, 16, dtype=torch.float64)
    for rounding in ("rn", "sr"):
        zs = quantize(z, fmt, rounding, torch.full_like(z, 0.5))
        assert torch.equal(zs.scale, torch.ones(3)) and torch.equal(dequantize(zs), z)
    # rows already on the grid (power-of-two scale s, amax = qmax * s) round-trip exactly
    s_pow = torch.exp2(torch.randint(-30, 30, (50, 1), generator=g)).double()
    if fmt == "int8":
        k = torch.randint(-127, 128, (50, 16), generator=g).double()
    else:
        k = (
            torch.randn(50, 16, generator=g)
            .mul(100)
            .clamp(-448, 448)
            .float()
            .to(torch.float8_e4m3fn)
            .double()
        )
    k[:, 0] = qmax
    grid_vals = k * s_pow
    for rounding in ("rn", "sr"):
        gs = quantize(grid_vals, fmt, rounding, torch.rand(50, 16, generator=g, dtype=torch.float64))
        assert torch.equal(gs.scale.double(), s_pow.squeeze(1))
        assert torch.equal(dequantize(gs), grid_vals), rounding


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_scaled_tiny_rows(fmt: str) -> None:
    """Rows with amax < 2**-64 are pre-scaled by 2**64: where fl32(QMAX / amax) is finite that
    gives exactly the unscaled formula's q' (the same real product v * inv); where it would
    overflow fp32 (amax below ~QMAX / 3.4e38) codes stay finite, zeros stay zero and the amax
    element stores +-QMAX under RN. The scale is amax / QMAX as always (subnormal, so coarse,
    for the smallest rows)."""
    qmax = QMAX[fmt]
    g = _gen(12)
    mags = [2.0**-65, 2.0**-100, 2.0**-118, 1e-37, 1e-38, 2.0**-140, 1e-44]
    v = torch.randn(len(mags), 24, generator=g, dtype=torch.float64) * torch.tensor(mags)[:, None]
    v[:, 1] = 0.0
    v[:, 2] = -0.0
    v32 = v.float()
    amax = v32.abs().amax(-1)
    inv_plain = torch.tensor(qmax, dtype=torch.float32) / amax  # no pre-scaling
    finite = torch.isfinite(inv_plain)
    assert finite.any() and not finite.all(), "need rows on both sides of the overflow"
    rn = quantize(v, fmt, "rn")
    scale, q = _q_prime(v, fmt)
    assert torch.equal(rn.scale, scale)
    plain = (v32 * inv_plain[:, None]).double().clamp(-qmax, qmax)
    assert torch.equal(q[finite], plain[finite])
    codes = rn.data.double()
    assert torch.isfinite(codes).all() and (codes[:, 1:3] == 0).all()
    idx = v32.abs().argmax(-1, keepdim=True)
    assert torch.equal(codes.gather(1, idx).abs().squeeze(1), torch.full((len(mags),), qmax))
    want = torch.round(q) if fmt == "int8" else q.float().to(torch.float8_e4m3fn).double()
    assert torch.equal(codes, want)


def test_scaled_decision_rule_and_ties() -> None:
    """Scale exactly 1 (amax = QMAX): RN ties to even on the int grid and on the e4m3 grid
    (subnormal spacing 2**-9), SR takes hi iff u < fraction."""
    iv = torch.tensor([127.0, 2.5, 3.5, -2.5, 0.5, 1.25], dtype=torch.float64)
    rn = quantize(iv, "int8", "rn")
    assert rn.scale.item() == 1.0 and rn.data.tolist() == [127, 2, 4, -2, 0, 1]
    u = torch.tensor([0.9, 0.5 - 2**-24, 0.5, 0.5, 0.5 - 2**-24, 0.25], dtype=torch.float64)
    # -2.5: magnitude 2.5, fraction 0.5 -> u = 0.5 is not < 0.5 -> the nearer magnitude, -2
    assert quantize(iv, "int8", "sr", u).data.tolist() == [127, 3, 3, -2, 1, 1]
    sub = 2.0**-9
    fv = torch.tensor(
        [448.0, 2.5 * sub, 3.5 * sub, 1.5 * sub, 0.25 * sub, 8.5, -12.5, 440.0], dtype=torch.float64
    )
    rn = quantize(fv, "fp8", "rn")
    assert rn.scale.item() == 1.0
    assert rn.data.double().tolist() == [448.0, 2 * sub, 4 * sub, 2 * sub, 0.0, 8.0, -12.0, 448.0]
    u = torch.tensor(
        [0.0, 0.5, 0.5 - 2**-24, 0.5, 0.25 - 2**-24, 0.5 - 2**-24, 0.5, 0.75], dtype=torch.float64
    )
    # on [8, 16) the spacing is 1: 8.5 -> 9 iff u < .5; -12.5 (magnitude 12.5) -> -13 iff u < .5;
    # 440 = 416 + 0.75 * 32: RN 448, SR with u = .75 (not < .75) -> 416
    want = [448.0, 2 * sub, 4 * sub, 1 * sub, sub, 9.0, -12.0, 416.0]
    assert quantize(fv, "fp8", "sr", u).data.double().tolist() == want


# ---------------------------------------------------------------------------------------------
# API
# ---------------------------------------------------------------------------------------------


def test_api_and_validation() -> None:
    v = torch.randn(2, 3, 8, dtype=torch.float64)
    assert torch.equal(quantize(v, "fp64", "sr").data, v)  # fp64 is exact, needs no uniforms
    for fmt in REFERENCE_FORMATS:
        pool = empty_pool((4, 3, 8), fmt)
        assert pool.data.dtype == storage_dtype(fmt) and bytes_per_element(fmt) == pool.data.element_size()
        assert (pool.scale is not None) == (fmt in QMAX)
        pool[1:3] = quantize(v, fmt, "rn")
        back = dequantize(pool[1:3])
        assert back.shape == v.shape and back.dtype == torch.float64
        assert isinstance(pool.clone(), StoredState)
    with pytest.raises(ValueError):
        quantize(v, "fp32", "sr")  # no uniforms
    with pytest.raises(ValueError):
        quantize(v, "fp32", "sr", torch.zeros(3))
    with pytest.raises(ValueError):
        quantize(v, "fp4")
    with pytest.raises(ValueError):
        quantize(v, "bf16", "rz")
    with pytest.raises(ValueError):
        sr_uniform(0, torch.tensor([0]), 2**32, (4,))
    with pytest.raises(ValueError):
        sr_uniform(0, torch.tensor([0]), 0, ())
    with pytest.raises(ValueError):
        empty_pool((2, 2), "e5m2")
