"""Sweep specs: the YAML a kernel engineer writes, validated into typed settings.

Validation is pydantic's (typed fields, ``extra="forbid"`` so a typo in a key is an error);
this module maps its errors back to the YAML file and line, with the allowed values and a
"did you mean" hint, so a bad spec never ends in a traceback. Types are strict (no bool for an
int, no NaN or infinity), names are safe file names, and a grid is counted against a limit before
it is built. The format is documented in ``docs/spec-format.md``.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ssmbench.errors import SpecError, SpecErrors, UsageError
from ssmbench.spec.case import L2_MODES, MEASURED, POOL_MODES, AcceptLaw
from ssmbench.spec.presets import PRESETS, GDNShape, Mamba2Shape
from ssmbench.spec.yamlpos import line_of, load_documents
from ssmbench_kernels.storage.reference import FORMATS, ROUNDINGS

StateDtype = Literal["fp32", "bf16", "fp16", "int8", "fp8"]
Rounding = Literal["rn", "sr"]
PoolMode = Literal["direct", "pool", "padded", "split"]
L2Mode = Literal["cold", "hot", "realistic"]
OnOff = Literal["on", "off"]
assert typing.get_args(StateDtype) == FORMATS and typing.get_args(Rounding) == ROUNDINGS
assert typing.get_args(PoolMode) == POOL_MODES and typing.get_args(L2Mode) == L2_MODES

MAX_T = 16
MAX_WINDOW = 64
MAX_BATCH = 65536
MAX_EXCLUDE_RULES = 256
MAX_REPORTED = 50
"""Problems reported per document (a 100000-value list of bad values is one mistake, not 100000)."""
DEFAULT_MAX_CASES = 20_000
"""Grid points (before exclude and drop rules) one spec file may expand to, unless raised with
``max_cases:`` in the spec or the SSMBENCH_MAX_CASES environment variable."""
MAX_CASES_ENV = "SSMBENCH_MAX_CASES"
NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
"""Sweep names become output and baseline file names: no '/', no leading '.', at most 64 chars."""


class _Strict(BaseModel):
    """Typed strictly: no bool where an int is expected, no "5" for 5, no 1.0 for 1, and no
    NaN or infinity in any float."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _as_list(value: Any) -> Any:
    """Axes accept a single value as a one-element list."""
    return value if isinstance(value, list) else [value]


def _number(value: Any) -> bool:
    """A finite int or float (a bool is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_accept(value: Any) -> AcceptLaw:
    """``histogram`` (docs/spec.md §10's measured law, at any T: `measured_law`), ``{histogram: [counts for
    k=1..T]}``, ``{rate: p}`` (i.i.d. per-draft acceptance) or ``{fixed: [pnat, ...]}``."""
    if value == "histogram":
        return MEASURED
    if isinstance(value, AcceptLaw):
        return value
    if not (isinstance(value, dict) and len(value) == 1):
        raise ValueError("an acceptance law is 'histogram', {histogram: [counts]}, {rate: p} or {fixed: [pnat]}")
    (kind, arg), = value.items()
    if kind == "histogram":
        if not (isinstance(arg, list) and 1 <= len(arg) <= MAX_T and all(_number(c) and c >= 0 for c in arg)
                and 0 < math.fsum(arg) < math.inf):
            raise ValueError(f"histogram needs a list of 1..{MAX_T} finite non-negative counts (k = 1..T), "
                             "not all zero")
        return AcceptLaw("histogram", tuple(float(c) for c in arg))
    if kind == "rate":
        if not (_number(arg) and 0 <= arg <= 1):
            raise ValueError("rate is a per-draft acceptance probability, a number in [0, 1]")
        return AcceptLaw("rate", (float(arg),))
    if kind == "fixed":
        arg = _as_list(arg)
        if not (arg and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= MAX_WINDOW for c in arg)):
            raise ValueError(f"fixed needs a list of pnat values (integers 0..{MAX_WINDOW})")
        return AcceptLaw("fixed", tuple(float(c) for c in arg))
    raise ValueError(f"unknown acceptance law {str(kind)[:40]!r}; allowed: histogram, rate, fixed")


class Axes(_Strict):
    """The grid. Every axis is a list (a scalar means a one-element list)."""

    batch: list[Annotated[int, Field(ge=1, le=MAX_BATCH)]] = [1]
    T: list[Annotated[int, Field(ge=1, le=MAX_T)]] = [1]
    state_dtype: list[StateDtype] = ["fp32"]
    rounding: list[Rounding] = ["rn"]
    pool: list[PoolMode] = ["pool"]
    accept: list[Annotated[Any, AfterValidator(parse_accept)]] = Field(default_factory=lambda: [MEASURED])
    window: list[Annotated[int, Field(ge=1, le=MAX_WINDOW)] | Literal["T"]] = ["T"]
    pdl: list[OnOff] = ["on"]
    l2: list[L2Mode] = ["realistic"]

    @field_validator("*", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        value = _as_list(value)
        if not value:
            raise ValueError("an axis needs at least one value")
        return value

    @field_validator("pdl", mode="before")
    @classmethod
    def _pdl_bools(cls, value: Any) -> Any:
        # runs before _listify (pydantic applies "before" validators last-defined first): a lone
        # value, null included, is listed here too, so bad input is a ValidationError, not a crash
        return ["on" if v is True else "off" if v is False else v for v in _as_list(value)]


AXIS_NAMES: tuple[str, ...] = tuple(Axes.model_fields)


class Measure(_Strict):
    """How each case is timed (docs/spec.md §10; used by `ssmbench sweep`)."""

    warmup: Annotated[int, Field(ge=0, le=100_000)] = 5
    min_samples: Annotated[int, Field(ge=5, le=1_000_000)] = 30
    max_samples: Annotated[int, Field(ge=5, le=1_000_000)] = 2000
    max_noise: Annotated[float, Field(gt=0, lt=1)] = 0.02
    min_time_s: Annotated[float, Field(ge=0, le=3600)] = 0.2
    timeout_s: Annotated[float, Field(gt=0, le=86400)] = 60.0
    max_median_ci: Annotated[float, Field(ge=0, lt=1)] = 0.005
    """Stop once the median's 99% interval is within +-this fraction (0: off; docs/measurement.md)."""

    @model_validator(mode="after")
    def _order(self) -> Measure:
        if self.max_samples < self.min_samples:
            raise ValueError("max_samples must be >= min_samples")
        return self


