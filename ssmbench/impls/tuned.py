"""Per-device knob tables: the configs `ssmbench tune` found, kept beside their kernel family as
``kernels/ssmbench_kernels/<family>/tuned/<gpu-slug>.json`` (one small file per GPU model), and
the rule an impl's build picks its knobs by:

1. a config forced by the tuner (`ssmbench.impls.knobs.forced`);
2. else the table of this GPU model: the entry of the case's (shape, T, format, rounding,
   window) at the largest batch bucket not above the case's batch; an entry whose ``knobs`` is
   null says "the default" (the tune kept it there), so the hand rule answers at the case's own
   batch, not a config pinned from the bucket's;
3. else the impl's hand-picked default (`default_*knobs`): an unseen GPU, a batch below every
   bucket, a shape nobody tuned, or the CPU (Triton's interpreter).

A table is read through `load_table`, which checks every entry against the impl's knob space:
a bad table is a `UsageError` naming the file and field, never a silently wrong kernel.

File format (``schema: ssmbench.knobs/1``)::

    {"schema": "ssmbench.knobs/1", "gpu": "NVIDIA H200", "impl": "triton.checkpoint",
     "entries": [{"shape": "H16P64N128G1", "T": 6, "state_dtype": "fp32", "rounding": "rn",
                  "window": 16, "batch": 64, "knobs": {"block_p": 32, ...}, "note": "..."}]}

``window`` is null for impls that do not use the window axis; ``knobs`` null: the default (see
rule 2); ``note`` is free text (the tune that found it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ssmbench.errors import UsageError
from ssmbench.impls.knobs import Config, KnobSpace, forced_config
from ssmbench.resources import gpu_slug
from ssmbench.spec.case import Case
from ssmbench.spec.expand import shape_tag

SCHEMA = "ssmbench.knobs/1"
KEY_FIELDS = ("shape", "T", "state_dtype", "rounding", "window")
"""What an entry is for, besides its batch bucket."""


def table_key(case: Case, uses_window: bool) -> dict[str, Any]:
    """The fields a table entry is matched on (without the batch)."""
    return {"shape": shape_tag(case.shape), "T": case.T, "state_dtype": case.state_dtype,
            "rounding": case.rounding, "window": case.window if uses_window else None}


@dataclass(frozen=True)
class Entry:
    key: tuple[Any, ...]
    batch: int
    config: Config | None
    """None: the default (the tune kept it at this bucket)."""
    note: str = ""


@dataclass(frozen=True)
class Table:
    path: Path
    gpu: str
    impl: str
    entries: tuple[Entry, ...]

    def lookup(self, key: dict[str, Any], batch: int) -> Entry | None:
        """The entry for ``key`` at the largest batch bucket <= ``batch`` (None: none there)."""
        below = [e for e in self._entries_of(key) if e.batch <= batch]
        return max(below, key=lambda e: e.batch, default=None)

    def buckets(self, key: dict[str, Any]) -> set[int]:
        """The batch buckets ``key`` has entries at."""
        return {e.batch for e in self._entries_of(key)}

    def _entries_of(self, key: dict[str, Any]) -> list[Entry]:
        wanted = tuple(key[f] for f in KEY_FIELDS)
        return [e for e in self.entries if e.key == wanted]


def _field(data: Any, name: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(data, dict) or name not in data:
        raise UsageError(f"{where}: field {name!r} missing")
    value = data[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UsageError(f"{where}.{name}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def parse_table(data: Any, path: Path, impl: str, space: KnobSpace) -> Table:
    """A table's JSON checked against ``impl`` and its knob space (UsageError naming the field)."""
    where = str(path)
    if _field(data, "schema", str, where) != SCHEMA:
        raise UsageError(f"{where}: schema {data['schema']!r}; expected {SCHEMA!r}")
    if (got := _field(data, "impl", str, where)) != impl:
        raise UsageError(f"{where}.impl: {got!r}, but this table is read for {impl!r}")
    gpu = _field(data, "gpu", str, where)
    entries = []
    for i, raw in enumerate(_field(data, "entries", list, where)):
        at = f"{where}: entries[{i}]"
        key = []
        for name in KEY_FIELDS:
            if name == "window" and isinstance(raw, dict) and raw.get("window") is None:
                key.append(None)
                continue
            key.append(_field(raw, name, int if name in ("T", "window") else str, at))
        batch = _field(raw, "batch", int, at)
        if isinstance(raw, dict) and "knobs" in raw and raw["knobs"] is None:
            entries.append(Entry(tuple(key), batch, None, str(raw.get("note", ""))))
            continue
        config = space.complete(_field(raw, "knobs", dict, at))
        if (problem := space.problem(config)) is not None:
            raise UsageError(f"{at}.knobs: {problem}")
        entries.append(Entry(tuple(key), batch, dict(config), str(raw.get("note", ""))))
    return Table(path, gpu, impl, tuple(entries))


