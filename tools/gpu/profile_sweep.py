"""Where a sweep's wall time goes outside its pairs (issue 18): the sweep worker's own `Session`, in
this process, over the plan `ssmbench sweep` would run, under cProfile. Run it after a sweep of
the same spec and filters, so the Triton cache is warm (as in the warm headline sweep). Prints the
wall time, the records' own seconds (build, verify, capture, timing), the time in
`make_workload` and in the per-pair `_cleanup`, and cProfile's top functions.

    python3 tools/gpu/profile_sweep.py SPEC [--impl NAME ...] [--filter key=v1,v2 ...]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections import defaultdict
from typing import Any

import ssmbench.families as families
from ssmbench.measure.runner import Session, WorkerConfig
from ssmbench.runs.sweep.options import parse_filters
from ssmbench.runs.sweep.plan import make_plan
from ssmbench.spec.load import load_sweep_file


def timed(owner: Any, name: str, spent: dict[str, float]) -> None:
    """Replace ``owner.name`` by a wrapper adding its wall time to ``spent[name]``."""
    inner = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - start

    setattr(owner, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("--impl", action="append", default=[])
    parser.add_argument("--filter", action="append", default=[])
    args = parser.parse_args()
    sweep_file = load_sweep_file(args.spec)
    plan = make_plan(sweep_file, args.impl, parse_filters(args.filter), None, {})
    start = time.perf_counter()
    session = Session(WorkerConfig(device="cuda", gpu_index=0))
    setup = time.perf_counter() - start
    spent: dict[str, float] = defaultdict(float)
    timed(families, "make_workload", spent)  # `Session.run` imports it at call time
    timed(session, "_cleanup", spent)
    records: list[dict] = []

    def emit(message: tuple) -> None:
        if message[0] == "result":
            records.append(message[1])

    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    for task in plan.tasks:
        session.run(task, emit)
    profile.disable()
    wall = time.perf_counter() - start
    own = sum(r.get("seconds") or 0.0 for r in records)
    print(f"session setup {setup:.1f} s; {len(plan.tasks)} cases, {len(records)} records in {wall:.1f} s: "
          f"records' own seconds {own:.1f}, make_workload {spent['make_workload']:.1f}, "
          f"_cleanup {spent['_cleanup']:.1f}, rest {wall - own - spent['make_workload'] - spent['_cleanup']:.1f}")
    stats = pstats.Stats(profile)
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
