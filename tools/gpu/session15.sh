#!/usr/bin/env bash
# One H200 session for the open issues 19-20 (2026-11-30, session 15), in phases: one device call per
# phase, each ends before the 10-minute limit; every step is skipped once done (tools/gpu/lib.sh).
# Results in $RESULTS_DIR (default results/s15/), packed into $OUT after every step.
#
#   SSMBENCH_COMMIT=<sha> PHASE=1 bash tools/gpu/session15.sh    (carry .whl .peer)
#
# Phase 1  19: the conv1d update inside the fused kernel (`CheckpointKnobs.fuse_conv`: the chain one launch, aimed at
#          b1 <= 6 us and FlashInfer's lead at b8): its tests and the fused form's on the GPU, then round 11 of
#          tools/gpu/checkpoint-picks.yaml (the table's picks and the default rule with the form, FlashInfer beside
#          them, b1-b64, every format), compute-sanitizer and 5-launch determinism on a chain with the form.
# (Phase 1 measured the first form: conv1d's row loop inside, one round trip a token; the chain 1.5-2x slower.)
# Phase 2  19: the form again with every conv input loaded in one round and the arrival at the item's end; its tests,
#          round 12 (round 11's impls, b1-b32).
# (fuse_conv lost in every cell of both rounds and was removed after phase 2; the form, its tests and variants are in
#  the history: commit 70f90ee. Phases 1-2 need that commit's files.)
# Phase 3  19, 20: conv1d with every input token loaded first (`Conv1dKnobs.loads_first`) beside the default in one
#          run: in the checkpoint chain, alone, in the GDN chain (tools/gpu/conv-loads-first.yaml); conv1d and GDN tests.
# (loads_first won for the flat form in every cell and is its default now; the column form keeps the loads in place.)
# Phase 4  19: `ssmbench tune` of triton.checkpoint at the small batches FlashInfer's chain still leads and no tune
#          has covered (W = 16 fp32 b16 / b32, bf16 b8 / b16), two at a time on two GPUs (kind nvidia-h200-x2).
# Phase 5  19: the headline with all four impls on the final tables and conv1d (the H200 baseline to store), its gate
#          against the stored baseline, a warm Triton rerun.
# Phase 6  19: phase 4's tune at b1 (fp32, bf16, fp16 SR) and fp32 b8, on the warm x2 host (phase 4: block_p 32 at b16,
#          -19% / -23%, where the default rule gives 16).
# Phase 7  19: (carry results/s15: phases 4 and 6's tables) the tune at b8 for fp16 SR (both windows) and W = T fp32 /
#          bf16, then every table of phases 4, 6 and 7 installed, then phase 5 (the headline and the warm rerun).
# Phase 8  19: the headline again on the committed tables (phase 7's run read b4 fp16 SR W = 16 30% slower: the b1
#          entry covered it; a b4 entry now restores the default), gates against phase 7's run and the stored
#          baseline, a warm Triton rerun; compute-sanitizer and 5-launch determinism on the new entries' chains (W = 16
#          fp16 SR b1 on 8 warps, bf16 b16 at 32 x N).
# Phase 9  19: the checkpoint chain's conv1d without its PDL trigger, b64-b1024 (tools/gpu/conv-trigger.yaml).
set -u
# Phase 10 19, 20: the GPU tests on the final commit (conv1d's new default under the Mamba-2 and GDN chains): the
#          GDN chain tests, the conv1d -> intermediate chain tests and 64-bit conv offsets, the conv1d tests.
PHASE=${PHASE:?PHASE=1 to 10}
SESSION=s15
source tools/gpu/session_env.sh

phase1() {
  STEP_TIMEOUT=200 once conv-inside-tests-gpu python3 -m pytest -q -p no:cacheprovider \
    tests/test_triton_checkpoint_conv_inside.py tests/test_triton_conv1d.py tests/test_triton_checkpoint.py
  PYTHONPATH=$FORMS_PATH sweep checkpoint-picks11 tools/gpu/checkpoint-picks.yaml --plugin checkpoint_bw_plugin
  local fmt
  for fmt in fp32 bf16; do
    PYTHONPATH=$FORMS_PATH STEP_TIMEOUT=90 once "sanitizer-inside-$fmt-b8" python3 -m ssmbench profile "$HEADLINE" \
      --case "$(ckpt_case 8 $fmt)" --impl triton.checkpoint.default+fuse-conv --plugin checkpoint_bw_plugin \
      --tool sanitizer -o "$R/sanitizer-inside-$fmt-b8"
    PYTHONPATH=$FORMS_PATH STEP_TIMEOUT=60 once "determinism-inside-$fmt-b8" python3 -m ssmbench profile "$HEADLINE" \
      --case "$(ckpt_case 8 $fmt)" --impl triton.checkpoint.default+fuse-conv --plugin checkpoint_bw_plugin \
      --determinism 5
  done
}

