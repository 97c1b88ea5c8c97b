"""`ssmbench export RESULTS --csv`: a results file as one flat table, one row per (case, impl),
for people who analyse in pandas or a spreadsheet.

Every parameter and figure of a record is a column: nested objects are flattened with dotted
names (``params.dims.nheads``, ``verify.max_error``, ``kernels_us.conv1d_update_kernel``), lists
are JSON text (``params.accept_law.values``, ``verify.comparisons``), and each row also names its
GPU and that GPU's calibrated copy bandwidth (``gpu_name``, ``copy_tbps``). Numbers are written
as Python's shortest round-tripping text, so ``float(cell)`` gives back the stored value exactly.
``samples_us`` (thousands per record) only with ``samples=True``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from typing import Any

from ssmbench.output.results import CaseRecord, LogContents

LEADING = ("sweep", "id", "impl", "status", "gpu_name", "copy_tbps")
"""The first columns, in this order; the record's own fields follow as they are stored."""


def flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become JSON text, None an empty cell."""
    if isinstance(value, dict):
        for key, item in value.items():
            flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, (list, tuple)):
        out[prefix] = json.dumps(value, separators=(",", ":"))
    else:
        out[prefix] = value


def record_row(record: CaseRecord, devices: dict[str, dict[str, Any]], samples: bool) -> dict[str, Any]:
    """One record's cells, keyed by column name; ``devices`` as `LogContents.devices` (by uuid)."""
    data = (record if samples else dataclasses.replace(record, samples_us=[])).to_dict()  # no copy of unwanted samples
    if not samples:
        del data["samples_us"]
    device = devices.get(record.gpu or "") or {}
    row: dict[str, Any] = {"gpu_name": device.get("name"),
                           "copy_tbps": (device.get("bandwidth") or {}).get("measured_tbps")}
    flatten(data, "", row)
    return row


def csv_text(results: LogContents, samples: bool = False) -> str:
    """The CSV: a header of every column any record has, then one row per record in file order."""
    rows = [record_row(r, results.devices, samples) for r in results.records.values()]
    columns = list(LEADING)
    for row in rows:
        columns += [c for c in row if c not in columns]
    # an object absent from some records (``verify`` of a skip: null) has its dotted columns already
    columns = [c for c in columns if not (all(row.get(c) is None for row in rows)
                                          and any(o.startswith(c + ".") for o in columns))]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: _cell(row.get(c)) for c in columns})
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    """None -> empty; a bool as ``true``/``false`` (never 1/0: a flag is not a number); a float as
    its repr (exact round trip)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return value
