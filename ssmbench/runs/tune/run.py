"""`ssmbench tune` as a whole: options checked, the tuning groups of the spec, one search per
group within the budget (each answered from the log first: `--resume`), the knob table written
and the winners shown against the defaults with their intervals. A CUDA fault stops the run
(exit 1) once the journal has logged the faulting config as discarded: `--resume` goes on."""

from __future__ import annotations

import fnmatch
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ssmbench.errors import UsageError
from ssmbench.impls.knobs import describe_config
from ssmbench.impls.tuned import SCHEMA, Tunable, device_name, load_table, table_key, tunable_of
from ssmbench.output.compare import MIN_SAMPLES, Gate, gates_from_spec
from ssmbench.output.results import log_path, write_document
from ssmbench.runs.sweep.options import parse_filters
from ssmbench.runs.tune.journal import Journal
from ssmbench.runs.tune.search import Fault, SearchResult, descend

EXIT_FAULT = 1
"""`run_tune`'s exit code when a CUDA fault stopped it (the culprit logged: resume goes on)."""


@dataclass
class TuneOptions:
    spec: Path
    impl: str
    budget: str = "20m"
    output: Path | None = None
    resume: bool = False
    fresh: bool = False
    case: str | None = None
    batches: list[int] = field(default_factory=list)
    """Only these batch buckets (the table's fallback covers the batches between them)."""
    filters: list[str] = field(default_factory=list)
    """Only cases matching these ``key=value[,value...]`` items (`ssmbench sweep`'s ``--filter``)."""
    rounds: int = 3
    samples: int = 50
    max_passes: int = 3
    threshold_pct: float | None = None
    compile_workers: int | None = None
    argv: list[str] = field(default_factory=list)


def parse_budget(text: str) -> float:
    """``20m``, ``90s``, ``1h``, ``1h30m`` or plain seconds -> seconds."""
    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or match is None:
        raise UsageError(f"--budget {text!r}: a duration such as 20m, 90s, 1h30m")
    h, m, s = (float(g) if g else 0.0 for g in match.groups())
    seconds = 3600 * h + 60 * m + s
    if seconds <= 0:
        raise UsageError(f"--budget {text!r}: must be more than 0")
    return seconds


@dataclass
class Group:
    name: str
    sweep: str
    case: Any
    key: dict[str, Any]


def tuning_groups(sweep_file: Any, impl: Any, tunable: Tunable, case_glob: str | None,
                  batches: list[int] | None = None, filters: dict[str, set[str]] | None = None) -> list[Group]:
    """One group per (table key, batch) of the cases ``impl`` runs; its first case stands for it.
    ``filters``: `ssmbench sweep`'s ``--filter`` (parsed), the same matching."""
    from ssmbench.runs.planning import impl_plan
    from ssmbench.runs.sweep.plan import matches
    from ssmbench.spec.expand import expand

    groups: dict[str, Group] = {}
    for sweep in sweep_file.sweeps:
        if impl.family != sweep.family:
            continue
        for case in expand(sweep).cases:
            if case_glob and not fnmatch.fnmatchcase(case.id, case_glob):
                continue
            if batches and case.batch not in batches:
                continue
            if filters and not matches(sweep.name, case, filters):
                continue
            if impl_plan(impl, case, sweep) is not None:
                continue
            key = table_key(case, tunable.uses_window)
            name = "-".join(str(v) for v in (key["shape"], f"b{case.batch}", f"T{key['T']}",
                                             key["state_dtype"] + ("sr" if key["rounding"] == "sr" else ""),
                                             f"w{key['window']}" if key["window"] is not None else None) if v)
            groups.setdefault(name, Group(name, sweep.name, case, key))
    return list(groups.values())


