"""Scripts of tools/gpu/ imported by the tests (tools/ is scripts, not an installed package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_tool(name: str):
    """The module tools/gpu/NAME.py, by file path."""
    spec = importlib.util.spec_from_file_location(f"tools_gpu_{name}", ROOT / "tools" / "gpu" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
