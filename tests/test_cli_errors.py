"""Every command fails with one clear line and exit 2, never a traceback and never exit 1 (1 is
a verdict: SLOWER for compare, failed pairs for check and sweep); Ctrl-C exits 130."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import ssmbench.runs.check
import ssmbench.runs.sweep.options
import ssmbench.runs.sweep.run
from ssmbench.cli import app, friendly_errors

SMOKE = Path(__file__).resolve().parent.parent / "sweeps" / "smoke.yaml"


def all_commands() -> list[tuple[str, object]]:
    """(name, callback) of every command, sub-apps' included."""
    found = [(c.name or c.callback.__name__, c.callback) for c in app.registered_commands]
    for group in app.registered_groups:
        found += [(f"{group.name} {c.name or c.callback.__name__}", c.callback)
                  for c in group.typer_instance.registered_commands]
    return found


def test_every_command_goes_through_friendly_errors() -> None:
    commands = all_commands()
    assert {"list", "plan", "check", "sweep", "compare"} <= {name for name, _ in commands}
    unwrapped = [name for name, callback in commands if getattr(callback, "__wrapped__", None) is None]
    assert not unwrapped, f"commands without friendly_errors: {unwrapped}"


@pytest.mark.parametrize("command, target, attribute", [
    (["sweep", str(SMOKE)], ssmbench.runs.sweep.run, "run_sweep"),
    (["check", str(SMOKE)], ssmbench.runs.check, "run_check"),
    (["plan", str(SMOKE)], ssmbench.runs.sweep.options, "load_spec"),
])
def test_an_unexpected_exception_is_one_line_and_exit_2(monkeypatch, command, target, attribute) -> None:
    def broken(*args, **kwargs):
        raise KeyError("planted")

    monkeypatch.setattr(target, attribute, broken)
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    name = command[0]
    assert f"error: internal error in {name}: KeyError: 'planted' (test_cli_errors.py:" in result.output
    assert "please report" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 2  # (check says once that Triton is interpreted)


def test_ctrl_c_outside_a_sweep_exits_130(monkeypatch) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ssmbench.runs.check, "run_check", interrupted)
    result = CliRunner().invoke(app, ["check", str(SMOKE)])
    assert result.exit_code == 130 and "interrupted" in result.output


def test_a_command_s_own_exit_code_passes_through() -> None:
    import typer

    @friendly_errors
    def exits_1() -> None:
        raise typer.Exit(1)

    with pytest.raises(typer.Exit) as caught:
        exits_1()
    assert caught.value.exit_code == 1


def test_typer_s_bad_option_values_exit_2() -> None:
    result = CliRunner().invoke(app, ["sweep", str(SMOKE), "--no-such-option"])
    assert result.exit_code == 2
    result = CliRunner().invoke(app, ["plan", str(SMOKE), "--case", "nothing-like-this*"])
    assert result.exit_code == 2 and "matches no case" in result.output
