"""`ssmbench check`: run every (case, impl) pair of a spec once and verify it against the reference.

A failing pair (wrong result) or an erroring one (exception, bad config, a workload that cannot
be built) is reported and the run goes on; the command ends with ``N passed, M failed, K errors``.
On a machine without CUDA, Triton kernels run in Triton's interpreter (`prepare_device`).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ssmbench.errors import UsageError
from ssmbench.families import make_workload
from ssmbench.impls.base import INTERPRET_ENV, Impl, triton_interpreted
from ssmbench.impls.registry import registry
from ssmbench.measure.target import attempt, describe_exception, resolve_device
from ssmbench.measure.verify import Comparison
from ssmbench.output.report import PairProgress
from ssmbench.runs.planning import impl_plan, select_impls
from ssmbench.spec.case import Case
from ssmbench.spec.expand import expand, select_cases
from ssmbench.spec.load import SweepFile


@dataclass
class CheckResult:
    case_id: str
    impl: str
    status: str  # "ok" | "fail" | "error"
    comparisons: list[Comparison] = field(default_factory=list)
    message: str = ""
    seconds: float = 0.0


def prepare_device(device: str) -> tuple[torch.device, str]:
    """The device to check on, and a note to print once ("" for none). On a CPU, Triton kernels
    can only run in Triton's interpreter, which Triton picks when ``@triton.jit`` decorates, so
    the variable is set here, before any impl imports its kernels (call this before loading the
    spec: that builds the registry). With ``--device cuda`` nothing changes."""
    dev = resolve_device(device)
    if dev.type != "cpu" or triton_interpreted():
        return dev, ""
    why = "no CUDA device" if device == "auto" else f"--device {device}"
    if any(is_triton_module(name) for name in sys.modules):
        return dev, (f"{why}: the Triton kernels were imported before {INTERPRET_ENV}=1 could be set; they will "
                     f"error on the CPU (set {INTERPRET_ENV}=1 to run them in Triton's interpreter)")
    os.environ[INTERPRET_ENV] = "1"
    return dev, f"{why}: Triton kernels run in Triton's interpreter (slow)"


def is_triton_module(name: str) -> bool:
    """Whether module ``name`` holds ``@triton.jit`` kernels: each family's ``kernel`` module (and
    ``kernel_<variant>`` beside it) and the shared Triton helpers (the references import no Triton)."""
    if not name.startswith("ssmbench_kernels."):
        return False
    leaf = name.rsplit(".", 1)[-1]
    return leaf == "kernel" or leaf.startswith("kernel_") or name in TRITON_HELPER_MODULES


TRITON_HELPER_MODULES = frozenset(f"ssmbench_kernels.common.{m}" for m in ("activation", "dots", "launch"))


def check_pair(case, impl, workload) -> CheckResult:
    """Build, run once and verify one impl on one case (`ssmbench.measure.target.attempt`); never raises."""
    start = time.perf_counter()
    result = attempt(case, impl, workload)
    seconds = time.perf_counter() - start if result.status != "error" or result.raised else 0.0
    return CheckResult(case.id, impl.name, result.status, result.comparisons, message=result.message,
                       seconds=seconds)


@dataclass
class CheckCounts:
    passed: int = 0
    failed: int = 0
    errors: int = 0
    """A pair that could not be run (exception, workload not built) is an error, not a failure."""

    def line(self) -> str:
        """The closing line CI parses: ``N passed, M failed, K errors``."""
        return f"{self.passed} passed, {self.failed} failed, {self.errors} errors"


def plan_check(sweep_file: SweepFile, impl_names: list[str] | None,
               case_glob: str | None) -> list[tuple[Case, list[Impl]]]:
    """The cases to check, each with the impls that run it; a bad ``--impl`` or a ``--case``
    matching nothing is a usage error, before any work."""
    impls = registry()
    planned: list[tuple[Case, list[Impl]]] = []
    matched = 0
    for sweep in sweep_file.sweeps:
        names = select_impls(sweep, impl_names, impls)
        cases = select_cases(expand(sweep).cases, case_glob)
        matched += len(cases)
        for case in cases:
            runnable = [impls[n] for n in names if impl_plan(impls[n], case, sweep) is None]
            if runnable:
                planned.append((case, runnable))
    if case_glob and not matched:
        raise UsageError(f"--case {case_glob!r}: matches no case id of {sweep_file.path} "
                         "(`ssmbench plan SPEC` lists them)")
    if not planned:
        raise UsageError("no (case, impl) pair matched: nothing was checked")
    return planned


def run_check(sweep_file: SweepFile, impl_names: list[str] | None, case_glob: str | None,
              device: str | torch.device, console: Console, verbose: bool = False) -> CheckCounts:
    """Check every selected (case, impl) pair; print failures (all pairs with ``verbose``), a
    case whose workload cannot be built once, with why."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    planned = plan_check(sweep_file, impl_names, case_glob)
    results: list[CheckResult] = []
    with PairProgress(console, "check", sum(len(runnable) for _, runnable in planned)) as progress:
        for case, runnable in planned:
            progress.describe(case.id)
            try:
                workload = make_workload(case, dev)
            except Exception as exc:  # noqa: BLE001 - recorded for each impl, said once for the case
                reason = describe_exception(exc)
                progress.print(f"[red]ERROR[/] {case.id}: the workload could not be built, {len(runnable)} impl(s) "
                               f"not checked: {escape(reason)}", highlight=False)
                for impl in runnable:
                    results.append(CheckResult(case.id, impl.name, "error", message=f"workload: {reason}"))
                    progress.advance("error")
                continue
            for impl in runnable:
                progress.describe(f"{impl.name} {case.id}")
                result = check_pair(case, impl, workload)
                results.append(result)
                progress.advance(result.status)
                if verbose or result.status != "ok":
                    _print_result(progress, result)
            del workload
    _print_summary(console, results)
    return CheckCounts(passed=sum(r.status == "ok" for r in results), failed=sum(r.status == "fail" for r in results),
                       errors=sum(r.status == "error" for r in results))


def _print_result(console: Console | PairProgress, r: CheckResult) -> None:
    colour = {"ok": "green", "fail": "red", "error": "red"}[r.status]
    detail = r.message or "; ".join(c.describe() for c in r.comparisons)
    console.print(f"[{colour}]{r.status.upper():5}[/] {r.impl:28} {r.case_id}  {escape(detail)}", highlight=False)


def _print_summary(console: Console, results: list[CheckResult]) -> None:
    if not results:
        return
    table = Table(title="check summary (worst normalized error per impl, as a fraction of its tolerance)")
    for col in ("impl", "pairs", "ok", "fail", "error", "worst", "worst case", "seconds"):
        table.add_column(col, justify="right" if col in ("pairs", "ok", "fail", "error", "seconds") else "left")
    by_impl: dict[str, list[CheckResult]] = {}
    for r in results:
        by_impl.setdefault(r.impl, []).append(r)
    for name, rs in by_impl.items():
        scored = [(max((c.error / c.tolerance if c.tolerance else (0.0 if c.error == 0 else float("inf")))
                       for c in r.comparisons), r) for r in rs if r.comparisons]
        worst = max(scored, key=lambda s: s[0], default=(float("nan"), None))
        table.add_row(name, str(len(rs)), str(sum(r.status == "ok" for r in rs)),
                      str(sum(r.status == "fail" for r in rs)), str(sum(r.status == "error" for r in rs)),
                      f"{worst[0]:.2f}", worst[1].case_id if worst[1] else "-",
                      f"{sum(r.seconds for r in rs):.1f}")
    console.print(table)
