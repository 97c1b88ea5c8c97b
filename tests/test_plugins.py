"""Plugins (docs/plugins.md): installed packages' ``ssmbench.impls`` entry points, ``--plugin
MODULE`` and $SSMBENCH_PLUGINS; a broken plugin is reported once and left out, a broken
``--plugin`` is exit 2; and the example plugin package (examples/ssmbench-example-plugin) checks
green, so the interface cannot drift from the docs."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.impls import registry as registry_module
from ssmbench.impls.base import forget, registered
from ssmbench.impls.registry import ENTRY_POINT_GROUP, PLUGINS_ENV, registry

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "ssmbench-example-plugin"

PLUGIN_SOURCE = '''
from ssmbench.impls.base import Chain, Impl, register


class Plugged(Impl):
    name = "{name}"
    family = "mamba2"
    kind = "triton"

    def build(self, case, workload):
        return Chain([], [])


register(Plugged())
{tail}
'''


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder on sys.path for throwaway plugin modules; their impls and modules are dropped after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(PLUGINS_ENV, raising=False)
    registry()  # the shipped impls registered first: only what a test adds is dropped after
    before_impls, before_modules = set(registered()), set(sys.modules)
    registry_module._warned.clear()
    monkeypatch.setattr(registry_module, "_entry_points_loaded", False)  # the tests' own entry points are read
    yield tmp_path
    forget([n for n in registered() if n not in before_impls])
    for name in set(sys.modules) - before_modules:
        if name.startswith("plug_"):
            del sys.modules[name]
    registry_module._warned.clear()


def write_plugin(folder: Path, module: str, impl: str, fail: bool = False) -> None:
    tail = "raise RuntimeError('kernel library missing')" if fail else ""
    (folder / f"{module}.py").write_text(PLUGIN_SOURCE.format(name=impl, tail=tail))


def test_entry_point_plugin_appears_in_the_registry(plugin_dir, monkeypatch) -> None:
    write_plugin(plugin_dir, "plug_ep", "plug.ep")
    ep = importlib.metadata.EntryPoint(name="plug", value="plug_ep", group=ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry_module, "entry_points", lambda group: [ep] if group == ENTRY_POINT_GROUP else [])
    impls = registry()
    assert list(impls)[-1] == "plug.ep" and "triton.intermediate" in impls  # after the shipped impls


def test_entry_point_may_name_a_function(plugin_dir, monkeypatch) -> None:
    (plugin_dir / "plug_fn.py").write_text(textwrap.dedent('''
        def setup():
            from ssmbench.impls.base import Chain, Impl, register

            class Fn(Impl):
                name, family = "plug.fn", "mamba2"

                def build(self, case, workload):
                    return Chain([], [])

            register(Fn())
    '''))
    ep = importlib.metadata.EntryPoint(name="fn", value="plug_fn:setup", group=ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry_module, "entry_points", lambda group: [ep])
    assert "plug.fn" in registry()


def test_function_entry_point_is_called_once_per_process(plugin_dir, monkeypatch, capsys) -> None:
    """`registry()` runs many times in one command: a function entry point registers once, not
    again (which would fail 'registered twice' and be reported as a broken plugin)."""
    (plugin_dir / "plug_once.py").write_text(textwrap.dedent('''
        def setup():
            from ssmbench.impls.base import Chain, Impl, register

            class Once(Impl):
                name, family = "plug.once", "mamba2"

                def build(self, case, workload):
                    return Chain([], [])

            register(Once())
    '''))
    ep = importlib.metadata.EntryPoint(name="once", value="plug_once:setup", group=ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry_module, "entry_points", lambda group: [ep])
    assert "plug.once" in registry() and "plug.once" in registry()
    assert "plug_once" not in capsys.readouterr().err


def test_broken_plugin_is_reported_once_and_left_out(plugin_dir, monkeypatch, capsys) -> None:
    write_plugin(plugin_dir, "plug_broken", "plug.broken", fail=True)
    write_plugin(plugin_dir, "plug_fine", "plug.fine")
    monkeypatch.setenv(PLUGINS_ENV, "plug_broken,plug_fine")
    first, second = registry(), registry()
    assert "plug.broken" not in first and "plug.fine" in first  # registered, then failed: dropped again
    assert "plug.broken" not in second and "reference.sequential" in second
    err = capsys.readouterr().err
    assert err.count("plug_broken") == 1, err
    assert "RuntimeError: kernel library missing" in err and "left out" in err


def test_broken_entry_point_does_not_break_the_cli(plugin_dir, monkeypatch) -> None:
    ep = importlib.metadata.EntryPoint(name="gone", value="plug_not_there", group=ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry_module, "entry_points", lambda group: [ep])
    result = CliRunner().invoke(app, ["plan", "smoke", "--case", "*b3-T1-fp32-direct-w1*"])
    assert result.exit_code == 0, result.output
    assert "plug_not_there" in result.stderr and "ModuleNotFoundError" in result.stderr


def test_plugin_option_registers_and_hands_on_to_workers(plugin_dir) -> None:
    write_plugin(plugin_dir, "plug_opt", "plug.opt")
    result = CliRunner().invoke(app, ["list", "--plugin", "plug_opt"])
    assert result.exit_code == 0, result.output
    assert "plug.opt" in result.stdout
    import os

    assert "plug_opt" in os.environ[PLUGINS_ENV].split(",")  # sweep workers, profilers' inner runs import it


def test_plugin_option_that_fails_is_exit_2(plugin_dir) -> None:
    write_plugin(plugin_dir, "plug_bad", "plug.bad", fail=True)
    for module, why in (("plug_bad", "RuntimeError: kernel library missing"),
                        ("plug_no_such_module", "ModuleNotFoundError")):
        result = CliRunner().invoke(app, ["list", "--plugin", module])
        assert result.exit_code == 2, result.output
        assert f"--plugin {module}: cannot import it" in result.stderr and why in result.stderr
        assert "Traceback" not in result.output
    assert "plug.bad" not in registry()


def test_example_plugin_checks_green(plugin_dir, monkeypatch) -> None:
    """The example package's impl against the reference on its own spec (Triton's interpreter on a CPU)."""
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    result = CliRunner().invoke(app, ["check", str(EXAMPLE / "example.yaml"), "--impl", "example.intermediate",
                                      "--plugin", "ssmbench_example_plugin.impls"])
    assert result.exit_code == 0, result.output
    assert "4 passed, 0 failed, 0 errors" in result.stdout


def test_installed_example_plugin_declares_the_entry_point() -> None:
    """When the example package is installed (`make test` installs it), its entry point is there."""
    try:
        dist = importlib.metadata.distribution("ssmbench-example-plugin")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("examples/ssmbench-example-plugin is not installed (make test installs it)")
    eps = [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
    assert [ep.value for ep in eps] == ["ssmbench_example_plugin.impls"]
    assert "example.intermediate" in registry()
