"""One benchmark case: a point of a sweep grid, fully resolved (shape after TP, window as an int).

Cases are plain frozen data so they can be hashed, compared and printed; the id (expand.case_id)
names every field that changes the workload, so two different cases never share an id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from decimal import Decimal

from ssmbench.spec.presets import Shape

POOL_MODES = ("direct", "pool", "padded", "split")
L2_MODES = ("cold", "hot", "realistic")


def num_token(x: float) -> str:
    """A float for an id: the shortest decimal that reads back as the same float (so distinct
    values never print alike), positional (no exponent, no '-'), without a trailing '.0':
    0.6 -> '0.6', 1.0 -> '1', 1e-05 -> '0.00001'."""
    text = format(Decimal(repr(float(x) + 0.0)), "f")  # + 0.0: -0.0 -> 0.0
    return text.removesuffix(".0")


@dataclass(frozen=True)
class AcceptLaw:
    """How many of the T tokens are accepted per step (docs/spec.md §10).

    ``histogram``: relative counts for k = 1..len(values); ``rate``: i.i.d. per-draft acceptance
    probability values[0]; ``fixed``: the pnat values to cycle through over the batch rows;
    ``measured`` (no values): docs/spec.md §10's law at any T, resolved by `measured_law` on expansion.
    """

    kind: str
    values: tuple[float, ...]

    def label(self, T: int | None = None) -> str:
        """The law's token in case ids: ``hist`` (docs/spec.md §10's measured law, at ``T`` tokens when
        given), ``hist-3fa2c1`` (any other histogram: a hash of its counts), ``rate0.6`` (full
        precision), ``pnat0-3-5``."""
        if self.kind == "rate":
            return "rate" + num_token(self.values[0])
        if self.kind == "fixed":
            return "pnat" + "-".join(str(int(v)) for v in self.values)
        n = len(self.values) if T is None else T
        if self.kind == "measured" or self.values == measured_law(n).values:
            return "hist"
        digest = hashlib.sha256(",".join(map(repr, self.values)).encode()).hexdigest()
        return "hist-" + digest[:6]


SPEC10_HISTOGRAM: tuple[float, ...] = (539622.0, 329144.0, 336224.0, 495832.0, 444398.0, 1007008.0)
"""docs/spec.md §10's measured counts of accepted tokens k = 1..6 at T = 6."""

DEFAULT_ACCEPT = AcceptLaw("histogram", SPEC10_HISTOGRAM)
"""The measured T=6 histogram of docs/spec.md §10."""

MEASURED = AcceptLaw("measured", ())
"""What plain ``histogram`` (the default) means in a spec: docs/spec.md §10's measured law at whatever T
the grid point has; expansion turns it into ``measured_law(T)``, so a case never holds it."""


def measured_law(T: int) -> AcceptLaw:
    """docs/spec.md §10's measured acceptance as a histogram over k = 1..T.

    T = 6: the measured histogram itself. T < 6: folded, k = min(k6, T) (acceptance is a prefix:
    a request that accepts k6 >= T tokens of 6 accepts all T of T). T > 6: the measured bins
    for k <= 5, then drafts past the fifth accepted i.i.d. at the histogram's last per-draft
    rate, P(k = 6 | k >= 5) = 0.694.
    """
    h = SPEC10_HISTOGRAM
    if T <= len(h):
        return AcceptLaw("histogram", h[:T - 1] + (sum(h[T - 1:]),))
    rate = h[5] / (h[4] + h[5])
    tail = tuple(h[5] * rate**j * (1 - rate) for j in range(T - 6)) + (h[5] * rate ** (T - 6),)
    return AcceptLaw("histogram", h[:5] + tail)


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
