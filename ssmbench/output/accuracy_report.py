"""`ssmbench accuracy` results: schema ``ssmbench.accuracy/1`` (docs/accuracy.md), the per-(case,
impl) summary (error after one step and after N, growth slope, worst step), the table and the
plot of error against step per format.

Pure data and rendering: no impl, no torch, so a results file is read and reported anywhere. The
conventions are the sweep results' (`ssmbench.output.results`): a ``schema`` string, ``env``,
records; NaN/inf written as null; every reader validates strictly and names the file and field.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, TypeAdapter, ValidationError
from rich.table import Table
from typing_extensions import NotRequired, TypedDict

from ssmbench.errors import UsageError
from ssmbench.output.results import (
    Count,
    Ident,
    Number,
    ResultsFormatError,
    Text,
    describe,
    finite_json,
    first_error,
    parse_document,
    read_document,
    write_document,
)

SCHEMA = "ssmbench.accuracy/1"
SERIES = ("y", "state", "state_slow")
"""Per-step relative errors a record carries: the outputs y, the state the next step reads, and
that state on the slow-decay heads alone (where drift shows)."""
STATUSES = ("ok", "error", "skip")


@dataclass
class AccuracyRecord:
    """One (case, impl): per-step relative errors (index i = after step i + 1) against the fp64
    chain. ``errors[name]`` for each of `SERIES`; None where an error was not finite."""

    id: str
    impl: str
    sweep: str
    status: str
    message: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    steps: int = 0
    errors: dict[str, list[float | None]] = field(default_factory=dict)
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r}; allowed: {', '.join(STATUSES)}")

    def to_dict(self) -> dict[str, Any]:
        return finite_json(dataclasses.asdict(self))


class _RecordFields(TypedDict):
    __pydantic_config__ = ConfigDict(strict=True, extra="ignore")  # type: ignore[misc]
    id: Ident
    impl: Ident
    sweep: Ident
    status: Literal["ok", "error", "skip"]
    message: NotRequired[Text]
    params: NotRequired[dict[str, Any]]
    steps: NotRequired[Count]
    errors: NotRequired[dict[Literal["y", "state", "state_slow"], list[Number | None]]]
    seconds: NotRequired[Number | None]


def validate_record(data: Any) -> AccuracyRecord:
    """An `AccuracyRecord` from its JSON object, strictly typed; every series holds ``steps`` values."""
    if not isinstance(data, dict):
        raise ResultsFormatError("", "an object (an accuracy record)", describe(data))
    try:
        fields = _adapter().validate_python(data)
    except ValidationError as exc:
        raise first_error(exc) from None
    record = AccuracyRecord(**fields)
    for name, values in record.errors.items():
        if len(values) != record.steps:
            raise ResultsFormatError(f"errors.{name}", f"{record.steps} values (steps)", f"{len(values)}")
    return record


@cache
def _adapter() -> TypeAdapter[Any]:
    """The record validator, built once on first use (pydantic builds one per type)."""
    return TypeAdapter(_RecordFields)


@dataclass
class AccuracyResults:
    env: dict[str, Any]
    records: list[AccuracyRecord]


def write_accuracy(output: Path, env: dict[str, Any], records: list[AccuracyRecord]) -> None:
    """The results JSON, written atomically (`write_document`)."""
    write_document(output, {"schema": SCHEMA, "env": env, "records": [r.to_dict() for r in records]})


def load_accuracy(path: Path) -> AccuracyResults:
    """Read and validate an accuracy results file; bad input is a `UsageError` naming file and field."""
    path = Path(path)
    data = read_document(path, SCHEMA, "an accuracy results file")
    env, records = parse_document(data, path, SCHEMA, "records", "accuracy records", validate_record)
    return AccuracyResults(env, records)


# -- summary ---------------------------------------------------------------------------------------


SETTLE_FRACTION = 4
"""The slope leaves out the first 1/SETTLE_FRACTION of the steps: checkpoint replay stores nothing
on its first steps (its error sits at the fp32 floor until the first fold), which would dominate
a fit over log(step)."""


def growth_slope(errors: list[float | None]) -> float | None:
    """Least-squares slope of log(error) against log(step) over the steps from N/4 on with a
    finite error > 0: ~0 bounded, ~0.5 a random walk (unbiased rounding on a decay near 1), ~1 a
    bias that accumulates linearly. None with fewer than two such steps."""
    first = len(errors) // SETTLE_FRACTION
    pts = [(math.log(i + 1), math.log(e)) for i, e in enumerate(errors)
           if i >= first and e is not None and math.isfinite(e) and e > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


@dataclass(frozen=True)
class SeriesSummary:
    first: float | None
    last: float | None
    slope: float | None
    worst: float | None
    worst_step: int | None
    """1-based step of the largest error (a non-finite error counts as the worst)."""


def summarize_series(errors: list[float | None]) -> SeriesSummary:
    if not errors:
        return SeriesSummary(None, None, None, None, None)
    keyed = [(math.inf if e is None or not math.isfinite(e) else e, i) for i, e in enumerate(errors)]
    worst, at = max(keyed)
    return SeriesSummary(errors[0], errors[-1], growth_slope(errors), worst, at + 1)


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}e}" if digits else f"{value:+.2f}"


def summary_table(records: list[AccuracyRecord]) -> Table:
    """One row per (case, impl): state error after 1 and N steps, its growth slope and worst step;
    the slow-decay heads' final error and slope; y's final error."""
    table = Table(title="accuracy: relative error against the fp64 chain (state: what the next step reads)")
    for col in ("case id", "impl", "steps", "state @1", "state @N", "slope", "worst (step)", "slow @N",
                "slow slope", "y @N"):
        # the id folds; the numbers never lose digits to an ellipsis
        table.add_column(col, overflow="fold") if col == "case id" else table.add_column(col, no_wrap=True)
    for r in records:
        if r.status != "ok":
            table.add_row(r.id, r.impl, "-", r.status, *[""] * 6)
            continue
        st = summarize_series(r.errors.get("state", []))
        slow = summarize_series(r.errors.get("state_slow", []))
        y = summarize_series(r.errors.get("y", []))
        table.add_row(r.id, r.impl, str(r.steps), _num(st.first), _num(st.last), _num(st.slope, 0),
                      f"{_num(st.worst)} ({st.worst_step})", _num(slow.last), _num(slow.slope, 0), _num(y.last))
    return table


def summary_dicts(records: list[AccuracyRecord]) -> list[dict[str, Any]]:
    """The table's numbers as plain data (tests, scripts)."""
    out = []
    for r in records:
        row: dict[str, Any] = {"id": r.id, "impl": r.impl, "status": r.status}
        for name in SERIES:
            row[name] = dataclasses.asdict(summarize_series(r.errors.get(name, [])))
        out.append(row)
    return out


