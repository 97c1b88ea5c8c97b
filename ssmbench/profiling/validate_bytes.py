"""`ssmbench validate-bytes`: every impl's byte model (docs/spec.md §10) against the DRAM bytes ncu
measures, over the cases of a (small) sweep.

One ncu process covers every pair: the inner process builds each case's workload once, builds and
verifies each impl's chain, and runs it once inside its own NVTX start/end range
(``ssmbench <impl> <case id>``); ncu profiles every range whose name starts with ``ssmbench``
and the CSV's range column assigns each kernel to its pair. The inner process writes a manifest
(JSON) of the pairs with their byte models and verification status.

Which L2 state the comparison assumes: the byte model counts unique bytes, every region once per
kernel that touches it (docs/spec.md §10), i.e. each kernel starting with a cold L2. ncu's default
``--cache-control all`` writes back and invalidates the caches before every kernel, which is that
condition (the case's own L2 mode is a timing condition and does not apply here). Reads then all
reach DRAM; writes still dirty in L2 when a kernel ends do not (`ssmbench.profiling.ncu.ByteCheck`):
a pair is listed as off only when its model is outside [DRAM bytes, DRAM bytes + kernels x L2] by
more than the threshold, and marked weak where that band is itself wider than the threshold.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ssmbench.measure.target import RANGE_PREFIX, range_name
from ssmbench.profiling.ncu import DRAM_READ, DRAM_WRITE, ByteCheck, KernelRow, total

THRESHOLD_PCT = 10.0
NVTX_INCLUDE = f"regex:{RANGE_PREFIX} "
"""ncu filter matching every range this package opens (a regex search over range names)."""


@dataclass
class Pair:
    """One (case, impl) to measure, as the manifest records it."""

    sweep: str
    case: str
    impl: str
    range: str
    model_bytes: int | None = None
    status: str = "planned"  # planned | ok | fail | error
    message: str = ""
    l2_bytes: int | None = None
    """The device's L2 size (bounds the writes ncu cannot see)."""


def plan_pairs(sweep_file: Any, impl_names: list[str], filters: list[str]) -> tuple[list[tuple[Any, Any, Any]],
                                                                                    list[str]]:
    """(sweep, case, impl) triples to measure: the sweep's impls (or ``impl_names``) that run the case
    and declare a byte model; and a note per impl left out for having none."""
    from ssmbench.runs.planning import check_impl_names, impl_plan, select_impls
    from ssmbench.runs.sweep.options import parse_filters
    from ssmbench.runs.sweep.plan import matches
    from ssmbench.spec.expand import expand

    impls = check_impl_names(impl_names)
    wanted = parse_filters(filters)
    triples, no_model = [], set()
    for sweep in sweep_file.sweeps:
        names = select_impls(sweep, impl_names, impls)
        for case in expand(sweep).cases:
            if not matches(sweep.name, case, wanted):
                continue
            for name in names:
                impl = impls[name]
                if impl_plan(impl, case, sweep) is not None:
                    continue
                if impl.bytes_moved(case, None) is None:
                    no_model.add(name)
                    continue
                triples.append((sweep, case, impl))
    notes = [f"{name}: no byte model (bytes_moved returns None), not checked" for name in sorted(no_model)]
    return triples, notes


def run_pairs_inner(triples: list[tuple[Any, Any, Any]], device: Any, manifest: Path, *, force: bool = False) -> None:
    """In the process ncu profiles: per case one workload, per impl build + verify + one chain run
    inside its range. Failures are recorded in the manifest and the run goes on (a CUDA fault
    ends the process; the manifest written so far says which pair it was on)."""
    from ssmbench.families import make_workload
    from ssmbench.measure.target import VerificationFailed, describe_exception, prepared_target
    from ssmbench.profiling.target import run_in_range

    pairs: list[Pair] = []
    workloads: dict[str, Any] = {}

    def write() -> None:
        manifest.write_text(json.dumps([asdict(p) for p in pairs], indent=1))

    for sweep, case, impl in triples:
        pair = Pair(sweep.name, case.id, impl.name, range_name(impl.name, case.id), status="running")
        pairs.append(pair)
        write()
        try:
            if case.id not in workloads:
                workloads.clear()
                workloads[case.id] = make_workload(case, device)
            target = prepared_target(case, impl, device, force=force, workload=workloads[case.id])
            pair.model_bytes = target.byte_model()
            pair.l2_bytes = target.l2_bytes
            target.warm_up(1)
            run_in_range(target)
            pair.status = "ok"
        except VerificationFailed as exc:
            pair.status, pair.message = "fail", str(exc)
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            pair.status, pair.message = "error", describe_exception(exc)
        write()


def read_manifest(path: Path) -> list[Pair]:
    return [Pair(**entry) for entry in json.loads(path.read_text())]


