#!/usr/bin/env bash
# One H200 session (one GPU, or two with GPUS=0,1) for the open issues 18-20 (2026-11-30, session 9), in phases: one device
# call per phase, each ends before the 10-minute limit; every step is skipped once done
# (tools/gpu/lib.sh), so a phase cut short is finished by the next call. Results in $RESULTS_DIR
# (default results/s9/), packed into $OUT after every step. On a fresh machine carry results/s9
# back (and .whl .peer).
#
#   PHASE=1 bash tools/gpu/session9.sh    (carry .whl .peer [results/s9])
#
# Phase 1  conv1d forms (`Conv1dKnobs.form`: columns, flat; tools/gpu/conv1d_forms_plugin.py; the row tile, then
#          a third form, was removed after it) alone at the headline shape (T = 1, 4, 6) and at TP1's
#          10240 channels, then in the GDN
#          chain beside the default and fla.gdn (gdn_forms_plugin.py);
#          the conv1d CPU tests on the GPU.
#          (As run at b216483 and, as "phase 1b", 84cb6ae, it also timed a late PDL trigger and conv1d
#          launched as an ordinary kernel: both changed nothing and were removed; docs/gpu-runs.md.)
# Phase 1c conv1d with and without its PDL trigger, PDL on/off, in the GDN chain (tools/gpu/gdn-pdl.yaml).
# Phase 2  the Triton headline on a bare machine ("cold") then warm, on GPU 0, as `make sweep` runs
#          it (18's wall-time numbers; start states now drawn on the device); every GDN sweep with
#          both impls.
# Phase 3  every GDN sweep with both impls on the final conv1d rule (20's baseline), compute-sanitizer
#          on the GDN chains, the GDN checks past 2**31 and the conv1d tests on the GPU; then the
#          headline's FlashInfer impls (their half of the re-stored headline baseline: phase 2's warm
#          run holds the Triton half, on the new workload draws).
# Phase 4  tools/gpu/profile_sweep.py on a warm cache (the headline at b64/b1024), and the
#          checkpoint GPU checks session 8 did not reach.
set -u
PHASE=${PHASE:?PHASE=1, 1c, 2, 3 or 4}
SESSION=s9
source tools/gpu/session_env.sh
GPUS=${GPUS:-0}

phase1() {
  STEP_TIMEOUT=120 once conv1d-tests python3 -m pytest -q -p no:cacheprovider tests/test_triton_conv1d.py &
  PYTHONPATH=$FORMS_PATH SWEEP_TIMEOUT=150 sweep conv1d-forms tools/gpu/conv1d-forms.yaml \
    --plugin conv1d_forms_plugin --gpus "$GPUS"
  wait
  PYTHONPATH=$FORMS_PATH SWEEP_TIMEOUT=300 sweep gdn-conv-forms "$GDN" --plugin gdn_forms_plugin \
    --filter batch=64,256,512 --filter pool=direct,pool --filter sweep=qwen35-gdn,qwen35-gdn-t4-inter,qwen35-gdn-peers \
    --impl triton.gdn --impl triton.gdn.conv-flat --impl triton.gdn.conv-columns --impl fla.gdn --gpus "$GPUS"
}

phase1c() {  # conv1d's trigger and PDL in the GDN chain
  PYTHONPATH=$FORMS_PATH SWEEP_TIMEOUT=300 sweep gdn-pdl tools/gpu/gdn-pdl.yaml --plugin gdn_forms_plugin --gpus "$GPUS"
}

phase2() {  # 18's wall-time numbers, then 20's baseline
  sweep triton-cold "$HEADLINE" "${TRITON[@]}" --gpus 0
  sweep triton-warm "$HEADLINE" "${TRITON[@]}" --gpus 0
  gate warm-vs-cold "$R/triton-warm.json" "$R/triton-cold.json"
  sweep gdn-all "$GDN" --impl triton.gdn --impl fla.gdn --gpus "$GPUS"
  gate gdn-all-vs-stored "$R/gdn-all.json" baselines/nvidia-h200/qwen35-gdn.json
}

phase3() {  # 20's final run and checks, then the FlashInfer half of 19's headline baseline
  local g1="H16HV64K128V128-b8-T1-bf16-pool-rate0.7-pdl-realistic"
  local g4="H16HV64K128V128-b8-T4-bf16-pool-rate0.7-pdl-realistic-inter-nofinal"
  sweep gdn-final "$GDN" --impl triton.gdn --impl fla.gdn --gpus "$GPUS"
  gate gdn-final-vs-stored "$R/gdn-final.json" baselines/nvidia-h200/qwen35-gdn.json
  STEP_TIMEOUT=100 once sanitizer-gdn-t1 python3 -m ssmbench profile "$GDN" --case "$g1" \
    --impl triton.gdn --tool sanitizer -o "$R/sanitizer-gdn-t1"
  STEP_TIMEOUT=100 once sanitizer-gdn-t4 python3 -m ssmbench profile "$GDN" --case "$g4" \
    --impl triton.gdn --tool sanitizer -o "$R/sanitizer-gdn-t4"
  STEP_TIMEOUT=150 once gpu-tests python3 -m pytest -q -p no:cacheprovider tests/gpu/test_gdn_gpu.py \
    tests/test_triton_conv1d.py -k "past_2_31 or conv1d"
  sweep headline-flashinfer "$HEADLINE" --impl flashinfer.ssu --impl flashinfer.checkpointing --gpus "$GPUS"
}

phase4() {  # where the warm headline's time goes outside its pairs (18); the checkpoint checks session 8 did not reach (19)
  sweep prof-warmup "$HEADLINE" "${TRITON[@]}" --filter batch=64,1024 --gpus 0
  STEP_TIMEOUT=150 once profile-warm python3 tools/gpu/profile_sweep.py "$HEADLINE" "${TRITON[@]}" --filter batch=64,1024
  STEP_TIMEOUT=120 once ckpt-checks python3 -m pytest -q -p no:cacheprovider tests/gpu/test_checkpoint_gpu.py \
    -k "256 or 64bit or roundtrip"
}

run_phase
