"""`ssmbench compare` (the regression gate) and `ssmbench baseline save|show|path`.

The decisions are `ssmbench.output.compare`'s (pure); this module reads the files, re-measures for
``--rerun`` through the sweep machinery, prints, and writes the Markdown / JUnit reports.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ssmbench.errors import UsageError
from ssmbench.output.compare import (
    CALIBRATION_HEADER,
    DEFAULT_CONFIDENCE,
    DEFAULT_THRESHOLD_PCT,
    TABLE_HEADER,
    Comparison,
    Gate,
    Row,
    baseline_span,
    calibration_rows,
    compare_results,
    decide_rerun,
    device_mismatch,
    gates_from_spec,
    input_problem,
    sort_rows,
    summary_line,
    table_rows,
    to_junit,
    to_markdown,
)
from ssmbench.output.results import LogContents, load_results

VERDICT_STYLE = {"FAILED": "bold red", "REDRAWN": "bold red", "SLOWER": "red", "AMBIGUOUS": "yellow",
                 "MISSING": "magenta", "NEW": "cyan", "SAME": "", "FASTER": "green"}
DEFAULT_RERUN_ROUNDS = 3
RootOption = Annotated[Path | None, typer.Option(
    "--dir", help="Baselines directory (default: the checkout's baselines/, else the copies shipped with ssmbench).")]


def load_gates(spec: Path | None, new: LogContents, explicit: bool) -> tuple[dict[str, Gate], str]:
    """Per-sweep gates from the spec (``--spec``, else the one NEW was measured from), and where
    they came from. An explicit ``--spec`` must load; an implicit one that is gone is only noted."""
    from ssmbench.spec.load import load_sweep_file

    path = spec or (Path(new.env["spec"]) if new.env.get("spec") else None)
    if path is None:
        return {}, "no spec recorded in NEW: default gate"
    if not path.is_file():
        if explicit:
            raise UsageError(f"--spec {path}: no such file")
        return {}, f"spec {path} not found: default gate"
    try:
        return gates_from_spec(load_sweep_file(path).sweeps), f"gate from {path}"
    except UsageError as exc:  # the spec loader says every problem of any file as a SpecError
        # an implicit spec (named by NEW's env.spec) is optional: failing to read it falls back
        if explicit:
            raise
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        return {}, f"spec {path} unreadable ({first}): default gate"


def rerun_rows(comparison: Comparison, new: LogContents, old: LogContents, spec: Path, rounds: int,
               out_dir: Path, gates: dict[str, Gate], default: Gate, console: Console,
               err_console: Console) -> Comparison:
    """Re-measure the SLOWER and AMBIGUOUS pairs ``rounds`` times, each round a separate sweep run
    of just those pairs (fresh workers), and decide them on the fresh samples (docs/gate.md)."""
    from ssmbench.runs.sweep.options import SweepOptions
    from ssmbench.runs.sweep.pool import INTERRUPTED_CODES
    from ssmbench.runs.sweep.run import DEVICE_ENV, run_sweep

    flagged = [r for r in comparison.rows if r.verdict in ("SLOWER", "AMBIGUOUS")
               and r.key in new.records and r.key in old.records]
    if not flagged:
        console.print("--rerun: nothing SLOWER or AMBIGUOUS to re-measure", highlight=False)
        return comparison
    if os.environ.get(DEVICE_ENV, "cuda") != "cpu":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--rerun re-measures on a GPU and torch sees none here; compare without --rerun")
    if not spec.is_file():
        raise UsageError(f"--rerun needs the sweep spec NEW was measured from; {spec} is not a file (give --spec)")
    ids = sorted({r.id for r in flagged})
    impls = sorted({r.impl for r in flagged})
    sweeps = sorted({r.sweep for r in flagged})
    filters = [f"sweep={','.join(sweeps)}", "case=" + ",".join(i.replace("[", "[[]") for i in ids)]
    out_dir.mkdir(parents=True, exist_ok=True)
    fresh: dict[tuple[str, str, str], list[list[float]]] = {r.key: [] for r in flagged}
    failed: dict[tuple[str, str, str], str] = {}
    for i in range(rounds):
        output = out_dir / f"round{i + 1}.json"
        console.print(f"--rerun round {i + 1}/{rounds}: {len(flagged)} pair(s) -> {output}", highlight=False)
        code = run_sweep(SweepOptions(spec=spec, output=output, impls=impls, filters=filters, fresh=True,
                                      argv=["sweep", str(spec), "-o", str(output), "(compare --rerun)"]),
                         console=console, err_console=err_console)
        if code in INTERRUPTED_CODES:  # stopped by a signal: no verdict from a partial round
            raise KeyboardInterrupt
        got = load_results(output)
        mismatch = device_mismatch(got, old)
        if mismatch:
            raise UsageError(f"--rerun measured on another GPU model than the baseline: {mismatch}")
        for key in fresh:
            record = got.records.get(key)
            if record is None:
                continue
            if record.status in ("fail", "error"):
                failed[key] = f"rerun round {i + 1}: {record.status}: {record.message}"[:300]
            elif record.status == "ok" and record.samples_us:
                fresh[key].append(record.samples_us)
    rows: list[Row] = [r for r in comparison.rows if r.key not in fresh]
    for row in flagged:
        gate = gates.get(row.sweep, default)
        if row.key in failed:
            rows.append(Row(row.sweep, row.id, row.impl, "FAILED", old_median_us=row.old_median_us,
                            note=failed[row.key], threshold_pct=gate.threshold_pct))
        elif not fresh[row.key]:
            row.note = (row.note + "; " if row.note else "") + "rerun: not measured, verdict from NEW"
            rows.append(row)
        else:
            base = old.records[row.key]
            rows.append(decide_rerun(row.sweep, row.id, row.impl, fresh[row.key], base.samples_us, gate,
                                     baseline_span(base)))
    return dataclasses.replace(comparison, rows=sort_rows(rows))


def print_comparison(console: Console, comparison: Comparison, title: str) -> None:
    """The verdict table, then both runs' calibration and the shift diagnosis. Every cell from a
    file is escaped: a case id or message is never read as rich markup."""
    table = Table(title=escape(title))
    for name in TABLE_HEADER:
        table.add_column(name, no_wrap=name in ("case id", "verdict"), overflow="fold")
    for row, cells in zip(comparison.rows, table_rows(comparison.rows), strict=True):
        style = VERDICT_STYLE.get(row.verdict, "")
        cells = [escape(c) for c in cells]
        cells[6] = f"[{style}]{cells[6]}[/]" if style else cells[6]
        table.add_row(*cells)
    console.print(table)
    if comparison.calibration:
        calibration = Table(title="Calibration (each run's GPUs, env.gpus[])")
        for name in CALIBRATION_HEADER:
            calibration.add_column(name, overflow="fold")
        for cells in calibration_rows(comparison.calibration):
            calibration.add_row(*(escape(c) for c in cells))
        console.print(calibration)
    console.print(f"diagnosis: {comparison.shift.text}", highlight=False, markup=False)
    for line in comparison.by_device:
        console.print(f"  by GPU: {line}", highlight=False, markup=False)


def write_report(path: Path, text: str, option: str) -> None:
    """Write a report file; a path that cannot be written is bad input (exit 2), not a traceback."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write ({exc.strerror or exc})") from None


