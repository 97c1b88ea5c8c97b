"""GPU checks of the Triton GDN chain (conv1d, no bias -> GDN decode) on the Qwen3.5-397B shape
(H=16, HV=64, K=V=128, d_conv 4).

- fp32 / bf16 RN / bf16 SR, T in {1, 4, 16}, batch 1 / 7 / 64, pool and split pools with
  padding rows, intermediate states on/off, final write on/off; PDL off/on, eager and CUDA-graph
  replay of the captured chain: outputs, final pool states and intermediate states against the
  fp64 references, and all four variants bit-identical (PDL and graphs must not change a bit);
- 64-bit offsets: pool slots past 2**31 elements (slot >= 2048 at 2**20 elements per slot; fp32
  and bf16 pools), and intermediate entries past 2**31 elements (batch 520, T=4).

Tolerances are those of tests/test_triton_gdn.py (module docstring there). Errors per case go
to ``$OUT/gpu_kernel_checks.{json,md}`` (tests/gpu/conftest.py).

The knobs behind `default_gdn_knobs` (docs/gdn.md) are tuned by ``ssmbench tune sweeps/qwen35-gdn.yaml
--impl triton.gdn`` (docs/tuning.md).
"""

from __future__ import annotations

import pytest
import torch

from ssmbench_kernels.conv1d.kernel import conv1d_update
from ssmbench_kernels.conv1d.reference import conv1d_update as ref_conv1d_update
from ssmbench_kernels.gdn.kernel import gdn_decode
from ssmbench_kernels.gdn.reference import gdn_decode_step, gdn_recurrence
from ssmbench_kernels.storage.reference import StoredState, dequantize, one_step_bound, quantize, sr_uniform

H, HV, K, V, D_CONV = 16, 64, 128, 128, 4
CONV_DIM = 2 * H * K + HV * V
FORMATS = [("fp32", "rn"), ("bf16", "rn"), ("bf16", "sr")]
SEED, STEP = 1234, 5
DEV = "cuda"
STORAGE = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _inputs(batch: int, T: int, fmt: str, *, seed: int, split: bool = False, n_pad: int | None = None,
            n_slots: int | None = None):
    """One step's inputs in production layout: qkv, a and b are column views of one in_proj
    output; pools of random states; distinct random slots (split: distinct write slots)."""
    g = torch.Generator(device=DEV).manual_seed(seed)
    rows = batch * T
    proj = torch.randn(rows, CONV_DIM + 2 * HV + 7, generator=g, device=DEV)
    proj[:, CONV_DIM : CONV_DIM + HV] *= 0.3
    proj = proj.to(torch.bfloat16)
    n_pad = batch // 4 if n_pad is None else n_pad
    n_slots = n_slots or 2 * batch + 5
    perm = torch.randperm(n_slots, generator=g, device=DEV)
    read = perm[:batch].clone()
    write = perm[batch : 2 * batch].clone() if split else read.clone()
    pad = torch.randperm(batch, generator=g, device=DEV)[:n_pad]
    read[pad] = -1
    write[pad] = -1
    # Drawn in fp32 and cast (torch's cast is RN-even, as quantize): no fp64 pool temporaries.
    init = (0.5 * torch.randn(n_slots, HV, V, K, generator=g, device=DEV)).to(STORAGE[fmt])
    return dict(
        qkv=proj[:, :CONV_DIM], a=proj[:, CONV_DIM : CONV_DIM + HV], b=proj[:, CONV_DIM + HV : CONV_DIM + 2 * HV],
        conv_w=(torch.randn(CONV_DIM, D_CONV, generator=g, device=DEV) * 0.5).to(torch.bfloat16),
        conv_state=torch.randn(batch + 3, CONV_DIM, D_CONV - 2 + T, generator=g, device=DEV).to(torch.bfloat16),
        k_prev=torch.randint(1, T + 1, (batch,), generator=g, device=DEV),
        A_log=torch.rand(HV, generator=g, device=DEV) * 2.7,
        dt_bias=torch.randn(HV, generator=g, device=DEV) * 0.5 - 3.0,
        read=read, write=write, pool=StoredState(init, None, fmt), batch=batch, T=T,
    )


