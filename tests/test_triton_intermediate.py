"""Triton Mamba-2 intermediate kernel (docs/spec.md §5) against `mamba2_intermediate_step`, in the CPU
interpreter: every storage format x RN/SR, linear chain and random trees, z on/off, padding rows,
permuted pool slots, non-power-of-two head_dim and dstate, poisoned outputs and dst slots.

Tolerances (kernel: fp32 arithmetic, states rounded once when stored; reference: fp64, rounded
once when stored, same Philox uniforms):

- y (bf16 output): one bf16 rounding plus fp32-vs-fp64 drift: ``|d| <= 2**-7 |ref| + 1e-2 *
  max|ref|`` per (row, token, head) block (fp32 accumulation over N plus the bf16 output ulp);
  fp32 states keep the drift to ~1e-6 relative, so the budget is the output rounding.
- stored states, after dequantize: at most one storage spacing apart (a rounding decision may
  flip where the fp32 and fp64 pre-rounding values straddle a tie (RN) or the uniform (SR)):
  fp32 ``1e-5 * row amax``; bf16 ``2**-7 |ref|``; fp16 ``2**-10 |ref| + 2**-24``; int8 one code
  ``scale``; fp8 ``2**-3 |ref| + 2**-9 scale`` (spacing of e4m3 normals / subnormals), each
  plus ``1e-5 * row amax`` for the fp32 drift (scales can differ in the last bit too). The
  spacing terms carry 1% slack: a flip at a power of two is exactly ``2**-7 |ref|`` (bf16).
- and, because both sides draw the same uniforms, the stored codes are bit-identical for at
  least 99% of the elements of every non-fp32 format (uniforms of another step give 69-84%
  here); the misses are the straddling cases above.
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

from ssmbench_kernels.mamba2_states.kernel import (  # noqa: E402
    KERNEL_NAMES,
    IntermediateKnobs,
    default_knobs,
    mamba2_intermediate,
)
from ssmbench_kernels.mamba2_states.reference import mamba2_intermediate_step  # noqa: E402
from ssmbench_kernels.storage.kernel import STORAGE_DTYPES  # noqa: E402
from ssmbench_kernels.storage.reference import StoredState, dequantize, one_step_bound, quantize  # noqa: E402

SCALED = ("int8", "fp8")


def _random_tree(batch: int, T: int, g: torch.Generator) -> torch.Tensor:
    parent = torch.full((batch, T), -1, dtype=torch.int64)
    for t in range(1, T):
        parent[:, t] = torch.randint(-1, t, (batch,), generator=g)
    return parent


def _make(batch, T, H, P, N, G, fmt, *, n_pad=1, with_z=True, tree=False, seed=0):
    """Inputs in production layout + the reference's views of the same numbers."""
    g = torch.Generator().manual_seed(seed)
    act = torch.bfloat16
    conv_dim = H * P + 2 * G * N
    rows = batch * T
    conv_out = torch.randn(rows, conv_dim, generator=g).to(act)
    dt_raw = (torch.randn(rows, H, generator=g) - 1.0).to(act)
    dt_raw[0, 0] = 30.0  # softplus threshold branch (u > 20)
    z = torch.randn(rows, H * P, generator=g).to(act) if with_z else None
    A = -torch.exp(torch.randn(H, generator=g) * 0.5).float()
    D = torch.randn(H, generator=g).float()
    dt_bias = (torch.randn(H, generator=g) * 0.5).float()

    n_slots = batch * (T + 1) + 3
    perm = torch.randperm(n_slots, generator=g)
    src = perm[:batch].clone()
    dst = perm[batch : batch + batch * T].view(batch, T).clone()
    src[torch.randperm(batch, generator=g)[:n_pad]] = -1
    if batch > 1 and src[1] >= 0:
        dst[1, -1] = src[1]  # a row may overwrite its own src slot (it reads it first)
    init = torch.randn(n_slots, H, P, N, generator=g) * torch.rand(n_slots, H, P, 1, generator=g) * 2
    pool = quantize(init, fmt, "rn")
    parent = _random_tree(batch, T, g) if tree else None
    return dict(
        conv_out=conv_out,
        dt_raw=dt_raw,
        z=z,
        A=A,
        D=D,
        dt_bias=dt_bias,
        src=src,
        dst=dst,
        pool=pool,
        parent=parent,
        shape=(batch, T, H, P, N, G),
    )


