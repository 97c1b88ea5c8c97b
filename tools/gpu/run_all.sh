#!/usr/bin/env bash
# One GPU session: install the carried wheels, run every GPU check, and record the results.
# Usage on the GPU machine (repo root, wheels in .whl/): bash tools/gpu/run_all.sh
# Writes under $OUT (default ./out): gpu_kernel_checks.{json,md}, check-*.txt, and a summary.
set -uo pipefail
OUT=${OUT:-$PWD/out}; mkdir -p "$OUT"; export OUT
source tools/gpu/wheels.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"

status=0
step() {  # step NAME CMD...: run, keep the log, remember failures
  local name=$1; shift
  local t0=$SECONDS
  "$@" > "$OUT/$name.txt" 2>&1; local rc=$?
  echo "$name rc=$rc $((SECONDS - t0))s :: $(tail -n 1 "$OUT/$name.txt")" | tee -a "$OUT/summary.txt"
  [ $rc -eq 0 ] || status=1
}

# 1. Kernel checks (4 groups in parallel to overlap Triton compiles).
for k in "bf16 or fp32 or dot or conv1d_64bit" fp16 int8 fp8; do
  (python3 -m pytest tests/gpu -q -k "$k" > "$OUT/gpu-tests-${k%% *}.txt" 2>&1; echo "rc=$?" >> "$OUT/gpu-tests-${k%% *}.txt") &
done; wait
grep -h "passed\|failed\|rc=" "$OUT"/gpu-tests-*.txt | tee -a "$OUT/summary.txt"
grep -q "rc=[1-9]" "$OUT"/gpu-tests-*.txt && status=1
# 2. The CPU suite's kernel tests, on the GPU (bit-exact storage checks on the GPU's paths).
step cpu-suite-on-gpu python3 -m pytest -q tests/test_triton_storage.py tests/test_triton_conv1d.py \
  tests/test_triton_intermediate.py tests/test_storage.py tests/test_triton_gdn.py tests/test_triton_checkpoint.py
# 3. The harness's correctness gate on the GPU: smoke spec, and the headline shape with Triton.
step check-smoke python3 -m ssmbench check sweeps/smoke.yaml --device cuda
for b in 1 64 256; do
  step check-headline-b$b python3 -m ssmbench check sweeps/nemotron3-super-tp8.yaml --device cuda \
    --impl triton.intermediate --case "*-b$b-*"
done
# 4. Extra commands passed in (e.g. timing), each as one quoted string.
for extra in "$@"; do step "extra-$(echo "$extra" | tr -c 'a-zA-Z0-9' '_' | cut -c1-40)" bash -c "$extra"; done
echo "---- summary"; cat "$OUT/summary.txt"
exit $status
