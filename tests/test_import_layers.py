"""The package's import layers hold (issue 16): import-linter checks the contracts in
.importlinter, and the two cycles it removed (cli <-> cli_compare / cli_profile, impl <-> impls)
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
    ("ssmbench/cli_compare.py", {"ssmbench.cli"}),
    ("ssmbench/cli_profile.py", {"ssmbench.cli"}),
    ("ssmbench/cli_common.py", {"ssmbench.cli", "ssmbench.cli_compare", "ssmbench.cli_profile"}),
    ("ssmbench/impl.py", {"ssmbench.impls", "ssmbench.registry"}),
])
def test_the_removed_cycles_are_not_imported_back(importer: str, forbidden: set[str]) -> None:
    imports = imported_modules(ROOT / importer)
    back = sorted(name for name in imports for f in forbidden if name == f or name.startswith(f + "."))
    assert not back, f"{importer} imports {back}: an import cycle is back (see .importlinter)"


def test_the_impls_import_only_the_interface() -> None:
    for path in sorted((PACKAGE / "impls").glob("*.py")):
        assert "ssmbench.registry" not in imported_modules(path), f"{path.name} imports ssmbench.registry"


CLI_COMMANDS = {"list", "plan", "check", "sweep", "compare", "baseline", "profile", "validate-bytes"}

CLI_MODULES_FIRST = """
import sys
import typer
from ssmbench import cli_compare, cli_profile
app = typer.Typer()
cli_compare.register(app)
cli_profile.register(app)
assert "ssmbench.cli" not in sys.modules, "a command module imported ssmbench.cli"
from ssmbench.cli import app
"""

CLI_FIRST = """
from ssmbench.cli import app
from ssmbench import cli_compare, cli_profile
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


IMPL_FIRST = """
import sys
import ssmbench.impl
assert not {"ssmbench.impls", "ssmbench.registry"} & set(sys.modules), "ssmbench.impl imported the registry"
import ssmbench.impls
from ssmbench.registry import registry
print(list(registry()))
"""

IMPLS_FIRST = """
import ssmbench.impls
import ssmbench.impl
from ssmbench.registry import registry
print(list(registry()))
"""

REGISTRY_ONLY = """
from ssmbench.registry import registry
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
