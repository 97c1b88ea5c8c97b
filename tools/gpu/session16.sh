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
# Phase 2  19 (two GPUs): GPU 0 the bandwidth main's tests, then round 14 of tools/gpu/checkpoint-picks.yaml (a
#          program also prefetches the state tile of the program a wave later, `prefetch_ahead`, against the table's
#          picks and FlashInfer, b64-b1024); GPU 1 `ssmbench tune` at W = 16 b1 / b2 / b4 for fp32 and bf16 with
#          `ring_rows` in the space (round 13: b1 bf16 0.91x, fp32 b2 0.89x), then phase 1's W = 16 bf16 b512 tune again
#          (it stopped on a config with wrong outputs: the tuner's bug, fixed).
# (prefetch_ahead lost in every cell of round 14 and was removed after phase 2: commit 74042c8 has it; phase 2
#  needs that commit's files.)
# Phase 3  19, 20 (two GPUs; phase 1-2's tables installed and committed on the CPU machine first): GPU 0 the headline
#          with all four impls (the H200 baseline to store), its gates, a warm Triton rerun; GPU 1 the GDN sweep
#          with fla.gdn (its baseline to store; conv1d's flat form loads first since session 15), the GDN tests;
#          then compute-sanitizer and 5-launch determinism on the new entries' chains.
# Phase 4  19, 20 (one H200: phase 3 ran the two sweeps at once on two GPUs; the GDN gate read b1 T1 bf16 +6%): the GDN
#          sweep and the headline alone (the baselines to store), round 15 of tools/gpu/checkpoint-picks.yaml (W = T
#          bf16's one-warp b256 entry at b512 / b1024), the sanitizer on the fp16 SR W = 16 b512 kernel (80 registers;
#          phase 3's run at b512 stopped at its 100 s limit) through `as-b512` at b64, its determinism.
# Phase 5  19 (one H200): the headline with all four impls once more, on the table with round 15's winner (W = T bf16
#          b512 / b1024 on one warp), the baseline to store; its gate against phase 4's run.
set -u
PHASE=${PHASE:?PHASE=1 to 5}
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
  (CUDA_VISIBLE_DEVICES=0 STEP_TIMEOUT=150 once bw-tests-gpu python3 -m pytest -q -p no:cacheprovider \
     tests/test_triton_checkpoint_bw.py
   PYTHONPATH=$FORMS_PATH sweep checkpoint-picks14 tools/gpu/checkpoint-picks.yaml --plugin checkpoint_bw_plugin \
     --filter format=fp32,bf16,fp16sr --gpus 0) &
  (TUNE_BUDGET=100 TUNE_NAME=checkpoint-w16-b1-4-fp32 tune 1 triton.checkpoint "$HEADLINE" --filter window=16 \
     --filter format=fp32 --batch 1,2,4
   TUNE_BUDGET=100 TUNE_NAME=checkpoint-w16-b1-4-bf16 tune 1 triton.checkpoint "$HEADLINE" --filter window=16 \
     --filter format=bf16 --batch 1,2,4
   TUNE_BUDGET=100 TUNE_NAME=checkpoint-w16-b512-bf16 tune 1 triton.checkpoint "$HEADLINE" --filter window=16 \
     --filter format=bf16 --batch 512) &
  wait
}

phase3() {
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
  local name cid fmt b w gpu=0
  # The new entries' chains: W = 16 bf16 b1 and fp32 b2 (ring_rows), W = T bf16 b256 (one warp), W = 16 fp16 SR b512
  # (80 registers); two at a time, one a GPU.
  for name in bf16-b1-w16 fp32-b2-w16 bf16-b256-w6 fp16sr-b512-w16; do
    IFS=- read -r fmt b w <<< "$name"
    cid="H16P64N128G1-$b-T6-$fmt-pool-$w-hist-pdl-realistic"
    CUDA_VISIBLE_DEVICES=$gpu SANITIZER_TIMEOUT=100 kernel_checks "$name" "$cid" triton.checkpoint &
    gpu=$((1 - gpu)); [ $gpu -eq 0 ] && wait
  done
  wait
}

phase4() {
  sweep gdn-final2 "$GDN" --gpus 0
  gate gdn-final2-vs-stored "$R/gdn-final2.json" baselines/nvidia-h200/qwen35-gdn.json
  gate gdn-final2-vs-final "$R/gdn-final2.json" "$R/gdn-final.json"
  PYTHONPATH=$FORMS_PATH sweep checkpoint-picks15 tools/gpu/checkpoint-picks.yaml --plugin checkpoint_bw_plugin \
    --filter window=6 --filter format=bf16 --gpus 0
  PYTHONPATH=$FORMS_PATH kernel_checks fp16sr-as-b512 "$(ckpt_case 64 fp16sr)" triton.checkpoint.as-b512 \
    --plugin checkpoint_bw_plugin
  sweep headline-final2 "$HEADLINE" "${TRITON[@]}" --impl flashinfer.ssu --impl flashinfer.checkpointing --gpus 0
  gate final2-vs-final "$R/headline-final2.json" "$R/headline-final.json"
  gate final2-vs-stored "$R/headline-final2.json" baselines/nvidia-h200/nemotron3-super-tp8.json
}

phase5() {
  sweep headline-final3 "$HEADLINE" "${TRITON[@]}" --impl flashinfer.ssu --impl flashinfer.checkpointing --gpus 0
  gate final3-vs-final2 "$R/headline-final3.json" "$R/headline-final2.json"
}

run_phase
