"""`ssmbench export RESULTS --csv` (ssmbench/output/export.py): one row per (case, impl), every
parameter and figure a column, and the numbers come back exactly."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.output.results import load_results

ROOT = Path(__file__).resolve().parent.parent
HEADLINE = ROOT / "baselines" / "nvidia-h200" / "nemotron3-super-tp8.json"

FIGURES = ("median_us", "p10_us", "p90_us", "noise", "tbps", "sol_pct", "sol_datasheet_pct", "seconds")


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def number(cell: str) -> float | None:
    return None if cell == "" else float(cell)


def test_csv_round_trips_every_record(tmp_path) -> None:
    out = tmp_path / "x" / "headline.csv"
    result = CliRunner().invoke(app, ["export", str(HEADLINE), "--csv", "-o", str(out)])
    assert result.exit_code == 0, result.output
    results = load_results(HEADLINE)
    rows = read_csv(out.read_text())
    gpus = {d["uuid"]: d for d in json.loads(HEADLINE.read_text())["env"]["gpus"]}
    assert len(rows) == len(results.records) == 440
    assert list(rows[0])[:6] == ["sweep", "id", "impl", "status", "gpu_name", "copy_tbps"]
    assert "verify" not in rows[0] and "clock" not in rows[0]  # only their dotted columns
    for row in rows:
        record = results.records[(row["sweep"], row["id"], row["impl"])]
        assert row["status"] == record.status and row["message"] == record.message
        for name in FIGURES:
            assert number(row[name]) == getattr(record, name), name  # exact: floats as repr
        assert (int(row["bytes"]) if row["bytes"] else None) == record.bytes
        assert int(row["n_samples"]) == record.n_samples
        for kernel, us in record.kernels_us.items():
            assert float(row[f"kernels_us.{kernel}"]) == us
        p = record.params
        assert int(row["params.batch"]) == p["batch"] and row["params.format"] == p["format"]
        assert int(row["params.dims.dstate"]) == p["dims"]["dstate"]
        assert json.loads(row["params.accept_law.values"]) == p["accept_law"]["values"]
        assert row["params.options.z_gate"] == ("true" if p["options"]["z_gate"] else "false")
        if record.verify:
            assert float(row["verify.max_error"]) == record.verify["max_error"]
            assert json.loads(row["verify.comparisons"]) == record.verify["comparisons"]
        if record.status == "ok":  # the record's GPU's calibration, read independently of export
            device = gpus[record.gpu]
            assert row["gpu_name"] == "NVIDIA H200" == device["name"]
            assert float(row["copy_tbps"]) == device["bandwidth"]["measured_tbps"] > 4.0
    assert "samples_us" not in rows[0]


def test_csv_samples_and_stdout() -> None:
    result = CliRunner().invoke(app, ["export", str(HEADLINE), "--csv", "--samples"])
    assert result.exit_code == 0, result.output
    results = load_results(HEADLINE)
    rows = read_csv(result.stdout)
    for row in rows[:20]:
        record = results.records[(row["sweep"], row["id"], row["impl"])]
        assert json.loads(row["samples_us"]) == record.samples_us


def test_export_needs_a_format_and_readable_input(tmp_path) -> None:
    result = CliRunner().invoke(app, ["export", str(HEADLINE)])
    assert result.exit_code == 2 and "choose a format: --csv" in result.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    result = CliRunner().invoke(app, ["export", str(bad), "--csv"])
    assert result.exit_code == 2 and "bad.json" in result.stderr and "Traceback" not in result.output
