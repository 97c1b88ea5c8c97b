#!/usr/bin/env bash
# One H200 x2 session for the open issues 17-23 (2026-11-29, session 6), in phases: one device
# call per phase, each call ends before the 10-minute limit, every step is skipped once done
# (tools/gpu/lib.sh), so a phase cut short is finished by the next call. Two lanes run at once,
# one per GPU; results in $RESULTS_DIR (default results/s6/), packed into $OUT after every step.
# On a fresh machine carry results/s6 back (and the FlashInfer JIT cache parts copied into .peer/).
#
#   PHASE=1 bash tools/gpu/session6.sh    (carry .whl .peer [results/s6])
#
# Phase 1  GPU 0: SR unit tests, the smoke check on the GPU (17); `ssmbench accuracy` 1024 steps
#                 (22); the bandwidth-first replay kernel's tests and checks (19).
#          GPU 1: FlashInfer's JIT configurations of the headline built in parallel and checked
#                 (its cache archived into $OUT for .peer/); the real FLA kernel against the
#                 reference (20).
# Phase 2  GPU 0: the headline sweep with all four impls ("one": 17's numbers, the FlashInfer
#                 peers side by side, the new baseline, 23's one-GPU run).
#          GPU 1: the replay default vs bandwidth-first sweep (19); the GDN peers sweep (20).
# Phase 3  both:  what phase 2 left of "one"; two shards at once ("merged") and `--gpus 0,1`
#                 ("all") with the Triton impls; the compares (23).
# Phase 4  GPU 0: the Triton impls alone on one GPU ("one-triton": 23's wall time against "all");
#          GPU 1: a 4-minute `ssmbench tune` of triton.intermediate at b64 / b1024 (18).
# Session 6 ran phases 1 and 2 as this script, 3 and 4 as the same steps typed into the device
# call (CALL_LIMIT 545 and 300); docs/gpu-runs.md has what each gave.
set -u
PHASE=${PHASE:?PHASE=1, 2, 3 or 4}
R=${RESULTS_DIR:-$PWD/results/s6}
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT" "$R"
CALL_LIMIT=${CALL_LIMIT:-530}  # the device stops a command at 600 s; leave room to pack
source tools/gpu/wheels.sh
source tools/gpu/flashinfer_setup.sh /tmp/site >/dev/null
export PYTHONPATH="$PYTHONPATH:$PWD/tools/gpu"  # checkpoint_bw_plugin
HEADLINE=sweeps/nemotron3-super-tp8.yaml
TRITON=(--impl triton.intermediate --impl triton.checkpoint)
BW=(--plugin checkpoint_bw_plugin)
source tools/gpu/lib.sh
log "== phase $PHASE $(date -u +%FT%TZ) $(hostname) $(git rev-parse --short HEAD 2>/dev/null) $(nproc) CPUs"
nvidia-smi --query-gpu=index,name,uuid,clocks.max.sm,clocks.max.mem --format=csv,noheader | tee -a "$R/summary.txt"

lane0_phase1() {
  STEP_TIMEOUT=200 once pytest-sr env CUDA_VISIBLE_DEVICES=0 python3 -m pytest -q -p no:cacheprovider tests/test_triton_storage.py \
    tests/test_sr_contract.py
  STEP_TIMEOUT=150 once check-smoke env CUDA_VISIBLE_DEVICES=0 python3 -m ssmbench check sweeps/smoke.yaml --device cuda
  STEP_TIMEOUT=200 once accuracy env CUDA_VISIBLE_DEVICES=0 python3 -m ssmbench accuracy "$HEADLINE" --every-format --steps 1024 \
    --batch 8 "${TRITON[@]}" --device cuda -o "$R/accuracy.json"
  STEP_TIMEOUT=200 once pytest-bw env CUDA_VISIBLE_DEVICES=0 python3 -m pytest -q -p no:cacheprovider tests/test_triton_checkpoint_bw.py
  STEP_TIMEOUT=150 once check-bw-smoke env CUDA_VISIBLE_DEVICES=0 python3 -m ssmbench check sweeps/smoke.yaml --device cuda \
    --impl triton.checkpoint.bw "${BW[@]}"
  STEP_TIMEOUT=150 once check-bw-headline env CUDA_VISIBLE_DEVICES=0 python3 -m ssmbench check "$HEADLINE" --device cuda \
    --impl triton.checkpoint.bw --case '*-b64-*' "${BW[@]}"
}

