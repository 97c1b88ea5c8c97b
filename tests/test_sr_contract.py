"""The stochastic-rounding contract of docs/spec.md §8 (revised keying), tested as a whole:

- exact unbiasedness: averaged over all 2**16 values of an element's random field, SR(v) is v to
  within 2**-16 of a storage step, for every format (subnormals, the int8 / fp8 per-row grids),
  in the reference AND in the Triton rounding (which must give the same code for every field);
- reproducibility: same seed, request and step, same codes;
- independence: rounding errors of two requests, or of two steps, are uncorrelated;
- sharing: the T per-token states of one request share their uniforms, and each of them is
  still unbiased (averaged over requests).
"""

from __future__ import annotations

import math
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0") else "cuda"

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from ssmbench_kernels.mamba2_states.reference import mamba2_intermediate_step, mamba2_mtp_step  # noqa: E402
from ssmbench_kernels.storage.kernel import format_code, quantize_tile  # noqa: E402
from ssmbench_kernels.storage.reference import QMAX, dequantize, quantize, sr_uniform  # noqa: E402

F64 = torch.float64
FIELDS = 2**16
FLOAT_GRIDS = {"bf16": (7, -126), "fp16": (10, -14)}  # mantissa bits, min normal exponent
E4M3 = (3, -6)


def all_fields_uniform(m: int) -> torch.Tensor:
    """(2**16, m): row f holds the uniform (f + 0.5) / 2**16 of field f for every column."""
    return ((torch.arange(FIELDS, dtype=F64) + 0.5) / FIELDS)[:, None].expand(FIELDS, m)


def spacing(x: float, mant: int, emin: int) -> float:
    e = max(math.frexp(abs(x))[1] - 1, emin) if x != 0 else emin
    return 2.0 ** (e - mant)


def sample_values(fmt: str) -> torch.Tensor:
    """One row of 64 values for ``fmt``: normals, subnormals, both signs, near binade edges; for
    int8 / fp8 the row's amax sets the scale, so the others land all over the code grid."""
    g = torch.Generator().manual_seed(len(fmt))
    if fmt in FLOAT_GRIDS:
        mant, emin = FLOAT_GRIDS[fmt]
        exps = torch.randint(emin - mant - 2, 8, (64,), generator=g).double()
        v = torch.exp2(exps) * (1 + torch.rand(64, generator=g, dtype=F64))
        v[:4] = torch.tensor([2.0**emin * 0.37, 2.0 ** (emin - mant) * 0.6, 1.0 + 2.0**-20, 2.0 ** (emin - 1) * 1.7])
    else:
        v = torch.randn(64, generator=g, dtype=F64) * torch.exp2(torch.randint(-14, 0, (64,), generator=g)).double()
        v[0] = 3.0  # amax
    v = v.float().double()  # kernels store fp32 values
    v[1::2] = -v[1::2]
    return v


