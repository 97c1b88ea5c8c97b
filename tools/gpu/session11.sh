#!/usr/bin/env bash
# One H200 session for the open issues 19-20 (2026-11-30, session 11), in phases: one device call per
# phase, each ends before the 10-minute limit; every step is skipped once done (tools/gpu/lib.sh).
# Results in $RESULTS_DIR (default results/s11/), packed into $OUT after every step.
#
#   PHASE=1 bash tools/gpu/session11.sh    (carry .whl .peer)
#
# Phase 1  (as run at 55893a4) 20's staged 8-byte state vectors (gdn-t1-vec: 16 x 1 default beside 16 x 1
#          and 32 x 1 at 8 bytes; lost, removed with its spec and plugin variants); 19's first evidence
#          for the main's redesign: ncu (full set) of the checkpoint chain at W = 16, b1024, bf16 and
#          fp32 (stall reasons, issue activity, occupancy of today's bandwidth main).
# Phase 2  the bandwidth main's column tiles on the GPU: its CPU tests there, then
#          tools/gpu/checkpoint-tiles.yaml (five tile variants beside the shipped table and FlashInfer).
# Phase 3  the headline with all four impls in one run on the new table entries (19's baseline), its gate
#          against the stored baseline, a warm Triton rerun (medians for the store); compute-sanitizer and
#          5-launch determinism on the chains the new entries pick (fp16 SR b64: 16-column tiles, 3 stages;
#          fp32 b256: 32-column tiles), and compute-sanitizer on the faulting form (32 columns, 2 stages).
# Phase 4  second round of column tiles (tools/gpu/checkpoint-tiles2.yaml: 16/32/64 columns, 1-4 stages, W = 16
#          and W = T) beside the table; ncu (full set) of the table's new chains at b1024 (bf16: 16-column
#          tiles, 4 stages; fp32: 32-column tiles).
# Phase 5  (as run at 69c84ca) the bf16 state tile fed to S C^T as loaded (no trip through fp32): the bf16
#          cells of tools/gpu/checkpoint-tiles2.yaml again, and ncu of the table's bf16 chain at b1024. The
#          pipelined forms gave wrong outputs on every nowrite row (the warpgroup MMA reading the pipelined
#          buffer itself: the Triton 3.6 miscompile again); reverted.
# Phase 6  every row's outputs from S_ckpt (the state tile into S C^T outside the loop's branch): the A/B
#          tools/gpu/checkpoint-tiles3.yaml, new form against the form before, in one run.
# Phase 7  the final chain: its CPU tests on the GPU, the headline with all four impls in one run (19's
#          baseline), its gate against the stored baseline, compute-sanitizer and determinism on the bf16
#          chain (32-column tiles, 3 stages, outputs from S_ckpt) and the fp32 one, a warm Triton rerun.
set -u
PHASE=${PHASE:?PHASE=1 to 7}
SESSION=s11
source tools/gpu/session_env.sh

phase1() {
  echo "phase 1 ran at 55893a4 (its sweep gdn-t1-vec and the plugin variants it timed are removed)"
  for fmt in bf16 fp32; do
    once "ncu-ckpt-$fmt" python3 -m ssmbench profile "$HEADLINE" --case "$(ckpt_case 1024 $fmt)" \
      --impl triton.checkpoint --tool ncu --set full -o "$R/ncu-ckpt-$fmt"
  done
}

phase2() {
  STEP_TIMEOUT=150 once bw-tests-gpu python3 -m pytest -q -p no:cacheprovider tests/test_triton_checkpoint_bw.py
  PYTHONPATH=$FORMS_PATH sweep checkpoint-tiles tools/gpu/checkpoint-tiles.yaml --plugin checkpoint_bw_plugin
}

