"""What every `ssmbench` command module shares: the consoles and `friendly_errors` (bad input
becomes a message and exit code 2, never a traceback). `ssmbench.cli` and the command modules
(`ssmbench.cli.compare`, `ssmbench.cli.profile`) import it; it imports none of them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from ssmbench.errors import SpecErrors, UsageError

console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable)


def friendly_errors(func: F) -> F:
    """Every way a command can fail becomes one clear line on stderr, never a traceback: a
    UsageError (bad spec, option, file) exits 2; any other exception is a bug, reported as
    ``error: internal error in <command>: ...; please report``, also exit 2 (1 is a verdict:
    SLOWER for compare, failed pairs for check and sweep); Ctrl-C exits 130."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SpecErrors as exc:
            err_console.print(f"[bold red]invalid spec[/]: {len(exc.errors)} problem(s)", highlight=False)
            for e in exc.errors:
                err_console.print(f"  {e}", markup=False, highlight=False)
            raise typer.Exit(2) from None
        except UsageError as exc:
            err_console.print(f"[bold red]error[/]: {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from None
        except (typer.Exit, typer.Abort, typer.exceptions.TyperException):
            raise  # typer's own: an exit code chosen by the command, or a bad option (exit 2)
        except KeyboardInterrupt:
            err_console.print("interrupted", highlight=False)
            raise typer.Exit(130) from None
        except Exception as exc:  # noqa: BLE001 - the catch-all: a bug must still be one line and exit 2
            err_console.print(internal_error(command_name(func), exc), highlight=False, markup=False)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def command_name(func: Callable) -> str:
    """The command as typed (``list``, ``baseline save``), else the function's name."""
    try:
        from typer._click.globals import get_current_context  # typer vendors click

        ctx = get_current_context(silent=True)
    except ImportError:
        ctx = None
    if ctx is None:
        return func.__name__.removesuffix("_cmd").replace("_", "-")
    root = ctx.find_root().info_name or ""
    return ctx.command_path.removeprefix(root).strip() or func.__name__


def internal_error(command: str, exc: BaseException) -> str:
    """``error: internal error in sweep: KeyError: 'x' (run.py:42); please report``: one line, the
    exception said as every record says one (`describe_exception`)."""
    from ssmbench.measure.target import describe_exception

    return f"error: internal error in {command}: {describe_exception(exc)}; please report"
