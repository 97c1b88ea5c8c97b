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
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO

from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import NotRequired, TypedDict

from ssmbench.errors import UsageError
from ssmbench.spec.case import Case

SCHEMA = "ssmbench.results/1"
STATUSES = ("ok", "fail", "error", "skip")
DONE_STATUSES = ("ok", "fail", "skip")
"""What `--resume` does not run again. An error may be the machine's (OOM next to another job, a
hang), so errored pairs are retried."""


def format_label(state_dtype: str, rounding: str) -> str:
    """``fp16sr``, ``bf16``: the storage format as case ids and tables name it."""
    return state_dtype + ("sr" if rounding == "sr" else "")


def case_params(case: Case) -> dict[str, Any]:
    """The case's parameters as plain JSON values: what tables pivot on and filters match
    (``format``, ``accept`` as its readable label, ...), plus the full workload (``dims``: the
    per-rank shape with d_conv, ``accept_law``: the law's kind and values, ``seed``, ``options``,
    ``act_dtype``), so a stored record can be checked against a case by equality: the result
    equals itself after a JSON round trip (lists, not tuples)."""
    from ssmbench.spec.expand import shape_tag

    return {
        "family": case.family, "preset": case.preset, "tp": case.tp, "shape": shape_tag(case.shape),
        "dims": dataclasses.asdict(case.shape),
        "batch": case.batch, "T": case.T, "state_dtype": case.state_dtype, "rounding": case.rounding,
        "format": format_label(case.state_dtype, case.rounding), "pool": case.pool,
        "accept": case.accept.label(), "accept_law": {"kind": case.accept.kind, "values": list(case.accept.values)},
        "window": case.window, "pdl": "on" if case.pdl else "off",
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
    workload: str | None = None
    """`Workload.work_digest` of the case's workload (slots, accepted lengths, pnat...): `compare`
    refuses to compare records of one case with different digests (REDRAWN). None in records
    written before it existed (compared as before)."""
    run_medians_us: list[float] = field(default_factory=list)
    """A baseline stored from several runs (`baseline save RUN MORE...`): this pair's median in
    each run, its own first; empty for a single run. `compare` reads them as the states the
    pair has been seen in (docs/gate.md, "Baselines from several runs")."""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r}; allowed: {', '.join(STATUSES)}")

    @property
    def key(self) -> tuple[str, str, str]:
        return record_key(self.sweep, self.id, self.impl)

    def to_dict(self) -> dict[str, Any]:
        return finite_json(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Any) -> CaseRecord:
        """A record from its JSON object, validated (`validate_case`): tolerant of keys a newer
        writer added (ignored) and of missing optional ones, never of wrong types. Raises
        `ResultsFormatError` naming the field."""
        return validate_case(data)


def record_key(sweep: str, case_id: str, impl: str) -> tuple[str, str, str]:
    return (sweep, case_id, impl)


