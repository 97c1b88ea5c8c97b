"""The FlashInfer peer impls without FlashInfer (CI has neither it nor a GPU).

- Availability: absent -> every case skipped with the install hint, `ssmbench list` says so, a
  sweep listing them skips them and goes on; a broken install is reported, never raised.
- The case-to-API mapping: the keyword arguments handed to FlashInfer for a case (layouts,
  strides, dtypes, slot and dst indices, ring layout), checked on the tensors themselves.
- Every unsupported feature has its reason.
- End to end through the verifier: a fake `flashinfer.mamba` (injected via sys.modules) runs
  FlashInfer's documented semantics in PyTorch, reading ONLY what the mapping hands it, in
  FlashInfer's layouts. The chains then pass `verify` against ssmbench's references, and a
  planted mapping error (a wrong ring permutation, wrong dst slots) fails it.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.families.mamba2 import make_mamba2_workload
from ssmbench.impls import flashinfer as fi
from ssmbench.impls.registry import registry
from ssmbench.runs.sweep.run import DEVICE_ENV
from ssmbench.spec.case import AcceptLaw, Case
from ssmbench.spec.presets import Mamba2Shape
from ssmbench_kernels.storage.reference import StoredState, dequantize, quantize
from tests.peer_chains import assert_restore_repeats, verified_chain

SSU, CKPT = "flashinfer.ssu", "flashinfer.checkpointing"


def mamba2_case(**kw) -> Case:
    shape = kw.pop("shape", Mamba2Shape(nheads=2, head_dim=32, dstate=64, ngroups=1, d_conv=4))
    base = dict(id="fi-case", sweep="t", family="mamba2", preset=None, tp=1, shape=shape, batch=3, T=2,
                state_dtype="fp32", rounding="rn", pool="pool", accept=AcceptLaw("rate", (0.6,)), window=4,
                pdl=False, l2="hot", seed=5, act_dtype="bf16", extras=(("z_gate", True),))
    base.update(kw)
    return Case(**base)


@pytest.fixture
def absent(monkeypatch):
    """flashinfer is not importable (whatever this machine has)."""
    monkeypatch.setitem(sys.modules, "flashinfer", None)
    monkeypatch.setitem(sys.modules, "flashinfer.mamba", None)
    fi.FLASHINFER.reset()
    yield
    fi.FLASHINFER.reset()


# -- availability ------------------------------------------------------------------------------


def test_absent_flashinfer_is_reported_not_raised(absent) -> None:
    assert (fi.FLASHINFER.availability() == fi.NOT_INSTALLED
            == "flashinfer not installed (pip install 'ssmbench[flashinfer]')")
    impls = registry()
    for name in (SSU, CKPT):
        assert impls[name].kind == "peer" and impls[name].family == "mamba2"
        assert impls[name].supports(mamba2_case()) == fi.NOT_INSTALLED
    with pytest.raises(RuntimeError, match="not installed"):
        fi.flashinfer_mamba()


def test_importing_ssmbench_does_not_import_flashinfer() -> None:
    """Registering every impl imports none of the optional peers' packages: FlashInfer (flashinfer.ssu /
    .checkpointing / .gdn), its CuTe DSL (flashinfer.gdn's kernels) and FLA (fla.gdn)."""
    code = "import sys, ssmbench.impls; from ssmbench.impls.registry import registry; registry(); " \
           "eager = [m for m in ('flashinfer', 'cutlass', 'fla') if m in sys.modules]; " \
           "assert not eager, f'imported eagerly: {eager}'"
    import subprocess

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr


def test_broken_install_is_reported(monkeypatch) -> None:
    broken = types.ModuleType("flashinfer.mamba")
    monkeypatch.setitem(sys.modules, "flashinfer", types.ModuleType("flashinfer"))
    monkeypatch.delitem(sys.modules, "flashinfer.mamba", raising=False)

    def explode(name, *a, **k):
        if name == "flashinfer.mamba":
            raise OSError("libtvm_ffi.so: cannot open shared object file")
        return real_import(name, *a, **k)

    real_import = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", explode)
    fi.FLASHINFER.reset()
    try:
        assert fi.FLASHINFER.availability().startswith("flashinfer is installed but cannot be imported: OSError")
    finally:
        fi.FLASHINFER.reset()
    del broken


def test_list_shows_availability(absent) -> None:
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "│ flashinfer." in line]  # with flashinfer.gdn
    assert len(rows) == 3 and all(r.rstrip("│ ").endswith("no") for r in rows), rows
    for name in (SSU, CKPT):
        assert f"  {name}: flashinfer not installed (pip install 'ssmbench[flashinfer]')" in result.output
    assert "│ reference.sequential" in result.output


