#!/usr/bin/env bash
# The H200 baselines and the gate's evidence on the H200 (issue 15), in phases that each fit one
# 10-minute device call. Results live in results/h200/ (git-ignored), so a phase cut off by its
# time limit continues with --resume on the next call to the same warm machine; everything is
# also packed into $OUT/h200.tar.gz after every step (the device tool brings back at most 8 files).
#
#   PHASE=a bash tools/gpu/h200_gate.sh   # prewarm (parallel compiles), headline a1 and a2 (A/A, one machine)
#   PHASE=b bash tools/gpu/h200_gate.sh   # headline b with the +5% knob, smoke and qwen35-gdn sweeps
#   PHASE=c bash tools/gpu/h200_gate.sh   # on a freshly started machine: prewarm, headline c1 (A/A across machines)
#
# The headline sweep runs with every impl of the spec (the nightly job's impl set): without
# FlashInfer installed its two peers are recorded as skipped, so the gate covers the two Triton impls.
set -u
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT" results/h200
R=results/h200
source tools/gpu/wheels.sh
PHASE=${PHASE:?PHASE=a, b or c}
HEADLINE=sweeps/nemotron3-super-tp8.yaml
SMOKE_IMPLS=(--impl triton.conv1d --impl triton.intermediate --impl triton.checkpoint --impl triton.gdn)
source tools/gpu/lib.sh

log "== phase $PHASE $(date -u +%FT%TZ) $(hostname)"
log "$(nvidia-smi --query-gpu=name,uuid,driver_version,clocks.sm,clocks.max.sm,clocks.max.mem --format=csv,noheader)"

prewarm() {  # compile every kernel the sweeps will launch, on all CPU cores (one check per batch)
  local t0=$SECONDS
  for b in 1 2 4 8 16 32 64 128 256 512 1024; do  # (the log name is fixed before '&': a background job's i++ is lost)
    python3 -m ssmbench check "$HEADLINE" --device cuda --impl triton.intermediate --impl triton.checkpoint \
      --case "*-b$b-*" > "$R/prewarm-headline-b$b.txt" 2>&1 &
  done
  if [ "${1:-}" = all ]; then
    python3 -m ssmbench check sweeps/smoke.yaml --device cuda "${SMOKE_IMPLS[@]}" > "$R/prewarm-smoke.txt" 2>&1 &
    python3 -m ssmbench check sweeps/qwen35-gdn.yaml --device cuda --impl triton.gdn > "$R/prewarm-qwen.txt" 2>&1 &
  fi
  wait
  log "prewarm $((SECONDS - t0))s: $(grep -h ' passed, ' "$R"/prewarm-*.txt | tr '\n' ';')"
}

case $PHASE in
  a) prewarm all
     sweep a1 "$HEADLINE"
     sweep a2 "$HEADLINE" ;;
  b) SSMBENCH_TEST_SLOWDOWN=0.05 sweep b "$HEADLINE"
     sweep smoke sweeps/smoke.yaml "${SMOKE_IMPLS[@]}"
     sweep qwen sweeps/qwen35-gdn.yaml ;;
  c) prewarm
     sweep c1 "$HEADLINE" ;;
esac
for f in "$R"/a1.json "$R"/a2.json "$R"/b.json "$R"/c1.json; do
  [ -f "$f" ] && log "$(basename "$f"): $(python3 -c "
import json; d = json.load(open('$f')); g = d['env']['gpus']
print(', '.join(f\"{x['name']} {x.get('uuid', '')[:12]} copy {x['bandwidth']['measured_tbps']:.3f} TB/s max SM {x.get('max_sm_mhz')} MHz\" for x in g))")"
done
pack
cat "$R/summary.txt"