@dataclass
class PairResult:
    pair: Pair
    kernels: int
    read: float | None
    """DRAM bytes read."""
    write: float | None
    """DRAM bytes written (short of the truth by what stayed dirty in L2)."""

    @property
    def dram(self) -> float | None:
        return None if self.read is None or self.write is None else self.read + self.write

    @property
    def check(self) -> ByteCheck | None:
        if self.pair.model_bytes is None or self.dram is None:
            return None
        return ByteCheck(self.pair.model_bytes, self.dram, self.kernels, self.pair.l2_bytes)

    @property
    def deviation(self) -> float | None:
        """The model vs the DRAM bytes (docs/spec.md §10's comparison), in %."""
        return None if self.check is None else self.check.deviation


@dataclass
class Report:
    results: list[PairResult]
    problems: list[str]
    """Pairs not measured (verification failed, error, no kernel in the range)."""
    threshold: float = THRESHOLD_PCT

    def off(self) -> list[PairResult]:
        return [r for r in self.results if r.check is not None and r.check.off(self.threshold)]

    def weak(self) -> list[PairResult]:
        return [r for r in self.results if r.check is not None and r.check.weak(self.threshold)]

    def per_impl(self) -> dict[str, dict[str, float]]:
        """Per impl: pairs, worst and mean absolute deviation from the DRAM bytes (%), mean signed
        deviation, pairs off (outside the band) and pairs whose check is weak."""
        summary: dict[str, dict[str, float]] = {}
        for impl in dict.fromkeys(r.pair.impl for r in self.results):
            devs = [r.deviation for r in self.results if r.pair.impl == impl and r.deviation is not None]
            if not devs:
                continue
            worst = max(devs, key=abs)
            mine = [r for r in self.results if r.pair.impl == impl]
            summary[impl] = {"pairs": len(devs), "worst": worst, "mean_abs": statistics.fmean(abs(d) for d in devs),
                             "mean": statistics.fmean(devs), "off": sum(r in self.off() for r in mine),
                             "weak": sum(r in self.weak() for r in mine)}
        return summary


def build_report(pairs: list[Pair], kernels: list[KernelRow], threshold: float = THRESHOLD_PCT) -> Report:
    """Join the manifest with ncu's kernels by range name."""
    results, problems = [], []
    for pair in pairs:
        if pair.status != "ok":
            problems.append(f"{pair.impl} {pair.case}: {pair.status}: {pair.message or 'did not finish'}")
            continue
        mine = [k for k in kernels if k.in_range(pair.range)]
        if not mine:
            problems.append(f"{pair.impl} {pair.case}: no kernel profiled in range {pair.range!r}")
            continue
        results.append(PairResult(pair, len(mine), total(mine, DRAM_READ), total(mine, DRAM_WRITE)))
    return Report(results, problems, threshold)


def render(report: Report, console: Any) -> None:
    from rich.table import Table

    table = Table(title="byte model vs ncu DRAM bytes (cold L2 per kernel: --cache-control all); the chain moved "
                        "between DRAM and DRAM + kernels x L2 (writes left dirty in L2 are not counted)")
    for name in ("impl", "case", "kernels", "model MB", "DRAM MB", "read MB", "write MB", "upper MB", "vs DRAM",
                 "verdict"):
        table.add_column(name, justify="left" if name in ("impl", "case", "verdict") else "right", overflow="fold")

    def mb(value: float | None) -> str:
        return "-" if value is None else f"{value / 1e6:.3f}"

    off, weak = report.off(), report.weak()
    for r in report.results:
        check = r.check
        verdict = "[red]OFF[/]" if r in off else "ok" + (" (weak)" if r in weak else "")
        table.add_row(r.pair.impl, r.pair.case, str(r.kernels), mb(r.pair.model_bytes), mb(r.dram), mb(r.read),
                      mb(r.write), mb(check.upper if check else None),
                      "-" if r.deviation is None else f"{r.deviation:+.1f}%", verdict)
    console.print(table)
    summary = Table(title="per impl: byte model vs DRAM bytes")
    for name in ("impl", "pairs", "worst", "mean |dev|", "mean", "off", "weak"):
        summary.add_column(name, justify="left" if name == "impl" else "right")
    for impl, s in report.per_impl().items():
        summary.add_row(impl, str(int(s["pairs"])), f"{s['worst']:+.1f}%", f"{s['mean_abs']:.1f}%",
                        f"{s['mean']:+.1f}%", str(int(s["off"])), str(int(s["weak"])))
    console.print(summary)
    for problem in report.problems:
        console.print(f"[yellow]not measured[/]: {problem}", highlight=False)
    if weak:
        console.print(f"{len(weak)} pair(s) marked weak: their chain is about the L2's size or smaller, so the "
                      f"writes ncu cannot see could exceed {report.threshold:g}%", highlight=False)
    if off:
        console.print(f"[bold red]{len(off)} byte model(s) off by more than {report.threshold:g}%[/] (to fix):",
                      highlight=False)
        for r in off:
            console.print(f"  {r.pair.impl} {r.pair.case}: model {r.pair.model_bytes:,} B vs DRAM {r.dram:,.0f} B "
                          f"(upper {r.check.upper:,.0f} B)", highlight=False)
    else:
        console.print(f"every byte model within {report.threshold:g}% of what ncu bounds", highlight=False)