TINY = """\
name: tiny-fi
family: mamba2
shape: {nheads: 2, head_dim: 32, dstate: 64, ngroups: 1, d_conv: 4}
act_dtype: bf16
impls: [reference.sequential, flashinfer.ssu, flashinfer.checkpointing]
baseline: reference.sequential
axes: {batch: [2], T: [2], state_dtype: [fp32], window: [T], accept: [{rate: 0.6}], pdl: [off], l2: [hot]}
measure: {warmup: 1, min_samples: 5, max_samples: 8, max_noise: 0.5, min_time_s: 0, timeout_s: 1}
"""


def test_sweep_without_flashinfer_skips_it_and_goes_on(tmp_path: Path, monkeypatch, absent) -> None:
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    # Workers are fresh processes: make flashinfer unimportable there too.
    (tmp_path / "flashinfer").mkdir()
    (tmp_path / "flashinfer" / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'flashinfer'\","
                                                         " name='flashinfer')\n")
    root = Path(__file__).resolve().parent.parent
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{root}:{root / 'kernels'}")
    spec, out = tmp_path / "tiny.yaml", tmp_path / "r.json"
    spec.write_text(TINY)
    result = CliRunner().invoke(app, ["sweep", str(spec), "-o", str(out)])
    assert result.exit_code == 0, result.output
    cases = json.loads(out.read_text())["cases"]
    by_impl = {c["impl"]: c for c in cases}
    assert by_impl["reference.sequential"]["status"] == "ok"
    for name in (SSU, CKPT):
        assert by_impl[name]["status"] == "skip"
        assert "flashinfer not installed" in json.dumps(by_impl[name])


# -- what their API can express ----------------------------------------------------------------


@pytest.mark.parametrize(("impl", "change", "reason"), [
    ("both", dict(extras=(("tree", True),)), "no draft-tree"),
    ("both", dict(pool="padded"), "padding rows"),
    ("both", dict(shape=Mamba2Shape(nheads=24, head_dim=32, dstate=64, ngroups=1, d_conv=4)), "nheads/ngroups"),
    ("both", dict(shape=Mamba2Shape(nheads=2, head_dim=32, dstate=64, ngroups=1, d_conv=5)), "conv widths"),
    ("ssu", dict(state_dtype="int8", rounding="sr"), "no int8"),
    ("ssu", dict(state_dtype="fp8", rounding="rn"), "no fp8"),
    ("ssu", dict(state_dtype="bf16", rounding="sr"), "fp16-only"),
    ("ssu", dict(shape=Mamba2Shape(nheads=2, head_dim=40, dstate=64, ngroups=1, d_conv=4)), "passes of 16"),
    ("ssu", dict(shape=Mamba2Shape(nheads=2, head_dim=32, dstate=16, ngroups=1, d_conv=4)), ">= 64"),
    ("ckpt", dict(window=None), "needs a window"),
    ("ckpt", dict(window=32, T=6), "at most 16"),
    ("ckpt", dict(act_dtype="fp32"), "2-byte activations"),
    ("ckpt", dict(state_dtype="bf16", rounding="sr"), "fp16-only"),
    ("ckpt", dict(state_dtype="int8", rounding="sr"), "nearest only"),
    ("ckpt", dict(state_dtype="fp8", rounding="rn"), "head_dim == 64"),
    ("ckpt", dict(shape=Mamba2Shape(nheads=2, head_dim=80, dstate=128, ngroups=1, d_conv=4)), "32 or 64"),
    ("ckpt", dict(shape=Mamba2Shape(nheads=2, head_dim=64, dstate=96, ngroups=1, d_conv=4)), "multiple of 64"),
])
def test_unsupported_cases_say_why(impl: str, change: dict, reason: str) -> None:
    case = mamba2_case(**change)
    checks = {"ssu": [fi.ssu_case_reason], "ckpt": [fi.checkpointing_case_reason],
              "both": [fi.ssu_case_reason, fi.checkpointing_case_reason]}[impl]
    for check in checks:
        got = check(case)
        assert got is not None and reason in got, (check.__name__, got)


