"""`ssmbench plot RESULTS [--baseline FILE] [-o DIR]`, and the figures ``sweep --plots DIR``
draws: the typer shell over `ssmbench.output.plot`. Here the speedup's baseline impl is found
(``--speedup-vs``, else the spec the results were measured from, else the first impl) and a
comparison is made with the gate's own settings and machinery (`ssmbench.cli.compare.load_gates`,
`ssmbench.output.compare.compare_results`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ssmbench.errors import UsageError
from ssmbench.output.results import LogContents


def baseline_impls(results: LogContents, speedup_vs: str | None, spec: Any = None) -> tuple[dict[str, str | None], str]:
    """Per sweep, the impl speedups are taken against, and where that came from: ``speedup_vs``;
    else the loaded ``spec`` (or the one the results record, when it still loads); else each
    sweep's first impl with an ok record."""
    sweeps = list(dict.fromkeys(r.sweep for r in results.records.values()))
    if speedup_vs is not None:
        impls = sorted({r.impl for r in results.records.values()})
        if speedup_vs not in impls:
            raise UsageError(f"--speedup-vs {speedup_vs!r}: not an impl of these results; allowed: {', '.join(impls)}")
        return {s: speedup_vs for s in sweeps}, f"--speedup-vs {speedup_vs}"
    source = "the spec"
    if spec is None:
        spec, source = _recorded_spec(results)
    found = {s.name: s.spec.baseline for s in spec.sweeps} if spec is not None else {}
    measured = {(r.sweep, r.impl) for r in results.records.values() if r.status == "ok"}
    chosen: dict[str, str | None] = {}
    for sweep in sweeps:
        if (sweep, found.get(sweep)) in measured:
            chosen[sweep] = found[sweep]
            continue
        chosen[sweep] = next((impl for s, impl in (r.key[0::2] for r in results.records.values())
                              if s == sweep and (s, impl) in measured), None)
        if spec is not None and not source.endswith(FALLBACK):  # its baseline impl not measured (--impl)
            source += FALLBACK
    return chosen, source


FALLBACK = "; the first measured impl where its baseline was not measured"


def _recorded_spec(results: LogContents) -> tuple[Any, str]:
    """The spec named by the results' ``env.spec``, if it is still here and loads; else None."""
    from ssmbench.spec.load import load_sweep_file

    name = results.env.get("spec")
    path = Path(str(name)) if name else None
    if path is None or not path.is_file():
        return None, "no spec here (env.spec): the first impl"
    try:
        return load_sweep_file(path), f"spec {path}"
    except UsageError:
        return None, f"spec {path} unreadable: the first impl"


def append_markdown(markdown: Path, paths: list[Path]) -> None:
    """Embed the PNGs at the end of a Markdown report already written (``sweep --markdown``)."""
    from ssmbench.output.plot import markdown_images

    section = markdown_images(paths, markdown)
    if not section or not markdown.is_file():
        return
    try:
        with markdown.open("a") as fh:
            fh.write(section + "\n")
    except OSError as exc:
        raise UsageError(f"--markdown {markdown}: cannot write ({exc.strerror or exc})") from None


def sweep_plots(results_path: Path, out_dir: Path, spec: Any, markdown: Path | None, err_console: Any) -> list[Path]:
    """``sweep --plots DIR``: the run's figures, embedded in its ``--markdown`` report when given.
    The measurements are done and kept: a figure that cannot be drawn (nothing measured ok, an
    unwritable DIR) is a warning here, never the sweep's exit code."""
    from ssmbench.output.plot import plot_results
    from ssmbench.output.results import load_results

    try:
        results = load_results(results_path)
        baselines, _ = baseline_impls(results, None, spec)
        paths = plot_results(results, baselines, out_dir)
        if markdown is not None:
            append_markdown(markdown, paths)
    except UsageError as exc:
        err_console.print(f"warning: --plots: {exc}", highlight=False, markup=False)
        return []
    return paths


def register(app: typer.Typer) -> None:
    """Add `plot` to the `ssmbench` app."""
    from ssmbench.cli.common import console, err_console, friendly_errors

    @app.command()
    @friendly_errors
    def plot(
        results: Annotated[Path, typer.Argument(help="Results JSON (or its .jsonl log).")],
        baseline: Annotated[Path | None, typer.Option(
            "--baseline", help="Results to compare against: adds the change-per-pair figure (compare's verdicts).",
        )] = None,
        output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the PNG and SVG files.")] = Path(
            "plots"),
        speedup_vs: Annotated[str | None, typer.Option(
            "--speedup-vs", help="Impl the speedup heatmap divides by (default: the spec's baseline impl).")] = None,
        spec: Annotated[Path | None, typer.Option(
            "--spec", help="Sweep spec for the baseline impl and the gate (default: the one RESULTS records).",
        )] = None,
    ) -> None:
        """Draw a results file: DRAM SOL % and span vs batch, speedup heatmaps, and with --baseline
        the change of every pair with its interval, worst first. PNG and SVG; exit 2 on bad input."""
        from ssmbench.cli.compare import load_gates
        from ssmbench.output.compare import (
            DEFAULT_CONFIDENCE,
            DEFAULT_THRESHOLD_PCT,
            Gate,
            compare_results,
            device_mismatch,
            input_problem,
        )
        from ssmbench.output.plot import plot_comparison, plot_results, pyplot
        from ssmbench.output.results import load_results
        from ssmbench.spec.load import load_sweep_file

        pyplot()  # matplotlib missing: say so before reading anything
        new = load_results(results)
        loaded = None
        if spec is not None:
            if not spec.is_file():
                raise UsageError(f"--spec {spec}: no such file")
            loaded = load_sweep_file(spec)
        baselines, source = baseline_impls(new, speedup_vs, loaded)
        paths = plot_results(new, baselines, output)
        console.print(f"speedup vs: {', '.join(sorted({b for b in baselines.values() if b}))} ({source})",
                      highlight=False, markup=False)
        if baseline is not None:
            old = load_results(baseline)
            mismatch = device_mismatch(new, old)
            if mismatch:
                err_console.print(f"warning: different GPU models ({mismatch}), plotted as asked", highlight=False,
                                  markup=False)
            problem = input_problem(new, old)
            if problem:
                raise UsageError(f"{results} vs {baseline}: {problem}")
            gates, _ = load_gates(spec, new, explicit=spec is not None)
            comparison = compare_results(new, old, gates, Gate(DEFAULT_THRESHOLD_PCT, DEFAULT_CONFIDENCE))
            paths += plot_comparison(comparison, new, old, str(results), str(baseline), output)
        for path in paths:
            console.print(f"wrote {path}", highlight=False, markup=False)
