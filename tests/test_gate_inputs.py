"""The gate never trusts its input: malformed or adversarial results files, and pairs of files that
cannot be compared, end in exit 2 with one line naming the file and the field, never a traceback
and never exit 1 (which means SLOWER only). Synthetic files, CPU only, fast."""

from __future__ import annotations

import copy
import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.errors import UsageError
from ssmbench.output.baselines import list_baselines
from ssmbench.output.results import (
    MAX_RESULTS_BYTES,
    SCHEMA,
    CaseRecord,
    ResultsFormatError,
    load_results,
    read_log,
)

runner = CliRunner()
GPU = "NVIDIA H100 80GB HBM3"


def samples(center: float, n: int = 40) -> list[float]:
    return [center * (1 + 0.001 * ((i * 7) % 11 - 5)) for i in range(n)]


def case(case_id: str, center: float | None = 10.0, status: str = "ok", sweep: str = "s") -> dict[str, Any]:
    s = samples(center) if center is not None and status == "ok" else []
    return {"id": case_id, "impl": "triton.x", "sweep": sweep, "status": status, "message": "",
            "params": {"batch": 1}, "samples_us": s, "median_us": center if s else None, "n_samples": len(s),
            "clock": {"source": "nvml", "sm_mhz_min": 1980, "sm_mhz_max": 1980, "max_sm_mhz": 1980}}


def results(cases: list[dict[str, Any]], copy_tbps: float = 3.0, host: str = "a") -> dict[str, Any]:
    device = {"index": 0, "name": GPU, "uuid": "GPU-1", "timer": "cupti", "max_sm_mhz": 1980, "l2_bytes": 50 << 20,
              "driver": "580.1", "bandwidth": {"measured_tbps": copy_tbps, "datasheet_tbps": 3.35}}
    return {"schema": SCHEMA, "env": {"spec_name": "s", "hostname": host, "device_mode": "cuda", "complete": True,
                                      "gpus": [device]},
            "cases": cases}


def good() -> dict[str, Any]:
    return results([case(f"c{i}") for i in range(5)])


def write(path: Path, data: Any) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def invoke(*args: Any):
    return runner.invoke(app, [str(a) for a in args])


