"""`ssmbench sweep` on a CPU: the no-GPU exit, option parsing, planning (filters, shards, resume),
and worker isolation proven with planted faults in real worker processes.

The worker tests use the CPU test mode (``SSMBENCH_SWEEP_DEVICE=cpu``: wall-clock "times") and
plant faulty impls through ``SSMBENCH_PLUGINS=test_sweep_cli``: each worker imports this module,
which registers them. A crash, a hang in build, a hang while timing, a CUDA fault and a plain
exception must each cost only their own (case, impl) pair.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.errors import UsageError
from ssmbench.impls.base import Chain, register
from ssmbench.impls.reference import SequentialReference
from ssmbench.impls.registry import PLUGINS_ENV, registry
from ssmbench.output.results import CaseRecord, case_params, load_results, log_path
from ssmbench.runs.sweep.options import SweepOptions, parse_filters, parse_gpus, parse_shard, unfinished_run
from ssmbench.runs.sweep.plan import make_plan, shard_of
from ssmbench.runs.sweep.pool import exit_reason, log_tail
from ssmbench.runs.sweep.run import (
    DEVICE_ENV,
    GIT_SHA_ENV,
    NO_GPU_MESSAGE,
    commit_of_checkout,
    run_sweep,
    sweep_device,
    worker_configs,
)
from ssmbench.spec.load import load_sweep_file

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "sweeps" / "smoke.yaml"
HEADLINE = ROOT / "sweeps" / "nemotron3-super-tp8.yaml"


# -- planted faults (registered here, and in every worker through SSMBENCH_PLUGINS) -----------


class Planted(SequentialReference):
    """The sequential reference with one planted fault."""

    def __init__(self, fault: str) -> None:
        self.fault = fault
        self.name = f"test.{fault}"

    def build(self, case, workload) -> Chain:
        if self.fault == "crash":
            print("planted crash: segfault-like exit", file=sys.stderr, flush=True)
            os._exit(139)
        if self.fault == "hang":
            time.sleep(600)
        if self.fault == "cudafault":
            raise RuntimeError("CUDA error: an illegal memory access was encountered (planted)")
        if self.fault == "raise":
            raise ValueError("planted bug")
        if self.fault == "oom" and multiprocessing.current_process().name.startswith("SpawnPoolWorker"):
            # out of memory in the compile pre-pass's pool only (its processes share the GPU)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (planted)")
        chain = super().build(case, workload)
        if self.fault != "hang_timing":
            return chain
        calls = [0]

        def run() -> None:  # hang_timing: fine for the gate and warm-up, stuck once timing starts
            calls[0] += 1
            if calls[0] > 2:
                time.sleep(600)
            chain()

        return Chain([run], chain.kernel_names, chain.outputs)


FAULTS = ("crash", "hang", "cudafault", "raise", "hang_timing", "oom")
for _fault in FAULTS:
    if f"test.{_fault}" not in registry():
        register(Planted(_fault))

TINY = """\
name: tiny
family: mamba2
shape: {{nheads: 2, head_dim: 4, dstate: 8, ngroups: 1, d_conv: 4}}
act_dtype: bf16
impls: [{impls}]
baseline: reference.sequential
axes: {{batch: {batch}, T: [2], state_dtype: [fp32], window: [T], accept: [{{rate: 0.6}}], pdl: [off],
       l2: [hot]}}