def _conv_slots(c) -> torch.Tensor:
    """Conv-state slots: distinct, padding where the state read index is."""
    slots = torch.arange(c["batch"], device=DEV) + 2
    slots[c["read"] < 0] = -1
    return slots




def _compare_states(fmt: str, got: torch.Tensor, ref: torch.Tensor, what: str) -> dict:
    g = dequantize(StoredState(got, None, fmt))
    r = dequantize(StoredState(ref, None, fmt))
    assert not torch.isnan(g).any(), f"{what}: unwritten state elements"
    err = (g - r).abs()
    ratio = (err / one_step_bound(fmt, r)).max().item()
    assert ratio <= 1.0, f"{what}: max err {err.max().item():.3g} ({ratio:.2f} x tolerance)"
    same = 1.0
    if fmt != "fp32":
        same = (got.view(torch.int16) == ref.view(torch.int16)).double().mean().item()
        assert same >= 0.99, f"{what}: only {same:.4f} of the stored codes bit-identical"
    return {f"{what}_err_over_tol": ratio, f"{what}_codes_same": same}


def _check_o(o: torch.Tensor, o_ref: torch.Tensor, read: torch.Tensor) -> float:
    assert not torch.isnan(o).any(), "unwritten outputs"
    assert (o[read < 0] == 0).all(), "padding rows must output zeros"
    err = (o.double() - o_ref).abs()
    tol = 2.0**-7 * o_ref.abs() + 1e-2 * o_ref.abs().amax(-1, keepdim=True) + 1e-6
    bad = err > tol
    assert not bad.any(), f"o: {int(bad.sum())} elements off, max err {err.max().item():.3g}"
    return err.max().item()


# ------------------------------------------------------------------------------------------
# the chain: formats x T x pools, PDL on/off, eager and graph
# ------------------------------------------------------------------------------------------

CHAIN_CASES = [
    # batch, T, split, intermediate, write_final
    (1, 1, False, False, True),
    (7, 1, True, True, True),
    (64, 1, False, False, True),
    (1, 4, False, True, True),
    (7, 4, True, True, False),
    (64, 4, False, True, False),
    (3, 16, True, True, True),
]


