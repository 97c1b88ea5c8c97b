"""The `flashinfer.gdn` peer (FlashInfer 0.7.2's gated_delta_rule_decode_pretranspose) without a GPU.

- Availability: FlashInfer (or its CuTe DSL) absent -> every case skipped with the reason, `ssmbench
  list` says so; importing ssmbench never imports it.
- The case-to-API mapping: the keyword arguments handed to FlashInfer (layouts, contiguity, raw
  gates, the pool in place with read / write slots, the per-token buffer, the final write's switch),
  every unsupported feature with its reason, the byte model and the notes.
- End to end through the verifier with a fake `flashinfer.gdn_decode` that runs the API's documented
  semantics (read from flashinfer/gdn_decode.py 0.7.2.post1) in PyTorch, reading ONLY what the mapping
  hands it and asserting what the real function asserts (shapes, K-last pool, dtypes, T = 1 limits).
  A planted mapping error fails it. The real kernels were never run here: no GPU machine had the
  CuTe DSL wheels (docs/gdn.md).
"""

from __future__ import annotations

import sys
import types
from dataclasses import replace

import pytest
import torch
from test_fla_mapping import _softplus
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.families import gdn
from ssmbench.families.gdn import make_gdn_workload
from ssmbench.impls import fla as fp
from ssmbench.impls import flashinfer_gdn as fg
from ssmbench.impls.registry import registry
from ssmbench.spec.case import Case
from ssmbench.spec.presets import GDNShape
from tests.peer_chains import assert_restore_repeats, verified_chain
from tests.peer_chains import gdn_case as peer_gdn_case

NAME = "flashinfer.gdn"
MODULE = "flashinfer.gdn_decode"
SHAPE = GDNShape(num_k_heads=1, num_v_heads=2, head_k_dim=128, head_v_dim=128, d_conv=4)
"""Its kernels need K, V >= 128: the smallest shape it takes."""
QWEN = GDNShape(num_k_heads=16, num_v_heads=64, head_k_dim=128, head_v_dim=128, d_conv=4)


def gdn_case(**kw) -> Case:
    return peer_gdn_case(SHAPE, "fi-gdn-case", **kw)


@pytest.fixture
def absent(monkeypatch):
    """FlashInfer is not importable (whatever this machine has)."""
    for name in ("flashinfer", MODULE):
        monkeypatch.setitem(sys.modules, name, None)
    fg.FLASHINFER_GDN.reset()
    yield
    fg.FLASHINFER_GDN.reset()


# -- availability ------------------------------------------------------------------------------


def test_absent_flashinfer_is_reported_not_raised(absent) -> None:
    impl = registry()[NAME]
    assert impl.kind == "peer" and impl.family == "gdn" and impl.needs_gpu
    assert impl.supports(gdn_case()) == "flashinfer not installed (pip install 'ssmbench[flashinfer]')"
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    assert f"  {NAME}: flashinfer not installed" in result.output


def test_a_missing_cute_dsl_is_reported(monkeypatch) -> None:
    """FlashInfer installed, its CuTe DSL (``cutlass``) not: the H200 machine's case."""
    import ssmbench.impls.optional as opt

    def no_cutlass(name, *a, **k):
        raise ModuleNotFoundError("No module named 'cutlass'", name="cutlass")

    monkeypatch.setattr(opt.importlib, "import_module", no_cutlass)
    fg.FLASHINFER_GDN.reset()
    try:
        assert fg.FLASHINFER_GDN.availability() == ("flashinfer 0.7.2.post1 (its GDN decode: CuTe DSL) is installed "
                                                    "but cannot be imported: No module named 'cutlass'")
    finally:
        fg.FLASHINFER_GDN.reset()


# -- what its API can express ------------------------------------------------------------------


@pytest.mark.parametrize(("change", "reason"), [
    (dict(state_dtype="fp16", rounding="sr"), "fp32 or bf16"),
    (dict(state_dtype="bf16", rounding="sr", shape=QWEN), "no stochastic rounding"),
    (dict(state_dtype="bf16", shape=replace(SHAPE, head_k_dim=256)), "K = V = 128"),
    (dict(shape=replace(SHAPE, head_k_dim=64)), "K, V >= 128"),
    (dict(shape=replace(SHAPE, head_v_dim=132)), "multiple of 8"),
    (dict(act_dtype="fp32"), "bf16 or fp16"),
    (dict(pool="padded"), "padding rows"),
    (dict(T=1, options={"intermediate": True}), "T > 1 only"),
    (dict(T=1, options={"write_final": False, "intermediate": True}), "T > 1 only"),
    (dict(options={"intermediate": False, "write_final": False}), "stores no state"),
    (dict(shape=replace(SHAPE, d_conv=5)), "conv widths"),
])
def test_unsupported_cases_say_why(change: dict, reason: str) -> None:
    got = fg.flashinfer_gdn_case_reason(gdn_case(**change))
    assert got is not None and reason in got, got


