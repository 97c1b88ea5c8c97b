"""`ssmbench accuracy` (docs/accuracy.md): how far each state format drifts over a long decode.
The work is in `ssmbench.runs.accuracy`; this module is the typer shell."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ssmbench.cli.plugins import PluginOption, load_plugins


def register(app: typer.Typer) -> None:
    """Add `accuracy` to the `ssmbench` app."""
    from ssmbench.cli.common import console, err_console, friendly_errors

    @app.command()
    @friendly_errors
    def accuracy(
        spec: Annotated[Path, typer.Argument(help="Sweep spec (YAML), or a shipped sweep's name.")],
        steps: Annotated[int, typer.Option("--steps", help="Consecutive decode steps per (case, impl).")] = 256,
        impl: Annotated[list[str] | None, typer.Option(
            "--impl", help="Only these impls (repeatable); driven: triton.intermediate, triton.checkpoint, "
            "reference.sequential/intermediate/replay[.fold|.rectangle], impls with an accuracy_stepper.")] = None,
        case: Annotated[str | None, typer.Option(
            "--case", help="Only case ids matching this glob (the ids this command prints: after --batch).")] = None,
        batch: Annotated[int, typer.Option(
            "--batch", help="Rows per step, every case (accuracy does not depend on it; the fp64 chain's cost "
            "does).")] = 8,
        every_format: Annotated[bool, typer.Option(
            "--every-format", help="Run every storage format x rounding (fp32, bf16, fp16, int8, fp8 x rn, sr), "
            "whatever the spec's formats and exclude rules.")] = False,
        output: Annotated[str | None, typer.Option(
            "--output", "-o", help="Results JSON (default: <spec name>.accuracy.json); the plot goes beside it "
            "(.png).")] = None,
        device: Annotated[str, typer.Option(help="cpu, cuda or auto (cuda when available).")] = "auto",
        plugin: PluginOption = None,
    ) -> None:
        """Run N decode steps per (case, impl) from the impl's own stored state, with an fp64 chain in
        lockstep; per-step errors of y and the state, a summary table, results JSON and a plot.

        Exit 0 every pair ran, 1 a pair errored (recorded; the others still run), 2 bad input."""
        from ssmbench.runs.accuracy.run import AccuracyOptions, run_accuracy
        from ssmbench.runs.check import prepare_device

        dev, note = prepare_device(device)  # before the impls import their Triton kernels
        if note:
            err_console.print(note, highlight=False, markup=False)
        load_plugins(plugin)
        from ssmbench.runs.sweep.options import check_output_path, load_spec
        from ssmbench.runs.sweep.run import host_env

        sweep_file = load_spec(spec)
        out = check_output_path(output or f"{sweep_file.name}.accuracy.json", "-o")
        options = AccuracyOptions(steps=steps, impls=impl or [], case_glob=case, batch=batch,
                                  every_format=every_format)
        env = host_env(spec, sweep_file.name, sys.argv[1:])
        records = run_accuracy(sweep_file, options, str(dev), out, env, console)
        if any(r.status == "error" for r in records):
            raise typer.Exit(1)
