"""Triton checkpoint replay (docs/spec.md §5) against `ssmbench_kernels.mamba2_replay.reference`, in the CPU interpreter
(on a GPU machine the same checks run on the GPU): multi-step simulations with random
acceptance, W = T and W = 16, every storage format x RN/SR, z on/off, padding rows, permuted
pool slots, non-power-of-two head_dim and dstate, every kernel form (fused, rank-1 and bandwidth-first mains), and
poisoned outputs / coefficients.

Each step is checked against the reference applied to the kernel's own current state (so
rounding choices do not accumulate into the comparison): y per element (bf16 output rounding
plus fp32 drift, as tests/test_triton_intermediate.py), checkpoints of write rows within one
storage spacing and >= 99% of the codes bit-identical (same Philox uniforms), untouched slots
bit for bit, history rows bit-identical (x, B) or within fp32 rounding (processed dt), and the
bookkeeping after `commit` equal to `replay_commit`. After the last step, the implied state is
compared with an independent reference run of the same steps (rounding flips may differ there:
format tolerance of `ssmbench.measure.verify`).
"""

from __future__ import annotations

import dataclasses
import os
import zlib

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0") else "cuda"

from ssmbench.measure.verify import STATE_TOL  # noqa: E402
from ssmbench_kernels.mamba2_replay.kernel import (  # noqa: E402
    KERNEL_NAMES,
    CheckpointKnobs,
    commit,
    default_knobs,
    kernel_names,
    make_scratch,
    precompute_token_rows,
    replay_step,
)
from ssmbench_kernels.mamba2_replay.reference import (  # noqa: E402
    ReplayState,
    new_replay_state,
    replay_commit,
    replay_implied_state,
)
from ssmbench_kernels.mamba2_replay.reference import replay_step as ref_replay_step  # noqa: E402
from ssmbench_kernels.storage.reference import dequantize, one_step_bound, quantize  # noqa: E402

SCALED = ("int8", "fp8")


def _initial(batch, T, W, H, P, N, G, fmt, pnat_rows, *, n_pad=1, seed=0):
    """A replay state on DEVICE (random checkpoints, ring starts and history) and row slots;
    ``pnat_rows`` gives each row's starting pnat (so both write and nowrite rows occur)."""
    g = torch.Generator().manual_seed(seed)
    n_slots = 2 * batch + 1
    ckpt = quantize(torch.randn(n_slots, H, P, N, generator=g) * torch.rand(n_slots, H, P, 1, generator=g) * 2, fmt)
    rs = new_replay_state(ckpt, T, W, G, act_dtype=torch.bfloat16, dt_dtype=torch.float32)
    L = W + T
    rs.hist_x.copy_(torch.randn(rs.hist_x.shape, generator=g))
    rs.hist_B.copy_(torch.randn(rs.hist_B.shape, generator=g))
    rs.hist_dt.copy_(torch.exp(torch.empty(rs.hist_dt.shape).uniform_(-4.0, -1.0, generator=g)))
    rs.ring_start.copy_(torch.randint(0, L, (n_slots,), generator=g))
    slots = torch.randperm(n_slots, generator=g)[:batch]
    rs.pnat[slots] = torch.tensor(pnat_rows, dtype=torch.int64)
    if n_pad:
        slots[batch - n_pad:] = -1  # the last rows: pnat_rows' first entries stay real
    rs = _to(rs, DEVICE)
    return rs, slots.to(DEVICE), g


def _to(rs: ReplayState, device) -> ReplayState:
    ck = rs.ckpt
    ck = type(ck)(ck.data.to(device), None if ck.scale is None else ck.scale.to(device), ck.fmt)
    return ReplayState(ck, rs.hist_x.to(device), rs.hist_B.to(device), rs.hist_dt.to(device),
                       rs.ring_start.to(device), rs.pnat.to(device), rs.window)


