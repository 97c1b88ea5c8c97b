"""Tables of a sweep's results, pivoted like the seed tables: batch rows x format (or impl)
columns, each cell ``median us · speedup vs the baseline impl · DRAM SOL %``. Rendered as rich
tables for the terminal and as Markdown for CI summaries (``--markdown``).

The column axis is the storage format when the sweep varies it (one table per impl and per
value of the other varying axes), else the impl (one table per value of the other axes).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ssmbench.output.results import CaseRecord

PLAIN_INTERVAL_S = {"check": 5.0, "sweep": 10.0}
"""Seconds between progress lines when the output is not a terminal (a CI log), per command."""


class PairProgress:
    """Progress over (case, impl) pairs, for `check` and `sweep`: a live bar on a terminal; in
    a log (not a terminal), where a bar shows nothing, one plain line every few seconds, e.g.
    ``check: 120/422 pairs, 3 failed, 0 errors, 45 s``. Use as a context manager."""

    def __init__(self, console: Console, label: str, total: int) -> None:
        self.console, self.label, self.total = console, label, total
        self.done, self.failed, self.errors = 0, 0, 0
        self.start = self.last = time.monotonic()
        self.interval_s = PLAIN_INTERVAL_S.get(label, 10.0)
        self.live = console.is_terminal
        self.bar: Progress | None = None
        if self.live:
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console)
            self.task = self.bar.add_task(label, total=total)

    def __enter__(self) -> PairProgress:
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def line(self) -> str:
        return (f"{self.label}: {self.done}/{self.total} pairs, {self.failed} failed, {self.errors} errors, "
                f"{time.monotonic() - self.start:.0f} s")

    def advance(self, status: str) -> None:
        """One pair finished with ``status`` (ok, fail, error, skip)."""
        self.done += 1
        self.failed += status == "fail"
        self.errors += status == "error"
        if self.bar is not None:
            self.bar.advance(self.task)
        self.tick()

    def describe(self, text: str) -> None:
        """What is running now (the bar's text; a log only gets the periodic line)."""
        if self.bar is not None:
            self.bar.update(self.task, description=text[:110])
        self.tick()

    def tick(self) -> None:
        """In a log: the plain line, when ``interval_s`` has passed since the last one."""
        now = time.monotonic()
        if self.bar is None and now - self.last >= self.interval_s:
            self.last = now
            self.console.print(self.line(), highlight=False, markup=False)

    def print(self, *args: Any, **kwargs: Any) -> None:
        """Print above the bar (or plainly in a log)."""
        (self.bar.console if self.bar is not None else self.console).print(*args, **kwargs)


GROUP_AXES = ("T", "format", "pool", "accept", "window", "pdl", "l2", "act_dtype")
"""Axes (besides batch and the column axis) that split a sweep's results into tables."""


@dataclass
class Cell:
    status: str
    median_us: float | None = None
    speedup: float | None = None
    sol_pct: float | None = None


@dataclass
class Pivot:
    sweep: str
    group: list[tuple[str, Any]]
    """The fixed (axis, value) pairs of this table (the impl among them when columns are formats)."""
    column_axis: str
    columns: list[str]
    rows: list[tuple[int, list[Cell | None]]] = field(default_factory=list)
    baseline: str | None = None

    @property
    def title(self) -> str:
        parts = [axis_label(k, v) for k, v in self.group]
        return f"{self.sweep}" + (": " + " · ".join(parts) if parts else "")


def axis_label(axis: str, value: Any) -> str:
    """An axis value as case ids spell it: ``T6``, ``w16``, ``pdl`` / ``nopdl``, ``act-bf16``."""
    if axis == "T":
        return f"T{value}"
    if axis == "window":
        return f"w{value}"
    if axis == "pdl":
        return "pdl" if value == "on" else "nopdl"
    if axis == "act_dtype":
        return f"act-{value}"
    return str(value)


def _column_value(record: CaseRecord, axis: str) -> str:
    return record.impl if axis == "impl" else str(record.params.get(axis))


def _without_window(record: CaseRecord) -> tuple:
    return (record.sweep, *(str(record.params.get(k)) for k in ("batch", *GROUP_AXES) if k != "window"))


class BaselineIndex:
    """Finds the baseline impl's record for a (sweep, case): same case id, or, for a baseline that
    does not use the window axis (it ran only at the sweep's first window), the same case at
    any window."""

    def __init__(self, records: Iterable[CaseRecord], baselines: dict[str, str | None]) -> None:
        self.by_id: dict[tuple[str, str], CaseRecord] = {}
        self.by_params: dict[tuple, CaseRecord] = {}
        for r in records:
            if r.impl == baselines.get(r.sweep) and r.status != "skip":
                self.by_id[(r.sweep, r.id)] = r
                self.by_params.setdefault(_without_window(r), r)

    def find(self, record: CaseRecord) -> CaseRecord | None:
        return self.by_id.get((record.sweep, record.id)) or self.by_params.get(_without_window(record))


def speedup(record: CaseRecord, base: CaseRecord | None) -> float | None:
    if base is None or record.status != "ok" or base.status != "ok":
        return None
    if not record.median_us or not base.median_us:
        return None
    return base.median_us / record.median_us


def pivot(records: list[CaseRecord], baselines: dict[str, str | None]) -> list[Pivot]:
    """Every table of the records (skips left out), in the order the records came."""
    index = BaselineIndex(records, baselines)
    shown = [r for r in records if r.status != "skip"]
    sweeps = list(dict.fromkeys(r.sweep for r in shown))
    tables: list[Pivot] = []
    for sweep in sweeps:
        recs = [r for r in shown if r.sweep == sweep]
        formats = list(dict.fromkeys(str(r.params.get("format")) for r in recs))
        axis = "format" if len(formats) > 1 else "impl"
        varying = [a for a in GROUP_AXES if a != axis and len({str(r.params.get(a)) for r in recs}) > 1]
        group_axes = (["impl"] if axis == "format" else []) + varying
        all_columns = list(dict.fromkeys(_column_value(r, axis) for r in recs))
        groups: dict[tuple, list[CaseRecord]] = {}
        for r in recs:
            key = tuple(r.impl if a == "impl" else r.params.get(a) for a in group_axes)
            groups.setdefault(key, []).append(r)
        for key, members in groups.items():
            present = {_column_value(r, axis) for r in members}
            columns = [c for c in all_columns if c in present]
            table = Pivot(sweep, list(zip(group_axes, key, strict=True)), axis, columns,
                          baseline=baselines.get(sweep))
            cells: dict[tuple[int, str], Cell] = {}
            for r in members:
                cells[(int(r.params.get("batch", 0)), _column_value(r, axis))] = Cell(
                    r.status, r.median_us, speedup(r, index.find(r)), r.sol_pct)
            for batch in sorted({b for b, _ in cells}):
                table.rows.append((batch, [cells.get((batch, c)) for c in columns]))
            tables.append(table)
    return tables


def fmt_us(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:.0f}"


def cell_parts(cell: Cell | None) -> list[str]:
    """The cell's text pieces: ``["12.3", "1.52x", "81%"]``, or the status for a non-ok record."""
    if cell is None:
        return []
    if cell.status != "ok":
        return [cell.status.upper()]
    parts = [fmt_us(cell.median_us)]
    if cell.speedup is not None:
        parts.append(f"{cell.speedup:.2f}x")
    if cell.sol_pct is not None:
        parts.append(f"{cell.sol_pct:.0f}%")
    return parts


def legend(table: Pivot) -> str:
    base = f"speedup vs {table.baseline}" if table.baseline else "speedup (no baseline)"
    return f"median us · {base} · DRAM SOL % of the measured copy bandwidth"


def rich_table(table: Pivot) -> Table:
    """The table's cells (title and legend are printed beside it by `print_tables`)."""
    out = Table()
    out.add_column("batch", justify="right")
    for column in table.columns:
        out.add_column(column + (" (baseline)" if column == table.baseline else ""), justify="right")
    for batch, cells in table.rows:
        texts = []
        for cell in cells:
            parts = cell_parts(cell)
            if not parts:
                texts.append("")
            elif cell is not None and cell.status != "ok":
                texts.append(f"[red]{parts[0]}[/]")
            else:
                texts.append("\n".join([parts[0], "  ".join(parts[1:])]) if len(parts) > 1 else parts[0])
        out.add_row(str(batch), *texts)
    return out


def print_tables(console: Console, tables: list[Pivot]) -> None:
    """Each table under its title; the legend once per sweep."""
    explained: set[str] = set()
    for table in tables:
        if table.sweep not in explained:
            console.print(f"[dim]{table.sweep}: {legend(table)}[/]", highlight=False)
            explained.add(table.sweep)
        console.print(f"[bold]{table.title}[/]", highlight=False)
        console.print(rich_table(table))


def status_counts(records: Iterable[CaseRecord]) -> dict[str, int]:
    counts = {"ok": 0, "fail": 0, "error": 0, "skip": 0}
    for r in records:
        counts[r.status] += 1
    return counts


def env_line(env: dict[str, Any], devices: list[dict[str, Any]]) -> str:
    """One line naming the GPU(s), the copy bandwidth, the timer and the tool version."""
    parts = []
    for d in devices:
        bw = d.get("bandwidth") or {}
        gpu = f"{d.get('name')}"
        if d.get("sm_count"):
            gpu += f" ({d['sm_count']} SMs, {d.get('l2_bytes', 0) / 2**20:.0f} MiB L2)"
        if bw.get("measured_tbps"):
            sheet = f", datasheet {bw['datasheet_tbps']}" if bw.get("datasheet_tbps") else ""
            gpu += f", copy {bw['measured_tbps']:.2f} TB/s{sheet}"
        gpu += f", timer {d.get('timer')}"
        parts.append(gpu)
    sha = (env.get("git_sha") or "")[:10] + ("+dirty" if env.get("git_dirty") else "")
    tool = f"ssmbench {env.get('ssmbench', '?')}" + (f" ({sha})" if sha else "")
    return "; ".join(parts + [tool, f"torch {env.get('torch')}, triton {env.get('triton')}"])


def markdown(tables: list[Pivot], records: list[CaseRecord], env: dict[str, Any],
             devices: list[dict[str, Any]]) -> str:
    """A Markdown report: environment, counts, every table, then each failure and error."""
    counts = status_counts(records)
    lines = [f"## ssmbench sweep: {env.get('spec_name', '')}", "", env_line(env, devices), "",
             ", ".join(f"{n} {s}" for s, n in counts.items()), ""]
    for table in tables:
        lines += [f"### {table.title}", "", legend(table), ""]
        header = ["batch"] + [c + (" (baseline)" if c == table.baseline else "") for c in table.columns]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---:|" * len(header))
        for batch, cells in table.rows:
            lines.append("| " + " | ".join([str(batch)] + [" · ".join(cell_parts(c)) for c in cells]) + " |")
        lines.append("")
    bad = [r for r in records if r.status in ("fail", "error")]
    if bad:
        lines += ["### failures and errors", ""]
        lines += [f"- **{r.status}** `{r.impl}` `{r.id}`: {r.message}" for r in bad]
        lines.append("")
    return "\n".join(lines)
