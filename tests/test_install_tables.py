"""tools/gpu/install_tables.py: a tune's table merged into the installed one keeps what the installed
file says about how its entries were chosen."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from tool_modules import load_tool

from ssmbench.impls.registry import registry
from ssmbench.impls.tuned import SCHEMA


def _entry(batch: int, note: str, warps: int) -> dict:
    return {"shape": "H16P64N128G1", "T": 6, "state_dtype": "bf16", "rounding": "rn", "window": 16, "batch": batch,
            "knobs": {"num_warps": warps}, "note": note}


def test_a_tune_replaces_its_entries_and_keeps_the_rest(tmp_path: Path, monkeypatch) -> None:
    impl = registry()["triton.checkpoint"]
    monkeypatch.setattr(impl, "tunable", dataclasses.replace(impl.tunable, table_dir=tmp_path))
    installed = tmp_path / "nvidia-h200.json"
    installed.write_text(json.dumps({
        "schema": SCHEMA, "gpu": "NVIDIA H200", "impl": "triton.checkpoint", "replayed_from": "session 7's log",
        "entries": [_entry(64, "round 4: 0.93", 4), _entry(256, "round 2: 0.95", 4)]}))
    tuned = tmp_path / "tune.knobs.json"
    tuned.write_text(json.dumps({
        "schema": SCHEMA, "gpu": "NVIDIA H200", "impl": "triton.checkpoint", "tune": {"rounds": 3},
        "entries": [_entry(64, "ssmbench tune: -10%", 2), _entry(128, "ssmbench tune: -9%", 2)]}))

    assert load_tool("install_tables").install(tuned) == installed
    doc = json.loads(installed.read_text())
    assert doc["replayed_from"] == "session 7's log" and doc["tune"] == {"rounds": 3}
    by_batch = {e["batch"]: e for e in doc["entries"]}
    assert sorted(by_batch) == [64, 128, 256]
    assert by_batch[64]["knobs"] == {"num_warps": 2}
    assert by_batch[64]["note"] == "ssmbench tune: -10% Before: round 4: 0.93"
    assert by_batch[128]["note"] == "ssmbench tune: -9%"
    assert by_batch[256]["note"] == "round 2: 0.95"
    load_tool("install_tables").install(tuned)  # installing the same tune again does not repeat the history
    assert json.loads(installed.read_text())["entries"][0]["note"].count("Before:") == 1


def test_an_entry_the_tune_kept_stays_as_it_is(tmp_path: Path, monkeypatch) -> None:
    impl = registry()["triton.checkpoint"]
    monkeypatch.setattr(impl, "tunable", dataclasses.replace(impl.tunable, table_dir=tmp_path))
    installed = tmp_path / "nvidia-h200.json"
    installed.write_text(json.dumps({"schema": SCHEMA, "gpu": "NVIDIA H200", "impl": "triton.checkpoint",
                                     "entries": [_entry(64, "round 4: 0.93", 4)]}))
    tuned = tmp_path / "tune.knobs.json"
    tuned.write_text(json.dumps({"schema": SCHEMA, "gpu": "NVIDIA H200", "impl": "triton.checkpoint",
                                 "entries": [_entry(64, "ssmbench tune: converged", 4)]}))
    load_tool("install_tables").install(tuned)
    assert json.loads(installed.read_text())["entries"] == [_entry(64, "round 4: 0.93", 4)]
