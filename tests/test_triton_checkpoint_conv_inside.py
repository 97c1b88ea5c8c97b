"""The fused checkpoint replay with the conv1d update inside (`CheckpointKnobs.fuse_conv`, issue 19: the chain
one launch at small batches), in the CPU interpreter (on a GPU machine the same checks run on the GPU).

Three independent checks, over several steps on fresh random inputs with poisoned outputs:

- against the two-launch chain it replaces (`conv1d_update`, then the fused kernel on its output), bit for
  bit: conv output, conv state, y, checkpoints, history (the same sums in the same order);
- the conv output and conv state against the fp64 conv1d reference (`ssmbench_kernels.conv1d.reference`);
- through the impl (`triton.checkpoint` with the knob set) on smoke cases, `ssmbench.measure.verify`
  against the reference chain.

Shapes cover several groups (the group's B / C conv state is stored by its last program to arrive),
several P-tiles per head, conv widths 2-4, bias on / off, padding rows and permuted slots; the arrival
counters must be back at zero after every launch.
"""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path

import pytest
import torch
from test_triton_checkpoint import DEVICE, _initial, _params

from ssmbench.impls.triton_checkpoint import TritonCheckpoint
from ssmbench.impls.tuned import Tunable
from ssmbench.measure.target import attempt
from ssmbench.spec.expand import expand
from ssmbench.spec.load import load_sweep_file
from ssmbench_kernels.conv1d.kernel import ConvOperands, conv1d_update
from ssmbench_kernels.conv1d.reference import conv1d_update as ref_conv1d_update
from ssmbench_kernels.mamba2_replay.kernel import CheckpointKnobs, make_scratch, replay_step

SMOKE = Path(__file__).resolve().parents[1] / "sweeps" / "smoke.yaml"


def _conv_inputs(g, batch, T, conv_dim, n_slots, d_conv, with_bias):
    xbc = torch.randn(batch * T, conv_dim, generator=g).to(torch.bfloat16)
    state = torch.randn(n_slots, conv_dim, d_conv - 2 + T, generator=g).to(torch.bfloat16)
    weight = (torch.randn(conv_dim, d_conv, generator=g) * 0.5).to(torch.bfloat16)
    bias = (torch.randn(conv_dim, generator=g) * 0.1).to(torch.bfloat16) if with_bias else None
    k_prev = torch.randint(1, T + 1, (batch,), generator=g)
    return [None if t is None else t.to(DEVICE) for t in (xbc, state, weight, bias, k_prev)]


