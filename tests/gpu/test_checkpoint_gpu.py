"""GPU checks of the Triton checkpoint-replay chain (conv1d -> precompute -> main) on the headline
shape (nemotron3-super TP8: 16 heads, head_dim 64, dstate 128, 1 group, d_conv 4, T=6):

- every storage format x rounding at W = T and W = 16, a quarter of the rows padding, pnat
  drawn over [0, W] (write and nowrite rows mixed): conv output and the replay step against the
  fp64 references (checks of tests/test_triton_checkpoint.py: y, checkpoints within one storage
  spacing and >= 99% bit-identical codes, history rows);
- PDL off/on x eager/CUDA-graph x form (the default knobs: fused or the rank-1 two-kernel main;
  and the bandwidth-first main the H200 table picks from batch 64): all correct, and
  bit-identical within a form (the tensor-core dots run here, which the interpreter cannot check);
- determinism: 5 graph replays from the same inputs give bit-identical y, checkpoints and history;
- 64-bit offsets: checkpoint and history pools whose slot offsets pass 2**31 elements.

The errors measured go to ``$OUT/gpu_kernel_checks.{json,md}`` (tests/gpu/conftest.py).
"""

from __future__ import annotations

import pytest
import torch

from ssmbench_kernels.conv1d.kernel import conv1d_update
from ssmbench_kernels.conv1d.reference import conv1d_update as ref_conv1d_update
from ssmbench_kernels.mamba2_replay.kernel import CheckpointKnobs, default_knobs, make_scratch, replay_step
from ssmbench_kernels.mamba2_replay.reference import ReplayState, new_replay_state
from ssmbench_kernels.mamba2_replay.reference import replay_step as ref_replay_step
from ssmbench_kernels.storage.reference import StoredState, dequantize, quantize
from tests.test_triton_checkpoint import _check_step, _initial, _params

H, P, N, G, T, D_CONV = 16, 64, 128, 1, 6, 4
CONV_DIM = H * P + 2 * G * N
DEV = "cuda"
SEED, STEP = 4321, 3
FORMATS = [("fp32", "rn"), ("bf16", "rn"), ("bf16", "sr"), ("fp16", "rn"), ("fp16", "sr"), ("int8", "rn"),
           ("int8", "sr"), ("fp8", "rn"), ("fp8", "sr")]
CASES = [(f, r, w, 64) for f, r in FORMATS for w in (6, 16)] + [
    ("fp32", "rn", 16, 1), ("fp32", "rn", 16, 256), ("bf16", "rn", 16, 256), ("fp32", "rn", 6, 256)]


def _snapshot(rs: ReplayState) -> list[tuple[torch.Tensor, torch.Tensor]]:
    ts = [rs.ckpt.data, rs.ckpt.scale, rs.hist_x, rs.hist_B, rs.hist_dt]
    return [(t, t.clone()) for t in ts if t is not None]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.uint8)


