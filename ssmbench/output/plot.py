"""Pictures of a results file (`ssmbench plot`, ``sweep/compare --plots``): kernel engineers read
bandwidth against batch and regressions as pictures first. Three figures, each as PNG and SVG:

- ``<sweep>-sol``: DRAM SOL % (left axis; achieved TB/s on the right) and the median span (us)
  against batch, one panel per storage format, one line per impl (and window), under the
  copy-bandwidth ceiling (``env.gpus[].bandwidth.measured_tbps``: 100 % SOL);
- ``<sweep>-speedup``: speedup over the sweep's baseline impl, a batch x format heatmap per impl;
- ``compare``: each pair's change and its interval (the gate's, `ssmbench.output.compare`), worst first.

The numbers are the report's (`ssmbench.output.report.pivot`: cells, speedups) and the gate's
(`Comparison` rows): nothing is recomputed here. matplotlib is an optional extra
(``ssmbench[plot]``), imported only when a figure is drawn, with the Agg backend (no display).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ssmbench.errors import UsageError
from ssmbench.output.compare import COMPARED, Comparison, Row
from ssmbench.output.report import Pivot, axis_label, pivot
from ssmbench.output.results import LogContents

FORMATS = ("png", "svg")
MAX_COMPARE_ROWS = 40
"""The comparison figure shows at most this many pairs (the worst); the title says how many there were."""
VERDICT_COLORS = {"SLOWER": "#c0392b", "FASTER": "#1e8449", "SAME": "#5d6d7e", "AMBIGUOUS": "#d68910"}


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, or a UsageError (exit 2) saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError("plotting needs matplotlib, an optional extra: pip install 'ssmbench[plot]'") from None
    matplotlib.use("Agg", force=True)
    matplotlib.rcParams["svg.fonttype"] = "none"  # SVG text stays text: smaller, searchable, selectable
    import matplotlib.pyplot as plt

    return plt


def run_label(env: dict[str, Any], devices: Sequence[dict[str, Any]]) -> str:
    """``NVIDIA H200 · 173a0ca92a+dirty``: the GPU(s) and the commit every title names."""
    gpus = " + ".join(dict.fromkeys(str(d.get("name") or "?") for d in devices)) or "no GPU recorded"
    sha = (env.get("git_sha") or "")[:10]
    commit = (sha + ("+dirty" if env.get("git_dirty") else "")) if sha else "commit unknown"
    return f"{gpus} · {commit}"


def copy_tbps(devices: Sequence[dict[str, Any]]) -> float | None:
    """The first GPU's calibrated copy bandwidth (TB/s), the 100 % of every record's ``sol_pct``."""
    for d in devices:
        tbps = (d.get("bandwidth") or {}).get("measured_tbps")
        if isinstance(tbps, (int, float)) and tbps > 0:
            return float(tbps)
    return None


def file_stem(name: str) -> str:
    """A sweep name as a file name (anything but letters, digits, ``.``, ``_``, ``-`` becomes ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "sweep"


def save(fig: Any, out_dir: Path, stem: str) -> list[Path]:
    """Write ``fig`` as ``stem.png`` and ``stem.svg`` under ``out_dir``; an unwritable place is exit 2."""
    plt = pyplot()
    paths = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for fmt in FORMATS:
            path = out_dir / f"{stem}.{fmt}"
            fig.savefig(path, format=fmt, dpi=100, bbox_inches="tight", metadata=_metadata(fmt))
            paths.append(path)
    except OSError as exc:
        raise UsageError(f"{out_dir}: cannot write plots ({exc.strerror or exc})") from None
    finally:
        plt.close(fig)
    return paths


def _metadata(fmt: str) -> dict[str, Any]:
    """No creation date in the files: the same results give the same bytes."""
    return {"Date": None} if fmt == "svg" else {}


def _series_label(table: Pivot, impl_windows: dict[str, int]) -> str:
    """A line's name: the impl, plus the other varying axes (the window only where that impl
    ran at several)."""
    parts = []
    impl = next((str(v) for k, v in table.group if k == "impl"), "")
    for axis, value in table.group:
        if axis == "impl" or (axis == "window" and impl_windows.get(impl, 0) < 2):
            continue
        parts.append(axis_label(axis, value))
    return " · ".join([impl, *parts]) if impl else " · ".join(parts)


def batch_ticks(batches: Sequence[int]) -> list[int]:
    """At most ~6 of the batch values, spread evenly on the log axis, labelled as plain numbers."""
    values = sorted({b for b in batches if b > 0})
    if not values:
        return []
    gap = max(math.log2(values[-1] / values[0]) / 6, 1.0)  # in doublings: labels never touch
    ticks = [values[0]]
    for b in values[1:]:
        if math.log2(b / ticks[-1]) >= gap:
            ticks.append(b)
    return ticks


def plot_sol(tables: list[Pivot], sweep: str, label: str, tbps: float | None, out_dir: Path) -> list[Path]:
    """DRAM SOL % and span against batch, a panel pair per format, a line per impl (and window)."""
    plt = pyplot()
    tables = [t for t in tables if t.column_axis == "format"] or tables
    columns = list(dict.fromkeys(c for t in tables for c in t.columns))
    impl_windows: dict[str, int] = {}
    for t in tables:
        impl = next((str(v) for k, v in t.group if k == "impl"), "")
        impl_windows[impl] = impl_windows.get(impl, 0) + 1
    fig, axes = plt.subplots(2, len(columns), figsize=(3.0 * len(columns) + 1.2, 6.0), sharex=True, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, table in enumerate(tables):
        name = _series_label(table, impl_windows)
        for j, column in enumerate(columns):
            if column not in table.columns:
                continue
            k = table.columns.index(column)
            points = [(b, cells[k]) for b, cells in table.rows
                      if cells[k] is not None and cells[k].status == "ok" and cells[k].median_us]
            if not points:
                continue
            style = dict(color=colors[i % len(colors)], marker="o", markersize=3, linewidth=1.4,
                         label=name or column)
            sol = [(b, c.sol_pct) for b, c in points if c.sol_pct is not None]
            if sol:
                axes[0][j].plot([b for b, _ in sol], [s for _, s in sol], **style)
            axes[1][j].plot([b for b, _ in points], [c.median_us for _, c in points], **style)
    ticks = batch_ticks([b for t in tables for b, _ in t.rows])
    for j, column in enumerate(columns):
        top, bottom = axes[0][j], axes[1][j]
        top.set_title(column)
        top.axhline(100, color="black", linestyle="--", linewidth=1)
        top.set_ylim(0, 110)
        top.grid(True, alpha=0.3)
        bottom.set_xscale("log", base=2)
        bottom.set_xticks(ticks, [str(b) for b in ticks])
        bottom.set_yscale("log")
        bottom.grid(True, which="both", alpha=0.3)
        bottom.set_xlabel("batch")
        if j == 0:
            ceiling = f"copy bandwidth {tbps:.2f} TB/s" if tbps else "copy bandwidth"
            top.text(0.03, 101.5, ceiling + " = 100 %", fontsize=7, va="bottom", transform=top.get_yaxis_transform())
            top.set_ylabel("DRAM SOL (% of measured copy BW)")
            bottom.set_ylabel("median span (us)")
        if tbps and j == len(columns) - 1:
            right = top.secondary_yaxis("right", functions=(lambda s: s * tbps / 100, lambda t: t * 100 / tbps))
            right.set_ylabel("achieved TB/s")
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.01))
    fig.suptitle(f"{sweep}: DRAM SOL and span vs batch\n{label}", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return save(fig, out_dir, f"{file_stem(sweep)}-sol")


def _without_baseline(table: Pivot) -> Pivot:
    """An impl-column table without the baseline impl's own column (always 1.00x)."""
    if table.column_axis != "impl" or table.baseline not in table.columns:
        return table
    keep = [i for i, c in enumerate(table.columns) if c != table.baseline]
    return dataclasses.replace(table, columns=[table.columns[i] for i in keep],
                               rows=[(b, [cells[i] for i in keep]) for b, cells in table.rows])


def plot_speedup(tables: list[Pivot], sweep: str, label: str, out_dir: Path) -> list[Path]:
    """Speedup over the baseline impl: one batch x format (or x impl) heatmap per table."""
    plt = pyplot()
    from matplotlib.colors import TwoSlopeNorm

    shown = [_without_baseline(t) for t in tables if t.baseline and ("impl", t.baseline) not in t.group]
    shown = [t for t in shown if any(c is not None and c.speedup for _, cells in t.rows for c in cells)]
    if not shown:
        return []
    values = [c.speedup for t in shown for _, cells in t.rows for c in cells if c is not None and c.speedup]
    lo, hi = min(min(values), 0.99), max(max(values), 1.01)
    norm = TwoSlopeNorm(vcenter=0.0, vmin=math.log(lo), vmax=math.log(hi))
    cols = min(len(shown), 3)
    rows = math.ceil(len(shown) / cols)
    height = max(len(t.rows) for t in shown) * 0.32 + 1.3  # cells, plus the panel's title and tick labels
    width = max(len(t.columns) for t in shown) * 0.75 + 1.2
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols + 1.5, height * rows + 0.8), squeeze=False,
                             layout="constrained")
    image = None
    for ax, table in zip(axes.flat, shown, strict=False):
        grid = [[math.log(c.speedup) if c is not None and c.speedup else math.nan for c in cells]
                for _, cells in table.rows]
        image = ax.imshow(grid, cmap="RdYlGn", norm=norm, aspect="auto")
        for r, (_, cells) in enumerate(table.rows):
            for c, cell in enumerate(cells):
                text = f"{cell.speedup:.2f}x" if cell is not None and cell.speedup else "-"
                ax.text(c, r, text, ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(table.columns)), table.columns, fontsize=8)
        ax.set_yticks(range(len(table.rows)), [str(b) for b, _ in table.rows], fontsize=8)
        ax.set_xlabel(table.column_axis)
        ax.set_ylabel("batch")
        ax.set_title(table.title.removeprefix(f"{sweep}: ").removeprefix(sweep) or sweep, fontsize=9)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    if image is not None:
        bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8)
        ticks = [t for t in (0.25, 0.5, 0.8, 0.9, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0) if lo <= t <= hi]
        bar.set_ticks([math.log(t) for t in ticks], labels=[f"{t:g}x" for t in ticks])
        bar.set_label(f"speedup vs {shown[0].baseline} (higher is faster)")
    fig.suptitle(f"{sweep}: speedup over {shown[0].baseline} (median span ratio)\n{label}", fontsize=11)
    return save(fig, out_dir, f"{file_stem(sweep)}-speedup")


