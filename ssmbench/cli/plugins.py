"""The ``--plugin MODULE`` option of the commands that use impls (list, plan, check, sweep, tune, accuracy,
profile, validate-bytes): a module on the Python path that registers impls when imported, for
a kernel not packaged as a plugin (an installed package's ``ssmbench.impls`` entry point needs
no option). docs/plugins.md."""

from __future__ import annotations

from typing import Annotated

import typer

PluginOption = Annotated[list[str] | None, typer.Option(
    "--plugin", metavar="MODULE",
    help="Import MODULE (on the Python path) to register its impls (repeatable); it must import, else exit 2.")]


def load_plugins(modules: list[str] | None) -> None:
    """Import the ``--plugin`` modules now (a failure: exit 2 naming the module) and hand them on
    to the processes the command starts (sweep workers, a profiler's re-executed command)."""
    if modules:
        from ssmbench.impls.registry import use_plugins

        use_plugins(modules)