def _reference(c, rounding, seed, step):
    batch, T, H, P, N, G = c["shape"]
    co = c["conv_out"].view(batch, T, -1)
    x = co[..., : H * P].reshape(batch, T, H, P)
    B = co[..., H * P : H * P + G * N].reshape(batch, T, G, N)
    C = co[..., H * P + G * N :].reshape(batch, T, G, N)
    z = None if c["z"] is None else c["z"].view(batch, T, H, P)
    return mamba2_intermediate_step(
        c["pool"],
        c["src"],
        c["dst"],
        x,
        c["dt_raw"].view(batch, T, H),
        c["A"],
        B,
        C,
        c["D"],
        c["dt_bias"],
        z,
        c["parent"],
        rounding=rounding,
        seed=seed,
        step=step,
    )


def _run_kernel(c, fmt, rounding, seed, step, knobs=None):
    batch, T, H, P, N, G = c["shape"]
    pool = c["pool"].clone()
    # Poison every dst slot of a real row: an element the kernel fails to store shows up.
    real = c["src"] >= 0
    dsts = c["dst"][real].reshape(-1)
    dsts = dsts[~torch.isin(dsts, c["src"])]  # own-src slots must keep their values until read
    if fmt in SCALED:
        pool.data[dsts] = torch.full_like(pool.data[dsts], 77 if fmt == "int8" else 300.0)
        pool.scale[dsts] = float("nan")
    else:
        pool.data[dsts] = float("nan")
    y = torch.full((batch * T, H * P), float("nan"), dtype=torch.bfloat16, device=DEVICE)
    d = {k: (v.to(DEVICE) if isinstance(v, torch.Tensor) else v) for k, v in c.items()}
    data, scale = pool.data.to(DEVICE), None if pool.scale is None else pool.scale.to(DEVICE)
    out = mamba2_intermediate(
        data,
        scale,
        d["src"],
        d["dst"],
        d["conv_out"],
        d["dt_raw"],
        d["A"],
        d["D"],
        d["dt_bias"],
        nheads=H,
        head_dim=P,
        dstate=N,
        ngroups=G,
        T=T,
        z=d["z"],
        parent=d["parent"],
        y=y,
        fmt=fmt,
        rounding=rounding,
        seed=seed,
        step=step,
        knobs=knobs,
    )
    assert out.data_ptr() == y.data_ptr()
    return y.cpu(), StoredState(data.cpu(), None if scale is None else scale.cpu(), fmt)




def _check(c, fmt, rounding, seed=5, step=3, knobs=None):
    batch, T, H, P, N, G = c["shape"]
    y_ref, pool_ref = _reference(c, rounding, seed, step)
    y, pool = _run_kernel(c, fmt, rounding, seed, step, knobs)

    # y: padding rows exactly zero, real rows close to the reference.
    yv = y.view(batch, T, H, P).double()
    pad = c["src"] < 0
    assert (yv[pad] == 0).all(), "padding rows must write zeros"
    assert not torch.isnan(yv).any(), "unwritten y elements"
    err = (yv - y_ref).abs()
    tol = 2.0**-7 * y_ref.abs() + 1e-2 * y_ref.abs().amax(-1, keepdim=True) + 1e-6
    assert (err <= tol).all(), f"y: max err {err.max():.3g}"

    # Stored states: every slot equal (bit for bit) where the reference did not write; written
    # slots within one storage spacing, and mostly bit-identical.
    written = torch.zeros(pool.data.shape[0], dtype=torch.bool)
    written[c["dst"][~pad].reshape(-1)] = True
    assert torch.equal(pool.data[~written].view(torch.uint8), pool_ref.data[~written].view(torch.uint8))
    if fmt in SCALED:
        assert torch.equal(pool.scale[~written], pool_ref.scale[~written])
    got = dequantize(pool[written])
    ref = dequantize(pool_ref[written])
    assert not torch.isnan(got).any(), "unwritten state elements"
    tol = one_step_bound(fmt, ref, None if pool_ref.scale is None else pool_ref.scale[written])
    bad = (got - ref).abs() > tol
    assert not bad.any(), (
        f"{fmt}/{rounding}: {int(bad.sum())} state elements off, max err {(got - ref).abs().max():.3g}"
    )
    if fmt != "fp32":
        same = (
            (pool.data[written].view(torch.uint8) == pool_ref.data[written].view(torch.uint8)).double().mean()
        )
        assert same >= 0.99, f"{fmt}/{rounding}: only {same:.3f} of the stored codes are bit-identical"
    return float((got - ref).abs().max())