class Gate(_Strict):
    """How `ssmbench compare` decides a regression."""

    threshold_pct: Annotated[float, Field(gt=0, lt=100)] = 3.0
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.99


class Mamba2Options(_Strict):
    """Mamba-2 family options that are not axes."""

    z_gate: bool = False
    tree: bool = False


class GDNOptions(_Strict):
    """GDN family options that are not axes (docs/spec.md §9)."""

    intermediate: bool = False
    write_final: bool = True
    scale: Annotated[float, Field(gt=0, le=1e6)] | None = None


Dim = Annotated[int, Field(ge=1, le=65536)]


class Mamba2ShapeSpec(_Strict):
    nheads: Dim
    head_dim: Dim
    dstate: Dim
    ngroups: Dim
    d_conv: Annotated[int, Field(ge=2, le=4)] = 4


class GDNShapeSpec(_Strict):
    num_k_heads: Dim
    num_v_heads: Dim
    head_k_dim: Dim
    head_v_dim: Dim
    d_conv: Annotated[int, Field(ge=2, le=4)] = 4


class SweepSpec(_Strict):
    """A whole sweep file."""

    name: str | None = None
    description: str = ""
    family: Literal["mamba2", "gdn"]
    model: str | None = None
    shape: dict[str, Any] | None = None
    tp: Annotated[int, Field(ge=1, le=1024)] = 1
    act_dtype: Literal["bf16", "fp16", "fp32"] = "bf16"
    impls: list[str]
    baseline: str | None = None
    axes: Axes = Axes()
    exclude: Annotated[list[dict[str, Any]], Field(max_length=MAX_EXCLUDE_RULES)] = []
    options: dict[str, Any] = {}
    measure: Measure = Measure()
    gate: Gate = Gate()
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    max_cases: Annotated[int, Field(ge=1, le=10_000_000)] | None = None

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        if value is not None and not NAME_RE.fullmatch(value):
            raise ValueError("a name is 1-64 of A-Z a-z 0-9 . _ - and does not start with '.' "
                             "(it names result and baseline files)")
        return value

    @field_validator("impls", mode="before")
    @classmethod
    def _impls_list(cls, value: Any) -> Any:
        value = _as_list(value)
        if not value:
            raise ValueError("list at least one impl")
        return value


SHAPE_SPECS = {"mamba2": Mamba2ShapeSpec, "gdn": GDNShapeSpec}
OPTION_SPECS = {"mamba2": Mamba2Options, "gdn": GDNOptions}


