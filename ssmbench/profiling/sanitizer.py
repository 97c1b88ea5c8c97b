"""compute-sanitizer: memcheck, racecheck and synccheck on the chain (eager launches), and the
summary of what each tool found.

memcheck and synccheck end with ``========= ERROR SUMMARY: N errors`` (one line per checked
process; ``N error`` when N is 1). racecheck (compute-sanitizer 2025.3 on the H100) prints only
``RACECHECK SUMMARY: N hazards displayed (E errors, W warnings)`` when it found nothing to report
in detail; its errors count, warnings are reported beside. A run without any summary line (the
tool could not start the program) counts as failed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

TOOLS = ("memcheck", "racecheck", "synccheck")

_ERROR_SUMMARY = re.compile(r"ERROR SUMMARY:\s*([\d,]+)\s+errors?")
_RACE_SUMMARY = re.compile(r"RACECHECK SUMMARY:\s*([\d,]+)\s+hazards? displayed\s*\(([\d,]+)\s+errors?,\s*"
                           r"([\d,]+)\s+warnings?\)")
_FIRST_ERROR = re.compile(r"^=+\s+(Invalid .*|.*[Hh]azard.*|.*[Bb]arrier.*|Program hit .*|.*error.*)$", re.M)


def sanitizer_command(tool: str, inner: list[str], sanitizer: str = "compute-sanitizer") -> list[str]:
    """One tool over ``inner`` and its child processes; nonzero exit when it finds an error."""
    if tool not in TOOLS:
        raise ValueError(f"sanitizer tool {tool!r}; allowed: {', '.join(TOOLS)}")
    return [sanitizer, "--tool", tool, "--target-processes", "all", "--error-exitcode", "99",
            "--print-limit", "20", *inner]


@dataclass
class ToolSummary:
    tool: str
    errors: int | None
    """Summed over every ERROR SUMMARY line; None when the output has none (the run failed)."""
    warnings: int = 0
    first_error: str = ""
    log: Path | None = None
    exit_code: int | None = None

    @property
    def clean(self) -> bool:
        return self.errors == 0

    def describe(self) -> str:
        if self.errors is None:
            return f"{self.tool}: no ERROR SUMMARY in the output (the run failed; see {self.log})"
        text = f"{self.tool}: {self.errors} error(s)"
        if self.warnings:
            text += f", {self.warnings} warning(s)"
        if self.first_error:
            text += f"; first: {self.first_error}"
        return text


def parse_summary(tool: str, output: str, log: Path | None = None) -> ToolSummary:
    counts = [int(m.replace(",", "")) for m in _ERROR_SUMMARY.findall(output)]
    races = _RACE_SUMMARY.findall(output)
    warnings = sum(int(m[2].replace(",", "")) for m in races)
    if not counts and races:
        counts = [int(m[1].replace(",", "")) for m in races]
    first = ""
    if counts and sum(counts):
        match = _FIRST_ERROR.search(output)
        first = match.group(1).strip() if match else ""
    return ToolSummary(tool, sum(counts) if counts else None, warnings, first, log)