@pytest.mark.parametrize("fmt,rounding,W,batch", CASES)
def test_chain_headline(fmt, rounding, W, batch, gpu_report) -> None:
    g0 = torch.Generator().manual_seed(batch * 31 + W)
    pnat_rows = torch.randint(0, W + 1, (batch,), generator=g0).tolist()
    n_pad = batch // 4
    rs, slots, g = _initial(batch, T, W, H, P, N, G, fmt, pnat_rows, n_pad=n_pad, seed=batch + W)
    if n_pad:  # padding rows anywhere, not only at the end
        perm = torch.randperm(batch, generator=g).to(DEV)
        slots = slots[perm].contiguous()
    A, D, dt_bias = (t.to(DEV) for t in _params(g, H))
    rows = batch * T
    xbc = torch.randn(rows, CONV_DIM, generator=g).to(torch.bfloat16).to(DEV)
    dt_raw = (torch.randn(rows, H, generator=g) - 1.5).to(torch.bfloat16).to(DEV)
    z = torch.randn(rows, H * P, generator=g).to(torch.bfloat16).to(DEV)
    conv_state0 = torch.randn(rs.n_slots, CONV_DIM, D_CONV - 2 + T, generator=g).to(torch.bfloat16).to(DEV)
    conv_w = (torch.randn(CONV_DIM, D_CONV, generator=g) * 0.5).to(torch.bfloat16).to(DEV)
    conv_b = torch.randn(CONV_DIM, generator=g).to(torch.bfloat16).to(DEV)
    k_prev = torch.randint(1, T + 1, (batch,), generator=g).to(DEV)

    conv_state = conv_state0.clone()
    conv_out = torch.empty(rows, CONV_DIM, dtype=torch.bfloat16, device=DEV)
    y = torch.empty(rows, H * P, dtype=torch.bfloat16, device=DEV)
    scratch = make_scratch(batch, H, T, W, DEV)
    before = rs.clone()
    saved = _snapshot(rs)

    def reset() -> None:
        for live, copy in saved:
            live.copy_(copy)
        conv_state.copy_(conv_state0)
        conv_out.fill_(float("nan"))
        y.fill_(float("nan"))
        for t in (scratch.cb, scratch.cdec, scratch.w, scratch.fdec):
            t.fill_(float("nan"))

    forms = {"default": default_knobs(batch, fmt, rounding, P, window=W, T=T),
             "bandwidth": CheckpointKnobs(bandwidth=True, block_p=64, num_warps=2)}

    def chain(pdl: bool, form: str) -> None:
        conv1d_update(xbc, conv_state, conv_w, conv_b, slots, k_prev, T=T, out=conv_out, pdl=pdl, validate=False)
        kw = dict(nheads=H, head_dim=P, dstate=N, ngroups=G, T=T, y=y, scratch=scratch, z=z, rounding=rounding,
                  seed=SEED, step=STEP, pdl=pdl, validate=False, knobs=forms[form])
        replay_step(rs, slots, conv_out, dt_raw, A, D, dt_bias, launch="precompute", **kw)
        replay_step(rs, slots, conv_out, dt_raw, A, D, dt_bias, launch="main", **kw)

    # Reference: conv on the workload, replay step on the kernel's own conv output.
    reset()
    conv1d_update(xbc, conv_state, conv_w, conv_b, slots, k_prev, T=T, out=conv_out)
    x3 = xbc.view(batch, T, CONV_DIM).transpose(1, 2)
    conv_ref, conv_state_ref = ref_conv1d_update(x3, conv_state0, conv_w, conv_b, slots, k_prev)
    co = conv_out.view(batch, T, CONV_DIM)
    ref_y, ref_mw, ref_new = ref_replay_step(
        before, slots, co[..., : H * P].reshape(batch, T, H, P), dt_raw.view(batch, T, H), A,
        co[..., H * P : H * P + G * N].reshape(batch, T, G, N), co[..., H * P + G * N :].reshape(batch, T, G, N),
        D, dt_bias, z.view(batch, T, H, P), rounding=rounding, seed=SEED, step=STEP)

    results = {}
    for form in forms:
        for pdl in (False, True):
            for mode in ("eager", "graph"):
                reset()
                if mode == "eager":
                    chain(pdl, form)
                else:
                    side = torch.cuda.Stream()
                    side.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(side):
                        chain(pdl, form)  # warm-up: compile outside the capture
                    torch.cuda.current_stream().wait_stream(side)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph):
                        chain(pdl, form)
                    reset()
                    graph.replay()
                torch.cuda.synchronize()
                conv_view = conv_out.view(batch, T, CONV_DIM).transpose(1, 2).double()
                assert torch.allclose(conv_view, conv_ref, atol=1e-2, rtol=2.0**-7), "conv out"
                assert torch.equal(conv_state, conv_state_ref), "conv state"
                _check_step(rs, ref_new, ref_y, ref_mw, y, slots, batch, T, H, P, fmt, before)
                results[(form, pdl, mode)] = [_bits(y).clone()] + [_bits(t).clone() for t, _ in saved]
                if mode == "graph" and form == ("bandwidth" if batch >= 64 else "default") and pdl:
                    # Determinism: 5 more replays from the same inputs, bit-identical.
                    for _ in range(5):
                        reset()
                        graph.replay()
                        torch.cuda.synchronize()
                        again = [_bits(y)] + [_bits(t) for t, _ in saved]
                        ref_bits = results[(form, pdl, mode)]
                        same = all(torch.equal(a, b) for a, b in zip(again, ref_bits, strict=True))
                        assert same, "graph replays differ"
    # Bit-identical within a form (same kernel: PDL off/on, eager/graph). The forms are different
    # kernels (other summation orders), so across forms only the reference checks above apply.
    for key, got in results.items():
        first = results[(key[0], False, "eager")]
        same = all(torch.equal(a, b) for a, b in zip(got, first, strict=True))
        assert same, f"bits differ for (form, pdl, mode)={key}"

    yv = y.view(batch, T, H, P).double()
    y_err = ((yv - ref_y).abs().max() / ref_y.abs().max()).item()
    written = slots[ref_mw]
    st_err = 0.0
    if written.numel():
        got = dequantize(rs.ckpt[written])
        ref = dequantize(ref_new.ckpt[written])
        st_err = ((got - ref).abs().max() / ref.abs().max()).item()
    gpu_report.add(test="checkpoint-chain", fmt=fmt, rounding=rounding, W=W, batch=batch,
                   writes=int(ref_mw.sum()), real=int((slots >= 0).sum()), y_err=y_err, ckpt_err=st_err)