def finite_json(value: Any) -> Any:
    """JSON has no NaN/inf: they become null (e.g. an infinite verification error -> null + ok=False)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def log_path(output: Path) -> Path:
    """``results.json`` -> ``results.jsonl``; any other name gets ``.jsonl`` appended."""
    output = Path(output)
    return output.with_name(output.name + "l") if output.suffix == ".json" else output.with_name(
        output.name + ".jsonl")


# -- reading: one validation layer for every reader ----------------------------------------------
#
# Every reader (`load_results`, `read_log`, `CaseRecord.from_dict`) goes through the functions
# below, so a results file that is not what docs/results-format.md says is one clear error naming
# the file, the field path (``cases[12].samples_us[3]``) and what was expected: never a TypeError
# deep inside `compare`, never a traceback. Types are pydantic's in strict mode (a bool is not a
# number, "3" is not a number, 1.0 is not an integer); unknown keys are kept (env, devices) or
# ignored (case records) so a newer writer can add fields within /1.

MAX_RESULTS_BYTES = 512 << 20
"""Results files larger than this are refused before reading (the largest real one, a 343-pair
headline sweep, is 2.7 MB; parsing JSON takes ~10x its size in memory)."""
MAX_NESTING = 32
"""Deepest JSON nesting accepted (a real file nests 5 deep). Deeper input is refused with a clear
error before anything recurses over it (json itself gives up near Python's recursion limit)."""


class ResultsFormatError(UsageError, ValueError):
    """A results file (or record) that does not match the schema: where, which field, what was
    expected and what was there. A ValueError too, for callers that caught the old ValueError."""

    def __init__(self, field: str, expected: str, got: str = "", where: str = "") -> None:
        self.field, self.expected, self.got, self.where = field, expected, got, where
        text = f"{field}: expected {expected}" if field else f"expected {expected}"
        text += f", got {got}" if got else ""
        super().__init__(f"{where}: {text}" if where else text)

    def at(self, where: str, prefix: str = "") -> ResultsFormatError:
        """The same error located in a file (``where``: ``path`` or ``path:line``), with the
        field path below ``prefix`` (``cases[12]``)."""
        return ResultsFormatError(join_field(prefix, self.field), self.expected, self.got, where)


def join_field(prefix: str, field: str) -> str:
    """``cases[3]`` + ``samples_us[1]`` -> ``cases[3].samples_us[1]``."""
    if not prefix or not field:
        return prefix or field
    return prefix + field if field.startswith("[") else f"{prefix}.{field}"


def describe(value: Any) -> str:
    """A short rendering of a bad value for an error line (JSON spelling, truncated)."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, dict):
        return f"an object with {len(value)} key(s)"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _plain_text(value: str) -> str:
    """Strings must be printable to a terminal and writable as UTF-8 (no lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("valid Unicode text (no lone surrogates)") from None
    return value


def _label(value: str) -> str:
    """Identifiers (case id, impl, GPU name) also have no control characters."""
    _plain_text(value)
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise ValueError("a string without control characters")
    return value


Text = Annotated[str, AfterValidator(_plain_text)]
Label = Annotated[str, AfterValidator(_label)]
Ident = Annotated[str, Field(min_length=1), AfterValidator(_label)]
Number = Annotated[float, Field(allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0)]
Sample = Annotated[float, Field(gt=0, allow_inf_nan=False)]
"""One timed span in microseconds: a finite number > 0 (a bool, null, NaN, 0 is not a sample)."""

_OPEN = ConfigDict(strict=True, extra="allow")
_CLOSED = ConfigDict(strict=True, extra="ignore")


class BandwidthFields(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    measured_tbps: Number | None
    datasheet_tbps: Number | None
    copy_bytes: Count | None
    copy_ms: Number | None


class DeviceFields(TypedDict, total=False):
    """``env.gpus[]`` / a ``device`` log line (what ssmbench/measure/runner.py writes)."""

    __pydantic_config__ = _OPEN  # type: ignore[misc]
    index: int | None
    name: Label | None
    uuid: Label | None
    sm_count: Count | None
    l2_bytes: Count | None
    memory_bytes: Count | None
    capability: Label | None
    driver: Label | None
    cuda_runtime: Label | None
    timer: Label | None
    timer_note: Text | None
    clock_source: Label | None
    clock_note: Text | None
    max_sm_mhz: Number | None
    max_mem_mhz: Number | None
    bandwidth: BandwidthFields | None
    test_slowdown: Number | None


class EnvFields(TypedDict, total=False):
    """``env`` / an ``env`` log line: the keys readers use are typed, others kept as they are."""

    __pydantic_config__ = _OPEN  # type: ignore[misc]
    ssmbench: Text | None
    git_sha: Label | None
    git_dirty: bool | None
    hostname: Label | None
    spec: Text | None
    spec_name: Label | None
    started: Label | None
    finished: Label | None
    complete: bool | None
    device_mode: Label | None
    timer: Label | None
    test_slowdown: Number | None
    gpus: list[DeviceFields]


class ClockFields(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    source: Label | None
    sm_mhz_min: Number | None
    sm_mhz_max: Number | None
    max_sm_mhz: Number | None
    throttled_samples: Count | None
    throttle_reasons: list[Text] | None


class CaseFields(TypedDict):
    """A case record (`CaseRecord`); unknown keys are dropped."""

    __pydantic_config__ = _CLOSED  # type: ignore[misc]
    id: Ident
    impl: Ident
    sweep: Ident
    status: Literal["ok", "fail", "error", "skip"]
    message: NotRequired[Text]
    params: NotRequired[dict[str, Any]]
    samples_us: NotRequired[list[Sample]]
    median_us: NotRequired[Number | None]
    p10_us: NotRequired[Number | None]
    p90_us: NotRequired[Number | None]
    noise: NotRequired[Number | None]
    n_samples: NotRequired[Count]
    stop: NotRequired[Label | None]
    kernels_us: NotRequired[dict[str, Number | None]]
    bytes: NotRequired[Count | None]
    tbps: NotRequired[Number | None]
    sol_pct: NotRequired[Number | None]
    sol_datasheet_pct: NotRequired[Number | None]
    verify: NotRequired[dict[str, Any] | None]
    clock: NotRequired[ClockFields | None]
    timer: NotRequired[Label | None]
    launch: NotRequired[Label | None]
    gpu: NotRequired[Label | None]
    seconds: NotRequired[Number | None]
    notes: NotRequired[list[Text]]
    workload: NotRequired[Label | None]
    run_medians_us: NotRequired[list[Sample]]


@cache
def _adapter(kind: type) -> TypeAdapter[Any]:
    """Built once, on first use (pydantic builds a validator per type)."""
    return TypeAdapter(kind)


_EXPECTED = {
    "float_type": "a number", "int_type": "an integer", "string_type": "a string", "bool_type": "true or false",
    "dict_type": "an object", "typed_dict_type": "an object", "list_type": "a list",
    "finite_number": "a finite number", "missing": "a value (required field)",
    "string_too_short": "a non-empty string", "int_from_float": "an integer",
}


def first_error(exc: ValidationError) -> ResultsFormatError:
    """pydantic's first error as a field path and what was expected there."""
    err = exc.errors(include_url=False)[0]
    path = ""
    for part in err["loc"]:
        path = join_field(path, f"[{part}]" if isinstance(part, int) else str(part))
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "literal_error":
        expected = "one of " + str(ctx.get("expected", "")).replace("'", "")
    elif kind in ("greater_than", "greater_than_equal"):
        expected = f"a finite number {'>' if kind == 'greater_than' else '>='} {ctx.get('gt', ctx.get('ge'))}"
    elif kind == "value_error":
        expected = str(ctx.get("error", err["msg"]))
    else:
        expected = _EXPECTED.get(kind, err["msg"].removeprefix("Input should be "))
    got = "" if kind == "missing" else describe(err.get("input"))
    if got == "null" and kind in ("float_type", "finite_number", "greater_than"):
        got += " (the writer turns NaN or infinity into null)"
    if len(exc.errors()) > 1:
        got += f" ({len(exc.errors()) - 1} more problem(s) in this object)"
    return ResultsFormatError(path, expected, got)


def _validate(kind: type, data: Any, what: str) -> Any:
    if not isinstance(data, dict):
        raise ResultsFormatError("", f"an object ({what})", describe(data))
    try:
        return _adapter(kind).validate_python(data)
    except ValidationError as exc:
        raise first_error(exc) from None


def validate_case(data: Any) -> CaseRecord:
    """A `CaseRecord` from a JSON object, every field type-checked. ``samples_us`` is the truth:
    ``n_samples`` is set to its length whatever the file said."""
    fields = _validate(CaseFields, data, "a case record")
    fields["n_samples"] = len(fields.get("samples_us", []))
    return CaseRecord(**fields)


def validate_device(data: Any) -> dict[str, Any]:
    """An ``env.gpus[]`` entry or ``device`` line, type-checked; unknown keys kept."""
    return dict(_validate(DeviceFields, data, "a GPU record"))


def validate_env(data: Any) -> dict[str, Any]:
    """An ``env`` object, type-checked (``gpus`` too, when present); unknown keys kept."""
    return dict(_validate(EnvFields, data, "the env object"))


def usable_samples(samples: Any) -> bool:
    """Whether a record's samples can be compared: a non-empty list of finite numbers > 0 (what
    `Sample` accepts; checked again here for records built in code rather than read)."""
    return (isinstance(samples, list) and bool(samples)
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0
                    for x in samples))


def device_key(device: dict[str, Any]) -> str:
    return device.get("uuid") or f"index{device.get('index')}"


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object hook: a key given twice is an error (json would silently keep the last)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _too_deep(value: Any) -> str | None:
    """The path of the first value nested deeper than MAX_NESTING, or None (iterative: no
    recursion, whatever the input)."""
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_NESTING:
            return path if len(path) <= 60 else path[:57] + "..."
        children = item.items() if isinstance(item, dict) else enumerate(item)
        for key, child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, join_field(path, f"[{key}]" if isinstance(key, int) else str(key)), depth + 1))
    return None


class _NotJson(ValueError):
    """Text that does not parse as JSON (a torn log line is one)."""


def parse_json(text: str, where: str) -> Any:
    """JSON with the checks json leaves out: duplicate keys, nesting depth. Raises `_NotJson` for
    a syntax error (the caller words it) and `UsageError` for the rest."""
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as exc:
        raise UsageError(f"{where}: duplicate key {exc.args[0]!r} in one JSON object (which value counts would "
                         "be a guess)") from None
    except RecursionError:
        raise UsageError(f"{where}: JSON nested too deeply to read (more than {MAX_NESTING} levels are "
                         "refused)") from None
    except json.JSONDecodeError as exc:
        raise _NotJson(f"line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise _NotJson(str(exc)) from None
    if isinstance(data, (dict, list)):
        deep = _too_deep(data)
        if deep is not None:
            raise UsageError(f"{where}: {deep}: nested more than {MAX_NESTING} levels deep; not a results file")
    return data


_MAGIC = {b"\x1f\x8b": "gzip-compressed; gunzip it first", b"PK\x03\x04": "a zip archive; unzip it first",
          b"\x28\xb5\x2f\xfd": "zstd-compressed; decompress it first", b"BZh": "bzip2-compressed; decompress it first",
          b"\xfd7zXZ\x00": "xz-compressed; decompress it first"}


def read_results_text(path: Path) -> str:
    """A results file's text: a regular file, at most MAX_RESULTS_BYTES, not compressed, UTF-8
    (a leading BOM is dropped), no NUL bytes. Compressed files are refused, not unpacked: the
    size limit then holds for what is parsed."""
    if not path.is_file():
        raise UsageError(f"{path}: {'not a regular file' if path.exists() else 'no such results file'}")
    try:
        size = path.stat().st_size
        if size > MAX_RESULTS_BYTES:
            raise UsageError(f"{path}: {size / 2**20:.0f} MiB; results files over {MAX_RESULTS_BYTES >> 20} MiB "
                             "are refused (split the sweep, e.g. with --shard or --filter)")
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    for magic, what in _MAGIC.items():
        if raw.startswith(magic):
            raise UsageError(f"{path}: {what} (results are read as plain JSON)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); a results "
                         "file is JSON") from None
    nul = text.find("\x00")
    if nul >= 0:
        raise UsageError(f"{path}: binary data (a NUL byte at offset {nul}); a results file is JSON text")
    return text


@dataclass
class LogContents:
    env: dict[str, Any] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: dict[tuple[str, str, str], CaseRecord] = field(default_factory=dict)

    def done_keys(self) -> set[tuple[str, str, str]]:
        return {k for k, r in self.records.items() if r.status in DONE_STATUSES}


LOG_TYPES = ("env", "device", "case")


def read_log(path: Path) -> LogContents:
    """Read a JSON-lines log; for a record written twice the last one wins. A torn last line (the
    run was killed mid-write: not JSON) is dropped; any other bad line is an error naming the line
    and field. An empty log is empty contents (a run that died before its first line)."""
    path = Path(path)
    return parse_log(read_results_text(path), path)


def parse_log(text: str, path: Path) -> LogContents:
    contents = LogContents()
    lines = text.split("\n")
    last = max((i for i, line in enumerate(lines, 1) if line.strip()), default=0)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            item = parse_json(line, where)
        except _NotJson as exc:
            if number == last:
                break
            raise UsageError(f"{where}: not JSON ({exc}); each log line is one JSON object") from None
        if not isinstance(item, dict):
            raise UsageError(f"{where}: expected a JSON object with a \"type\", got {describe(item)}")
        kind = item.pop("type", None)
        if kind not in LOG_TYPES:
            raise ResultsFormatError("type", "one of " + ", ".join(LOG_TYPES), describe(kind), where)
        try:
            if kind == "env":
                contents.env = validate_env(item)
            elif kind == "device":
                device = validate_device(item)
                contents.devices[device_key(device)] = device
            else:
                record = validate_case(item)
                contents.records[record.key] = record
        except ResultsFormatError as exc:
            raise exc.at(where) from None
    return contents


def load_results(path: Path) -> LogContents:
    """Read a final results JSON (or, for a run that never finished, its JSON-lines log: a
    ``.jsonl`` path), validated throughout. Bad input raises `UsageError` naming the file."""
    path = Path(path)
    if path.suffix == ".jsonl":
        text = read_results_text(path)
        if not text.strip():
            raise UsageError(f"{path}: empty file; not a results file")
        return parse_log(text, path)
    return parse_final(read_document(path, SCHEMA, "a results file"), path)


def read_document(path: Path, schema: str, what: str) -> Any:
    """A results document's JSON (a final results file, an accuracy file): bounded UTF-8 text,
    not empty, JSON; its ``schema`` is checked by `parse_document`. Bad input raises `UsageError`
    naming the file."""
    path = Path(path)
    text = read_results_text(path)
    if not text.strip():
        raise UsageError(f"{path}: empty file; not {what}")
    try:
        return parse_json(text, str(path))
    except _NotJson as exc:
        raise UsageError(f"{path}: not JSON ({exc})") from None


def parse_document(data: Any, path: Path, schema: str, list_key: str, item_what: str,
                   validate_item: Callable[[Any], Any]) -> tuple[dict[str, Any], list[Any]]:
    """``{"schema": schema, "env": {...}, list_key: [...]}``: the schema, the validated ``env``
    and every item of the list validated by ``validate_item``; a problem raises `UsageError`
    naming the file and the field (``cases[3].samples_us``)."""
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object with \"schema\": {schema!r}, got {describe(data)}")
    if data.get("schema") != schema:
        raise UsageError(f"{path}: schema {describe(data.get('schema'))}; expected {schema!r}")
    for key, what in (("env", "an object"), (list_key, f"a list of {item_what}")):
        if key not in data:
            raise ResultsFormatError(key, what, "nothing (missing)", str(path))
    if not isinstance(data[list_key], list):
        raise ResultsFormatError(list_key, f"a list of {item_what}", describe(data[list_key]), str(path))
    try:
        env = validate_env(data["env"])
    except ResultsFormatError as exc:
        raise exc.at(str(path), "env") from None
    items = []
    for i, item in enumerate(data[list_key]):
        try:
            items.append(validate_item(item))
        except ResultsFormatError as exc:
            raise exc.at(str(path), f"{list_key}[{i}]") from None
    return env, items


def write_document(output: Path, data: dict[str, Any]) -> None:
    """A results document written to a temporary file, synced and renamed (never half a file,
    even when the machine goes down right after); non-finite numbers become null."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(finite_json(data), indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, output)


def parse_final(data: Any, path: Path) -> LogContents:
    """The final JSON's object: schema, ``env`` (with ``gpus``) and ``cases``, each validated; a
    (sweep, id, impl) given twice is an error (the writer writes each pair once)."""
    env, cases = parse_document(data, path, SCHEMA, "cases", "case records", validate_case)
    devices = {device_key(d): dict(d) for d in env.pop("gpus", [])}
    records: dict[tuple[str, str, str], CaseRecord] = {}
    first: dict[tuple[str, str, str], int] = {}
    for i, record in enumerate(cases):
        if record.key in first:
            raise UsageError(f"{path}: cases[{i}]: the pair {'/'.join(record.key)} is also cases[{first[record.key]}] "
                             "(a final JSON holds each pair once)")
        first[record.key] = i
        records[record.key] = record
    return LogContents(env, devices, records)


class ResultsLog:
    """The append-only log of a running sweep. Opened only once the plan is known, so a bad
    option never touches an earlier run's files. With ``resume`` (or an explicit ``previous``,
    read beforehand with `read_previous`) the earlier records are kept: appended to after
    cutting a torn last line, or copied into a new log when only the final JSON is left;
    otherwise a fresh log replaces any old one."""

    def __init__(self, output: Path, resume: bool = False, previous: LogContents | None = None) -> None:
        self.output = Path(output)
        self.path = log_path(self.output)
        if resume and previous is None:
            previous = self.read_previous(self.output)
        self.previous = previous if previous is not None else LogContents()
        self.repaired = ""
        """What was cut from a torn last line before appending ("" when nothing was)."""
        self.output.parent.mkdir(parents=True, exist_ok=True)
        carried = previous is not None and self.path.is_file()
        if carried:
            self.repaired = self.cut_torn_tail(self.path)
        self._file: TextIO = open(self.path, "a" if carried else "w")  # noqa: SIM115 - closed in close()
        if previous is not None and not carried:  # rebuilding the log from a final JSON: copy its records in
            for device in self.previous.devices.values():
                self._write({"type": "device", **device})
            for record in self.previous.records.values():
                self._write({"type": "case", **record.to_dict()})
        self.devices: dict[str, dict[str, Any]] = dict(self.previous.devices)
        self.records: dict[tuple[str, str, str], CaseRecord] = dict(self.previous.records)

    @staticmethod
    def read_previous(output: Path) -> LogContents | None:
        """An earlier run's results, read only (the log, else the final JSON); None if neither exists."""
        output = Path(output)
        if log_path(output).is_file():
            return read_log(log_path(output))
        if output.is_file():
            return load_results(output)
        return None

    @staticmethod
    def cut_torn_tail(path: Path) -> str:
        """Make ``path`` end with a newline before anything is appended to it. A run killed
        mid-write leaves half a line: it is cut (records are whole lines, and the pair is
        measured again). A last line that is a whole record but lacks its newline gets one.
        Returns a note of what was done ("" when the file was fine)."""
        with open(path, "rb+") as f:
            data = f.read()
            if not data or data.endswith(b"\n"):
                return ""
            cut = data.rfind(b"\n") + 1
            fragment = data[cut:]
            try:
                whole = isinstance(json.loads(fragment), dict)
            except ValueError:
                whole = False
            if whole:
                f.write(b"\n")
                return f"{path}: its last line lacked a newline; added one"
            f.truncate(cut)
        return f"{path}: cut a torn last line ({len(fragment)} bytes; the run was killed mid-write)"

    def _write(self, item: dict[str, Any]) -> None:
        self._file.write(json.dumps(finite_json(item)) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def env(self, env: dict[str, Any]) -> None:
        self._write({"type": "env", **env})

    def device(self, info: dict[str, Any]) -> None:
        key = device_key(info)
        if self.devices.get(key) != info:
            self.devices[key] = info
            self._write({"type": "device", **info})

    def case(self, record: CaseRecord) -> None:
        self.records[record.key] = record
        self._write({"type": "case", **record.to_dict()})

    def forget(self, keys: set[tuple[str, str, str]]) -> None:
        """Drop earlier records from what this run reports (they stay in the log): records
        measured with other parameters than the pair now has, and measured again."""
        for key in keys:
            self.records.pop(key, None)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def write_results(output: Path, env: dict[str, Any], devices: list[dict[str, Any]],
                  records: list[CaseRecord]) -> None:
    """The final JSON (`write_document`: never half a file)."""
    write_document(output, {"schema": SCHEMA, "env": {**env, "gpus": devices}, "cases": [r.to_dict() for r in records]})
