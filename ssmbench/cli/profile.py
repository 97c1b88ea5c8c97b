"""`ssmbench profile` (ncu, nsys, compute-sanitizer, determinism on one case) and `ssmbench
validate-bytes` (byte models vs ncu's DRAM bytes). The work is in `ssmbench.profiling`; this
module is the typer shell. Both commands re-execute themselves under the tool with the hidden
``--inner`` flag."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ssmbench.cli.plugins import PluginOption, load_plugins


def register(app: typer.Typer) -> None:
    """Add `profile` and `validate-bytes` to the `ssmbench` app."""
    from ssmbench.cli.common import console, friendly_errors

    @app.command()
    @friendly_errors
    def profile(
        spec: Annotated[Path, typer.Argument(help="Sweep spec (YAML).")],
        case: Annotated[str, typer.Option("--case", help="Case id as `ssmbench plan` prints it (or a glob matching "
                                          "exactly one).")],
        impl: Annotated[str | None, typer.Option(
            "--impl", help="Impl to profile (default: the sweep's baseline, else its first impl running the case).",
        )] = None,
        tool: Annotated[str | None, typer.Option(
            "--tool", help="ncu (metrics per kernel, byte model check), nsys (timeline), sanitizer (memcheck, "
            "racecheck, synccheck).")] = None,
        metric_set: Annotated[str | None, typer.Option(
            "--set", help="ncu section set to collect as well (e.g. basic, detailed, full).")] = None,
        output: Annotated[Path, typer.Option("--output", "-o", help="Directory for reports and logs.")] = Path(
            "ssmbench-profile"),
        determinism: Annotated[int | None, typer.Option(
            "--determinism", min=2, help="Launch the chain N times from identical inputs; compare outputs and "
            "stored state bitwise.")] = None,
        cache_control: Annotated[str, typer.Option(
            "--cache-control", help="ncu: all (flush caches before each kernel: cold, the byte model's "
            "condition) or none.")] = "all",
        force: Annotated[bool, typer.Option("--force", help="Profile even when verification fails.")] = False,
        device: Annotated[str, typer.Option(help="auto, cuda or cpu (cpu: --determinism only).")] = "auto",
        inner: Annotated[bool, typer.Option("--inner", hidden=True)] = False,
        info: Annotated[Path | None, typer.Option("--info", hidden=True)] = None,
        plugin: PluginOption = None,
    ) -> None:
        """Profile one case's chain with ncu, nsys, compute-sanitizer or a determinism check.

        Exit 0 ok, 1 errors found (or verification failed), 2 tool missing or bad input.
        """
        from ssmbench.errors import UsageError
        from ssmbench.profiling.driver import TOOLS, ProfileOptions, inner_main, profile_main
        from ssmbench.profiling.ncu import CACHE_CONTROLS
        from ssmbench.profiling.target import resolve

        if tool is not None and tool not in TOOLS:
            raise UsageError(f"--tool {tool!r}: allowed: {', '.join(TOOLS)}")
        if cache_control not in CACHE_CONTROLS:
            raise UsageError(f"--cache-control {cache_control!r}: allowed: {', '.join(CACHE_CONTROLS)}")
        if tool is None and determinism is None:
            raise UsageError("nothing to do: give --tool ncu|nsys|sanitizer and/or --determinism N")
        if metric_set is not None and tool != "ncu":
            raise UsageError("--set is an ncu option: use it with --tool ncu")
        load_plugins(plugin)  # the re-executed inner command finds them in $SSMBENCH_PLUGINS
        selection = resolve(spec, case, impl)
        if inner:
            raise typer.Exit(inner_main(selection, tool or "", device, force, info, console))
        options = ProfileOptions(spec=spec, case=selection.case.id, impl=selection.impl.name, tool=tool,
                                 metric_set=metric_set, out_dir=output, determinism=determinism, force=force,
                                 device=device, cache_control=cache_control)
        code = profile_main(options, selection, console)
        if code:
            raise typer.Exit(code)

    @app.command("validate-bytes")
    @friendly_errors
    def validate_bytes(
        spec: Annotated[Path, typer.Argument(help="Sweep spec (YAML), small: every pair is profiled.")],
        impl: Annotated[list[str] | None, typer.Option("--impl", help="Only these impls (repeatable).")] = None,
        filters: Annotated[list[str] | None, typer.Option(
            "--filter", help="Only cases with key=value[,value...] (repeatable; keys as for `ssmbench sweep`).",
        )] = None,
        output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the report, CSV and table.")] = Path(
            "ssmbench-validate-bytes"),
        threshold: Annotated[float, typer.Option("--threshold", help="Deviation (%) above which a byte model is "
                                                 "listed for fixing.")] = 10.0,
        force: Annotated[bool, typer.Option("--force", help="Measure pairs that fail verification too.")] = False,
        device: Annotated[str, typer.Option(help="auto or cuda.")] = "auto",
        inner: Annotated[bool, typer.Option("--inner", hidden=True)] = False,
        info: Annotated[Path | None, typer.Option("--info", hidden=True)] = None,
        plugin: PluginOption = None,
    ) -> None:
        """Check every impl's byte model against ncu's DRAM bytes over the cases of a sweep.

        Models off by more than --threshold % are listed. Exit 0 all within, 1 some off (or not
        measured), 2 cannot run.
        """
        from ssmbench.errors import UsageError
        from ssmbench.profiling.driver import ValidateOptions, validate_inner, validate_main

        options = ValidateOptions(spec=spec, impls=impl or [], filters=filters or [], out_dir=output,
                                  threshold=threshold, device=device, force=force)
        load_plugins(plugin)
        from ssmbench.runs.sweep import options as options_module  # at call time: tests replace load_spec there

        sweep_file = options_module.load_spec(spec)
        if inner:
            if info is None:
                raise UsageError("--inner needs --info")
            raise typer.Exit(validate_inner(options, sweep_file, info))
        code = validate_main(options, sweep_file, console)
        if code:
            raise typer.Exit(code)

