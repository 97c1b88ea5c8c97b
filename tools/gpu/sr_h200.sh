#!/usr/bin/env bash
# Issue 17 on the H200: the revised SR keying's GPU checks and its measurement, resumable (results
# in $RESULTS_DIR, default results/sr/; finished steps are skipped, a cut sweep continues --resume).
#
#   bash tools/gpu/sr_h200.sh        (carry .whl and .peer: tools/gpu/flashinfer_pack.sh builds .peer)
#
# 1. at once, on the 16 CPU cores: the Triton headline kernels compiled (one `check` per batch),
#    the smoke sweep checked on the GPU (every kernel's SR paths against the fp64 references), the
#    SR unit tests on the GPU (tests/test_triton_storage.py, tests/test_sr_contract.py: kernel
#    codes bit-identical to the reference, exact bias over all 2**16 fields), and FlashInfer's
#    fp16-SR selective_state_update JIT-built;
# 2. the headline sweep, Triton impls (the baseline's impl set), compared with the stored H200
#    baseline (measured with the first SR keying);
# 3. the fp16-SR cells side by side: triton.intermediate and flashinfer.ssu in one sweep.
set -u
R=${RESULTS_DIR:-results/sr}
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT" "$R"
source tools/gpu/wheels.sh
[ -d .peer ] && source tools/gpu/flashinfer_setup.sh /tmp/site >/dev/null
HEADLINE=sweeps/nemotron3-super-tp8.yaml
: >> "$R/summary.txt"
log() { echo "$*" | tee -a "$R/summary.txt"; }
log "== $(date -u +%FT%TZ) $(hostname) $(git rev-parse --short HEAD 2>/dev/null)"
log "$(nvidia-smi --query-gpu=name,uuid,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader)"

complete() { [ -f "$1" ] && python3 -c "import json,sys; sys.exit(0 if json.load(open('$1'))['env'].get('complete') else 1)"; }
sweep() {  # sweep NAME SPEC [args...]
  local name=$1 spec=$2; shift 2
  local t0=$SECONDS resume=()
  if complete "$R/$name.json"; then log "sweep $name: already complete"; return; fi
  [ -f "$R/$name.jsonl" ] && resume=(--resume)
  timeout -s INT "${SWEEP_TIMEOUT:-540}" python3 -m ssmbench sweep "$spec" "$@" -o "$R/$name.json" "${resume[@]}" \
    --markdown "$R/$name.md" > "$R/$name.log" 2>&1
  log "sweep $name rc=$? wall $((SECONDS - t0))s :: $(tail -n 1 "$R/$name.log")"
}

if [ ! -f "$R/checks.done" ]; then
  t0=$SECONDS
  for b in 1 2 4 8 16 32 64 128 256 512 1024; do
    python3 -m ssmbench check "$HEADLINE" --device cuda --impl triton.intermediate --impl triton.checkpoint \
      --case "*-b$b-*" > "$R/prewarm-b$b.txt" 2>&1 &
  done
  python3 -m ssmbench check sweeps/smoke.yaml --device cuda > "$R/check-smoke-gpu.txt" 2>&1 &
  python3 -m pytest -q -p no:cacheprovider tests/test_triton_storage.py tests/test_sr_contract.py \
    > "$R/pytest-sr-gpu.txt" 2>&1 &
  [ -d .peer ] && python3 -m ssmbench check "$HEADLINE" --device cuda --impl flashinfer.ssu --case "*-b8-*-fp16sr-*" \
      > "$R/prewarm-flashinfer.txt" 2>&1 &
  wait
  log "checks $((SECONDS - t0))s: $(grep -h ' passed, ' "$R"/prewarm-*.txt | tr '\n' ';')"
  log "smoke on GPU: $(tail -n 1 "$R/check-smoke-gpu.txt")"
  log "SR tests on GPU: $(tail -n 1 "$R/pytest-sr-gpu.txt")"
  touch "$R/checks.done"
fi

sweep headline "$HEADLINE" --impl triton.intermediate --impl triton.checkpoint
python3 -m ssmbench compare "$R/headline.json" baselines/nvidia-h200/nemotron3-super-tp8.json \
  --markdown "$R/compare-headline.md" > "$R/compare-headline.log" 2>&1
log "compare headline vs stored baseline rc=$? :: $(tail -n 1 "$R/compare-headline.log")"
sweep peers "$HEADLINE" --impl triton.intermediate --impl flashinfer.ssu --filter format=fp16sr

tar -czf "$OUT/sr.tar.gz" -C "$(dirname "$R")" "$(basename "$R")"
cp "$R/summary.txt" "$OUT/summary.txt"
cat "$R/summary.txt"
for f in headline peers; do [ -f "$R/$f.log" ] && tail -n 40 "$R/$f.log"; done
