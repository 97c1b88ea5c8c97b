"""An optional peer package, imported on first need: the verdict ("available", or why not) is
cached per process, so a machine without the package lists its impls as unavailable with the
install hint and every sweep skips them with that reason, never an import error."""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType

AVAILABLE = "available"


class OptionalModule:
    """``module`` (e.g. ``fla.ops.gated_delta_rule``) of the distribution ``label`` (e.g.
    ``fla-core 0.6.0``), importable or not; ``install_hint`` tells the user how to get it."""

    def __init__(self, module: str, label: str, install_hint: str) -> None:
        self.module = module
        self.label = label
        self.not_installed = f"{label.split()[0]} not installed ({install_hint})"
        self._verdict: str | None = None

    def availability(self) -> str:
        """"available", or why the module cannot be imported here (imports it once, lazily). A
        missing top-level package is 'not installed'; anything else (a missing dependency, a
        broken install) is reported with its error, never raised."""
        if self._verdict is None:
            try:
                with warnings.catch_warnings():  # e.g. fla's "Triton is not supported on current
                    warnings.simplefilter("ignore")  # platform" on every CPU machine: not ours to show
                    importlib.import_module(self.module)
                self._verdict = AVAILABLE
            except ModuleNotFoundError as exc:
                top = self.module.split(".")[0]
                self._verdict = self.not_installed if (exc.name or "").split(".")[0] == top else \
                    f"{self.label} is installed but cannot be imported: {exc}"
            except Exception as exc:  # noqa: BLE001 - a broken install is reported, never raised
                self._verdict = f"{self.label} is installed but cannot be imported: {type(exc).__name__}: {exc}"
        return self._verdict

    def reset(self) -> None:
        """Forget the cached verdict (tests inject fake modules)."""
        self._verdict = None

    def load(self) -> ModuleType:
        """The module; RuntimeError with the reason when it is unavailable."""
        if (verdict := self.availability()) != AVAILABLE:
            raise RuntimeError(verdict)
        return importlib.import_module(self.module)