lane1_phase1() {
  # One `ssmbench check` per FlashInfer configuration (each builds it, ~35 s ssu, ~5 min
  # checkpointing), the cache archived into $OUT as jit-cache.tar.xz.part* at its end.
  STEP_TIMEOUT=420 once fi-prewarm env CUDA_VISIBLE_DEVICES=1 CHECK_TIMEOUT=400 OUT="$OUT" \
    bash tools/gpu/flashinfer_prewarm.sh
  STEP_TIMEOUT=150 once pytest-fla env CUDA_VISIBLE_DEVICES=1 python3 -m pytest -q -p no:cacheprovider tests/test_fla_mapping.py -k real_fla
}

lane0_phase2() {
  sweep one "$HEADLINE" --gpus 0
}

lane1_phase2() {
  sweep bw "$HEADLINE" --impl triton.checkpoint --impl triton.checkpoint.bw --filter batch=8,64,256,1024 \
    --filter format=fp32,bf16,fp16sr "${BW[@]}" --gpus 1
  sweep gdn-peers sweeps/qwen35-gdn.yaml --filter sweep=qwen35-gdn-peers --impl triton.gdn --impl fla.gdn --gpus 1
}

phase3() {  # what phase 2 left of "one" (--resume), then the shards at once, merged, then "all"
  ( sweep one "$HEADLINE" --gpus 0; sweep shard0 "$HEADLINE" "${TRITON[@]}" --shard 0/2 --gpus 0 ) &
  sweep shard1 "$HEADLINE" "${TRITON[@]}" --shard 1/2 --gpus 1
  wait
  if complete "$R/shard0.json" && complete "$R/shard1.json" && [ ! -f "$R/merged.json" ]; then
    python3 -m ssmbench merge "$R/shard0.json" "$R/shard1.json" -o "$R/merged.json" > "$R/merge.log" 2>&1
    log "merge rc=$? :: $(tail -n 1 "$R/merge.log")"
  fi
  [ "$(left)" -gt 140 ] && sweep all "$HEADLINE" "${TRITON[@]}" --gpus 0,1
  gate one-vs-stored "$R/one.json" baselines/nvidia-h200/nemotron3-super-tp8.json
  gate merged-vs-one "$R/merged.json" "$R/one.json"
  gate all-vs-merged "$R/all.json" "$R/merged.json" --fail-on-missing
  gate all-vs-one "$R/all.json" "$R/one.json"
}

phase4() {  # the one-GPU run of the Triton impls (issue 23's wall time), a short tune beside it
  STEP_TIMEOUT=285 once tune-intermediate env CUDA_VISIBLE_DEVICES=1 python3 -m ssmbench tune "$HEADLINE" \
    --impl triton.intermediate --batch 64,1024 --budget 4m -o "$R/tune-intermediate.json" &
  sweep one-triton "$HEADLINE" "${TRITON[@]}" --gpus 0
  wait
  gate all-vs-one-triton "$R/all.json" "$R/one-triton.json" --fail-on-missing
}

case $PHASE in
  1) lane0_phase1 & lane1_phase1; wait ;;
  2) lane0_phase1 & lane1_phase1; wait  # whatever phase 1 left
     lane0_phase2 & lane1_phase2; wait ;;
  3) phase3 ;;
  4) phase4 ;;
esac
ls "$OUT"/jit-cache.tar.xz.part* >/dev/null 2>&1 && log "FlashInfer JIT cache: $(du -ch "$OUT"/jit-cache.tar.xz.part* | tail -n 1)"
log "phase $PHASE ended at $SECONDS s"
pack
cat "$R/summary.txt"
