"""`ssmbench compare`: statistics, verdicts, exit codes and reports, on the real H100 samples of
the stored headline baseline (recorded) and on synthetic ones; `--rerun` and the test slowdown
knob end to end in the CPU test mode (real sweep workers, wall-clock times)."""

from __future__ import annotations

import copy
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.errors import UsageError
from ssmbench.measure.slowdown import SLOWDOWN_ENV, SPIN_KERNEL, slow_down, slowdown_fraction, spin_wait_ns
from ssmbench.output.compare import (
    EXIT_AMBIGUOUS,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_SLOWER,
    Gate,
    RatioInterval,
    _median_rank_cdf,
    compare_results,
    decide_rerun,
    exit_code,
    ratio_interval,
    to_junit,
    to_markdown,
    verdict_for,
)
from ssmbench.output.results import CaseRecord, LogContents, load_results, write_results
from ssmbench.output.stats import median

ROOT = Path(__file__).resolve().parent.parent
H100 = ROOT / "baselines" / "nvidia-h100-80gb-hbm3" / "nemotron3-super-tp8.json"
runner = CliRunner()


@pytest.fixture(scope="module")
def h100() -> LogContents:
    return load_results(H100)


def ok_pairs(results: LogContents) -> int:
    """How many measured pairs the stored baseline holds (it grows as impls are added)."""
    return sum(r.status == "ok" for r in results.records.values())


def transformed(results: LogContents, fn) -> LogContents:
    """A deep copy whose ok records' samples are ``fn(samples, record)`` (medians recomputed)."""
    out = copy.deepcopy(results)
    for record in out.records.values():
        if record.status == "ok":
            record.samples_us = [float(x) for x in fn(record.samples_us, record)]
            record.median_us = median(record.samples_us)
            record.n_samples = len(record.samples_us)
    return out


def scaled(results: LogContents, factor: float) -> LogContents:
    return transformed(results, lambda s, r: [x * factor for x in s])


def save(results: LogContents, path: Path) -> Path:
    write_results(path, results.env, list(results.devices.values()), list(results.records.values()))
    return path


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


