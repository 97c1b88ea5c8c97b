"""Nsight Compute: the command line, the metrics, and the parsing of ``--csv --page raw`` output.

NVTX filter syntax (checked with ncu 2025.3.1 on the H100, docs/profile.md): a start/end range
(``nvtx.start_range``, what this package opens) is selected by ``--nvtx-include "NAME"`` (or
``"DOMAIN@NAME"``); a trailing ``/`` (``"NAME/"``) selects push/pop ranges only and matches
nothing here ("No kernels were profiled"); ``"regex:EXPR"`` matches range names by a regular
expression. The raw CSV carries the enclosing start/end ranges of every kernel in the column
``Id:Domain:Start/Stop_Range:...`` as ``"<instance>:<domain>:<name>:..."``.

Raw CSV layout: a header row, a units row (empty under the non-metric columns), one row per
profiled kernel. Numbers may carry thousands separators (``"9,024"``); units are base units with
``--print-units base`` (``byte``, ``nsecond``, ``%``) but scaled units (``Kbyte``, ``usecond``)
are converted too, so a CSV exported either way parses to the same values.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from ssmbench.errors import UsageError

DURATION = "gpu__time_duration.sum"
DRAM_READ = "dram__bytes_read.sum"
DRAM_WRITE = "dram__bytes_write.sum"
DRAM_PCT = "dram__throughput.avg.pct_of_peak_sustained_elapsed"
OCCUPANCY = "sm__warps_active.avg.pct_of_peak_sustained_active"
REGISTERS = "launch__registers_per_thread"
SMEM_STATIC = "launch__shared_mem_per_block_static"
SMEM_DYNAMIC = "launch__shared_mem_per_block_dynamic"
GRID = "launch__grid_size"
BLOCK = "launch__block_size"

METRICS = (DURATION, DRAM_READ, DRAM_WRITE, DRAM_PCT, OCCUPANCY, REGISTERS, SMEM_STATIC, SMEM_DYNAMIC, GRID, BLOCK)
"""Collected in one replay pass (checked on the H100 and the H200): duration, DRAM bytes read/written and % of peak,
achieved occupancy, registers and shared memory per kernel, launch geometry."""


CACHE_CONTROLS = ("all", "none")
RANGE_COLUMN_PREFIX = "Id:Domain:Start/Stop_Range"

_BYTE_PREFIX = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 1024.0, "Mi": 1024.0**2, "Gi": 1024.0**3}
_SECOND_PREFIX = {"n": 1.0, "u": 1e3, "m": 1e6, "": 1e9}  # to nanoseconds


def ncu_command(inner: list[str], report: Path, nvtx_include: str, *, metric_set: str | None = None,
                cache_control: str = "all", ncu: str = "ncu") -> list[str]:
    """Profile the kernels inside the NVTX start/end range ``nvtx_include`` of ``inner`` (and its
    children), clocks left alone, into ``report`` (``.ncu-rep`` is added by ncu)."""
    if cache_control not in CACHE_CONTROLS:
        raise UsageError(f"--cache-control {cache_control!r}: allowed: {', '.join(CACHE_CONTROLS)}")
    cmd = [ncu, "--nvtx", "--nvtx-include", nvtx_include, "--clock-control", "none",
           "--cache-control", cache_control, "--metrics", ",".join(METRICS)]
    if metric_set:
        cmd += ["--set", metric_set]
    return [*cmd, "--target-processes", "all", "-f", "-o", str(report), *inner]


def import_command(report: Path, ncu: str = "ncu") -> list[str]:
    """Export every collected metric of ``report`` as CSV (header row, units row, one row per kernel)."""
    return [ncu, "--import", str(report), "--csv", "--page", "raw", "--print-units", "base"]


def report_path(report_stem: Path) -> Path:
    return report_stem.with_name(report_stem.name + ".ncu-rep")


@dataclass(frozen=True)
class RangeTag:
    """One enclosing NVTX start/end range: its instance id (a new one per start), domain and name."""

    instance: int
    domain: str
    name: str


@dataclass
class KernelRow:
    """One profiled kernel launch; metrics in base units (bytes, ns, %, counts)."""

    id: int
    name: str
    block: str
    grid: str
    ranges: list[RangeTag] = field(default_factory=list)
    metrics: dict[str, float | None] = field(default_factory=dict)

    def get(self, metric: str) -> float | None:
        return self.metrics.get(metric)

    @property
    def dram_bytes(self) -> float | None:
        r, w = self.get(DRAM_READ), self.get(DRAM_WRITE)
        return None if r is None or w is None else r + w

    def in_range(self, name: str) -> bool:
        return any(t.name == name for t in self.ranges)


def unit_scale(unit: str) -> float:
    """Factor from ``unit`` to the base unit (byte, nanosecond; anything else 1): ``Kbyte`` 1e3,
    ``usecond`` 1e3 (to ns), ``Mbyte/second`` 1e6 (numerator only)."""
    head = unit.strip().split("/", 1)[0]
    for base, table in (("byte", _BYTE_PREFIX), ("second", _SECOND_PREFIX)):
        if head.endswith(base) and head[: -len(base)] in table:
            return table[head[: -len(base)]]
    return 1.0


def parse_number(text: str) -> float | None:
    """``"9,024"`` -> 9024.0; ``"n/a"``, ``""`` -> None."""
    t = text.strip().replace(",", "")
    if not t or t.lower() in ("n/a", "nan", "-"):
        return None
    try:
        return float(t)
    except ValueError:
        return None


def parse_ranges(cell: str) -> list[RangeTag]:
    """The start/end range column: zero or more ``"<id>:<domain>:<name>:..."`` entries."""
    entries = re.findall(r'"([^"]*)"', cell) or ([cell.strip()] if cell.strip() else [])
    tags = []
    for entry in entries:
        parts = entry.split(":")
        if len(parts) >= 3 and parts[0].strip().isdigit():
            tags.append(RangeTag(int(parts[0]), parts[1], parts[2]))
    return tags


def parse_raw_csv(text: str) -> list[KernelRow]:
    """Kernels of an ``ncu --csv --page raw`` output (tool chatter before the header is skipped)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID",')), None)
    if start is None:
        if "No kernels were profiled" in text:
            return []
        raise ValueError("not an ncu raw CSV: no header row starting with \"ID\"")
    rows = list(csv.reader(io.StringIO("\n".join(lines[start:]))))
    header, body = rows[0], rows[1:]
    units = [""] * len(header)
    if body and body[0] and body[0][0] == "":
        units, body = body[0], body[1:]
    col = {name: i for i, name in enumerate(header)}
    range_col = next((i for i, name in enumerate(header) if name.startswith(RANGE_COLUMN_PREFIX)), None)
    metric_cols = [i for i, name in enumerate(header) if "__" in name]
    kernels = []
    for row in body:
        if len(row) != len(header) or not row[0].strip():
            continue
        metrics = {}
        for i in metric_cols:
            value = parse_number(row[i])
            metrics[header[i]] = None if value is None else value * unit_scale(units[i] if i < len(units) else "")
        kernels.append(KernelRow(
            id=int(parse_number(row[col["ID"]]) or 0), name=row[col["Kernel Name"]],
            block=row[col["Block Size"]] if "Block Size" in col else "",
            grid=row[col["Grid Size"]] if "Grid Size" in col else "",
            ranges=parse_ranges(row[range_col]) if range_col is not None else [], metrics=metrics,
        ))
    return kernels


