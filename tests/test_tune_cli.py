"""`ssmbench tune` end to end on a CPU (the sweep's CPU test mode: wall-clock times) with a fake
tunable impl: a config that fails to build is discarded and reported, the knob table and the
log are written, a resumed run answers everything from the log, bad options exit 2."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.impls.base import Chain, register
from ssmbench.impls.knobs import Knob, KnobSpace
from ssmbench.impls.reference import SequentialReference
from ssmbench.impls.registry import PLUGINS_ENV, registry
from ssmbench.impls.tuned import Tunable
from ssmbench.output.results import log_path
from ssmbench.runs.sweep.run import DEVICE_ENV


@dataclass(frozen=True)
class FakeKnobs:
    unroll: int = 1
    broken: bool = False


class TunableReference(SequentialReference):
    """The sequential reference with two knobs that change nothing but ``broken``, which fails."""

    name = "test.tunable"
    tunable = Tunable(name, KnobSpace((Knob("unroll", (1, 2), "nothing"), Knob("broken", (False, True), "raises"))),
                      Path("/nonexistent"), lambda case: FakeKnobs())

    def build(self, case, workload) -> Chain:
        if self.tunable.knobs(case, workload.start_state.device).broken:
            raise ValueError("planted: this config does not build")
        return super().build(case, workload)


if "test.tunable" not in registry():
    register(TunableReference())

SPEC = """\
name: tiny
family: mamba2
shape: {nheads: 2, head_dim: 4, dstate: 8, ngroups: 1, d_conv: 4}
impls: [reference.sequential]
axes: {batch: [1, 2], T: [2], state_dtype: [fp32], window: [T], accept: [{rate: 0.6}], pdl: [off], l2: [hot]}
"""


@pytest.fixture
def spec(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    monkeypatch.setenv(PLUGINS_ENV, __name__)
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC)
    return path


def test_tune_writes_a_table_discards_failures_and_resumes_from_its_log(spec: Path, tmp_path: Path) -> None:
    out = tmp_path / "knobs.json"
    args = ["tune", str(spec), "--impl", "test.tunable", "-o", str(out), "--rounds", "2", "--samples", "8",
            "--max-passes", "1"]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "discarded unroll=1 broken=True: ValueError: planted: this config does not build" in first.output
    table = json.loads(out.read_text())
    assert table["impl"] == "test.tunable" and len(table["entries"]) == 2  # one per batch
    assert {e["batch"] for e in table["entries"]} == {1, 2}
    assert all(e["knobs"] is None or e["knobs"]["broken"] is False for e in table["entries"])  # null: default kept
    assert "winners against where each group started" in first.output
    assert first.output.count("(the default)") == 2  # no table here: both groups start at the default
    log = log_path(out)
    rounds = log.read_text().count('"type": "round"')
    assert rounds > 0

    again = runner.invoke(app, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    assert log.read_text().count('"type": "round"') == rounds  # nothing measured twice
    replayed = [json.loads(line)["replayed"] for line in log.read_text().splitlines() if '"type": "result"' in line]
    assert replayed[:2] == [0, 0] and all(n > 0 for n in replayed[2:]) and len(replayed) == 4

    refused = runner.invoke(app, args)  # a log is there: --resume or --fresh
    assert refused.exit_code == 2 and "--resume" in refused.output


def test_a_logged_start_outside_the_space_exits_2_before_anything_is_measured(spec: Path, tmp_path: Path) -> None:
    """A resumed log whose second group started at a config this space no longer has: exit 2 naming
    the group, found before the first group measures anything (a stop between groups would leave
    no table for the groups done)."""
    out = tmp_path / "knobs.json"
    args = ["tune", str(spec), "--impl", "test.tunable", "-o", str(out), "--rounds", "2", "--samples", "8",
            "--max-passes", "1"]
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    log = log_path(out)
    lines = log.read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if '"type": "start"' in line]
    second = json.loads(lines[starts[1]])
    second["config"]["unroll"] = 3  # not a choice of the space
    lines[starts[1]] = json.dumps(second)
    first = json.loads(lines[starts[0]])["group"]
    kept = [line for line in lines if '"type": "result"' not in line  # the first group's measurements go too:
            and not ('"type": "start"' not in line and f'"group": "{first}"' in line)]  # it would measure anew
    log.write_text("\n".join(kept) + "\n")
    measured = log.read_text().count('"type": "round"') + log.read_text().count('"type": "verify"')
    out.unlink()

    result = runner.invoke(app, [*args, "--resume"])
    assert result.exit_code == 2, result.output
    assert "the logged start of" in result.output and second["group"] in result.output
    assert "internal error" not in result.output and "Traceback" not in result.output
    # nothing measured (the resume's settings line is all it adds), nothing half-written
    assert log.read_text().count('"type": "round"') + log.read_text().count('"type": "verify"') == measured
    assert not out.exists()


@pytest.mark.parametrize(("extra", "message"), [
    (["--impl", "reference.sequential"], "declares no knob space"),
    (["--impl", "nope"], "unknown"),
    (["--impl", "test.tunable", "--budget", "soon"], "--budget 'soon'"),
    (["--impl", "test.tunable", "--samples", "4"], "at least 8"),
    (["--impl", "test.tunable", "--case", "zzz*"], "no case of it runs"),
    (["--impl", "test.tunable", "--filter", "batch=3"], "and --filter batch=3"),
    (["--impl", "test.tunable", "--filter", "bach=1"], "did you mean 'batch'"),
    (["--impl", "test.tunable", "--threshold", "-5"], "allowed 0 < PCT < 100"),
    (["--impl", "test.tunable", "--threshold", "nan"], "allowed 0 < PCT < 100"),
])
def test_bad_tune_options_exit_2(spec: Path, extra: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["tune", str(spec), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_log_place_taken_by_a_directory_exits_2(spec: Path, tmp_path: Path) -> None:
    out = tmp_path / "knobs.json"
    log_path(out).mkdir()
    for more in ([], ["--resume"], ["--fresh"]):
        result = CliRunner().invoke(app, ["tune", str(spec), "--impl", "test.tunable", "-o", str(out), *more])
        assert result.exit_code == 2, result.output
        assert "knobs.jsonl" in result.output and "internal error" not in result.output


def test_tune_filter_picks_the_groups_as_sweep_filter_picks_cases(spec: Path) -> None:
    """``--filter`` is `ssmbench sweep`'s: the same keys, the same matching, several together."""
    from ssmbench.runs.sweep.options import load_spec, parse_filters
    from ssmbench.runs.tune.run import tuning_groups

    impl = registry()["test.tunable"]
    sweep_file = load_spec(spec)
    every = tuning_groups(sweep_file, impl, impl.tunable, None)
    assert [g.case.batch for g in every] == [1, 2]
    picked = tuning_groups(sweep_file, impl, impl.tunable, None, None, parse_filters(["batch=2", "format=fp32"]))
    assert [g.case.batch for g in picked] == [2]
    assert tuning_groups(sweep_file, impl, impl.tunable, None, None, parse_filters(["format=bf16"])) == []


