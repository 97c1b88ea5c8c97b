"""The sweep's worker processes: the worker's whole life (`worker_main`, a spawned process: it must
stay importable at module level), the parent's `WorkerPool` (one worker per GPU, deadlines from the
worker's ``phase`` messages, a lost worker's pair recorded and its case's other impls requeued),
the worker-log directory (and the stale ones of killed sweeps), and the stop signals."""

from __future__ import annotations

import dataclasses
import itertools
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import wait as mp_wait
from pathlib import Path
from typing import Any

from ssmbench.errors import UsageError
from ssmbench.impls.registry import import_plugins
from ssmbench.measure.runner import Task, WorkerConfig
from ssmbench.measure.target import describe_exception
from ssmbench.output.results import CaseRecord, case_params
from ssmbench.runs.sweep.plan import shard_of

MAX_START_FAILURES = 2
"""A GPU whose worker fails to start this many times in a row gets no more workers."""
WORKER_DIR_PREFIX = "ssmbench-workers-"
"""Worker logs live in ``<tmp>/ssmbench-workers-<parent pid>-<random>``; the pid lets a later
sweep remove the directory of a parent that was killed (-9) before it could."""


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
                 on_turn: Callable[[], None] = lambda: None) -> None:
        self.ctx = mp.get_context("spawn")
        self.on_turn = on_turn
        """Called at every turn of the loop (about 5 a second): may raise (`Interrupted`) to stop the run at
        a safe point, and prints the periodic progress line, so a hung worker is not silent."""
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

    # which GPU runs which case

    def _runs_on(self, task: Task, slot: Slot) -> bool:
        """Case c runs on slot ``shard_of(c.id, n)`` of the n GPUs: the rule of ``--shard``, so
        ``--gpus 0,..,n-1`` measures every case on the GPU that ``--shard i/n --gpus i`` would, and
        two runs on one multi-GPU machine compare each pair on the same device (GPUs of one model
        still differ by a few percent: docs/gpu-runs.md). A case whose GPU has no worker (it
        failed to start) goes to any GPU that has one."""
        owner = self.slots[shard_of(task.case.id, len(self.slots))]
        return owner is slot or owner.disabled

    def _next_task(self, slot: Slot, queue: deque[Task]) -> Task | None:
        for i, task in enumerate(queue):
            if self._runs_on(task, slot):
                del queue[i]
                return task
        return None

    # the loop

    def run(self, tasks: list[Task]) -> None:
        queue: deque[Task] = deque(tasks)
        try:
            while queue or any(s.task is not None for s in self.slots):
                self.on_turn()
                for slot in self.slots:
                    if slot.proc is None and not slot.disabled and any(self._runs_on(t, slot) for t in queue):
                        self._start(slot)
                for slot in self.slots:
                    if slot.ready and slot.task is None and queue:
                        task = self._next_task(slot, queue)
                        if task is None:
                            continue
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
                self.on_turn()  # before looking at dead workers: a SIGTERM to the group is no crash
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
