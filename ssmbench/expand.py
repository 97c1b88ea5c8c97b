"""Expand a validated sweep into cases with stable, readable ids.

The id names every axis value (and the per-rank shape), never the position in the grid, so the
same case keeps the same id when a sweep grows and results can be matched to stored baselines.
"""

from __future__ import annotations

import fnmatch
import itertools
from dataclasses import dataclass, field

from ssmbench.case import AcceptLaw, Case
from ssmbench.presets import GDNShape, Mamba2Shape, Shape
from ssmbench.spec import AXIS_NAMES, Sweep, parse_accept


def shape_tag(shape: Shape) -> str:
    if isinstance(shape, Mamba2Shape):
        return f"H{shape.nheads}P{shape.head_dim}N{shape.dstate}G{shape.ngroups}"
    assert isinstance(shape, GDNShape)
    return f"H{shape.num_k_heads}HV{shape.num_v_heads}K{shape.head_k_dim}V{shape.head_v_dim}"


def case_id(shape: Shape, batch: int, T: int, state_dtype: str, rounding: str, pool: str,
            accept: AcceptLaw, window: int | None, pdl: bool, l2: str) -> str:
    """``H16P64N128G1-b64-T6-fp16sr-pool-w16-hist-pdl-realistic``: every axis, always, in one order."""
    fmt = state_dtype + ("sr" if rounding == "sr" else "")
    parts = [shape_tag(shape), f"b{batch}", f"T{T}", fmt, pool]
    if window is not None:
        parts.append(f"w{window}")
    parts += [accept.label(), "pdl" if pdl else "nopdl", l2]
    return "-".join(parts)


@dataclass
class Expansion:
    """The cases of a sweep plus the grid points dropped, with why (shown by `plan`)."""

    cases: list[Case]
    dropped: dict[str, int] = field(default_factory=dict)
    excluded: int = 0


def _matches(rule: dict, point: dict) -> bool:
    for key, wanted in rule.items():
        values = wanted if isinstance(wanted, list) else [wanted]
        if key == "accept":
            values = [parse_accept(v) for v in values]
        if key == "pdl":
            values = ["on" if v is True else "off" if v is False else v for v in values]
        if point[key] not in values:
            return False
    return True


def _drop_reason(sweep: Sweep, point: dict) -> str | None:
    """Grid points that make no sense, dropped rather than failed."""
    T, window, accept = point["T"], point["window"], point["accept"]
    if point["state_dtype"] == "fp32" and point["rounding"] == "sr":
        return "fp32 stores exactly: rounding=sr does not apply"
    if sweep.family == "mamba2" and isinstance(window, int) and window < T:
        return "window < T"
    if accept.kind == "histogram" and len(accept.values) != T:
        return "accept histogram length != T"
    if accept.kind == "fixed" and sweep.family == "mamba2":
        w = T if window == "T" else window
        if any(v > w for v in accept.values):
            return "fixed pnat > window"
    return None


def select_cases(cases: list[Case], pattern: str | None) -> list[Case]:
    """Cases whose id matches the glob ``pattern`` (all when None), for `--case` options."""
    if not pattern:
        return cases
    return [c for c in cases if fnmatch.fnmatchcase(c.id, pattern)]


def expand(sweep: Sweep) -> Expansion:
    """Every grid point of the sweep, minus exclusions and meaningless points, in a stable order."""
    axes = sweep.spec.axes
    grid = [getattr(axes, name) for name in AXIS_NAMES]
    result = Expansion(cases=[])
    seen: set[str] = set()
    for values in itertools.product(*grid):
        point = dict(zip(AXIS_NAMES, values, strict=True))
        if any(_matches(rule, point) for rule in sweep.spec.exclude):
            result.excluded += 1
            continue
        reason = _drop_reason(sweep, point)
        if reason:
            result.dropped[reason] = result.dropped.get(reason, 0) + 1
            continue
        T = point["T"]
        window = None if sweep.family == "gdn" else (T if point["window"] == "T" else point["window"])
        pdl = point["pdl"] == "on"
        cid = case_id(sweep.shape, point["batch"], T, point["state_dtype"], point["rounding"], point["pool"],
                      point["accept"], window, pdl, point["l2"])
        if cid in seen:  # e.g. window: [T, 6] with T=6
            result.dropped["duplicate of another grid point"] = result.dropped.get(
                "duplicate of another grid point", 0) + 1
            continue
        seen.add(cid)
        result.cases.append(Case(
            id=cid, sweep=sweep.name, family=sweep.family, preset=sweep.spec.model, tp=sweep.spec.tp,
            shape=sweep.shape, batch=point["batch"], T=T, state_dtype=point["state_dtype"],
            rounding=point["rounding"], pool=point["pool"], accept=point["accept"], window=window, pdl=pdl,
            l2=point["l2"], seed=sweep.spec.seed, act_dtype=sweep.spec.act_dtype,
            extras=tuple(sorted(sweep.options.model_dump().items())),
        ))
    return result
