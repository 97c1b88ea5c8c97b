"""`ssmbench check`: run every (case, impl) pair of a spec once and verify it against the reference.

A failing pair (wrong result, exception, bad config) is reported and the run goes on; the
count of passes and failures is what the command ends with.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ssmbench.errors import UsageError
from ssmbench.expand import expand, select_cases
from ssmbench.impl import registry
from ssmbench.planning import impl_plan
from ssmbench.spec import SweepFile
from ssmbench.verify import Comparison, verify
from ssmbench.workload import make_workload


@dataclass
class CheckResult:
    case_id: str
    impl: str
    status: str  # "ok" | "fail" | "error"
    comparisons: list[Comparison] = field(default_factory=list)
    message: str = ""
    seconds: float = 0.0


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but torch sees no CUDA device")
    if device != "cpu" and not device.startswith("cuda"):
        raise UsageError(f"--device {device!r}: allowed: auto, cpu, cuda, cuda:N")
    return torch.device(device)


def check_pair(case, impl, workload) -> CheckResult:
    """Build, run once and verify one impl on one case; never raises."""
    start = time.perf_counter()
    try:
        chain = impl.build(case, workload)
        chain()
        if workload_device(workload).type == "cuda":
            torch.cuda.synchronize()
        comparisons = verify(case, workload, chain.outputs())
        if not comparisons:
            return CheckResult(case.id, impl.name, "error", message="the impl returned nothing to verify")
        status = "ok" if all(c.ok for c in comparisons) else "fail"
        return CheckResult(case.id, impl.name, status, comparisons, seconds=time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - a failing case is recorded, the run goes on
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        message = f"{type(exc).__name__}: {exc} ({tb.filename.rsplit('/', 1)[-1]}:{tb.lineno})"
        return CheckResult(case.id, impl.name, "error", message=message, seconds=time.perf_counter() - start)


def workload_device(workload) -> torch.device:
    return workload.start_state.device


def run_check(sweep_file: SweepFile, impl_names: list[str] | None, case_glob: str | None, device: str,
              console: Console, verbose: bool = False) -> tuple[int, int]:
    """Check every selected (case, impl) pair; print failures (all pairs with ``verbose``)."""
    dev = resolve_device(device)
    impls = registry()
    if impl_names:
        unknown = [n for n in impl_names if n not in impls]
        if unknown:
            raise UsageError(f"--impl {', '.join(unknown)}: unknown; allowed: {', '.join(sorted(impls))}")
    results: list[CheckResult] = []
    for sweep in sweep_file.sweeps:
        names = [n for n in sweep.spec.impls if not impl_names or n in impl_names]
        names += [n for n in (impl_names or []) if n not in names and impls[n].family == sweep.family]
        for case in select_cases(expand(sweep).cases, case_glob):
            runnable = [impls[n] for n in names if impl_plan(impls[n], case, sweep) is None]
            if not runnable:
                continue
            try:
                workload = make_workload(case, dev)
            except Exception as exc:  # noqa: BLE001
                results += [CheckResult(case.id, i.name, "error", message=f"workload: {exc}") for i in runnable]
                continue
            for impl in runnable:
                result = check_pair(case, impl, workload)
                results.append(result)
                if verbose or result.status != "ok":
                    _print_result(console, result)
    _print_summary(console, results)
    passed = sum(r.status == "ok" for r in results)
    return passed, len(results) - passed


def _print_result(console: Console, r: CheckResult) -> None:
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
