"""Plugin variants that time one change against an impl's shipped choice, cell by cell, in one sweep:
`PickWith`, the impl's own knob pick for a case (its table or default) with some knobs overridden
(`checkpoint_bw_plugin`); `ConvChanges`, the impl's own conv1d knobs with some fields changed
(`checkpoint_bw_plugin`, `gdn_forms_plugin`)."""

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


@dataclass(frozen=True)
class PickAtBatch(Tunable):
    """``base``'s knobs for the case as if its batch were ``batch`` (its table entry there): a table entry
    timed at batches it does not cover."""

    base: Tunable | None = None
    batch: int = 64

    def knobs(self, case, device):
        return self.base.knobs(dataclasses.replace(case, batch=self.batch), device)


def _variant(kind: type, name: str, base: Tunable, **fields) -> Tunable:
    """The variant impl ``name``'s `Tunable` of ``kind``: ``base``'s space, default and window use, no
    table of its own."""
    return kind(name, base.space, Path(__file__).parent / "no-tables", base.default, uses_window=base.uses_window,
                base=base, **fields)


def pick_at_batch(name: str, base: Tunable, batch: int) -> PickAtBatch:
    """A `PickAtBatch` for the variant impl ``name``."""
    return _variant(PickAtBatch, name, base, batch=batch)


def pick_with(name: str, base: Tunable, **overrides) -> PickWith:
    """A `PickWith` for the variant impl ``name``."""
    return _variant(PickWith, name, base, overrides=tuple(sorted(overrides.items())))


class ConvChanges:
    """Mixin before an impl class with `conv_knobs` (the Triton Mamba-2 and GDN chains): its conv1d
    knobs for the case with ``changes`` applied."""

    def __init__(self, name: str, **changes: object) -> None:
        self.name = name
        self.changes = changes

    def conv_knobs(self, case):
        return dataclasses.replace(super().conv_knobs(case), **self.changes)