def test_checkpoint_64bit_offsets(gpu_report) -> None:
    """Slots past 2**31 elements in every per-slot buffer: the int8 checkpoint (slot * H*P*N) and
    the history x (slot * L*H*P, L = 22): ~95.4k slots (12.5 GB int8 checkpoints, 4.3 GB history)."""
    W, batch = 16, 3
    L = W + T
    first = 2**31 // (L * H * P) + 8
    small, slots, g = _initial(batch, T, W, H, P, N, G, "int8", [16, 3, 0], n_pad=1, seed=11)
    n_small = small.n_slots
    big_ckpt = StoredState(torch.zeros((first + n_small, H, P, N), dtype=torch.int8, device=DEV),
                           torch.ones((first + n_small, H, P), device=DEV), "int8")
    big = new_replay_state(big_ckpt, T, W, G, act_dtype=torch.bfloat16, dt_dtype=torch.float32)
    for name in ("hist_x", "hist_B", "hist_dt", "ring_start", "pnat"):
        getattr(big, name)[first:] = getattr(small, name)
    big.ckpt.data[first:] = small.ckpt.data
    big.ckpt.scale[first:] = small.ckpt.scale
    big_slots = torch.where(slots >= 0, slots + first, slots)
    A, D, dt_bias = (t.to(DEV) for t in _params(g, H))
    rows = batch * T
    conv_out = torch.randn(rows, CONV_DIM, generator=g).to(torch.bfloat16).to(DEV)
    dt_raw = (torch.randn(rows, H, generator=g) - 1.5).to(torch.bfloat16).to(DEV)
    y = torch.full((rows, H * P), float("nan"), dtype=torch.bfloat16, device=DEV)
    replay_step(big, big_slots, conv_out, dt_raw, A, D, dt_bias, nheads=H, head_dim=P, dstate=N, ngroups=G, T=T,
                y=y, scratch=make_scratch(batch, H, T, W, DEV), rounding="rn")
    torch.cuda.synchronize()
    co = conv_out.view(batch, T, CONV_DIM)
    ref_y, ref_mw, ref_new = ref_replay_step(
        small, slots, co[..., : H * P].reshape(batch, T, H, P), dt_raw.view(batch, T, H), A,
        co[..., H * P : H * P + G * N].reshape(batch, T, G, N), co[..., H * P + G * N :].reshape(batch, T, G, N),
        D, dt_bias, rounding="rn")
    got = ReplayState(StoredState(big.ckpt.data[first:], big.ckpt.scale[first:], "int8"), big.hist_x[first:],
                      big.hist_B[first:], big.hist_dt[first:], big.ring_start[first:], big.pnat[first:], W)
    _check_step(got, ref_new, ref_y, ref_mw, y, slots, batch, T, H, P, "int8", small)
    assert bool(ref_mw.any()) and bool((~ref_mw & (slots >= 0)).any())
    assert (big.ckpt.data[:first:997] == 0).all() and (big.hist_x[:first:997] == 0).all(), "write below 2**31"
    gpu_report.add(test="checkpoint-64bit", fmt="int8", batch=batch, first_slot=first)
    del big, big_ckpt
    torch.cuda.empty_cache()


def test_bf16_pool_roundtrip_is_quantize() -> None:
    """Sanity of the test's own plumbing on the GPU: quantize/dequantize round-trip of a bf16 pool."""
    v = torch.randn(4, H, P, N, device=DEV)
    assert torch.equal(dequantize(quantize(v, "bf16"), torch.float32), v.to(torch.bfloat16).float())
