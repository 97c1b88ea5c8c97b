"""The `fla.gdn` peer (flash-linear-attention's fused_recurrent_gated_delta_rule) without a GPU.

- Availability: fla-core absent -> every case skipped with the install hint, `ssmbench list` and
  `plan` say so; a broken install (a missing dependency) is reported, never raised; importing
  ssmbench never imports fla.
- The case-to-API mapping: the keyword arguments handed to FLA (layouts, contiguity, raw gates,
  state_v_first), every unsupported feature with its reason, the byte model and the notes.
- End to end through the verifier with a fake `fla.ops.gated_delta_rule` that runs FLA 0.6.0's
  semantics (read from fla/ops/gated_delta_rule/fused_recurrent.py) in PyTorch, reading ONLY what
  the mapping hands it and asserting what its kernel assumes (contiguous inputs: the real
  input_guard would copy silently, an untimed-by-us copy). A planted mapping error fails it.
- The real FLA kernel in Triton's interpreter on a tiny shape, when fla-core is installed here.
"""

from __future__ import annotations

import os
import sys
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.families import gdn
from ssmbench.families.common import state_bytes
from ssmbench.families.gdn import make_gdn_workload
from ssmbench.impls import fla as fp
from ssmbench.impls.optional import OptionalModule
from ssmbench.impls.registry import registry
from ssmbench.spec.case import Case
from ssmbench.spec.presets import GDNShape
from tests.peer_chains import assert_restore_repeats, verified_chain
from tests.peer_chains import gdn_case as peer_gdn_case

NAME = "fla.gdn"
MODULE = "fla.ops.gated_delta_rule"
SHAPE = GDNShape(num_k_heads=1, num_v_heads=2, head_k_dim=16, head_v_dim=8, d_conv=4)


def gdn_case(**kw) -> Case:
    return peer_gdn_case(SHAPE, "fla-case", **kw)


def _modules(value) -> dict[str, object]:
    return {name: value for name in ("fla", "fla.ops", MODULE)}


@pytest.fixture
def absent(monkeypatch):
    """fla is not importable (whatever this machine has)."""
    for name, value in _modules(None).items():
        monkeypatch.setitem(sys.modules, name, value)
    fp.FLA.reset()
    yield
    fp.FLA.reset()


# -- availability ------------------------------------------------------------------------------


def test_absent_fla_is_reported_not_raised(absent) -> None:
    assert fp.FLA.availability() == "fla-core not installed (pip install 'ssmbench[fla]')"
    impl = registry()[NAME]
    assert impl.kind == "peer" and impl.family == "gdn"
    assert impl.supports(gdn_case()) == fp.FLA.not_installed
    with pytest.raises(RuntimeError, match="not installed"):
        fp.FLA.load()


def test_a_missing_package_or_dependency_is_reported(monkeypatch) -> None:
    import ssmbench.impls.optional as opt

    absent = OptionalModule("ssmbench_no_such_pkg.ops", "nosuch 1.0", "pip install nosuch")
    assert absent.availability() == "nosuch not installed (pip install nosuch)"
    present = OptionalModule("ssmbench.impls.fla", "ssmbench", "-")
    assert present.availability() == "available"

    def no_einops(name, *a, **k):  # fla-core installed, its dependency einops missing
        raise ModuleNotFoundError("No module named 'einops'", name="einops")

    monkeypatch.setattr(opt.importlib, "import_module", no_einops)
    present.reset()
    assert present.availability() == "ssmbench is installed but cannot be imported: No module named 'einops'"

    def broken(name, *a, **k):
        raise OSError("libcuda.so: cannot open shared object file")

    monkeypatch.setattr(opt.importlib, "import_module", broken)
    present.reset()
    assert present.availability().startswith("ssmbench is installed but cannot be imported: OSError: libcuda")


