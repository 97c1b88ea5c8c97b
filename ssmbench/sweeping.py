"""`ssmbench sweep`: plan the (case, impl) pairs of a spec, measure them in worker processes,
log every result as it comes, and end with the results JSON and pivoted tables.

Isolation: each worker is a spawned process owning one GPU (``--gpus 0,1`` starts one per GPU,
pulling cases from one queue). A CUDA fault, an OOM or a hang kills only that worker: the pair
it was on is recorded ``error`` with the reason (exit signal or deadline, plus the tail of the
worker's log), the case's remaining impls go back to the queue, and a fresh worker takes over.
Workers live across cases, so Triton kernels compiled for one case are reused by the next.

Deadlines come from the worker's ``phase`` messages: ``setup_timeout_s`` for workload / build
(compile) / verify / capture, the spec's ``measure.timeout_s`` plus ``grace_s`` for timing.

Two environment variables exist for testing and fault injection (documented in
docs/measurement.md): ``SSMBENCH_PLUGINS`` (modules imported first, in the parent and every
worker, that register extra impls) and ``SSMBENCH_SWEEP_DEVICE=cpu`` (a CPU test mode: wall-clock
"times", no graphs, no L2 control; never a real measurement).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import itertools
import json
import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import wait as mp_wait
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from ssmbench.errors import UsageError
from ssmbench.measure.runner import Task, WorkerConfig, describe_exception
from ssmbench.measure.slowdown import slowdown_fraction
from ssmbench.registry import PLUGINS_ENV, import_plugins, plugins_from_env  # noqa: F401 (PLUGINS_ENV re-exported)
from ssmbench.results import (
    DONE_STATUSES,
    CaseRecord,
    LogContents,
    ResultsLog,
    case_params,
    load_results,
    log_path,
    read_log,
    record_key,
    write_results,
)

DEVICE_ENV = "SSMBENCH_SWEEP_DEVICE"
NO_GPU_MESSAGE = (
    "no CUDA GPU: `ssmbench sweep` times kernels on a GPU and torch sees none here. "
    "To verify the impls against the references on this machine, run `ssmbench check SPEC`."
)
FILTER_KEYS = ("sweep", "case", "batch", "T", "state_dtype", "rounding", "format", "pool", "accept", "window",
               "pdl", "l2")
MAX_START_FAILURES = 2
"""A GPU whose worker fails to start this many times in a row gets no more workers."""
WORKER_DIR_PREFIX = "ssmbench-workers-"
"""Worker logs live in ``<tmp>/ssmbench-workers-<parent pid>-<random>``; the pid lets a later
sweep remove the directory of a parent that was killed (-9) before it could."""


# -- options ---------------------------------------------------------------------------------


@dataclass
class SweepOptions:
    spec: Path
    output: Path | str | None = None
    """A file path; a str keeps a trailing ``/`` (a directory, refused) that a Path would drop."""
    impls: list[str] = field(default_factory=list)
    filters: list[str] = field(default_factory=list)
    gpus: str | None = None
    shard: str | None = None
    resume: bool = False
    fresh: bool = False
    """Start over: replace the results at ``output`` and its log even when that run is unfinished."""
    markdown: Path | str | None = None
    setup_timeout_s: float = 300.0
    grace_s: float = 60.0
    start_timeout_s: float = 600.0
    argv: list[str] = field(default_factory=list)


def parse_gpus(text: str | None) -> list[int]:
    """``0,1,3`` -> [0, 1, 3]; None -> [0]."""
    if text is None or not text.strip():
        return [0]
    try:
        gpus = [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--gpus {text!r}: a comma-separated list of GPU indices, e.g. 0,1") from None
    if any(g < 0 for g in gpus) or len(set(gpus)) != len(gpus):
        raise UsageError(f"--gpus {text!r}: indices must be distinct and >= 0")
    return gpus


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``i/n`` (0 <= i < n) -> (i, n)."""
    if text is None:
        return None
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise UsageError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise UsageError(f"--shard {text!r}: need n >= 1 and 0 <= i < n (shards are numbered from 0)")
    return i, n


