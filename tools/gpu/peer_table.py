"""Markdown tables for docs/perf-notes.md's FlashInfer comparison, from one sweep's results log.

    python3 -m tools.gpu.peer_table results/headline.json > /tmp/tables.md   (or the .jsonl log)

Pairs each ssmbench impl with its FlashInfer counterpart on the same case (same timer, same run):
triton.intermediate vs flashinfer.ssu, triton.checkpoint vs flashinfer.checkpointing at W = T and
W = 16. Prints (1) the side-by-side medians per state format, ratios FlashInfer / ssmbench (bold
where FlashInfer is faster), and (2) one row per cell FlashInfer wins, with the case's byte floor,
both DRAM SOLs and every kernel's median span, the material of the per-cell analysis.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ssmbench.output.results import CaseRecord, load_results

PAIRS = [("triton.intermediate", "flashinfer.ssu"), ("triton.checkpoint", "flashinfer.checkpointing")]
FORMATS = ["fp32", "bf16", "fp16sr", "int8sr", "fp8sr"]

Key = tuple[str, str, int, int]


def load_ok(path: Path) -> dict[Key, CaseRecord]:
    """(impl, format, batch, window) -> the ok record of that pair."""
    records: dict[Key, CaseRecord] = {}
    for record in load_results(path).records.values():
        if record.status == "ok":
            params = record.params
            records[(record.impl, params["format"], params["batch"], params["window"])] = record
    return records


def short_kernel(name: str) -> str:
    """The innermost identifier of an Itanium-mangled name (FlashInfer's templates), else the name."""
    if not name.startswith("_ZN"):
        return name
    parts, rest = [], name[3:]
    while (match := re.match(r"(\d+)", rest)):
        length = int(match.group(1))
        start = match.end()
        parts.append(rest[start:start + length])
        rest = rest[start + length:]
    return parts[-1] if parts else name


def kernels(record: CaseRecord) -> str:
    return " + ".join(f"{short_kernel(k)} {v:.1f}" for k, v in record.kernels_us.items())


def ratio(theirs: CaseRecord | None, ours: CaseRecord | None) -> str:
    if not theirs or not ours:
        return "-"
    value = theirs.median_us / ours.median_us
    return f"**{value:.2f}**" if value < 1 else f"{value:.2f}"


def us(record: CaseRecord | None) -> str:
    return f"{record.median_us:.1f}" if record else "-"


def side_by_side(records: dict[Key, CaseRecord], batches: list[int], T: int) -> list[str]:
    lines = []
    for fmt in FORMATS:
        lines += [f"#### {fmt}", "",
                  "| batch | intermediate | fi.ssu | fi/ours | ckpt W=T | fi.ckpt W=T | fi/ours "
                  "| ckpt W=16 | fi.ckpt W=16 | fi/ours |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for b in batches:
            cells = []
            for (ours, theirs), window in [(PAIRS[0], T), (PAIRS[1], T), (PAIRS[1], 16)]:
                mine, peer = records.get((ours, fmt, b, window)), records.get((theirs, fmt, b, window))
                cells += [us(mine), us(peer), ratio(peer, mine)]
            lines.append(f"| {b} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def wins(records: dict[Key, CaseRecord], batches: list[int], T: int) -> list[str]:
    lines = ["| pair | fmt | W | batch | floor MB | ours us (SOL) | FlashInfer us (SOL) | fi/ours "
             "| ours kernels us | FlashInfer kernels us |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for ours, theirs in PAIRS:
        for fmt in FORMATS:
            for window in ([T] if ours == "triton.intermediate" else [T, 16]):
                for b in batches:
                    mine, peer = records.get((ours, fmt, b, window)), records.get((theirs, fmt, b, window))
                    if not mine or not peer or peer.median_us >= mine.median_us:
                        continue
                    lines.append(
                        f"| {theirs.split('.')[1]} | {fmt} | {window} | {b} | {mine.bytes / 1e6:.2f} "
                        f"| {mine.median_us:.1f} ({mine.sol_pct:.0f}%) "
                        f"| {peer.median_us:.1f} ({peer.sol_pct:.0f}%) | {ratio(peer, mine)} "
                        f"| {kernels(mine)} | {kernels(peer)} |")
    return lines


def tables(path: Path) -> str:
    records = load_ok(path)
    batches = sorted({key[2] for key in records})
    T = min(key[3] for key in records)  # the W = T cases have the smallest window
    return "\n".join(side_by_side(records, batches, T) + ["### Cells FlashInfer wins", ""] + wins(records, batches, T))


def main(path: str) -> None:
    print(tables(Path(path)))


if __name__ == "__main__":
    main(sys.argv[1])