@pytest.mark.parametrize("case", [
    mamba2_case(),
    mamba2_case(state_dtype="bf16"), mamba2_case(state_dtype="fp16", rounding="sr"),
    mamba2_case(rounding="sr"),  # fp32 SR: exact stores
    mamba2_case(shape=Mamba2Shape(nheads=16, head_dim=64, dstate=128, ngroups=1, d_conv=4), T=6, window=16, pdl=True),
])
def test_headline_like_cases_are_supported(case: Case) -> None:
    assert fi.ssu_case_reason(case) is None
    assert fi.checkpointing_case_reason(case) is None
    assert fi.checkpointing_case_reason(replace(case, state_dtype="int8", rounding="rn",
                                                shape=replace(case.shape, head_dim=64))) is None


# -- the mapping on the tensors ----------------------------------------------------------------


def test_ssu_arguments_layouts() -> None:
    case = mamba2_case(shape=Mamba2Shape(nheads=4, head_dim=16, dstate=64, ngroups=2, d_conv=4), T=3)
    wl = make_mamba2_workload(case)
    s, b, T = wl.shape, wl.batch, case.T
    conv_out = torch.randn(b * T, s.conv_dim).to(torch.bfloat16)
    state = torch.zeros(wl.n_slots + b * T, s.nheads, s.head_dim, s.dstate)
    dst = torch.arange(b * T).view(b, T) + wl.n_slots
    y = torch.empty(b * T, s.nheads * s.head_dim, dtype=torch.bfloat16)
    dt32 = wl.dt_raw.float()
    a = fi.ssu_arguments(case, wl, conv_out=conv_out, state=state, dst=dst, y=y, dt=dt32, rand_seed=None)
    x, B, C = a["x"], a["B"], a["C"]
    assert x.shape == (b, T, 4, 16) and x.stride(3) == 1 and x.stride(2) == 16  # x.stride(2) == dim
    assert x.data_ptr() == conv_out.data_ptr() and x.stride(1) == s.conv_dim  # a view: no copy
    assert B.shape == C.shape == (b, T, 2, 64) and B.stride(2) == 64 and B.stride(3) == 1
    assert B.data_ptr() == conv_out[:, 64:].data_ptr() and C.data_ptr() == conv_out[:, 64 + 128:].data_ptr()
    assert a["dt"].shape == (b, T, 4, 16) and a["dt"].stride()[2:] == (1, 0) and a["dt"].dtype == torch.float32
    assert torch.equal(a["dt"][1, 2, :, 5], wl.dt_raw.float().view(b, T, 4)[1, 2])
    assert a["A"].shape == (4, 16, 64) and a["A"].stride() == (1, 0, 0) and torch.equal(a["A"][:, 3, 7], wl.A)
    for key, ref in (("D", wl.D), ("dt_bias", wl.dt_bias)):  # tied to dt's dtype: fp32, exact
        assert a[key].shape == (4, 16) and a[key].stride() == (1, 0) and a[key].dtype == torch.float32
        assert torch.equal(a[key][:, 9], ref)
    assert a["z"].shape == (b, T, 4, 16) and a["z"].data_ptr() == wl.z.data_ptr()
    assert a["state_batch_indices"] is wl.slot_idx and a["dst_state_batch_indices"] is dst
    assert a["out"].shape == (b, T, 4, 16) and a["out"].data_ptr() == y.data_ptr()
    assert a["dt_softplus"] is True and a["pad_slot_id"] == -1 and a["rand_seed"] is None