@pytest.mark.parametrize("batch,T,split,intermediate,write_final", CHAIN_CASES)
@pytest.mark.parametrize("fmt,rounding", FORMATS)
def test_gdn_chain_qwen35(fmt, rounding, batch, T, split, intermediate, write_final, gpu_report) -> None:
    c = _inputs(batch, T, fmt, seed=batch * 17 + T, split=split)
    conv_slots = _conv_slots(c)
    x3 = c["qkv"].view(batch, T, CONV_DIM).transpose(1, 2)
    conv_ref_out, conv_ref_state = ref_conv1d_update(x3, c["conv_state"], c["conv_w"], None, conv_slots, c["k_prev"])

    conv_state = c["conv_state"].clone()
    pool = c["pool"].data.clone()
    conv_out = torch.empty(batch * T, CONV_DIM, dtype=torch.bfloat16, device=DEV)
    o = torch.empty(batch * T, HV * V, dtype=torch.bfloat16, device=DEV)
    inter = torch.empty(batch, T, HV, V, K, dtype=pool.dtype, device=DEV) if intermediate else None
    real = c["read"] >= 0
    w = c["write"][real]
    poison = w[~torch.isin(w, c["read"])]

    def reset() -> None:
        conv_state.copy_(c["conv_state"])
        pool.copy_(c["pool"].data)
        conv_out.fill_(float("nan"))
        o.fill_(float("nan"))
        if write_final:
            pool[poison] = float("nan")
        if inter is not None:
            inter.fill_(float("nan"))

    def chain(pdl: bool) -> None:
        conv1d_update(c["qkv"], conv_state, c["conv_w"], None, conv_slots, c["k_prev"], T=T, out=conv_out, pdl=pdl,
                      validate=False)
        gdn_decode(pool, c["read"], c["write"], conv_out, c["a"], c["b"], c["A_log"], c["dt_bias"], num_k_heads=H,
                   num_v_heads=HV, head_k_dim=K, head_v_dim=V, T=T, intermediate=inter, write_final=write_final,
                   out=o, rounding=rounding, seed=SEED, step=STEP, pdl=pdl, validate=False)

    results = {}
    for pdl in (False, True):
        reset()
        chain(pdl)
        torch.cuda.synchronize()
        results[("eager", pdl)] = _snapshot(conv_out, conv_state, o, pool, inter)
        graph = torch.cuda.CUDAGraph()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            reset()
            chain(pdl)  # warm-up on a side stream before capture
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(graph):
            chain(pdl)
        reset()
        graph.replay()
        torch.cuda.synchronize()
        results[("graph", pdl)] = _snapshot(conv_out, conv_state, o, pool, inter)
    first = results[("eager", False)]
    for key, got in results.items():
        for name, x, y in zip(("conv_out", "conv_state", "o", "pool", "inter"), first, got, strict=True):
            if x is not None:
                assert torch.equal(x.view(torch.uint8), y.view(torch.uint8)), f"{key}: {name} differs from eager"

    conv_out_k, conv_state_k, o_k, pool_k, inter_k = first
    flat_ref = conv_ref_out.transpose(1, 2).reshape(batch * T, CONV_DIM)
    conv_err = (conv_out_k.double() - flat_ref).abs().max().item()
    assert conv_err <= 1e-2 + 2.0**-7 * flat_ref.abs().max().item()
    assert torch.equal(conv_state_k, conv_ref_state.to(conv_state_k.dtype))

    co = conv_out_k.view(batch, T, CONV_DIM)
    ref = gdn_decode_step(
        c["pool"], co[..., : H * K].unflatten(-1, (H, K)), co[..., H * K : 2 * H * K].unflatten(-1, (H, K)),
        co[..., 2 * H * K :].unflatten(-1, (HV, V)), c["a"].reshape(batch, T, HV), c["b"].reshape(batch, T, HV),
        c["A_log"], c["dt_bias"], c["read"], c["write"], intermediate=intermediate, write_final=write_final,
        rounding=rounding, seed=SEED, step=STEP,
    )
    row = dict(batch=batch, T=T, fmt=f"{fmt}-{rounding}", split=split, inter=intermediate, final=write_final,
               conv_err=conv_err, o_err=_check_o(o_k.view(batch, T, HV, V), ref.o, c["read"]))
    written = torch.zeros(pool_k.shape[0], dtype=torch.bool, device=DEV)
    if write_final:
        written[w] = True
        row.update(_compare_states(fmt, pool_k[written], ref.pool.data[written], "final"))
    assert torch.equal(pool_k[~written].view(torch.uint8), ref.pool.data[~written].view(torch.uint8)), "stray write"
    if intermediate:
        row.update(_compare_states(fmt, inter_k[real], ref.intermediate.data[real], "inter"))
        assert torch.isnan(inter_k[~real].float()).all(), "padding rows wrote intermediate states"
    gpu_report.add(test="gdn_chain", **row)


def _snapshot(*tensors):
    return tuple(None if t is None else t.clone() for t in tensors)


# ------------------------------------------------------------------------------------------
# 64-bit offsets
# ------------------------------------------------------------------------------------------


def _manual_reference(c, rows: torch.Tensor, conv_out: torch.Tensor, fmt: str, rounding: str):
    """Reference for a subset of real rows (the kernel's rows are independent): o (n, T, HV, V)
    fp64, final states and intermediate entries rounded with the request's (read slot's)
    uniforms, shared by its T entries (docs/spec.md §8)."""
    T = c["T"]
    co = conv_out.view(c["batch"], T, CONV_DIM)[rows]
    state0 = dequantize(c["pool"][c["read"][rows]])
    o, states = gdn_recurrence(
        state0, co[..., : H * K].unflatten(-1, (H, K)), co[..., H * K : 2 * H * K].unflatten(-1, (H, K)),
        co[..., 2 * H * K :].unflatten(-1, (HV, V)), c["a"].view(c["batch"], T, HV)[rows],
        c["b"].view(c["batch"], T, HV)[rows], c["A_log"], c["dt_bias"],
    )
    sr = rounding == "sr"
    final_u = sr_uniform(SEED, c["read"][rows], STEP, (HV, V, K)) if sr else None
    inter_u = final_u[:, None].expand(-1, T, -1, -1, -1) if sr else None
    return o, quantize(states[:, -1], fmt, rounding, final_u).data, quantize(states, fmt, rounding, inter_u).data