def _run(fmt, rounding, *, T, W, H, P, N, G, block_p, d_conv, with_bias, batch=4, steps=3, seed=0):
    """``steps`` steps of both chains from the same start; compares them after each."""
    rs_one, slots, g = _initial(batch, T, W, H, P, N, G, fmt, [W, 0, 1, W - 1][:batch], n_pad=1, seed=seed)
    rs_two = rs_one.clone()
    A, D, dt_bias = (t.to(DEVICE) for t in _params(g, H))
    conv_dim = H * P + 2 * G * N
    knobs = CheckpointKnobs(fused=True, block_p=block_p, num_warps=2, precision="tf32x3")
    inside = dataclasses.replace(knobs, fuse_conv=True)
    scratch_one, scratch_two = (make_scratch(batch, H, T, W, DEVICE) for _ in range(2))
    xbc, state, weight, bias, _ = _conv_inputs(g, batch, T, conv_dim, rs_one.n_slots, d_conv, with_bias)
    state_one, state_two = state.clone(), state.clone()
    seen_write = False
    for step in range(steps):
        xbc, _, _, _, k_prev = _conv_inputs(g, batch, T, conv_dim, 1, d_conv, False)
        dt_raw = (torch.randn(batch * T, H, generator=g) - 1.5).to(torch.bfloat16).to(DEVICE)
        z = torch.randn(batch * T, H * P, generator=g).to(torch.bfloat16).to(DEVICE)
        ref_out, ref_state = ref_conv1d_update(xbc.view(batch, T, conv_dim).transpose(1, 2), state_one, weight,
                                               bias, slots, k_prev)
        outs = []
        for rs, cstate, scratch, kn in ((rs_one, state_one, scratch_one, inside),
                                        (rs_two, state_two, scratch_two, knobs)):
            conv_out = torch.full((batch * T, conv_dim), float("nan"), dtype=torch.bfloat16, device=DEVICE)
            y = torch.full((batch * T, H * P), float("nan"), dtype=torch.bfloat16, device=DEVICE)
            conv = None
            if kn.fuse_conv:
                conv = ConvOperands(xbc, cstate, weight, bias, k_prev)
            else:
                conv1d_update(xbc, cstate, weight, bias, slots, k_prev, T=T, out=conv_out)
            replay_step(rs, slots, conv_out, dt_raw, A, D, dt_bias, nheads=H, head_dim=P, dstate=N, ngroups=G, T=T,
                        y=y, scratch=scratch, z=z, rounding=rounding, seed=3, step=step, knobs=kn, conv=conv)
            outs.append((conv_out, y))
        (co_one, y_one), (co_two, y_two) = outs
        assert not torch.isnan(co_one).any() and not torch.isnan(y_one).any(), "unwritten outputs"
        assert torch.equal(co_one, co_two), "conv output differs from conv1d's"
        assert torch.equal(state_one, state_two), "conv state differs from conv1d's"
        assert torch.equal(y_one, y_two), "y differs from the two-launch chain's"
        for a, b in ((rs_one.ckpt.data, rs_two.ckpt.data), (rs_one.hist_x, rs_two.hist_x),
                     (rs_one.hist_B, rs_two.hist_B), (rs_one.hist_dt, rs_two.hist_dt)):
            assert torch.equal(a.view(torch.uint8), b.view(torch.uint8))
        if rs_one.ckpt.scale is not None:
            assert torch.equal(rs_one.ckpt.scale, rs_two.ckpt.scale)
        assert not scratch_one.arrivals.any(), "arrival counters must be back at zero after the launch"
        # The conv parts against the fp64 reference (tolerance of tests/test_triton_conv1d.py: one bf16 ulp).
        got = co_one.view(batch, T, conv_dim).transpose(1, 2).double()
        torch.testing.assert_close(got, ref_out, atol=1e-2, rtol=2.0**-7)
        assert torch.equal(state_one, ref_state), "conv state against the reference"
        real = slots >= 0
        seen_write |= bool(((rs_one.pnat[slots.clamp(min=0)] + T > W) & real).any())
        # Next step: accept some tokens (bookkeeping as the reference's `commit`), same for both.
        accepted = torch.randint(1, T + 1, (batch,), generator=g).to(DEVICE)
        from ssmbench_kernels.mamba2_replay.kernel import commit

        commit(rs_one, slots, accepted, T)
        commit(rs_two, slots, accepted, T)
    assert seen_write, "the simulation must exercise write rows"


@pytest.mark.parametrize(
    "fmt,rounding,T,W,H,P,N,G,block_p,d_conv,with_bias",
    [
        ("fp32", "rn", 3, 8, 4, 32, 16, 2, 16, 4, True),  # two P-tiles, two groups of two heads
        ("bf16", "sr", 4, 8, 2, 16, 24, 1, 16, 3, False),  # N not a power of two, width 3
        ("fp16", "sr", 1, 4, 4, 12, 16, 4, 16, 2, True),  # T = 1, one head a group, masked P
        ("int8", "rn", 2, 16, 4, 16, 16, 2, 16, 4, False),
        ("fp8", "sr", 3, 3, 2, 20, 8, 1, 16, 4, True),  # W = T: every row writes
    ],
)
def test_conv_inside_equals_the_two_launch_chain(fmt, rounding, T, W, H, P, N, G, block_p, d_conv,
                                                 with_bias) -> None:
    _run(fmt, rounding, T=T, W=W, H=H, P=P, N=N, G=G, block_p=block_p, d_conv=d_conv, with_bias=with_bias,
         seed=zlib.crc32(f"inside{fmt}{rounding}{T}{W}{G}{d_conv}".encode()))


