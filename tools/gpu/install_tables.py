"""Install knob tables written by `ssmbench tune` into the families' ``tuned/`` folders: each
tuned entry replaces the entry of the same (key, batch) already there, every other entry stays
(a tune of some formats or windows keeps the table's other entries, hand-measured ones included).

    python3 tools/gpu/install_tables.py results/tune/triton.checkpoint.knobs.json [...]

The file is the impl's `Tunable.table_path` for the table's ``gpu``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ssmbench.impls.registry import registry
from ssmbench.impls.tuned import KEY_FIELDS, tunable_of
from ssmbench.output.results import write_document


def entry_key(entry: dict) -> tuple:
    return (*(entry[f] for f in KEY_FIELDS), entry["batch"])


def install(tuned_path: Path) -> Path:
    tuned = json.loads(tuned_path.read_text())
    tunable = tunable_of(registry()[tuned["impl"]])
    target = tunable.table_path(tuned["gpu"])
    merged = {entry_key(e): e for e in (json.loads(target.read_text())["entries"] if target.exists() else [])}
    merged.update({entry_key(e): e for e in tuned["entries"]})
    write_document(target, {**tuned, "entries": list(merged.values())})
    return target


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(f"{arg} -> {install(Path(arg))}")