def assert_clear_exit_2(result, *texts: str) -> None:
    """Exit 2 from a handled UsageError (not a crash: CliRunner would hold the exception), and the
    message says what it should."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    for text in texts:
        assert text in result.output, (text, result.output)


def mutate(fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = good()
    fn(data)
    return data


def set_sample(value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["cases"][2]["samples_us"].__setitem__(3, value)


MALFORMED = [
    ("null sample", set_sample(None), "cases[2].samples_us[3]", "null"),
    ("string sample", set_sample("1.5"), "cases[2].samples_us[3]", "number"),
    ("bool sample", set_sample(True), "cases[2].samples_us[3]", "number"),
    ("nested sample", set_sample([1.0]), "cases[2].samples_us[3]", "number"),
    ("zero sample", set_sample(0), "cases[2].samples_us[3]", "> 0"),
    ("negative sample", set_sample(-3.0), "cases[2].samples_us[3]", "> 0"),
    ("samples not a list", lambda d: d["cases"][1].__setitem__("samples_us", 5.0), "cases[1].samples_us", "list"),
    ("status not a str", lambda d: d["cases"][0].__setitem__("status", 1), "cases[0].status", "ok, fail"),
    ("status unknown", lambda d: d["cases"][0].__setitem__("status", "done"), "cases[0].status", "ok, fail"),
    ("id not a str", lambda d: d["cases"][4].__setitem__("id", 12), "cases[4].id", "string"),
    ("id missing", lambda d: d["cases"][4].pop("id"), "cases[4].id", "required"),
    ("median a string", lambda d: d["cases"][1].__setitem__("median_us", "10"), "cases[1].median_us", "number"),
    ("params a list", lambda d: d["cases"][1].__setitem__("params", [1]), "cases[1].params", "object"),
    ("n_samples a bool", lambda d: d["cases"][1].__setitem__("n_samples", True), "cases[1].n_samples", "integer"),
    ("clock a string", lambda d: d["cases"][1].__setitem__("clock", "fast"), "cases[1].clock", "object"),
    ("clock MHz a string", lambda d: d["cases"][1]["clock"].__setitem__("sm_mhz_min", "1980"),
     "cases[1].clock.sm_mhz_min", "number"),
    ("case not an object", lambda d: d["cases"].__setitem__(3, "c3"), "cases[3]", "object"),
    ("env a list", lambda d: d.__setitem__("env", []), "env", "object"),
    ("env missing", lambda d: d.pop("env"), "env", "missing"),
    ("cases a dict", lambda d: d.__setitem__("cases", {}), "cases", "list"),
    ("gpus not a list", lambda d: d["env"].__setitem__("gpus", {"name": GPU}), "env.gpus", "list"),
    ("gpus of strings", lambda d: d["env"].__setitem__("gpus", [GPU]), "env.gpus[0]", "object"),
    ("device name an int", lambda d: d["env"]["gpus"][0].__setitem__("name", 100), "env.gpus[0].name", "string"),
    ("device clock a str", lambda d: d["env"]["gpus"][0].__setitem__("max_sm_mhz", "1980"),
     "env.gpus[0].max_sm_mhz", "number"),
    ("bandwidth a str", lambda d: d["env"]["gpus"][0]["bandwidth"].__setitem__("measured_tbps", "3"),
     "env.gpus[0].bandwidth.measured_tbps", "number"),
    ("complete a str", lambda d: d["env"].__setitem__("complete", "yes"), "env.complete", "true or false"),
    ("unknown schema", lambda d: d.__setitem__("schema", "ssmbench.results/9"), "schema", "ssmbench.results/1"),
    ("pair twice", lambda d: d["cases"].append(copy.deepcopy(d["cases"][0])), "cases[5]", "cases[0]"),
]


@pytest.mark.parametrize(("change", "field", "expected"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_field_is_exit_2_naming_file_and_field(tmp_path, change, field, expected):
    ok = write(tmp_path / "ok.json", good())
    bad = write(tmp_path / "bad.json", mutate(change))
    with pytest.raises(UsageError) as info:
        load_results(bad)
    assert str(bad) in str(info.value) and field in str(info.value) and expected in str(info.value)
    assert len(str(info.value).splitlines()) == 1
    assert_clear_exit_2(invoke("compare", bad, ok), field)
    assert_clear_exit_2(invoke("compare", ok, bad), field)  # the baseline is read the same way
    assert_clear_exit_2(invoke("baseline", "path", bad, "--dir", tmp_path / "b"), field)
    assert_clear_exit_2(invoke("baseline", "save", bad, "--dir", tmp_path / "b"), field)


RAW = [
    ("empty", b"", "empty file"),
    ("whitespace", b"  \n\n", "empty file"),
    ("binary garbage", bytes(range(256)) * 4, "not UTF-8"),
    ("invalid utf-8", b'{"schema": "\xff\xfe"}', "not UTF-8"),
    ("NUL bytes", b"\x00" * 64, "NUL"),
    ("not JSON", b"{oops", "not JSON"),
    ("JSON list", b"[1, 2]", "expected a JSON object"),
    ("deep nesting", b"[" * 100_000, "nested too deeply"),
    ("nested 40 deep", b"[" * 40 + b"]" * 40, "nested more than"),
    ("deep in a record", json.dumps(results([{**case("a"), "params": json.loads("[" * 40 + "]" * 40)}])).encode(),
     "nested more than"),
    ("duplicate key", b'{"schema": "ssmbench.results/1", "schema": "x", "env": {}, "cases": []}', "duplicate key"),
    ("huge integer", b'{"schema": ' + b"9" * 5000 + b"}", "not JSON"),
    ("NaN literal", json.dumps(results([{**case("a"), "median_us": float("nan")}])).encode(), "finite"),
]


@pytest.mark.parametrize(("raw", "message"), [r[1:] for r in RAW], ids=[r[0] for r in RAW])
def test_unreadable_files_are_exit_2(tmp_path, raw, message):
    ok = write(tmp_path / "ok.json", good())
    bad = tmp_path / "bad.json"
    bad.write_bytes(raw)
    assert_clear_exit_2(invoke("compare", bad, ok), str(bad), message)
    assert_clear_exit_2(invoke("compare", ok, bad), str(bad), message)


def test_gzip_is_refused_with_the_fix(tmp_path):
    ok = write(tmp_path / "ok.json", good())
    packed = tmp_path / "new.json"
    packed.write_bytes(gzip.compress(json.dumps(good()).encode()))
    assert_clear_exit_2(invoke("compare", packed, ok), "gzip-compressed; gunzip it first")


def test_huge_file_is_refused_before_reading(tmp_path):
    ok = write(tmp_path / "ok.json", good())
    huge = tmp_path / "huge.json"
    with open(huge, "wb") as f:  # sparse: no disk used, no time spent
        f.truncate(MAX_RESULTS_BYTES + 1)
    assert_clear_exit_2(invoke("compare", huge, ok), "MiB", "refused")


def test_a_directory_or_missing_file_is_exit_2(tmp_path):
    ok = write(tmp_path / "ok.json", good())
    (tmp_path / "dir.json").mkdir()
    assert_clear_exit_2(invoke("compare", tmp_path / "dir.json", ok), "not a regular file")
    assert_clear_exit_2(invoke("compare", tmp_path / "none.json", ok), "no such results file")


def log_lines(data: dict[str, Any]) -> list[str]:
    env = dict(data["env"])
    gpus = env.pop("gpus")
    return ([json.dumps({"type": "env", **env})] + [json.dumps({"type": "device", **g}) for g in gpus]
            + [json.dumps({"type": "case", **c}) for c in data["cases"]])


def test_log_bad_middle_line_names_the_line_and_torn_last_line_is_ignored(tmp_path):
    ok = write(tmp_path / "ok.json", good())
    lines = log_lines(good())
    log = tmp_path / "new.jsonl"
    log.write_text("\n".join(lines) + "\n" + lines[-1][:40])  # torn last line: ignored
    assert len(read_log(log).records) == 5
    assert invoke("compare", log, ok).exit_code == 0
    bad = [*lines[:3], lines[3][:40], *lines[4:]]
    log.write_text("\n".join(bad) + "\n")
    assert_clear_exit_2(invoke("compare", log, ok), f"{log}:4:", "not JSON")
    wrong = json.loads(lines[4])
    wrong["samples_us"][0] = None
    log.write_text("\n".join([*lines[:4], json.dumps(wrong), *lines[5:]]) + "\n")
    assert_clear_exit_2(invoke("compare", log, ok), f"{log}:5: samples_us[0]")
    log.write_text("\n".join([*lines, json.dumps({"type": "mystery"}), lines[-1]]) + "\n")
    assert_clear_exit_2(invoke("compare", log, ok), f"{log}:8: type", "env, device, case")
    log.write_text("\n".join([*lines, "[1, 2]", lines[-1]]) + "\n")
    assert_clear_exit_2(invoke("compare", log, ok), f"{log}:8:", "JSON object")
    log.write_text("")
    assert read_log(log).records == {}  # --resume of a run that died before its first line
    assert_clear_exit_2(invoke("compare", log, ok), "empty file")


def test_from_dict_raises_a_usage_error_with_the_field_path():
    with pytest.raises(ResultsFormatError, match=r"samples_us\[1\]: expected a number, got true"):
        CaseRecord.from_dict({**case("a"), "samples_us": [1.0, True]})
    with pytest.raises(UsageError, match="status"):
        CaseRecord.from_dict({**case("a"), "status": None})
    with pytest.raises(UsageError, match="expected an object"):
        CaseRecord.from_dict(["a"])
    assert issubclass(ResultsFormatError, ValueError)  # old callers caught ValueError


def test_n_samples_disagreeing_trusts_samples_and_equal_samples_compare(tmp_path):
    data = good()
    data["cases"][0]["n_samples"] = 999
    data["cases"][1]["samples_us"] = [7.0] * 30  # all equal: a degenerate but valid interval
    new = write(tmp_path / "new.json", data)
    assert load_results(new).records[("s", "c0", "triton.x")].n_samples == 40
    old = copy.deepcopy(data)
    old["cases"][0]["n_samples"] = 1
    result = invoke("compare", new, write(tmp_path / "old.json", old))
    assert result.exit_code == 0, result.output
    assert "5 SAME" in result.output


# -- pairs of files that cannot be compared ----------------------------------------------------


def test_no_shared_pair_is_exit_2_not_green(tmp_path):
    new = write(tmp_path / "new.json", results([case(f"c{i}", sweep="other") for i in range(3)]))
    old = write(tmp_path / "old.json", good())
    result = invoke("compare", new, old)
    assert_clear_exit_2(result, "share no (sweep, case id, impl) pair")
    skipped = write(tmp_path / "skip.json", results([case(f"c{i}", status="skip") for i in range(5)]))
    assert_clear_exit_2(invoke("compare", skipped, old), "share no")
    nothing = write(tmp_path / "nothing.json", results([]))
    assert_clear_exit_2(invoke("compare", nothing, old), "share no")


def test_all_failed_new_is_gated_as_failed_not_refused(tmp_path):
    new = write(tmp_path / "new.json", results([case(f"c{i}", status="fail") for i in range(5)]))
    result = invoke("compare", new, write(tmp_path / "old.json", good()))
    assert result.exit_code == 2 and "5 FAILED" in result.output


def test_ok_record_without_samples_is_exit_2(tmp_path):
    old = write(tmp_path / "old.json", good())
    data = good()
    data["cases"][2]["samples_us"] = []
    empty = write(tmp_path / "empty.json", data)
    assert_clear_exit_2(invoke("compare", empty, old), "NEW has 1 ok record(s) without usable samples", "c2")
    assert_clear_exit_2(invoke("compare", old, empty), "the baseline has 1 ok record(s) without usable samples")
    data["cases"][2]["samples_us"] = None
    assert_clear_exit_2(invoke("compare", write(tmp_path / "null.json", data), old), "cases[2].samples_us")
    # a baseline record NEW does not have is not compared: no error for it, it is MISSING
    unmatched = results([case(f"c{i}") for i in range(5)] + [{**case("x"), "samples_us": []}])
    result = invoke("compare", old, write(tmp_path / "unmatched.json", unmatched))
    assert result.exit_code == 0, result.output
    assert "1 MISSING" in result.output


def test_missing_and_new_are_always_counted_and_fail_on_missing_is_exit_2(tmp_path):
    old = write(tmp_path / "old.json", good())
    same = invoke("compare", old, old)
    assert same.exit_code == 0 and "5 SAME; 0 MISSING, 0 NEW; exit 0" in same.output
    fewer = write(tmp_path / "fewer.json", results([case(f"c{i}") for i in range(4)] + [case("n")]))
    plain = invoke("compare", fewer, old)
    assert plain.exit_code == 0 and "4 SAME; 1 MISSING, 1 NEW; exit 0" in plain.output
    md, xml = tmp_path / "c.md", tmp_path / "c.xml"
    strict = invoke("compare", fewer, old, "--fail-on-missing", "--markdown", md, "--junit", xml)
    assert strict.exit_code == 2, strict.output
    assert "MISSING" in strict.output and "--fail-on-missing" in strict.output
    assert "exit code 2" in md.read_text() and 'failures="1"' in xml.read_text()
    assert invoke("compare", old, old, "--fail-on-missing").exit_code == 0
    slower = write(tmp_path / "slower.json", results([case(f"c{i}", 11.0) for i in range(5)]))
    assert invoke("compare", slower, old, "--fail-on-missing").exit_code == 1  # exit 1 stays SLOWER only


def test_markup_like_ids_and_unwritable_reports_do_not_crash(tmp_path):
    data = results([case("[/bold]"), case("[red]x"), case("c|1")])
    new = write(tmp_path / "new.json", data)
    result = invoke("compare", new, new)
    assert result.exit_code == 0, result.output
    assert "[/bold]" in result.output
    (tmp_path / "file").write_text("")
    assert_clear_exit_2(invoke("compare", new, new, "--markdown", tmp_path / "file" / "c.md"), "--markdown")


# -- baselines -----------------------------------------------------------------------------------


def test_show_lists_every_unreadable_baseline_with_its_reason(tmp_path):
    root = tmp_path / "baselines"
    (root / "gpu").mkdir(parents=True)
    write(root / "gpu" / "good.json", good())
    write(root / "gpu" / "nulls.json", mutate(set_sample(None)))
    (root / "gpu" / "binary.json").write_bytes(b"\x1f\x8b\x08" + bytes(100))
    (root / "gpu" / "empty.json").write_text("")
    write(root / "gpu" / "deep.json", "[" * 100_000)
    (root / "gpu" / "dir.json").mkdir()
    found = {b.path.name: b.note for b in list_baselines(root)}
    assert found["good.json"] == ""
    assert "samples_us[3]" in found["nulls.json"] and "gzip" in found["binary.json"]
    assert all(found[n].startswith("unreadable") for n in ("empty.json", "deep.json", "dir.json"))
    shown = invoke("baseline", "show", "--dir", root)
    assert shown.exit_code == 0, shown.output
    assert "6 baseline(s)" in shown.output and "unreadable" in shown.output


def test_save_refuses_ok_records_without_samples(tmp_path):
    data = good()
    data["cases"][1]["samples_us"] = []
    bad = write(tmp_path / "bad.json", data)
    assert_clear_exit_2(invoke("baseline", "save", bad, "--dir", tmp_path / "b"), "without usable samples")
    assert_clear_exit_2(invoke("baseline", "save", bad, "--dir", tmp_path / "b", "--force"), "without usable samples")
    assert not (tmp_path / "b").exists()
    fine = invoke("baseline", "save", write(tmp_path / "ok.json", good()), "--dir", tmp_path / "b")
    assert fine.exit_code == 0, fine.output