def test_conv_inside_all_padding_touches_nothing() -> None:
    rs, slots, g = _initial(2, 2, 4, 2, 8, 8, 1, "bf16", [4, 1], n_pad=2, seed=11)
    before = rs.clone()
    A, D, dt_bias = (t.to(DEVICE) for t in _params(g, 2))
    xbc, state, weight, bias, k_prev = _conv_inputs(g, 2, 2, 32, rs.n_slots, 4, True)
    state_before = state.clone()
    conv_out = torch.full((4, 32), float("nan"), dtype=torch.bfloat16, device=DEVICE)
    y = torch.full((4, 16), float("nan"), dtype=torch.bfloat16, device=DEVICE)
    dt_raw = torch.zeros(4, 2, dtype=torch.bfloat16, device=DEVICE)
    scratch = make_scratch(2, 2, 2, 4, DEVICE)
    replay_step(rs, slots, conv_out, dt_raw, A, D, dt_bias, nheads=2, head_dim=8, dstate=8, ngroups=1, T=2, y=y,
                scratch=scratch, knobs=CheckpointKnobs(fused=True, fuse_conv=True),
                conv=ConvOperands(xbc, state, weight, bias, k_prev))
    assert (y == 0).all() and (conv_out == 0).all()
    assert torch.equal(state, state_before) and not scratch.arrivals.any()
    for a, b in ((rs.ckpt.data, before.ckpt.data), (rs.hist_x, before.hist_x), (rs.hist_B, before.hist_B)):
        assert torch.equal(a, b)


def test_conv_inside_rejects_bad_operands() -> None:
    rs, slots, g = _initial(2, 2, 4, 2, 8, 8, 1, "fp32", [4, 1], n_pad=0, seed=12)
    A, D, dt_bias = (t.to(DEVICE) for t in _params(g, 2))
    xbc, state, weight, bias, k_prev = _conv_inputs(g, 2, 2, 32, rs.n_slots, 4, True)

    def run(conv):
        replay_step(rs, slots, torch.zeros(4, 32, dtype=torch.bfloat16, device=DEVICE),
                    torch.zeros(4, 2, dtype=torch.bfloat16, device=DEVICE), A, D, dt_bias, nheads=2, head_dim=8,
                    dstate=8, ngroups=1, T=2, y=torch.zeros(4, 16, dtype=torch.bfloat16, device=DEVICE),
                    scratch=make_scratch(2, 2, 2, 4, DEVICE), knobs=CheckpointKnobs(fused=True, fuse_conv=True),
                    conv=conv)

    with pytest.raises(ValueError, match="conv=ConvOperands"):
        run(None)
    with pytest.raises(ValueError, match="conv_state"):
        run(ConvOperands(xbc, state[:, :, :3], weight, bias, k_prev))
    with pytest.raises(ValueError, match="unit column stride"):
        run(ConvOperands(xbc.view(2, 2, 32).transpose(1, 2), state, weight, bias, k_prev))
    with pytest.raises(ValueError, match="k_prev"):
        run(ConvOperands(xbc, state, weight, bias, k_prev + 5))


class _Inside(TritonCheckpoint):
    """`triton.checkpoint` on the interpreter's default knobs with the conv1d update inside."""

    name = "triton.checkpoint.test-inside"
    tunable = Tunable(name, TritonCheckpoint.tunable.space, Path("no-tables"),
                      lambda case: dataclasses.replace(TritonCheckpoint.tunable.default(case), fuse_conv=True),
                      uses_window=True)


@pytest.mark.parametrize("pattern", ["b3-T4-bf16-padded-w8", "b3-T1-int8sr-pool-w1", "b3-T4-fp32-direct-w4"])
def test_conv_inside_through_the_impl(pattern) -> None:
    """The impl's chain is one launch, and its outputs pass `verify` against the reference chain."""
    from ssmbench.families import make_workload

    case = next(c for c in expand(load_sweep_file(SMOKE).sweeps[0]).cases if pattern in c.id)
    workload = make_workload(case, DEVICE)
    chain = _Inside().build(case, workload)
    assert chain.kernel_names == ["replay_fused_kernel"]
    result = attempt(case, _Inside(), workload)
    assert result.status == "ok", result.message or result.comparisons