class Sweep:
    """A validated spec plus everything resolved from it (shape after TP, family options)."""

    def __init__(self, spec: SweepSpec, path: Path, lines: dict) -> None:
        self.spec, self.path, self.lines = spec, path, lines
        self.name = spec.name or path.stem
        self.shape = resolve_shape(spec, str(path), lines)
        self.options = OPTION_SPECS[spec.family].model_validate(spec.options)
        self._expansion: Any = None
        """expand()'s result, computed once (loading checks ids across documents with it)."""

    @property
    def grid_points(self) -> int:
        """Points of the full grid, before exclude and drop rules (an upper bound on cases)."""
        return math.prod(len(getattr(self.spec.axes, name)) for name in AXIS_NAMES)

    @property
    def family(self) -> str:
        return self.spec.family


def resolve_shape(spec: SweepSpec, file: str, lines: dict) -> Mamba2Shape | GDNShape:
    """The per-rank shape: preset (or explicit shape) sliced by TP."""
    if spec.model is not None:
        full = PRESETS[spec.model]
    else:
        fields = SHAPE_SPECS[spec.family].model_validate(spec.shape).model_dump()
        full = Mamba2Shape(**fields) if spec.family == "mamba2" else GDNShape(**fields)
    try:
        shape = full.tp_slice(spec.tp)
    except ValueError as exc:
        raise SpecError(file, "tp", str(exc), line=line_of(lines, ("tp",)), value=spec.tp) from None
    if isinstance(shape, Mamba2Shape) and shape.nheads % shape.ngroups:
        raise SpecError(file, "shape", f"ngroups={shape.ngroups} must divide nheads={shape.nheads}",
                        line=line_of(lines, ("shape",)))
    if isinstance(shape, GDNShape) and shape.num_v_heads % shape.num_k_heads:
        raise SpecError(file, "shape", "num_v_heads must be a multiple of num_k_heads",
                        line=line_of(lines, ("shape",)))
    return shape


def _allowed_for(model: type[BaseModel], path: tuple) -> str | None:
    """The allowed values (or keys) for a field path, for error messages."""
    current: Any = model
    for part in path:
        if isinstance(part, int):
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part)
            if field is None:
                return None
            current = field.annotation
        else:
            return None
    return _describe_type(current)


def _describe_type(annotation: Any) -> str | None:
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return ", ".join(map(str, args))
    if origin in (list, tuple) and args:
        return _describe_type(args[0])
    if origin is Annotated:
        return _describe_type(args[0])
    literals = [_describe_type(a) for a in args if typing.get_origin(a) is Literal]
    if literals:
        return ", ".join(filter(None, literals)) + " or an integer"
    return None


def _known_keys(model: type[BaseModel], path: tuple) -> list[str]:
    current: Any = model
    for part in path:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if isinstance(current, type) else None
        if field is None:
            return []
        current = field.annotation
    return list(current.model_fields) if isinstance(current, type) and issubclass(current, BaseModel) else []


_UNION_TAGS = ("int", "str", "float", "bool", "constrained-int", "constrained-float")


def _is_union_tag(part: object) -> bool:
    """Loc entries pydantic adds for union members and validators (not field names)."""
    return isinstance(part, str) and (part in _UNION_TAGS or part.startswith(("literal[", "function-")))


def _errors_from_pydantic(
    exc: ValidationError, model: type[BaseModel], file: str, lines: dict, prefix: tuple = ()
) -> list[SpecError]:
    out: list[SpecError] = []
    seen: set[str] = set()
    errors = exc.errors()
    for n, err in enumerate(errors):
        if len(out) >= MAX_REPORTED:
            out.append(SpecError(file, ".".join(map(str, prefix)), f"... and up to {len(errors) - n} more problems"))
            break
        union_member = any(_is_union_tag(p) for p in err["loc"])
        loc = prefix + tuple(p for p in err["loc"] if not _is_union_tag(p))
        field = ".".join(str(p) for p in loc)
        if field in seen:  # one message per field, not one per union member
            continue
        seen.add(field)
        if union_member:
            allowed = _allowed_for(model, loc[len(prefix):])
            out.append(SpecError(file, field, "invalid value", line=line_of(lines, loc), value=err.get("input"),
                                 allowed=allowed))
            continue
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            known = _known_keys(model, loc[len(prefix):-1])
            hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
            message = "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            out.append(SpecError(file, field, message, line=line_of(lines, loc), allowed=", ".join(known)))
            continue
        allowed = _allowed_for(model, loc[len(prefix):])
        if err["type"] == "literal_error" and isinstance(value, str) and allowed:
            hint = difflib.get_close_matches(value, [a.strip() for a in allowed.split(",")], n=1)
            message = "invalid value" + (f" (did you mean {hint[0]!r}?)" if hint else "")
        else:
            message = err["msg"].removeprefix("Value error, ")
        shown = value if not isinstance(value, (dict, list)) else None
        out.append(SpecError(file, field, message, line=line_of(lines, loc), value=shown, allowed=allowed))
    return out


