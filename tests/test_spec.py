"""Sweep specs: shipped specs load; every kind of mistake names file, line, field and allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.errors import SpecError, SpecErrors
from ssmbench.impls.registry import registry
from ssmbench.spec.load import load_sweep_file

SWEEPS = Path(__file__).resolve().parent.parent / "sweeps"
runner = CliRunner()

GOOD = """\
name: t
family: mamba2
model: nemotron3-super
tp: 8
impls: [reference.intermediate]
axes:
  batch: [1, 4]
  T: 6
  state_dtype: [fp32, bf16]
  window: [T, 16]
  pdl: [on, off]
"""


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def errors_of(path: Path) -> list[SpecError]:
    with pytest.raises(SpecErrors) as info:
        load_sweep_file(path, impl_names=list(registry()))
    return info.value.errors


@pytest.mark.parametrize("spec", sorted(SWEEPS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_specs_load(spec: Path) -> None:
    sweep_file = load_sweep_file(spec, impl_names=list(registry()))
    assert sweep_file.sweeps


def test_good_spec_resolves_shape_and_on_off(tmp_path: Path) -> None:
    sweep = load_sweep_file(write(tmp_path, GOOD)).sweeps[0]
    assert sweep.shape.nheads == 16 and sweep.shape.ngroups == 1  # TP=8 headline shape
    assert sweep.spec.axes.pdl == ["on", "off"]  # YAML 1.1 would have read booleans
    assert sweep.spec.axes.T == [6]  # a scalar is a one-element axis


def test_typo_in_key_names_field_line_and_suggestion(tmp_path: Path) -> None:
    errs = errors_of(write(tmp_path, GOOD.replace("  window:", "  windw:")))
    assert len(errs) == 1
    e = errs[0]
    assert e.field == "axes.windw" and e.line == 10
    assert "did you mean 'window'" in str(e) and "state_dtype" in e.allowed


def test_typo_in_value_names_allowed_values(tmp_path: Path) -> None:
    errs = errors_of(write(tmp_path, GOOD.replace("[fp32, bf16]", "[fp32, bf61]")))
    e = errs[0]
    assert e.field == "axes.state_dtype.1" and e.line == 9 and e.value == "bf61"
    assert e.allowed == "fp32, bf16, fp16, int8, fp8" and "did you mean 'bf16'" in str(e)


@pytest.mark.parametrize(
    ("old", "new", "field", "needle"),
    [
        ("model: nemotron3-super", "model: nemotron3-supr", "model", "did you mean 'nemotron3-super'"),
        ("model: nemotron3-super", "model: qwen3.5-397b-a17b", "model", "unknown mamba2 preset"),
        ("impls: [reference.intermediate]", "impls: [reference.intermediat]", "impls.0", "unknown impl"),
        ("tp: 8", "tp: 3", "tp", "does not divide"),
        ("family: mamba2", "family: mamba3", "family", "allowed: mamba2, gdn"),
        ("  batch: [1, 4]", "  batch: [0, 4]", "axes.batch.0", "greater than or equal to 1"),
        ("  T: 6", "  T: 17", "axes.T.0", "less than or equal to 16"),
        ("  pdl: [on, off]", "  pdl: [maybe]", "axes.pdl.0", "allowed: on, off"),
        ("  window: [T, 16]", "  window: [W]", "axes.window.0", "or an integer"),
    ],
)
def test_bad_values(tmp_path: Path, old: str, new: str, field: str, needle: str) -> None:
    assert old in GOOD
    errs = errors_of(write(tmp_path, GOOD.replace(old, new)))
    assert any(e.field == field and needle in str(e) for e in errs), [str(e) for e in errs]
    assert all(e.line is not None for e in errs)


def test_semantic_errors(tmp_path: Path) -> None:
    text = GOOD + "baseline: reference.replay\nexclude:\n  - {state_dtyp: fp32}\n  - {pool: [split]}\n"
    errs = errors_of(write(tmp_path, text))
    fields = {e.field for e in errs}
    assert "baseline" in fields and "exclude.0.state_dtyp" in fields
    gdn = GOOD.replace("family: mamba2", "family: gdn").replace("model: nemotron3-super", "model: qwen3.5-397b-a17b")
    errs = errors_of(write(tmp_path, gdn.replace("tp: 8", "tp: 1"), "g.yaml"))
    assert any(e.field == "axes.window" for e in errs)


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    text = GOOD.replace("[fp32, bf16]", "[fp33]").replace("  batch:", "  bach:")
    assert len(errors_of(write(tmp_path, text))) == 2


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not valid YAML"):
        load_sweep_file(write(tmp_path, "axes: [1, 2\n"))
    with pytest.raises(SpecError, match="no such file"):
        load_sweep_file(tmp_path / "nope.yaml")


def test_multi_document_lines_are_file_global(tmp_path: Path) -> None:
    second = GOOD.replace("name: t", "name: u").replace("[fp32, bf16]", "[nope]")
    errs = errors_of(write(tmp_path, GOOD + "---\n" + second))
    assert errs[0].line == 9 + GOOD.count("\n") + 1


def test_cli_bad_spec_exits_2_with_message(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("  window:", "  windw:"))
    result = runner.invoke(app, ["plan", str(path)])
    assert result.exit_code == 2
    assert "axes.windw" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["plan", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "no such file" in result.output


def test_defaults_are_parsed(tmp_path: Path) -> None:
    """Axes left out get their parsed defaults (the default acceptance law is a law, not a string),
    and the defaults give a case: docs/spec.md §10's measured law applies at every T (folded to T=1 here)."""
    from ssmbench.spec.case import MEASURED, measured_law
    from ssmbench.spec.expand import expand

    text = "family: mamba2\nshape: {nheads: 2, head_dim: 4, dstate: 4, ngroups: 1}\nimpls: [reference.sequential]\n"
    sweep = load_sweep_file(write(tmp_path, text)).sweeps[0]
    assert sweep.spec.axes.accept == [MEASURED]
    (case,) = expand(sweep).cases
    assert case.T == 1 and case.accept == measured_law(1) and not expand(sweep).dropped