def exact_bias_in_steps(fmt: str, v: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
    """|E_f[SR(v)] - v| in storage steps at v, the expectation exact (``stored``: one row per
    field, all 2**16). int8 / fp8 on the code grid: v is the row q' = clamp(fl32(v * inv)) with
    inv = fl32(QMAX / amax) (docs/spec.md §8), an independent restatement in fp32."""
    mean = stored.double().mean(dim=0)
    if fmt in FLOAT_GRIDS:
        steps = torch.tensor([spacing(x, *FLOAT_GRIDS[fmt]) for x in v.tolist()], dtype=F64)
        return (mean - v).abs() / steps
    qmax = torch.tensor(QMAX[fmt], dtype=torch.float32)
    inv = qmax / v.float().abs().max()
    q = (v.float() * inv).double().clamp(-QMAX[fmt], QMAX[fmt])
    steps = torch.ones_like(q) if fmt == "int8" else torch.tensor([spacing(x, *E4M3) for x in q.tolist()], dtype=F64)
    return (mean - q).abs() / steps


@pytest.mark.parametrize("fmt", ["bf16", "fp16", "int8", "fp8"])
def test_reference_sr_is_unbiased_to_2_pow_minus_16_exactly(fmt: str) -> None:
    v = sample_values(fmt)
    stored = quantize(v.expand(FIELDS, -1), fmt, "sr", all_fields_uniform(v.numel()))
    data = stored.data.double()
    bias = exact_bias_in_steps(fmt, v, data)
    assert bias.max().item() <= 2.0**-16, (fmt, bias.max().item())
    # and the two neighbours were both used wherever v is not representable
    moved = (data != data[:1]).any(dim=0)
    assert moved.float().mean() > 0.9, fmt


@triton.jit
def _round_all_fields_kernel(v_ptr, out_ptr, scale_ptr, RB: tl.constexpr, C: tl.constexpr, FMT: tl.constexpr):
    """Row f of the output: the row of values C rounded with field f for every column."""
    f = tl.program_id(0) * RB + tl.arange(0, RB)
    n = tl.arange(0, C)
    v = tl.load(v_ptr + n)
    values = v[None, :] + tl.zeros((RB, C), tl.float32)
    bits = f[:, None] + tl.zeros((RB, C), tl.int32)
    mask = (f[:, None] >= 0) & (n[None, :] < C)
    q, scale = quantize_tile(values, mask, bits, FMT, True)
    tl.store(out_ptr + f[:, None] * C + n[None, :], q)
    tl.store(scale_ptr + f, scale)


@pytest.mark.parametrize("fmt", ["bf16", "fp16", "int8", "fp8"])
def test_triton_rounding_equals_reference_for_every_field(fmt: str) -> None:
    """The Triton SR (integer compare for bf16, exact fp32 compare otherwise) picks the same
    neighbour as the reference for all 2**16 fields of every test value: bit-identical codes
    and, with them, the same exact bias."""
    v = sample_values(fmt)
    # rows (fields) per program: big tiles suit the interpreter; on the GPU a (4096, 64) tile is
    # 256 Ki elements in one program (a 2026-11-29 H200 run spent its 9 minutes compiling it)
    rb = 4096 if DEVICE == "cpu" else 64
    out = torch.empty(FIELDS, v.numel(), dtype=torch.float32, device=DEVICE)
    scale = torch.empty(FIELDS, dtype=torch.float32, device=DEVICE)
    _round_all_fields_kernel[(FIELDS // rb,)](v.float().to(DEVICE), out, scale, rb, v.numel(), format_code(fmt))
    ref = quantize(v.expand(FIELDS, -1), fmt, "sr", all_fields_uniform(v.numel()))
    want = ref.data.double()
    assert torch.equal(out.cpu().double(), want), f"{fmt}: {int((out.cpu().double() != want).sum())} codes differ"
    if ref.scale is not None:
        assert torch.equal(scale.cpu(), ref.scale)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


@pytest.mark.parametrize("fmt", ["bf16", "fp16", "int8", "fp8"])
def test_rounding_errors_independent_across_requests_and_steps(fmt: str) -> None:
    """The same state stored by two requests, or by one request in two steps: the rounding
    errors are uncorrelated (|r| under 5 / sqrt(n), n elements: a shared or shifted stream gives
    r near 1), and the same seed, request and step reproduce the codes exactly."""
    g = torch.Generator().manual_seed(3)
    shape = (16, 64, 128)  # (H, P, N) of one slot: 131072 elements
    state = torch.randn(shape, generator=g, dtype=F64).float().double()

    def errors(request: int, step: int, seed: int = 7) -> torch.Tensor:
        """SR(state) - state: zero-mean given the state when SR is unbiased."""
        u = sr_uniform(seed, torch.tensor(request), step, shape)
        return dequantize(quantize(state, fmt, "sr", u)) - state

    base = errors(5, 11)
    n = base.numel()
    assert torch.equal(base, errors(5, 11))
    for other in (errors(6, 11), errors(5, 12), errors(2**31 + 5, 11), errors(5, 11, seed=8)):
        r = correlation(base, other)
        assert abs(r) < 5 / math.sqrt(n), (fmt, r)
    assert correlation(base, errors(5, 11)) == pytest.approx(1.0)


def test_shared_uniforms_leave_every_per_token_state_unbiased() -> None:
    """One request's T per-token states share their uniforms (docs/spec.md §8); averaged over
    many requests (batch rows with the same state and inputs, distinct src slots), each stored
    S_t is the exact S_t within a Hoeffding bound, for every t; and within one request the T
    stores did use the same uniforms."""
    H, P, N, G, T, batch = 1, 4, 16, 1, 4, 1024
    g = torch.Generator().manual_seed(5)
    state0 = torch.randn(1, H, P, N, generator=g, dtype=F64)
    tok = dict(x=torch.randn(1, T, H, P, generator=g, dtype=F64),
               dt_raw=0.5 * torch.randn(1, T, H, generator=g, dtype=F64),
               B=torch.randn(1, T, G, N, generator=g, dtype=F64), C=torch.randn(1, T, G, N, generator=g, dtype=F64))
    tok = {k: v.expand(batch, *v.shape[1:]).contiguous() for k, v in tok.items()}
    prm = dict(A=-torch.ones(H, dtype=F64) * 0.5, D=torch.zeros(H, dtype=F64), dt_bias=torch.zeros(H, dtype=F64))
    n_slots = batch * (T + 1)
    pool = quantize(state0.expand(n_slots, H, P, N).contiguous(), "bf16")
    src = torch.arange(batch)
    dst = batch + torch.arange(batch * T).reshape(batch, T)
    _, new = mamba2_intermediate_step(pool, src, dst, **tok, **prm, rounding="sr", seed=1, step=9)
    _, exact = mamba2_mtp_step(pool, src[:1], **{k: v[:1] for k, v in tok.items()}, **prm)  # (1, T, H, P, N)
    stored = dequantize(new[dst])  # (batch, T, H, P, N)
    steps = 2.0 ** (torch.floor(torch.log2(exact.abs())) - 7)
    d = (stored.mean(dim=0) - exact[0]) / steps  # per element, in bf16 steps
    n_tests = d.numel()
    t = math.sqrt(math.log(2 * n_tests / 1e-6) / (2 * batch)) + 2.0**-17
    assert d.abs().max().item() < t, (d.abs().max().item(), t)
    # shared uniforms: each of the T stores of request r is quantize(S_t, u_r) with the one
    # draw u_r = sr_uniform(seed, r, step) (checked on the reference's own unrounded states)
    _, states = mamba2_mtp_step(pool, src[:3], **{k: v[:3] for k, v in tok.items()}, **prm)
    u = sr_uniform(1, src[:3], 9, (H, P, N))[:, None].expand(-1, T, -1, -1, -1)
    again = quantize(states, "bf16", "sr", u)
    assert torch.equal(new.data[dst[:3]].view(torch.int16), again.data.view(torch.int16))
