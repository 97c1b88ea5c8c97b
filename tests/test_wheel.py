"""The wheel installs `ssmbench` and `ssmbench_kernels`, never a top-level `kernels` (an unrelated
PyPI package has that name), and ships the sweeps and baselines: an installed ssmbench, away from
any checkout, lists them, shows the baselines and plans a shipped sweep.

Offline: the wheel is built with the setuptools already installed (--no-build-isolation) from a
copy of the sources (a stale build/ in the checkout cannot leak into it), and installed with
--no-deps into a venv that sees the system's site-packages (torch, typer, ... come from there).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("ssmbench", "kernels", "sweeps", "baselines", "pyproject.toml", "setup.py", "MANIFEST.in", "README.md")
SHIPPED_SWEEPS = ("smoke", "nemotron3-super-tp8", "qwen35-gdn")


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 120):
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PIP_NO_INDEX"] = "1"  # offline: nothing is fetched
    run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        cwd=src, env=env, timeout=180)
    (whl,) = out.glob("ssmbench-*.whl")
    return whl


def test_wheel_contents(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert "kernels" not in top, sorted(top)
    assert {"ssmbench", "ssmbench_kernels"} <= top, sorted(top)
    for family in ("common", "storage", "conv1d", "mamba2_states", "mamba2_replay", "gdn"):
        assert f"ssmbench_kernels/{family}/__init__.py" in names
    for sweep in SHIPPED_SWEEPS:
        assert f"ssmbench/_data/sweeps/{sweep}.yaml" in names
    shipped = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "baselines").glob("*/*.json"))
    assert shipped, "no baselines in the checkout"
    for rel in shipped:
        assert f"ssmbench/_data/{rel}" in names


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    """(the venv's ssmbench script, the env to run it with, a working directory outside the repo)."""
    env_dir = tmp_path_factory.mktemp("venv") / "v"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_NO_INDEX"] = "1"
    work = tmp_path_factory.mktemp("work")
    # The venv has no pip of its own: the system's, run by the venv's python, installs into the venv.
    run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], cwd=work, env=env, timeout=180)
    where = run([str(python), "-c", "import ssmbench, ssmbench_kernels; print(ssmbench.__file__); "
                 "print(ssmbench_kernels.__file__)"], cwd=work, env=env).stdout.split()
    assert all(Path(p).is_relative_to(env_dir) for p in where), f"not the installed copies: {where}"
    return env_dir / "bin" / "ssmbench", env, work


def test_installed_list_shows_the_shipped_sweeps(installed) -> None:
    ssmbench, env, work = installed
    out = run([str(ssmbench), "list"], cwd=work, env={**env, "COLUMNS": "200"}).stdout
    assert "_data" in out and str(ROOT / "sweeps") not in out
    for sweep in SHIPPED_SWEEPS:
        assert f"{sweep}.yaml" in out, out
    assert "invalid" not in out, out


def test_installed_baseline_show(installed) -> None:
    ssmbench, env, work = installed
    out = run([str(ssmbench), "baseline", "show"], cwd=work, env={**env, "COLUMNS": "400"}).stdout
    expected = len(list((ROOT / "baselines").glob("*/*.json")))
    assert f"{expected} baseline(s)" in out, out
    assert "unreadable" not in out, out


def test_installed_plan_by_name_and_path(installed) -> None:
    ssmbench, env, work = installed
    by_name = run([str(ssmbench), "plan", "smoke"], cwd=work, env=env).stdout
    path = run([str(ssmbench.parent / "python"), "-c",
                "from ssmbench import resources; print(resources.SWEEPS_DIR / 'smoke.yaml')"],
               cwd=work, env=env).stdout.strip()
    assert "_data" in path and Path(path).is_file()
    by_path = run([str(ssmbench), "plan", path], cwd=work, env=env).stdout
    # The closing line names the spec as given; the plan itself is the same.
    assert by_name.splitlines()[:-1] == by_path.splitlines()[:-1] and len(by_name.splitlines()) > 3


def test_installed_baseline_save_needs_dir(installed) -> None:
    ssmbench, env, work = installed
    done = subprocess.run([str(ssmbench), "baseline", "save", str(work / "missing.json")], cwd=work, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--dir" in done.stderr, done.stderr
