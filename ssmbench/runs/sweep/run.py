"""`ssmbench sweep` as a whole (`run_sweep`): options, spec and device checked, the plan, then the
log and the workers; the final JSON and tables (`finish_sweep`). The device mode
(``SSMBENCH_SWEEP_DEVICE``) and the host facts recorded with the results are here too."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from ssmbench.errors import UsageError
from ssmbench.impls.registry import import_plugins, plugins_from_env
from ssmbench.measure.runner import Task, WorkerConfig
from ssmbench.measure.slowdown import slowdown_fraction
from ssmbench.output.results import CaseRecord, ResultsLog, log_path, write_results
from ssmbench.runs.sweep.compile import compile_first, compile_workers
from ssmbench.runs.sweep.options import (
    SweepOptions,
    check_output_path,
    load_spec,
    parse_filters,
    parse_gpus,
    parse_shard,
    previous_results,
)
from ssmbench.runs.sweep.plan import Plan, make_plan, why_empty
from ssmbench.runs.sweep.pool import Interrupted, StopSignals, WorkerPool, interrupt_exit_code, worker_dir

DEVICE_ENV = "SSMBENCH_SWEEP_DEVICE"
NO_GPU_MESSAGE = (
    "no CUDA GPU: `ssmbench {command}` times kernels on a GPU and torch sees none here. "
    "To verify the impls against the references on this machine, run `ssmbench check SPEC`."
)


# -- the command -----------------------------------------------------------------------------


GIT_SHA_ENV = "SSMBENCH_GIT_SHA"
"""The commit the running tree is, where its ``.git`` cannot say (a copy of a checkout shipped to another
machine with a stale or no ``.git``, a CI artifact): recorded as ``git_sha`` instead of ``git rev-parse
HEAD``, with ``git_dirty`` unknown (null) and ``git_sha_from`` naming the variable."""


def commit_of_checkout(git: Callable[..., str | None]) -> dict[str, Any]:
    """``git_sha`` / ``git_dirty`` of the results' env: $SSMBENCH_GIT_SHA when set, else git's answer
    (``git`` runs a git command in the checkout, None when it fails)."""
    given = os.environ.get(GIT_SHA_ENV, "").strip()
    if given:
        return {"git_sha": given, "git_dirty": None, "git_sha_from": GIT_SHA_ENV}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_sha": git("rev-parse", "HEAD"), "git_dirty": bool(status) if status is not None else None}


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

    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = commit_of_checkout(git)
    return {
        "ssmbench": __version__, **commit,
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


def sweep_device(command: str = "sweep") -> str:
    """``cuda`` normally; ``cpu`` only in the test mode. Exit 2 (UsageError) without a GPU."""
    device = os.environ.get(DEVICE_ENV, "cuda")
    if device == "cpu":
        return "cpu"
    if device != "cuda":
        raise UsageError(f"{DEVICE_ENV}={device!r}; allowed: cuda, cpu (test mode)")
    import torch

    if not torch.cuda.is_available():
        raise UsageError(NO_GPU_MESSAGE.format(command=command))
    from ssmbench.runs.check import triton_interpreted

    if triton_interpreted():
        raise UsageError("TRITON_INTERPRET is set: Triton kernels would run in the interpreter. Unset it to "
                         "time them (it is for CPU machines).")
    return "cuda"


def run_sweep(options: SweepOptions, console: Console, err_console: Console | None = None) -> int:
    """The whole command: check every option, plan, and only then open the log; measure; write
    the final JSON and tables. Returns the exit code: 0 all measured ok, 1 a pair failed or
    errored, 128 + signal when stopped by SIGINT (130), SIGTERM (143) or SIGHUP (129)."""
    from ssmbench.output.report import PairProgress

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
    compilers = compile_workers(options.compile_workers, device)
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
            if compilers and plan.tasks:
                console.print(f"compiling: {plan.pairs} pair(s) on up to {compilers} process(es)", highlight=False)
                devices = ["cpu"] if device == "cpu" else [f"cuda:{g}" for g in gpus]
                plan.tasks, done = compile_first(plan.tasks, compilers, devices, plugins,
                                                 options.setup_timeout_s * 4, on_record, stop.poll)
                console.print(done.summary(), highlight=False)
            pool = WorkerPool(configs, log_dir, results.device, on_record, on_phase,
                              start_timeout_s=options.start_timeout_s, on_turn=lambda: (stop.poll(), progress.tick()))
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

    from ssmbench.measure.compiles import pairs_that_compiled
    from ssmbench.output.report import markdown, pivot, print_tables, status_counts

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
    if compiled := pairs_that_compiled(planned):
        err_console.print(f"{compiled} pair(s) compiled kernels in the timing process (the compile pre-pass missed "
                          "them; wall time, not measurements): see their notes", highlight=False, markup=False)
    if interrupted is not None:
        name = interrupted.args[0] if isinstance(interrupted, Interrupted) else "SIGINT"
        err_console.print(f"interrupted ({name}): the results so far are in {output} (complete: false); continue "
                          f"with: ssmbench sweep {options.spec} -o {output} --resume", highlight=False, markup=False)
        return interrupt_exit_code(interrupted)
    return 1 if counts["fail"] or counts["error"] else 0