def shard_of(case_id: str, n: int) -> int:
    """A stable shard for a case id (every impl of a case lands in the same shard, so the
    baseline and the impls it is compared with stay together)."""
    return int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:8], "big") % n


def parse_filters(items: list[str]) -> dict[str, set[str]]:
    """``key=value[,value...]`` items -> {key: accepted values}. ``case`` takes glob patterns."""
    filters: dict[str, set[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise UsageError(f"--filter {item!r}: expected key=value (values comma-separated)")
        if key not in FILTER_KEYS:
            import difflib

            hint = difflib.get_close_matches(key, FILTER_KEYS, n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            allowed = ", ".join(FILTER_KEYS)
            raise UsageError(f"--filter {item!r}: unknown key{did_you_mean}; allowed: {allowed}")
        filters.setdefault(key, set()).update(v.strip() for v in value.split(","))
    return filters


def check_output_path(raw: Path | str, flag: str) -> Path:
    """A path the command will write a file to, checked before anything is measured: not a
    directory (nor spelled like one), its parent a writable directory (or creatable under
    one), and writable itself when it exists. No file or directory is left behind."""
    text = str(raw)
    if not text.strip():
        raise UsageError(f"{flag}: an empty path; give a file path")
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        raise UsageError(f"{flag} {text}: is a directory; give a file path, e.g. {Path(text) / 'results.json'}")
    path = Path(text)
    if path.exists() and not path.is_file():
        raise UsageError(f"{flag} {text}: exists and is not a regular file")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"{flag} {text}: {ancestor} is a file, not a directory")
    if not can_create_in(ancestor) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{flag} {text}: not writable here")
    return path


def can_create_in(directory: Path) -> bool:
    """Whether a file can be created in ``directory``, found by trying (permission bits say
    nothing for root, nor about a read-only mount or /proc); the probe is removed at once."""
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".ssmbench-probe-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


def load_spec(path: Path) -> Any:
    """The spec, validated against the registered impls; an unreadable file is a usage error."""
    from ssmbench.registry import registry
    from ssmbench.spec import load_sweep_file

    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path}: is a directory; give a sweep spec file (YAML)")
    try:
        return load_sweep_file(path, impl_names=list(registry()))
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a text file (a sweep spec is YAML)") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None


def matches(sweep_name: str, case: Any, filters: dict[str, set[str]]) -> bool:
    if not filters:
        return True
    params = case_params(case)
    for key, wanted in filters.items():
        if key == "case":
            if not any(fnmatch.fnmatchcase(case.id, p) for p in wanted):
                return False
        elif key == "sweep":
            if sweep_name not in wanted:
                return False
        elif str(params[key]) not in wanted:
            return False
    return True


# -- the plan --------------------------------------------------------------------------------


@dataclass
class Plan:
    tasks: list[Task]
    skips: list[CaseRecord]
    order: list[tuple[str, str, str]]
    """Every planned (sweep, case id, impl), skips included, in spec order."""
    baselines: dict[str, str | None]
    pairs: int
    """(case, impl) pairs to measure."""
    reused: int = 0
    """Planned pairs an earlier run (``--resume``) already did, with these parameters."""
    stale: set[tuple[str, str, str]] = field(default_factory=set)
    """Planned pairs whose earlier record was measured with other parameters: measured again."""


def same_params(record: CaseRecord, case: Any) -> bool:
    """Whether an earlier record measured this very workload: its whole parameter dict (shape,
    acceptance law, seed, options...) equals the case's, compared as the log stores it (JSON)."""
    return record.params == json.loads(json.dumps(case_params(case)))


def make_plan(sweep_file: Any, impl_names: list[str], filters: dict[str, set[str]],
              shard: tuple[int, int] | None,
              done: Mapping[tuple[str, str, str], CaseRecord] | set[tuple[str, str, str]]) -> Plan:
    """Which pairs run (grouped per case, so a case's workload is built once), which skip and why.
    ``done``: an earlier run's records (``--resume``); one counts as done only when its status is
    final and its parameters are the case's. (A set of keys counts as done as it is.)"""
    from ssmbench.expand import expand
    from ssmbench.measure.stopping import StopRule
    from ssmbench.planning import impl_plan
    from ssmbench.registry import registry

    impls = registry()
    unknown = [n for n in impl_names if n not in impls]
    if unknown:
        raise UsageError(f"--impl {', '.join(unknown)}: unknown; allowed: {', '.join(sorted(impls))}")
    plan = Plan([], [], [], {}, 0)
    task_ids = itertools.count()
    for sweep in sweep_file.sweeps:
        plan.baselines[sweep.name] = sweep.spec.baseline
        names = [n for n in sweep.spec.impls if not impl_names or n in impl_names]
        names += [n for n in impl_names if n not in names and impls[n].family == sweep.family]
        measure = sweep.spec.measure.model_dump()
        StopRule.from_measure(measure)  # fails early on a settings mismatch
        for case in expand(sweep).cases:
            if shard is not None and shard_of(case.id, shard[1]) != shard[0]:
                continue
            if not matches(sweep.name, case, filters):
                continue
            to_run = []
            for name in names:
                key = record_key(sweep.name, case.id, name)
                plan.order.append(key)
                if isinstance(done, Mapping):
                    earlier = done.get(key)
                    if earlier is not None and earlier.status in DONE_STATUSES:
                        if same_params(earlier, case):
                            plan.reused += 1
                            continue
                        plan.stale.add(key)
                elif key in done:
                    plan.reused += 1
                    continue
                reason = impl_plan(impls[name], case, sweep)
                if reason is not None:
                    plan.skips.append(CaseRecord(id=case.id, impl=name, sweep=sweep.name, status="skip",
                                                 message=reason, params=case_params(case)))
                else:
                    to_run.append(name)
            if to_run:
                plan.tasks.append(Task(next(task_ids), sweep.name, case, to_run, measure))
                plan.pairs += len(to_run)
    return plan


def why_empty(sweep_file: Any, impl_names: list[str], filters: dict[str, set[str]],
              shard: tuple[int, int] | None) -> str:
    """Which option left no (case, impl) pair, naming the values the spec does have."""
    from ssmbench.expand import expand

    everything = [(sweep, case) for sweep in sweep_file.sweeps for case in expand(sweep).cases]
    if not everything:
        return f"{sweep_file.path}: the spec expands to no case"
    families = {sweep.family for sweep in sweep_file.sweeps}
    if impl_names:
        from ssmbench.registry import registry

        impls = registry()
        runnable = [n for n in impl_names if any(n in s.spec.impls or impls[n].family == s.family
                                                 for s in sweep_file.sweeps)]
        if not runnable:
            return (f"--impl {', '.join(impl_names)}: no sweep of {sweep_file.path} runs it "
                    f"(its families: {', '.join(sorted(families))})")
    for key, wanted in filters.items():
        if key == "case":
            if not any(fnmatch.fnmatchcase(c.id, p) for _, c in everything for p in wanted):
                return f"--filter case={','.join(sorted(wanted))}: matches no case id (`ssmbench plan SPEC` lists them)"
            continue
        have = sorted({s.name if key == "sweep" else str(case_params(c)[key]) for s, c in everything})
        if not wanted & set(have):
            return f"--filter {key}={','.join(sorted(wanted))}: no case has it; {key} values here: {', '.join(have)}"
    selected = [c for s, c in everything if matches(s.name, c, filters)]
    if not selected:
        return "--filter: no case matches all the filters together"
    if shard is not None:
        return f"--shard {shard[0]}/{shard[1]}: none of the {len(selected)} selected case(s) falls in this shard"
    return "no (case, impl) pair matched the spec, --impl, --filter and --shard"


# -- the worker process ----------------------------------------------------------------------


def die_with_parent(parent_pid: int | None) -> None:
    """Never outlive the parent: a parent killed with SIGKILL cannot stop its workers, so on
    Linux the kernel is asked to SIGKILL this worker when the parent dies (PR_SET_PDEATHSIG);
    a parent already gone by then means exit now."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if parent_pid is not None and os.getppid() != parent_pid:
        _exit(0)


def worker_main(conn: Any, config: WorkerConfig, log_file: str, parent_pid: int | None = None) -> None:
    """A worker's whole life: redirect output to its log, set up a `Session`, then measure tasks
    until told to stop. Exits hard (os._exit) so CUDA/CUPTI teardown can never hang it."""
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C and a hang-up are the parent's: it stops the workers
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    if config.visible_devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = config.visible_devices
    code = 0
    try:
        from ssmbench.measure.runner import Session

        import_plugins(config.plugins)
        session = Session(config)
    except BaseException as exc:  # noqa: BLE001
        traceback.print_exc()
        conn.send(("fatal", describe_exception(exc)))
        _exit(1)
    conn.send(("ready", session.info))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            break
        if task is None:
            break
        try:
            keep = session.run(task, conn.send)
        except BaseException:  # noqa: BLE001 - Session.run records errors itself; this is a bug
            traceback.print_exc()
            _exit(4)
        if not keep:
            # A CUDA fault: this context is done. No "done": the parent sees the exit, requeues the
            # impls of this case not measured yet and starts a fresh worker.
            code = 3
            break
        conn.send(("done", task.task_id))
    _exit(code)


def _exit(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# -- the parent side -------------------------------------------------------------------------


@dataclass
class Slot:
    """One worker position (one GPU); its process is replaced when it dies."""

    number: int
    config: WorkerConfig
    proc: Any = None
    conn: Any = None
    log: str = ""
    ready: bool = False
    task: Task | None = None
    pending: list[str] = field(default_factory=list)
    current: str | None = None
    phase: str = "start"
    allowance: float = 0.0
    deadline: float = float("inf")
    uuid: str | None = None
    start_failures: int = 0
    start_error: str = ""
    disabled: bool = False
    spawned: int = 0


def exit_reason(exitcode: int | None) -> str:
    if exitcode is None:
        return "worker vanished"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"worker died ({name})"
    if exitcode == 3:
        return "worker exited after a CUDA fault"
    return f"worker exited with code {exitcode}"


def log_tail(path: str, lines: int = 3) -> str:
    """The last non-empty lines of a worker log, joined: where a crash usually says why."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept)


class WorkerPool:
    """Runs tasks on one worker per slot; calls back for devices, phases and records."""

    def __init__(self, configs: list[WorkerConfig], log_dir: Path, on_device: Callable[[dict], None],
                 on_record: Callable[[CaseRecord], None],
                 on_phase: Callable[[Task, str | None, str], None], start_timeout_s: float = 600.0,
                 poll_stop: Callable[[], None] = lambda: None) -> None:
        self.ctx = mp.get_context("spawn")
        self.poll_stop = poll_stop
        """Called once per loop turn; raises (`Interrupted`) to stop the run at a safe point."""
        self.start_timeout_s = start_timeout_s
        self.slots = [Slot(i, c) for i, c in enumerate(configs)]
        self.log_dir = log_dir
        self.on_device, self.on_record, self.on_phase = on_device, on_record, on_phase
        self.known_devices: dict[str, dict] = {}
        self._ids = itertools.count(1_000_000)

    # process management

    def _start(self, slot: Slot) -> None:
        slot.spawned += 1
        slot.log = str(self.log_dir / f"worker{slot.number}-{slot.spawned}.log")
        config = dataclasses.replace(slot.config, known_devices=dict(self.known_devices))
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=worker_main, args=(child, config, slot.log, os.getpid()), daemon=True,
                                name=f"ssmbench-worker{slot.number}")
        proc.start()
        child.close()
        slot.proc, slot.conn, slot.ready = proc, parent, False
        slot.phase, slot.allowance = "start", self.start_timeout_s  # imports, CUDA, CUPTI, calibration
        slot.deadline = time.monotonic() + self.start_timeout_s

    def _kill(self, slot: Slot) -> None:
        if slot.proc is not None and slot.proc.is_alive():
            slot.proc.kill()
        if slot.proc is not None:
            slot.proc.join(10)

    def stop(self) -> None:
        for slot in self.slots:
            if slot.proc is None:
                continue
            try:
                if slot.proc.is_alive() and slot.task is None:
                    slot.conn.send(None)
                    slot.proc.join(5)
            except OSError:
                pass
            self._kill(slot)
            slot.conn.close()
            slot.proc, slot.conn = None, None

    # messages

    def _drain(self, slot: Slot) -> None:
        while slot.conn is not None:
            try:
                if not slot.conn.poll():
                    return
                message = slot.conn.recv()
            except (EOFError, OSError):
                return
            self._handle(slot, message)

    def _handle(self, slot: Slot, message: tuple) -> None:
        kind = message[0]
        if kind == "ready":
            info = message[1]
            slot.ready, slot.start_failures, slot.deadline = True, 0, float("inf")
            slot.uuid = info.get("uuid")
            if slot.uuid:
                self.known_devices[slot.uuid] = info
            self.on_device(info)
        elif kind == "fatal":
            slot.start_error = message[1]
        elif kind == "phase":
            _, impl, phase, allowance = message
            slot.current = impl  # None while the case's workload is built
            slot.phase, slot.allowance = phase, float(allowance)
            slot.deadline = time.monotonic() + float(allowance)
            if slot.task is not None:
                self.on_phase(slot.task, impl, phase)
        elif kind == "result":
            try:
                record = CaseRecord.from_dict(message[1])
            except UsageError as exc:  # a worker's bad record (a bug, or a 0/NaN sample) costs its pair only
                data = message[1] if isinstance(message[1], dict) else {}
                if slot.task is None or data.get("impl") not in slot.pending:
                    return
                record = self._error_record(slot.task, data["impl"], f"the worker sent an invalid record: {exc}",
                                            slot.uuid)
            if record.impl in slot.pending:
                slot.pending.remove(record.impl)
            self.on_record(record)
        elif kind == "done":
            slot.task, slot.pending, slot.current = None, [], None
            slot.phase, slot.deadline = "idle", float("inf")

    def _error_record(self, task: Task, impl: str, message: str, uuid: str | None) -> CaseRecord:
        return CaseRecord(id=task.case.id, impl=impl, sweep=task.sweep, status="error", message=message,
                          params=case_params(task.case), gpu=uuid)

    def _lost(self, slot: Slot, queue: deque[Task], reason: str) -> None:
        """The slot's worker is gone: record the pair it was on, requeue the rest of its case."""
        tail = log_tail(slot.log)
        message = reason + (f"; worker log: {tail}" if tail else "")
        if not slot.ready:
            slot.start_failures += 1
            if slot.start_failures >= MAX_START_FAILURES:
                slot.disabled = True
                slot.start_error = slot.start_error or message
        task = slot.task
        if task is not None and slot.pending:
            if slot.current is None:
                victims = list(slot.pending)
            else:
                victims = [slot.current] if slot.current in slot.pending else []
            for impl in victims:
                self.on_record(self._error_record(task, impl, message, slot.uuid))
            rest = [p for p in slot.pending if p not in victims]
            if rest:
                queue.appendleft(dataclasses.replace(task, task_id=next(self._ids), impls=rest))
        if slot.conn is not None:
            slot.conn.close()
        slot.proc, slot.conn, slot.ready = None, None, False
        slot.task, slot.pending, slot.current = None, [], None
        slot.deadline = float("inf")

    # the loop

    def run(self, tasks: list[Task]) -> None:
        queue: deque[Task] = deque(tasks)
        try:
            while queue or any(s.task is not None for s in self.slots):
                self.poll_stop()
                for slot in self.slots:
                    if slot.proc is None and not slot.disabled and queue:
                        self._start(slot)
                for slot in self.slots:
                    if slot.ready and slot.task is None and queue:
                        task = queue.popleft()
                        slot.task, slot.pending, slot.current = task, list(task.impls), None
                        slot.phase, slot.deadline = "sent", time.monotonic() + slot.config.setup_timeout_s
                        slot.conn.send(task)
                if all(s.disabled for s in self.slots):
                    why = "; ".join(dict.fromkeys(s.start_error for s in self.slots))
                    while queue:
                        task = queue.popleft()
                        for impl in task.impls:
                            self.on_record(self._error_record(task, impl, f"no worker could start: {why}",
                                                              None))
                    break
                live = [s for s in self.slots if s.proc is not None]
                mp_wait([s.conn for s in live] + [s.proc.sentinel for s in live], timeout=0.2)
                self.poll_stop()  # before looking at dead workers: a SIGTERM to the group is no crash
                for slot in live:
                    self._drain(slot)
                    if not slot.proc.is_alive():
                        slot.proc.join(1)
                        self._drain(slot)
                        self._lost(slot, queue, exit_reason(slot.proc.exitcode))
                    elif time.monotonic() > slot.deadline:
                        self._kill(slot)
                        self._drain(slot)
                        what = f"{slot.current} " if slot.current else ""
                        self._lost(slot, queue, f"timed out: {what}made no progress for "
                                                f"{slot.allowance:.0f} s in phase '{slot.phase}' (hang?); "
                                                "worker killed")
        finally:
            self.stop()