def total(kernels: list[KernelRow], metric: str) -> float | None:
    values = [k.get(metric) for k in kernels]
    return None if not values or any(v is None for v in values) else float(sum(values))  # type: ignore[arg-type]


def measured_dram_bytes(kernels: list[KernelRow]) -> float | None:
    """docs/spec.md §10's check: dram__bytes_read.sum + dram__bytes_write.sum over the kernels."""
    r, w = total(kernels, DRAM_READ), total(kernels, DRAM_WRITE)
    return None if r is None or w is None else r + w


@dataclass(frozen=True)
class ByteCheck:
    """The byte model against what ncu can measure, with the measurement's own uncertainty.

    With ``--cache-control all`` ncu writes back and invalidates the caches before every kernel,
    so each kernel starts cold and clean: its reads all reach DRAM. Its writes, though, reach
    DRAM only when evicted; what is still dirty in the write-back L2 when it ends is never in its
    ``dram__bytes_write.sum`` (measured on the H100: triton.conv1d at batch 64 writes 2.3 MB and
    ncu counts 0 bytes written). So a chain of ``kernels`` kernels moved between ``dram`` and
    ``dram + kernels * l2_bytes``; the model is off only when it is outside that band by more than
    the threshold. Where the band itself is wider than the threshold the check is weak (the chain
    is about the L2's size or smaller)."""

    model: float
    dram: float
    kernels: int
    l2_bytes: float | None
    """The profiled device's own L2 size (never a constant: the H100 has 50 MiB, the H200 60);
    None when the report does not carry it, and then only the lower bound is checked."""

    @property
    def upper(self) -> float:
        return self.dram + self.kernels * (self.l2_bytes or 0.0)

    @property
    def deviation(self) -> float | None:
        """docs/spec.md §10's comparison: the model vs dram__bytes_read.sum + dram__bytes_write.sum (%)."""
        return deviation_pct(self.model, self.dram)

    def off(self, threshold_pct: float) -> bool:
        t = threshold_pct / 100.0
        return self.model < self.dram * (1 - t) or self.model > self.upper * (1 + t)

    def weak(self, threshold_pct: float) -> bool:
        if self.l2_bytes is None:
            return True
        return self.dram <= 0 or (self.upper - self.dram) / self.dram > threshold_pct / 100.0


