"""`ssmbench baseline save|show|path`: where a baseline goes, what is refused, what is listed."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.errors import UsageError
from ssmbench.output.baselines import baseline_path, gpu_slug, list_baselines, save_baseline
from ssmbench.output.results import SCHEMA, LogContents, load_results, write_results

ROOT = Path(__file__).resolve().parent.parent
H100 = ROOT / "baselines" / "nvidia-h100-80gb-hbm3" / "nemotron3-super-tp8.json"
runner = CliRunner()


@pytest.fixture()
def h100() -> LogContents:
    return load_results(H100)


def save(results: LogContents, path: Path) -> Path:
    write_results(path, results.env, list(results.devices.values()), list(results.records.values()))
    return path


@pytest.mark.parametrize(("name", "slug"), [
    ("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb-hbm3"),
    ("NVIDIA H200", "nvidia-h200"),
    ("NVIDIA GeForce RTX 4090 (x)", "nvidia-geforce-rtx-4090-x"),
])
def test_gpu_slug(name, slug):
    assert gpu_slug(name) == slug


def test_save_places_and_keeps_everything(h100, tmp_path):
    source = save(h100, tmp_path / "run.json")
    target, replaced = save_baseline(source, tmp_path / "baselines")
    assert target == tmp_path / "baselines" / "nvidia-h100-80gb-hbm3" / "nemotron3-super-tp8.json"
    assert not replaced
    data = json.loads(target.read_text())
    assert data["schema"] == SCHEMA and data["env"]["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"
    stored = load_results(target)
    assert stored.records.keys() == h100.records.keys()
    first = next(iter(h100.records))
    assert stored.records[first].samples_us == h100.records[first].samples_us
    assert save_baseline(source, tmp_path / "baselines")[1]  # saving again replaces
    assert baseline_path(h100, source, tmp_path / "b") == tmp_path / "b" / target.parent.name / target.name


@pytest.mark.parametrize(("change", "forceable", "message"), [
    (lambda r: setattr(next(iter(r.records.values())), "status", "fail"), True, "failed or errored"),
    (lambda r: r.env.update(complete=False), True, "interrupted"),
    (lambda r: r.env.update(device_mode="cpu"), False, "CPU test mode"),
    (lambda r: r.env.update(test_slowdown=0.05), False, "slowdown"),
    (lambda r: r.devices.update({"GPU-2": {"name": "NVIDIA H200", "uuid": "GPU-2"}}), False, "one GPU model"),
])
def test_save_refusals(h100, tmp_path, change, forceable, message):
    bad = copy.deepcopy(h100)
    change(bad)
    source = save(bad, tmp_path / "bad.json")
    with pytest.raises(UsageError, match=message):
        save_baseline(source, tmp_path / "baselines")
    if forceable:
        save_baseline(source, tmp_path / "baselines", force=True)
    else:
        with pytest.raises(UsageError, match=message):
            save_baseline(source, tmp_path / "baselines", force=True)


def test_cli_save_show_path(h100, tmp_path):
    h100.env.update(git_sha="0123456789abcdef0123", finished="2026-11-23T00:00:00+00:00")
    source = save(h100, tmp_path / "run.json")
    root = tmp_path / "baselines"
    saved = runner.invoke(app, ["baseline", "save", str(source), "--dir", str(root)])
    assert saved.exit_code == 0, saved.output
    assert "stored baseline" in saved.output
    shown = runner.invoke(app, ["baseline", "show", "--dir", str(root)])
    assert shown.exit_code == 0, shown.output
    ok = sum(r.status == "ok" for r in h100.records.values())
    for text in ("NVIDIA H100 80GB HBM3", "nemotron3-super-tp8", f"{ok}/{len(h100.records)}", "2026-11-23",
                 "0123456789ab", "1 baseline"):
        assert text in shown.output
    where = runner.invoke(app, ["baseline", "path", str(source), "--dir", str(root)])
    assert where.exit_code == 0 and where.output.strip().endswith("nvidia-h100-80gb-hbm3/nemotron3-super-tp8.json")
    failing = copy.deepcopy(h100)
    next(iter(failing.records.values())).status = "error"
    bad = save(failing, tmp_path / "bad.json")
    refused = runner.invoke(app, ["baseline", "save", str(bad), "--dir", str(root)])
    assert refused.exit_code == 2 and "--force" in refused.output
    assert runner.invoke(app, ["baseline", "save", str(bad), "--dir", str(root), "--force"]).exit_code == 0
    assert runner.invoke(app, ["baseline", "save", str(tmp_path / "none.json"), "--dir", str(root)]).exit_code == 2


def test_show_lists_unreadable_files_instead_of_failing(tmp_path):
    (tmp_path / "gpu-x").mkdir()
    (tmp_path / "gpu-x" / "broken.json").write_text("{")
    (found,) = list_baselines(tmp_path)
    assert "unreadable" in found.note


def test_the_stored_h100_baseline_is_usable():
    """The committed headline baseline loads, is complete, and sits where `baseline path` says."""
    results = load_results(H100)
    assert baseline_path(results, H100, H100.parent.parent) == H100
    assert results.env.get("complete") is True
    ok = [r for r in results.records.values() if r.status == "ok"]
    # the whole Triton headline grid: intermediate at W=T (55 cases), checkpoint at W=T and W=16 (110)
    assert sum(r.impl == "triton.intermediate" for r in ok) == 55
    assert sum(r.impl == "triton.checkpoint" for r in ok) == 110