@pytest.mark.parametrize("case", [
    gdn_case(), gdn_case(pool="direct", T=1), gdn_case(pool="split"), gdn_case(options={"intermediate": True}),
    gdn_case(options={"intermediate": True, "write_final": False}), gdn_case(shape=QWEN, state_dtype="bf16", T=1),
    gdn_case(shape=QWEN, state_dtype="bf16", T=4, options={"intermediate": True, "write_final": False}),
    gdn_case(shape=QWEN, T=6, batch=512),
])
def test_qwen35_like_cases_are_supported(case: Case) -> None:
    assert fg.flashinfer_gdn_case_reason(case) is None


def test_notes_and_bytes() -> None:
    case = gdn_case(shape=QWEN, batch=8, T=4)
    assert "3 copies making q/k/v contiguous" in fg.timed_notes(case)[0]
    assert registry()[NAME].bytes_moved(case) == gdn.chain_bytes(case) + fp.qkv_copy_bytes(case)
    assert fp.qkv_copy_bytes(case) == 2 * 8 * 4 * QWEN.conv_dim * 2


def test_arguments_layouts() -> None:
    case = gdn_case(shape=replace(SHAPE, num_k_heads=2, num_v_heads=4), T=3, pool="split",
                    options={"scale": 0.3, "intermediate": True, "write_final": False})
    wl = make_gdn_workload(case)
    b, T = wl.batch, case.T
    q, k, v = fp.contiguous_inputs(wl, torch.randn(b * T, wl.shape.conv_dim).to(torch.bfloat16))
    pool = torch.zeros(wl.n_slots, 4, 128, 128)
    y, inter = torch.zeros(b, T, 4, 128, dtype=torch.bfloat16), torch.zeros(b, T, 4, 128, 128)
    a = fg.flashinfer_gdn_arguments(case, wl, q=q, k=k, v=v, pool=pool, y=y, inter=inter)
    assert a["q"] is q and a["k"] is k and a["v"] is v and a["initial_state"] is pool and a["state"] is None
    assert a["initial_state_indices"].dtype == a["output_state_indices"].dtype == torch.int32
    assert torch.equal(a["initial_state_indices"], wl.read_idx) and torch.equal(a["output_state_indices"], wl.write_idx)
    assert a["a"].shape == a["b"].shape == (b, T, 4) and a["a"].data_ptr() == wl.a.data_ptr()  # raw, views
    assert a["A_log"] is wl.A_log and a["dt_bias"] is wl.dt_bias and a["scale"] == 0.3 and a["use_qk_l2norm"]
    assert a["output"] is y and a["intermediate_states_buffer"] is inter and a["disable_state_update"] is True
    assert a["backend"] == "flashinfer"


# -- end to end through the verifier with a fake FlashInfer -----------------------------------


