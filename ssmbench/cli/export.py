"""`ssmbench export RESULTS --csv [-o FILE]`: the typer shell over `ssmbench.output.export`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add `export` to the `ssmbench` app."""
    from ssmbench.cli.common import err_console, friendly_errors

    @app.command()
    @friendly_errors
    def export(
        results: Annotated[Path, typer.Argument(help="Results JSON (or its .jsonl log).")],
        csv: Annotated[bool, typer.Option("--csv", help="Write CSV: one row per (case, impl), every parameter "
                                          "and figure a column (the only format so far).")] = False,
        output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")] = None,
        samples: Annotated[bool, typer.Option(
            "--samples", help="Also a samples_us column (every timed sample, JSON list: large).")] = False,
    ) -> None:
        """Export a results file for pandas or a spreadsheet."""
        from ssmbench.errors import UsageError
        from ssmbench.output.export import csv_text
        from ssmbench.output.results import load_results

        if not csv:
            raise UsageError("export: choose a format: --csv")
        contents = load_results(results)
        text = csv_text(contents, samples=samples)
        if output is None:
            sys.stdout.write(text)
            return
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(text)
        except OSError as exc:
            raise UsageError(f"-o {output}: cannot write ({exc.strerror or exc})") from None
        err_console.print(f"wrote {output} ({len(contents.records)} rows)", highlight=False, markup=False)