def test_checkpointing_arguments_layouts() -> None:
    case = mamba2_case(state_dtype="int8", rounding="rn", shape=Mamba2Shape(nheads=4, head_dim=64, dstate=64,
                                                                             ngroups=2, d_conv=4), T=3, window=5,
                       pdl=True)
    wl = make_mamba2_workload(case)
    from ssmbench.families.mamba2 import replay_state

    rs = replay_state(case, wl)
    ring = fi.flashinfer_ring(rs)
    L = case.window + case.T
    assert ring["x_cache"].shape == (wl.n_slots, 4, L, 64) and ring["x_cache"].is_contiguous()
    assert ring["B_cache"].shape == (wl.n_slots, 2, L, 64) and ring["dt_cache"].shape == (wl.n_slots, 4, L)
    assert ring["dt_cache"].dtype == torch.float32
    assert ring["ring_start"].dtype == ring["prev_num_accepted_tokens"].dtype == torch.int32
    slot = int(wl.slot_idx[0])
    row = int(rs.ring_start[slot])
    assert torch.equal(ring["x_cache"][slot, 3, row], rs.hist_x[slot, row, 3])
    assert torch.equal(ring["B_cache"][slot, 1, row], rs.hist_B[slot, row, 1])
    assert torch.equal(ring["dt_cache"][slot, 2, row], rs.hist_dt[slot, row, 2])
    back = fi.ssmbench_ring(rs.ckpt, ring, case.window)
    back.validate()
    for name in ("hist_x", "hist_B", "hist_dt", "ring_start", "pnat"):
        assert torch.equal(getattr(back, name), getattr(rs, name).to(getattr(back, name).dtype)), name

    b, T = wl.batch, case.T
    conv_out = torch.randn(b * T, wl.shape.conv_dim).to(torch.bfloat16)
    y = torch.empty(b * T, 4 * 64, dtype=torch.bfloat16)
    a = fi.checkpointing_arguments(case, wl, conv_out=conv_out, ckpt=rs.ckpt, ring=ring, y=y, rand_seed=None,
                                   scratch=None)
    assert a["state"] is rs.ckpt.data and a["state"].dtype == torch.int8
    assert a["state_scale"] is rs.ckpt.scale and a["state_scale"].shape == (wl.n_slots, 4, 64)
    assert a["dt"].dtype == torch.bfloat16 and a["dt"].stride()[2:] == (1, 0)  # native dtype, kernel converts
    assert a["D"].dtype == a["dt_bias"].dtype == torch.float32 and a["D"].stride() == (1, 0)
    assert a["enable_pdl"] is True and a["algorithm"] == "auto" and a["cb_scaled"] is None
    assert a["x_cache"] is ring["x_cache"] and a["prev_num_accepted_tokens"] is ring["prev_num_accepted_tokens"]


# -- end to end through the verifier with a fake flashinfer.mamba ------------------------------


def _softplus(u: torch.Tensor) -> torch.Tensor:
    return torch.where(u <= 20.0, torch.log1p(torch.exp(torch.clamp(u, max=20.0))), u)


def _round_state(values: torch.Tensor, like: torch.Tensor, rand_seed) -> torch.Tensor:
    """RN into the state dtype; SR (unbiased, any uniforms) for fp16 with a seed, as FlashInfer."""
    if rand_seed is None or like.dtype != torch.float16:
        return values.to(like.dtype)
    lo = values.to(torch.float16).float()
    step = torch.where(lo <= values, torch.nextafter(lo.half(), torch.tensor(math.inf, dtype=torch.float16)).float(),
                       torch.nextafter(lo.half(), torch.tensor(-math.inf, dtype=torch.float16)).float())
    frac = ((values - lo) / (step - lo)).nan_to_num(0.0)
    return torch.where(torch.rand_like(values) < frac, step, lo).to(torch.float16)


def fake_selective_state_update(*, state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, state_batch_indices,
                                dst_state_batch_indices, pad_slot_id, out, cache_steps, rand_seed, philox_rounds,
                                algorithm) -> torch.Tensor:
    """FlashInfer 0.7.2 MTP semantics (kernel_selective_state_update_mtp_simple.cuh), checking the
    layout rules its C++ binding enforces."""
    b, T, H, P = x.shape
    G = B.shape[2]
    assert x.stride(3) == 1 and x.stride(2) == P and dt.stride(2) == 1 and dt.stride(3) == 0
    assert A.stride() == (1, 0, 0) and D.stride() == (1, 0) and dt_bias.stride() == (1, 0)
    assert D.dtype == dt.dtype == dt_bias.dtype, "D and dt_bias must have dt's dtype"
    assert B.stride(3) == 1 and B.stride(2) == B.shape[3] and out.shape == x.shape and out.stride(3) == 1
    assert dst_state_batch_indices.shape == (b, T) and dst_state_batch_indices.dtype == state_batch_indices.dtype
    assert state.is_contiguous() and dt_softplus
    for r in range(b):
        slot = int(state_batch_indices[r])
        S = torch.zeros(H, P, state.shape[-1]) if slot == pad_slot_id else state[slot].float()
        for t in range(T):
            d = dt[r, t, :, 0].float() + dt_bias[:, 0].float()
            d = _softplus(d)
            g = torch.arange(H) // (H // G)
            Bt, Ct = B[r, t].float()[g], C[r, t].float()[g]
            decay = torch.exp(A[:, 0, 0].float() * d)[:, None, None]
            S = decay * S + (d[:, None] * x[r, t].float())[..., None] * Bt[:, None]
            yt = (S * Ct[:, None]).sum(-1) + D[:, 0].float()[:, None] * x[r, t].float()
            if z is not None:
                zt = z[r, t].float()
                yt = yt * zt * torch.sigmoid(zt)
            out[r, t] = yt.to(out.dtype)
            if slot != pad_slot_id and int(dst_state_batch_indices[r, t]) != pad_slot_id:
                state[int(dst_state_batch_indices[r, t])] = _round_state(S, state, rand_seed)
    return out


