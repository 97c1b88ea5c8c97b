"""Write `Workload.work_digest` into the records of results files measured before records carried
it, **only for files measured on the current workload draws** (the H200 baselines stored in
session 9, after the Mamba-2 start states moved to the device). The digest depends only on the
small fields drawn on the CPU generator, so it is computed here on the CPU, identical to what the
GPU worker records. A file measured on older draws must be re-measured instead: a digest written
into it would hide that its workloads differ.

    python3 tools/backfill_workload_digest.py baselines/nvidia-h200/nemotron3-super-tp8.json ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ssmbench.families import make_workload
from ssmbench.output.results import write_document
from ssmbench.spec.expand import expand
from ssmbench.spec.load import load_sweep_file


def backfill(path: Path) -> int:
    """Digests into every record of ``path`` that has none; returns how many were written."""
    document = json.loads(path.read_text())
    spec = load_sweep_file(document["env"]["spec"])
    cases = {(s.name, c.id): c for s in spec.sweeps for c in expand(s).cases}
    digests: dict[tuple[str, str], str] = {}
    written = 0
    for record in document["cases"]:
        key = (record["sweep"], record["id"])
        if record.get("workload") or record["status"] not in ("ok", "fail", "error"):
            continue
        if key not in digests:
            digests[key] = make_workload(cases[key], "cpu").work_digest()
        record["workload"] = digests[key]
        written += 1
    write_document(path, document)
    return written


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(f"{name}: {backfill(Path(name))} record(s)")
