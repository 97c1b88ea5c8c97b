"""Where the shipped sweeps and baselines are.

In a checkout (or an editable install of one) they are the repository's ``sweeps/`` and
``baselines/``, next to the ``ssmbench`` package. An installed wheel has no repository: it ships
copies as package data, ``ssmbench/_data/sweeps`` and ``ssmbench/_data/baselines`` (setup.py's
build_py puts them there). Imports nothing from ssmbench.
"""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
DATA_DIR = PACKAGE_DIR / "_data"

IN_CHECKOUT = (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "sweeps").is_dir()
"""True when ssmbench runs from a repository checkout (editable install or PYTHONPATH)."""


def shipped(name: str) -> Path:
    """The checkout's folder ``name`` (``sweeps``, ``baselines``), else the installed copy."""
    return REPO_ROOT / name if IN_CHECKOUT else DATA_DIR / name


SWEEPS_DIR = shipped("sweeps")
BASELINES_DIR = shipped("baselines")


def sweep_path(spec: Path) -> Path:
    """``spec`` itself when it exists or names a folder; else the shipped sweep of that name
    (``smoke`` or ``smoke.yaml``) when there is one; else ``spec`` (its loader reports it)."""
    spec = Path(spec)
    if spec.exists() or len(spec.parts) != 1:
        return spec
    for candidate in (SWEEPS_DIR / spec.name, SWEEPS_DIR / f"{spec.name}.yaml"):
        if candidate.is_file():
            return candidate
    return spec


def gpu_slug(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3``: the per-GPU file and folder name of
    the stored baselines and the knob tables ("" for a name without letters or digits)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