def test_a_group_starts_from_its_table_entry_and_a_resume_from_its_logged_start(tmp_path: Path) -> None:
    """A re-tune starts where the impl is today: the table's entry (else the default), and its final
    duel confirms against that, so it never ships a config slower than the one it replaces. The
    start is logged: a resume starts there again even if the table changed meanwhile. A group that
    ends on the default writes knobs null; one that keeps a table entry writes that entry."""
    import dataclasses

    from ssmbench.impls.tuned import table_key
    from ssmbench.runs.tune.journal import Journal
    from ssmbench.runs.tune.run import Group, starting_config, write_table
    from ssmbench.runs.tune.search import SearchResult
    from ssmbench.spec.expand import expand
    from ssmbench.spec.load import load_sweep_file

    impl = registry()["triton.checkpoint"]
    tunable = dataclasses.replace(impl.tunable, table_dir=tmp_path)
    sweep = load_sweep_file(Path(__file__).resolve().parents[1] / "sweeps" / "nemotron3-super-tp8.yaml").sweeps[0]
    cases = {c.batch: c for c in expand(sweep).cases if c.window == 16 and c.state_dtype == "fp32"}
    picked = {**tunable.default_config(cases[64]), "fused": False, "bandwidth": True, "block_p": 64}
    (tmp_path / "nvidia-h200.json").write_text(json.dumps({
        "schema": "ssmbench.knobs/1", "gpu": "NVIDIA H200", "impl": "triton.checkpoint",
        "entries": [{**table_key(cases[64], True), "batch": 64, "knobs": picked}]}))
    assert starting_config(tunable, cases[256], "NVIDIA H200") == (picked, "the table: nvidia-h200.json b64")
    assert starting_config(tunable, cases[8], "NVIDIA H200") == (tunable.default_config(cases[8]), "the default")
    assert starting_config(tunable, cases[256], None) == (tunable.default_config(cases[256]), "the default")

    log = tmp_path / "t.jsonl"
    settings = {"impl": "triton.checkpoint", "spec_name": "s", "rounds": 3, "samples": 50, "threshold_pct": 3.0,
                "confidence": 0.99, "max_passes": 3}
    journal = Journal(log, settings, resume=False)
    assert journal.start("g", picked, "the table") == (picked, "the table")
    journal.close()
    journal = Journal(log, settings, resume=True)
    other = tunable.default_config(cases[256])
    assert journal.start("g", other, "the default") == (picked, "the table")  # the logged start wins
    journal.close()

    out = tmp_path / "knobs.json"
    default = tunable.default_config(cases[256])
    kept = SearchResult(picked, picked, [], stopped="converged")
    back = SearchResult(picked, default, [], stopped="converged")
    write_table(out, "triton.checkpoint", "NVIDIA H200",
                [(Group("a", sweep.name, cases[256], table_key(cases[256], True)), kept, default),
                 (Group("b", sweep.name, cases[1024], table_key(cases[1024], True)), back, default)], {})
    entries = json.loads(out.read_text())["entries"]
    assert entries[0]["knobs"] == picked and "from fused=False" in entries[0]["note"]
    assert entries[1]["knobs"] is None


