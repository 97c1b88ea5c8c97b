"""The sweep's compile pre-pass (`ssmbench.runs.prewarm`) before its timing workers start: every
planned pair built, run once and verified in ``--compile-workers`` processes, so the timing
workers (one per GPU) find warm Triton caches. A pair whose attempt failed or errored there is
recorded with that status and not timed; everything else is timed as planned."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ssmbench.errors import UsageError
from ssmbench.measure.runner import Task
from ssmbench.output.results import CaseRecord, case_params
from ssmbench.runs.prewarm import Job, Prewarm, default_workers, prewarm

PREFIX = "compile pre-pass: "


def compile_workers(requested: int | None, device: str) -> int:
    """``--compile-workers``: None = the default for the device (`default_workers`), 0 = off."""
    if requested is None:
        return default_workers(device)
    if requested < 0:
        raise UsageError(f"--compile-workers {requested}: a number of processes >= 0 (0: no pre-pass)")
    return requested


def compile_first(tasks: list[Task], workers: int, devices: list[str], plugins: list[str], deadline_s: float,
                  on_record: Callable[[CaseRecord], None],
                  on_turn: Callable[[], None] = lambda: None) -> tuple[list[Task], Prewarm]:
    """Run the pre-pass over ``tasks``; record its failures (``on_record``) and return the tasks
    left to time, with what the pre-pass did."""
    jobs = [Job(t.sweep, t.case, impl) for t in tasks for impl in t.impls]
    done = prewarm(jobs, workers, devices, plugins, deadline_s, on_turn)
    failed: set[tuple[str, str, str]] = set()
    for outcome in done.outcomes:
        if outcome.status == "ok":
            continue
        job = outcome.job
        on_record(CaseRecord(id=job.case.id, impl=job.impl, sweep=job.sweep, status=outcome.status,
                             message=PREFIX + outcome.problem, params=case_params(job.case)))
        failed.add((job.sweep, job.case.id, job.impl))
    left = []
    for task in tasks:
        impls = [i for i in task.impls if (task.sweep, task.case.id, i) not in failed]
        if impls:
            left.append(dataclasses.replace(task, impls=impls))
    return left, done
