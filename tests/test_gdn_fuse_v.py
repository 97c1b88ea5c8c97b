"""`GDNKnobs.fuse_v`: the GDN chain at T = 1 with v's causal conv1d inside the decode and conv1d over q / k
only, in the CPU interpreter.

- Against the unfused chain (conv1d over every channel, then the decode) on the same inputs: conv output,
  conv-state pool, decode output and state pool bit-identical (the same fp32 expressions in the same
  order; the interpreter contracts no FMA), d_conv 2, 3 and 4, fp32 and bf16 state, padding rows, a
  split pool, a channel-last conv-state pool.
- Through the harness (`check_pair`: build, run, verify against the fp64 reference) on the smoke sweep's
  T = 1 GDN cases, with the knob forced.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():  # CPU machines: the interpreter (tests/conftest.py does the same)
    os.environ.setdefault("TRITON_INTERPRET", "1")
DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0") else "cuda"
"""The interpreter on CPU machines; on a GPU machine the same checks on the GPU."""

from ssmbench.families import make_workload  # noqa: E402
from ssmbench.impls.triton_gdn import GDN_SPACE, TritonGDN  # noqa: E402
from ssmbench.impls.tuned import Tunable  # noqa: E402
from ssmbench.runs.check import check_pair  # noqa: E402
from ssmbench.spec.expand import expand  # noqa: E402
from ssmbench.spec.load import load_sweep_file  # noqa: E402
from ssmbench_kernels.conv1d.kernel import conv1d_update  # noqa: E402
from ssmbench_kernels.gdn.kernel import GDNKnobs, gdn_decode  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
H, HV, K, V = 2, 4, 16, 8


def _inputs(batch: int, d_conv: int, fmt: str, *, split: bool, channel_last: bool, seed: int):
    g = torch.Generator().manual_seed(seed)
    conv_dim = 2 * H * K + HV * V
    n_slots = 3 * batch + 1
    perm = torch.randperm(n_slots, generator=g)
    read = perm[:batch].clone()
    write = perm[batch:2 * batch].clone() if split else read.clone()
    read[1] = write[1] = -1  # a padding row
    if channel_last:
        conv_state = torch.randn(n_slots, d_conv - 1, conv_dim, generator=g).bfloat16().transpose(1, 2)
    else:
        conv_state = torch.randn(n_slots, conv_dim, d_conv - 1, generator=g).bfloat16()
    dtype = torch.float32 if fmt == "fp32" else torch.bfloat16
    inputs = dict(
        qkv=torch.randn(batch, conv_dim, generator=g).bfloat16(), conv_state=conv_state,
        weight=(torch.randn(conv_dim, d_conv, generator=g) * 0.5).bfloat16(),
        ab=torch.randn(batch, 2 * HV, generator=g).bfloat16(), A_log=torch.rand(HV, generator=g) * 2,
        dt_bias=torch.randn(HV, generator=g) * 0.5 - 3, read=read, write=write,
        pool=(0.5 * torch.randn(n_slots, HV, V, K, generator=g)).to(dtype),
    )
    return {name: t.to(DEVICE) for name, t in inputs.items()}


def _chain(x: dict, fmt: str, fuse_v: bool, tile: tuple[int, int] = (4, 1)):
    conv_state, pool = x["conv_state"].clone(), x["pool"].clone()
    conv_out = torch.full_like(x["qkv"], float("nan"))
    channels = 2 * H * K if fuse_v else x["qkv"].shape[1]
    k_prev = torch.ones_like(x["read"])
    conv1d_update(x["qkv"][:, :channels], conv_state[:, :channels], x["weight"][:channels], None, x["read"], k_prev,
                  T=1, out=conv_out[:, :channels])
    fused = dict(conv_in=x["qkv"], conv_state=conv_state, conv_weight=x["weight"]) if fuse_v else {}
    out = gdn_decode(pool, x["read"], x["write"], conv_out, x["ab"][:, :HV], x["ab"][:, HV:], x["A_log"],
                     x["dt_bias"], num_k_heads=H, num_v_heads=HV, head_k_dim=K, head_v_dim=V, T=1, fmt=fmt,
                     knobs=GDNKnobs(block_v=tile[0], num_warps=tile[1], fuse_v=fuse_v), **fused)
    return conv_out, conv_state, out, pool


@pytest.mark.parametrize("d_conv", [2, 3, 4])
@pytest.mark.parametrize("fmt,split,channel_last,tile", [
    ("fp32", False, False, (4, 1)), ("bf16", True, True, (4, 1)), ("bf16", False, False, (4, 1)),
    ("fp32", False, False, (8, 4)),
])
def test_fused_v_conv_matches_the_unfused_chain_bit_for_bit(d_conv, fmt, split, channel_last, tile) -> None:
    """(8, 4): 8 channels on 4 warps, each channel held by several warps (on a GPU: the in-place state
    write waits for all of them to have loaded it)."""
    x = _inputs(3, d_conv, fmt, split=split, channel_last=channel_last, seed=d_conv + 10 * split)
    for got, want, name in zip(_chain(x, fmt, True, tile), _chain(x, fmt, False, tile),
                               ("conv_out", "conv_state", "out", "pool"), strict=True):
        assert not torch.isnan(got.float()).any(), f"{name}: unwritten elements"
        assert torch.equal(got.float(), want.float()), f"{name} differs from the unfused chain"  # bf16 -> fp32 is exact


def test_fused_v_refuses_what_it_does_not_do() -> None:
    x = _inputs(2, 4, "fp32", split=False, channel_last=False, seed=1)
    conv_out = torch.zeros_like(x["qkv"])
    common = dict(num_k_heads=H, num_v_heads=HV, head_k_dim=K, head_v_dim=V, fmt="fp32", validate=False)
    args = (x["pool"], x["read"], None, conv_out, x["ab"][:, :HV], x["ab"][:, HV:], x["A_log"], x["dt_bias"])
    with pytest.raises(ValueError, match="needs conv_in, conv_state and conv_weight"):
        gdn_decode(*args, T=1, knobs=GDNKnobs(fuse_v=True), **common)
    with pytest.raises(ValueError, match="T = 1 form"):
        gdn_decode(x["pool"], x["read"], None, torch.zeros(4, conv_out.shape[1]).bfloat16(),
                   torch.zeros(4, HV).bfloat16(), torch.zeros(4, HV).bfloat16(), x["A_log"], x["dt_bias"], T=2,
                   knobs=GDNKnobs(fuse_v=True), conv_in=x["qkv"], conv_state=x["conv_state"],
                   conv_weight=x["weight"], **common)
    with pytest.raises(ValueError, match="conv_state must be"):
        gdn_decode(*args, T=1, knobs=GDNKnobs(fuse_v=True), conv_in=x["qkv"], conv_state=x["conv_state"][:, :, :2],
                   conv_weight=x["weight"], **common)


class _FusedGDN(TritonGDN):
    """`triton.gdn` with `fuse_v` on its own pick."""

    name = "triton.gdn.fuse-v-test"

    def __init__(self) -> None:
        base = TritonGDN.tunable
        self.tunable = Tunable(self.name, GDN_SPACE, Path("/nonexistent-knob-tables"),
                               lambda case: dataclasses.replace(base.default(case), fuse_v=True))


def test_fused_v_chain_passes_the_harness_check_on_the_smoke_cases() -> None:
    sweep = next(s for s in load_sweep_file(ROOT / "sweeps" / "smoke.yaml").sweeps if s.name == "smoke-gdn")
    cases = [c for c in expand(sweep).cases if c.T == 1]
    assert cases, "the smoke sweep has T = 1 GDN cases"
    impl = _FusedGDN()
    for case in cases:
        result = check_pair(case, impl, make_workload(case, torch.device(DEVICE)))
        assert result.status == "ok", f"{case.id}: {result.status} {result.message} {result.comparisons}"
