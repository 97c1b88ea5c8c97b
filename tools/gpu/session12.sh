#!/usr/bin/env bash
# One H200 session for the open issues 19-20 (2026-11-30, session 12), in phases: one device call per
# phase, each ends before the 10-minute limit; every step is skipped once done (tools/gpu/lib.sh).
# Results in $RESULTS_DIR (default results/s12/), packed into $OUT after every step.
#
#   PHASE=1 bash tools/gpu/session12.sh    (carry .whl .peer)
#
# Phase 1  19: the bandwidth main's CPU tests on the GPU (with `split_loops`: write and nowrite rows in their
#          own tile loops), then tools/gpu/checkpoint-picks.yaml: the shipped picks beside the same picks with
#          split loops, register caps (one wave at b64), the precompute on 4 heads a program, and FlashInfer;
#          20: ncu (full set) of the GDN chain at T = 1, bf16, b512 (where conv1d's 42 us go).
# Phase 2  19: the table with phase 1's winners (fp32 64 x 32 tiles at 64 registers, the precompute on 4 heads
#          a program up to b256) against undoing each, and against the state tile prefetched into L2 before
#          the grid-dependency wait (`prefetch`), W = 16 and W = T, one run with FlashInfer
#          (checkpoint-picks2); the bandwidth main's tests on the GPU (prefetch with PDL bit-identical);
#          compute-sanitizer on the prefetch form; 20: the bf16 / fp32 T = 1 GDN decode under register caps.
# Phase 3  19: the table with phase 2's winners (bf16: `prefetch`; fp16 SR: `prefetch` + `split_loops`) against
#          undoing the prefetch, the 4-head precompute at W = T, and register caps 80 / 64 (checkpoint-picks3);
#          conv1d in front of the chain and alone with other tiles (checkpoint-conv, conv1d-alone).
# Phase 4  19: the precompute's per-head blocks on 8 token rows at T = 6 (1544 static instructions and 96
#          registers a 16-head program, from 1952 and 128), beside 4 / 8 heads a program and 8 warps, with
#          FlashInfer (checkpoint-picks4).
# Phase 5  19's final chain: the CPU checkpoint tests on the GPU and tests/gpu/test_checkpoint_gpu.py (64-bit
#          offsets, the bf16 pool round trip), the headline with all four impls in one run (19's baseline) and
#          its gate against the stored baseline.
# Phase 6  compute-sanitizer and 5-launch determinism on the chains the new entries pick (bf16 b64: prefetch;
#          fp16 SR b256: prefetch + split loops; fp32 b64: 64 registers, 4-head precompute on 8 warps), a warm
#          Triton rerun of the headline (medians for the store).
set -u
PHASE=${PHASE:?PHASE=1 to 6}
SESSION=s12
source tools/gpu/session_env.sh

phase1() {
  STEP_TIMEOUT=150 once bw-tests-gpu python3 -m pytest -q -p no:cacheprovider tests/test_triton_checkpoint_bw.py
  PYTHONPATH=$FORMS_PATH sweep checkpoint-picks tools/gpu/checkpoint-picks.yaml --plugin checkpoint_bw_plugin
  once ncu-gdn-t1-bf16 python3 -m ssmbench profile "$GDN" --case "H16HV64K128V128-b512-T1-bf16-pool-rate0.7-pdl-realistic" \
    --impl triton.gdn --tool ncu --set full -o "$R/ncu-gdn-t1-bf16"
}

phase2() {
  STEP_TIMEOUT=150 once bw-tests-gpu2 python3 -m pytest -q -p no:cacheprovider tests/test_triton_checkpoint_bw.py
  PYTHONPATH=$FORMS_PATH sweep checkpoint-picks2 tools/gpu/checkpoint-picks.yaml --plugin checkpoint_bw_plugin
  PYTHONPATH=$FORMS_PATH sweep gdn-regs tools/gpu/gdn-regs.yaml --plugin gdn_forms_plugin
  PYTHONPATH=$FORMS_PATH STEP_TIMEOUT=100 once sanitizer-prefetch python3 -m ssmbench profile tools/gpu/checkpoint-picks.yaml \
    --case "$(ckpt_case 64 fp32)" --impl triton.checkpoint.pick+prefetch --plugin checkpoint_bw_plugin \
    --tool sanitizer -o "$R/sanitizer-prefetch"
}

phase3() {
  PYTHONPATH=$FORMS_PATH sweep checkpoint-picks3 tools/gpu/checkpoint-picks.yaml --plugin checkpoint_bw_plugin
  PYTHONPATH=$FORMS_PATH sweep checkpoint-conv tools/gpu/checkpoint-conv.yaml --plugin checkpoint_bw_plugin \
    --plugin conv1d_forms_plugin
}

phase4() {
  PYTHONPATH=$FORMS_PATH sweep checkpoint-picks4 tools/gpu/checkpoint-picks.yaml --plugin checkpoint_bw_plugin
}

phase5() {
  STEP_TIMEOUT=200 once ckpt-tests-gpu python3 -m pytest -q -p no:cacheprovider tests/test_triton_checkpoint_bw.py \
    tests/test_triton_checkpoint.py tests/gpu/test_checkpoint_gpu.py
  sweep headline-final "$HEADLINE" "${TRITON[@]}" --impl flashinfer.ssu --impl flashinfer.checkpointing --gpus 0
  gate final-vs-stored "$R/headline-final.json" baselines/nvidia-h200/nemotron3-super-tp8.json
}

phase6() {
  STEP_TIMEOUT=100 once sanitizer-bf16-b64 python3 -m ssmbench profile "$HEADLINE" --case "$(ckpt_case 64 bf16)" \
    --impl triton.checkpoint --tool sanitizer -o "$R/sanitizer-bf16-b64"
  STEP_TIMEOUT=100 once sanitizer-fp16sr-b256 python3 -m ssmbench profile "$HEADLINE" --case "$(ckpt_case 256 fp16sr)" \
    --impl triton.checkpoint --tool sanitizer -o "$R/sanitizer-fp16sr-b256"
  STEP_TIMEOUT=100 once sanitizer-fp32-b64 python3 -m ssmbench profile "$HEADLINE" --case "$(ckpt_case 64 fp32)" \
    --impl triton.checkpoint --tool sanitizer -o "$R/sanitizer-fp32-b64"
  for fmt in bf16 fp16sr; do
    STEP_TIMEOUT=60 once "determinism-$fmt" python3 -m ssmbench profile "$HEADLINE" --case "$(ckpt_case 64 $fmt)" \
      --impl triton.checkpoint --determinism 5
  done
  sweep triton-final-warm "$HEADLINE" "${TRITON[@]}" --gpus 0
  gate warm-vs-final "$R/triton-final-warm.json" "$R/headline-final.json"
}

run_phase