# -- the command -----------------------------------------------------------------------------


def host_env(spec: Path, spec_name: str, argv: list[str]) -> dict[str, Any]:
    """The parent's view of the environment (each GPU's facts come from its worker)."""
    import platform
    import socket
    import subprocess
    from datetime import datetime, timezone
    from importlib import metadata

    import torch

    from ssmbench import __version__

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "ssmbench": __version__, "git_sha": git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "python": platform.python_version(), "torch": torch.__version__, "triton": version("triton"),
        "cuda": torch.version.cuda, "cupti_python": version("cupti-python"),
        "nvidia_ml_py": version("nvidia-ml-py"),
        "hostname": socket.gethostname(), "spec": str(spec), "spec_name": spec_name, "argv": argv,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def worker_configs(device: str, gpus: list[int], setup_timeout_s: float, grace_s: float,
                   plugins: list[str]) -> list[WorkerConfig]:
    """One config per GPU; a worker sees only its GPU (CUDA_VISIBLE_DEVICES, mapped through an
    existing CUDA_VISIBLE_DEVICES so ``--gpus`` indices mean what torch's indices mean here)."""
    if device == "cpu":
        return [WorkerConfig(device="cpu", gpu_index=g, setup_timeout_s=setup_timeout_s, grace_s=grace_s,
                             plugins=plugins) for g in gpus]
    import torch

    count = torch.cuda.device_count()
    bad = [g for g in gpus if g >= count]
    if bad:
        raise UsageError(f"--gpus: no GPU {', '.join(map(str, bad))}; torch sees {count} (0..{count - 1})")
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = [v.strip() for v in inherited.split(",")] if inherited else None
    return [WorkerConfig(device="cuda", gpu_index=g, visible_devices=visible[g] if visible else str(g),
                         setup_timeout_s=setup_timeout_s, grace_s=grace_s, plugins=plugins) for g in gpus]


