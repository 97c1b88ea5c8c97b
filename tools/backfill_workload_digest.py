"""Write `Workload.work_digest` into the records of results files measured before records carried
it, **only for files measured on the current workload draws** (the H200 baselines stored in
session 9, after the Mamba-2 start states moved to the device). The digest depends only on the
small fields drawn on the CPU generator, so it is computed here on the CPU, identical to what the
GPU worker records. A file measured on older draws must be re-measured instead: a digest written
into it would hide that its workloads differ. ``--stale`` marks such a file instead (``workload:
"stale"``): `compare` then answers REDRAWN ("re-store the baseline") for its pairs rather than
comparing timings of other work.

    python3 tools/backfill_workload_digest.py baselines/nvidia-h200/nemotron3-super-tp8.json ...
    python3 tools/backfill_workload_digest.py --stale baselines/nvidia-h200/smoke.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ssmbench.families import make_workload
from ssmbench.output.results import write_document
from ssmbench.spec.expand import expand
from ssmbench.spec.load import load_sweep_file

STALE = "stale"
"""The digest of a record measured on draws that no longer exist (never equal to a real one)."""


def backfill(path: Path, stale: bool = False) -> int:
    """Digests (or `STALE`) into every record of ``path`` that has none; returns how many were written."""
    document = json.loads(path.read_text())
    spec = load_sweep_file(document["env"]["spec"])
    cases = {(s.name, c.id): c for s in spec.sweeps for c in expand(s).cases}
    digests: dict[tuple[str, str], str] = {}
    written = 0
    for record in document["cases"]:
        key = (record["sweep"], record["id"])
        if record.get("workload") or record["status"] not in ("ok", "fail", "error"):
            continue
        if stale:
            digests[key] = STALE
        elif key not in digests:
            digests[key] = make_workload(cases[key], "cpu").work_digest()
        record["workload"] = digests[key]
        written += 1
    write_document(path, document)
    return written


if __name__ == "__main__":
    mark_stale = "--stale" in sys.argv[1:]
    for name in (a for a in sys.argv[1:] if a != "--stale"):
        print(f"{name}: {backfill(Path(name), mark_stale)} record(s){' marked stale' if mark_stale else ''}")
