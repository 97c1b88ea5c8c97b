"""Triton GDN decode (docs/spec.md §9) against `gdn_decode_step`, in the CPU interpreter: fp32 and bf16
state, RN and SR, T in {1, 2, 5}, pools with permuted slots, split pools, padding rows, GVA
(HV = 2H and 4H), intermediate states on/off, final write on/off, a custom scale, non-power-of-two
K and V (masked), poisoned outputs, pool slots and intermediate entries.

Tolerances (kernel: fp32 arithmetic, states rounded once when stored; reference: fp64, rounded
once when stored, same Philox uniforms):

- o (bf16 output): ``|d| <= 2**-7 |ref| + 1e-2 * max|ref|`` per (row, token, head) block: the bf16
  output ulp plus fp32 accumulation over K.
- stored states (pool and intermediate), after dequantize: fp32 ``1e-5 * row amax``; bf16 one
  spacing ``2**-7 |ref|`` (1% slack) plus the same fp32 drift (a rounding decision may flip where
  the fp32 and fp64 pre-rounding values straddle a tie (RN) or the uniform (SR)); and, because
  both sides draw the same uniforms, >= 99% of the stored bf16 codes are bit-identical.
- every slot the reference does not write is bit-identical (the kernel touched nothing else);
  padding rows write zero outputs and leave their (poisoned) intermediate entries alone.
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

from ssmbench_kernels.gdn.kernel import KERNEL_NAMES, GDNKnobs, gdn_decode  # noqa: E402
from ssmbench_kernels.gdn.reference import gdn_decode_step  # noqa: E402
from ssmbench_kernels.storage.reference import StoredState, dequantize, quantize  # noqa: E402


def _make(batch, T, H, HV, K, V, fmt, *, pool="pool", n_pad=1, seed=0):
    """Inputs in production layout (q | k | v columns of one conv output, a and b as column views
    of one in_proj tensor) and pool slots for one step. pool: "pool" (write = read) or "split"."""
    g = torch.Generator().manual_seed(seed)
    rows = batch * T
    conv_out = torch.randn(rows, 2 * H * K + HV * V, generator=g).to(torch.bfloat16)
    ab = torch.randn(rows, 2 * HV + 3, generator=g).to(torch.bfloat16)  # a | b | other columns
    a = (ab[:, :HV] * 0.3).clone()
    a[0, 0] = 25.0  # softplus threshold branch (u > 20)
    ab[:, :HV] = a
    A_log = torch.rand(HV, generator=g).float() * 2.7
    dt_bias = (torch.randn(HV, generator=g) * 0.5 - 3.0).float()
    n_slots = 3 * batch + 2
    perm = torch.randperm(n_slots, generator=g)
    read = perm[:batch].clone()
    write = perm[batch : 2 * batch].clone() if pool == "split" else read.clone()
    pad = torch.randperm(batch, generator=g)[:n_pad]
    read[pad] = -1
    write[pad] = -1
    init = 0.5 * torch.randn(n_slots, HV, V, K, generator=g)
    return dict(
        conv_out=conv_out, a=ab[:, :HV], b=ab[:, HV : 2 * HV], A_log=A_log, dt_bias=dt_bias,
        read=read, write=write, pool=quantize(init, fmt, "rn"), shape=(batch, T, H, HV, K, V),
    )


def _reference(c, *, rounding, intermediate, write_final, scale, seed, step):
    batch, T, H, HV, K, V = c["shape"]
    co = c["conv_out"].view(batch, T, -1)
    q = co[..., : H * K].unflatten(-1, (H, K))
    k = co[..., H * K : 2 * H * K].unflatten(-1, (H, K))
    v = co[..., 2 * H * K :].unflatten(-1, (HV, V))
    return gdn_decode_step(
        c["pool"], q, k, v, c["a"].reshape(batch, T, HV), c["b"].reshape(batch, T, HV), c["A_log"],
        c["dt_bias"], c["read"], c["write"], scale=scale, intermediate=intermediate, write_final=write_final,
        rounding=rounding, seed=seed, step=step,
    )


def _run_kernel(c, fmt, *, rounding, intermediate, write_final, scale, seed, step, knobs=None):
    batch, T, H, HV, K, V = c["shape"]
    pool = c["pool"].data.clone()
    real = c["read"] >= 0
    if write_final:  # poison the write slots nobody reads: an unstored element shows
        w = c["write"][real]
        pool[w[~torch.isin(w, c["read"])]] = float("nan")
    inter = torch.full((batch, T, HV, V, K), float("nan"), dtype=pool.dtype) if intermediate else None
    out = torch.full((batch * T, HV * V), float("nan"), dtype=torch.bfloat16)
    d = {k: (v.to(DEVICE) if isinstance(v, torch.Tensor) else v) for k, v in c.items() if k != "pool"}
    pool, out = pool.to(DEVICE), out.to(DEVICE)
    inter = None if inter is None else inter.to(DEVICE)
    got = gdn_decode(
        pool, d["read"], d["write"], d["conv_out"], d["a"], d["b"], d["A_log"], d["dt_bias"], num_k_heads=H,
        num_v_heads=HV, head_k_dim=K, head_v_dim=V, T=T, scale=scale, intermediate=inter,
        write_final=write_final, out=out, fmt=fmt, rounding=rounding, seed=seed, step=step, knobs=knobs,
    )
    assert got.data_ptr() == out.data_ptr()
    return out.cpu(), pool.cpu(), None if inter is None else inter.cpu()


def _check_states(got: torch.Tensor, ref: torch.Tensor, fmt: str, what: str) -> None:
    """Stored states (storage dtype) within one storage spacing and mostly bit-identical."""
    g, r = dequantize(StoredState(got, None, fmt)), dequantize(StoredState(ref, None, fmt))
    assert not torch.isnan(g).any(), f"{what}: unwritten state elements"
    tol = 1e-5 * r.abs().amax(-1, keepdim=True)
    if fmt == "bf16":
        tol = tol + 1.01 * 2.0**-7 * r.abs() + 1e-30
    bad = (g - r).abs() > tol
    assert not bad.any(), f"{what}: {int(bad.sum())} elements off, max err {(g - r).abs().max():.3g}"
    if fmt == "bf16":
        same = (got.view(torch.int16) == ref.view(torch.int16)).double().mean()
        assert same >= 0.99, f"{what}: only {same:.3f} of the stored codes are bit-identical"


def _check(c, fmt, rounding, *, intermediate, write_final, scale=None, knobs=None, seed=7, step=3):
    batch, T, H, HV, K, V = c["shape"]
    kw = dict(rounding=rounding, intermediate=intermediate, write_final=write_final, scale=scale, seed=seed,
              step=step)
    ref = _reference(c, **kw)
    out, pool, inter = _run_kernel(c, fmt, knobs=knobs, **kw)

    o = out.view(batch, T, HV, V).double()
    pad = c["read"] < 0
    assert not torch.isnan(o).any(), "unwritten outputs"
    assert (o[pad] == 0).all(), "padding rows must write zeros"
    err = (o - ref.o).abs()
    tol = 2.0**-7 * ref.o.abs() + 1e-2 * ref.o.abs().amax(-1, keepdim=True) + 1e-6
    assert (err <= tol).all(), f"o: max err {err.max():.3g}"

    written = torch.zeros(pool.shape[0], dtype=torch.bool)
    if write_final:
        written[c["write"][~pad]] = True
    same_bits = pool[~written].view(torch.uint8) == ref.pool.data[~written].view(torch.uint8)
    assert same_bits.all(), "the kernel changed a slot it must not write"
    if write_final:
        _check_states(pool[written], ref.pool.data[written], fmt, "final pool write")
    if intermediate:
        _check_states(inter[~pad], ref.intermediate.data[~pad], fmt, "intermediate states")
        assert torch.isnan(inter[pad].float()).all(), "padding rows must not write intermediate states"


@pytest.mark.parametrize(
    "fmt,rounding,T,pool,intermediate,write_final",
    [
        ("fp32", "rn", 1, "pool", False, True),
        ("fp32", "rn", 5, "split", True, False),
        ("bf16", "rn", 2, "pool", True, True),
        ("bf16", "rn", 5, "split", True, True),
        ("bf16", "sr", 1, "split", False, True),
        ("bf16", "sr", 2, "pool", True, False),
        ("bf16", "sr", 5, "pool", True, True),
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["blocks", "streamed"])
def test_gdn_matches_reference(fmt, rounding, T, pool, intermediate, write_final, stream) -> None:
    # 3 rows (one padding), H=2 q/k heads, HV=4 value heads (GVA 2), K=16, V=8, 2 V tiles; both
    # token-input forms (GDNKnobs.stream_tokens)
    c = _make(3, T, 2, 4, 16, 8, fmt, pool=pool, seed=T * 10 + len(fmt) + (rounding == "sr"))
    _check(c, fmt, rounding, intermediate=intermediate, write_final=write_final,
           knobs=GDNKnobs(block_v=4, stream_tokens=stream))


def test_gdn_streamed_tokens_gva4_non_pow2_dims() -> None:
    """The streamed-token form with HV = 4H, K = 12 and V = 6 (masked), T = 8, a padding row."""
    c = _make(3, 8, 1, 4, 12, 6, "bf16", seed=13)
    _check(c, "bf16", "sr", intermediate=True, write_final=True, scale=0.37,
           knobs=GDNKnobs(block_v=4, num_warps=2, stream_tokens=True))


def test_gdn_gva4_non_pow2_dims_custom_scale() -> None:
    """HV = 4H, K = 12 and V = 6 (masked tiles), scale given explicitly, no padding."""
    c = _make(2, 2, 1, 4, 12, 6, "bf16", n_pad=0, seed=11)
    _check(c, "bf16", "sr", intermediate=True, write_final=True, scale=0.37, knobs=GDNKnobs(block_v=4))


def test_gdn_knobs_do_not_change_bits() -> None:
    """The V tiling is a pure partition: results are bit-identical for any block_v / warps."""
    c = _make(2, 2, 2, 4, 16, 8, "bf16", seed=5)
    kw = dict(rounding="sr", intermediate=True, write_final=True, scale=None, seed=1, step=2)
    o1, p1, i1 = _run_kernel(c, "bf16", knobs=GDNKnobs(block_v=2, num_warps=1), **kw)
    o2, p2, i2 = _run_kernel(c, "bf16", knobs=GDNKnobs(block_v=8, num_warps=2), **kw)
    for x, y in ((o1, o2), (p1, p2), (i1, i2)):
        assert torch.equal(x.view(torch.int16), y.view(torch.int16))


def test_gdn_all_padding_touches_nothing() -> None:
    c = _make(2, 1, 1, 2, 8, 4, "fp32", n_pad=2, seed=4)
    out, pool, _ = _run_kernel(c, "fp32", rounding="rn", intermediate=False, write_final=True, scale=None, seed=0,
                               step=0)
    assert (out == 0).all()
    assert torch.equal(pool, c["pool"].data)


def test_gdn_rejects_bad_inputs() -> None:
    c = _make(3, 1, 1, 2, 8, 4, "fp32", n_pad=0, seed=3)
    kw = dict(num_k_heads=1, num_v_heads=2, head_k_dim=8, head_v_dim=4, T=1)
    args = (c["conv_out"], c["a"], c["b"], c["A_log"], c["dt_bias"])
    pool = c["pool"].data
    dup = c["read"].clone()
    dup[1] = dup[0]
    with pytest.raises(ValueError, match="duplicate"):
        gdn_decode(pool, dup, None, *args, **kw)
    clash = c["write"].clone()
    clash[0] = c["read"][1]  # row 0 writes the slot row 1 reads: a race
    with pytest.raises(ValueError, match="race"):
        gdn_decode(pool, c["read"], clash, *args, **kw)
    with pytest.raises(ValueError, match="out of range"):
        gdn_decode(pool, c["read"] + pool.shape[0], None, *args, **kw)
    with pytest.raises(ValueError, match="unsupported"):
        gdn_decode(pool.half(), c["read"], None, *args, **kw)
    with pytest.raises(ValueError, match="multiple"):
        gdn_decode(pool, c["read"], None, *args, **{**kw, "num_k_heads": 3})
    assert KERNEL_NAMES == ("gdn_decode_kernel",)


def test_gdn_bytes_model() -> None:
    """gdn_bytes by hand for a small case: conv1d part + one state read, T + 1 written."""
    from ssmbench.families.common import INDEX_BYTES, conv1d_bytes
    from ssmbench.families.gdn import gdn_bytes
    from ssmbench.spec.case import AcceptLaw, Case
    from ssmbench.spec.presets import GDNShape

    s = GDNShape(num_k_heads=2, num_v_heads=4, head_k_dim=16, head_v_dim=8, d_conv=4)
    case = Case(id="x", sweep="x", family="gdn", preset=None, tp=1, shape=s, batch=4, T=3, state_dtype="bf16",
                rounding="rn", pool="pool", accept=AcceptLaw("rate", (0.5,)), window=None, pdl=True, l2="hot",
                extras=(("intermediate", True), ("write_final", True)))
    state = 4 * 8 * 16 * 2
    per_real = (1 + 3 + 1) * state + 3 * (s.conv_dim + 2 * 4) * 2
    per_row = 3 * 4 * 8 * 2 + 2 * INDEX_BYTES
    expected = conv1d_bytes(case, s.conv_dim, 4, False, 3) + 3 * per_real + 4 * per_row + 2 * 4 * 4
    assert gdn_bytes(case, 3) == expected