def _inputs(g, batch, T, H, P, N, G, with_z):
    rows = batch * T
    conv_out = torch.randn(rows, H * P + 2 * G * N, generator=g).to(torch.bfloat16)
    dt_raw = (torch.randn(rows, H, generator=g) - 1.5).to(torch.bfloat16)
    dt_raw[0, 0] = 25.0  # softplus threshold branch
    z = torch.randn(rows, H * P, generator=g).to(torch.bfloat16) if with_z else None
    return conv_out, dt_raw, z


def _params(g, H):
    A = -torch.exp(torch.randn(H, generator=g) * 0.5).float()
    D = torch.randn(H, generator=g).float()
    dt_bias = (torch.randn(H, generator=g) * 0.5).float()
    return A, D, dt_bias


def _ref_views(conv_out, dt_raw, z, batch, T, H, P, N, G):
    co = conv_out.view(batch, T, -1)
    x = co[..., : H * P].reshape(batch, T, H, P)
    B = co[..., H * P : H * P + G * N].reshape(batch, T, G, N)
    C = co[..., H * P + G * N :].reshape(batch, T, G, N)
    return x, dt_raw.view(batch, T, H), B, C, None if z is None else z.view(batch, T, H, P)




def _clone(rs: ReplayState) -> ReplayState:
    return rs.clone()


def _check_step(rs, ref_new, ref_y, ref_mw, y, slots, batch, T, H, P, fmt, rs_before):
    pad = slots.cpu() < 0
    yv = y.cpu().view(batch, T, H, P).double()
    y_ref = ref_y.cpu()
    assert not torch.isnan(yv).any(), "unwritten y elements"
    assert (yv[pad] == 0).all(), "padding rows must write zeros"
    err = (yv - y_ref).abs()
    tol = 2.0**-7 * y_ref.abs() + 1e-2 * y_ref.abs().amax(-1, keepdim=True) + 1e-6
    assert (err <= tol).all(), f"y: max err {err.max():.3g}"

    # Checkpoints: written (write rows) within one spacing, mostly bit-identical; others untouched.
    written = torch.zeros(rs.n_slots, dtype=torch.bool)
    written[slots.cpu()[ref_mw.cpu()]] = True
    data, ref_data = rs.ckpt.data.cpu(), ref_new.ckpt.data.cpu()
    assert torch.equal(data[~written].view(torch.uint8), rs_before.ckpt.data.cpu()[~written].view(torch.uint8))
    if fmt in SCALED:
        assert torch.equal(rs.ckpt.scale.cpu()[~written], rs_before.ckpt.scale.cpu()[~written])
    if written.any():
        got = dequantize(rs.ckpt[written.to(DEVICE)]).cpu()
        ref = dequantize(ref_new.ckpt[written.to(DEVICE)]).cpu()
        assert not torch.isnan(got).any()
        ref_scale = None if ref_new.ckpt.scale is None else ref_new.ckpt.scale.cpu()[written]
        bad = (got - ref).abs() > one_step_bound(fmt, ref, ref_scale)
        assert not bad.any(), f"{fmt}: {int(bad.sum())} checkpoint elements off, max {(got - ref).abs().max():.3g}"
        if fmt != "fp32":
            same = (data[written].view(torch.uint8) == ref_data[written].view(torch.uint8)).double().mean()
            assert same >= 0.99, f"{fmt}: only {same:.3f} of the checkpoint codes are bit-identical"
    # History: x, B appended exactly; dt within fp32 rounding of the fp64 softplus; nothing else moved.
    assert torch.equal(rs.hist_x.cpu(), ref_new.hist_x.cpu()), "history x"
    assert torch.equal(rs.hist_B.cpu(), ref_new.hist_B.cpu()), "history B"
    torch.testing.assert_close(rs.hist_dt.cpu(), ref_new.hist_dt.cpu(), rtol=1e-5, atol=1e-9)