class SweepFile:
    """A spec file: one or more YAML documents, each a `Sweep` (e.g. a Mamba-2 part and a GDN
    part). The file's name (first document's ``name``, else the file stem) names its results
    and baselines."""

    def __init__(self, path: Path, sweeps: list[Sweep]) -> None:
        self.path, self.sweeps = path, sweeps
        self.name = sweeps[0].spec.name or path.stem

    @property
    def families(self) -> list[str]:
        return sorted({s.family for s in self.sweeps})


def load_sweep_file(path: str | Path, impl_names: list[str] | None = None) -> SweepFile:
    """Read and validate a spec file. Raises SpecError(s) listing every problem found: whatever
    the bytes, nothing else escapes (a bad spec is exit code 2 with file and line, never a
    traceback)."""
    path = Path(path)
    file = str(path)
    try:
        regular, exists = path.is_file(), path.exists()
    except (OSError, ValueError) as exc:  # a name too long, a NUL in the name
        raise SpecError(file, "", f"cannot open the file: {exc}") from None
    if not regular:
        raise SpecError(file, "", "no such file" if not exists else "not a regular file")
    try:
        return _load_file(path, impl_names)
    except UsageError:
        raise
    except OSError as exc:
        raise SpecError(file, "", f"cannot read the file: {exc.strerror or exc}") from None
    except (RecursionError, MemoryError):
        raise SpecError(file, "", "the spec is too large or too deeply nested to read") from None


def _load_file(path: Path, impl_names: list[str] | None) -> SweepFile:
    file = str(path)
    documents = load_documents(path)
    if not documents:
        raise SpecError(file, "", "the file holds no sweep (only comments or empty documents)")
    sweeps, errors = [], []
    for data, lines in documents:
        try:
            sweeps.append(_load_document(data, lines, path, impl_names))
        except SpecErrors as exc:
            errors.extend(exc.errors)
        except SpecError as exc:
            errors.append(exc)
    if errors:
        raise SpecErrors(errors)
    names = [s.name for s in sweeps]
    if len(set(names)) != len(names):
        raise SpecError(file, "name", "each document of a spec file needs its own name", value=names)
    _check_grid_size(sweeps, file)
    _check_unique_ids(sweeps, file)
    return SweepFile(path, sweeps)


def _max_cases_default(file: str) -> int:
    """DEFAULT_MAX_CASES, or SSMBENCH_MAX_CASES when set."""
    raw = os.environ.get(MAX_CASES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_CASES
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 12 and int(raw) >= 1):
        raise SpecError(file, MAX_CASES_ENV, "the environment variable must be an integer >= 1", value=raw[:40])
    return int(raw)


def _check_grid_size(sweeps: list[Sweep], file: str) -> None:
    """Refuse a grid too big to expand before expanding it: per document, and for the file. A
    document's ``max_cases`` sets its own limit (and, the largest of them, the file's)."""
    default = _max_cases_default(file)
    how = f"raise the limit with 'max_cases: N' in the spec or {MAX_CASES_ENV}=N"
    errors = []
    for sweep in sweeps:
        limit = sweep.spec.max_cases or default
        if sweep.grid_points > limit:
            axes = " x ".join(str(len(getattr(sweep.spec.axes, n))) for n in AXIS_NAMES)
            errors.append(SpecError(file, "axes", f"document {sweep.name!r}: the grid has {sweep.grid_points} points "
                                    f"({axes} over {', '.join(AXIS_NAMES)}), more than the limit of {limit}; {how}",
                                    line=line_of(sweep.lines, ("axes",))))
    if errors:
        raise SpecErrors(errors)
    total, limit = sum(s.grid_points for s in sweeps), max([default] + [s.spec.max_cases or 0 for s in sweeps])
    if total > limit:
        raise SpecError(file, "", f"the file's documents have {total} grid points in all, more than the limit "
                        f"of {limit}; {how}")