@pytest.mark.parametrize(
    "fmt,rounding,tree,with_z",
    [
        ("fp32", "rn", False, True),
        ("fp32", "sr", True, False),
        ("bf16", "rn", True, True),
        ("bf16", "sr", False, True),
        ("fp16", "rn", False, False),
        ("fp16", "sr", True, True),
        ("int8", "rn", True, False),
        ("int8", "sr", False, True),
        ("fp8", "rn", False, True),
        ("fp8", "sr", True, False),
    ],
)
def test_intermediate_matches_reference(fmt: str, rounding: str, tree: bool, with_z: bool) -> None:
    # H=4 heads in G=2 groups, P=12 and N=10 (non-pow2: masked), T=3, one padding row of 3.
    c = _make(3, 3, 4, 12, 10, 2, fmt, with_z=with_z, tree=tree, seed=hash((fmt, rounding)) % 1000)
    _check(c, fmt, rounding, knobs=IntermediateKnobs(block_p=8, num_warps=1))


def test_intermediate_head_dim_80_multi_tile() -> None:
    """P = 80 (nemotron-nano) split over 3 P tiles of 32; deep linear chain given as parents."""
    c = _make(2, 4, 2, 80, 16, 1, "bf16", n_pad=0, seed=9)
    c["parent"] = torch.arange(-1, 3).expand(2, 4).clone()  # parent = t - 1: the linear chain
    _check(c, "bf16", "sr", knobs=IntermediateKnobs(block_p=32, num_warps=2))


def test_intermediate_all_padding_touches_nothing() -> None:
    c = _make(2, 2, 2, 8, 8, 1, "int8", n_pad=2, seed=4)
    y, pool = _run_kernel(c, "int8", "sr", 1, 0)
    assert (y == 0).all()
    assert torch.equal(pool.data, c["pool"].data) and torch.equal(pool.scale, c["pool"].scale)


def test_intermediate_rejects_races() -> None:
    c = _make(3, 2, 2, 8, 8, 1, "fp32", n_pad=0, seed=2)

    def run(**over):
        cc = dict(c, **over)
        _run_kernel(cc, "fp32", "rn", 0, 0)

    src = c["src"].clone()
    src[1] = src[0]
    with pytest.raises(ValueError, match="duplicate"):
        run(src=src)
    dst = c["dst"].clone()
    dst[1, 0] = dst[0, 1]
    with pytest.raises(ValueError, match="duplicate"):
        run(dst=dst)
    dst = c["dst"].clone()
    dst[2, 0] = c["src"][0]
    with pytest.raises(ValueError, match="src slot of another row"):
        run(dst=dst)
    parent = torch.tensor([[-1, 1], [-1, 0], [-1, -1]])
    with pytest.raises(ValueError, match="parent"):
        run(parent=parent)


def test_default_knobs_and_names() -> None:
    class S:
        nheads, head_dim, dstate, ngroups = 16, 64, 128, 1

    for batch in (1, 7, 64, 1024):
        for fmt in ("fp32", "bf16", "int8"):
            for rounding in ("rn", "sr"):
                k = default_knobs(S, batch, 6, fmt, rounding)
                assert k.block_p in (1, 2, 4, 8, 16, 32, 64) and 1 <= k.num_warps <= 8
    assert KERNEL_NAMES == ("mamba2_intermediate_kernel",)
    assert STORAGE_DTYPES["fp8"] == torch.float8_e4m3fn
    assert isinstance(quantize(torch.zeros(1, 2), "fp8"), StoredState)
