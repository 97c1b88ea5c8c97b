#!/usr/bin/env bash
# One H200 session for the open issues 19-20 (2026-11-30, session 17), in phases: one device call per
# phase, each ends before the 10-minute limit; every step is skipped once done (tools/gpu/lib.sh).
# Results in $RESULTS_DIR (default results/s17/), packed into $OUT after every step.
#
#   SSMBENCH_COMMIT=<sha> PHASE=1 bash tools/gpu/session17.sh    (carry .whl .peer .bisect; one H200)
#
# Phase 1   19, 20: `ssmbench tune` of triton.checkpoint at W = 16 bf16 b1024 (its entry is the b128 one timed
#           there; the precompute runs on 4 heads in 25.9 us where fp32's 16-head one takes 21.3), then the
#           b1 GDN bisect: tools/gpu/gdn-b1-bisect.yaml swept by the ssmbench of five older commits
#           (.bisect/<sha>, git archive of ssmbench/ kernels/ sweeps/ pyproject.toml) and of this tree, in
#           order and again in reverse, one GPU: where b1 T = 1 bf16 went 4.74 -> 4.96 us.
# Phase 2a  20 (the same warm machine, straight after: carry .cutedsl/a): the first half of the CuTe DSL
#           pieces (tools/gpu/cutedsl_pack.sh) into /tmp/cutedsl-parts; nothing else.
# Phase 2   20 (the same warm machine, straight after: carry .cutedsl/b): the CuTe DSL installed, FlashInfer's
#           GDN decode imported, `ssmbench check` of the GDN sweep for flashinfer.gdn (its kernels' first GPU
#           run: they compile here), then the GDN sweep with all three impls, gated against the stored one.
set -u
PHASE=${PHASE:?PHASE=1, 2a or 2}
SESSION=s17
source tools/gpu/session_env.sh
BISECT_SPEC=tools/gpu/gdn-b1-bisect.yaml

bisect_run() {  # bisect_run TREE LABEL: the bisect spec swept by the ssmbench in TREE (its kernels too)
  local tree=$1 label=$2
  PYTHONPATH="$tree:$tree/kernels:$PYTHONPATH" STEP_TIMEOUT=120 once "bisect-$label" \
    python3 -m ssmbench sweep "$PWD/$BISECT_SPEC" -o "$R/bisect-$label.json"
}

phase1() {
  TUNE_BUDGET=110 TUNE_NAME=checkpoint-w16-b1024-bf16 tune 0 triton.checkpoint "$HEADLINE" --filter window=16 \
    --filter format=bf16 --batch 1024
  local trees=(11a6e3a 630151d 7f0a2df 3c28820 55bfd69 head) t i
  for t in "${trees[@]}"; do
    if [ "$t" = head ]; then bisect_run "$PWD" head-1; else bisect_run "$PWD/.bisect/$t" "$t-1"; fi
  done
  for ((i = ${#trees[@]} - 1; i >= 0; i--)); do
    t=${trees[$i]}
    if [ "$t" = head ]; then bisect_run "$PWD" head-2; else bisect_run "$PWD/.bisect/$t" "$t-2"; fi
  done
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
}

run_phase