def fake_checkpointing_ssu(*, state, x_cache, B_cache, dt_cache, ring_start, prev_num_accepted_tokens, x, dt, A, B,
                           C, out, D, z, dt_bias, dt_softplus, state_batch_indices, pad_slot_id, state_scale,
                           rand_seed, philox_rounds, enable_pdl, cb_scaled, cumAdt_vec, cb_old,
                           algorithm) -> torch.Tensor:
    """FlashInfer 0.7.2 checkpointing_ssu semantics (kernel_checkpointing_ssu.cuh): the ring rows
    (ring_start + j) % L, flush when prev_k + T > L - T, the new checkpoint stored (RN, per-row
    amax scale for int8/fp8) and the flush rows' outputs taken from the STORED (rounded) state;
    new tokens appended at (ring_start + prev_k + i) % L; bookkeeping left to the host."""
    b, T, H, P = x.shape
    G, L = B.shape[2], x_cache.shape[2]
    W = L - T
    assert ring_start.dtype == prev_num_accepted_tokens.dtype == torch.int32 and dt_cache.dtype == torch.float32
    assert D.dtype == dt_bias.dtype == torch.float32 and dt.stride(3) == 0 and x.stride(2) == P
    assert (state_scale is not None) == (state.dtype in (torch.int8, torch.float8_e4m3fn))
    fmt = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.int8: "int8",
           torch.float8_e4m3fn: "fp8"}[state.dtype]
    g = torch.arange(H) // (H // G)
    Av = A[:, 0, 0].float()
    for r in range(b):
        slot = int(state_batch_indices[r])
        if slot == pad_slot_id:
            continue
        rs0, pk = int(ring_start[slot]), int(prev_num_accepted_tokens[slot])
        S = dequantize(StoredState(state[slot:slot + 1], None if state_scale is None else state_scale[slot:slot + 1],
                                   fmt))[0].float()
        hist = [(x_cache[slot, :, (rs0 + j) % L].float(), B_cache[slot, :, (rs0 + j) % L].float()[g],
                 dt_cache[slot, :, (rs0 + j) % L]) for j in range(pk)]
        d_new = _softplus(dt[r, :, :, 0].float() + dt_bias[:, 0])
        new = [(x[r, t].float(), B[r, t].float()[g], d_new[t]) for t in range(T)]

        def advance(S, tok):
            xt, Bt, dtt = tok
            return torch.exp(Av * dtt)[:, None, None] * S + (dtt[:, None] * xt)[..., None] * Bt[:, None]

        for tok in hist:
            S = advance(S, tok)
        if pk + T > W:  # flush: store the checkpoint, outputs from the stored copy
            if fmt == "fp16" and rand_seed is not None:
                state[slot] = _round_state(S, state, rand_seed)
                S = state[slot].float()
            else:
                q = quantize(S[None].double(), fmt, "rn", None)
                state[slot] = q.data[0]
                if state_scale is not None:
                    state_scale[slot] = q.scale[0].float()
                S = dequantize(q)[0].float()
        for t, tok in enumerate(new):
            S = advance(S, tok)
            yt = (S * C[r, t].float()[g][:, None]).sum(-1) + D[:, 0][:, None] * x[r, t].float()
            if z is not None:
                yt = yt * z[r, t].float() * torch.sigmoid(z[r, t].float())
            out[r, t] = yt.to(out.dtype)
            row = (rs0 + pk + t) % L
            x_cache[slot, :, row] = x[r, t]
            B_cache[slot, :, row] = B[r, t]
            dt_cache[slot, :, row] = d_new[t]
    return out


def fake_scratch(batch, nheads, T, W, dtype, device):
    return (torch.empty(batch, nheads, 32, 8, dtype=dtype), torch.empty(batch, nheads, 16),
            torch.empty(batch, nheads, 32, 8, dtype=dtype))


