"""`ssmbench sweep` never loses results: a torn log line is cut before appending, no bad option
touches an earlier run's files, a plain re-run does not overwrite an unfinished run, SIGTERM and
SIGHUP stop like Ctrl-C (final JSON with ``complete: false``), worker directories never outlive
a run (a parent killed with SIGKILL takes its workers along; the next sweep removes its
directory), and resume re-measures a record made with other parameters."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from rich.console import Console
from test_sweep_cli import cpu_mode, tiny_spec  # noqa: F401 (a fixture)
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.impls.registry import PLUGINS_ENV
from ssmbench.output.results import CaseRecord, ResultsLog, case_params, log_path, read_log, write_results
from ssmbench.runs.sweep.options import SweepOptions, unfinished_run
from ssmbench.runs.sweep.plan import make_plan
from ssmbench.runs.sweep.pool import (
    WORKER_DIR_PREFIX,
    Interrupted,
    StopSignals,
    WorkerPool,
    interrupt_exit_code,
    pid_alive,
    remove_stale_worker_dirs,
)
from ssmbench.runs.sweep.run import DEVICE_ENV, run_sweep
from ssmbench.spec.load import load_sweep_file

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def rec(case_id: str = "c1", impl: str = "reference.sequential", **params) -> CaseRecord:
    return CaseRecord(id=case_id, impl=impl, sweep="tiny", status="ok", params=params, median_us=1.0)


def line(record: CaseRecord) -> str:
    return json.dumps({"type": "case", **record.to_dict()})


# -- the log -----------------------------------------------------------------------------------


def test_a_torn_last_line_is_cut_before_appending(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    whole = line(rec("c1"))
    log_path(out).write_text(whole + "\n" + whole[:40])
    log = ResultsLog(out, resume=True)
    assert "torn" in log.repaired
    log.case(rec("c2"))
    log.close()
    assert log_path(out).read_text() == whole + "\n" + line(rec("c2")) + "\n"
    assert set(k[1] for k in read_log(log_path(out)).records) == {"c1", "c2"}


def test_a_whole_last_line_without_its_newline_is_kept(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    log_path(out).write_text(line(rec("c1")))
    log = ResultsLog(out, resume=True)
    log.case(rec("c2"))
    log.close()
    assert set(k[1] for k in read_log(log_path(out)).records) == {"c1", "c2"}


# -- nothing is touched before the plan is known -------------------------------------------------


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


@pytest.mark.parametrize("args, message", [
    (["--impl", "reference.nope"], "unknown"),
    (["--filter", "batch=999"], "batch values here: 2"),
    (["--filter", "case=zzz*"], "matches no case"),
    (["--impl", "triton.gdn"], "no sweep"),
    (["--shard", "3/2"], "0 <= i < n"),
    (["--shard", "0/0"], "0 <= i < n"),
    (["--shard", "0/2/3"], "expected i/n"),
    (["--gpus", "a"], "comma-separated"),
    (["--gpus", "-1"], ">= 0"),
    (["--resume", "--fresh"], "contradict"),
    (["--markdown", "{tmp}"], "is a directory"),
    (["--markdown", "{tmp}/r.json"], "results file"),
])
@pytest.mark.parametrize("mode", [[], ["--resume"], ["--fresh"]])
def test_bad_options_leave_earlier_files_byte_identical(tmp_path: Path, cpu_mode, args, message,  # noqa: F811
                                                        mode) -> None:
    spec = tiny_spec(tmp_path, ["reference.sequential"])
    out = tmp_path / "r.json"
    write_results(out, {"spec_name": "tiny", "complete": True}, [], [rec("c1")])
    log_path(out).write_text('{"type": "env", "spec_name": "tiny"}\n' + line(rec("c1"))[:30])  # torn
    before = snapshot(tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(app, ["sweep", str(spec), "-o", str(out), *mode, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output or "contradict" in result.output, result.output
    assert "Traceback" not in result.output
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("output, message", [
    ("{tmp}", "is a directory"),
    ("{tmp}/new/", "is a directory"),
    ("{tmp}/spec.yaml/r.json", "is a file, not a directory"),
    ("/proc/ssmbench-r.json", "not writable"),
    ("", "empty path"),
])
def test_output_must_be_a_writable_file_path(tmp_path: Path, cpu_mode, output: str, message: str) -> None:  # noqa: F811
    spec = tiny_spec(tmp_path, ["reference.sequential", "test.hang"])  # measuring would hang: the refusal comes first
    (tmp_path / "spec.yaml").write_text("x")
    result = CliRunner().invoke(app, ["sweep", str(spec), "-o", output.replace("{tmp}", str(tmp_path))])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "new").exists()


def test_a_plain_rerun_refuses_to_overwrite_an_unfinished_run(tmp_path: Path, cpu_mode) -> None:  # noqa: F811
    spec = tiny_spec(tmp_path, ["reference.sequential", "test.hang"])
    out = tmp_path / "r.json"
    log_path(out).write_text('{"type": "env", "spec_name": "tiny", "started": "1"}\n' + line(rec()) + "\n")
    assert "never wrote" in unfinished_run(out)
    write_results(out, {"spec_name": "tiny", "started": "1", "complete": False}, [], [rec()])
    assert "complete: false" in unfinished_run(out)
    before = snapshot(tmp_path)
    result = CliRunner().invoke(app, ["sweep", str(spec), "-o", str(out)])
    assert result.exit_code == 2 and "--resume" in result.output and "--fresh" in result.output
    assert snapshot(tmp_path) == before
    write_results(out, {"spec_name": "tiny", "started": "1", "complete": True}, [], [rec()])
    assert unfinished_run(out) is None  # a finished run may be replaced (the nightly case)
    with log_path(out).open("a") as f:  # ... unless a later run appended to its log and died
        f.write('{"type": "env", "spec_name": "tiny", "started": "2"}\n' + line(rec("c2")) + "\n")
    assert "later run" in unfinished_run(out)
    out.write_text("not results")
    assert "not a finished ssmbench results file" in unfinished_run(out)


def test_resume_refuses_a_log_of_another_spec(tmp_path: Path, cpu_mode) -> None:  # noqa: F811
    spec = tiny_spec(tmp_path, ["reference.sequential", "test.hang"])
    out = tmp_path / "r.json"
    log_path(out).write_text('{"type": "env", "spec_name": "other", "spec": "o.yaml"}\n' + line(rec()) + "\n")
    before = snapshot(tmp_path)
    result = CliRunner().invoke(app, ["sweep", str(spec), "-o", str(out), "--resume"])
    assert result.exit_code == 2 and "'other'" in result.output and "'tiny'" in result.output
    assert snapshot(tmp_path) == before


def test_resume_counts_a_record_done_only_with_the_same_parameters(tmp_path: Path) -> None:
    sweep_file = load_sweep_file(tiny_spec(tmp_path, ["reference.sequential", "reference.intermediate"]))
    fresh = make_plan(sweep_file, [], {}, None, {})
    task = fresh.tasks[0]
    same = CaseRecord(id=task.case.id, impl="reference.sequential", sweep="tiny", status="ok",
                      params=json.loads(json.dumps(case_params(task.case))))
    other = CaseRecord(id=task.case.id, impl="reference.intermediate", sweep="tiny", status="ok",
                       params={**same.params, "seed": 12345})
    plan = make_plan(sweep_file, [], {}, None, {same.key: same, other.key: other})
    assert plan.reused == 1 and plan.stale == {other.key} and plan.tasks[0].impls == ["reference.intermediate"]


# -- signals, interrupts and worker directories --------------------------------------------------


def test_stop_signals_become_interrupts_with_their_exit_codes() -> None:
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.05)
        with pytest.raises(Interrupted) as caught:
            stop.poll()
    assert interrupt_exit_code(caught.value) == 129
    assert interrupt_exit_code(Interrupted(signal.SIGTERM)) == 143
    assert interrupt_exit_code(KeyboardInterrupt()) == 130
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL or signal.getsignal(signal.SIGHUP) != stop._note


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch) -> Path:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


@pytest.mark.parametrize("raised, code", [(KeyboardInterrupt(), 130), (Interrupted(signal.SIGTERM), 143),
                                          (RuntimeError("bug"), None)])
def test_every_way_out_removes_the_worker_dir_and_keeps_results(tmp_path: Path, private_tmp: Path,
                                                                cpu_mode, monkeypatch, raised, code) -> None:  # noqa: F811
    def run(self, tasks) -> None:
        assert list(private_tmp.glob(WORKER_DIR_PREFIX + f"{os.getpid()}-*"))
        raise raised

    monkeypatch.setattr(WorkerPool, "run", run)
    out = tmp_path / "r.json"
    options = SweepOptions(spec=tiny_spec(tmp_path, ["reference.sequential"]), output=out)
    err = io.StringIO()
    if code is None:
        with pytest.raises(RuntimeError):
            run_sweep(options, Console(file=io.StringIO()), Console(file=err))
    else:
        assert run_sweep(options, Console(file=io.StringIO()), Console(file=err)) == code
        assert json.loads(out.read_text())["env"]["complete"] is False
        assert "--resume" in err.getvalue()
    assert not list(private_tmp.iterdir())


def test_stale_worker_dirs_of_dead_parents_are_removed(private_tmp: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    (private_tmp / f"{WORKER_DIR_PREFIX}{dead.pid}-abc").mkdir()
    alive = private_tmp / f"{WORKER_DIR_PREFIX}{os.getppid()}-abc"
    alive.mkdir()
    remove_stale_worker_dirs()
    assert [p.name for p in private_tmp.iterdir()] == [alive.name]


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def wait_for(predicate, timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def start_sweep(spec: Path, out: Path, tmp: Path) -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": str(tmp), DEVICE_ENV: "cpu", PLUGINS_ENV: "test_sweep_cli",
           "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "ssmbench", "sweep", str(spec), "-o", str(out)], env=env,
                            cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")
def test_kill9_takes_the_workers_along_and_sigterm_stops_like_ctrl_c(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    spec = tiny_spec(tmp_path, ["reference.sequential", "test.hang"])

    # kill -9 the parent while its worker hangs: the worker dies with it, its directory stays
    first = start_sweep(spec, tmp_path / "a.json", tmp)
    assert wait_for(lambda: "reference.sequential" in (log_path(tmp_path / "a.json").read_text()
                                                       if log_path(tmp_path / "a.json").exists() else "")), \
        first.communicate(timeout=5)
    time.sleep(1.0)  # the worker is in test.hang's build now (asleep, deaf to its broken pipe)
    workers = [c for c in children(first.pid) if "resource_tracker" not in Path(f"/proc/{c}/cmdline").read_text()]
    assert workers and list(tmp.glob(WORKER_DIR_PREFIX + f"{first.pid}-*"))
    first.kill()
    first.communicate(timeout=30)
    assert wait_for(lambda: not any(pid_alive(w) for w in workers), 15), "a worker outlived its parent"
    assert list(tmp.glob(WORKER_DIR_PREFIX + f"{first.pid}-*"))

    # the next sweep removes that directory; SIGTERM stops it like Ctrl-C
    out = tmp_path / "b.json"
    second = start_sweep(spec, out, tmp)
    assert wait_for(lambda: "reference.sequential" in (log_path(out).read_text() if log_path(out).exists()
                                                       else "")), second.communicate(timeout=5)
    assert not list(tmp.glob(WORKER_DIR_PREFIX + f"{first.pid}-*"))
    second.send_signal(signal.SIGTERM)
    stdout, stderr = second.communicate(timeout=60)
    assert second.returncode == 143, stdout + stderr
    assert "interrupted (SIGTERM)" in stderr and "--resume" in stderr and "Traceback" not in stderr
    data = json.loads(out.read_text())
    assert data["env"]["complete"] is False
    assert [(c["impl"], c["status"]) for c in data["cases"]] == [("reference.sequential", "ok")]
    assert not list(tmp.glob(WORKER_DIR_PREFIX + "*"))
    assert "complete: false" in unfinished_run(out)  # a plain re-run would now refuse


@pytest.mark.parametrize("mode", [[], ["--resume"], ["--fresh"]])
def test_a_bad_spec_leaves_earlier_files_byte_identical(tmp_path: Path, cpu_mode, mode) -> None:  # noqa: F811
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: tiny\nfamily: mamba3\n")
    out = tmp_path / "r.json"
    write_results(out, {"spec_name": "tiny", "complete": True}, [], [rec("c1")])
    log_path(out).write_text(line(rec("c1"))[:30])
    before = snapshot(tmp_path)
    for path in (spec, tmp_path / "missing.yaml", tmp_path):
        result = CliRunner().invoke(app, ["sweep", str(path), "-o", str(out), *mode])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert snapshot(tmp_path) == before


def test_a_workers_invalid_record_costs_only_its_pair(tmp_path: Path) -> None:
    """A result message the readers' validation refuses (here a 0 us sample) becomes an ``error``
    record for that pair, not an exception that stops the sweep."""
    from ssmbench.measure.runner import Task, WorkerConfig
    from ssmbench.output.results import case_params
    from ssmbench.spec.expand import expand

    case = expand(load_sweep_file(tiny_spec(tmp_path, ["reference.sequential"])).sweeps[0]).cases[0]
    got: list[CaseRecord] = []
    pool = WorkerPool([WorkerConfig(device="cpu", gpu_index=0)], tmp_path, lambda info: None,
                               got.append, lambda task, impl, phase: None)
    slot = pool.slots[0]
    slot.task, slot.pending = Task(0, case.sweep, case, ["reference.sequential"], {}), ["reference.sequential"]
    bad = {"id": case.id, "impl": "reference.sequential", "sweep": case.sweep, "status": "ok",
           "params": case_params(case), "samples_us": [1.0, 0.0], "median_us": 0.5}
    pool._handle(slot, ("result", bad))
    assert len(got) == 1 and got[0].status == "error" and "invalid record" in got[0].message
    assert slot.pending == []  # recorded: not recorded again as lost if the worker dies next