def _simulate(fmt, rounding, T, W, *, H=4, P=12, N=10, G=2, batch=3, steps=3, with_z=True, knobs=None,
              pnat_rows=None, n_pad=1, seed=0):
    pnat_rows = pnat_rows or [W, 0, 1][:batch]
    rs, slots, g = _initial(batch, T, W, H, P, N, G, fmt, pnat_rows, n_pad=n_pad, seed=seed)
    A, D, dt_bias = _params(g, H)
    ref_chain = _clone(rs)  # an independent reference run of the same steps
    scratch = make_scratch(batch, H, T, W, DEVICE)
    seen_write = seen_nowrite = False
    for step in range(steps):
        conv_out, dt_raw, z = _inputs(g, batch, T, H, P, N, G, with_z)
        views = _ref_views(conv_out, dt_raw, z, batch, T, H, P, N, G)
        x, dtv, B, C, zv = (None if t is None else t.to(DEVICE) for t in views)
        kw = dict(rounding=rounding, seed=7, step=step)
        ref_y, ref_mw, ref_new = ref_replay_step(rs, slots, x, dtv, A.to(DEVICE), B, C, D.to(DEVICE),
                                                 dt_bias.to(DEVICE), zv, **kw)
        before = _clone(rs)
        y = torch.full((batch * T, H * P), float("nan"), dtype=torch.bfloat16, device=DEVICE)
        for t in (scratch.cb, scratch.cdec, scratch.w, scratch.fdec):
            t.fill_(float("nan"))
        d = lambda t: None if t is None else t.to(DEVICE)  # noqa: E731
        out = replay_step(rs, slots, d(conv_out), d(dt_raw), d(A), d(D), d(dt_bias), nheads=H, head_dim=P,
                          dstate=N, ngroups=G, T=T, y=y, scratch=scratch, z=d(z), knobs=knobs, **kw)
        assert out.data_ptr() == y.data_ptr()
        _check_step(rs, ref_new, ref_y, ref_mw, y, slots, batch, T, H, P, fmt, before)
        seen_write |= bool(ref_mw.any())
        seen_nowrite |= bool((~ref_mw & (slots >= 0)).any())

        accepted = torch.randint(1, T + 1, (batch,), generator=g).to(DEVICE)
        committed = replay_commit(ref_new, slots, accepted, ref_mw)
        commit(rs, slots, accepted, T)
        assert torch.equal(rs.ring_start, committed.ring_start) and torch.equal(rs.pnat, committed.pnat)

        r_y, r_mw, r_new = ref_replay_step(ref_chain, slots, x, dtv, A.to(DEVICE), B, C, D.to(DEVICE),
                                           dt_bias.to(DEVICE), zv, **kw)
        ref_chain = replay_commit(r_new, slots, accepted, r_mw)
    implied = replay_implied_state(rs, slots, A.to(DEVICE)).cpu()
    expected = replay_implied_state(ref_chain, slots, A.to(DEVICE)).cpu()
    rel = ((implied - expected).abs().max() / expected.abs().max()).item()
    assert rel <= 2 * STATE_TOL[fmt], f"implied state after {steps} steps: {rel:.3g}"
    return seen_write, seen_nowrite


FORMS = {
    "fused": CheckpointKnobs(fused=True, block_p=16, num_warps=4, precision="tf32x3"),
    "rank1": CheckpointKnobs(block_p=4, num_warps=1),
    "bandwidth": CheckpointKnobs(bandwidth=True, block_p=16, num_warps=4),
    "fused-ring": CheckpointKnobs(fused=True, block_p=16, num_warps=4, precision="tf32x3", ring_rows=True),
}
"""Every kernel form (precision "tf32x3" only matters on a GPU: the interpreter computes in fp32)."""


