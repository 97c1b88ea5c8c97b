#!/usr/bin/env bash
# One H200 x2 session for the open issues 18-20 (2026-11-30, session 8), in phases: one device
# call per phase, each ends before the 10-minute limit; every step is skipped once done and a tune
# resumes from its journal (tools/gpu/lib.sh), so a phase cut short is finished by the next call.
# Two lanes at once, one per GPU; results in $RESULTS_DIR (default results/s8/), packed into $OUT
# after every step. On a fresh machine carry results/s8 back (and .whl .peer).
#
#   PHASE=1 bash tools/gpu/session8.sh    (carry .whl .peer [results/s8])
#
# Phase 1  GPU 0: the Triton headline on a bare machine (no Triton cache: "cold"), then again
#                 with the cache it left ("warm"), one GPU, as `make sweep` runs the Triton impls
#                 (18's wall-time numbers; the warm run against the cold one is an A/A of the
#                 precise stop; both against the stored baseline show the head-blocked precompute, 19).
#          GPU 1: `ssmbench tune` of triton.gdn at T = 1, fp32 then bf16, b8/64/512 (20).
# Phase 2  the T = 1 tables installed; the headline with all four impls on both GPUs (19's
#          baseline), then every GDN sweep with both impls on both GPUs (20's baseline).
# Phase 3  GPU checks (tests/gpu: checkpoint, GDN), compute-sanitizer and determinism on the final
#          checkpoint chain (b64: precompute + bandwidth main) and GDN (T = 1, T = 4), the smoke sweep.
# Phase 4  GDN T = 1 tiles the T = 1 tunes never reached (tools/gpu/gdn_forms_plugin.py) beside the
#          shipped table and fla.gdn: fp32 direct, bf16 pool, b64/256/512, both GPUs.
set -u
PHASE=${PHASE:?PHASE=1, 2, 3 or 4}
SESSION=s8
source tools/gpu/session_env.sh

lane0_phase1() {
  sweep triton-cold "$HEADLINE" "${TRITON[@]}" --gpus 0
  sweep triton-warm "$HEADLINE" "${TRITON[@]}" --gpus 0
  gate warm-vs-cold "$R/triton-warm.json" "$R/triton-cold.json"
  gate cold-vs-stored "$R/triton-cold.json" baselines/nvidia-h200/nemotron3-super-tp8.json
}

lane1_phase1() {
  TUNE_BUDGET=${TUNE_BUDGET:-170} TUNE_NAME=gdn-t1-fp32 tune 1 triton.gdn "$GDN" --filter T=1 --filter format=fp32 \
    --batch 8,64,512
  TUNE_BUDGET=${TUNE_BUDGET:-170} TUNE_NAME=gdn-t1-bf16 tune 1 triton.gdn "$GDN" --filter T=1 --filter format=bf16 \
    --batch 8,64,512
}

phase2() {
  install_tables
  sweep headline "$HEADLINE" --gpus 0,1
  gate headline-vs-stored "$R/headline.json" baselines/nvidia-h200/nemotron3-super-tp8.json
  sweep gdn-all "$GDN" --impl triton.gdn --impl fla.gdn --gpus 0,1
  gate gdn-all-vs-stored "$R/gdn-all.json" baselines/nvidia-h200/qwen35-gdn.json
}

phase3() {
  install_tables
  local ck="H16P64N128G1-b64-T6-fp16sr-pool-w16-hist-pdl-realistic"
  local g1="H16HV64K128V128-b8-T1-bf16-pool-rate0.7-pdl-realistic"
  local g4="H16HV64K128V128-b8-T4-bf16-pool-rate0.7-pdl-realistic-inter-nofinal"
  CUDA_VISIBLE_DEVICES=0 STEP_TIMEOUT=300 once gpu-tests python3 -m pytest -q -p no:cacheprovider \
    tests/gpu/test_checkpoint_gpu.py tests/gpu/test_gdn_gpu.py &
  (CUDA_VISIBLE_DEVICES=1 STEP_TIMEOUT=200 once sanitizer-ckpt python3 -m ssmbench profile "$HEADLINE" --case "$ck" \
     --impl triton.checkpoint --tool sanitizer -o "$R/sanitizer-ckpt"
   CUDA_VISIBLE_DEVICES=1 STEP_TIMEOUT=120 once determinism-ckpt python3 -m ssmbench profile "$HEADLINE" \
     --case "$ck" --impl triton.checkpoint --determinism 5
   CUDA_VISIBLE_DEVICES=1 STEP_TIMEOUT=120 once sanitizer-gdn-t1 python3 -m ssmbench profile "$GDN" --case "$g1" \
     --impl triton.gdn --tool sanitizer -o "$R/sanitizer-gdn-t1"
   CUDA_VISIBLE_DEVICES=1 STEP_TIMEOUT=120 once sanitizer-gdn-t4 python3 -m ssmbench profile "$GDN" --case "$g4" \
     --impl triton.gdn --tool sanitizer -o "$R/sanitizer-gdn-t4")
  wait
  sweep smoke sweeps/smoke.yaml --gpus 0,1
  gate smoke-vs-stored "$R/smoke.json" baselines/nvidia-h200/smoke.json
}

phase4() {
  PYTHONPATH="$PYTHONPATH:$PWD/tools/gpu" SWEEP_TIMEOUT=${SWEEP_TIMEOUT:-250} sweep gdn-t1-forms "$GDN" \
    --plugin gdn_forms_plugin --filter T=1 --filter batch=64,256,512 --filter format=fp32,bf16 \
    --impl triton.gdn --impl triton.gdn.bv8w1 --impl triton.gdn.bv16w1 --impl triton.gdn.bv64w8s --impl fla.gdn \
    --gpus 0,1
}

case $PHASE in
  1) lane0_phase1 & lane1_phase1; wait ;;
  2) lane0_phase1 & lane1_phase1; wait  # whatever phase 1 left
     phase2 ;;
  3) phase3 ;;
  4) install_tables; phase4 ;;
esac
phase_end
