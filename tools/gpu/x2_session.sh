#!/usr/bin/env bash
# One session on an H200 x2 machine for issues 17, 18, 22 and 23 (2026-11-29), resumable across
# device calls (each call ends before the 10-minute limit; results in $RESULTS_DIR, default
# results/x2/; finished steps are skipped, a cut sweep continues with --resume).
#
#   bash tools/gpu/x2_session.sh      (carry .whl and .peer)
#
# GPU 0: the headline sweep (Triton impls), cold: the sweep's own compile pre-pass builds every
#        kernel (issue 18's parallel compilation) -> "one", issue 17's numbers and the new baseline.
# GPU 1, at the same time: the SR unit tests and the smoke check on the GPU (issue 17), the fp16-SR
#        cells side by side with flashinfer.ssu ("peers"), `ssmbench accuracy` (issue 22), a short
#        `ssmbench tune` (issue 18).
# Then both GPUs: `--gpus 0,1` ("all"), and two shards at once merged ("merged") (issue 23); compares.
set -u
R=${RESULTS_DIR:-results/x2}
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT" "$R"
CALL_LIMIT=${CALL_LIMIT:-540}  # the device stops a command at 600 s; leave room to pack
source tools/gpu/wheels.sh
[ -d .peer ] && source tools/gpu/flashinfer_setup.sh /tmp/site >/dev/null
HEADLINE=sweeps/nemotron3-super-tp8.yaml
source tools/gpu/lib.sh
log "== $(date -u +%FT%TZ) $(hostname) $(git rev-parse --short HEAD 2>/dev/null) $(nproc) CPUs"
nvidia-smi --query-gpu=index,name,uuid,clocks.max.sm,clocks.max.mem --format=csv,noheader | tee -a "$R/summary.txt"

gpu1_chain() {
  STEP_TIMEOUT=240 once pytest-sr env CUDA_VISIBLE_DEVICES=1 python3 -m pytest -q -p no:cacheprovider tests/test_triton_storage.py \
    tests/test_sr_contract.py &
  STEP_TIMEOUT=240 once check-smoke env CUDA_VISIBLE_DEVICES=1 python3 -m ssmbench check sweeps/smoke.yaml --device cuda &
  wait
  sweep peers "$HEADLINE" --impl triton.intermediate --impl flashinfer.ssu --filter format=fp16sr --gpus 1
  STEP_TIMEOUT=240 once accuracy env CUDA_VISIBLE_DEVICES=1 python3 -m ssmbench accuracy "$HEADLINE" --every-format --steps 1024 \
    --batch 8 --impl triton.intermediate --impl triton.checkpoint --device cuda -o "$R/accuracy.json"
  [ "$(left)" -gt 150 ] && STEP_TIMEOUT=150 once tune env CUDA_VISIBLE_DEVICES=1 python3 -m ssmbench tune "$HEADLINE" \
    --impl triton.intermediate --batch 64,1024 --budget 2m -o "$R/tune-intermediate.json"
}

gpu1_chain &
sweep one "$HEADLINE" --impl triton.intermediate --impl triton.checkpoint --gpus 0
wait
sweep all "$HEADLINE" --impl triton.intermediate --impl triton.checkpoint --gpus 0,1
if complete "$R/all.json"; then
  sweep shard0 "$HEADLINE" --impl triton.intermediate --impl triton.checkpoint --shard 0/2 --gpus 0 &
  sweep shard1 "$HEADLINE" --impl triton.intermediate --impl triton.checkpoint --shard 1/2 --gpus 1
  wait
fi
if complete "$R/shard0.json" && complete "$R/shard1.json"; then
  python3 -m ssmbench merge "$R/shard0.json" "$R/shard1.json" -o "$R/merged.json" > "$R/merge.log" 2>&1
  log "merge rc=$? :: $(tail -n 1 "$R/merge.log")"
  gate() {  # gate NAME NEW OLD
    python3 -m ssmbench compare "$2" "$3" --fail-on-missing --markdown "$R/compare-$1.md" > "$R/compare-$1.log" 2>&1
    log "compare $1 rc=$? :: $(grep -E '^diagnosis|by GPU' "$R/compare-$1.log" | tr '\n' ' ') :: $(tail -n 1 "$R/compare-$1.log")"
  }
  gate all-vs-merged "$R/all.json" "$R/merged.json"
  gate all-vs-one "$R/all.json" "$R/one.json"
  gate one-vs-stored "$R/one.json" baselines/nvidia-h200/nemotron3-super-tp8.json
  log "DONE"
else
  log "CONTINUE: call again"
fi
pack
cat "$R/summary.txt"
