"""The registry the harness drives: every impl, the shipped ones (importing the providers
registers them) and those of the plugin modules named in $SSMBENCH_PLUGINS. Kept apart from the
interface (`ssmbench.impls.base`), which the providers import, so the two never import each other."""

from __future__ import annotations

import importlib
import os

from ssmbench.impls.base import Impl, registered

PLUGINS_ENV = "SSMBENCH_PLUGINS"
"""Comma-separated modules imported by `registry` (and in every sweep worker) that register
extra impls: test-only faulty impls, or a team's own kernels, without editing ssmbench."""


def plugins_from_env() -> list[str]:
    return [p.strip() for p in os.environ.get(PLUGINS_ENV, "").split(",") if p.strip()]


def import_plugins(names: list[str]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001
            from ssmbench.errors import UsageError

            raise UsageError(f"{PLUGINS_ENV}: cannot import {name!r}: {exc}") from None


def registry() -> dict[str, Impl]:
    """All impls: the shipped ones and those of the modules named in $SSMBENCH_PLUGINS."""
    # Importing the providers registers them. Registration order is the registry's order
    # (`ssmbench list`, check, records): the references first, then the Triton Mamba-2 chains and
    # the peers, the checkpoint chain, GDN.
    # isort: off
    from ssmbench.impls import reference  # noqa: F401
    from ssmbench.impls import triton_mamba, flashinfer, triton_checkpoint, triton_gdn  # noqa: F401
    # isort: on

    import_plugins(plugins_from_env())
    return registered()
