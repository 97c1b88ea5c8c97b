"""`ssmbench merge`: the shards of one sweep joined into one results file (issue 23). Built from a
real H200 baseline split the way `sweep --shard i/n` splits it; the merged file must gate SAME
against the unsplit one, and every refusal must be exit 2 with the reason."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.output.results import LogContents, load_results, write_results
from ssmbench.runs.sweep.plan import shard_of

BASELINE = Path(__file__).resolve().parents[1] / "baselines" / "nvidia-h200" / "smoke.json"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def split(results: LogContents, n: int, tmp: Path, gpus: bool = True) -> list[Path]:
    """The baseline cut into n shards (by `shard_of`, as the sweep cuts), each on its own GPU."""
    paths = []
    device = next(iter(results.devices.values()))
    for i in range(n):
        env = {**copy.deepcopy(results.env), "shard": f"{i}/{n}", "hostname": f"host{i}"}
        recs = [r for r in results.records.values() if shard_of(r.id, n) == i]
        dev = {**device, "uuid": f"GPU-fake-{i}", "index": i} if gpus else device
        for r in recs:
            r.gpu = dev["uuid"]
        path = tmp / f"part{i}.json"
        write_results(path, env, [dev], recs)
        paths.append(path)
    return paths


def test_shards_merge_back_into_the_whole_run(tmp_path):
    whole = load_results(BASELINE)
    parts = split(load_results(BASELINE), 3, tmp_path)
    out = tmp_path / "merged.json"
    res = invoke("merge", *map(str, parts), "-o", str(out))
    assert res.exit_code == 0, res.output
    merged = load_results(out)
    assert set(merged.records) == set(whole.records)
    for key, record in whole.records.items():
        assert merged.records[key].samples_us == record.samples_us
    assert len(merged.devices) == 3  # every GPU's calibration kept
    assert merged.env["complete"] is True and merged.env["shard"] is None
    assert [m["shard"] for m in merged.env["merged_from"]] == ["0/3", "1/3", "2/3"]
    gate = invoke("compare", str(out), str(BASELINE))
    assert gate.exit_code == 0, gate.output
    assert "SLOWER" not in gate.output.split("\n")[-2]


def test_a_missing_shard_is_said_and_marks_the_run_incomplete(tmp_path):
    parts = split(load_results(BASELINE), 3, tmp_path)
    out = tmp_path / "merged.json"
    res = invoke("merge", str(parts[0]), str(parts[2]), "-o", str(out))
    assert res.exit_code == 0, res.output
    assert "1/3" in res.output and "complete: false" in res.output
    assert load_results(out).env["complete"] is False


def test_identical_duplicates_are_kept_once_conflicts_refused(tmp_path):
    parts = split(load_results(BASELINE), 2, tmp_path)
    out = tmp_path / "merged.json"
    res = invoke("merge", str(parts[0]), str(parts[0]), str(parts[1]), "-o", str(out))
    assert res.exit_code == 0, res.output
    assert "kept once" in res.output
    data = json.loads(parts[1].read_text())
    ok = next(c for c in data["cases"] if c["status"] == "ok")
    ok["samples_us"] = [x * 1.1 for x in ok["samples_us"]]
    conflict = tmp_path / "conflict.json"
    other = json.loads(parts[0].read_text())
    other["cases"].append(ok)
    conflict.write_text(json.dumps(other))
    res = invoke("merge", str(conflict), str(parts[1]), "-o", str(out))
    assert res.exit_code == 2
    assert ok["id"] in res.output and "other results" in res.output


@pytest.mark.parametrize("key, value", [("spec_name", "another-sweep"), ("git_sha", "0" * 40),
                                        ("device_mode", "cpu")])
def test_parts_of_different_runs_are_refused(tmp_path, key, value):
    parts = split(load_results(BASELINE), 2, tmp_path)
    data = json.loads(parts[1].read_text())
    data["env"][key] = value
    parts[1].write_text(json.dumps(data))
    out = tmp_path / "merged.json"
    res = invoke("merge", *map(str, parts), "-o", str(out))
    assert res.exit_code == 2
    assert f"env.{key}" in res.output
    assert not out.exists()


def test_bad_inputs_exit_2_without_writing(tmp_path):
    parts = split(load_results(BASELINE), 2, tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    out = tmp_path / "merged.json"
    for args in ([str(parts[0]), str(bad)], [str(parts[0]), str(tmp_path / "absent.json")]):
        res = invoke("merge", *args, "-o", str(out))
        assert res.exit_code == 2, res.output
        assert "Traceback" not in res.output
    res = invoke("merge", str(parts[0]), "-o", str(tmp_path))
    assert res.exit_code == 2 and "directory" in res.output
    assert not out.exists()