phase2() {
  STEP_TIMEOUT=200 once conv-inside-tests-gpu2 python3 -m pytest -q -p no:cacheprovider \
    tests/test_triton_checkpoint_conv_inside.py tests/test_triton_conv1d.py
  PYTHONPATH=$FORMS_PATH sweep checkpoint-picks12 tools/gpu/checkpoint-picks.yaml --plugin checkpoint_bw_plugin \
    --filter batch=1,8,16,32
}

phase3() {
  STEP_TIMEOUT=150 once conv-first-tests-gpu python3 -m pytest -q -p no:cacheprovider tests/test_triton_conv1d.py \
    tests/test_triton_gdn.py
  PYTHONPATH=$FORMS_PATH sweep conv-loads-first tools/gpu/conv-loads-first.yaml --plugin checkpoint_bw_plugin \
    --plugin conv1d_forms_plugin --plugin gdn_forms_plugin
}

phase4() {
  TUNE_NAME=checkpoint-w16-b16-32-fp32 tune 0 triton.checkpoint "$HEADLINE" --filter window=16 --filter format=fp32 \
    --batch 16,32 &
  TUNE_NAME=checkpoint-w16-b8-16-bf16 tune 1 triton.checkpoint "$HEADLINE" --filter window=16 --filter format=bf16 \
    --batch 8,16 &
  wait
}

phase5() {  # (phase 4's tables installed and committed on the CPU machine first: tools/gpu/install_tables.py)
  sweep headline-final "$HEADLINE" "${TRITON[@]}" --impl flashinfer.ssu --impl flashinfer.checkpointing --gpus 0
  gate final-vs-stored "$R/headline-final.json" baselines/nvidia-h200/nemotron3-super-tp8.json
  sweep triton-final-warm "$HEADLINE" "${TRITON[@]}" --gpus 0
  gate warm-vs-final "$R/triton-final-warm.json" "$R/headline-final.json"
}

phase6() {
  TUNE_NAME=checkpoint-w16-b1-8-fp32 tune 0 triton.checkpoint "$HEADLINE" --filter window=16 --filter format=fp32 \
    --batch 1,8 &
  TUNE_NAME=checkpoint-w16-b1-bf16-fp16sr tune 1 triton.checkpoint "$HEADLINE" --filter window=16 \
    --filter format=bf16,fp16sr --batch 1 &
  wait
}

phase7() {
  TUNE_BUDGET=110 TUNE_NAME=checkpoint-b8-fp16sr tune 0 triton.checkpoint "$HEADLINE" --filter format=fp16sr --batch 8 &
  TUNE_BUDGET=110 TUNE_NAME=checkpoint-wT-b8 tune 1 triton.checkpoint "$HEADLINE" --filter window=6 \
    --filter format=fp32,bf16 --batch 8 &
  wait
  install_tables
  phase5
}

phase8() {
  sweep headline-final2 "$HEADLINE" "${TRITON[@]}" --impl flashinfer.ssu --impl flashinfer.checkpointing --gpus 0
  gate final2-vs-final "$R/headline-final2.json" "$R/headline-final.json"
  gate final2-vs-stored "$R/headline-final2.json" baselines/nvidia-h200/nemotron3-super-tp8.json
  local b fmt
  for b_fmt in 1:fp16sr 16:bf16; do
    b=${b_fmt%%:*}; fmt=${b_fmt##*:}
    STEP_TIMEOUT=60 once "sanitizer-$fmt-b$b" python3 -m ssmbench profile "$HEADLINE" --case "$(ckpt_case $b $fmt)" \
      --impl triton.checkpoint --tool sanitizer -o "$R/sanitizer-$fmt-b$b"
    STEP_TIMEOUT=40 once "determinism-$fmt-b$b" python3 -m ssmbench profile "$HEADLINE" --case "$(ckpt_case $b $fmt)" \
      --impl triton.checkpoint --determinism 5
  done
  sweep triton-final2-warm "$HEADLINE" "${TRITON[@]}" --gpus 0
  gate warm2-vs-final2 "$R/triton-final2-warm.json" "$R/headline-final2.json"
}

phase9() {
  PYTHONPATH=$FORMS_PATH sweep conv-trigger tools/gpu/conv-trigger.yaml --plugin checkpoint_bw_plugin
}

phase10() {
  STEP_TIMEOUT=200 once final-tests-gpu bash -c 'python3 -m pytest -q -p no:cacheprovider tests/gpu/test_gdn_gpu.py & \
    python3 -m pytest -q -p no:cacheprovider tests/gpu/test_mamba2_kernels_gpu.py -k "bf16 or fp32 or conv1d" & \
    python3 -m pytest -q -p no:cacheprovider tests/test_triton_conv1d.py & wait'
}

run_phase