def plot_results(results: LogContents, baselines: dict[str, str | None], out_dir: Path) -> list[Path]:
    """The SOL and speedup figures of every sweep in ``results``; ``baselines``: sweep -> the
    impl speedups are taken against (None: no speedup figure for that sweep)."""
    devices = list(results.devices.values())
    label, tbps = run_label(results.env, devices), copy_tbps(devices)
    records = list(results.records.values())
    if not any(r.status == "ok" and r.median_us for r in records):
        raise UsageError("nothing to plot: no record measured ok (status ok with a median)")
    tables = pivot(records, baselines)
    paths: list[Path] = []
    for sweep in dict.fromkeys(t.sweep for t in tables):
        mine = [t for t in tables if t.sweep == sweep]
        if not any(c is not None and c.status == "ok" and c.median_us for t in mine for _, cs in t.rows for c in cs):
            continue
        paths += plot_sol(mine, sweep, label, tbps, out_dir)
        paths += plot_speedup(mine, sweep, label, out_dir)
    return paths


def _row_name(row: Row) -> str:
    return f"{row.impl} · {row.id}"


def plot_comparison(comparison: Comparison, new: LogContents, old: LogContents, new_name: str, old_name: str,
                    out_dir: Path) -> list[Path]:
    """Each compared pair's change of the median (new/old - 1) with its interval and verdict, the
    threshold band shaded, the worst (slowest) first; at most `MAX_COMPARE_ROWS` pairs."""
    plt = pyplot()
    rows = [r for r in comparison.rows if r.verdict in COMPARED and r.interval is not None]
    if not rows:
        redrawn = sum(r.verdict == "REDRAWN" for r in comparison.rows)
        why = (f"{redrawn} pair(s) REDRAWN (the baseline timed other workload draws: re-store it)" if redrawn
               else "no pair measured on both sides")
        raise UsageError(f"{new_name} vs {old_name}: {why}: nothing to plot")
    rows.sort(key=lambda r: -(r.change_pct or 0.0))
    shown = rows[:MAX_COMPARE_ROWS]
    fig, ax = plt.subplots(figsize=(10, 0.24 * len(shown) + 1.8))
    ys = list(range(len(shown)))[::-1]
    band = shown[0].threshold_pct
    ax.axvspan(-band, band, color="#d5dbdb", alpha=0.5, label=f"±{band:g}% band")
    ax.axvline(0, color="black", linewidth=0.8)
    for y, row in zip(ys, shown, strict=True):
        change, interval = row.change_pct or 0.0, row.interval
        lo = (interval.lo - 1) * 100 if math.isfinite(interval.lo) else change
        hi = (interval.hi - 1) * 100 if math.isfinite(interval.hi) else change
        color = VERDICT_COLORS.get(row.verdict, "black")
        ax.errorbar(change, y, xerr=[[change - lo], [hi - change]], fmt="o", color=color, markersize=4,
                    capsize=2, linewidth=1.2)
    for verdict, color in VERDICT_COLORS.items():
        if any(r.verdict == verdict for r in shown):
            ax.plot([], [], "o", color=color, label=verdict)
    ax.set_yticks(ys, [_row_name(r) for r in shown], fontsize=7)
    ax.set_ylim(-0.8, len(shown) - 0.2)
    ax.set_xlabel("change of the median span, new vs old (%), with its interval")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    more = f" ({len(shown)} worst of {len(rows)} pairs)" if len(rows) > len(shown) else f" ({len(rows)} pairs)"
    new_label = run_label(new.env, list(new.devices.values()))
    old_label = run_label(old.env, list(old.devices.values()))
    fig.suptitle(f"{new_name} vs {old_name}: change per pair, worst first{more}\n"
                 f"new: {new_label}   old: {old_label}", fontsize=10)
    fig.tight_layout()
    return save(fig, out_dir, "compare")


def markdown_images(paths: Sequence[Path], markdown_path: Path) -> str:
    """A Markdown section embedding the PNGs, linked relative to the report's folder."""
    pngs = [p for p in paths if p.suffix == ".png"]
    if not pngs:
        return ""
    base = markdown_path.parent.resolve()
    lines = ["", "### Plots", ""]
    for p in pngs:
        lines += [f"![{p.stem}]({Path(os.path.relpath(p.resolve(), base)).as_posix()})", ""]
    return "\n".join(lines)
