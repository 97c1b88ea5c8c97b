#!/usr/bin/env bash
# One H200 session for the open issues 18-20 (2026-11-30, session 10), in phases: one device call per
# phase, each ends before the 10-minute limit; every step is skipped once done (tools/gpu/lib.sh),
# so a phase cut short is finished by the next call. Results in $RESULTS_DIR (default
# results/s10/), packed into $OUT after every step.
#
#   PHASE=1 bash tools/gpu/session10.sh    (carry .whl .peer [results/s10])
#
# Phase 1  (as run at 296ba8d) the conv1d tests on the GPU (a 2-D rows tile, since removed); conv1d at
#          T = 1 in the GDN chain: 2 and 4 rows a program, 256 channels, one wave with the trigger
#          first or none (tools/gpu/gdn-conv-wave.yaml and its plugin variants: all lost, removed with
#          the rows knob; docs/perf-notes.md, session 10); the Triton headline on a bare machine
#          ("cold", every first use of a kernel traced: SSMBENCH_COMPILE_TRACE) then warm, as `make
#          sweep` runs it (18's wall times: conv-state pools drawn on the device, gc per case, pnat's
#          stationary law remembered).
# Phase 2  the headline with all four impls in one run on a bare machine (19's baseline, on the new
#          workload draws; the trace now also logs each process's cache-key parts), then the Triton
#          headline warm again (the worker's objects frozen out of its collections).
# Phase 3  the Triton headline cold then warm once more, every kernel's cache key now settled in
#          one order in every process (ssmbench_kernels.common.cache_keys: the Triton 3.6 key-order
#          dependence phase 2's trace showed); the trace on, to count what the worker still compiles.
# Phase 4  the Triton headline with the knob tables, then with every impl on its hand-picked
#          defaults (SSMBENCH_KNOB_TABLES=off): 18's "tables never slower than the defaults" as one
#          compare; then `ssmbench tune` of triton.intermediate's untuned int8 / fp8 SR cells for
#          what is left of the call (resumable from results/s10/tune).
# Phase 5  `ssmbench tune` of triton.gdn at T = 1, bf16 state, b64 / b256 / b512, from the 16 x 1
#          default (20's last miss: bf16 T = 1 at 82-88% of its floor).
# Phase 6  `ssmbench tune` of triton.intermediate's other headline cells (fp32, bf16, fp16 SR at b1, 8,
#          64, 256, 1024): with phase 4's int8 / fp8 SR groups, the impl's whole headline grid
#          (25 groups), each part within its own budget (TUNE_BUDGET, default 290 s).
set -u
PHASE=${PHASE:?PHASE=1 to 6}
SESSION=s10
source tools/gpu/session_env.sh

phase1() {
  echo "phase 1 ran at 296ba8d (its steps named gdn-conv-wave, whose plugin variants are removed)"
}

phase2() {
  SSMBENCH_COMPILE_TRACE="$R/compile-trace2.jsonl" sweep headline-all "$HEADLINE" "${TRITON[@]}" \
    --impl flashinfer.ssu --impl flashinfer.checkpointing --gpus 0
  cp "$R/compile-trace2.jsonl" "$R/compile-trace2.txt" 2>/dev/null; pack  # .jsonl does not travel
  sweep triton-warm2 "$HEADLINE" "${TRITON[@]}" --gpus 0
  gate warm2-vs-all "$R/triton-warm2.json" "$R/headline-all.json"
}

phase3() {
  SSMBENCH_COMPILE_TRACE="$R/compile-trace3.jsonl" sweep triton-cold3 "$HEADLINE" "${TRITON[@]}" --gpus 0
  cp "$R/compile-trace3.jsonl" "$R/compile-trace3.txt" 2>/dev/null; pack  # .jsonl does not travel
  sweep triton-warm3 "$HEADLINE" "${TRITON[@]}" --gpus 0
  gate warm3-vs-cold3 "$R/triton-warm3.json" "$R/triton-cold3.json"
}

phase4() {
  sweep triton-tables "$HEADLINE" "${TRITON[@]}" --gpus 0
  SSMBENCH_KNOB_TABLES=off sweep triton-defaults "$HEADLINE" "${TRITON[@]}" --gpus 0
  gate tables-vs-defaults "$R/triton-tables.json" "$R/triton-defaults.json"
  tune 0 triton.intermediate "$HEADLINE" --filter format=int8sr,fp8sr --batch 8,64,1024
}

phase5() {
  TUNE_NAME=gdn-t1-bf16 tune 0 triton.gdn "$GDN" --filter T=1 --filter format=bf16 --filter sweep=qwen35-gdn \
    --batch 64,256,512
}

phase6() {
  TUNE_NAME=intermediate-grid tune 0 triton.intermediate "$HEADLINE" --filter format=fp32,bf16,fp16sr \
    --batch 1,8,64,256,1024
}

run_phase