@pytest.mark.parametrize(
    "fmt,rounding,window,with_z,form",
    [
        ("fp32", "rn", "T", True, "fused"),
        ("fp32", "sr", 16, False, "rank1"),
        ("fp32", "rn", 16, True, "bandwidth"),
        ("bf16", "rn", 16, True, "fused"),
        ("bf16", "sr", "T", True, "rank1"),
        ("fp16", "sr", 16, True, "fused"),
        ("fp16", "rn", "T", False, "rank1"),
        ("int8", "sr", 16, True, "fused"),
        ("int8", "rn", "T", True, "bandwidth"),
        ("fp8", "sr", "T", False, "bandwidth"),
        ("fp8", "rn", 16, True, "fused"),
        ("fp32", "rn", 16, True, "fused-ring"),
        ("bf16", "sr", 16, False, "fused-ring"),
        ("fp16", "sr", "T", True, "fused-ring"),
        ("int8", "sr", 16, True, "fused-ring"),
    ],
)
def test_replay_matches_reference(fmt, rounding, window, with_z, form) -> None:
    T = 3
    W = T if window == "T" else window
    seen_write, seen_nowrite = _simulate(fmt, rounding, T, W, with_z=with_z, knobs=FORMS[form],
                                         seed=zlib.crc32(f"{fmt}{rounding}{W}".encode()))
    assert seen_write and seen_nowrite, "the simulation must exercise both write and nowrite rows"


@pytest.mark.parametrize("pre_heads", [1, 2, 4])
@pytest.mark.parametrize("form", ["rank1", "bandwidth"])
def test_replay_precompute_head_blocks(pre_heads, form) -> None:
    """The precompute's head blocks (``pre_heads`` heads of one group per program, CB shared): 3
    heads a group, so a block of 2 or 4 has masked heads and the group's B append comes from
    block 0 only; every scratch element main reads is written (NaN-poisoned in `_simulate`)."""
    knobs = dataclasses.replace(FORMS[form], pre_heads=pre_heads)
    seen_write, seen_nowrite = _simulate("fp32", "rn", 3, 8, H=6, G=2, batch=3, knobs=knobs,
                                         seed=zlib.crc32(f"heads{pre_heads}{form}".encode()))
    assert seen_write and seen_nowrite


@pytest.mark.parametrize("T", [1, 6, 9])
def test_replay_precompute_token_rows(T) -> None:
    """The precompute's per-head blocks on half the product's 16 token rows when T <= 8 (T = 1, 6:
    rows taken out of the product by `_first_half_rows`), all 16 from T = 9; W = T + 2."""
    assert precompute_token_rows(T, 16) == (8 if T <= 8 else 16)
    seen_write, seen_nowrite = _simulate("fp32", "rn", T, T + 2, H=2, P=8, N=16, G=1, batch=3, steps=2,
                                         knobs=FORMS["rank1"], pnat_rows=[T + 2, 0, 1],
                                         seed=zlib.crc32(f"rows{T}".encode()))
    assert seen_write and seen_nowrite


def test_replay_head_dim_80_multi_tile() -> None:
    """P = 80 (nemotron-nano): 5 P-tiles of 16 (rank-1 main) or 3 masked tiles of 32 (fused), one
    group, no padding, W = 8."""
    for knobs in (CheckpointKnobs(block_p=16), CheckpointKnobs(fused=True, block_p=32)):
        _simulate("bf16", "sr", 2, 8, H=2, P=80, N=16, G=1, batch=2, steps=2, n_pad=0, pnat_rows=[8, 1],
                  knobs=knobs)


