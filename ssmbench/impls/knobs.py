"""The knob-space model: what a Triton impl may be tuned over, declared once beside the impl and
read by the tuner (`ssmbench tune`), the sweep's compile pre-pass (which knobs make a new
kernel) and the docs (`ssmbench list --knobs`).

A space is a tuple of `Knob`s (typed choices; booleans are the choices ``(False, True)``), the
constraints between them, and the blocks a coordinate descent moves together (knobs that only
make sense together, e.g. the checkpoint kernel's form and tile). A config is a plain dict
``{knob: value}`` (JSON-friendly: the tables and the tuner's log store it as is); the impl's knob
dataclass is made from its hand-picked default with the config's values replaced.

`forced` lets the tuner build an impl with a given config (one process, one build at a time).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

Config = dict[str, Any]

NO_LEGACY_VALUE: Any = object()
"""`Knob.legacy`'s marker: the knob has been in every config since its space was first written."""


@dataclass(frozen=True)
class Knob:
    """One knob: its allowed values (in the order the tuner tries them) and whether a new value
    means a new compiled kernel (``constexpr``: a ``tl.constexpr`` or a compile option such as
    ``num_warps``) or only other launch arguments (the grid)."""

    name: str
    choices: tuple[Any, ...]
    doc: str
    constexpr: bool = True
    active: Callable[[Config], bool] | None = None
    """None: always matters; else whether the knob matters under a config (e.g. the precompute's
    warps only in the two-kernel forms). The tuner never varies an inactive knob."""
    active_doc: str = ""
    legacy: Any = NO_LEGACY_VALUE
    """For a knob added after tables existed: the value that gives the kernel as it was before the
    knob (what an entry written without it measured). Reading a config that lacks the knob fills
    it in (`KnobSpace.complete`), so a user's older table keeps working; a knob without one
    stays required."""

    def type_name(self) -> str:
        return type(self.choices[0]).__name__

    def is_active(self, config: Config) -> bool:
        return self.active is None or self.active(config)


@dataclass(frozen=True)
class Constraint:
    """A rule between knobs, said in words for the docs and the tuner's report."""

    text: str
    holds: Callable[[Config], bool]


@dataclass(frozen=True)
class KnobSpace:
    """An impl's knobs, their constraints and the coordinate-descent blocks."""

    knobs: tuple[Knob, ...]
    constraints: tuple[Constraint, ...] = ()
    blocks: tuple[tuple[str, ...], ...] = ()
    """Knobs varied together; every knob in no block is a block of its own."""

    def __post_init__(self) -> None:
        names = [k.name for k in self.knobs]
        if len(set(names)) != len(names):
            raise ValueError(f"knob names repeat: {names}")
        for block in self.blocks:
            for name in block:
                if name not in names:
                    raise ValueError(f"block {block}: no knob {name!r}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.knobs)

    def knob(self, name: str) -> Knob:
        return next(k for k in self.knobs if k.name == name)

    def all_blocks(self) -> list[tuple[str, ...]]:
        """The declared blocks, then one block per knob left out of them, in declaration order."""
        grouped = {name for block in self.blocks for name in block}
        return list(self.blocks) + [(k.name,) for k in self.knobs if k.name not in grouped]

    def config_of(self, knobs: Any) -> Config:
        """The space's knobs read from a knob dataclass (an impl's default)."""
        return {name: getattr(knobs, name) for name in self.names}

    def apply(self, default: Any, config: Config) -> Any:
        """The knob dataclass: ``default`` with the config's values."""
        return dataclasses.replace(default, **config)

    def complete(self, config: Config) -> Config:
        """``config`` with every absent knob that has a `Knob.legacy` value filled in with it (a
        config written before the knob existed); other absent knobs stay absent (`problem` says so)."""
        missing = {k.name: k.legacy for k in self.knobs
                   if k.name not in config and k.legacy is not NO_LEGACY_VALUE}
        return {**config, **missing} if missing else config

    def problem(self, config: Config) -> str | None:
        """Why ``config`` is not a point of this space (None: it is). Types are strict: ``1`` is
        no ``True`` and ``16.0`` no ``16`` (JSON tables are read through this)."""
        for name in config:
            if name not in self.names:
                return f"unknown knob {name!r}; knobs: {', '.join(self.names)}"
        for knob in self.knobs:
            if knob.name not in config:
                return f"knob {knob.name!r} missing"
            value = config[knob.name]
            if not any(type(value) is type(c) and value == c for c in knob.choices):
                return (f"{knob.name}={value!r}: allowed: {', '.join(map(repr, knob.choices))}")
        for rule in self.constraints:
            if not rule.holds(config):
                return f"breaks the constraint: {rule.text}"
        return None

    def neighbours(self, config: Config, block: tuple[str, ...]) -> list[Config]:
        """Every valid config that differs from ``config`` only in ``block``'s active knobs (the
        challengers of one coordinate-descent step), in choice order, ``config`` itself left out."""
        movable = [self.knob(n) for n in block]
        out: list[Config] = []
        for values in itertools.product(*(k.choices for k in movable)):
            candidate = {**config, **{k.name: v for k, v in zip(movable, values, strict=True)}}
            moved = [k for k in movable if candidate[k.name] != config[k.name]]
            if not moved or self.problem(candidate) is not None:
                continue
            if any(not k.is_active(candidate) for k in moved):
                continue  # changing a knob that does not matter there measures the same kernel twice
            if candidate not in out:
                out.append(candidate)
        return out

    def compile_key(self, config: Config) -> tuple[tuple[str, Any], ...]:
        """The config's part that selects a compiled kernel: its constexpr knobs."""
        return tuple((k.name, config[k.name]) for k in self.knobs if k.constexpr)


def describe_config(config: Config) -> str:
    """``block_p=32 num_warps=2``: a config on one line (tables, reports)."""
    return " ".join(f"{k}={v}" for k, v in config.items())


# -- the tuner's override --------------------------------------------------------------------

_FORCED: dict[str, Config] = {}


@contextmanager
def forced(impl_name: str, config: Config) -> Iterator[None]:
    """Within the block, ``impl_name`` builds with ``config`` instead of its table or default
    (the tuner's candidates). One process builds one target at a time, so a module dict is enough."""
    _FORCED[impl_name] = dict(config)
    try:
        yield
    finally:
        _FORCED.pop(impl_name, None)


def forced_config(impl_name: str) -> Config | None:
    return _FORCED.get(impl_name)