def test_a_new_entry_names_the_spec_batches_it_would_run_untimed() -> None:
    """A bucket's entry stands for every batch up to the next entry: the tune names the spec's batches
    a new winner would reach that nobody timed it at (session 15: a b1 entry ran b4 30% slower)."""
    from types import SimpleNamespace

    from ssmbench.runs.tune.run import Group, covered_batches, untimed_cover_notes

    assert covered_batches(1, [1, 2, 4, 8], {1}) == [2, 4, 8]
    assert covered_batches(1, [1, 2, 4, 8, 16], {1, 8}) == [2, 4]  # b8's entry
    assert covered_batches(1, [1, 2, 4, 8], {1, 4}) == [2]  # b4 tuned in the same run
    assert covered_batches(1, [1, 2, 4], {1, 2}) == []  # an entry at b2 already
    assert covered_batches(8, [1, 2, 4, 8], {8}) == []  # the spec's last batch

    key = {"shape": "s", "T": 6, "state_dtype": "fp16", "rounding": "sr", "window": 16}
    other = {**key, "state_dtype": "bf16"}

    def group(k: dict, batch: int) -> Group:
        return Group(f"{k['state_dtype']}-b{batch}", "tiny", SimpleNamespace(batch=batch), k)

    spec = [group(key, b) for b in (1, 2, 4, 8)] + [group(other, b) for b in (1, 2)]
    moved = SimpleNamespace(best={"num_warps": 8}, default={"num_warps": 2})
    kept = SimpleNamespace(best={"num_warps": 2}, default={"num_warps": 2})
    table = SimpleNamespace(buckets=lambda k: {8} if k == key else set())
    lines = untimed_cover_notes([(group(key, 1), moved, {}), (group(other, 1), kept, {})], spec, table)
    assert len(lines) == 1 and "fp16-b1's new entry would also run at batch 2, 4 of this spec" in lines[0]
    assert untimed_cover_notes([(group(key, 1), kept, {})], spec, None) == []
