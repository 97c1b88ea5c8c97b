"""Knob spaces and per-device knob tables on a CPU: every shipped default is a point of its impl's
declared space; a synthetic table is read with the fallback rule (nearest batch bucket not
above, else the default; an unseen GPU gets the default); a bad table is a clear UsageError;
the tuner's forced config wins over both; `list --knobs` shows the spaces."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.errors import UsageError
from ssmbench.impls import tuned
from ssmbench.impls.knobs import forced
from ssmbench.impls.registry import registry
from ssmbench.impls.tuned import SCHEMA, load_table, table_key, tunable_of
from ssmbench.spec.expand import expand
from ssmbench.spec.load import load_sweep_file

ROOT = Path(__file__).resolve().parent.parent
TUNABLE = ("triton.intermediate", "triton.checkpoint", "triton.gdn")


def cases(impl_name: str):
    impl = registry()[impl_name]
    for path in sorted((ROOT / "sweeps").glob("*.yaml")):
        for sweep in load_sweep_file(path).sweeps:
            if sweep.family == impl.family:
                yield from (c for c in expand(sweep).cases if impl.supports(c) is None)


@pytest.mark.parametrize("name", TUNABLE)
def test_every_shipped_default_is_a_point_of_the_declared_space(name: str) -> None:
    tunable = tunable_of(registry()[name])
    assert tunable is not None and tunable.impl == name
    seen = 0
    for case in cases(name):
        config = tunable.default_config(case)
        assert tunable.space.problem(config) is None, (case.id, config)
        seen += 1
    assert seen


def checkpoint_case(batch: int, window: int = 16):
    return next(c for c in cases("triton.checkpoint")
                if c.batch == batch and c.window == window and c.state_dtype == "fp32" and c.T == 6)


@pytest.fixture
def table_dir(tmp_path: Path, monkeypatch):
    """triton.checkpoint reading its tables from tmp_path, on a pretend H200."""
    impl = registry()["triton.checkpoint"]
    monkeypatch.setattr(impl, "tunable", dataclasses.replace(impl.tunable, table_dir=tmp_path))
    monkeypatch.setattr(tuned, "device_name", lambda device: "NVIDIA H200")
    return tmp_path


def write_table(path: Path, rows: list[dict], **fields) -> None:
    data = {"schema": SCHEMA, "gpu": "NVIDIA H200", "impl": "triton.checkpoint", "entries": rows, **fields}
    path.write_text(json.dumps(data))


def entry(case, batch: int, **knobs) -> dict:
    config = {"fused": True, "bandwidth": False, "block_p": 32, "num_warps": 2, "precision": "tf32x3",
              "max_regs": 0, "n_tile": 0, "stages": 1, "rect_outputs": False, "split_loops": False, "prefetch": False,
              "pre_heads": 16, "pre_warps": 4, "ring_rows": False, "tma": False, **knobs}
    return {**table_key(case, True), "batch": batch, "knobs": config}


def test_a_table_is_read_with_the_nearest_bucket_not_above(table_dir: Path) -> None:
    impl = registry()["triton.checkpoint"]
    c64 = checkpoint_case(64)
    write_table(table_dir / "nvidia-h200.json", [entry(c64, 16, num_warps=4), entry(c64, 64, num_warps=8)])
    tuned._read.cache_clear()
    t = impl.tunable
    assert t.choose(c64, "NVIDIA H200") == (entry(c64, 64, num_warps=8)["knobs"], "nvidia-h200.json b64")
    installed = load_table(table_dir / "nvidia-h200.json", "triton.checkpoint", t.space)
    assert installed.buckets(table_key(c64, True)) == {16, 64}  # the buckets `ssmbench tune`'s coverage note reads
    c256 = checkpoint_case(256)
    assert t.choose(c256, "NVIDIA H200")[1] == "nvidia-h200.json b64"  # nearest bucket below 256
    c32 = checkpoint_case(32)
    assert t.knobs(c32, "cuda").num_warps == 4  # bucket 16
    c8 = checkpoint_case(8)
    config, source = t.choose(c8, "NVIDIA H200")
    assert config is None and source.startswith("default (nvidia-h200.json: no entry")
    assert t.knobs(c8, "cuda") == t.default(c8)
    other_window = checkpoint_case(64, window=6)
    assert t.choose(other_window, "NVIDIA H200")[0] is None  # another window: another key
    assert t.choose(c64, "NVIDIA B200") == (None, "default (no table for NVIDIA B200)")  # unseen GPU
    assert t.choose(c64, None)[0] is None  # the CPU
    with forced("triton.checkpoint", {**entry(c64, 1)["knobs"], "block_p": 64}):
        assert t.knobs(c64, "cuda").block_p == 64  # the tuner's candidate wins
    assert t.knobs(c64, "cuda").block_p == 32
    assert [len(x.entries) for x in t.tables()] == [2]


def test_tables_off_builds_every_case_with_its_default(table_dir: Path, monkeypatch) -> None:
    """SSMBENCH_KNOB_TABLES=off: the A/B of the tables against the hand-picked defaults; a value
    other than on/off is a usage error naming the variable and the allowed values."""
    impl = registry()["triton.checkpoint"]
    c64 = checkpoint_case(64)
    write_table(table_dir / "nvidia-h200.json", [entry(c64, 64, num_warps=8)])
    tuned._read.cache_clear()
    t = impl.tunable
    assert t.knobs(c64, "cuda").num_warps == 8
    monkeypatch.setenv(tuned.TABLES_ENV, "off")
    assert t.choose(c64, "NVIDIA H200") == (None, f"default ({tuned.TABLES_ENV}=off)")
    assert t.knobs(c64, "cuda") == t.default(c64)
    with forced("triton.checkpoint", {**entry(c64, 1)["knobs"], "block_p": 64}):
        assert t.knobs(c64, "cuda").block_p == 64  # the tuner's candidate still wins
    monkeypatch.setenv(tuned.TABLES_ENV, "maybe")
    with pytest.raises(UsageError, match="SSMBENCH_KNOB_TABLES='maybe': allowed values: on, off"):
        t.choose(c64, "NVIDIA H200")
    result = CliRunner().invoke(app, ["list"])  # every command refuses it up front: exit 2, one line
    assert result.exit_code == 2 and "allowed values: on, off" in result.output and "Traceback" not in result.output


def test_an_entry_that_kept_the_default_answers_with_the_rule_at_the_case_batch(table_dir: Path) -> None:
    """``knobs: null`` (the tune kept the default at b8): b8..b63 get the hand rule at their own
    batch, b64 up the b64 entry."""
    impl = registry()["triton.checkpoint"]
    c8, c32, c64 = checkpoint_case(8), checkpoint_case(32), checkpoint_case(64)
    write_table(table_dir / "nvidia-h200.json", [{**entry(c8, 8), "knobs": None}, entry(c64, 64, num_warps=8)])
    tuned._read.cache_clear()
    t = impl.tunable
    config, source = t.choose(c32, "NVIDIA H200")
    assert config is None and source == "default (nvidia-h200.json b8 says default)"
    assert t.knobs(c32, "cuda") == t.default(c32)  # the rule at b32 itself, whatever it says there
    assert t.knobs(c64, "cuda").num_warps == 8


@pytest.mark.parametrize(("change", "message"), [
    ({"schema": "other/1"}, "schema 'other/1'"),
    ({"impl": "triton.gdn"}, "impl: 'triton.gdn', but this table is read for 'triton.checkpoint'"),
    ({"entries": [{"batch": 64}]}, "entries[0]: field 'shape' missing"),
    ({"entries": "x"}, "entries: expected list"),
])
def test_a_bad_table_names_the_file_and_field(table_dir: Path, change: dict, message: str) -> None:
    c64 = checkpoint_case(64)
    path = table_dir / "nvidia-h200.json"
    write_table(path, [entry(c64, 64)], **change)
    tuned._read.cache_clear()
    with pytest.raises(UsageError) as err:
        registry()["triton.checkpoint"].tunable.choose(c64, "NVIDIA H200")
    assert str(path) in str(err.value) and message in str(err.value)


@pytest.mark.parametrize(("knobs", "message"), [
    ({"block_p": 4}, "breaks the constraint: block_p >= 16 in the dot forms"),
    ({"num_warps": 3}, "num_warps=3: allowed: 1, 2, 4, 8"),
    ({"fused": 1}, "fused=1: allowed: False, True"),
    ({"warps": 2}, "unknown knob 'warps'"),
])
def test_a_table_entry_outside_the_space_is_refused(table_dir: Path, knobs: dict, message: str) -> None:
    c64 = checkpoint_case(64)
    write_table(table_dir / "nvidia-h200.json", [entry(c64, 64, **knobs)])
    tuned._read.cache_clear()
    with pytest.raises(UsageError, match="entries\\[0\\].knobs: " + message.split("(")[0][:20]):
        registry()["triton.checkpoint"].tunable.choose(c64, "NVIDIA H200")


def test_a_table_written_before_a_knob_existed_reads_with_its_legacy_value(table_dir: Path) -> None:
    """A user's table from before session 11 (no n_tile / stages / rect_outputs) keeps working: the
    added knobs take the values of the kernel it measured; a knob that has always been there is still
    required (the error names it)."""
    c64 = checkpoint_case(64)
    old = entry(c64, 64, fused=False, bandwidth=True, block_p=64, num_warps=4)
    for added in ("n_tile", "stages", "rect_outputs"):
        del old["knobs"][added]
    write_table(table_dir / "nvidia-h200.json", [old])
    tuned._read.cache_clear()
    config, source = registry()["triton.checkpoint"].tunable.choose(c64, "NVIDIA H200")
    assert source == "nvidia-h200.json b64"
    assert (config["n_tile"], config["stages"], config["rect_outputs"]) == (0, 1, False)
    assert config["block_p"] == 64 and config["bandwidth"] is True

    del old["knobs"]["block_p"]
    write_table(table_dir / "nvidia-h200.json", [old])
    tuned._read.cache_clear()
    with pytest.raises(UsageError, match="knob 'block_p' missing"):
        registry()["triton.checkpoint"].tunable.choose(c64, "NVIDIA H200")


@pytest.mark.parametrize("name", TUNABLE)
def test_every_shipped_table_is_inside_its_space(name: str) -> None:
    """The shipped tables parse against the impl's space as it is now (a knob added to the space
    must reach every entry, a constraint added must hold there); only a GPU run would find out
    otherwise, case by case."""
    tunable = tunable_of(registry()[name])
    tuned._read.cache_clear()
    tables = tunable.tables()  # parse_table raises UsageError naming the entry and the knob
    assert tables and all(t.impl == name and t.entries for t in tables)


def test_list_knobs_shows_each_space() -> None:
    result = CliRunner().invoke(app, ["list", "--knobs"])
    assert result.exit_code == 0, result.output
    for name in TUNABLE:
        assert f"{name}: knobs" in result.output
    assert "block_p >= 16 in the dot forms" in result.output
    assert "knob tables in" in result.output


def test_plan_gpu_says_which_table_each_case_uses(table_dir: Path, monkeypatch) -> None:
    """`plan --gpu MODEL` names the knob source per tunable impl and case: a table entry (file and
    bucket) where there is one, the default (and why) where there is none; without --gpu, no
    knob column text."""
    from typer.testing import CliRunner

    from ssmbench.cli import app
    from ssmbench.cli.common import console

    monkeypatch.setattr(console, "width", 400)  # one line per row: the cells are not wrapped
    c64 = checkpoint_case(64)
    write_table(table_dir / "nvidia-h200.json", [entry(c64, 64, num_warps=8)])
    tuned._read.cache_clear()
    runner = CliRunner()
    args = ["plan", str(ROOT / "sweeps" / "nemotron3-super-tp8.yaml"), "--case", c64.id]
    res = runner.invoke(app, [*args, "--gpu", "NVIDIA H200"])
    assert res.exit_code == 0, res.output
    assert "knobs: nvidia-h200.json b64" in res.output
    other = runner.invoke(app, [*args, "--gpu", "NVIDIA H100 80GB HBM3"])
    assert "knobs: default (no table for NVIDIA H100 80GB HBM3)" in other.output
    plain = runner.invoke(app, args)
    assert plain.exit_code == 0 and "knobs:" not in plain.output
