"""`ssmbench accuracy`: the cases, the lockstep loop (impl from its own stored state, fp64 chain
from the exact state), the records, the results file, the table and the plot (docs/accuracy.md).

Per step the loop enqueues only device work (draws, kernels, fp64 recurrence, error norms into a
device buffer): the errors come back to the host once per (case, impl). (The references' own
index checks still sync; the Triton steppers skip theirs.)
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape

from ssmbench.errors import UsageError
from ssmbench.families.common import SR_STEP
from ssmbench.families.mamba2 import reference_step
from ssmbench.impls.base import Impl
from ssmbench.measure.target import describe_exception, resolve_device
from ssmbench.output.accuracy_report import AccuracyRecord, summary_table, write_accuracy, write_plot
from ssmbench.output.results import case_params
from ssmbench.runs.accuracy.steppers import stepper_factory, unsupported_reason
from ssmbench.runs.accuracy.stream import InputStream, make_setup, slow_heads
from ssmbench.runs.planning import impl_plan, select_impls
from ssmbench.spec.case import Case
from ssmbench.spec.expand import expand, id_of, select_cases
from ssmbench.spec.load import Sweep, SweepFile

FORMATS: tuple[tuple[str, str], ...] = (
    ("fp32", "rn"), ("bf16", "rn"), ("bf16", "sr"), ("fp16", "rn"), ("fp16", "sr"),
    ("int8", "rn"), ("int8", "sr"), ("fp8", "rn"), ("fp8", "sr"),
)
"""Every storage format x rounding (docs/spec.md §8; fp32 stores exactly, so no fp32 SR)."""
DEFAULT_BATCH = 8
FIRST_SR_STEP = SR_STEP + 1
"""Decode step i (0-based) keys its SR by FIRST_SR_STEP + i: the start state was stored at SR_STEP."""


@dataclass
class AccuracyOptions:
    steps: int = 256
    impls: list[str] = field(default_factory=list)
    case_glob: str | None = None
    batch: int = DEFAULT_BATCH
    every_format: bool = False


def accuracy_cases(sweep: Sweep, options: AccuracyOptions) -> list[Case]:
    """The sweep's cases as accuracy runs them: at ``batch`` rows on direct slots, without PDL
    (neither changes the arithmetic; nor do the pool and L2 modes, so cases differing only there
    collapse into one), every format x rounding with ``every_format``; then ``--case`` on the ids
    this gives."""
    seen: dict[str, Case] = {}
    for case in expand(sweep).cases:
        formats = FORMATS if options.every_format else ((case.state_dtype, case.rounding),)
        for fmt, rounding in formats:
            c = dataclasses.replace(case, batch=options.batch, pool="direct", pdl=False, state_dtype=fmt,
                                    rounding=rounding)
            c = dataclasses.replace(c, id=id_of(c))
            seen.setdefault(c.id, c)
    return select_cases(list(seen.values()), options.case_glob)


def relative_error(got: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """||got - exact|| / ||exact|| (Frobenius, fp64), a 0-d device tensor: no host sync."""
    g, e = got.to(torch.float64).reshape(-1), exact.to(torch.float64).reshape(-1)
    return torch.linalg.vector_norm(g - e) / torch.linalg.vector_norm(e)


def run_pair(case: Case, impl: Impl, steps: int, device: torch.device) -> list[list[float]]:
    """``steps`` decode steps of ``impl`` on ``case`` with the fp64 chain in lockstep; returns
    per step [y, state, slow-head state] relative errors."""
    wl = make_setup(case, device)
    factory = stepper_factory(impl)
    assert factory is not None
    stepper = factory(case, wl)
    stream = InputStream(case, wl, device)
    exact = stepper.state().clone()  # both chains start from the stored start state
    slow = slow_heads(case.shape.nheads, device).nonzero().squeeze(1)  # indices: a bool mask would sync per step
    rows = torch.arange(case.batch, device=device)
    errors = torch.empty((steps, 3), dtype=torch.float64, device=device)
    for i in range(steps):
        conv_out = stream.next()
        y = stepper.step(conv_out, FIRST_SR_STEP + i)
        y_exact, states = reference_step(wl, conv_out, exact)
        exact = states[rows, wl.accepted - 1]
        got = stepper.state()
        errors[i, 0] = relative_error(y.reshape(y_exact.shape), y_exact)
        errors[i, 1] = relative_error(got, exact)
        errors[i, 2] = relative_error(got[:, slow], exact[:, slow])
    return errors.cpu().tolist()


def accuracy_record(case: Case, impl: Impl, sweep: Sweep, steps: int, device: torch.device) -> AccuracyRecord:
    """One (case, impl) as a record: ok with its error series, or error with the exception said."""
    params = case_params(case)
    if not impl.uses_window:
        params["window"] = None
    record = AccuracyRecord(id=case.id, impl=impl.name, sweep=sweep.name, status="ok", params=params)
    start = time.perf_counter()
    try:
        series = run_pair(case, impl, steps, device)
    except Exception as exc:  # noqa: BLE001 - one failing pair is recorded, the run goes on
        record.status, record.message = "error", describe_exception(exc)
    else:
        record.steps = steps
        record.errors = {"y": [r[0] for r in series], "state": [r[1] for r in series],
                         "state_slow": [r[2] for r in series]}
    record.seconds = round(time.perf_counter() - start, 3)
    return record


def planned_pairs(sweep_file: SweepFile, options: AccuracyOptions,
                  impls: dict[str, Impl]) -> list[tuple[Sweep, Case, Impl]]:
    """Every (case, impl) to run, in spec order; impls that cannot run a case are left out."""
    pairs = []
    for sweep in sweep_file.sweeps:
        names = select_impls(sweep, options.impls or None, impls)
        for case in accuracy_cases(sweep, options):
            for name in names:
                impl = impls[name]
                if impl_plan(impl, case, sweep) is None and unsupported_reason(impl, case) is None:
                    pairs.append((sweep, case, impl))
    return pairs


def run_accuracy(sweep_file: SweepFile, options: AccuracyOptions, device: str, output: Path,
                 env: dict[str, Any], console: Console) -> list[AccuracyRecord]:
    """Run every planned pair, print its line and the summary table, write the results JSON and
    the plot (``output`` with ``.png``)."""
    from ssmbench.impls.registry import registry

    if options.steps < 1:
        raise UsageError(f"--steps {options.steps}: must be at least 1")
    if options.batch < 1:
        raise UsageError(f"--batch {options.batch}: must be at least 1")
    dev = resolve_device(device)
    pairs = planned_pairs(sweep_file, options, registry())
    if not pairs:
        what = f" matching --case {options.case_glob!r}" if options.case_glob else ""
        raise UsageError(f"nothing to run: no (case, impl) pair of {sweep_file.path}{what} that accuracy can "
                         "drive (Mamba-2 linear chains; impls: see `ssmbench accuracy --help`)")
    env = {**env, "device_mode": dev.type, "steps": options.steps, "batch": options.batch}
    if dev.type == "cuda":
        env["gpus"] = [{"index": torch.cuda.current_device(), "name": torch.cuda.get_device_name(dev)}]
    records: list[AccuracyRecord] = []
    started = time.perf_counter()
    try:
        for n, (sweep, case, impl) in enumerate(pairs, 1):
            record = accuracy_record(case, impl, sweep, options.steps, dev)
            records.append(record)
            last = record.errors.get("state", [None])[-1] if record.status == "ok" else None
            what = f"state error {last:.2e}" if last is not None else f"{record.status}: {record.message}"
            console.print(f"[{n}/{len(pairs)}] {escape(case.id)} {impl.name}: {escape(what)} "
                          f"({record.seconds:.1f} s)", highlight=False)
    finally:  # a stop (Ctrl-C) or an unexpected error keeps the pairs finished so far (complete: false)
        write_accuracy(output, {**env, "complete": len(records) == len(pairs),
                                "seconds": round(time.perf_counter() - started, 1)}, records)
    console.print(summary_table(records))
    console.print(write_plot(records, output.with_suffix(".png")), highlight=False, markup=False)
    console.print(f"results: {output}", highlight=False, markup=False)
    return records