def sweep_device() -> str:
    """``cuda`` normally; ``cpu`` only in the test mode. Exit 2 (UsageError) without a GPU."""
    device = os.environ.get(DEVICE_ENV, "cuda")
    if device == "cpu":
        return "cpu"
    if device != "cuda":
        raise UsageError(f"{DEVICE_ENV}={device!r}; allowed: cuda, cpu (test mode)")
    import torch

    if not torch.cuda.is_available():
        raise UsageError(NO_GPU_MESSAGE)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise UsageError("TRITON_INTERPRET is set: Triton kernels would run in the interpreter. Unset it to "
                         "time them (it is for CPU machines).")
    return "cuda"


def unfinished_run(output: Path) -> str | None:
    """Why the files at ``output`` hold a run that a plain re-run would lose (None: nothing would
    be lost: no log, an empty one, or a log whose run wrote its complete final JSON). A finished
    run may be replaced: that is the nightly case."""
    log = log_path(output)
    final = None
    if output.exists():
        try:
            final = load_results(output)
        except UsageError as exc:
            return f"{output} exists and is not a finished ssmbench results file ({exc})"
    if not log.exists():
        return None
    try:
        logged = read_log(log)
    except UsageError as exc:
        return f"{log} cannot be read ({exc})"
    if not logged.records:
        return None
    if final is None:
        return f"{log} holds {len(logged.records)} record(s) of a run that never wrote {output}"
    if final.env.get("complete") is False:
        return f"{output} is from an interrupted run (complete: false)"
    if any(final.env.get(k) != v for k, v in logged.env.items()):
        return f"{log} holds a later run than {output}, one that never finished"
    return None


