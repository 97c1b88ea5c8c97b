"""The registry the harness drives: every impl, the shipped ones (importing the providers
registers them) and the plugins': modules named by the ``ssmbench.impls`` entry-point group of
the installed packages (`pip install their-plugin`), by ``--plugin MODULE`` (the cli adds them to
$SSMBENCH_PLUGINS, so sweep workers and re-executed profilers import them too) and by
$SSMBENCH_PLUGINS (the test hook). Kept apart from the interface (`ssmbench.impls.base`), which
the providers import, so the two never import each other.

A plugin that fails to import is reported once per process on stderr, with its name and error,
and its impls are left out: the rest of the tool works. A module the user named with
``--plugin`` must import (`use_plugins`: a UsageError, exit 2). docs/plugins.md.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from importlib.metadata import entry_points
from types import ModuleType

from ssmbench.impls.base import Impl, forget, registered

PLUGINS_ENV = "SSMBENCH_PLUGINS"
"""Comma-separated modules imported by `registry` (and in every sweep worker) that register
extra impls: test-only faulty impls, ``--plugin`` modules, a team's own kernels."""
ENTRY_POINT_GROUP = "ssmbench.impls"
"""Installed packages declare their impl modules here (``[project.entry-points."ssmbench.impls"]``)."""

_warned: set[str] = set()
"""Plugins whose failure this process has already reported."""
_entry_points_loaded = False
"""The installed entry points are read and loaded once per process (`registry` runs many times:
a ``module:function`` one would register its impls again, and the scan of every installed
distribution's metadata costs milliseconds each time)."""


def plugins_from_env() -> list[str]:
    return [p.strip() for p in os.environ.get(PLUGINS_ENV, "").split(",") if p.strip()]


def _import_registering(load, source: str, name: str, strict: bool) -> None:
    """Import one plugin (``load()``); on failure drop whatever it registered before failing, then
    warn once (or raise a UsageError when ``strict``)."""
    if name in _warned and not strict:
        return  # failed before in this process: reported once, not retried on every `registry()`
    before = set(registered())
    try:
        loaded = load()
        if callable(loaded) and not isinstance(loaded, ModuleType):  # `module:function`
            loaded()
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the tool down
        forget([n for n in registered() if n not in before])
        why = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
        if strict:
            from ssmbench.errors import UsageError

            raise UsageError(f"{source} {name}: cannot import it: {why} (is the module on the Python path, "
                             "or its package installed?)") from None
        _warned.add(name)
        print(f"warning: {source} plugin {name!r} failed to import, its impls are left out: {why}",
              file=sys.stderr, flush=True)


def import_plugins(names: list[str]) -> None:
    """Import plugin modules by name; one that fails is warned about once and left out."""
    for name in names:
        _import_registering(lambda name=name: importlib.import_module(name), PLUGINS_ENV, name, strict=False)


def import_entry_points() -> None:
    """Import every installed package's ``ssmbench.impls`` entry point (module, or a callable),
    the first time this process asks."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        _import_registering(ep.load, "entry point", f"{ep.name} = {ep.value}", strict=False)


def use_plugins(names: list[str]) -> None:
    """``--plugin MODULE``...: import each now (a failure is bad input: UsageError, exit 2) and add
    it to $SSMBENCH_PLUGINS, so the processes this one starts (sweep workers, a profiler's
    re-executed command) import it too."""
    for name in names:
        _import_registering(lambda name=name: importlib.import_module(name), "--plugin", name, strict=True)
    known = plugins_from_env()
    extra = [n for n in names if n not in known]
    if extra:
        os.environ[PLUGINS_ENV] = ",".join(known + extra)


@functools.cache
def _settle_kernel_keys() -> None:
    """Once per process, before any kernel runs and before the plugins load: every shipped Triton
    function keyed in one fixed order, so each process (the compile pre-pass's, the timing
    worker's, the next run's) finds the others' on-disk cache entries
    (`ssmbench_kernels.common.cache_keys`: Triton 3.6 keys a kernel by what else was keyed first)."""
    from ssmbench_kernels.common.cache_keys import settle_cache_keys

    try:
        settle_cache_keys()
    except Exception as exc:  # noqa: BLE001 - an optimization: without it kernels compile as before
        print(f"warning: Triton cache keys not settled ({type(exc).__name__}: {exc}); processes may "
              "compile kernels another already compiled", file=sys.stderr, flush=True)


def registry() -> dict[str, Impl]:
    """All impls: the shipped ones, the installed entry points' and the modules of $SSMBENCH_PLUGINS."""
    # Importing the providers registers them. Registration order is the registry's order
    # (`ssmbench list`, check, records): the references first, then the Triton Mamba-2 chains and
    # the peers, the checkpoint chain, GDN and its peer; then the plugins.
    # isort: off
    from ssmbench.impls import reference  # noqa: F401
    from ssmbench.impls import triton_mamba, flashinfer, triton_checkpoint, triton_gdn, fla, flashinfer_gdn  # noqa: F401
    # isort: on

    _settle_kernel_keys()
    import_entry_points()
    import_plugins(plugins_from_env())
    return registered()
