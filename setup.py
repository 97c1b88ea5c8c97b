"""Build hook only; the project's metadata is pyproject.toml.

The sweeps and baselines live at the repository root (sweeps/, baselines/), outside any package.
A wheel ships copies as package data, ssmbench/_data/sweeps and ssmbench/_data/baselines, which
ssmbench/resources.py reads when it runs from an installed copy. setuptools' declarative options
cannot do this together with package discovery (a package-dir mapping such as
``"ssmbench._data.sweeps" = "sweeps"`` needs an explicit package list, and ``data-files`` installs
outside the package, under the environment's prefix), so build_py copies the two folders into the
build tree. An editable install skips the copy: it reads the repository's folders.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
DATA = {"sweeps": ROOT / "sweeps", "baselines": ROOT / "baselines"}
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


class BuildPyWithData(build_py):
    def _data_targets(self) -> dict[str, Path]:
        return {name: Path(self.build_lib) / "ssmbench" / "_data" / name for name in DATA}

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for name, target in self._data_targets().items():
            if not DATA[name].is_dir():
                raise SystemExit(f"setup.py: {DATA[name]} is missing; the wheel ships it")
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(DATA[name], target, ignore=IGNORE)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False):
            for target in self._data_targets().values():
                outputs += [str(p) for p in sorted(target.rglob("*")) if p.is_file()]
        return outputs


setup(cmdclass={"build_py": BuildPyWithData})
