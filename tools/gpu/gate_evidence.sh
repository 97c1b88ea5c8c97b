#!/usr/bin/env bash
# The regression gate's evidence on the GPU (docs/gate.md): A/A (two independent headline sweeps
# with the same code) and A/B (a third sweep with the TEST slowdown knob, +5% per chain).
# Usage on the GPU machine (repo root, wheels in .whl/): bash tools/gpu/gate_evidence.sh
# Writes under $OUT (default ./out/gate): a1/a2/b{.json,.md,.log}, aa/ab{.txt,.md,.xml},
# baseline.txt, summary.txt; prints the summary last. About 3 x 2 min (one impl only).
set -uo pipefail
OUT=${OUT:-$PWD/out}/gate; mkdir -p "$OUT"
source tools/gpu/wheels.sh
SPEC=sweeps/nemotron3-super-tp8.yaml
IMPL=triton.intermediate
BASELINE=baselines/nvidia-h100-80gb-hbm3/nemotron3-super-tp8.json

sweep() {  # sweep NAME: one headline sweep into $OUT/NAME.json
  local t0=$SECONDS
  python3 -m ssmbench sweep "$SPEC" --impl "$IMPL" -o "$OUT/$1.json" --markdown "$OUT/$1.md" > "$OUT/$1.log" 2>&1
  echo "sweep $1 rc=$? $((SECONDS - t0))s :: $(tail -n 1 "$OUT/$1.log")" | tee -a "$OUT/summary.txt"
}
compare() {  # compare NAME NEW OLD: verdicts into $OUT/NAME.{txt,md,xml}
  python3 -m ssmbench compare "$2" "$3" --markdown "$OUT/$1.md" --junit "$OUT/$1.xml" > "$OUT/$1.txt" 2>&1
  echo "compare $1 rc=$? :: $(tail -n 1 "$OUT/$1.txt")" | tee -a "$OUT/summary.txt"
}

: > "$OUT/summary.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee -a "$OUT/summary.txt"
sweep a1
sweep a2
SSMBENCH_TEST_SLOWDOWN=0.05 sweep b
compare aa "$OUT/a2.json" "$OUT/a1.json"
compare ab "$OUT/b.json" "$OUT/a1.json"
[ -f "$BASELINE" ] && compare baseline "$OUT/a1.json" "$BASELINE"

# Figures for docs/gate.md: verdicts by span class, the knob's real slowdown per case, and an
# exact +5% applied to a2's real samples against a1 (real run-to-run noise, exact shift: the
# knob's spin launch costs ~1.4 us by itself, so on short chains it slows by more than 5%).
python3 - "$OUT" <<'PY' | tee -a "$OUT/summary.txt"
import copy, sys
from collections import Counter
from ssmbench.output.compare import compare_results
from ssmbench.output.stats import median
from ssmbench.output.results import load_results

out = sys.argv[1]
a1, a2, b = (load_results(f"{out}/{n}.json") for n in ("a1", "a2", "b"))
def classes(comparison, label):
    for name, keep in (("> 20 us", lambda r: r.old_median_us > 20), ("<= 20 us", lambda r: r.old_median_us <= 20)):
        rows = [r for r in comparison.rows if r.old_median_us is not None and keep(r)]
        counts = Counter(r.verdict for r in rows)
        changes = sorted(r.change_pct for r in rows if r.change_pct is not None)
        span = f"change {changes[0]:+.2f}% .. {changes[-1]:+.2f}%" if changes else ""
        print(f"{label} {name}: {len(rows)} pairs, {dict(counts)}, SLOWER {counts['SLOWER']}/{len(rows)}; {span}")
classes(compare_results(a2, a1), "A/A")
classes(compare_results(b, a1), "A/B knob")
shifted = copy.deepcopy(a2)
for r in shifted.records.values():
    if r.status == "ok":
        r.samples_us = [x * 1.05 for x in r.samples_us]
        r.median_us = median(r.samples_us)
classes(compare_results(shifted, a1), "A/B exact +5% on a2")
PY
echo "outputs: $OUT"
cat "$OUT/summary.txt" | tail -n 12
