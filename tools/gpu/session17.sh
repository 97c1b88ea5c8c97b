#!/usr/bin/env bash
# One H200 session for the open issues 19-20 (2026-11-30, session 17), in phases: one device call per
# phase, each ends before the 10-minute limit; every step is skipped once done (tools/gpu/lib.sh).
# Results in $RESULTS_DIR (default results/s17/), packed into $OUT after every step.
#
#   SSMBENCH_COMMIT=<sha> PHASE=1 bash tools/gpu/session17.sh    (carry .whl .peer .bisect; one H200)
#
# Phase 1   19, 20: `ssmbench tune` of triton.checkpoint at W = 16 bf16 b1024 (its entry is the b128 one timed
#           there; the precompute runs on 4 heads in 25.9 us where fp32's 16-head one takes 21.3), then the
#           b1 GDN bisect (phase 2 since): tools/gpu/gdn-b1-bisect.yaml swept by the ssmbench of five older commits
#           (.bisect/<sha>, git archive of ssmbench/ kernels/ sweeps/ pyproject.toml) and of this tree, in
#           order and again in reverse, one GPU: where b1 T = 1 bf16 went 4.74 -> 4.96 us.
# Phase 2a  20 (the same warm machine, straight after: carry .cutedsl/a): the first half of the CuTe DSL
#           pieces (tools/gpu/cutedsl_pack.sh) into /tmp/cutedsl-parts; nothing else.
# Phase 2   20 (the same warm machine, straight after: carry .cutedsl/b): the CuTe DSL installed, FlashInfer's
#           GDN decode imported, `ssmbench check` of the GDN sweep for flashinfer.gdn (its kernels' first GPU
#           run: they compile here), then the GDN sweep with all three impls, gated against the stored one.
# Phase 3   19 (a fresh H200: carry .whl .peer): the bandwidth main's TMA form (`CheckpointKnobs.tma`) in the GPU's
#           simulations, then round 16 of tools/gpu/checkpoint-picks.yaml (W = 16 on the table with phase 1's one-warp
#           b1024 bf16 entry; one warp, TMA and both on every bandwidth pick; fp32 on the bf16 form), compute-sanitizer
#           and 5-launch determinism on the b1024 bf16 entry's kernel through `as-b1024` at b64.
# Phase 4a  20 (the same warm machine, straight after: carry .cutedsl/a), as phase 2a.
# Phase 4   20 (the same warm machine, straight after: carry .cutedsl/b): the GDN sweep with all three impls again,
#           FlashInfer's bf16-state kernels on int32 slot indices (phase 2: they do not compile with int64), gated
#           against the stored baseline and phase 2's run.
# Phase 5   19 (a fresh H200: carry .whl .peer; round 16's winners installed by hand: bf16 b64 on the one-warp TMA
#           form, bf16 b256 and fp16 SR b1024 with TMA): the headline's Triton impls on the new table (no FlashInfer
#           JIT cache this session: its peers are not rerun), gated against the stored baseline; compute-sanitizer and
#           5-launch determinism on the new entries' kernels (b64 itself; the b256 / b1024 entries through `as-b256` /
#           `as-b1024` at b64).
# Phase 6   19 (a fresh H200: carry .whl .peer): round 17 of tools/gpu/checkpoint-picks.yaml (TMA, one warp with TMA,
#           the one-warp TMA form on the table's picks at b16 / b32 / b128 / b512, bf16 and fp16 SR, both windows).
# Phase 7   19 (a fresh H200: carry .whl .peer; round 17's winners installed by hand): the headline's Triton impls on
#           the final table, gated against the stored baseline and phase 5's run.
set -u
PHASE=${PHASE:?PHASE=1, 2a, 2, 3, 4a, 4, 5, 6 or 7}
SESSION=s17
source tools/gpu/session_env.sh
BISECT_SPEC=tools/gpu/gdn-b1-bisect.yaml

bisect_run() {  # bisect_run TREE LABEL: the bisect spec swept by the ssmbench in TREE (its kernels too), run from
  # inside TREE (`python3 -m` puts the working directory first on sys.path: phase 1's first try, from the repo root,
  # ran this tree's ssmbench over the older kernels)
  local tree=$1 label=$2 spec=$PWD/$BISECT_SPEC
  PYTHONPATH="$tree:$tree/kernels:$PYTHONPATH" STEP_TIMEOUT=120 once "bisect-$label" \
    bash -c "cd '$tree' && python3 -m ssmbench sweep '$spec' -o '$R/bisect-$label.json'"
}

