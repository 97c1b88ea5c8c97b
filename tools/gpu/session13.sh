#!/usr/bin/env bash
# One H200 session for the open issues 19-20 (2026-11-30, session 13), in phases: one device call per
# phase, each ends before the 10-minute limit; every step is skipped once done (tools/gpu/lib.sh).
# Results in $RESULTS_DIR (default results/s13/), packed into $OUT after every step.
#
#   PHASE=1 bash tools/gpu/session13.sh    (carry .whl .peer)
#
# Phase 1  19: the bandwidth main's prefetch tests on the GPU (`prefetch_span`: the grid's first programs ask L2
#          for later waves' state tiles too), then tools/gpu/checkpoint-picks.yaml round 5: the shipped picks
#          beside the same picks with spans 2 and 4, and FlashInfer, batch 64 / 128 / 256, W = 16 and W = T.
# Phase 2  19: ncu (full set) of the W = 16 bf16 chain at b64 and b128, ours and FlashInfer's (each kernel alone:
#          where the main's time goes where FlashInfer's chain is ahead).
# Phase 3  19: round 6 of tools/gpu/checkpoint-picks.yaml: every row's outputs from S_ckpt in a loop without the fold's
#          operands, write rows' fold in a second pass (`split_loops` + `rect_outputs`), and every 32-column tile in
#          flight (stages 4), beside the shipped picks and FlashInfer, batch 64 / 256 / 1024, W = 16 and W = T; the
#          split-loop tests on the GPU.
# Phase 4  20: the T = 1 decode in two passes over K-chunks (`GDNKnobs.k_chunk`) beside the shipped pick
#          (tools/gpu/gdn-twopass.yaml); the GDN tests on the GPU.
# Phase 5  19: round 7 (the fold operands before the wait: history x and the fold weights from the history dt),
#          the bandwidth main's tests on the GPU and checkpoint-picks round 7 (the table's picks beside FlashInfer).
# Phase 6  19's checks on the final kernels (session 12's: every round of this session was reverted): the CPU
#          checkpoint tests (bandwidth main included) and tests/gpu/test_checkpoint_gpu.py on the GPU, complete (session 12's step limit cut
#          six of them).
# Phase 7  19: `ssmbench tune` of triton.checkpoint from the H200 table, W = 16 bf16 at b64 and b128 (where FlashInfer's
#          chain leads by 9-16%), the rest of the device time.
# Phase 8  19: `ssmbench tune` of triton.checkpoint W = 16 fp32 at b64 / b128 from the table (phase 7's bf16 winners in
#          it), its table installed, then checkpoint-picks round 8: the table beside FlashInfer at b64 / b128.
# Phase 9  19: `ssmbench tune` of triton.checkpoint W = T bf16 at b64 (FlashInfer's chain 1.18x ahead), the last
#          device seconds (TUNE_BUDGET=90).
# (Rounds 5-7 and the GDN two-pass form were removed after their runs; their variants, and gdn-twopass.yaml, are
#  in the history: commits fd74d1b, 7c833c7, 632cd16, 807ed80.)
set -u
PHASE=${PHASE:?PHASE=1 to 9}
SESSION=s13
source tools/gpu/session_env.sh

phase1() {
  STEP_TIMEOUT=150 once bw-prefetch-tests-gpu python3 -m pytest -q -p no:cacheprovider \
    tests/test_triton_checkpoint_bw.py -k "span or prefetch or pdl"
  PYTHONPATH=$FORMS_PATH sweep checkpoint-picks5 tools/gpu/checkpoint-picks.yaml --plugin checkpoint_bw_plugin
}

phase2() {
  local b impl
  for b in 64 128; do
    for impl in triton.checkpoint flashinfer.checkpointing; do
      STEP_TIMEOUT=150 once "ncu-$impl-b$b" python3 -m ssmbench profile "$HEADLINE" --case "$(ckpt_case $b bf16)" \
        --impl $impl --tool ncu --set full -o "$R/ncu-$impl-b$b"
    done
  done
}

phase3() {
  STEP_TIMEOUT=150 once bw-split-tests-gpu python3 -m pytest -q -p no:cacheprovider \
    tests/test_triton_checkpoint_bw.py -k "split or pdl"
  PYTHONPATH=$FORMS_PATH sweep checkpoint-picks6 tools/gpu/checkpoint-picks.yaml --plugin checkpoint_bw_plugin
}

phase4() {
  STEP_TIMEOUT=150 once gdn-tests-gpu python3 -m pytest -q -p no:cacheprovider tests/test_triton_gdn.py
  PYTHONPATH=$FORMS_PATH sweep gdn-twopass tools/gpu/gdn-twopass.yaml --plugin gdn_forms_plugin
}

phase5() {
  STEP_TIMEOUT=200 once bw-tests-gpu python3 -m pytest -q -p no:cacheprovider tests/test_triton_checkpoint_bw.py
  PYTHONPATH=$FORMS_PATH sweep checkpoint-picks7 tools/gpu/checkpoint-picks.yaml --plugin checkpoint_bw_plugin
}

phase6() {
  STEP_TIMEOUT=520 once ckpt-tests-gpu python3 -m pytest -q -p no:cacheprovider tests/test_triton_checkpoint_bw.py \
    tests/test_triton_checkpoint.py \
    tests/gpu/test_checkpoint_gpu.py
}

phase7() {
  TUNE_NAME=checkpoint-bf16-w16 tune 0 triton.checkpoint "$HEADLINE" --filter window=16 --filter format=bf16 \
    --batch 64,128
}

phase8() {
  TUNE_NAME=checkpoint-fp32-w16 tune 0 triton.checkpoint "$HEADLINE" --filter window=16 --filter format=fp32 \
    --batch 64,128
  install_tables
  PYTHONPATH=$FORMS_PATH sweep checkpoint-picks8 tools/gpu/checkpoint-picks.yaml --plugin checkpoint_bw_plugin
}

phase9() {
  TUNE_BUDGET=${TUNE_BUDGET:-90} TUNE_NAME=checkpoint-bf16-wT tune 0 triton.checkpoint "$HEADLINE" --filter window=6 \
    --filter format=bf16 --batch 64
}

run_phase
