#!/usr/bin/env bash
# `ssmbench accuracy` on the headline shape (Nemotron-3 Super TP8 Mamba-2 layer, T=6, the
# measured acceptance histogram): every storage format x rounding (fp32, bf16, fp16, int8, fp8 x
# rn, sr) for triton.intermediate and triton.checkpoint (W=T and W=16), 1024 decode steps each at
# batch 8, the fp64 chain on the GPU beside them. Target: under 2 minutes on an H200 with a warm
# Triton cache (a cold one adds the kernels' compiles). Writes the results JSON, the plot and the
# log to $OUT (docs/accuracy.md says how to read them).
#   OUT=... STEPS=1024 BATCH=8 bash tools/gpu/accuracy_h200.sh
set -u
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
source tools/gpu/wheels.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
t0=$SECONDS
timeout -s INT "${ACCURACY_TIMEOUT:-570}" python3 -m ssmbench accuracy sweeps/nemotron3-super-tp8.yaml \
  --every-format --steps "${STEPS:-1024}" --batch "${BATCH:-8}" \
  --impl triton.intermediate --impl triton.checkpoint --device cuda \
  -o "$OUT/accuracy-nemotron3-super-tp8.json" > "$OUT/accuracy.log" 2>&1
echo "accuracy rc=$? $((SECONDS - t0))s (plot: $OUT/accuracy-nemotron3-super-tp8.png)"
tail -n 60 "$OUT/accuracy.log"
