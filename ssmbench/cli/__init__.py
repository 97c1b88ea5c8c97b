"""The cli layer, on top of every other: the `ssmbench` command line. This package holds the typer
`app` (the console script `ssmbench.cli:app`) and list / plan / check / sweep; `compare` (compare,
baseline) and `profile` (profile, validate-bytes) register their commands into it; `common` holds
what they share. Each command is a thin shell over a module that does the work; bad input becomes a
message and exit code 2, never a traceback."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ssmbench import __version__, resources
from ssmbench.cli import accuracy as cli_accuracy
from ssmbench.cli import compare as cli_compare
from ssmbench.cli import export as cli_export
from ssmbench.cli import plot as cli_plot
from ssmbench.cli import profile as cli_profile
from ssmbench.cli import tune as cli_tune
from ssmbench.cli.common import console, err_console, friendly_errors
from ssmbench.cli.plugins import PluginOption, load_plugins
from ssmbench.errors import UsageError

app = typer.Typer(
    name="ssmbench",
    help="Profile and regression-test Mamba-2 / Gated DeltaNet decode kernels under speculative decoding.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
SWEEPS_DIR = resources.SWEEPS_DIR


@app.callback(invoke_without_command=True)
@friendly_errors
def main(version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False) -> None:
    if version:
        console.print(f"ssmbench {__version__}")
        raise typer.Exit(0)
    from ssmbench.impls.tuned import tables_enabled

    tables_enabled()  # read by every impl build, in every worker: a bad value stops here, once (exit 2)


@app.command("list")
@friendly_errors
def list_cmd(
    knobs: Annotated[bool, typer.Option("--knobs", help="Only the knob spaces and knob tables of the tunable "
                                        "impls.")] = False,
    plugin: PluginOption = None,
) -> None:
    """List model presets, impls and the shipped sweeps (--knobs: the tunable impls' knob spaces)."""
    from ssmbench.impls.registry import registry

    load_plugins(plugin)
    from ssmbench.spec.presets import PRESET_NOTES, PRESETS

    if knobs:
        cli_tune.print_knob_spaces(console)
        return
    presets = Table(title="Model presets (docs/spec.md §2, full layer; TP divides heads)")
    for col in ("preset", "family", "shape", "note"):
        presets.add_column(col)
    for name, shape in PRESETS.items():
        presets.add_row(name, shape.family, shape.describe(), PRESET_NOTES.get(name, ""))
    console.print(presets)

    impls = Table(title="Impls")
    for col in ("name", "family", "kind", "window axis", "runs on", "available"):
        impls.add_column(col)
    unavailable: list[str] = []
    for name, impl in sorted(registry().items()):
        state = impl.availability()  # peers import their optional package here, lazily
        if state != "available":
            unavailable.append(f"{name}: {state}")
        impls.add_row(name, impl.family, impl.kind, "yes" if impl.uses_window else "no", runs_on(impl),
                      "yes" if state == "available" else "no")
    console.print(impls)
    for line in unavailable:
        console.print(f"  {line}", highlight=False, markup=False)

    sweeps = Table(title=f"Sweeps ({SWEEPS_DIR})")
    for col in ("file", "name", "description"):
        sweeps.add_column(col)
    from ssmbench.spec.load import load_sweep_file

    for path in sorted(SWEEPS_DIR.glob("*.yaml")):
        try:
            f = load_sweep_file(path)
            sweeps.add_row(path.name, f.name, "; ".join(s.spec.description for s in f.sweeps))
        except UsageError as exc:
            sweeps.add_row(path.name, "[red]invalid[/]", str(exc).splitlines()[0])
    console.print(sweeps)


def runs_on(impl) -> str:
    """Where an impl can run: CUDA-only peers need a GPU; Triton kernels run on a GPU, or on a
    CPU in Triton's interpreter (`check` turns it on there); the references run anywhere."""
    if impl.needs_gpu:
        return "GPU only"
    if impl.kind == "triton":
        return "GPU; CPU in Triton's interpreter"
    return "CPU or GPU"


def knob_gpu(gpu: str | None) -> str | None:
    """``plan --gpu``: the GPU model whose knob tables to show (``auto``: this machine's GPU,
    none without one, so the defaults show)."""
    if gpu != "auto":
        return gpu
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


@app.command()
@friendly_errors
def plan(
    spec: Annotated[Path, typer.Argument(help="Sweep spec (YAML).")],
    case: Annotated[str | None, typer.Option("--case", help="Only case ids matching this glob.")] = None,
    gpu: Annotated[str | None, typer.Option(
        "--gpu", help="Also say which knob table each tunable impl would use on this GPU model (e.g. 'NVIDIA "
        "H200'; 'auto': this machine's GPU).")] = None,
    plugin: PluginOption = None,
) -> None:
    """Show the expanded cases of a sweep and which impls run each (or why they skip)."""
    load_plugins(plugin)
    gpu_model = knob_gpu(gpu)
    from ssmbench.impls.registry import registry
    from ssmbench.impls.tuned import tunable_of
    from ssmbench.runs.planning import impl_plan
    from ssmbench.runs.sweep import options as options_module  # at call time: tests replace load_spec there
    from ssmbench.spec.expand import expand, select_cases

    sweep_file = options_module.load_spec(spec)
    impls = registry()
    total = 0
    for sweep in sweep_file.sweeps:
        expansion = expand(sweep)
        cases = select_cases(expansion.cases, case)
        total += len(cases)
        table = Table(title=f"{sweep.name}: {sweep.family} {sweep.shape.describe()}"
                      f"{f' ({sweep.spec.model} TP{sweep.spec.tp})' if sweep.spec.model else ''}")
        table.add_column("case id", no_wrap=True)
        for name in sweep.spec.impls:
            table.add_column(name + (" (baseline)" if name == sweep.spec.baseline else ""), overflow="fold")
        for c in cases:
            cells = []
            for name in sweep.spec.impls:
                reason = impl_plan(impls[name], c, sweep)
                if reason is not None:
                    cells.append(f"[yellow]skip[/]: {escape(reason)}")
                    continue
                tunable = tunable_of(impls[name])
                source = f" · knobs: {escape(tunable.choose(c, gpu_model)[1])}" if gpu and tunable else ""
                cells.append("[green]run[/]" + source)
            table.add_row(c.id, *cells)
        console.print(table)
        notes = [f"{len(cases)} case(s)"]
        if expansion.excluded:
            notes.append(f"{expansion.excluded} excluded by rules")
        notes += [f"{n} dropped ({why})" for why, n in expansion.dropped.items()]
        console.print("  " + ", ".join(notes), highlight=False)
    console.print(f"[bold]{total} case(s)[/] in {spec}", highlight=False)
    if case and not total:
        raise UsageError(f"--case {case!r}: matches no case id of {spec}")


@app.command()
@friendly_errors
def check(
    spec: Annotated[Path, typer.Argument(help="Sweep spec (YAML).")],
    impl: Annotated[list[str] | None, typer.Option("--impl", help="Only these impls (repeatable).")] = None,
    case: Annotated[str | None, typer.Option("--case", help="Only case ids matching this glob.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto (cuda when available).")] = "auto",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print every comparison.")] = False,
    plugin: PluginOption = None,
) -> None:
    """Verify impls against the references, case by case; ends with `N passed, M failed, K errors`.

    Exit 0 all passed, 1 a pair failed or errored, 2 bad input or nothing to check."""
    from ssmbench.runs.check import prepare_device, run_check

    dev, note = prepare_device(device)  # before the impls import their Triton kernels
    if note:
        err_console.print(note, highlight=False, markup=False)
    load_plugins(plugin)  # after prepare_device: a plugin's Triton kernels must see the interpreter setting
    from ssmbench.runs.sweep import options as options_module  # at call time: tests replace load_spec there

    sweep_file = options_module.load_spec(spec)
    counts = run_check(sweep_file, impl_names=impl, case_glob=case, device=dev, console=console, verbose=verbose)
    console.print(counts.line(), highlight=False, markup=False)
    if counts.failed or counts.errors:
        raise typer.Exit(1)


@app.command()
@friendly_errors
def sweep(
    spec: Annotated[Path, typer.Argument(help="Sweep spec (YAML).")],
    output: Annotated[str | None, typer.Option(
        "--output", "-o", help="Results JSON file (default: <spec name>.results.json); its .jsonl log is kept "
        "beside it.",
    )] = None,
    impl: Annotated[list[str] | None, typer.Option("--impl", help="Only these impls (repeatable).")] = None,
    filters: Annotated[list[str] | None, typer.Option(
        "--filter", help="Only cases with key=value[,value...] (repeatable); keys: sweep, case (glob), "
        "batch, T, state_dtype, rounding, format, pool, accept, window, pdl, l2.",
    )] = None,
    gpus: Annotated[str | None, typer.Option(
        "--gpus", help="GPU indices, one worker each, e.g. 0,1 (default: 0).")] = None,
    shard: Annotated[str | None, typer.Option(
        "--shard", help="Run only shard i of n (i/n, 0 <= i < n), by a hash of the case id.")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the run logged beside --output; pairs done with the same parameters are "
        "not re-measured.")] = False,
    fresh: Annotated[bool, typer.Option(
        "--fresh", "--overwrite", help="Start over, replacing the results at --output and their log even when "
        "that run is unfinished (a plain re-run refuses to).")] = False,
    markdown: Annotated[str | None, typer.Option(
        "--markdown", help="Also write the tables as Markdown (CI summaries).")] = None,
    compile_workers: Annotated[int | None, typer.Option(
        "--compile-workers", help="Processes compiling every planned kernel before timing (default: CPU cores "
        "on CUDA, capped at 16; 0: off).")] = None,
    plots: Annotated[Path | None, typer.Option(
        "--plots", help="Also draw the results into DIR (PNG, SVG; needs ssmbench[plot]); --markdown embeds them.",
    )] = None,
    plugin: PluginOption = None,
) -> None:
    """Time every (case, impl) on the GPU: verify first, then CUPTI spans; results JSON and tables.

    Exit 0 all ok, 1 a pair failed or errored, 2 bad input (no file touched), 130/143/129 stopped
    by SIGINT/SIGTERM/SIGHUP (results so far kept; continue with --resume)."""
    from ssmbench.runs.sweep.options import SweepOptions
    from ssmbench.runs.sweep.run import run_sweep

    if plots is not None:
        from ssmbench.output.plot import pyplot

        pyplot()  # matplotlib missing: exit 2 now, not after the sweep
    load_plugins(plugin)
    options = SweepOptions(spec=spec, output=output, impls=impl or [], filters=filters or [], gpus=gpus,
                           shard=shard, resume=resume, fresh=fresh, markdown=markdown,
                           compile_workers=compile_workers, argv=sys.argv[1:])
    code = run_sweep(options, console=console, err_console=err_console)
    if plots is not None and code in (0, 1):  # measured to the end (1: some pair failed, still drawn)
        from ssmbench.runs.sweep.options import load_spec

        sweep_file = load_spec(spec)
        results_path = Path(output) if output else Path(f"{sweep_file.name}.results.json")
        cli_plot.sweep_plots(results_path, plots, sweep_file, Path(markdown) if markdown else None, err_console)
    if code:
        raise typer.Exit(code)


def _register_command_modules() -> None:
    """Commands that live in their own modules (compare/baseline, profile/validate-bytes, accuracy, plot,
    export)."""
    for module in (cli_compare, cli_profile, cli_tune, cli_accuracy, cli_plot, cli_export):
        module.register(app)


_register_command_modules()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