bisect() {  # bisect TAG: every tree in order, then in reverse (labels TAG-SHA-1 / -2)
  local trees=(11a6e3a 630151d 7f0a2df 3c28820 55bfd69 head) t i order
  for order in 1 2; do
    for ((i = 0; i < ${#trees[@]}; i++)); do
      [ $order -eq 1 ] && t=${trees[$i]} || t=${trees[$((${#trees[@]} - 1 - i))]}
      if [ "$t" = head ]; then bisect_run "$PWD" "$1-head-$order"; else bisect_run "$PWD/.bisect/$t" "$1-$t-$order"; fi
    done
  done
}

phase1() {
  TUNE_BUDGET=110 TUNE_NAME=checkpoint-w16-b1024-bf16 tune 0 triton.checkpoint "$HEADLINE" --filter window=16 \
    --filter format=bf16 --batch 1024
  # (The call of 2026-11-30 also ran the bisect here, from the repo root: this tree's ssmbench over each older tree's
  # kernels. bisect_run now runs inside each tree; phase 2 ran it so.)
}

phase2a() {
  log "CuTe DSL parts staged: $(ls /tmp/cutedsl-parts | tr '\n' ' ')"
}

phase2() {
  STEP_TIMEOUT=60 once cutedsl-import python3 -c "import cutlass, cuda.bindings, flashinfer; \
from flashinfer.gdn_decode import gated_delta_rule_decode_pretranspose; \
print('cutlass', cutlass.__file__, 'flashinfer', flashinfer.__version__, 'gdn decode importable')"
  STEP_TIMEOUT=300 once fi-gdn-check python3 -m ssmbench check "$GDN" --impl flashinfer.gdn -v
  sweep gdn-fi "$GDN" --gpus 0
  gate gdn-fi-vs-stored "$R/gdn-fi.json" baselines/nvidia-h200/qwen35-gdn.json
  bisect tree
}

phase3() {
  STEP_TIMEOUT=200 once tma-tests-gpu python3 -m pytest -q -p no:cacheprovider \
    tests/test_triton_checkpoint_bw.py::test_bw_main_tma_matches_reference \
    tests/test_triton_checkpoint_bw.py::test_bw_main_tma_falls_back_and_keeps_padding_rows_untouched \
    tests/test_triton_checkpoint_bw.py::test_bw_main_column_tiles_match_reference
  PYTHONPATH=$FORMS_PATH sweep checkpoint-picks16 tools/gpu/checkpoint-picks.yaml --plugin checkpoint_bw_plugin \
    --filter window=16 --filter format=fp32,bf16,fp16sr --filter batch=64,256,1024 --gpus 0
  PYTHONPATH=$FORMS_PATH kernel_checks bf16-as-b1024 "$(ckpt_case 64 bf16)" triton.checkpoint.as-b1024 \
    --plugin checkpoint_bw_plugin
}

phase4a() { phase2a; }

phase4() {
  sweep gdn-fi2 "$GDN" --gpus 0
  gate gdn-fi2-vs-stored "$R/gdn-fi2.json" baselines/nvidia-h200/qwen35-gdn.json
  gate gdn-fi2-vs-fi "$R/gdn-fi2.json" "$R/gdn-fi.json"
}

phase5() {
  sweep headline-triton "$HEADLINE" "${TRITON[@]}" --gpus 0
  gate triton-vs-stored "$R/headline-triton.json" baselines/nvidia-h200/nemotron3-super-tp8.json
  local name impl
  for name in bf16-b64:triton.checkpoint bf16-b256:triton.checkpoint.as-b256 fp16sr-b1024:triton.checkpoint.as-b1024; do
    impl=${name#*:}; name=${name%%:*}
    PYTHONPATH=$FORMS_PATH kernel_checks "$name" "$(ckpt_case 64 "${name%%-*}")" "$impl" --plugin checkpoint_bw_plugin
  done
}

phase6() {
  PYTHONPATH=$FORMS_PATH sweep checkpoint-picks17 tools/gpu/checkpoint-picks.yaml --plugin checkpoint_bw_plugin \
    --filter format=bf16,fp16sr --filter window=16,6 --filter batch=16,32,128,512 --gpus 0
}

phase7() {
  sweep headline-triton2 "$HEADLINE" "${TRITON[@]}" --gpus 0
  gate triton2-vs-stored "$R/headline-triton2.json" baselines/nvidia-h200/nemotron3-super-tp8.json
}

run_phase
