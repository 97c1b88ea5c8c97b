"""Install knob tables written by `ssmbench tune` into the families' ``tuned/`` folders: each
tuned entry replaces the entry of the same (key, batch) already there (its note kept after "Before:";
an entry whose knobs the tune kept stays as it is),
every other entry stays (a tune of some formats or windows keeps the table's other entries,
hand-measured ones included), and so do the installed file's other fields.

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
    """Merge one tune's table into the installed one: the installed file's other fields stay (its
    history), and an entry a tune replaces keeps the old entry's note after "Before:" (how it was
    chosen and measured then)."""
    tuned = json.loads(tuned_path.read_text())
    tunable = tunable_of(registry()[tuned["impl"]])
    target = tunable.table_path(tuned["gpu"])
    installed = json.loads(target.read_text()) if target.exists() else {}
    old = {entry_key(e): e for e in installed.get("entries", [])}
    merged = dict(old)
    for entry in tuned["entries"]:
        installed_entry = old.get(entry_key(entry), {})
        if installed_entry and installed_entry.get("knobs") == entry.get("knobs"):
            continue  # the tune kept this entry's knobs: it stays as it is, note included
        note, before = entry.get("note", ""), installed_entry.get("note")
        if before:  # (the same tune installed again: its note is already the start of the old one)
            entry = {**entry, "note": before if before.startswith(note) else f"{note} Before: {before}"}
        merged[entry_key(entry)] = entry
    write_document(target, {**installed, **tuned, "entries": list(merged.values())})
    return target


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(f"{arg} -> {install(Path(arg))}")
