"""Results of a sweep: schema ``ssmbench.results/1`` (documented in docs/results-format.md).

While a sweep runs, every record is appended to a JSON-lines log beside the output
(``results.json`` -> ``results.jsonl``) and flushed, so a crash, a kill or a lost machine loses
nothing measured; ``--resume`` reads the log back and skips what is done. At the end the final
JSON (``{"schema", "env", "cases"}``) is written atomically from the log's records.

Log lines: ``{"type": "env", ...}`` (the host, once per run), ``{"type": "device", ...}`` (a
GPU, as its first worker reports it), ``{"type": "case", ...}`` (one `CaseRecord`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ssmbench.case import Case
from ssmbench.errors import UsageError

SCHEMA = "ssmbench.results/1"
STATUSES = ("ok", "fail", "error", "skip")
DONE_STATUSES = ("ok", "fail", "skip")
"""What `--resume` does not run again. An error may be the machine's (OOM next to another job, a
hang), so errored pairs are retried."""


def format_label(state_dtype: str, rounding: str) -> str:
    """``fp16sr``, ``bf16``: the storage format as case ids and tables name it."""
    return state_dtype + ("sr" if rounding == "sr" else "")


def case_params(case: Case) -> dict[str, Any]:
    """The case's parameters as plain JSON values (what tables pivot on and filters match)."""
    from ssmbench.expand import shape_tag

    return {
        "family": case.family, "preset": case.preset, "tp": case.tp, "shape": shape_tag(case.shape),
        "batch": case.batch, "T": case.T, "state_dtype": case.state_dtype, "rounding": case.rounding,
        "format": format_label(case.state_dtype, case.rounding), "pool": case.pool,
        "accept": case.accept.label(), "window": case.window, "pdl": "on" if case.pdl else "off",
        "l2": case.l2, "act_dtype": case.act_dtype, "seed": case.seed,
        "options": {k: v for k, v in case.extras},
    }


@dataclass
class CaseRecord:
    """One (case, impl) of a sweep. Times in microseconds; None where not measured."""

    id: str
    impl: str
    sweep: str
    status: str
    message: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    samples_us: list[float] = field(default_factory=list)
    median_us: float | None = None
    p10_us: float | None = None
    p90_us: float | None = None
    noise: float | None = None
    n_samples: int = 0
    stop: str | None = None
    kernels_us: dict[str, float] = field(default_factory=dict)
    bytes: int | None = None
    tbps: float | None = None
    sol_pct: float | None = None
    sol_datasheet_pct: float | None = None
    verify: dict[str, Any] | None = None
    clock: dict[str, Any] | None = None
    timer: str | None = None
    launch: str | None = None
    gpu: str | None = None
    seconds: float | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r}; allowed: {', '.join(STATUSES)}")

    @property
    def key(self) -> tuple[str, str, str]:
        return record_key(self.sweep, self.id, self.impl)

    def to_dict(self) -> dict[str, Any]:
        return _finite(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseRecord:
        """Tolerant of keys a newer writer added (ignored) and of missing optional ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def record_key(sweep: str, case_id: str, impl: str) -> tuple[str, str, str]:
    return (sweep, case_id, impl)


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: they become null (e.g. an infinite verification error -> null + ok=False)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def log_path(output: Path) -> Path:
    """``results.json`` -> ``results.jsonl``; any other name gets ``.jsonl`` appended."""
    output = Path(output)
    return output.with_name(output.name + "l") if output.suffix == ".json" else output.with_name(
        output.name + ".jsonl")


@dataclass
class LogContents:
    env: dict[str, Any] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: dict[tuple[str, str, str], CaseRecord] = field(default_factory=dict)

    def done_keys(self) -> set[tuple[str, str, str]]:
        return {k for k, r in self.records.items() if r.status in DONE_STATUSES}


def read_log(path: Path) -> LogContents:
    """Read a JSON-lines log; for a record written twice the last one wins. A torn last line (the
    run was killed mid-write) is dropped; a bad line elsewhere is an error naming it."""
    contents = LogContents()
    lines = Path(path).read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            kind = item.pop("type")
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
            if number == len(lines):
                break
            raise UsageError(f"{path}:{number}: not a ssmbench results log line") from None
        if kind == "env":
            contents.env = item
        elif kind == "device":
            contents.devices[item.get("uuid") or f"index{item.get('index')}"] = item
        elif kind == "case":
            try:
                record = CaseRecord.from_dict(item)
            except (TypeError, ValueError) as exc:
                raise UsageError(f"{path}:{number}: bad case record: {exc}") from None
            contents.records[record.key] = record
    return contents


def load_results(path: Path) -> LogContents:
    """Read a final results JSON (or, for a run that never finished, its JSON-lines log)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such results file")
    if path.suffix == ".jsonl":
        return read_log(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}:{exc.lineno}: not JSON ({exc.msg})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise UsageError(f"{path}: schema {got!r}; expected {SCHEMA!r}")
    env = dict(data.get("env") or {})
    devices = {d.get("uuid") or f"index{d.get('index')}": d for d in env.pop("gpus", [])}
    records: dict[tuple[str, str, str], CaseRecord] = {}
    for i, item in enumerate(data.get("cases") or []):
        try:
            record = CaseRecord.from_dict(item)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{path}: cases[{i}]: {exc}") from None
        records[record.key] = record
    return LogContents(env, devices, records)


class ResultsLog:
    """The append-only log of a running sweep. With ``resume`` the existing log (or, if only the
    final JSON is there, that) is read first and kept; otherwise a fresh log is started."""

    def __init__(self, output: Path, resume: bool = False) -> None:
        self.output = Path(output)
        self.path = log_path(self.output)
        self.previous = LogContents()
        if resume:
            if self.path.is_file():
                self.previous = read_log(self.path)
            elif self.output.is_file():
                self.previous = load_results(self.output)
        self.output.parent.mkdir(parents=True, exist_ok=True)
        carried = resume and self.path.is_file()
        self._file: TextIO = open(self.path, "a" if carried else "w")  # noqa: SIM115 - closed in close()
        if resume and not carried:  # rebuilding the log from a final JSON: copy its records in
            for device in self.previous.devices.values():
                self._write({"type": "device", **device})
            for record in self.previous.records.values():
                self._write({"type": "case", **record.to_dict()})
        self.devices: dict[str, dict[str, Any]] = dict(self.previous.devices)
        self.records: dict[tuple[str, str, str], CaseRecord] = dict(self.previous.records)

    def _write(self, item: dict[str, Any]) -> None:
        self._file.write(json.dumps(_finite(item)) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def env(self, env: dict[str, Any]) -> None:
        self._write({"type": "env", **env})

    def device(self, info: dict[str, Any]) -> None:
        key = info.get("uuid") or f"index{info.get('index')}"
        if self.devices.get(key) != info:
            self.devices[key] = info
            self._write({"type": "device", **info})

    def case(self, record: CaseRecord) -> None:
        self.records[record.key] = record
        self._write({"type": "case", **record.to_dict()})

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def write_results(output: Path, env: dict[str, Any], devices: list[dict[str, Any]],
                  records: list[CaseRecord]) -> None:
    """The final JSON, written to a temporary file and renamed (never half a file)."""
    output = Path(output)
    data = {"schema": SCHEMA, "env": {**env, "gpus": devices}, "cases": [r.to_dict() for r in records]}
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(json.dumps(_finite(data), indent=1) + "\n")
    os.replace(tmp, output)
