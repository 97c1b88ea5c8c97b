"""The package's import layers hold (issue 16): import-linter checks the contracts in
.importlinter, and the two cycles it removed (the cli app <-> its command modules, impl <-> impls)
stay gone, checked without import-linter too: statically (function-level imports included) and
by importing in a fresh interpreter in both orders."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ssmbench"
PROVIDERS = ("reference", "triton_mamba", "flashinfer", "triton_checkpoint", "triton_gdn")


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_import_linter_contracts_hold() -> None:
    pytest.importorskip("importlinter", reason="import-linter not installed (pip install import-linter; "
                        "it is in the dev extras)")
    done = run_python("from importlinter.cli import lint_imports\n"
                      "raise SystemExit(lint_imports(no_cache=True, no_logo=True))")
    assert done.returncode == 0, f"lint-imports: a contract in .importlinter is broken\n{done.stdout}\n{done.stderr}"
    assert "0 broken" in done.stdout, done.stdout


def imported_modules(path: Path) -> set[str]:
    """Every ssmbench module ``path`` imports, at module level or inside a function."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from ssmbench import cli`
    return {name for name in found if name == "ssmbench" or name.startswith("ssmbench.")}


@pytest.mark.parametrize("importer, forbidden", [
    ("ssmbench/cli/compare.py", {"ssmbench.cli"}),
    ("ssmbench/cli/profile.py", {"ssmbench.cli"}),
    ("ssmbench/cli/common.py", {"ssmbench.cli", "ssmbench.cli.compare", "ssmbench.cli.profile"}),
    ("ssmbench/impls/base.py", {"ssmbench.impls.registry", *(f"ssmbench.impls.{p}" for p in PROVIDERS)}),
])
def test_the_removed_cycles_are_not_imported_back(importer: str, forbidden: set[str]) -> None:
    imports = imported_modules(ROOT / importer)
    # ssmbench.cli is the package that holds the app: its own submodules (cli.common) are not it
    back = sorted(name for name in imports for f in forbidden
                  if name == f or (f != "ssmbench.cli" and name.startswith(f + ".")))
    assert not back, f"{importer} imports {back}: an import cycle is back (see .importlinter)"


def test_the_impls_import_only_the_interface() -> None:
    for path in sorted((PACKAGE / "impls").glob("*.py")):
        if path.stem != "registry":
            assert "ssmbench.impls.registry" not in imported_modules(path), f"{path.name} imports the registry"


def test_the_impls_package_imports_no_provider() -> None:
    """ssmbench/impls/__init__.py is a docstring: importing the interface (impls.base) must not
    import the providers (torch, Triton)."""
    assert not imported_modules(PACKAGE / "impls" / "__init__.py")


CLI_COMMANDS = {"list", "plan", "check", "sweep", "compare", "baseline", "profile", "validate-bytes"}

# A command module's import runs the package (ssmbench/cli/__init__.py, the app) first, as any
# submodule's does; the app then registers the module. Either order gives every command.
CLI_MODULES_FIRST = """
import ssmbench.cli.compare
import ssmbench.cli.profile
from ssmbench.cli import app
"""

CLI_FIRST = """
from ssmbench.cli import app
from ssmbench.cli import compare, profile
"""

SHOW_COMMANDS = """
names = {c.name or c.callback.__name__ for c in app.registered_commands}
names |= {g.name for g in app.registered_groups}
print(sorted(names))
"""


@pytest.mark.parametrize("code", [CLI_MODULES_FIRST, CLI_FIRST], ids=["command-modules-first", "cli-first"])
def test_cli_imports_in_either_order(code: str) -> None:
    done = run_python(code + SHOW_COMMANDS)
    assert done.returncode == 0, done.stderr
    names = set(ast.literal_eval(done.stdout.strip().splitlines()[-1]))
    assert CLI_COMMANDS <= names, names


IMPL_FIRST = f"PROVIDERS = {PROVIDERS!r}\n" + """
import sys
import ssmbench.impls.base
loaded = {"ssmbench.impls.registry", *(f"ssmbench.impls.{p}" for p in PROVIDERS)} & set(sys.modules)
assert not loaded, f"ssmbench.impls.base imported {loaded}"
import ssmbench.impls
from ssmbench.impls.registry import registry
print(list(registry()))
"""

IMPLS_FIRST = """
import ssmbench.impls
import ssmbench.impls.base
from ssmbench.impls.registry import registry
print(list(registry()))
"""

REGISTRY_ONLY = """
from ssmbench.impls.registry import registry
print(list(registry()))
"""


def test_impl_and_impls_import_in_either_order_same_registry() -> None:
    orders = {}
    for name, code in (("impl-first", IMPL_FIRST), ("impls-first", IMPLS_FIRST), ("registry", REGISTRY_ONLY)):
        done = run_python(code)
        assert done.returncode == 0, f"{name}: {done.stderr}"
        orders[name] = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert orders["impl-first"] == orders["impls-first"] == orders["registry"], orders
    assert orders["registry"][:2] == ["reference.sequential", "reference.intermediate"]
