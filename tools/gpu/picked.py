"""`PickWith`: an impl's own pick for a case (its knob table or default), with some knobs overridden:
the plugin variants that time one knob change against the shipped pick, cell by cell, in one sweep
(`checkpoint_bw_plugin`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ssmbench.impls.tuned import Tunable


@dataclass(frozen=True)
class PickWith(Tunable):
    """``base``'s knobs for the case, with ``overrides`` applied; reads no table of its own."""

    base: Tunable | None = None
    overrides: tuple = ()

    def knobs(self, case, device):
        return dataclasses.replace(self.base.knobs(case, device), **dict(self.overrides))


def pick_with(name: str, base: Tunable, **overrides) -> PickWith:
    """A `PickWith` for the variant impl ``name``."""
    return PickWith(name, base.space, Path(__file__).parent / "no-tables", base.default, uses_window=base.uses_window,
                    base=base, overrides=tuple(sorted(overrides.items())))
