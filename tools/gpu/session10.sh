#!/usr/bin/env bash
# One H200 session for the open issues 18-20 (2026-11-30, session 10), in phases: one device call per
# phase, each ends before the 10-minute limit; every step is skipped once done (tools/gpu/lib.sh),
# so a phase cut short is finished by the next call. Results in $RESULTS_DIR (default
# results/s10/), packed into $OUT after every step.
#
#   PHASE=1 bash tools/gpu/session10.sh    (carry .whl .peer [results/s10])
#
# Phase 1  the conv1d tests on the GPU (the 2-D rows tile); conv1d at T = 1 in the GDN chain: rows a
#          program, 256 channels, one wave with the trigger first or none (tools/gpu/gdn-conv-wave.yaml,
#          gdn_forms_plugin.py); the Triton headline on a bare machine ("cold", every first use of a
#          kernel traced: SSMBENCH_COMPILE_TRACE) then warm, as `make sweep` runs it (18's wall times:
#          conv-state pools now drawn on the device, gc per case, pnat's stationary law remembered).
# Phase 2  the headline with all four impls in one run (19's baseline, on the new workload draws);
#          every GDN sweep with both impls (20's baseline, after a conv1d rule change).
set -u
PHASE=${PHASE:?PHASE=1 or 2}
SESSION=s10
source tools/gpu/session_env.sh
FORMS_PATH="$PYTHONPATH:$PWD/tools/gpu"

phase1() {
  STEP_TIMEOUT=90 once conv1d-tests python3 -m pytest -q -p no:cacheprovider tests/test_triton_conv1d.py
  PYTHONPATH=$FORMS_PATH SWEEP_TIMEOUT=200 sweep gdn-conv-wave tools/gpu/gdn-conv-wave.yaml \
    --plugin gdn_forms_plugin --gpus 0
  SSMBENCH_COMPILE_TRACE="$R/compile-trace.jsonl" sweep triton-cold "$HEADLINE" "${TRITON[@]}" --gpus 0
  cp "$R/compile-trace.jsonl" "$R/compile-trace.txt" 2>/dev/null; pack  # .jsonl does not travel
  sweep triton-warm "$HEADLINE" "${TRITON[@]}" --gpus 0
  gate warm-vs-cold "$R/triton-warm.json" "$R/triton-cold.json"
}

phase2() {
  sweep headline-all "$HEADLINE" "${TRITON[@]}" --impl flashinfer.ssu --impl flashinfer.checkpointing --gpus 0
  gate headline-all-vs-warm "$R/headline-all.json" "$R/triton-warm.json"
  sweep gdn-final "$GDN" --impl triton.gdn --impl fla.gdn --gpus 0
  gate gdn-final-vs-stored "$R/gdn-final.json" baselines/nvidia-h200/qwen35-gdn.json
}

case $PHASE in
  1) phase1 ;;
  2) phase2 ;;
esac
phase_end
