"""`ssmbench tune` (ssmbench.runs.tune) and the knob spaces `ssmbench list --knobs` prints;
registered into the app by ssmbench.cli."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ssmbench.cli.common import console, err_console, friendly_errors
from ssmbench.cli.plugins import PluginOption, load_plugins


def tune(
    spec: Annotated[Path, typer.Argument(help="Sweep spec (YAML) whose cases give the tuning groups.")],
    impl: Annotated[str, typer.Option("--impl", help="The impl to tune (one with a knob space: list --knobs).")],
    budget: Annotated[str, typer.Option("--budget", help="Wall-clock budget of this run, e.g. 20m, 90s, 1h.")] = "20m",
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Knob table to write (default: <spec name>.<impl>.knobs.json); its .jsonl log "
        "is kept beside it.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the log: no finished measurement is "
                                                          "taken again.")] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start over, replacing the log.")] = False,
    case: Annotated[str | None, typer.Option("--case", help="Only case ids matching this glob.")] = None,
    batch: Annotated[str | None, typer.Option(
        "--batch", help="Only these batch buckets, e.g. 1,8,64,256,1024 (the table's fallback covers the "
        "batches between them).")] = None,
    filter_: Annotated[list[str] | None, typer.Option(
        "--filter", help="Only cases with key=value[,value...] (repeatable; keys as for `ssmbench sweep`, e.g. "
        "format=fp32,bf16,fp16sr).")] = None,
    rounds: Annotated[int, typer.Option("--rounds", help="Rounds per duel (drift control: a winner must win "
                                                         "every round).")] = 3,
    samples: Annotated[int, typer.Option("--samples", help="Timed samples per config per round.")] = 50,
    max_passes: Annotated[int, typer.Option("--max-passes", help="Passes over the knob blocks.")] = 3,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", help="Band half-width in percent a winner must beat (default: the spec's gate, 3%).")] = None,
    compile_workers: Annotated[int | None, typer.Option(
        "--compile-workers", help="Processes compiling a duel's challengers in parallel (default: CPU cores "
        "on CUDA, capped; 0: off).")] = None,
    plugin: PluginOption = None,
) -> None:
    """Tune an impl's knobs per (shape, batch, format, rounding, window) on this GPU: block
    coordinate descent from what the impl runs today (its table entry, else the default), every
    candidate verified first, winners by the gate's statistics and confirmed against that start;
    writes a knob table (docs/tuning.md).

    Exit 0 done, 1 stopped by a CUDA fault (the config is logged as discarded: --resume goes on
    without it), 2 bad input, 130 interrupted (--resume goes on)."""
    from ssmbench.errors import UsageError
    from ssmbench.runs.tune.run import TuneOptions, run_tune

    load_plugins(plugin)
    try:
        batches = [int(b) for b in batch.split(",")] if batch else []
    except ValueError:
        raise UsageError(f"--batch {batch!r}: comma-separated batch sizes, e.g. 1,8,64") from None
    options = TuneOptions(spec=spec, impl=impl, budget=budget, output=output, resume=resume, fresh=fresh,
                          case=case, batches=batches, filters=filter_ or [], rounds=rounds, samples=samples,
                          max_passes=max_passes, threshold_pct=threshold, compile_workers=compile_workers,
                          argv=sys.argv[1:])
    code = run_tune(options, console, err_console)
    if code:
        raise typer.Exit(code)


def print_knob_spaces(out: Console) -> None:
    """Every tunable impl's knobs (choices, compile-time or not, when they matter), constraints,
    blocks, and the knob tables shipped for it."""
    from ssmbench.impls.registry import registry
    from ssmbench.impls.tuned import tunable_of

    for name, impl in sorted(registry().items()):
        tunable = tunable_of(impl)
        if tunable is None:
            continue
        table = Table(title=f"{name}: knobs")
        for col in ("knob", "type", "choices", "compile-time", "matters when", "what"):
            table.add_column(col, overflow="fold")
        for knob in tunable.space.knobs:
            table.add_row(knob.name, knob.type_name(), ", ".join(map(str, knob.choices)),
                          "yes" if knob.constexpr else "no (launch only)", knob.active_doc or "always", knob.doc)
        out.print(table)
        for rule in tunable.space.constraints:
            out.print(f"  constraint: {rule.text}", highlight=False, markup=False)
        blocks = ", ".join("(" + " ".join(b) + ")" for b in tunable.space.all_blocks())
        out.print(f"  tuned in blocks: {blocks}", highlight=False, markup=False)
        tables = tunable.tables()
        shipped = "; ".join(f"{t.path.name} ({t.gpu}, {len(t.entries)} entries)" for t in tables) or "none"
        out.print(f"  knob tables in {tunable.table_dir}: {shipped}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("tune")(friendly_errors(tune))
