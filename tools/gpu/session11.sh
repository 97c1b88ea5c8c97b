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
set -u
PHASE=${PHASE:?PHASE=1 to 2}
SESSION=s11
source tools/gpu/session_env.sh
FORMS_PATH="$PYTHONPATH:$PWD/tools/gpu"
ckpt_case() { echo "H16P64N128G1-b$1-T6-$2-pool-w16-hist-pdl-realistic"; }

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

case $PHASE in
  1) phase1 ;;
  2) phase2 ;;
esac
phase_end
