"""Expand a validated sweep into cases with stable, readable ids.

The id names every value that changes the workload (axes, per-rank shape, and the seed, family
options and activation dtype where not default), never the position in the grid, so the same case
keeps the same id when a sweep grows, results can be matched to stored baselines, and two
different workloads never share an id. The format is documented in docs/spec-format.md.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from ssmbench.errors import SpecError
from ssmbench.spec.case import MEASURED, AcceptLaw, Case, measured_law, num_token
from ssmbench.spec.load import AXIS_NAMES, OPTION_SPECS, Sweep, parse_accept
from ssmbench.spec.presets import DEFAULT_D_CONV, GDNShape, Mamba2Shape, Shape
from ssmbench.spec.yamlpos import line_of

DEFAULT_ACT_DTYPE = "bf16"
DEFAULT_SEED = 0
OPTION_TOKENS = {"z_gate": "zgate", "tree": "tree", "intermediate": "inter", "write_final": "final",
                 "scale": "scale"}
"""Short id names of family options: True -> the name, False -> 'no' + name, a number -> name + value."""


def shape_tag(shape: Shape) -> str:
    """``H16P64N128G1`` (Mamba-2) / ``H16HV64K128V128`` (GDN), plus ``c3`` when d_conv is not 4."""
    conv = "" if shape.d_conv == DEFAULT_D_CONV else f"c{shape.d_conv}"
    if isinstance(shape, Mamba2Shape):
        return f"H{shape.nheads}P{shape.head_dim}N{shape.dstate}G{shape.ngroups}{conv}"
    assert isinstance(shape, GDNShape)
    return f"H{shape.num_k_heads}HV{shape.num_v_heads}K{shape.head_k_dim}V{shape.head_v_dim}{conv}"


def option_tokens(family: str, options: Iterable[tuple[str, object]]) -> list[str]:
    """Id tokens for the family options that differ from their defaults, in key order."""
    defaults = {name: f.default for name, f in OPTION_SPECS[family].model_fields.items()}
    tokens = []
    for key, value in sorted(options):
        if key in defaults and value == defaults[key] and type(value) is type(defaults[key]):
            continue
        name = OPTION_TOKENS.get(key, key.replace("_", ""))
        if value is True or value is False:
            tokens.append(name if value else "no" + name)
        elif isinstance(value, (int, float)):
            tokens.append(name + num_token(value))
        else:
            tokens.append(f"{name}{value}")
    return tokens


def case_id(shape: Shape, batch: int, T: int, state_dtype: str, rounding: str, pool: str,
            accept: AcceptLaw, window: int | None, pdl: bool, l2: str, *, act_dtype: str = DEFAULT_ACT_DTYPE,
            options: Iterable[tuple[str, object]] = (), seed: int = DEFAULT_SEED) -> str:
    """``H16P64N128G1-b64-T6-fp16sr-pool-w16-hist-pdl-realistic``: every axis, always, in one order,
    then ``act<dtype>``, the non-default options and ``s<seed>`` only where not default."""
    fmt = state_dtype + ("sr" if rounding == "sr" else "")
    parts = [shape_tag(shape), f"b{batch}", f"T{T}", fmt, pool]
    if window is not None:
        parts.append(f"w{window}")
    parts += [accept.label(T), "pdl" if pdl else "nopdl", l2]
    if act_dtype != DEFAULT_ACT_DTYPE:
        parts.append("act" + act_dtype)
    parts += option_tokens(shape.family, options)
    if seed != DEFAULT_SEED:
        parts.append(f"s{seed}")
    return "-".join(parts)


def id_of(case: Case) -> str:
    """The id a case's fields give (``case.id`` itself is ignored)."""
    return case_id(case.shape, case.batch, case.T, case.state_dtype, case.rounding, case.pool, case.accept,
                   case.window, case.pdl, case.l2, act_dtype=case.act_dtype, options=case.extras, seed=case.seed)


@dataclass
class Expansion:
    """The cases of a sweep plus the grid points dropped, with why (shown by `plan`)."""

    cases: list[Case]
    dropped: dict[str, int] = field(default_factory=dict)
    excluded: int = 0


Rule = tuple[tuple[str, tuple[object, ...]], ...]


def _compile(rule: dict) -> Rule:
    """An exclude rule as (axis, accepted values) pairs, values parsed like the axis parses them."""
    out = []
    for key, wanted in rule.items():
        values = wanted if isinstance(wanted, list) else [wanted]
        if key == "accept":
            values = [parse_accept(v) for v in values]
        if key == "pdl":
            values = ["on" if v is True else "off" if v is False else v for v in values]
        out.append((key, tuple(values)))
    return tuple(out)


def _matches(rule: Rule, point: dict) -> bool:
    return all(point[key] in values for key, values in rule)


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
    """Every grid point of the sweep, minus exclusions and meaningless points, in a stable order.
    The grid's size was checked when the spec was loaded; the result is computed once per sweep."""
    cached: Expansion | None = getattr(sweep, "_expansion", None)
    if cached is None:
        cached = _expand(sweep)
        sweep._expansion = cached  # type: ignore[attr-defined]
    return Expansion(list(cached.cases), dict(cached.dropped), cached.excluded)


def _expand(sweep: Sweep) -> Expansion:
    axes = sweep.spec.axes
    grid = [getattr(axes, name) for name in AXIS_NAMES]
    rules = list(dict.fromkeys(_compile(rule) for rule in sweep.spec.exclude))
    extras = tuple(sorted(sweep.options.model_dump().items()))
    result = Expansion(cases=[])
    seen: dict[str, Case] = {}
    for values in itertools.product(*grid):
        point = dict(zip(AXIS_NAMES, values, strict=True))
        if any(_matches(rule, point) for rule in rules):
            result.excluded += 1
            continue
        reason = _drop_reason(sweep, point)
        if reason:
            result.dropped[reason] = result.dropped.get(reason, 0) + 1
            continue
        T = point["T"]
        window = None if sweep.family == "gdn" else (T if point["window"] == "T" else point["window"])
        accept = measured_law(T) if point["accept"] == MEASURED else point["accept"]
        case = Case(
            id="", sweep=sweep.name, family=sweep.family, preset=sweep.spec.model, tp=sweep.spec.tp,
            shape=sweep.shape, batch=point["batch"], T=T, state_dtype=point["state_dtype"],
            rounding=point["rounding"], pool=point["pool"], accept=accept, window=window,
            pdl=point["pdl"] == "on", l2=point["l2"], seed=sweep.spec.seed, act_dtype=sweep.spec.act_dtype,
            extras=extras,
        )
        case = dataclasses.replace(case, id=id_of(case))
        if case.id in seen:
            if seen[case.id] != case:  # cannot happen unless two histograms' hashes collide
                raise SpecError(str(sweep.path), "axes", f"two different grid points get the case id {case.id!r}",
                                line=line_of(sweep.lines, ("axes",)))
            # e.g. window: [T, 6] with T=6, or accept: [histogram, {histogram: <docs/spec.md §10 counts>}]
            result.dropped["duplicate of another grid point"] = result.dropped.get(
                "duplicate of another grid point", 0) + 1
            continue
        seen[case.id] = case
        result.cases.append(case)
    return result
