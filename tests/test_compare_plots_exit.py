"""`compare --plots`: the verdict decides the exit code; a figure that cannot be drawn (an
unwritable DIR) is a warning, so exit 1 still means SLOWER and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from ssmbench.cli import app

BASELINE = Path(__file__).resolve().parents[1] / "baselines" / "nvidia-h200" / "qwen35-gdn.json"


def test_unwritable_plots_dir_keeps_the_slower_exit_code(tmp_path) -> None:
    data = json.loads(BASELINE.read_text())
    for case in data["cases"]:
        if case.get("samples_us"):
            case["samples_us"] = [x * 1.2 for x in case["samples_us"]]
    slow = tmp_path / "slow.json"
    slow.write_text(json.dumps(data))
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    res = CliRunner().invoke(app, ["compare", str(slow), str(BASELINE), "--plots", str(blocker / "plots")])
    assert res.exit_code == 1, res.output
    assert "--plots" in res.stderr and "Traceback" not in res.output