measure: {{warmup: 1, min_samples: 5, max_samples: 8, max_noise: 0.5, min_time_s: 0, timeout_s: 1}}
"""


def tiny_spec(tmp_path: Path, impls: list[str], batch: str = "[2]") -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.format(impls=", ".join(impls), batch=batch))
    return path


@pytest.fixture
def cpu_mode(monkeypatch):
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    monkeypatch.setenv(PLUGINS_ENV, __name__)


# -- no GPU, bad options -----------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_sweep_exits_2_and_points_to_check(monkeypatch) -> None:
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    result = CliRunner().invoke(app, ["sweep", str(SMOKE)])
    assert result.exit_code == 2
    assert "no CUDA GPU" in result.output and "ssmbench check" in result.output
    assert "Traceback" not in result.output
    with pytest.raises(UsageError, match="ssmbench check"):
        sweep_device()
    assert "ssmbench check SPEC" in NO_GPU_MESSAGE


@pytest.mark.parametrize("args, message", [
    (["--gpus", "0,x"], "comma-separated"),
    (["--gpus", "1,1"], "distinct"),
    (["--shard", "4/4"], "0 <= i < n"),
    (["--shard", "two"], "expected i/n"),
    (["--filter", "bach=1"], "did you mean 'batch'"),
    (["--filter", "batch"], "expected key=value"),
])
def test_bad_options_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["sweep", str(SMOKE), *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_option_parsing() -> None:
    assert parse_gpus(None) == [0] and parse_gpus("0,2,3") == [0, 2, 3]
    assert parse_shard(None) is None and parse_shard("1/3") == (1, 3)
    assert parse_filters(["batch=1,64", "batch=8", "format=fp16sr"]) == {"batch": {"1", "8", "64"},
                                                                          "format": {"fp16sr"}}


def test_worker_configs_map_gpus_through_cuda_visible_devices(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    configs = worker_configs("cuda", [0, 2], 300, 60, [])
    assert [(c.gpu_index, c.visible_devices) for c in configs] == [(0, "4"), (2, "6")]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert [c.visible_devices for c in worker_configs("cuda", [1], 300, 60, [])] == ["1"]
    with pytest.raises(UsageError, match="torch sees 4"):
        worker_configs("cuda", [4], 300, 60, [])


# -- planning ----------------------------------------------------------------------------------


def test_the_commit_comes_from_git_unless_ssmbench_git_sha_names_it(monkeypatch) -> None:
    """A copy of a checkout with a stale .git (the GPU machines' copies) records the commit it is told."""
    answers = {("rev-parse", "HEAD"): "a" * 40, ("status", "--porcelain", "--untracked-files=no"): " M x.py"}
    git = lambda *args: answers[args]  # noqa: E731
    monkeypatch.delenv(GIT_SHA_ENV, raising=False)
    assert commit_of_checkout(git) == {"git_sha": "a" * 40, "git_dirty": True}
    assert commit_of_checkout(lambda *args: None) == {"git_sha": None, "git_dirty": None}
    monkeypatch.setenv(GIT_SHA_ENV, " 0dfdc8f ")
    assert commit_of_checkout(git) == {"git_sha": "0dfdc8f", "git_dirty": None, "git_sha_from": GIT_SHA_ENV}


def test_shards_are_stable_and_partition_the_cases() -> None:
    assert shard_of("H16P64N128G1-b64-T6-fp32-pool-w6-hist-pdl-realistic", 4) == 0
    assert shard_of("H16P64N128G1-b1-T6-fp8sr-pool-w16-hist-pdl-realistic", 7) == 6
    sweep_file = load_sweep_file(HEADLINE)
    full = make_plan(sweep_file, [], {}, None, {})
    shards = [make_plan(sweep_file, [], {}, (i, 3), {}) for i in range(3)]
    assert sorted(k for s in shards for k in s.order) == sorted(full.order)  # disjoint and complete
    assert all(s.order for s in shards)
    again = make_plan(sweep_file, [], {}, (1, 3), {})
    assert again.order == shards[1].order
    for s in shards:  # every impl of a case lands in the same shard
        assert {k[1] for k in s.order}.isdisjoint({k[1] for o in shards if o is not s for k in o.order})


PLAN_SPEC = """\
name: plan
family: mamba2
model: nemotron3-super
tp: 8
impls: [reference.intermediate, reference.replay]
baseline: reference.intermediate
axes: {batch: [1, 8, 64], T: [6], state_dtype: [fp32, fp16, int8], rounding: [rn, sr], window: [T, 16],
       accept: [histogram]}
exclude: [{state_dtype: fp16, rounding: rn}, {state_dtype: int8, rounding: rn}]
"""


def test_plan_groups_impls_per_case_with_skips_filters_and_done(tmp_path: Path) -> None:
    (tmp_path / "plan.yaml").write_text(PLAN_SPEC)
    sweep_file = load_sweep_file(tmp_path / "plan.yaml")
    plan = make_plan(sweep_file, [], parse_filters(["batch=64", "format=fp32,fp16sr"]), None, {})
    assert {t.case.batch for t in plan.tasks} == {64}
    assert {t.case.state_dtype for t in plan.tasks} == {"fp32", "fp16"}
    assert len(plan.order) == 2 * 2 * 2  # 2 formats x 2 windows x 2 impls
    skip = [r for r in plan.skips if r.impl == "reference.intermediate"]
    assert len(skip) == 2 and all("window does not apply" in r.message for r in skip)
    assert plan.pairs == len(plan.order) - len(plan.skips) == 6
    assert plan.baselines == {"plan": "reference.intermediate"}
    w6 = next(t for t in plan.tasks if t.case.window == 6 and t.case.state_dtype == "fp32")
    assert w6.impls == ["reference.intermediate", "reference.replay"]  # one task, workload built once
    first = plan.tasks[0]
    assert plan.order[0] == (first.sweep, first.case.id, first.impls[0])
    done = {plan.order[0]: CaseRecord(id=first.case.id, impl=first.impls[0], sweep=first.sweep, status="ok",
                                      params=case_params(first.case))}
    resumed = make_plan(sweep_file, [], parse_filters(["batch=64", "format=fp32,fp16sr"]), None, done)
    assert resumed.pairs == 5 and resumed.order == plan.order
    filters = parse_filters(["case=*-b1-*", "window=16"])
    only = make_plan(sweep_file, ["reference.replay"], filters, None, {})
    assert {t.case.id for t in only.tasks} == {k[1] for k in only.order} and len(only.order) == 3
    with pytest.raises(UsageError, match="unknown"):
        make_plan(sweep_file, ["reference.nope"], {}, None, {})


def test_exit_reasons_and_log_tail(tmp_path: Path) -> None:
    assert exit_reason(-11) == "worker died (SIGSEGV)"
    assert exit_reason(-9) == "worker died (SIGKILL)"
    assert exit_reason(3) == "worker exited after a CUDA fault"
    assert exit_reason(1) == "worker exited with code 1"
    log = tmp_path / "w.log"
    log.write_text("a\n\nb\nc\nCUDA error: an illegal memory access was encountered\n")
    assert log_tail(str(log)) == "b | c | CUDA error: an illegal memory access was encountered"
    assert log_tail(str(tmp_path / "missing.log")) == ""


# -- real workers (CPU test mode) --------------------------------------------------------------


def test_sweep_end_to_end_then_resume(tmp_path: Path, cpu_mode, monkeypatch) -> None:
    import ssmbench.output.report

    monkeypatch.setitem(ssmbench.output.report.PLAIN_INTERVAL_S, "sweep", 0.0)  # a progress line per pair
    spec = tiny_spec(tmp_path, ["reference.sequential", "reference.intermediate"], batch="[1, 2]")
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    runner = CliRunner()
    result = runner.invoke(app, ["sweep", str(spec), "-o", str(out), "--markdown", str(md)])
    assert result.exit_code == 0, result.output
    assert "sweep: 1/4 pairs, 0 failed, 0 errors, " in result.output  # not a terminal: plain lines
    assert unfinished_run(out) is None  # finished: a plain re-run may replace it
    data = json.loads(out.read_text())
    assert data["schema"] == "ssmbench.results/1" and data["env"]["complete"] is True
    assert data["env"]["gpus"][0]["uuid"] == "cpu" and data["env"]["timer"] == "wall-cpu"
    assert [(c["impl"], c["params"]["batch"], c["status"]) for c in data["cases"]] == [
        ("reference.sequential", 1, "ok"), ("reference.intermediate", 1, "ok"),
        ("reference.sequential", 2, "ok"), ("reference.intermediate", 2, "ok")]
    assert all(len(c["samples_us"]) >= 5 for c in data["cases"])
    assert "| batch | reference.sequential (baseline) | reference.intermediate |" in md.read_text()
    assert "4 ok, 0 fail, 0 error, 0 skip" in result.output
    lines_before = log_path(out).read_text().count('"type": "case"')

    again = runner.invoke(app, ["sweep", str(spec), "-o", str(out), "--resume"])
    assert again.exit_code == 0, again.output
    assert "resuming: 4 pair(s) already done" in again.output
    assert log_path(out).read_text().count('"type": "case"') == lines_before  # nothing re-measured
    resumed = json.loads(out.read_text())
    assert [c["samples_us"] for c in resumed["cases"]] == [c["samples_us"] for c in data["cases"]]

    # a record measured with other parameters (here: another seed) is not reused
    log = log_path(out)
    lines = log.read_text().splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if '"type": "case"' in line)
    record = json.loads(lines[first])
    record["params"]["seed"] = 987654
    lines[first] = json.dumps(record) + "\n"
    log.write_text("".join(lines) + lines[first][:25])  # and a torn last line, as a kill leaves
    stale = runner.invoke(app, ["sweep", str(spec), "-o", str(out), "--resume"])
    assert stale.exit_code == 0, stale.output
    assert "1 record(s) in the log were measured with other parameters and are re-measured" in stale.output
    assert "cut a torn last line" in stale.output
    assert log.read_text().count('"type": "case"') == lines_before + 1
    assert all(c["params"]["seed"] != 987654 for c in json.loads(out.read_text())["cases"])