@pytest.mark.parametrize("fmt,rounding", [("fp32", "rn"), ("bf16", "sr")])
def test_gdn_pool_slots_past_2_31(fmt: str, rounding: str, gpu_report) -> None:
    """Slots 2050..2099 of a 2100-slot pool: element offsets up to 2.2e9 > 2**31 (fp32: 8.8 GB)."""
    T, batch, n_slots = 2, 3, 2100
    c = _inputs(batch, T, fmt, seed=31, split=True, n_pad=0, n_slots=64)
    big = torch.empty(n_slots, HV, V, K, dtype=c["pool"].data.dtype, device=DEV)
    big[:64] = c["pool"].data
    big[2099] = c["pool"].data[c["read"][0]]
    big[2051] = c["pool"].data[c["read"][2]]
    c["read"] = torch.tensor([2099, 5, 2051], device=DEV)
    c["write"] = torch.tensor([2090, 2098, 7], device=DEV)  # past 2**31, past 2**31, low
    c["pool"] = StoredState(big, None, fmt)
    snapshot_rows = big[[0, 2097, 2099]].clone()
    conv_out = c["qkv"].clone()  # the kernel alone: any bf16 input will do
    inter = torch.full((batch, T, HV, V, K), float("nan"), dtype=big.dtype, device=DEV)
    big[c["write"]] = float("nan")
    o = gdn_decode(big, c["read"], c["write"], conv_out, c["a"], c["b"], c["A_log"], c["dt_bias"], num_k_heads=H,
                   num_v_heads=HV, head_k_dim=K, head_v_dim=V, T=T, intermediate=inter, rounding=rounding,
                   seed=SEED, step=STEP)
    torch.cuda.synchronize()
    rows = torch.arange(batch, device=DEV)
    # the read slots were not written (split): the reference reads what the kernel read
    o_ref, final_ref, inter_ref = _manual_reference(c, rows, conv_out, fmt, rounding)
    row = dict(test="gdn_64bit_pool", fmt=f"{fmt}-{rounding}", o_err=_check_o(o.view(batch, T, HV, V), o_ref,
                                                                            c["read"]))
    row.update(_compare_states(fmt, big[c["write"]], final_ref, "final"))
    row.update(_compare_states(fmt, inter, inter_ref, "inter"))
    assert torch.equal(big[[0, 2097, 2099]].view(torch.uint8), snapshot_rows.view(torch.uint8)), "stray write"
    gpu_report.add(**row)
    del big
    torch.cuda.empty_cache()


def test_gdn_intermediate_entries_past_2_31(gpu_report) -> None:
    """batch 520, T=4: intermediate entry 2079 starts at 2079 * 2**20 elements > 2**31 (bf16 SR)."""
    fmt, rounding, T, batch = "bf16", "sr", 4, 520
    c = _inputs(batch, T, fmt, seed=52, n_pad=0, n_slots=batch + 3)
    conv_out = c["qkv"].clone()
    inter = torch.full((batch, T, HV, V, K), float("nan"), dtype=torch.bfloat16, device=DEV)
    o = gdn_decode(c["pool"].data.clone(), c["read"], None, conv_out, c["a"], c["b"], c["A_log"], c["dt_bias"],
                   num_k_heads=H, num_v_heads=HV, head_k_dim=K, head_v_dim=V, T=T, intermediate=inter,
                   write_final=False, rounding=rounding, seed=SEED, step=STEP)
    torch.cuda.synchronize()
    rows = torch.tensor([0, 1, 300, 518, 519], device=DEV)
    o_ref, _, inter_ref = _manual_reference(c, rows, conv_out, fmt, rounding)
    o_err = _check_o(o.view(batch, T, HV, V)[rows], o_ref, c["read"][rows])
    row = dict(test="gdn_64bit_intermediate", fmt=f"{fmt}-{rounding}", o_err=o_err)
    row.update(_compare_states(fmt, inter[rows], inter_ref, "inter"))
    assert not torch.isnan(inter.float()).any(), "unwritten intermediate entries"
    gpu_report.add(**row)
    del inter
    torch.cuda.empty_cache()