@pytest.fixture
def fake_flashinfer(monkeypatch):
    pkg, mamba = types.ModuleType("flashinfer"), types.ModuleType("flashinfer.mamba")
    mamba.selective_state_update = fake_selective_state_update
    mamba.checkpointing_ssu = fake_checkpointing_ssu
    mamba.allocate_checkpointing_ssu_scratch = fake_scratch
    pkg.mamba = mamba
    monkeypatch.setitem(sys.modules, "flashinfer", pkg)
    monkeypatch.setitem(sys.modules, "flashinfer.mamba", mamba)
    fi.FLASHINFER.reset()
    yield mamba
    fi.FLASHINFER.reset()


def _check(name: str, case: Case):
    assert registry()[name].case_reason(case) is None
    return verified_chain(name, case)


CASES = [
    mamba2_case(),
    mamba2_case(state_dtype="bf16", T=3, window=3),
    mamba2_case(state_dtype="fp16", rounding="sr", shape=Mamba2Shape(nheads=4, head_dim=16, dstate=64, ngroups=2,
                                                                      d_conv=3)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.state_dtype}-{c.rounding}-T{c.T}")
def test_ssu_chain_verifies_through_the_mapping(fake_flashinfer, case: Case) -> None:
    comparisons, _, _ = _check(SSU, case)
    assert comparisons and all(c.ok for c in comparisons), [c.describe() for c in comparisons]
    assert {c.name for c in comparisons} >= {"conv_out", "y", f"state[{case.state_dtype}]"}


@pytest.mark.parametrize("case", [
    mamba2_case(),
    mamba2_case(state_dtype="bf16", T=3, window=3),
    mamba2_case(state_dtype="fp16", rounding="sr", shape=Mamba2Shape(nheads=4, head_dim=32, dstate=64, ngroups=2,
                                                                      d_conv=3), window=3),
    mamba2_case(state_dtype="int8", shape=Mamba2Shape(nheads=2, head_dim=64, dstate=64, ngroups=1, d_conv=4), T=2,
                window=3)],
    ids=lambda c: f"{c.state_dtype}-{c.rounding}-T{c.T}-w{c.window}")
def test_checkpointing_chain_verifies_through_the_mapping(fake_flashinfer, case: Case) -> None:
    comparisons, chain, wl = _check(CKPT, case)
    assert all(c.ok for c in comparisons), [c.describe() for c in comparisons]
    must_write = chain.outputs()["must_write"]
    assert 0 < int(must_write.sum()) or case.window > case.T  # W = T: every row with pnat > 0 flushes


def test_restore_puts_the_ring_and_checkpoint_back(fake_flashinfer) -> None:
    assert_restore_repeats(CKPT, mamba2_case(T=2, window=2))


def test_a_planted_mapping_error_fails_verification(fake_flashinfer, monkeypatch) -> None:
    case = mamba2_case(T=2, window=3)
    good = fi.flashinfer_ring

    def wrong_ring(rs):  # x_cache with ring rows and heads swapped wrongly (a layout bug)
        ring = good(rs)
        ring["x_cache"] = ring["x_cache"].flip(2).contiguous()
        return ring

    monkeypatch.setattr(fi, "flashinfer_ring", wrong_ring)
    comparisons, _, _ = _check(CKPT, case)
    assert not all(c.ok for c in comparisons)

    monkeypatch.setattr(fi, "flashinfer_ring", good)
    real_args = fi.ssu_arguments

    def wrong_dst(*a, **k):
        args = real_args(*a, **k)
        args["dst_state_batch_indices"] = args["dst_state_batch_indices"].roll(1, 0)  # rows' slots swapped
        return args

    monkeypatch.setattr(fi, "ssu_arguments", wrong_dst)
    comparisons, _, _ = _check(SSU, mamba2_case(T=3))
    assert not all(c.ok for c in comparisons)


def test_bytes_models() -> None:
    case = mamba2_case(shape=Mamba2Shape(nheads=16, head_dim=64, dstate=128, ngroups=1, d_conv=4), T=6, window=16,
                       batch=8)
    wl = make_mamba2_workload(case)
    impls = registry()
    assert impls[SSU].bytes_moved(case, wl) == impls["triton.intermediate"].bytes_moved(case, wl) + 8 * 6 * 16 * 2
    ckpt = impls[CKPT].bytes_moved(case, wl)
    if "triton.checkpoint" in impls:
        assert ckpt == impls["triton.checkpoint"].bytes_moved(case, wl)
