"""The compile pre-pass: before anything is timed, every (case, impl[, knob config]) a sweep or a
tuning duel will launch is built, run once and verified (`ssmbench.measure.target.attempt`, the one
build -> run -> verify path) in a pool of spawned processes, one per CPU core (capped), so Triton
compiles in parallel into its on-disk cache (``TRITON_CACHE_DIR``, inherited) and the timing
process finds every kernel there.

Jobs are grouped by compile key (the impl, the case fields that become constexprs, the knob
config's constexpr knobs), and a group runs in one process: no two processes compile the same
kernel. The key uses the impl's hand-picked default knobs (a per-device table may pick others:
then a kernel may be compiled twice, never missed, since timing compiles what is not cached).

What a group reports is final for a pair only when it is ``fail`` or ``error`` from the attempt
itself (the sweep records it and does not time it); an out-of-memory error is not (the pre-pass
processes share the GPU): that pair goes to the timing worker. A process that crashes or overruns the
deadline reports nothing for its remaining pairs: they go to the timing workers as planned, which
record whatever happens there (a crashed process's group is only noticed at the deadline:
``multiprocessing.Pool`` replaces the process and drops its task). A CUDA fault ends its group
(the context is unusable), its remaining pairs likewise left to the timers.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from ssmbench.impls.knobs import Config, forced
from ssmbench.impls.tuned import tunable_of
from ssmbench.measure.compiles import TRACE_ENV, install_compile_log
from ssmbench.measure.runner import classify_error
from ssmbench.measure.target import attempt
from ssmbench.output.results import case_params

MAX_WORKERS = 16
RUNTIME_FIELDS = ("batch", "seed", "accept", "pool", "l2")
"""Case parameters that are runtime values in every kernel (sizes, indices, data), not constexprs."""


@dataclass(frozen=True)
class Job:
    sweep: str
    case: Any
    impl: str
    config: Config | None = None
    """A knob config to force (the tuner's candidates); None: what the impl picks itself."""


@dataclass
class Outcome:
    """A job's attempt: ``ok``, ``fail`` or ``error`` (with the message)."""

    job: Job
    status: str
    message: str = ""

    @property
    def problem(self) -> str:
        """Why a job that was not ok failed, as its record says it (an empty message of a ``fail``
        is the reference disagreeing)."""
        if self.status == "fail":
            return f"verification failed: {self.message or 'outputs differ from the reference'}"
        return self.message


@dataclass
class Prewarm:
    outcomes: list[Outcome] = field(default_factory=list)
    unreported: list[Job] = field(default_factory=list)
    """Jobs whose process died or ran out of time: nothing is known of them."""
    processes: int = 0
    groups: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        failed = sum(o.status != "ok" for o in self.outcomes)
        return (f"compiled: {self.groups} kernel group(s) on {self.processes} process(es) in {self.seconds:.0f} s; "
                f"{failed} failed, {len(self.unreported)} left to the timing workers")


def default_workers(device: str) -> int:
    """On CUDA: the CPU cores, capped (each process also holds a CUDA context); on the CPU: 0
    (Triton's interpreter compiles nothing, the pre-pass would only double the work)."""
    if device != "cuda":
        return 0
    return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1))


def compile_key(job: Job, impls: dict[str, Any]) -> tuple:
    """What selects the compiled kernels of a job (see the module docstring)."""
    params = case_params(job.case)
    fixed = tuple(sorted((k, str(v)) for k, v in params.items() if k not in RUNTIME_FIELDS))
    impl = impls[job.impl]
    tunable = tunable_of(impl)
    knobs: tuple = ()
    if tunable is not None:
        config = job.config if job.config is not None else tunable.default_config(job.case)
        knobs = tunable.space.compile_key(config)
    if not getattr(impl, "uses_window", False):
        fixed = tuple(item for item in fixed if item[0] != "window")
    return (job.impl, fixed, knobs)