def deviation_pct(model: float | None, measured: float | None) -> float | None:
    """How far the byte model is from the measured DRAM bytes, in % of the measured bytes."""
    if model is None or not measured:
        return None
    return (model - measured) / measured * 100.0


def byte_model_line(model: int | None, kernels: list[KernelRow], l2_bytes: float | None,
                    threshold_pct: float = 10.0) -> str:
    """``byte model 240.449 MB vs measured DRAM 214.238 MB (read 36.960 + write 177.278): +12.2%; with
    writes left dirty in L2 the chain moved 214.238..319.096 MB: model consistent`` (see `ByteCheck`)."""
    dram = measured_dram_bytes(kernels)
    if dram is None:
        return "byte model: no DRAM byte metrics in the report"
    reads, writes = total(kernels, DRAM_READ) or 0.0, total(kernels, DRAM_WRITE) or 0.0
    where = f"measured DRAM {dram / 1e6:.3f} MB (read {reads / 1e6:.3f} + write {writes / 1e6:.3f})"
    if model is None:
        return f"byte model: none declared by the impl; {where}"
    check = ByteCheck(model, dram, len(kernels), l2_bytes)
    dev = check.deviation
    verdict = f"OFF by more than {threshold_pct:g}%" if check.off(threshold_pct) else "consistent"
    if check.weak(threshold_pct):
        verdict += " (weak check: the band is wider than the threshold)"
    head = f"byte model {model / 1e6:.3f} MB vs {where}: " + (f"{dev:+.1f}%" if dev is not None else "n/a")
    if l2_bytes is None:
        return f"{head}; L2 size unknown (the report does not carry the device's): model {verdict}"
    return (f"{head}; with writes left dirty in L2 ({len(kernels)} kernel(s) x {l2_bytes / 2**20:.0f} MiB) the chain "
            f"moved {dram / 1e6:.3f}..{check.upper / 1e6:.3f} MB: model {verdict}")


def kernel_table(kernels: list[KernelRow], title: str):
    """A rich table, one row per kernel launch."""
    from rich.table import Table

    table = Table(title=title)
    for name in ("#", "kernel", "grid", "block", "time us", "DRAM read MB", "DRAM write MB", "DRAM % peak",
                 "occupancy %", "regs/thread", "smem/block B"):
        table.add_column(name, justify="left" if name in ("kernel", "grid", "block") else "right",
                         overflow="fold")

    def fmt(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
        return "-" if value is None else f"{value / scale:,.{digits}f}"

    for k in kernels:
        smem = [k.get(SMEM_STATIC), k.get(SMEM_DYNAMIC)]
        smem_total = None if all(v is None for v in smem) else sum(v or 0.0 for v in smem)
        table.add_row(str(k.id), k.name, k.grid, k.block, fmt(k.get(DURATION), 1e3), fmt(k.get(DRAM_READ), 1e6, 3),
                      fmt(k.get(DRAM_WRITE), 1e6, 3), fmt(k.get(DRAM_PCT), digits=1), fmt(k.get(OCCUPANCY), digits=1),
                      fmt(k.get(REGISTERS), digits=0), fmt(smem_total, digits=0))
    return table
