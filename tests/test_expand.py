"""Case expansion: stable readable ids, exclusion and drop rules, the headline grid."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.impls.registry import registry
from ssmbench.runs.planning import impl_plan
from ssmbench.spec.expand import expand
from ssmbench.spec.load import load_sweep_file

SWEEPS = Path(__file__).resolve().parent.parent / "sweeps"
HEADLINE = SWEEPS / "nemotron3-super-tp8.yaml"


def test_headline_grid() -> None:
    sweep = load_sweep_file(HEADLINE).sweeps[0]
    cases = expand(sweep).cases
    formats = {(c.state_dtype, c.rounding) for c in cases}
    assert formats == {("fp32", "rn"), ("bf16", "rn"), ("fp16", "sr"), ("int8", "sr"), ("fp8", "sr")}
    assert sorted({c.batch for c in cases}) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
    assert {c.window for c in cases} == {6, 16} and {c.T for c in cases} == {6}
    assert len(cases) == 11 * 5 * 2
    assert "H16P64N128G1-b64-T6-fp16sr-pool-w16-hist-pdl-realistic" in {c.id for c in cases}


def test_ids_stable_unique_and_independent_of_grid(tmp_path: Path) -> None:
    sweep = load_sweep_file(HEADLINE).sweeps[0]
    first = [c.id for c in expand(sweep).cases]
    assert first == [c.id for c in expand(load_sweep_file(HEADLINE).sweeps[0]).cases]
    assert len(set(first)) == len(first)
    grown = HEADLINE.read_text().replace("batch: [1, 2,", "batch: [1, 3, 2,")
    (tmp_path / "grown.yaml").write_text(grown)
    bigger = {c.id for c in expand(load_sweep_file(tmp_path / "grown.yaml").sweeps[0]).cases}
    assert set(first) < bigger


def test_drop_rules(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("""\
family: mamba2
shape: {nheads: 4, head_dim: 8, dstate: 8, ngroups: 1}
impls: [reference.intermediate, reference.replay]
axes:
  T: [4, 8]
  state_dtype: [fp32, int8]
  rounding: [rn, sr]
  window: [T, 6, 8]
  accept: [{histogram: [1, 1, 1, 1]}]
""")
    sweep = load_sweep_file(tmp_path / "s.yaml").sweeps[0]
    exp = expand(sweep)
    assert all(c.T == 4 for c in exp.cases)  # histogram of 4 bins applies to T=4 only
    assert not any(c.state_dtype == "fp32" and c.rounding == "sr" for c in exp.cases)
    assert {c.window for c in exp.cases} == {4, 6, 8}
    assert "window < T" in exp.dropped and "accept histogram length != T" in exp.dropped
    impls = registry()
    runs = {(c.window, name) for c in exp.cases for name in sweep.spec.impls
            if impl_plan(impls[name], c, sweep) is None}
    assert (4, "reference.intermediate") in runs and (6, "reference.intermediate") not in runs
    assert (6, "reference.replay") in runs


def test_plan_cli_prints_grid(tmp_path) -> None:
    # The headline grid with two impls, so the skip reasons fit their cells unfolded.
    text = HEADLINE.read_text()
    two = re.sub(r"^impls: .*$", "impls: [triton.intermediate, triton.checkpoint]", text, flags=re.M)
    spec = tmp_path / "headline.yaml"
    spec.write_text(two)
    result = CliRunner().invoke(app, ["plan", str(spec)])
    assert result.exit_code == 0, result.output
    assert "110 case(s)" in result.output
    assert "window does not apply" in result.output


def test_plain_histogram_applies_at_every_T_and_explicit_ones_only_at_their_length(tmp_path: Path) -> None:
    """`histogram` is docs/spec.md §10's measured law at whatever T (plain `hist` in the id); an explicit
    histogram applies where its length is T, and its id carries a hash of its counts."""
    (tmp_path / "s.yaml").write_text("""\
family: mamba2
shape: {nheads: 4, head_dim: 8, dstate: 8, ngroups: 1}
impls: [reference.intermediate]
axes:
  T: [2, 4, 6]
  accept: [histogram, {histogram: [1, 1, 1, 1]}, {histogram: [1, 2, 3, 4]}]
""")
    exp = expand(load_sweep_file(tmp_path / "s.yaml").sweeps[0])
    labels = {(c.T, c.accept.label()) for c in exp.cases}
    assert {(2, "hist"), (4, "hist"), (6, "hist")} <= labels and len(labels) == 5
    assert len({c.id for c in exp.cases}) == 5 and exp.dropped == {"accept histogram length != T": 4}


def test_seed_options_and_act_dtype_are_in_the_id(tmp_path: Path) -> None:
    text = HEADLINE.read_text().replace("seed: 0", "seed: 5").replace("act_dtype: bf16", "act_dtype: fp16")
    (tmp_path / "h.yaml").write_text(text + "options: {z_gate: true}\n")
    ids = {c.id for c in expand(load_sweep_file(tmp_path / "h.yaml").sweeps[0]).cases}
    assert "H16P64N128G1-b64-T6-fp32-pool-w6-hist-pdl-realistic-actfp16-zgate-s5" in ids