def register(app: typer.Typer) -> None:
    """Add `compare`, `merge` and the `baseline` sub-app to the `ssmbench` app."""
    from ssmbench.cli.common import console, err_console, friendly_errors

    @app.command()
    @friendly_errors
    def compare(
        new: Annotated[Path, typer.Argument(help="Results of the run under test (JSON, or its .jsonl log).")],
        baseline: Annotated[Path, typer.Argument(
            help="Results to compare against (e.g. baselines/<gpu>/<sweep>.json).")],
        threshold: Annotated[float | None, typer.Option(
            "--threshold", help="Band half-width in percent (default: the spec's gate.threshold_pct, else 3).",
        )] = None,
        markdown: Annotated[Path | None, typer.Option(
            "--markdown", help="Also write a Markdown report (CI job summary).")] = None,
        junit: Annotated[Path | None, typer.Option(
            "--junit", help="Also write JUnit XML (one testcase per case and impl).")] = None,
        allow_device_mismatch: Annotated[bool, typer.Option(
            "--allow-device-mismatch", help="Compare results from different GPU models anyway.")] = False,
        rerun: Annotated[bool, typer.Option(
            "--rerun", help="GPU only: re-measure SLOWER and AMBIGUOUS pairs in fresh runs, then decide on those.",
        )] = False,
        rerun_rounds: Annotated[int, typer.Option("--rerun-rounds", min=1, max=20,
                                                  help="Fresh runs per --rerun.")] = DEFAULT_RERUN_ROUNDS,
        rerun_dir: Annotated[Path | None, typer.Option(
            "--rerun-dir", help="Where --rerun writes its results (default: <NEW>.rerun/ beside NEW).")] = None,
        spec: Annotated[Path | None, typer.Option(
            "--spec", help="Sweep spec for the gate settings and --rerun (default: the one NEW records).")] = None,
        fail_on_missing: Annotated[bool, typer.Option(
            "--fail-on-missing", help="Exit 2 when a baseline pair is MISSING (not measured ok in NEW).",
        )] = False,
        plots: Annotated[Path | None, typer.Option(
            "--plots", help="Also draw each pair's change and interval into DIR (PNG, SVG; needs ssmbench[plot]); "
            "--markdown embeds it.")] = None,
    ) -> None:
        """Gate NEW against BASELINE from the raw samples, per (case, impl).

        Verdicts SLOWER, FASTER, SAME, AMBIGUOUS, NEW, MISSING, FAILED, REDRAWN (docs/gate.md). Exit
        0 ok, 1 SLOWER (only), 2 FAILED, REDRAWN (the baseline timed other draws of a case), bad or
        unusable input (nothing shared, an ok record without samples), or MISSING with
        --fail-on-missing, 3 only AMBIGUOUS left.
        """
        if threshold is not None and not (0 < threshold < 100):  # also NaN
            raise UsageError(f"--threshold {threshold}: allowed 0 < PCT < 100")
        if plots is not None:
            from ssmbench.output.plot import pyplot

            pyplot()  # matplotlib missing: exit 2 before any work
        new_results, old_results = load_results(new), load_results(baseline)
        mismatch = device_mismatch(new_results, old_results)
        if mismatch and not allow_device_mismatch:
            raise UsageError(f"{mismatch}: refusing to compare different GPU models (--allow-device-mismatch "
                             "to compare anyway)")
        problem = input_problem(new_results, old_results)
        if problem:
            raise UsageError(f"{new} vs {baseline}: {problem}")
        gates, gate_source = load_gates(spec, new_results, explicit=spec is not None)
        if threshold is not None:
            gates = {name: Gate(threshold, g.confidence) for name, g in gates.items()}
            gate_source += f"; --threshold {threshold:g}"
        default = Gate(threshold if threshold is not None else DEFAULT_THRESHOLD_PCT, DEFAULT_CONFIDENCE)
        comparison = compare_results(new_results, old_results, gates, default)
        comparison.fail_on_missing = fail_on_missing
        if mismatch:
            comparison.warnings.insert(0, f"different GPU models ({mismatch}), compared as asked")
        if rerun:
            spec_path = spec or Path(str(new_results.env.get("spec") or ""))
            out_dir = rerun_dir or new.with_name(new.name.removesuffix(".json").removesuffix(".jsonl") + ".rerun")
            comparison = rerun_rows(comparison, new_results, old_results, spec_path, rerun_rounds, out_dir, gates,
                                    default, console, err_console)
        shown = next(iter(gates.values()), default) if len(set(gates.values())) == 1 else default
        print_comparison(console, comparison, f"{new} vs {baseline} (±{shown.threshold_pct:g}%, "
                                              f"{shown.confidence:.0%} interval; {gate_source})")
        for warning in comparison.warnings:
            err_console.print(f"[yellow]warning[/]: {escape(warning)}", highlight=False)
        plot_paths: list[Path] = []
        if plots is not None:  # the verdicts stand: a figure that cannot be drawn is a warning, not the exit code
            from ssmbench.output.plot import plot_comparison

            try:
                plot_paths = plot_comparison(comparison, new_results, old_results, str(new), str(baseline), plots)
            except UsageError as exc:
                err_console.print(f"[yellow]warning[/]: --plots: {escape(str(exc))}", highlight=False)
        if markdown is not None:
            from ssmbench.output.plot import markdown_images

            write_report(markdown, to_markdown(comparison, str(new), str(baseline), shown)
                         + markdown_images(plot_paths, markdown), "--markdown")
        if junit is not None:
            write_report(junit, to_junit(comparison), "--junit")
        code = comparison.exit_code
        gating = sum(1 for r in comparison.rows if r.verdict in comparison.gating)
        missing = comparison.counts["MISSING"]
        if fail_on_missing and missing:
            err_console.print(f"{missing} baseline pair(s) MISSING (not measured ok in NEW): exit 2 "
                              "(--fail-on-missing)", highlight=False, markup=False)
        console.print(f"{summary_line(comparison.rows)}; exit {code}"
                      + (f" ({gating} gating)" if gating else ""), highlight=False, markup=False)
        if code:
            raise typer.Exit(code)

    @app.command()
    @friendly_errors
    def merge(
        inputs: Annotated[list[Path], typer.Argument(
            help="Results of the parts of one sweep run (JSON, or a .jsonl log): e.g. its --shard i/n runs.")],
        output: Annotated[Path, typer.Option("-o", "--output", help="The merged results JSON.")],
        markdown: Annotated[Path | None, typer.Option(
            "--markdown", help="Also write the merged run's tables as Markdown.")] = None,
    ) -> None:
        """Join the shards of one sweep (``sweep --shard i/n`` run as separate invocations, on
        other GPUs or machines) into one results file, for `compare` and `baseline save`.

        Refused (exit 2): files of different specs, commits or device modes, or one pair measured
        twice with different results. Each GPU's calibration is kept (env.gpus); env.merged_from
        says which file gave what. A missing shard or an unfinished part gives complete: false.
        """
        from ssmbench.output.merge import merge_results
        from ssmbench.output.report import markdown as to_md
        from ssmbench.output.report import pivot, print_tables, status_counts
        from ssmbench.output.results import write_results
        from ssmbench.runs.sweep.options import check_output_path

        target = check_output_path(output, "-o")
        md_path = check_output_path(markdown, "--markdown") if markdown is not None else None
        merged = merge_results([(path, load_results(path)) for path in inputs])
        write_results(target, merged.env, merged.devices, merged.records)
        tables = pivot(merged.records, {})
        print_tables(console, tables)
        if md_path is not None:
            md_path.write_text(to_md(tables, merged.records, merged.env, merged.devices))
        for note in merged.notes:
            err_console.print(f"[yellow]note[/]: {escape(note)}", highlight=False)
        counts = ", ".join(f"{n} {s}" for s, n in status_counts(merged.records).items())
        console.print(f"merged {len(inputs)} file(s), {len(merged.devices)} GPU(s): {counts}; results: {target}",
                      highlight=False, markup=False)

    baseline_app = typer.Typer(help="Stored baselines: baselines/<gpu-slug>/<sweep-name>.json.", no_args_is_help=True)
    app.add_typer(baseline_app, name="baseline")

    def _root(root: Path | None) -> Path:
        from ssmbench.output.baselines import BASELINES_DIR

        return root if root is not None else BASELINES_DIR

    def check_default_writable() -> None:
        """`baseline save` without --dir writes into the checkout's baselines/ (kept in git); an
        installed ssmbench has only read-only copies, so it needs --dir."""
        from ssmbench import resources
        from ssmbench.output.baselines import BASELINES_DIR

        if not resources.IN_CHECKOUT:
            raise UsageError(f"baseline save: this ssmbench is installed, not run from a checkout; {BASELINES_DIR} "
                             "holds the copies shipped with it: pass --dir DIR to store the baseline in DIR")
        probe = BASELINES_DIR if BASELINES_DIR.is_dir() else BASELINES_DIR.parent
        if not os.access(probe, os.W_OK):
            raise UsageError(f"baseline save: {probe} is not writable: pass --dir DIR to store the baseline in DIR")

    @baseline_app.command("save")
    @friendly_errors
    def baseline_save(
        results: Annotated[Path, typer.Argument(help="Results JSON of a complete GPU run.")],
        more: Annotated[list[Path] | None, typer.Argument(
            help="More runs of the same sweep on the same GPU model: their medians are stored with "
                 "RESULTS' samples, and compare lays its band around every state seen (docs/gate.md).",
            show_default=False)] = None,
        force: Annotated[bool, typer.Option(
            "--force", help="Store even with failed pairs or an interrupted run.")] = False,
        root: RootOption = None,
    ) -> None:
        """Store RESULTS (with the run medians of MORE runs) as the baseline of its GPU model and sweep."""
        from ssmbench.output.baselines import save_baseline

        if root is None:
            check_default_writable()
        target, replaced = save_baseline(results, _root(root), force=force, more=more or [])
        runs = f" from {1 + len(more)} runs" if more else ""
        console.print(f"{'replaced' if replaced else 'stored'} baseline {target}{runs}", highlight=False,
                      markup=False)

    @baseline_app.command("show")
    @friendly_errors
    def baseline_show(
        root: RootOption = None,
    ) -> None:
        """List the stored baselines: GPU, sweep, cases, date, git sha."""
        from ssmbench.output.baselines import list_baselines

        found = list_baselines(_root(root))
        table = Table(title=escape(f"Baselines ({_root(root)})"))
        for col in ("gpu", "sweep", "cases (ok/all)", "measured", "git sha", "file"):
            table.add_column(col, overflow="fold")
        for b in found:
            where = str(b.path) + (f" ({b.note})" if b.note else "")
            table.add_row(*(escape(c) for c in (b.gpu, b.sweep, f"{b.ok}/{b.cases}", b.date, b.git_sha, where)))
        console.print(table)
        console.print(f"{len(found)} baseline(s)", highlight=False)

    @baseline_app.command("path")
    @friendly_errors
    def baseline_path_cmd(
        results: Annotated[Path, typer.Argument(help="Results JSON.")],
        root: RootOption = None,
    ) -> None:
        """Print where the baseline for RESULTS' GPU model and sweep lives (CI scripts)."""
        from ssmbench.output.baselines import baseline_path

        print(baseline_path(load_results(results), results, _root(root)))


