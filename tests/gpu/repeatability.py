"""Median-to-median spread of the same cases over several sweep result files (issue 4's 1% rule).

    python3 tests/gpu/repeatability.py run1.json run2.json ... > repeatability.md
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    runs = [json.load(open(path)) for path in sys.argv[1:]]
    medians: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        for case in run["cases"]:
            if case["status"] == "ok":
                medians.setdefault((case["id"], case["impl"]), []).append(case["median_us"])
    print(f"{len(runs)} runs; spread = (max - min) / min of the per-run medians")
    print("| case | impl | min us | max us | spread | rule |")
    print("|---|---|---:|---:|---:|---|")
    worst = {"<20us": 0.0, ">=20us": 0.0}
    for (cid, impl), ms in sorted(medians.items()):
        lo, hi = min(ms), max(ms)
        spread = (hi - lo) / lo
        rule = ">=20us" if lo > 20 else "<20us"
        worst[rule] = max(worst[rule], spread)
        print(f"| {cid} | {impl} | {lo:.2f} | {hi:.2f} | {100 * spread:.2f}% | {rule} |")
    print(f"\nworst spread: spans over 20 us {100 * worst['>=20us']:.2f}% (target < 1%), "
          f"below 20 us {100 * worst['<20us']:.2f}% (target < 2%)")


if __name__ == "__main__":
    main()
