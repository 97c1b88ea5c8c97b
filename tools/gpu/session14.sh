#!/usr/bin/env bash
# One H200 session for the open issues 19-20 (2026-11-30, session 14), in phases: one device call per
# phase, each ends before the 10-minute limit; every step is skipped once done (tools/gpu/lib.sh).
# Results in $RESULTS_DIR (default results/s14/), packed into $OUT after every step.
#
#   PHASE=1 bash tools/gpu/session14.sh    (carry .whl .peer; phase 1 on two GPUs: kind nvidia-h200-x2)
#
# Phase 1  19: `ssmbench tune` of triton.checkpoint from the H200 table where FlashInfer's chain still leads (session
#          13's round 8: W = 16 b128, 7-9% in all three formats; W = T b64 fp32), two tunes at a time, one per GPU.
# Phase 2  19: the headline with all four impls in one run on the final tables (the H200 baseline to store), its gate
#          against the stored baseline, compute-sanitizer and 5-launch determinism on the chains the tuned entries
#          build (W = 16 bf16 b64 / b128, fp32 b64), a warm Triton rerun (medians for the store); then round 9 of
#          tools/gpu/checkpoint-picks.yaml: the b64 entries at b8 / b16 / b32 (`triton.checkpoint.as-b64`) beside the
#          default there and FlashInfer.
# Phase 3  19: round 10 of tools/gpu/checkpoint-picks.yaml: the b128 entries at b256 / b512 / b1024
#          (`triton.checkpoint.as-b128`) beside the table's picks there.
# Phase 4  19: the headline again with round 9's and 10's winners in the table (the baseline to store), its gate against
#          phase 2's run, a warm Triton rerun.
# Phase 5  20: the T = 1 decode with q / k as state-shaped tiles (`GDNKnobs.qk_tiles`) on six tiles beside the shipped
#          pick (tools/gpu/gdn-qk.yaml, bf16 state); the GDN tests on the GPU.
# (The qk_tiles form lost in every cell and was removed after phase 5; it, its variants and gdn-qk.yaml are in the
#  history: commit 1b375ea.)
# Phase 6  20: the T = 1 chain with v's conv1d inside the decode, conv1d over q / k only (`GDNKnobs.fuse_v`) beside the
#          shipped chain (tools/gpu/gdn-fuse-v.yaml, fp32 and bf16); the GDN tests on the GPU.
# Phase 7  20: phase 6 again with the v conv's loads after the wait and a barrier before its in-place state write
#          (phase 6: the decode kernel 4-22% slower; the b8 fp32 32 x 8 tile failed verification: warps sharing a channel).
# (fuse_v lost in both placements and was removed after phase 7; it, its tests, variant and gdn-fuse-v.yaml are in the
#  history: commit 1974f80.)
# Phase 8  20: ncu (full set) of the T = 1 bf16 b512 chain, shipped and with `fuse_v` (run from a working tree with
#          commit 1974f80's GDN files: the form is removed from main), to see why the decode kernel slowed 22%.
set -u
PHASE=${PHASE:?PHASE=1 to 8}
SESSION=s14
source tools/gpu/session_env.sh

phase1() {
  TUNE_NAME=checkpoint-w16-b128 tune 0 triton.checkpoint "$HEADLINE" --filter window=16 \
    --filter format=bf16,fp32 --batch 128 &
  (TUNE_NAME=checkpoint-w16-b128-fp16sr tune 1 triton.checkpoint "$HEADLINE" --filter window=16 \
    --filter format=fp16sr --batch 128
   TUNE_NAME=checkpoint-wT-b64-fp32 tune 1 triton.checkpoint "$HEADLINE" --filter window=6 \
    --filter format=fp32 --batch 64) &
  wait
}

phase2() {
  sweep headline-final "$HEADLINE" "${TRITON[@]}" --impl flashinfer.ssu --impl flashinfer.checkpointing --gpus 0
  gate final-vs-stored "$R/headline-final.json" baselines/nvidia-h200/nemotron3-super-tp8.json
  local b fmt
  for b in 64 128; do
    STEP_TIMEOUT=100 once "sanitizer-bf16-b$b" python3 -m ssmbench profile "$HEADLINE" --case "$(ckpt_case $b bf16)" \
      --impl triton.checkpoint --tool sanitizer -o "$R/sanitizer-bf16-b$b"
    STEP_TIMEOUT=60 once "determinism-bf16-b$b" python3 -m ssmbench profile "$HEADLINE" --case "$(ckpt_case $b bf16)" \
      --impl triton.checkpoint --determinism 5
  done
  STEP_TIMEOUT=100 once sanitizer-fp32-b64 python3 -m ssmbench profile "$HEADLINE" --case "$(ckpt_case 64 fp32)" \
    --impl triton.checkpoint --tool sanitizer -o "$R/sanitizer-fp32-b64"
  sweep triton-final-warm "$HEADLINE" "${TRITON[@]}" --gpus 0
  gate warm-vs-final "$R/triton-final-warm.json" "$R/headline-final.json"
  PYTHONPATH=$FORMS_PATH sweep checkpoint-picks9 tools/gpu/checkpoint-picks.yaml --plugin checkpoint_bw_plugin
}

phase3() {
  PYTHONPATH=$FORMS_PATH sweep checkpoint-picks10 tools/gpu/checkpoint-picks.yaml --plugin checkpoint_bw_plugin
}

phase4() {
  sweep headline-final2 "$HEADLINE" "${TRITON[@]}" --impl flashinfer.ssu --impl flashinfer.checkpointing --gpus 0
  gate final2-vs-final "$R/headline-final2.json" "$R/headline-final.json"
  gate final2-vs-stored "$R/headline-final2.json" baselines/nvidia-h200/nemotron3-super-tp8.json
  sweep triton-final2-warm "$HEADLINE" "${TRITON[@]}" --gpus 0
  gate warm2-vs-final2 "$R/triton-final2-warm.json" "$R/headline-final2.json"
}

phase5() {
  STEP_TIMEOUT=150 once gdn-tests-gpu python3 -m pytest -q -p no:cacheprovider tests/test_triton_gdn.py
  PYTHONPATH=$FORMS_PATH sweep gdn-qk tools/gpu/gdn-qk.yaml --plugin gdn_forms_plugin
}

phase6() {
  STEP_TIMEOUT=150 once gdn-fuse-tests-gpu python3 -m pytest -q -p no:cacheprovider tests/test_triton_gdn.py \
    tests/test_gdn_fuse_v.py tests/test_triton_conv1d.py
  PYTHONPATH=$FORMS_PATH sweep gdn-fuse-v tools/gpu/gdn-fuse-v.yaml --plugin gdn_forms_plugin
}

phase7() {
  STEP_TIMEOUT=150 once gdn-fuse-tests-gpu2 python3 -m pytest -q -p no:cacheprovider tests/test_gdn_fuse_v.py
  PYTHONPATH=$FORMS_PATH sweep gdn-fuse-v2 tools/gpu/gdn-fuse-v.yaml --plugin gdn_forms_plugin
}

phase8() {
  local impl case=H16HV64K128V128-b512-T1-bf16-pool-rate0.7-pdl-realistic
  for impl in triton.gdn triton.gdn.pick+fuse-v; do
    PYTHONPATH=$FORMS_PATH STEP_TIMEOUT=120 once "ncu-$impl" python3 -m ssmbench profile "$GDN" --case "$case" \
      --impl "$impl" --plugin gdn_forms_plugin --tool ncu --set full -o "$R/ncu-$impl"
  done
}

run_phase