phase3() {
  sweep headline-all "$HEADLINE" "${TRITON[@]}" --impl flashinfer.ssu --impl flashinfer.checkpointing --gpus 0
  gate all-vs-stored "$R/headline-all.json" baselines/nvidia-h200/nemotron3-super-tp8.json
  STEP_TIMEOUT=100 once sanitizer-tiles16 python3 -m ssmbench profile "$HEADLINE" --case "$(ckpt_case 64 fp16sr)" \
    --impl triton.checkpoint --tool sanitizer -o "$R/sanitizer-tiles16"
  STEP_TIMEOUT=100 once sanitizer-tiles32 python3 -m ssmbench profile "$HEADLINE" --case "$(ckpt_case 256 fp32)" \
    --impl triton.checkpoint --tool sanitizer -o "$R/sanitizer-tiles32"
  STEP_TIMEOUT=60 once determinism-tiles python3 -m ssmbench profile "$HEADLINE" --case "$(ckpt_case 64 fp16sr)" \
    --impl triton.checkpoint --determinism 5
  PYTHONPATH=$FORMS_PATH STEP_TIMEOUT=100 once sanitizer-n32s2 python3 -m ssmbench profile tools/gpu/checkpoint-tiles.yaml \
    --case "$(ckpt_case 8 bf16)" --impl triton.checkpoint.before-p64n32w4s2 --plugin checkpoint_bw_plugin \
    --tool sanitizer -o "$R/sanitizer-n32s2"
  sweep triton-warm "$HEADLINE" "${TRITON[@]}" --gpus 0
}

phase4() {
  PYTHONPATH=$FORMS_PATH sweep checkpoint-tiles2 tools/gpu/checkpoint-tiles2.yaml --plugin checkpoint_bw_plugin
  for fmt in bf16 fp32; do
    once "ncu-tiles-$fmt" python3 -m ssmbench profile "$HEADLINE" --case "$(ckpt_case 1024 $fmt)" \
      --impl triton.checkpoint --tool ncu --set full -o "$R/ncu-tiles-$fmt"
  done
}

phase5() {
  PYTHONPATH=$FORMS_PATH sweep checkpoint-tiles2-bf16 tools/gpu/checkpoint-tiles2.yaml --plugin checkpoint_bw_plugin \
    --filter state_dtype=bf16
  once ncu-tiles-bf16-raw python3 -m ssmbench profile "$HEADLINE" --case "$(ckpt_case 1024 bf16)" \
    --impl triton.checkpoint --tool ncu --set full -o "$R/ncu-tiles-bf16-raw"
}

phase6() {
  PYTHONPATH=$FORMS_PATH sweep checkpoint-tiles3 tools/gpu/checkpoint-tiles3.yaml --plugin checkpoint_bw_plugin
}

phase7() {
  STEP_TIMEOUT=150 once bw-tests-gpu-final python3 -m pytest -q -p no:cacheprovider tests/test_triton_checkpoint_bw.py
  sweep headline-final "$HEADLINE" "${TRITON[@]}" --impl flashinfer.ssu --impl flashinfer.checkpointing --gpus 0
  gate final-vs-stored "$R/headline-final.json" baselines/nvidia-h200/nemotron3-super-tp8.json
  gate final-vs-phase3 "$R/headline-final.json" "$R/headline-all.json"
  STEP_TIMEOUT=100 once sanitizer-rect32 python3 -m ssmbench profile "$HEADLINE" --case "$(ckpt_case 64 bf16)" \
    --impl triton.checkpoint --tool sanitizer -o "$R/sanitizer-rect32"
  STEP_TIMEOUT=60 once determinism-rect32 python3 -m ssmbench profile "$HEADLINE" --case "$(ckpt_case 64 bf16)" \
    --impl triton.checkpoint --determinism 5
  STEP_TIMEOUT=100 once sanitizer-fp32-final python3 -m ssmbench profile "$HEADLINE" --case "$(ckpt_case 256 fp32)" \
    --impl triton.checkpoint --tool sanitizer -o "$R/sanitizer-fp32-final"
  sweep triton-final-warm "$HEADLINE" "${TRITON[@]}" --gpus 0
}

run_phase