@lru_cache(maxsize=32)
def _read(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable JSON knob table ({exc})") from None


def load_table(path: Path, impl: str, space: KnobSpace) -> Table | None:
    """The table at ``path`` (None when there is none)."""
    if not path.is_file():
        return None
    return parse_table(_read(str(path)), path, impl, space)


@lru_cache(maxsize=16)
def device_name(device: Any) -> str | None:
    """The GPU model of a torch device (None on the CPU: no table applies)."""
    if getattr(device, "type", "cpu") != "cuda":
        return None
    import torch

    return torch.cuda.get_device_name(device)


TABLES_ENV = "SSMBENCH_KNOB_TABLES"
"""``off``: every impl builds with its hand-picked default (rule 3), as if no table were shipped:
the A/B of the tables against the defaults (docs/tuning.md). ``on`` (or unset): the rules above."""


def tables_enabled() -> bool:
    """Whether `TABLES_ENV` lets the knob tables apply (UsageError on a value other than on/off)."""
    value = os.environ.get(TABLES_ENV, "on").strip().lower() or "on"
    if value not in ("on", "off"):
        raise UsageError(f"environment variable {TABLES_ENV}={os.environ[TABLES_ENV]!r}: allowed values: on, off")
    return value == "on"


@dataclass(frozen=True)
class Tunable:
    """An impl's knob space and where its tables live: what `ssmbench tune` tunes and what the
    impl's build reads."""

    impl: str
    space: KnobSpace
    table_dir: Path
    default: Callable[[Case], Any]
    """The hand-picked knob dataclass for a case (the kernel's ``default_*knobs``)."""
    uses_window: bool = False

    def table_path(self, gpu: str) -> Path:
        return self.table_dir / f"{gpu_slug(gpu) or 'unnamed-gpu'}.json"

    def tables(self) -> list[Table]:
        """Every table shipped for this impl (all GPU models)."""
        found = [load_table(p, self.impl, self.space) for p in sorted(self.table_dir.glob("*.json"))]
        return [t for t in found if t is not None]

    def choose(self, case: Case, gpu: str | None) -> tuple[Config | None, str]:
        """The config this case gets on ``gpu`` (None: the default) and where it comes from."""
        if (config := forced_config(self.impl)) is not None:
            return config, "forced (tune)"
        if gpu is None:
            return None, "default (no GPU model: no table)"
        if not tables_enabled():
            return None, f"default ({TABLES_ENV}=off)"
        table = load_table(self.table_path(gpu), self.impl, self.space)
        if table is None:
            return None, f"default (no table for {gpu})"
        entry = table.lookup(table_key(case, self.uses_window), case.batch)
        if entry is None:
            return None, f"default ({table.path.name}: no entry for this shape/format at or below b{case.batch})"
        if entry.config is None:
            return None, f"default ({table.path.name} b{entry.batch} says default)"
        return entry.config, f"{table.path.name} b{entry.batch}"

    def default_config(self, case: Case) -> Config:
        return self.space.config_of(self.default(case))

    def knobs(self, case: Case, device: Any) -> Any:
        """The knob dataclass the impl builds with: forced, tabled or the default."""
        config, _ = self.choose(case, device_name(device))
        default = self.default(case)
        return default if config is None else self.space.apply(default, config)


def tunable_of(impl: Any) -> Tunable | None:
    """An impl's declared knobs (None: it has none, e.g. the references and the peers)."""
    return getattr(impl, "tunable", None)
