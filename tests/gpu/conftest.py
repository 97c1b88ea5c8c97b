"""GPU-only checks: skipped without CUDA (or under the interpreter); a session report of the
max errors per case, written to ``$OUT/gpu_kernel_checks.{json,md}`` when ``OUT`` is set."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch


def _gpu_available() -> bool:
    return torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")


def pytest_collection_modifyitems(config, items):  # noqa: ARG001
    if _gpu_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (and TRITON_INTERPRET unset)")
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


class Report:
    """Rows of measured errors, one dict per checked case."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, **row) -> None:
        self.rows.append(row)

    def write(self, out_dir: str) -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
        (out / "gpu_kernel_checks.json").write_text(
            json.dumps({"device": device, "rows": self.rows}, indent=1)
        )
        keys: list[str] = []
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        lines = [
            f"# ssmbench Triton kernel GPU checks ({device})",
            "",
            "| " + " | ".join(keys) + " |",
            "|" + "---|" * len(keys),
        ]
        for row in self.rows:
            cells = [f"{row[k]:.3g}" if isinstance(row.get(k), float) else str(row.get(k, "")) for k in keys]
            lines.append("| " + " | ".join(cells) + " |")
        (out / "gpu_kernel_checks.md").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def gpu_report():
    report = Report()
    yield report
    out = os.environ.get("OUT")
    if out and report.rows:
        report.write(out)