def previous_results(output: Path, options: SweepOptions, spec_name: str) -> LogContents | None:
    """What an earlier run left at ``output``, read only: its records with ``--resume`` (from a
    run of this spec only), None to start afresh (``--fresh``, or nothing unfinished there)."""
    if options.fresh:
        return None
    if not options.resume:
        why = unfinished_run(output)
        if why:
            raise UsageError(f"{why}. A plain re-run would overwrite it: continue it with --resume, or "
                             f"start over with --fresh (discards it)")
        return None
    previous = ResultsLog.read_previous(output)
    if previous is None:
        return None
    earlier = previous.env.get("spec_name")
    if earlier is not None and earlier != spec_name:
        raise UsageError(f"--resume: {output} holds a run of spec {earlier!r} ({previous.env.get('spec')}), not "
                         f"{spec_name!r}; give another -o, or --fresh to replace it")
    return previous


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remove_stale_worker_dirs() -> None:
    """Remove the worker-log directories of sweeps whose parent is gone (killed with SIGKILL,
    so it could not clean up); a directory of a live sweep is left alone."""
    for path in Path(tempfile.gettempdir()).glob(WORKER_DIR_PREFIX + "*"):
        pid = path.name[len(WORKER_DIR_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and path.is_dir() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def worker_dir() -> Iterator[Path]:
    """A directory for this sweep's worker logs, removed on every way out but SIGKILL (whose
    leftovers the next sweep removes: the name carries this process's pid)."""
    remove_stale_worker_dirs()
    with tempfile.TemporaryDirectory(prefix=f"{WORKER_DIR_PREFIX}{os.getpid()}-") as path:
        yield Path(path)


class Interrupted(KeyboardInterrupt):
    """A stop asked for by a signal (SIGINT, SIGTERM, SIGHUP): handled like Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
INTERRUPTED_CODES = tuple(128 + int(sig) for sig in STOP_SIGNALS)
"""`run_sweep`'s exit codes for a run stopped by one of STOP_SIGNALS."""


class StopSignals:
    """While measuring, SIGINT, SIGTERM and SIGHUP only note the stop; the pool's loop raises
    `Interrupted` at its next turn (a safe point: no half-written record, and a worker killed by
    the same signal is not taken for a crash). A second signal raises at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _note(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise Interrupted(signum)
        self.signum = signum

    def poll(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._old[sig] = signal.signal(sig, self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()


def interrupt_exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the signal's number, as shells report it: SIGINT 130, SIGTERM 143, SIGHUP 129."""
    return 128 + (exc.signum if isinstance(exc, Interrupted) else int(signal.SIGINT))


def run_sweep(options: SweepOptions, console: Console, err_console: Console | None = None) -> int:
    """The whole command: check every option, plan, and only then open the log; measure; write
    the final JSON and tables. Returns the exit code: 0 all measured ok, 1 a pair failed or
    errored, 128 + signal when stopped by SIGINT (130), SIGTERM (143) or SIGHUP (129)."""
    from ssmbench.report import PairProgress

    err_console = err_console or console
    # 1. options, the spec, the device: all checked before any file is touched
    if options.resume and options.fresh:
        raise UsageError("--resume and --fresh contradict each other: continue the earlier run, or replace it")
    gpus = parse_gpus(options.gpus)
    shard = parse_shard(options.shard)
    filters = parse_filters(options.filters)
    output = check_output_path(options.output, "-o") if options.output is not None else None
    md_path = check_output_path(options.markdown, "--markdown") if options.markdown is not None else None
    plugins = plugins_from_env()
    import_plugins(plugins)
    slowdown = slowdown_fraction()  # the test-only knob: a bad value is a usage error before any work
    sweep_file = load_spec(options.spec)
    device = sweep_device()
    configs = worker_configs(device, gpus, options.setup_timeout_s, options.grace_s, plugins)
    output = output or check_output_path(f"{sweep_file.name}.results.json", "-o")
    if md_path is not None and md_path.resolve() in (output.resolve(), log_path(output).resolve()):
        raise UsageError(f"--markdown {md_path}: the results file or its log; give another path")

    # 2. the plan (an earlier run's files are only read)
    previous = previous_results(output, options, sweep_file.name)
    plan = make_plan(sweep_file, options.impls, filters, shard, previous.records if previous else {})
    if not plan.order:
        raise UsageError(why_empty(sweep_file, options.impls, filters, shard))
    env = host_env(options.spec, sweep_file.name, options.argv)
    env.update({"device_mode": device, "shard": options.shard, "filters": options.filters,
                "resumed": bool(previous and previous.records)})
    if slowdown is not None:  # TEST ONLY: recorded so a slowed run is never taken for a real one
        env["test_slowdown"] = slowdown

    # 3. the log, then the workers
    results = ResultsLog(output, previous=previous)
    if results.repaired:
        err_console.print(results.repaired, highlight=False, markup=False)
    results.forget(plan.stale)
    if previous is not None and previous.records:
        console.print(f"resuming: {plan.reused} pair(s) already done in {results.path}", highlight=False)
    if plan.stale:
        console.print(f"{len(plan.stale)} record(s) in the log were measured with other parameters and are "
                      "re-measured", highlight=False)
    interrupted: KeyboardInterrupt | None = None
    progress = PairProgress(console, "sweep", plan.pairs)

    def on_record(record: CaseRecord) -> None:
        results.case(record)
        progress.advance(record.status)
        if record.status in ("fail", "error"):
            progress.print(f"[red]{record.status.upper():5}[/] {record.impl} {record.id}: "
                           f"{escape(record.message or '')}", highlight=False)

    def on_phase(task: Task, impl: str | None, phase: str) -> None:
        progress.describe(f"{phase:8} {impl or ''} {task.case.id}")

    try:
        with StopSignals() as stop, worker_dir() as log_dir:
            results.env(env)
            for record in plan.skips:
                results.case(record)
            pool = WorkerPool(configs, log_dir, results.device, on_record, on_phase,
                              start_timeout_s=options.start_timeout_s, poll_stop=stop.poll)
            progress.describe("starting workers")
            with progress:
                pool.run(plan.tasks)
    except KeyboardInterrupt as exc:
        interrupted = exc
    finally:
        results.close()
    return finish_sweep(options, output, md_path, env, plan, results, interrupted, console, err_console)


def finish_sweep(options: SweepOptions, output: Path, md_path: Path | None, env: dict[str, Any], plan: Plan,
                 results: ResultsLog, interrupted: KeyboardInterrupt | None, console: Console,
                 err_console: Console) -> int:
    """The final JSON (``complete: false`` when interrupted), the tables, the summary line."""
    from datetime import datetime, timezone

    from ssmbench.report import markdown, pivot, print_tables, status_counts

    timers = sorted({str(d.get("timer")) for d in results.devices.values()})
    env.update({"finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "complete": interrupted is None, "timer": ", ".join(timers) or None})
    planned_keys = set(plan.order)
    planned = [results.records[k] for k in plan.order if k in results.records]
    extra = [r for k, r in results.records.items() if k not in planned_keys]
    devices = list(results.devices.values())
    write_results(output, env, devices, planned + extra)

    tables = pivot(planned, plan.baselines)
    print_tables(console, tables)
    if md_path is not None:
        md_path.parent.mkdir(parents=True, exist_ok=True)
        md_path.write_text(markdown(tables, planned, env, devices))
    counts = status_counts(planned)
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    console.print(f"{summary}; results: {output} (log: {log_path(output)})", highlight=False, markup=False)
    if interrupted is not None:
        name = interrupted.args[0] if isinstance(interrupted, Interrupted) else "SIGINT"
        err_console.print(f"interrupted ({name}): the results so far are in {output} (complete: false); continue "
                          f"with: ssmbench sweep {options.spec} -o {output} --resume", highlight=False, markup=False)
        return interrupt_exit_code(interrupted)
    return 1 if counts["fail"] or counts["error"] else 0
