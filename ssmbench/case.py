"""One benchmark case: a point of a sweep grid, fully resolved (shape after TP, window as an int).

Cases are plain frozen data so they can be hashed, compared, printed and rebuilt from their id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ssmbench.presets import Shape

POOL_MODES = ("direct", "pool", "padded", "split")
L2_MODES = ("cold", "hot", "realistic")


@dataclass(frozen=True)
class AcceptLaw:
    """How many of the T tokens are accepted per step (SPEC 10).

    ``histogram``: relative counts for k = 1..len(values); ``rate``: i.i.d. per-draft acceptance
    probability values[0]; ``fixed``: the pnat values to cycle through over the batch rows.
    """

    kind: str
    values: tuple[float, ...]

    def label(self) -> str:
        if self.kind == "rate":
            return f"rate{self.values[0]:g}"
        if self.kind == "fixed":
            return "pnat" + "-".join(str(int(v)) for v in self.values)
        return "hist"


DEFAULT_ACCEPT = AcceptLaw("histogram", (539622, 329144, 336224, 495832, 444398, 1007008))
"""The measured T=6 histogram of SPEC 10."""


@dataclass(frozen=True)
class Case:
    """A fully resolved case. ``window`` is None for families/impls without a history ring."""

    id: str
    sweep: str
    family: str
    preset: str | None
    tp: int
    shape: Shape
    batch: int
    T: int
    state_dtype: str
    rounding: str
    pool: str
    accept: AcceptLaw
    window: int | None
    pdl: bool
    l2: str
    seed: int = 0
    act_dtype: str = "bf16"
    extras: tuple[tuple[str, object], ...] = field(default=())
    """Family options that are not axes (e.g. GDN ``intermediate``), as sorted (key, value) pairs."""

    def option(self, key: str, default: object = None) -> object:
        return dict(self.extras).get(key, default)
