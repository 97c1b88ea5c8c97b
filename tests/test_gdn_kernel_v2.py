"""The WY-form GDN kernel (`ssmbench_kernels.gdn.kernel_v2`, issue 20; not an impl yet) against the
reference `gdn_decode_step`, in the CPU interpreter (on a GPU machine, on the GPU), with the very
checks and tolerances of tests/test_triton_gdn.py (its helpers, with `gdn_decode` swapped for
`gdn_decode_wy`): poisoned outputs, pool slots and intermediate entries; fp32 and bf16 state; RN
and SR with the revised keying (the reference draws the same uniforms: >= 99% of the stored bf16
codes bit-identical); T in 1..8; pools, split pools, padding rows, GVA, a custom scale, masked
K and V."""

from __future__ import annotations

import pytest
import test_triton_gdn as v1  # tests/ is on sys.path (pytest's rootdir-relative import)
import torch

from ssmbench_kernels.gdn.kernel_v2 import KERNEL_NAMES, GDNWYKnobs, gdn_decode_wy


@pytest.fixture(autouse=True)
def wy_kernel(monkeypatch):
    monkeypatch.setattr(v1, "gdn_decode", gdn_decode_wy)


@pytest.mark.parametrize(
    "fmt,rounding,T,pool,intermediate,write_final",
    [
        ("fp32", "rn", 1, "pool", False, True),
        ("fp32", "rn", 4, "split", True, True),
        ("fp32", "sr", 6, "pool", False, True),
        ("bf16", "rn", 2, "pool", True, True),
        ("bf16", "rn", 5, "split", True, False),
        ("bf16", "sr", 4, "pool", True, True),
        ("bf16", "sr", 8, "split", False, True),
    ],
)
def test_wy_matches_reference(fmt, rounding, T, pool, intermediate, write_final) -> None:
    # 3 rows (one padding), H=2, HV=4 (GVA 2), K=16, V=8 (one 16-row tile, half masked).
    c = v1._make(3, T, 2, 4, 16, 8, fmt, pool=pool, seed=T * 10 + len(fmt) + (rounding == "sr"))
    v1._check(c, fmt, rounding, intermediate=intermediate, write_final=write_final,
              knobs=GDNWYKnobs(precision="ieee"))


def test_wy_gva4_non_pow2_dims_custom_scale_two_tiles() -> None:
    """HV = 4H, K = 12, V = 20 (two 16-row tiles, masked), explicit scale, no padding."""
    c = v1._make(2, 3, 1, 4, 12, 20, "bf16", n_pad=0, seed=11)
    v1._check(c, "bf16", "sr", intermediate=True, write_final=True, scale=0.37, knobs=GDNWYKnobs(block_v=16))


def test_wy_strong_decay_and_softplus_branch() -> None:
    """Decays near 0 (large A_log, softplus past its threshold): the ratios exp(G_t - G_j) stay <= 1."""
    c = v1._make(2, 6, 1, 2, 16, 8, "fp32", n_pad=0, seed=9)
    c["A_log"] = torch.full_like(c["A_log"], 2.5)
    c["a"][::2] = 22.0  # softplus(u > 20) = u: decays of exp(-12 * 22) underflow to 0
    v1._check(c, "fp32", "rn", intermediate=True, write_final=True, knobs=GDNWYKnobs())


def test_wy_all_padding_touches_nothing() -> None:
    c = v1._make(2, 3, 1, 2, 8, 4, "fp32", n_pad=2, seed=4)
    out, pool, _ = v1._run_kernel(c, "fp32", rounding="rn", intermediate=False, write_final=True, scale=None, seed=0,
                                  step=0)
    assert (out == 0).all()
    assert torch.equal(pool, c["pool"].data)


def test_wy_rejects_bad_inputs() -> None:
    c = v1._make(3, 2, 1, 2, 8, 4, "fp32", n_pad=0, seed=3)
    kw = dict(num_k_heads=1, num_v_heads=2, head_k_dim=8, head_v_dim=4, T=2)
    args = (c["conv_out"], c["a"], c["b"], c["A_log"], c["dt_bias"])
    dup = c["read"].clone()
    dup[1] = dup[0]
    with pytest.raises(ValueError, match="duplicate"):
        gdn_decode_wy(c["pool"].data, dup, None, *args, **kw)
    with pytest.raises(ValueError, match="precision"):
        gdn_decode_wy(c["pool"].data, c["read"], None, *args, **kw, knobs=GDNWYKnobs(precision="tf32"))
    with pytest.raises(ValueError, match="unsupported"):
        gdn_decode_wy(c["pool"].data.half(), c["read"], None, *args, **kw)
    assert KERNEL_NAMES == ("gdn_decode_wy_kernel",)