# -- plot -----------------------------------------------------------------------------------------


def write_plot(records: list[AccuracyRecord], output: Path, series: str = "state") -> str:
    """Error against step (log-log), one panel per (method, rounding), one line per format; returns
    a one-line note of what was written or why not (matplotlib is an optional extra: ``plot``)."""
    from ssmbench.output.plot import pyplot

    try:
        plt = pyplot()
    except UsageError:
        return "plot skipped: matplotlib is not installed (pip install 'ssmbench[plot]')"
    ok = [r for r in records if r.status == "ok" and r.steps > 0]
    if not ok:
        return "plot skipped: no record with steps"
    panels: dict[str, list[AccuracyRecord]] = {}
    for r in ok:
        window = r.params.get("window")  # None for impls the window does not change
        key = r.impl + (f" w{window}" if window is not None else "")
        panels.setdefault(key, []).append(r)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False, sharey=True)
    for ax, (title, recs) in zip(axes[0], panels.items(), strict=True):
        sizes = len({x.params.get("batch") for x in recs}) > 1 or len({x.params.get("T") for x in recs}) > 1
        for r in recs:
            values = [math.nan if e is None else e for e in r.errors.get(series, [])]
            steps = list(range(1, len(values) + 1))
            label = str(r.params.get("format", r.id))
            if sizes:  # the panel's lines differ in batch or T: say which is which
                label += f" b{r.params.get('batch')} T{r.params.get('T')}"
            ax.loglog(steps, values, label=label, linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("decode step")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(f"relative error of {series}")
    fig.tight_layout()
    output = Path(output)
    try:  # the results are written already: an unwritable plot is a note, not a failure
        output.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(output, dpi=120)
    except OSError as exc:
        return f"plot skipped: {output}: cannot write ({exc.strerror or exc})"
    finally:
        plt.close(fig)
    return f"plot: {output}"