def test_list_and_plan_show_the_reason(absent, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    assert f"  {NAME}: fla-core not installed (pip install 'ssmbench[fla]')" in result.output
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    result = CliRunner().invoke(app, ["plan", str(spec)])
    assert result.exit_code == 0, result.output
    assert "fla-core not installed" in result.output


TINY = """\
name: tiny-fla
family: gdn
shape: {num_k_heads: 1, num_v_heads: 2, head_k_dim: 16, head_v_dim: 8, d_conv: 4}
act_dtype: bf16
impls: [triton.gdn, fla.gdn]
baseline: triton.gdn
axes: {batch: [2], T: [2], state_dtype: [fp32], pool: [direct], accept: [{rate: 0.6}], pdl: [off], l2: [hot]}
options: {intermediate: false, write_final: true}
"""


# -- what its API can express ------------------------------------------------------------------


@pytest.mark.parametrize(("change", "reason"), [
    (dict(state_dtype="bf16"), "fp32 only"),
    (dict(state_dtype="bf16", rounding="sr"), "fp32 only"),
    (dict(options={"intermediate": True}), "only the final state"),
    (dict(options={"intermediate": True, "write_final": False}), "only the final state"),
    (dict(pool="padded"), "no padding rows"),
    (dict(shape=replace(SHAPE, d_conv=5)), "conv widths"),
])
def test_unsupported_cases_say_why(change: dict, reason: str) -> None:
    got = fp.fla_case_reason(gdn_case(**change))
    assert got is not None and reason in got, got


@pytest.mark.parametrize("case", [
    gdn_case(), gdn_case(pool="direct"), gdn_case(pool="split"), gdn_case(rounding="sr"), gdn_case(T=1),
    gdn_case(shape=GDNShape(num_k_heads=16, num_v_heads=64, head_k_dim=128, head_v_dim=128, d_conv=4), T=6,
             batch=512),
])
def test_qwen35_like_cases_are_supported(case: Case) -> None:
    assert fp.fla_case_reason(case) is None


def test_notes_say_what_was_timed() -> None:
    direct, pooled = fp.timed_notes(gdn_case(pool="direct")), fp.timed_notes(gdn_case(pool="split"))
    assert all("3 copies making q/k/v contiguous" in n[0] for n in (direct, pooled))
    assert "no gather, no scatter" in direct[1]
    assert "gather of the read slots" in pooled[1] and "scatter" in pooled[1]


def test_bytes_model_adds_what_the_api_costs() -> None:
    s = GDNShape(num_k_heads=16, num_v_heads=64, head_k_dim=128, head_v_dim=128, d_conv=4)
    impl = registry()[NAME]
    for pool in ("direct", "pool"):
        case = gdn_case(shape=s, batch=8, T=4, pool=pool)
        copies = 2 * 8 * 4 * s.conv_dim * 2
        gather = 4 * 8 * state_bytes("fp32", 64 * 128, 128) if pool == "pool" else 0
        assert impl.bytes_moved(case) == gdn.chain_bytes(case) + copies + gather
        assert impl.bytes_moved(case) - registry()["triton.gdn"].bytes_moved(case) == copies + gather


# -- the mapping on the tensors ----------------------------------------------------------------


def test_arguments_layouts() -> None:
    case = gdn_case(shape=GDNShape(num_k_heads=2, num_v_heads=4, head_k_dim=16, head_v_dim=8, d_conv=4), T=3,
                    options={"scale": 0.3})
    wl = make_gdn_workload(case)
    s, b, T = wl.shape, wl.batch, case.T
    conv_out = torch.randn(b * T, s.conv_dim).to(torch.bfloat16)
    q, k, v = fp.contiguous_inputs(wl, conv_out)
    assert q.shape == k.shape == (b, T, 2, 16) and v.shape == (b, T, 4, 8)
    assert all(t.is_contiguous() and t.dtype == torch.bfloat16 and t.isnan().all() for t in (q, k, v))
    h0 = torch.zeros(b, 4, 8, 16)
    a = fp.fla_arguments(case, wl, q=q, k=k, v=v, h0=h0)
    assert a["q"] is q and a["k"] is k and a["v"] is v and a["initial_state"] is h0
    assert a["g"].shape == a["beta"].shape == (b, T, 4) and a["g"].is_contiguous() and a["beta"].is_contiguous()
    assert a["g"].data_ptr() == wl.a.data_ptr() and a["beta"].data_ptr() == wl.b.data_ptr()  # raw, views
    assert a["A_log"] is wl.A_log and a["dt_bias"] is wl.dt_bias and a["scale"] == 0.3
    assert a["use_gate_in_kernel"] and a["use_beta_sigmoid_in_kernel"] and a["use_qk_l2norm_in_kernel"]
    assert a["state_v_first"] is True and a["output_final_state"] is True
    assert fp.fla_arguments(gdn_case(), make_gdn_workload(gdn_case()), q=q, k=k, v=v, h0=h0)["scale"] is None


# -- end to end through the verifier with a fake FLA -------------------------------------------


def _softplus(u: torch.Tensor) -> torch.Tensor:
    return torch.where(u <= 20.0, torch.log1p(torch.exp(torch.clamp(u, max=20.0))), u)


def fake_fused_recurrent_gated_delta_rule(q, k, v, g=None, gk=None, gv=None, beta=None, scale=None,
                                          initial_state=None, output_final_state=False,
                                          use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False, A_log=None,
                                          dt_bias=None, use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False,
                                          state_v_first=False, cu_seqlens=None):
    """FLA 0.6.0's fused_recurrent_gated_delta_rule_fwd_kernel in PyTorch (fp32 arithmetic)."""
    for t in (q, k, v, g, beta, initial_state):
        assert t is None or t.is_contiguous(), "FLA's input_guard would copy this (an uncounted copy)"
    assert gk is None and gv is None and cu_seqlens is None
    B, T, H, K = k.shape
    HV, V = v.shape[2], v.shape[3]
    scale = K ** -0.5 if scale is None else scale
    h = initial_state.float()
    assert h.shape[-2:] == ((V, K) if state_v_first else (K, V))
    S = h.clone() if state_v_first else h.transpose(-1, -2).clone()  # work in (V, K)
    o = torch.empty_like(v)
    group = torch.arange(HV) // (HV // H)
    for t in range(T):
        qt, kt = q[:, t].float()[:, group], k[:, t].float()[:, group]  # (B, HV, K)
        if use_qk_l2norm_in_kernel:
            qt = qt / torch.sqrt((qt * qt).sum(-1, keepdim=True) + 1e-6)
            kt = kt / torch.sqrt((kt * kt).sum(-1, keepdim=True) + 1e-6)
        qt = qt * scale
        bt = beta[:, t].float()
        bt = torch.sigmoid(bt) if use_beta_sigmoid_in_kernel else bt
        gt = g[:, t].float()
        if use_gate_in_kernel:
            gt = -torch.exp(A_log.float()) * _softplus(gt + (0 if dt_bias is None else dt_bias.float()))
        S = S * torch.exp(gt)[..., None, None]
        vt = bt[..., None] * (v[:, t].float() - (S * kt[:, :, None]).sum(-1))
        S = S + vt[..., None] * kt[:, :, None]
        o[:, t] = (S * qt[:, :, None]).sum(-1).to(o.dtype)
    final = (S if state_v_first else S.transpose(-1, -2)).contiguous() if output_final_state else None
    return o, final


@pytest.fixture
def fake_fla(monkeypatch):
    mod = types.ModuleType(MODULE)
    mod.fused_recurrent_gated_delta_rule = fake_fused_recurrent_gated_delta_rule
    for name in ("fla", "fla.ops"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, MODULE, mod)
    fp.FLA.reset()
    yield mod
    fp.FLA.reset()


def _check(case: Case, device: str = "cpu"):
    assert fp.fla_case_reason(case) is None
    return verified_chain(NAME, case, device)


CASES = [
    gdn_case(pool="direct", T=1),
    gdn_case(pool="pool", T=3),
    gdn_case(pool="split", T=2, shape=GDNShape(num_k_heads=2, num_v_heads=8, head_k_dim=16, head_v_dim=8, d_conv=3),
             options={"scale": 0.2}),
    gdn_case(pool="direct", T=4, rounding="sr", act_dtype="fp32"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.pool}-T{c.T}-{c.act_dtype}")
def test_chain_verifies_through_the_mapping(fake_fla, case: Case) -> None:
    comparisons, chain, _ = _check(case)
    assert all(c.ok for c in comparisons), [c.describe() for c in comparisons]
    assert {c.name for c in comparisons} == {"conv_out", "conv_state", "y", "state[fp32]"}
    assert chain.notes == fp.timed_notes(case) and len(chain.kernel_names) == len(chain.launches)
    assert chain.kernel_names[-2 if fp.gathers(case) else -1] == "fused_recurrent_gated_delta_rule_fwd_kernel"


def test_restore_puts_the_pool_and_conv_state_back(fake_fla) -> None:
    assert_restore_repeats(NAME, gdn_case(pool="split", T=2))


@pytest.mark.parametrize("plant", ["state_v_first", "use_beta_sigmoid_in_kernel", "swap_qk"])
def test_a_planted_mapping_error_fails_verification(fake_fla, monkeypatch, plant: str) -> None:
    square = GDNShape(num_k_heads=1, num_v_heads=2, head_k_dim=8, head_v_dim=8, d_conv=4)  # K == V: layouts fit
    real = fp.fla_arguments

    def wrong(*a, **k):
        args = real(*a, **k)
        if plant == "swap_qk":
            args["q"], args["k"] = args["k"], args["q"]
        else:
            args[plant] = False
        return args

    monkeypatch.setattr(fp, "fla_arguments", wrong)
    comparisons, _, _ = _check(gdn_case(shape=square, pool="pool", T=2))
    assert not all(c.ok for c in comparisons)


# -- the real kernel in Triton's interpreter ---------------------------------------------------


def _real_fla_reason() -> str | None:
    if not fp._triton_runs_here():
        return "neither a GPU nor TRITON_INTERPRET=1"
    fp.FLA.reset()  # the real import's verdict, not one a fake left
    state = fp.FLA.availability()
    return None if state == "available" else state


@pytest.mark.parametrize("case", [gdn_case(pool="direct", T=3),
                                  gdn_case(pool="split", T=2, shape=replace(SHAPE, num_v_heads=4))],
                         ids=["direct-T3", "split-T2-gva"])
def test_real_fla_kernel_against_the_reference(case: Case) -> None:
    if (reason := _real_fla_reason()) is not None:
        pytest.skip(f"fla-core cannot run here: {reason}")
    interpreted = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    comparisons, _, _ = _check(case, "cpu" if interpreted else "cuda")
    assert all(c.ok for c in comparisons), [c.describe() for c in comparisons]
    state = next(c for c in comparisons if c.name == "state[fp32]")
    assert state.error < 2e-6, state.describe()  # FLA's fp32 state tracks the fp64 reference closely
