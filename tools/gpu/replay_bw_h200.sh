#!/usr/bin/env bash
# Issue 19 on one H200: the bandwidth-first checkpoint-replay main (CheckpointKnobs.bandwidth,
# kernels/ssmbench_kernels/mamba2_replay/kernel_bw.py) checked on the GPU, then timed beside the
# default form in ONE headline sweep (realistic L2, PDL on, T=6, W=T and W=16). Resumable across
# device calls (finished steps are skipped, a cut sweep continues with --resume); results in
# $RESULTS_DIR (default results/replay-bw/), packed into $OUT after every step.
#
#   bash tools/gpu/replay_bw_h200.sh                 (carry .whl)
#   SSMBENCH_BW_KNOBS=block_p=64,num_warps=4,max_regs=128 RESULTS_DIR=results/replay-bw-r128 \
#     bash tools/gpu/replay_bw_h200.sh              (another tile, its own results folder)
#
# 1. the bw tests and the existing replay tests on the GPU (tiny shapes, every format, RN/SR);
# 2. `ssmbench check` of the forced form (`triton.checkpoint.bw`, tools/gpu/checkpoint_bw_plugin.py)
#    on the smoke spec and on the headline shape at b64 (every product format, both windows);
# 3. the sweep: triton.checkpoint (default form) and triton.checkpoint.bw, fp32 / bf16 / fp16-SR,
#    batch 8..1024; then per-cell ratios (bw / default) into $R/ratio.txt.
# docs/checkpoint.md ("A bandwidth-first main kernel") holds the prediction this run tests.
set -u
R=${RESULTS_DIR:-results/replay-bw}
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT" "$R"
CALL_LIMIT=${CALL_LIMIT:-540}  # the device stops a command at 600 s; leave room to pack
source tools/gpu/wheels.sh
export PYTHONPATH="$PYTHONPATH:$PWD/tools/gpu"  # the plugin module
HEADLINE=sweeps/nemotron3-super-tp8.yaml
PLUGIN=(--plugin checkpoint_bw_plugin)
source tools/gpu/lib.sh
log "== $(date -u +%FT%TZ) $(hostname) $(git rev-parse --short HEAD 2>/dev/null) bw knobs: ${SSMBENCH_BW_KNOBS:-default}"
nvidia-smi --query-gpu=index,name,clocks.max.sm,clocks.max.mem --format=csv,noheader | tee -a "$R/summary.txt"

STEP_TIMEOUT=240 once pytest-bw python3 -m pytest -q -p no:cacheprovider tests/test_triton_checkpoint_bw.py \
  tests/test_triton_checkpoint.py
STEP_TIMEOUT=180 once check-smoke python3 -m ssmbench check sweeps/smoke.yaml --device cuda --impl triton.checkpoint.bw \
  "${PLUGIN[@]}"
STEP_TIMEOUT=240 once check-headline python3 -m ssmbench check "$HEADLINE" --device cuda --impl triton.checkpoint.bw \
  --case '*-b64-*' "${PLUGIN[@]}"

sweep bw "$HEADLINE" --impl triton.checkpoint --impl triton.checkpoint.bw --filter batch=8,64,256,1024 \
  --filter format=fp32,bf16,fp16sr "${PLUGIN[@]}"

if complete "$R/bw.json"; then
  python3 - "$R/bw.json" > "$R/ratio.txt" 2>&1 <<'EOF'
import json, sys
from collections import defaultdict
rows = defaultdict(dict)  # case id -> impl -> record
for rec in json.load(open(sys.argv[1]))["cases"]:
    if rec.get("status") == "ok":
        rows[rec["id"]][rec["impl"]] = rec
for case, by in sorted(rows.items()):
    d, b = by.get("triton.checkpoint"), by.get("triton.checkpoint.bw")
    if d and b:
        main = {k: round(v, 1) for k, v in (b.get("kernels_us") or {}).items()} if isinstance(b.get("kernels_us"), dict) else ""
        print(f"{case}  default {d['median_us']:8.1f} us ({d['sol_pct']:4.1f}% SOL)  bw {b['median_us']:8.1f} us "
              f"({b['sol_pct']:4.1f}%)  bw/default {b['median_us'] / d['median_us']:5.2f}  {main}")
EOF
  log "ratio rc=$? :: $(wc -l < "$R/ratio.txt") cells (the markdown table is $R/bw.md)"
  log "DONE"
else
  log "CONTINUE: call again"
fi
pack
cat "$R/summary.txt"