def plan_groups(jobs: Sequence[Job], impls: dict[str, Any]) -> list[list[Job]]:
    """Jobs grouped by compile key, largest group first (it sets the pre-pass's length)."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault(compile_key(job, impls), []).append(job)
    return sorted(groups.values(), key=len, reverse=True)


def run_group(args: tuple[int, list[Job], str, list[str]]) -> tuple[int, list[tuple[int, str, str]], bool]:
    """One group in a pool process: each job attempted on ``device``. A job whose attempt faults
    (the context is gone) is reported as an error with the fault, and the group stops there: the
    jobs after it are left unreported (the timing workers take them). Returns (group number,
    [(job index, status, message)], whether this process's context faulted)."""
    number, jobs, device, plugins = args
    import torch

    from ssmbench.families import make_workload
    from ssmbench.impls.registry import import_plugins, registry

    torch.set_num_threads(1)
    if os.environ.get(TRACE_ENV):
        install_compile_log("prepass")  # the trace only: the pre-pass compiles on purpose
    import_plugins(plugins)
    impls = registry()
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)

    def free() -> None:
        if dev.type == "cuda":
            torch.cuda.empty_cache()

    done: list[tuple[int, str, str]] = []
    case_id, workload = None, None  # one case's workload at a time
    for index, job in enumerate(jobs):
        if workload is None or job.case.id != case_id:
            workload = None  # the last case's workload freed before the next is built
            free()
            try:
                case_id, workload = job.case.id, make_workload(job.case, dev)
            except Exception as exc:  # noqa: BLE001 - the timing worker records workload errors itself
                if classify_error(exc) == "fatal":
                    return number, done, True
                continue
        with forced(job.impl, job.config) if job.config is not None else nullcontext():
            result = attempt(job.case, impls[job.impl], workload)
        kind = classify_error(RuntimeError(result.message)) if result.raised else None
        if kind == "fatal":  # this job's own fault (errors surface at its verification's sync)
            done.append((index, "error", result.message))
            return number, done, True  # the context is unusable: the rest go to the timers
        if kind == "oom":
            # Out of memory here says little about the pair: up to 16 pre-pass processes share
            # the GPU (a 2026-11-29 H200 run lost 22 large-batch pairs this way). Left to the
            # timing worker, which has the GPU to itself.
            workload = None
            free()
            continue
        why = result.message or "; ".join(c.describe() for c in result.comparisons if not c.ok)
        done.append((index, result.status, why))
    workload = None
    free()  # a kept process (`CompilePool`) holds no memory between calls
    return number, done, False


class CompilePool:
    """Spawned compile processes kept across `prewarm` calls (the tuner compiles each duel's
    challengers: a new pool per duel cost ~5 s of process start and imports). Started on first
    use; a call that stops early (deadline, a raising ``on_turn``, a bug) terminates it, and the
    next call starts a fresh one. Use as a context manager, or call `close`."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._pool: Any = None

    def get(self) -> Any:
        if self._pool is None:
            self._pool = mp.get_context("spawn").Pool(self.processes)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> CompilePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prewarm(jobs: Sequence[Job], workers: int, devices: Sequence[str], plugins: list[str], deadline_s: float,
            on_turn: Callable[[], None] = lambda: None, pool: CompilePool | None = None) -> Prewarm:
    """Run every job's attempt in ``workers`` spawned processes (groups spread over ``devices``
    round robin); returns what each reported. ``on_turn`` is called while waiting (it may raise
    to stop: the pool is then terminated). ``pool``: processes kept across calls (its size
    wins over ``workers``); without it a pool lives for this call only."""
    from ssmbench.impls.registry import registry

    start = time.monotonic()
    groups = plan_groups(jobs, registry())
    result = Prewarm(groups=len(groups))
    if not groups or workers <= 0:
        return result
    owned = pool is None
    if pool is None:
        pool = CompilePool(min(workers, len(groups)))
    result.processes = min(pool.processes, len(groups))
    args = [(i, group, devices[i % len(devices)], plugins) for i, group in enumerate(groups)]
    pending = set(range(len(groups)))
    faulted = False  # a process whose CUDA context faulted is not reused: the pool is restarted
    try:
        it = pool.get().imap_unordered(run_group, args)
        while pending:
            on_turn()
            left = deadline_s - (time.monotonic() - start)
            if left <= 0:
                break
            try:
                number, done, fault = it.next(timeout=min(left, 0.5))
            except mp.TimeoutError:
                continue
            except StopIteration:
                break
            except Exception:  # noqa: BLE001 - a group that raised (a bug): the rest go to the timers
                break
            pending.discard(number)
            faulted |= fault
            reported = {index for index, _, _ in done}
            result.outcomes += [Outcome(groups[number][i], status, message) for i, status, message in done]
            result.unreported += [job for i, job in enumerate(groups[number]) if i not in reported]
    finally:
        if owned or pending or faulted:  # a pool left with work queued, or a faulted process, is not reused
            pool.close()
    for number in pending:
        result.unreported += groups[number]
    result.seconds = time.monotonic() - start
    return result
