#!/usr/bin/env bash
# The H200 knob tables (issue 18): `ssmbench tune` per Triton impl over the shipped sweeps' shapes,
# at the batch buckets below (the tables' fallback covers the batches between them). Resumable:
# each call runs for at most TUNE_BUDGET, the log lives in results/tune/ (ignored by git, kept on a
# warm machine between calls; on a fresh machine carry it: run(carry=["results/tune"])), and a
# later call continues from it (no finished measurement is taken again). Run it until every
# group of every impl says converged (or max passes); then install each table (each entry replaces
# the one of its key and batch, the rest stay):
#   python3 tools/gpu/install_tables.py $OUT/tune/<family>/nvidia-h200.json
#
#   bash tools/gpu/tune_h200.sh                        # every impl, in turn, within one call's budget
#   IMPLS=triton.checkpoint TUNE_BUDGET=8m bash tools/gpu/tune_h200.sh
set -u
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT/tune" results/tune
source tools/gpu/wheels.sh
IMPLS=${IMPLS:-triton.intermediate triton.checkpoint triton.gdn}
TUNE_BUDGET=${TUNE_BUDGET:-8m}          # this call's budget, shared by the impls still unfinished
BATCHES=${BATCHES:-1,8,64,256,1024}
declare -A SPEC=([triton.intermediate]=sweeps/nemotron3-super-tp8.yaml
                 [triton.checkpoint]=sweeps/nemotron3-super-tp8.yaml
                 [triton.gdn]=sweeps/qwen35-gdn.yaml)
declare -A FAMILY=([triton.intermediate]=mamba2_states [triton.checkpoint]=mamba2_replay [triton.gdn]=gdn)
t0=$SECONDS
for impl in $IMPLS; do
  table="results/tune/$impl.knobs.json" resume=()
  [ -f "results/tune/$impl.knobs.jsonl" ] && resume=(--resume)
  # SIGINT a little before the device's 10-minute limit: the log keeps every finished round.
  timeout -s INT "${CALL_TIMEOUT:-560}" python3 -m ssmbench tune "${SPEC[$impl]}" --impl "$impl" \
    --batch "$BATCHES" --budget "$TUNE_BUDGET" -o "$table" "${resume[@]}" > "$OUT/tune/$impl.log" 2>&1
  rc=$?
  mkdir -p "$OUT/tune/${FAMILY[$impl]}"
  cp results/tune/"$impl".knobs.jsonl "$OUT/tune/" 2>/dev/null
  [ -f "$table" ] && cp "$table" "$OUT/tune/${FAMILY[$impl]}/nvidia-h200.json"
  echo "tune $impl rc=$rc $((SECONDS - t0))s :: $(grep -c '"type": "result"' "results/tune/$impl.knobs.jsonl" 2>/dev/null) group results logged; $(tail -n 1 "$OUT/tune/$impl.log")" | tee -a "$OUT/tune/summary.txt"
  [ $rc -ne 0 ] && break   # out of this call's time (or a failure: see the log); the next call resumes
done
python3 - "$OUT/tune" <<'PY' | tee -a "$OUT/tune/summary.txt"
import json, pathlib, sys
for path in sorted(pathlib.Path(sys.argv[1]).glob("*/nvidia-h200.json")):
    t = json.loads(path.read_text())
    changed = [e for e in t["entries"] if "default" in e["note"] and "%" in e["note"]]
    stops = {}
    for e in t["entries"]:
        key = e["note"].split(";")[0].replace("ssmbench tune: ", "")
        stops[key] = stops.get(key, 0) + 1
    print(f"{path.parent.name}: {len(t['entries'])} entries, {len(changed)} differ from the default, stopped: {stops}")
PY