def run_tune(options: TuneOptions, console: Console, err_console: Console | None = None) -> int:
    """The whole command; returns the exit code: 0 done, `EXIT_FAULT` stopped by a CUDA fault."""
    from ssmbench.impls.registry import plugins_from_env, registry
    from ssmbench.runs.sweep.compile import compile_workers
    from ssmbench.runs.sweep.options import check_output_path, load_spec
    from ssmbench.runs.sweep.run import sweep_device

    if options.resume and options.fresh:
        raise UsageError("--resume and --fresh contradict each other")
    for name, value in (("--rounds", options.rounds), ("--max-passes", options.max_passes)):
        if value < 1:
            raise UsageError(f"{name} {value}: must be at least 1")
    if options.threshold_pct is not None and not 0 < options.threshold_pct < 100:  # also NaN
        raise UsageError(f"--threshold {options.threshold_pct}: allowed 0 < PCT < 100")
    if options.samples < MIN_SAMPLES:
        raise UsageError(f"--samples {options.samples}: the gate's interval needs at least {MIN_SAMPLES} per round")
    budget = parse_budget(options.budget)
    plugins = plugins_from_env()  # handed on to the compile processes
    impls = registry()  # imports them here too
    if options.impl not in impls:
        raise UsageError(f"--impl {options.impl!r}: unknown; impls: {', '.join(sorted(impls))}")
    impl = impls[options.impl]
    tunable = tunable_of(impl)
    if tunable is None:
        have = ", ".join(n for n, i in sorted(impls.items()) if tunable_of(i) is not None)
        raise UsageError(f"--impl {options.impl}: declares no knob space; tunable impls: {have}")
    filters = parse_filters(options.filters)
    sweep_file = load_spec(options.spec)
    groups = tuning_groups(sweep_file, impl, tunable, options.case, options.batches, filters)
    if not groups:
        raise UsageError(f"{options.spec}: no case of it runs {options.impl}"
                         + (f" and matches --case {options.case!r}" if options.case else "")
                         + "".join(f" and --filter {item}" for item in options.filters)
                         + (f" at --batch {','.join(map(str, options.batches))}" if options.batches else ""))
    gate = gates_from_spec(sweep_file.sweeps).get(groups[0].sweep, Gate())
    if options.threshold_pct is not None:
        gate = Gate(options.threshold_pct, gate.confidence)
    device = sweep_device("tune")
    gpu_model = None  # the GPU model the tune times on (CUDA_VISIBLE_DEVICES picks it); None: CPU test mode
    if device == "cuda":
        import torch

        gpu_model = device_name(torch.device("cuda", 0))
    workers = compile_workers(options.compile_workers, device)
    output = check_output_path(options.output or f"{sweep_file.name}.{options.impl}.knobs.json", "-o")
    log = check_output_path(log_path(output), "-o's log")  # appended to from the first measurement on
    settings = {"impl": options.impl, "spec_name": sweep_file.name, "rounds": options.rounds,
                "samples": options.samples, "threshold_pct": gate.threshold_pct, "confidence": gate.confidence,
                "max_passes": options.max_passes, "argv": options.argv}
    if options.fresh and log.exists():
        log.unlink()
    journal = Journal(log, settings, resume=options.resume, complete=tunable.space.complete)
    if journal.repaired:
        console.print(journal.repaired, highlight=False, markup=False)

    session: list[Any] = []
    from ssmbench.runs.prewarm import CompilePool

    compile_pool = CompilePool(workers)  # started at the first duel with challengers to compile

    def live(group: Group):
        from ssmbench.measure.runner import Session, WorkerConfig
        from ssmbench.runs.tune.gpu import TargetMeasurer

        if not session:
            session.append(Session(WorkerConfig(device=device, gpu_index=0)))  # CUDA_VISIBLE_DEVICES picks it
            console.print(f"timing on {session[0].info.get('name')} ({session[0].timer.name})", highlight=False)
        return TargetMeasurer(session[0], group.case, impl, options.samples, workers, plugins, pool=compile_pool)

    start = time.monotonic()
    results: list[tuple[Group, SearchResult, dict]] = []
    group = groups[0]
    try:
        for logged in groups:  # before any group is measured: a stop later would leave no table for those done
            if logged.name in journal.starts and (problem := tunable.space.problem(journal.starts[logged.name][0])):
                raise UsageError(f"{log}: the logged start of {logged.name}: {problem}; use another -o or --fresh")
        for number, group in enumerate(groups):
            share = (budget - (time.monotonic() - start)) / (len(groups) - number)
            deadline = time.monotonic() + share
            measurer = journal.replaying(group.name, lambda g=group: live(g))
            default = tunable.default_config(group.case)
            first, source = journal.start(group.name, *starting_config(tunable, group.case, gpu_model))
            console.print(f"[{number + 1}/{len(groups)}] {group.name}: from {describe_config(first)} ({source})",
                          highlight=False)
            result = descend(tunable.space, first, measurer, gate, rounds=options.rounds,
                             max_passes=options.max_passes,
                             out_of_time=lambda m=measurer, d=deadline: m.out_of_time(lambda: time.monotonic() > d))
            results.append((group, result, default))
            journal.write({"type": "result", "group": group.name, "start": first, "default": default,
                           "best": result.best, "stopped": result.stopped,
                           "discarded": [[c, why] for c, why in result.discarded], "replayed": measurer.replayed})
            for config, why in result.discarded:
                console.print(f"  discarded {describe_config(config)}: {why}", highlight=False, markup=False)
            console.print(f"  -> {describe_config(result.best)} ({result.stopped})", highlight=False)
    except Fault as fault:
        (err_console or console).print(
            f"error: {group.name}: {describe_config(fault.config)}: {fault.problem}; the log has it as discarded: "
            f"run the same command with --resume to go on without it (log: {log})",
            highlight=False, markup=False)
        return EXIT_FAULT
    finally:
        journal.close()
        compile_pool.close()
    gpu_name = session[0].info.get("name") if session else gpu_model
    write_table(output, options.impl, gpu_name, results, settings)
    console.print(report(results, gate))
    existing = load_table(tunable.table_path(gpu_model), options.impl, tunable.space) if gpu_model else None
    spec_groups = tuning_groups(sweep_file, impl, tunable, None)  # every batch of the spec, not only the tuned ones
    for line in untimed_cover_notes(results, spec_groups, existing):
        console.print(line, highlight=False, markup=False)
    console.print(f"knob table: {output} (log: {log})", highlight=False, markup=False)
    return 0