def test_replay_all_padding_touches_nothing() -> None:
    for knobs in (CheckpointKnobs(), CheckpointKnobs(fused=True), CheckpointKnobs(bandwidth=True)):
        rs, slots, g = _initial(2, 2, 4, 2, 8, 8, 1, "int8", [4, 1], n_pad=2, seed=3)
        before = rs.clone()
        A, D, dt_bias = _params(g, 2)
        conv_out, dt_raw, z = _inputs(g, 2, 2, 2, 8, 8, 1, True)
        y = torch.full((4, 16), float("nan"), dtype=torch.bfloat16, device=DEVICE)
        d = lambda t: t.to(DEVICE)  # noqa: E731
        replay_step(rs, slots, d(conv_out), d(dt_raw), d(A), d(D), d(dt_bias), nheads=2, head_dim=8, dstate=8,
                    ngroups=1, T=2, y=y, scratch=make_scratch(2, 2, 2, 4, DEVICE), z=d(z), rounding="sr",
                    knobs=knobs)
        assert (y == 0).all()
        for a, b in ((rs.ckpt.data, before.ckpt.data), (rs.ckpt.scale, before.ckpt.scale),
                     (rs.hist_x, before.hist_x), (rs.hist_B, before.hist_B), (rs.hist_dt, before.hist_dt)):
            assert torch.equal(a, b)


def test_replay_rejects_bad_input() -> None:
    rs, slots, g = _initial(3, 2, 4, 2, 8, 8, 1, "fp32", [4, 1, 0], n_pad=0, seed=5)
    A, D, dt_bias = _params(g, 2)
    conv_out, dt_raw, _ = _inputs(g, 3, 2, 2, 8, 8, 1, False)
    d = lambda t: t.to(DEVICE)  # noqa: E731

    def run(slots=slots, rs=rs, scratch=None, **kw):
        y = torch.empty(6, 16, dtype=torch.bfloat16, device=DEVICE)
        replay_step(rs, slots, d(conv_out), d(dt_raw), d(A), d(D), d(dt_bias), nheads=2, head_dim=8, dstate=8,
                    ngroups=1, T=2, y=y, scratch=scratch or make_scratch(3, 2, 2, 4, DEVICE), **kw)

    dup = slots.clone()
    dup[1] = dup[0]
    with pytest.raises(ValueError, match="duplicate"):
        run(slots=dup)
    bad = rs.clone()
    bad.pnat[slots[0]] = 5  # > W: the ring would overlap
    with pytest.raises(ValueError, match="pnat"):
        run(rs=bad)
    with pytest.raises(ValueError, match="scratch"):
        run(scratch=make_scratch(3, 2, 2, 32, DEVICE))
    with pytest.raises(ValueError, match="launch"):
        run(launch="all")


def test_commit_is_graph_safe_bookkeeping() -> None:
    """`commit` equals `replay_commit`, padding rows aimed at slot 0 included."""
    rs, slots, g = _initial(4, 3, 6, 1, 4, 4, 1, "fp32", [6, 0, 2, 5], n_pad=2, seed=8)
    slots = slots.clone()
    rs.pnat[0] = 3  # slot 0 is real-looking for padding rows' zero deltas
    accepted = torch.tensor([1, 3, 2, 3], device=DEVICE)
    mw = torch.where(slots >= 0, rs.pnat[slots.clamp(min=0)] + 3 > 6, False)
    ref = replay_commit(rs, slots, accepted, mw)
    commit(rs, slots, accepted, 3)
    assert torch.equal(rs.pnat, ref.pnat) and torch.equal(rs.ring_start, ref.ring_start)


def test_default_knobs_and_names() -> None:
    for batch in (1, 8, 64, 1024):
        for fmt in ("fp32", "bf16", "int8"):
            for window in (None, 6, 16):
                k = default_knobs(batch, fmt, "rn", 64, window=window, T=6)
                assert k.block_p >= (16 if k.fused or k.bandwidth else 1) and k.num_warps in (1, 2, 4, 8)
                assert k.precision in ("ieee", "tf32x3") and k.max_regs >= 0
    assert KERNEL_NAMES == ("replay_precompute_kernel", "replay_main_kernel")
    assert kernel_names(CheckpointKnobs(fused=True)) == ("replay_fused_kernel",)
    assert kernel_names(CheckpointKnobs()) == KERNEL_NAMES