def _check_unique_ids(sweeps: list[Sweep], file: str) -> None:
    """Two documents of one file must not produce the same case id (records and baselines would
    be matched to the wrong workload)."""
    from ssmbench.spec.expand import expand

    owner: dict[str, str] = {}
    for sweep in sweeps:
        for case in expand(sweep).cases:
            first = owner.setdefault(case.id, sweep.name)
            if first != sweep.name:
                raise SpecError(file, "name", f"documents {first!r} and {sweep.name!r} both produce case "
                                f"{case.id!r}; make their grids differ (or merge them)",
                                line=line_of(sweep.lines, ("name",)))


def _load_document(data: object, lines: dict, path: Path, impl_names: list[str] | None) -> Sweep:
    file = str(path)
    if not isinstance(data, dict):
        raise SpecError(file, "", "a sweep spec is a YAML mapping", line=line_of(lines, ()))
    data = {k: v for k, v in data.items() if not k.startswith("x-")}  # anchor holders, see docs
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecErrors(_errors_from_pydantic(exc, SweepSpec, file, lines)) from None
    errors = _semantic_errors(spec, file, lines, impl_names)
    if errors:
        raise SpecErrors(errors)
    try:
        return Sweep(spec, path, lines)
    except ValidationError as exc:  # shape / options sub-models
        raise SpecErrors(_errors_from_pydantic(exc, SweepSpec, file, lines)) from None


def _semantic_errors(spec: SweepSpec, file: str, lines: dict, impl_names: list[str] | None) -> list[SpecError]:
    """Checks that span fields: preset vs family, impl names, exclude rules, family-only axes."""
    errs: list[SpecError] = []

    def err(path: tuple, message: str, value: object = None, allowed: str | None = None) -> None:
        errs.append(SpecError(file, ".".join(map(str, path)), message, line=line_of(lines, path),
                              value=value, allowed=allowed))

    family_presets = [n for n, s in PRESETS.items() if s.family == spec.family]
    if (spec.model is None) == (spec.shape is None):
        err(("model",), "give exactly one of 'model' (a preset) or 'shape'", allowed=", ".join(family_presets))
    elif spec.model is not None and spec.model not in family_presets:
        hint = difflib.get_close_matches(spec.model, family_presets, n=1)
        err(("model",), f"unknown {spec.family} preset" + (f" (did you mean {hint[0]!r}?)" if hint else ""),
            spec.model, ", ".join(family_presets))
    elif spec.shape is not None:
        try:
            SHAPE_SPECS[spec.family].model_validate(spec.shape)
        except ValidationError as exc:
            errs.extend(_errors_from_pydantic(exc, SHAPE_SPECS[spec.family], file, lines, ("shape",)))
    try:
        OPTION_SPECS[spec.family].model_validate(spec.options)
    except ValidationError as exc:
        errs.extend(_errors_from_pydantic(exc, OPTION_SPECS[spec.family], file, lines, ("options",)))

    if impl_names is not None:
        for i, name in enumerate(spec.impls):
            if name not in impl_names:
                hint = difflib.get_close_matches(name, impl_names, n=1)
                err(("impls", i), "unknown impl" + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                    name, ", ".join(sorted(impl_names)))
    if len(set(spec.impls)) != len(spec.impls):
        err(("impls",), "an impl is listed twice")
    if spec.baseline is not None and spec.baseline not in spec.impls:
        err(("baseline",), "the baseline impl must be one of 'impls'", spec.baseline, ", ".join(spec.impls))

    if spec.family == "gdn" and spec.axes.window != ["T"]:
        err(("axes", "window"), "window applies to the mamba2 family only (GDN keeps no history ring)")
    if spec.family == "mamba2" and "split" in spec.axes.pool:
        err(("axes", "pool"), "split pools are a GDN mode", "split", "direct, pool, padded")

    axes = Axes.model_fields
    for r, rule in enumerate(spec.exclude):
        if not isinstance(rule, dict) or not rule:
            err(("exclude", r), "an exclude rule is a mapping of axis -> value(s)")
            continue
        for key, value in rule.items():
            if key not in axes:
                hint = difflib.get_close_matches(str(key), list(axes), n=1)
                err(("exclude", r, key), "unknown axis" + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                    allowed=", ".join(axes))
                continue
            try:
                Axes.model_validate({key: value})
            except ValidationError as exc:
                errs.extend(_errors_from_pydantic(exc, Axes, file, lines, ("exclude", r)))
    return errs