def covered_batches(batch: int, spec_batches: list[int], buckets: set[int]) -> list[int]:
    """The spec's batches an entry at ``batch`` would stand for once installed: those above it and below
    the next bucket (``buckets``: the run's tuned batches and the installed table's entries, one key),
    the table's nearest bucket at or below them (`Table.lookup`) being ``batch``."""
    following = min((b for b in buckets if b > batch), default=None)
    return [b for b in sorted(spec_batches) if b > batch and (following is None or b < following)]


def untimed_cover_notes(results: list, spec_groups: list[Group], table: Any) -> list[str]:
    """One line per new winner that would also run at batches of the spec nobody timed it at (a tuned
    bucket stands for every batch up to the next entry, docs/tuning.md): session 15 shipped a b1 entry
    that ran b4 30% slower. ``table``: the installed `Table` for this GPU model, or None."""
    lines = []
    for group, result, _default in results:
        if result.best == result.default:
            continue  # kept: nothing changes at the batches it covers
        buckets = {g.case.batch for g, _r, _d in results if g.key == group.key}
        if table is not None:
            buckets |= table.buckets(group.key)
        covered = covered_batches(group.case.batch, [g.case.batch for g in spec_groups if g.key == group.key],
                                  buckets)
        if covered:
            lines.append(f"note: {group.name}'s new entry would also run at batch {', '.join(map(str, covered))} of "
                         f"this spec, where nothing timed it: sweep those batches against the start before installing "
                         f"the table (ssmbench sweep --filter batch=..., then compare), or tune them as buckets of "
                         f"their own (--batch)")
    return lines


def starting_config(tunable: Tunable, case: Any, gpu: str | None) -> tuple[dict, str]:
    """Where a group's descent starts, and why: what the impl runs today on this GPU model -- its
    table's entry (`Tunable.choose`), else the hand-picked default. The final duel confirms the
    result against it, so a re-tune never ships a config slower than the one it replaces."""
    config, source = tunable.choose(case, gpu)
    if config is None:
        return tunable.default_config(case), "the default"
    return dict(config), f"the table: {source}"


def write_table(output: Path, impl: str, gpu: str | None, results: list, settings: dict[str, Any]) -> None:
    """The winners as a knob table (`ssmbench.impls.tuned`): copy it to the family's tuned/ folder
    (`tools/gpu/install_tables.py`). ``results``: (group, `SearchResult`, the hand-picked default).
    A group whose result is the default writes ``knobs: null`` ("the default"), not the default's
    config at that batch: pinned, it would stand for every batch up to the next bucket, where the
    hand rule may pick another config nobody measured against it."""
    entries = []
    for group, result, default in results:
        start = "the default" if result.default == default else describe_config(result.default)
        change = (f"; {result.confirmation.change_pct:+.1f}% {result.confirmation.interval_text()}"
                  if result.confirmation is not None and result.best != result.default else "")
        entries.append({**group.key, "batch": group.case.batch,
                        "knobs": None if result.best == default else result.best,
                        "note": f"ssmbench tune: {result.stopped}; from {start}; default {describe_config(default)}"
                                + change})
    data = {"schema": SCHEMA, "gpu": gpu or "unknown (every round replayed from the log)", "impl": impl,
            "tune": {k: v for k, v in settings.items() if k != "argv"}, "entries": entries}
    write_document(output, data)


def report(results: list, gate: Gate) -> Table:
    table = Table(title=f"tune: winners against where each group started (its table entry, else the default; gate: "
                        f"±{gate.threshold_pct:g}%, {gate.confidence:g} interval; a winner must be FASTER in every "
                        "round)")
    for col in ("group", "start", "winner", "start us", "winner us", "change", "interval", "verdict", "stopped"):
        table.add_column(col, overflow="fold")
    for group, result, _default in results:
        row = result.confirmation
        same = result.best == result.default
        winner = "(kept)" if same else describe_config(result.best)
        table.add_row(group.name, describe_config(result.default), winner,
                      f"{row.old_median_us:.2f}" if row and row.old_median_us else "",
                      f"{row.new_median_us:.2f}" if row and row.new_median_us and not same else "",
                      f"{row.change_pct:+.1f}%" if row and row.change_pct is not None else "",
                      row.interval_text() if row else "", row.verdict if row else "kept", result.stopped)
    return table
