#!/usr/bin/env bash
# One H200 session for the open issues 19-20 (2026-11-30, session 16), in phases: one device call per
# phase, each ends before the 10-minute limit; every step is skipped once done (tools/gpu/lib.sh).
# Results in $RESULTS_DIR (default results/s16/), packed into $OUT after every step.
#
#   SSMBENCH_COMMIT=<sha> PHASE=1 bash tools/gpu/session16.sh    (carry .whl .peer; kind nvidia-h200-x2)
#
# Phase 1  19 (two GPUs): `ssmbench tune` of triton.checkpoint at b256 / b512, where the SOL target bites and no tune
#          has run (bf16 and fp16 SR take the b128 entry there, fp32 b512 the b256 one): W = 16 bf16 and fp32 at once,
#          then W = 16 fp16 SR beside round 13 of tools/gpu/checkpoint-picks.yaml (the fused form's history by ring
#          row, `ring_rows`, against the table's pick and FlashInfer, b1-b32), then W = T bf16 / fp32 beside the GPU
#          tests (the Mamba-2 kernel module whole: its SR test was fixed in session 15 and not run on a GPU since).
# Phase 2  19, 20 (two GPUs; phase 1's tables installed and committed on the CPU machine first): GPU 0 the headline
#          with all four impls (the H200 baseline to store), its gates, a warm Triton rerun; GPU 1 the GDN sweep
#          with fla.gdn (its baseline to store; conv1d's flat form loads first since session 15), the GDN tests;
#          then compute-sanitizer and 5-launch determinism on the new entries' chains.
set -u
PHASE=${PHASE:?PHASE=1 to 2}
SESSION=s16
source tools/gpu/session_env.sh

phase1() {
  TUNE_BUDGET=150 TUNE_NAME=checkpoint-w16-b256-512-bf16 tune 0 triton.checkpoint "$HEADLINE" --filter window=16 \
    --filter format=bf16 --batch 256,512 &
  TUNE_BUDGET=150 TUNE_NAME=checkpoint-w16-b256-512-fp32 tune 1 triton.checkpoint "$HEADLINE" --filter window=16 \
    --filter format=fp32 --batch 256,512 &
  wait
  PYTHONPATH=$FORMS_PATH sweep checkpoint-picks13 tools/gpu/checkpoint-picks.yaml --plugin checkpoint_bw_plugin \
    --gpus 0 &
  TUNE_BUDGET=130 TUNE_NAME=checkpoint-w16-b256-512-fp16sr tune 1 triton.checkpoint "$HEADLINE" --filter window=16 \
    --filter format=fp16sr --batch 256,512 &
  wait
  CUDA_VISIBLE_DEVICES=0 STEP_TIMEOUT=200 once tests-gpu python3 -m pytest -q -p no:cacheprovider \
    tests/gpu/test_mamba2_kernels_gpu.py tests/test_triton_checkpoint.py tests/test_sr_contract.py &
  TUNE_BUDGET=120 TUNE_NAME=checkpoint-wT-b256-512 tune 1 triton.checkpoint "$HEADLINE" --filter window=6 \
    --filter format=fp32,bf16 --batch 256,512 &
  wait
}

phase2() {
  sweep headline-final "$HEADLINE" "${TRITON[@]}" --impl flashinfer.ssu --impl flashinfer.checkpointing --gpus 0 &
  sweep gdn-final "$GDN" --gpus 1 &
  wait
  gate final-vs-stored "$R/headline-final.json" baselines/nvidia-h200/nemotron3-super-tp8.json &
  gate gdn-final-vs-stored "$R/gdn-final.json" baselines/nvidia-h200/qwen35-gdn.json &
  sweep triton-final-warm "$HEADLINE" "${TRITON[@]}" --gpus 0 &
  CUDA_VISIBLE_DEVICES=1 STEP_TIMEOUT=150 once gdn-tests-gpu python3 -m pytest -q -p no:cacheprovider \
    tests/gpu/test_gdn_gpu.py tests/test_triton_gdn.py &
  wait
  gate warm-vs-final "$R/triton-final-warm.json" "$R/headline-final.json"
  local b fmt
  for b_fmt in ${CHECK_CASES:-256:bf16 512:fp32}; do
    b=${b_fmt%%:*}; fmt=${b_fmt##*:}
    CUDA_VISIBLE_DEVICES=0 STEP_TIMEOUT=100 once "sanitizer-$fmt-b$b" python3 -m ssmbench profile "$HEADLINE" \
      --case "$(ckpt_case $b $fmt)" --impl triton.checkpoint --tool sanitizer -o "$R/sanitizer-$fmt-b$b"
    CUDA_VISIBLE_DEVICES=0 STEP_TIMEOUT=40 once "determinism-$fmt-b$b" python3 -m ssmbench profile "$HEADLINE" \
      --case "$(ckpt_case $b $fmt)" --impl triton.checkpoint --determinism 5
  done
}

run_phase