def fake_gated_delta_rule_decode_pretranspose(q, k, v, state, A_log, a, dt_bias, b, scale=None, output=None,
                                              use_qk_l2norm=True, initial_state=None, initial_state_indices=None,
                                              output_state_indices=None, intermediate_states_buffer=None,
                                              disable_state_update=False, backend="auto"):
    """FlashInfer 0.7.2.post1's pool path of gated_delta_rule_decode_pretranspose in PyTorch: its
    asserts, then the gated delta rule in fp32, per-token states and the final state rounded to
    the pool's dtype (nearest), the output in ``output``'s dtype."""
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    assert backend == "flashinfer" and state is None and initial_state is not None
    assert initial_state.shape[1:] == (HV, V, K) and initial_state.stride(-1) == 1
    assert not (T == 1 and intermediate_states_buffer is not None), "intermediate_states_buffer needs T > 1"
    assert not (T == 1 and disable_state_update), "disable_state_update needs T > 1"
    assert q.dtype in (torch.float16, torch.bfloat16) and A_log.dtype == torch.float32
    assert dt_bias.dtype in (torch.bfloat16, torch.float32) and a.shape == b.shape == (B, T, HV)
    assert initial_state_indices.shape == (B,) and initial_state_indices.dtype in (torch.int32, torch.int64)
    if initial_state.dtype == torch.bfloat16:  # its bf16 kernels fail to compile with int64 slots (H200, 2026-11-30)
        for idx in (initial_state_indices, output_state_indices):
            assert idx is None or idx.dtype == torch.int32, "bf16 state: int32 indices"
    for t in (q, k, v):
        assert t.is_contiguous()
    if initial_state.dtype == torch.bfloat16:
        assert K == V == 128, "the bf16 kernels"
    else:
        assert K >= 128 and V >= 128 and V % 8 == 0, "the fp32 kernels"
    write = initial_state_indices if output_state_indices is None else output_state_indices
    scale = K ** -0.5 if scale is None else scale
    S = initial_state[initial_state_indices].float()  # (B, HV, V, K)
    group = torch.arange(HV) // (HV // H)
    for t in range(T):
        qt, kt = q[:, t].float()[:, group], k[:, t].float()[:, group]
        if use_qk_l2norm:
            qt = qt / torch.sqrt((qt * qt).sum(-1, keepdim=True) + 1e-6)
            kt = kt / torch.sqrt((kt * kt).sum(-1, keepdim=True) + 1e-6)
        qt = qt * scale
        gt = -torch.exp(A_log) * _softplus(a[:, t].float() + dt_bias.float())
        S = S * torch.exp(gt)[..., None, None]
        vt = torch.sigmoid(b[:, t].float())[..., None] * (v[:, t].float() - (S * kt[:, :, None]).sum(-1))
        S = S + vt[..., None] * kt[:, :, None]
        output[:, t] = (S * qt[:, :, None]).sum(-1).to(output.dtype)
        if intermediate_states_buffer is not None:
            intermediate_states_buffer[:, t] = S.to(intermediate_states_buffer.dtype)
    if not disable_state_update:
        initial_state[write] = S.to(initial_state.dtype)
    return output, initial_state


@pytest.fixture
def fake_flashinfer(monkeypatch):
    mod = types.ModuleType(MODULE)
    mod.gated_delta_rule_decode_pretranspose = fake_gated_delta_rule_decode_pretranspose
    monkeypatch.setitem(sys.modules, "flashinfer", types.ModuleType("flashinfer"))
    monkeypatch.setitem(sys.modules, MODULE, mod)
    fg.FLASHINFER_GDN.reset()
    yield mod
    fg.FLASHINFER_GDN.reset()


CASES = [
    gdn_case(pool="direct", T=1),
    gdn_case(pool="pool", T=3),
    gdn_case(pool="split", T=2, shape=replace(SHAPE, num_k_heads=2, num_v_heads=4, d_conv=3), options={"scale": 0.2}),
    gdn_case(pool="pool", T=3, options={"intermediate": True, "write_final": False}),
    gdn_case(pool="split", T=2, options={"intermediate": True}),
    gdn_case(pool="pool", T=1, state_dtype="bf16", batch=2),
    gdn_case(pool="split", T=3, state_dtype="bf16", batch=2, options={"intermediate": True}),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.pool}-T{c.T}-{c.state_dtype}"
                         f"{'-inter' if c.option('intermediate', False) else ''}")
def test_chain_verifies_through_the_mapping(fake_flashinfer, case: Case) -> None:
    assert fg.flashinfer_gdn_case_reason(case) is None
    comparisons, chain, _ = verified_chain(NAME, case)
    assert all(c.ok for c in comparisons), [c.describe() for c in comparisons]
    assert {"conv_out", "conv_state", "y"} <= {c.name for c in comparisons}
    assert any(c.name.startswith("state") for c in comparisons)
    assert chain.notes == fg.timed_notes(case) and len(chain.kernel_names) == len(chain.launches) == 3


def test_restore_puts_the_pool_and_conv_state_back(fake_flashinfer) -> None:
    assert_restore_repeats(NAME, gdn_case(pool="split", T=2))


@pytest.mark.parametrize("plant", ["swap_qk", "no_l2norm", "write_to_read_slots", "keep_final"])
def test_a_planted_mapping_error_fails_verification(fake_flashinfer, monkeypatch, plant: str) -> None:
    real = fg.flashinfer_gdn_arguments

    def wrong(*a, **k):
        args = real(*a, **k)
        if plant == "swap_qk":
            args["q"], args["k"] = args["k"], args["q"]
        elif plant == "no_l2norm":
            args["use_qk_l2norm"] = False
        elif plant == "write_to_read_slots":
            args["output_state_indices"] = None
        else:
            args["intermediate_states_buffer"] = None  # per-token states never written
        return args

    monkeypatch.setattr(fg, "flashinfer_gdn_arguments", wrong)
    options = {"intermediate": True, "write_final": False} if plant == "keep_final" else {}
    comparisons, _, _ = verified_chain(NAME, gdn_case(pool="split", T=2, options=options))
    assert not all(c.ok for c in comparisons)