def test_faults_cost_only_their_own_pair(tmp_path: Path, cpu_mode) -> None:
    impls = ["reference.sequential", "test.crash", "test.hang", "test.cudafault", "test.raise",
             "test.hang_timing", "reference.intermediate"]
    out = tmp_path / "r.json"
    options = SweepOptions(spec=tiny_spec(tmp_path, impls), output=out, gpus="0,1", setup_timeout_s=4.0,
                           grace_s=1.0, start_timeout_s=120.0)
    console = Console(file=io.StringIO(), width=200)
    start = time.monotonic()
    code = run_sweep(options, console)
    assert time.monotonic() - start < 60
    assert code == 1  # errors were recorded
    records = {r.impl: r for r in load_results(out).records.values()}
    assert set(records) == set(impls)
    assert records["reference.sequential"].status == "ok"
    assert records["reference.intermediate"].status == "ok"  # measured by a fresh worker after all that
    crash = records["test.crash"]
    assert crash.status == "error" and "worker exited with code 139" in crash.message
    assert "planted crash" in crash.message  # the tail of the worker's log says why
    hang = records["test.hang"]
    assert hang.status == "error" and "timed out" in hang.message and "'build'" in hang.message
    fault = records["test.cudafault"]
    assert fault.status == "error" and "illegal memory access" in fault.message
    assert records["test.raise"].status == "error" and "planted bug" in records["test.raise"].message
    stuck = records["test.hang_timing"]
    assert stuck.status == "error" and "timed out" in stuck.message and "'time'" in stuck.message
    assert all(r.params["batch"] == 2 for r in records.values())
