"""Results: records, the JSON-lines log (incremental, torn lines, resume), the final JSON, and the
pivoted tables built from recorded sample data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from ssmbench.errors import UsageError
from ssmbench.output.report import BaselineIndex, markdown, pivot, print_tables, status_counts
from ssmbench.output.results import (
    SCHEMA,
    CaseRecord,
    ResultsLog,
    load_results,
    log_path,
    read_log,
    write_results,
)


def rec(impl: str, batch: int, fmt: str = "fp32", window: int = 6, median: float | None = 10.0,
        status: str = "ok", sweep: str = "s", sol: float | None = None) -> CaseRecord:
    params = {"batch": batch, "T": 6, "format": fmt, "pool": "pool", "accept": "hist", "window": window,
              "pdl": "on", "l2": "realistic", "act_dtype": "bf16"}
    case_id = f"H16-b{batch}-T6-{fmt}-pool-w{window}-hist-pdl-realistic"
    samples = [median] * 3 if median is not None else []
    return CaseRecord(id=case_id, impl=impl, sweep=sweep, status=status, params=params, samples_us=samples,
                      median_us=median, sol_pct=sol)


# -- records and the log -----------------------------------------------------------------------


def test_record_roundtrip_and_json_safety() -> None:
    r = rec("a", 1)
    r.verify = {"max_error": float("inf"), "comparisons": [{"error": float("nan"), "ok": False}]}
    data = r.to_dict()
    json.dumps(data, allow_nan=False)  # NaN/inf became null
    assert data["verify"]["max_error"] is None
    back = CaseRecord.from_dict({**data, "added_by_a_newer_writer": 1})
    assert back.key == r.key == ("s", r.id, "a") and back.samples_us == r.samples_us
    with pytest.raises(ValueError, match="allowed"):
        CaseRecord(id="x", impl="a", sweep="s", status="done")


def test_log_path() -> None:
    assert log_path(Path("out/results.json")) == Path("out/results.jsonl")
    assert log_path(Path("out/results")) == Path("out/results.jsonl")


def test_log_is_written_line_by_line_and_read_back(tmp_path: Path) -> None:
    log = ResultsLog(tmp_path / "r.json")
    log.env({"ssmbench": "0.1.0"})
    log.device({"uuid": "GPU-1", "name": "H100"})
    log.device({"uuid": "GPU-1", "name": "H100"})  # unchanged: not written again
    log.case(rec("a", 1, status="error", median=None))
    log.case(rec("a", 2))
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 4  # on disk before close()
    log.case(rec("a", 1))  # a retry of the errored pair: the last record wins
    log.close()
    contents = read_log(tmp_path / "r.jsonl")
    assert contents.env == {"ssmbench": "0.1.0"} and list(contents.devices) == ["GPU-1"]
    assert len(contents.records) == 2 and all(r.status == "ok" for r in contents.records.values())


def test_torn_last_line_is_dropped_but_a_bad_middle_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    good = json.dumps({"type": "case", **rec("a", 1).to_dict()})
    path.write_text(good + "\n" + good[: len(good) // 2])
    assert len(read_log(path).records) == 1
    path.write_text("{oops\n" + good + "\n")
    with pytest.raises(UsageError, match=":1:"):
        read_log(path)


def test_resume_keeps_done_pairs_and_retries_errors(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    log = ResultsLog(out)
    log.case(rec("a", 1))
    log.case(rec("a", 2, status="fail", median=None))
    log.case(rec("a", 4, status="error", median=None))
    log.case(rec("a", 8, status="skip", median=None))
    log.close()
    resumed = ResultsLog(out, resume=True)
    done = resumed.previous.done_keys()
    assert {k[1].split("-")[1] for k in done} == {"b1", "b2", "b8"}  # the error is run again
    resumed.case(rec("a", 4))
    resumed.close()
    assert len(read_log(log_path(out)).records) == 4
    fresh = ResultsLog(out)  # without --resume: a new log
    fresh.close()
    assert read_log(log_path(out)).records == {}


def test_resume_from_a_final_json_without_its_log(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    write_results(out, {"spec_name": "s"}, [{"uuid": "GPU-1"}], [rec("a", 1), rec("b", 1)])
    resumed = ResultsLog(out, resume=True)
    resumed.close()
    assert len(resumed.previous.records) == 2
    assert len(read_log(log_path(out)).records) == 2  # the new log starts with them


def test_final_json_schema(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    write_results(out, {"spec_name": "s", "timer": "cupti"}, [{"uuid": "GPU-1", "name": "H100"}],
                  [rec("a", 1), rec("b", 1)])
    data = json.loads(out.read_text())
    assert data["schema"] == SCHEMA == "ssmbench.results/1"
    assert data["env"]["gpus"][0]["name"] == "H100" and len(data["cases"]) == 2
    assert not (tmp_path / "r.json.tmp").exists()
    loaded = load_results(out)
    assert list(loaded.devices) == ["GPU-1"] and len(loaded.records) == 2
    out.write_text(json.dumps({"schema": "other/9"}))
    with pytest.raises(UsageError, match="expected 'ssmbench.results/1'"):
        load_results(out)
    out.write_text("{not json")
    with pytest.raises(UsageError, match="not JSON"):
        load_results(out)
    with pytest.raises(UsageError, match="no such"):
        load_results(tmp_path / "missing.json")


# -- tables ------------------------------------------------------------------------------------


def recorded() -> list[CaseRecord]:
    """A small recorded sweep: baseline `ref` and `fast` over 3 batches x 2 formats; one fail."""
    data = []
    for fmt in ("fp32", "bf16"):
        for batch, ref_us, fast_us in ((1, 10.0, 5.0), (8, 20.0, 8.0), (64, 160.0, 40.0)):
            data.append(rec("ref", batch, fmt, median=ref_us, sol=20.0))
            if (fmt, batch) == ("bf16", 64):
                data.append(rec("fast", batch, fmt, median=None, status="fail"))
            else:
                data.append(rec("fast", batch, fmt, median=fast_us, sol=80.0))
    data.append(rec("ref", 1, "fp32", window=16, status="skip", median=None))
    return data


def test_pivot_by_format_with_speedups() -> None:
    tables = pivot(recorded(), {"s": "ref"})
    assert [t.title for t in tables] == ["s: ref", "s: fast"]  # one table per impl; skips left out
    fast = tables[1]
    assert fast.column_axis == "format" and fast.columns == ["fp32", "bf16"]
    assert [b for b, _ in fast.rows] == [1, 8, 64]
    by_batch = dict(fast.rows)
    assert by_batch[8][0].median_us == 8.0 and by_batch[8][0].speedup == pytest.approx(2.5)
    assert by_batch[64][0].speedup == pytest.approx(4.0) and by_batch[64][0].sol_pct == 80.0
    assert by_batch[64][1].status == "fail" and by_batch[64][1].speedup is None
    assert dict(tables[0].rows)[1][0].speedup == pytest.approx(1.0)


def test_pivot_by_impl_when_the_format_is_fixed() -> None:
    data = [r for r in recorded() if r.params["format"] == "fp32" and r.status != "skip"]
    (table,) = pivot(data, {"s": "ref"})
    assert table.column_axis == "impl" and table.columns == ["ref", "fast"]
    assert dict(table.rows)[64][1].speedup == pytest.approx(4.0)


def test_window_independent_baseline_is_found_at_its_window() -> None:
    base = rec("ref", 1, window=6, median=12.0)
    replay = rec("replay", 1, window=16, median=6.0)
    index = BaselineIndex([base, replay], {"s": "ref"})
    assert index.find(replay) is base
    tables = pivot([base, replay], {"s": "ref"})
    assert [t.title for t in tables] == ["s: w6", "s: w16"]  # impl columns, one table per window
    assert tables[1].columns == ["replay"] and tables[1].rows[0][1][0].speedup == pytest.approx(2.0)


def test_rendering(tmp_path: Path) -> None:
    data = recorded()
    tables = pivot(data, {"s": "ref"})
    console = Console(record=True, width=120)
    print_tables(console, tables)
    text = console.export_text()
    assert "s: fast" in text and "2.50x" in text and "80%" in text and "FAIL" in text
    md = markdown(tables, data, {"spec_name": "s", "ssmbench": "0.1.0", "git_sha": "abcdef1234567"},
                  [{"name": "NVIDIA H100 80GB HBM3", "sm_count": 132, "l2_bytes": 50 << 20, "timer": "cupti",
                    "bandwidth": {"measured_tbps": 3.01, "datasheet_tbps": 3.35}}])
    assert "| batch | fp32 | bf16 |" in md
    assert "| 8 | 8.00 · 2.50x · 80% | 8.00 · 2.50x · 80% |" in md
    assert "copy 3.01 TB/s, datasheet 3.35" in md and "132 SMs, 50 MiB L2" in md
    assert "**fail** `fast`" in md
    assert status_counts(data) == {"ok": 11, "fail": 1, "error": 0, "skip": 1}