# -- statistics ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [9, 10, 37, 120])
def test_median_rank_distribution_is_the_bootstrap_one(n):
    """The closed-form rank distribution of a resample's median matches brute-force resampling."""
    rng = np.random.default_rng(n)
    ranks = np.sort(rng.integers(0, n, (100_000, n)), axis=1)[:, (n + 1) // 2 - 1]
    empirical = np.searchsorted(np.sort(ranks), np.arange(n), side="right") / len(ranks)
    assert np.abs(empirical - _median_rank_cdf(n)).max() < 0.01


def test_interval_matches_brute_force_bootstrap(h100):
    """On recorded H100 samples (ties from the timer's resolution included), the interval equals a
    plain percentile bootstrap of the median ratio within Monte Carlo error."""
    rng = np.random.default_rng(7)
    records = [r for r in h100.records.values() if r.status == "ok"]
    for record in (records[0], records[5], records[-1]):
        s = np.asarray(record.samples_us)
        n = len(s)
        a = np.median(s[rng.integers(0, n, (4000, n))], axis=1)
        b = np.median(s[rng.integers(0, n, (4000, n))], axis=1)
        lo, hi = np.percentile(a / b, [0.5, 99.5])
        got = ratio_interval(s, s, 0.99)
        assert got.ratio == 1.0
        assert abs(got.lo - lo) < 1e-3 and abs(got.hi - hi) < 1e-3, (record.id, got, lo, hi)


def test_interval_is_reproducible_and_needs_samples():
    x = [10.0 + 0.01 * i for i in range(50)]
    assert ratio_interval(x, x, 0.99) == ratio_interval(x, x, 0.99)
    with pytest.raises(ValueError, match="samples"):
        ratio_interval(x[:3], x, 0.99)
    with pytest.raises(ValueError, match="confidence"):
        ratio_interval(x, x, 1.5)


@pytest.mark.parametrize(("interval", "verdict"), [
    (RatioInterval(1.10, 1.05, 1.15), "SLOWER"),
    (RatioInterval(1.10, 1.02, 1.18), "AMBIGUOUS"),  # clear change, but the interval reaches into the band
    (RatioInterval(1.02, 1.01, 1.03), "SAME"),  # significant but below the threshold: not a regression
    (RatioInterval(1.02, 1.01, 1.04), "AMBIGUOUS"),
    (RatioInterval(0.90, 0.85, 0.95), "FASTER"),
    (RatioInterval(0.96, 0.95, 0.97), "AMBIGUOUS"),
    (RatioInterval(1.00, 0.97, 1.03), "SAME"),
])
def test_verdict_rules(interval, verdict):
    assert verdict_for(interval, 3.0) == verdict


# -- verdicts on recorded samples --------------------------------------------------------------


def test_identical_is_same(h100):
    comparison = compare_results(h100, h100)
    assert comparison.counts["SAME"] == ok_pairs(h100) and comparison.exit_code == EXIT_OK
    assert not comparison.warnings


def test_slower_by_ten_percent(h100):
    comparison = compare_results(scaled(h100, 1.10), h100)
    assert comparison.counts["SLOWER"] == ok_pairs(h100) and comparison.exit_code == EXIT_SLOWER
    assert all(abs(r.change_pct - 10.0) < 1e-6 for r in comparison.rows)


def test_faster_by_ten_percent_never_fails(h100):
    comparison = compare_results(scaled(h100, 0.90), h100)
    assert comparison.counts["FASTER"] == ok_pairs(h100) and comparison.exit_code == EXIT_OK


def test_resampled_same_distribution_never_slower_over_200_trials(h100):
    """A/A on recorded samples: both sides resampled from one case's samples, 200 times, over
    the cases with the fewest samples and the most noise. Never SLOWER. The same procedure with a
    5% shift must be flagged (so this test can fail)."""
    rng = np.random.default_rng(2026)
    ok = [r for r in h100.records.values() if r.status == "ok"]
    cases = sorted(ok, key=lambda r: r.n_samples)[:3] + sorted(ok, key=lambda r: -r.noise)[:3]
    gate = Gate()
    verdicts = {"aa": [], "ab": []}
    for _ in range(200):
        for record in cases:
            s = np.asarray(record.samples_us)
            a, b = rng.choice(s, len(s)), rng.choice(s, len(s))
            verdicts["aa"].append(verdict_for(ratio_interval(a, b, gate.confidence), gate.threshold_pct))
    for _ in range(20):
        for record in cases:
            s = np.asarray(record.samples_us)
            a, b = rng.choice(s, len(s)) * 1.05, rng.choice(s, len(s))
            verdicts["ab"].append(verdict_for(ratio_interval(a, b, gate.confidence), gate.threshold_pct))
    assert verdicts["aa"].count("SLOWER") == 0
    assert verdicts["aa"].count("SAME") / len(verdicts["aa"]) > 0.95
    assert verdicts["ab"].count("SLOWER") / len(verdicts["ab"]) > 0.9


def _synthetic(n: int, center: float, spread: float, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(center * (1 + spread * rng.standard_normal(n)))


def _record(case_id: str, samples: list[float] | None, status: str = "ok", mhz: int = 1980) -> CaseRecord:
    return CaseRecord(id=case_id, impl="triton.x", sweep="s", status=status, message="" if status == "ok" else "boom",
                      samples_us=samples or [], median_us=median(samples) if samples else None,
                      n_samples=len(samples or []),
                      clock={"sm_mhz_min": mhz, "sm_mhz_max": mhz, "max_sm_mhz": 1980})


def _results(records: list[CaseRecord], gpu: str = "NVIDIA H100 80GB HBM3", **env) -> LogContents:
    devices = {"GPU-1": {"index": 0, "name": gpu, "uuid": "GPU-1", "timer": "cupti", "max_sm_mhz": 1980}}
    return LogContents({"spec_name": "s", "device_mode": "cuda", "complete": True, **env}, devices,
                       {r.key: r for r in records})


def test_failed_new_missing_and_exit_precedence():
    base = _synthetic(100, 10.0, 0.01, 1)
    old = _results([_record("a", base), _record("b", base), _record("c", base)])
    new = _results([_record("a", [x * 1.2 for x in base]), _record("b", None, status="fail"),
                    _record("d", base)])
    comparison = compare_results(new, old)
    verdicts = {r.id: r.verdict for r in comparison.rows}
    assert verdicts == {"a": "SLOWER", "b": "FAILED", "c": "MISSING", "d": "NEW"}
    assert [r.id for r in comparison.rows] == ["b", "a", "c", "d"]  # worst first
    assert comparison.exit_code == EXIT_FAILED  # a correctness failure outranks a slowdown
    without_failure = compare_results(_results([_record("a", [x * 1.2 for x in base])]), old)
    assert without_failure.exit_code == EXIT_SLOWER
    assert exit_code([]) == EXIT_FAILED  # nothing compared: unusable input


def test_redrawn_workload_is_not_compared_and_exits_2():
    """Two records of one case whose workload digests differ timed different work (a change to how
    workloads are drawn): REDRAWN, exit 2 until the baseline is re-stored, never a SLOWER or a
    SAME; a record without a digest (written before digests) is compared as before."""
    base = _synthetic(100, 10.0, 0.01, 4)

    def rec(case_id: str, samples: list[float], digest: str | None) -> CaseRecord:
        r = _record(case_id, samples)
        r.workload = digest
        return r

    old = _results([rec("a", base, "aaaaaaaaaaaa"), rec("b", base, "bbbbbbbbbbbb"), rec("c", base, None)])
    new = _results([rec("a", [x * 1.2 for x in base], "aaaaaaaaaaaa"), rec("b", base, "000000000000"),
                    rec("c", base, "cccccccccccc")])
    comparison = compare_results(new, old)
    assert {r.id: r.verdict for r in comparison.rows} == {"a": "SLOWER", "b": "REDRAWN", "c": "SAME"}
    assert "re-store the baseline" in next(r.note for r in comparison.rows if r.id == "b")
    assert comparison.exit_code == EXIT_FAILED  # not 1: exit 1 means SLOWER and nothing else
    only_redrawn = compare_results(_results([rec("b", base, "000000000000")]),
                                   _results([rec("b", base, "bbbbbbbbbbbb")]))
    assert only_redrawn.exit_code == EXIT_FAILED
    assert "failure" in to_junit(only_redrawn)


def test_only_ambiguous_exits_3_and_new_missing_do_not_fail():
    old_s = _synthetic(30, 10.0, 0.05, 2)
    new_s = _synthetic(30, 10.3, 0.05, 3)  # ~3% slower, noisy: the interval straddles the band edge
    comparison = compare_results(_results([_record("a", new_s), _record("n", old_s)]),
                                 _results([_record("a", old_s), _record("m", old_s)]))
    assert {r.id: r.verdict for r in comparison.rows} == {"a": "AMBIGUOUS", "n": "NEW", "m": "MISSING"}
    assert comparison.exit_code == EXIT_AMBIGUOUS


def test_too_few_samples_is_ambiguous_not_a_crash():
    comparison = compare_results(_results([_record("a", [1.0, 1.1, 1.2])]), _results([_record("a", [1.0] * 40)]))
    assert comparison.rows[0].verdict == "AMBIGUOUS" and "no interval" in comparison.rows[0].note


def test_clock_and_knob_warnings():
    s = _synthetic(50, 10.0, 0.01, 4)
    comparison = compare_results(_results([_record("a", s, mhz=1600)], test_slowdown=0.05),
                                 _results([_record("a", s, mhz=1980)]))
    text = " ".join(comparison.warnings)
    assert "SM clocks differ" in text and "TEST slowdown" in text
    assert not compare_results(_results([_record("a", s, mhz=1950)]), _results([_record("a", s)])).warnings


def test_decide_rerun_needs_every_round_beyond_the_band():
    old = _synthetic(200, 10.0, 0.005, 5)
    slow = [_synthetic(200, 10.8, 0.005, 6 + i) for i in range(3)]
    assert decide_rerun("s", "a", "x", slow, old, Gate()).verdict == "SLOWER"
    mixed = slow[:2] + [_synthetic(2000, 10.0, 0.005, 9)]  # one round at the baseline, most samples
    row = decide_rerun("s", "a", "x", mixed, old, Gate())
    assert row.verdict != "SLOWER" and row.reruns == 3 and "rounds" in row.note


# -- reports ---------------------------------------------------------------------------------


def test_markdown_and_junit_are_well_formed():
    base = _synthetic(100, 10.0, 0.01, 1)
    comparison = compare_results(
        _results([_record("a", [x * 1.2 for x in base]), _record("b|x", None, status="error"), _record("c", base)]),
        _results([_record("a", base), _record("b|x", base), _record("c", base)]))
    md = to_markdown(comparison, "new.json", "old.json", Gate())
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 3
    assert all(line.count("|") - line.count("\\|") == table[0].count("|") for line in table)
    assert "**SLOWER**" in md and "exit code 2" in md
    root = ET.fromstring(to_junit(comparison))
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == 3 and root.get("failures") == "2"
    failures = {c.get("name"): c.find("failure").get("type") for c in cases if c.find("failure") is not None}
    assert failures == {"a": "SLOWER", "b|x": "FAILED"}


# -- the command -----------------------------------------------------------------------------


def test_cli_exit_codes_and_reports(h100, tmp_path):
    old = save(h100, tmp_path / "old.json")
    same = invoke("compare", old, old)
    assert same.exit_code == 0, same.output
    assert f"{ok_pairs(h100)} SAME; 0 MISSING, 0 NEW; exit 0" in same.output  # MISSING/NEW always shown
    slower = save(scaled(h100, 1.10), tmp_path / "slower.json")
    md, xml = tmp_path / "out" / "summary.md", tmp_path / "out" / "junit.xml"
    result = invoke("compare", slower, old, "--markdown", md, "--junit", xml)
    assert result.exit_code == 1, result.output
    n = ok_pairs(h100)
    assert f"{n} SLOWER" in md.read_text() and ET.parse(xml).getroot().get("failures") == str(n)
    faster = save(scaled(h100, 0.90), tmp_path / "faster.json")
    assert invoke("compare", faster, old).exit_code == 0
    slight = save(scaled(h100, 1.02), tmp_path / "slight.json")
    # 2% < the spec's 3% band: never SLOWER. A pair whose own noise puts the interval across the
    # band edge is AMBIGUOUS (exit 3; the stored baseline has such pairs, e.g. b4 fp8sr), not SAME.
    gentle = invoke("compare", slight, old, "--markdown", md)
    assert gentle.exit_code in (0, 3), gentle.output
    assert "SLOWER" not in md.read_text()
    assert invoke("compare", slight, old, "--threshold", "1").exit_code == 1
    assert invoke("compare", slight, old, "--threshold", "0").exit_code == 2


def test_cli_refuses_other_gpu_models(h100, tmp_path):
    old = save(h100, tmp_path / "old.json")
    other = copy.deepcopy(h100)
    for device in other.devices.values():
        device["name"] = "NVIDIA H200"
    other_path = save(other, tmp_path / "h200.json")
    refused = invoke("compare", other_path, old)
    assert refused.exit_code == 2
    assert "NVIDIA H200" in refused.output and "--allow-device-mismatch" in refused.output
    allowed = invoke("compare", other_path, old, "--allow-device-mismatch")
    assert allowed.exit_code == 0 and "different GPU models" in allowed.output


def test_cli_bad_input_is_exit_2(tmp_path, h100):
    old = save(h100, tmp_path / "old.json")
    assert invoke("compare", tmp_path / "nope.json", old).exit_code == 2
    (tmp_path / "junk.json").write_text(json.dumps({"schema": "other/1"}))
    result = invoke("compare", tmp_path / "junk.json", old)
    assert result.exit_code == 2 and "schema" in result.output


def test_cli_rerun_without_gpu_is_a_clear_error(h100, tmp_path, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.delenv("SSMBENCH_SWEEP_DEVICE", raising=False)
    old = save(h100, tmp_path / "old.json")
    slower = save(scaled(h100, 1.10), tmp_path / "slower.json")
    result = invoke("compare", slower, old, "--rerun")
    assert result.exit_code == 2 and "--rerun re-measures on a GPU" in result.output


TINY_SPEC = """\
name: tiny
family: mamba2
shape: {nheads: 2, head_dim: 4, dstate: 4, ngroups: 1, d_conv: 4}
impls: [reference.sequential]
axes: {batch: [2], T: [2], state_dtype: [fp32], rounding: [rn], pool: [direct], accept: [{rate: 0.6}],
       window: [T], pdl: [off], l2: [hot]}
measure: {warmup: 1, min_samples: 40, max_samples: 40, max_noise: 0.5, min_time_s: 0, timeout_s: 60}
gate: {threshold_pct: 5}
"""


def test_rerun_and_slowdown_knob_end_to_end_cpu_mode(tmp_path, monkeypatch):
    """Real sweep workers in the CPU test mode: the baseline run, then `compare --rerun` whose
    fresh round runs with the slowdown knob at 100%: the rerun must see it (SLOWER, decided on
    the fresh round) and the round's results must carry the knob."""
    from ssmbench.runs.sweep.options import SweepOptions
    from ssmbench.runs.sweep.run import run_sweep

    monkeypatch.setenv("SSMBENCH_SWEEP_DEVICE", "cpu")
    monkeypatch.delenv(SLOWDOWN_ENV, raising=False)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    from rich.console import Console

    quiet = Console(file=open(tmp_path / "sweep.log", "w"))  # noqa: SIM115
    base = tmp_path / "base.json"
    assert run_sweep(SweepOptions(spec=spec, output=base), console=quiet) == 0
    # NEW looks 10% slower than the baseline on its own samples: AMBIGUOUS or SLOWER -> rerun
    new = save(transformed(load_results(base), lambda s, r: [x * 1.10 for x in s]), tmp_path / "new.json")
    monkeypatch.setenv(SLOWDOWN_ENV, "1.0")
    result = invoke("compare", new, base, "--rerun", "--rerun-rounds", "1", "--spec", spec,
                    "--rerun-dir", tmp_path / "rerun")
    assert result.exit_code == 1, result.output
    assert "rerun x1" in result.output
    fresh = load_results(tmp_path / "rerun" / "round1.json")
    assert fresh.env["test_slowdown"] == 1.0
    (record,) = [r for r in fresh.records.values() if r.status == "ok"]
    assert any("TEST SLOWDOWN" in n for n in record.notes)
    assert median(record.samples_us) > 1.5 * median(next(iter(load_results(base).records.values())).samples_us)


# -- the slowdown knob's parts ------------------------------------------------------------------


def test_slowdown_knob_parsing(monkeypatch):
    monkeypatch.delenv(SLOWDOWN_ENV, raising=False)
    assert slowdown_fraction() is None
    monkeypatch.setenv(SLOWDOWN_ENV, "0.05")
    assert slowdown_fraction() == 0.05
    for bad in ("fast", "0", "-0.1", "2"):
        monkeypatch.setenv(SLOWDOWN_ENV, bad)
        with pytest.raises(UsageError, match=SLOWDOWN_ENV):
            slowdown_fraction()


def test_spin_wait_subtracts_the_launch_cost():
    assert spin_wait_ns(0.05, 100.0, 1.0) == 4000
    assert spin_wait_ns(0.05, 10.0, 1.0) == 0  # one launch already costs more than 5%: no spin


def test_slow_down_corrects_a_misjudged_launch_cost(monkeypatch):
    """Short calibration rounds put the bare launch at +3.3 us where it really adds +1.3 us (seen
    on the H200): the closed loop raises the spin until the chain is 5% slower."""
    import torch

    import ssmbench.measure.slowdown as slowdown
    from ssmbench.impls.base import Chain

    wait = [0]
    monkeypatch.setattr(slowdown, "spin_launch", lambda device: (lambda: None, lambda ns: wait.__setitem__(0, ns)))
    estimate = iter([103.3, 103.3, 103.3])  # the first, open-loop pairs see the launch at +3.3 us

    def span_us(graph) -> float:
        if graph == "plain":
            return 100.0
        first = next(estimate, None)
        return first if first is not None else 100.0 + 1.3 + wait[0] / 1e3

    chain = Chain([lambda: None], ["k"])
    _, _, note = slowdown.slow_down(chain, "plain", lambda c: ("slowed", "graph", ""), span_us, 0.05,
                                    torch.device("cpu"))
    assert abs(1.3 + wait[0] / 1e3 - 5.0) <= 0.5, (wait, note)  # within 10% of +5%
    assert "spin 3.70 us" in note


def test_slow_down_appends_a_named_calibrated_launch():
    import torch

    from ssmbench.impls.base import Chain

    chain = Chain([lambda: None], ["k"])
    spans = iter([100.0, 101.0, 100.0, 150.0, 99.0, 100.0]  # (plain, zero-wait spin) pairs, one outlier
                 + [100.0, 105.0] * 3)  # the closed-loop check: +5 us, on target
    run, mode, note = slow_down(chain, chain, lambda c: (c, "eager", ""), lambda r: next(spans), 0.05,
                                torch.device("cpu"))
    assert chain.kernel_names == ["k", SPIN_KERNEL] and len(chain.launches) == 2
    assert "spin 4.00 us" in note and mode == "eager"
    import time

    t0 = time.perf_counter_ns()
    run()
    assert time.perf_counter_ns() - t0 >= 4000
    assert not math.isnan(float(note.split("span ")[1].split()[0]))
