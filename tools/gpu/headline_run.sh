#!/usr/bin/env bash
# The headline sweep with every impl (triton.intermediate, triton.checkpoint at W=T and W=16,
# flashinfer.ssu, flashinfer.checkpointing) in one `ssmbench sweep` run on the GPU machine,
# resumable across device calls: the results live in results/ (git-ignored; carry it back in),
# and a sweep stopped by SWEEP_TIMEOUT (SIGINT: workers stop, every finished pair is logged)
# continues with --resume on the next call. Then, if time is left, the smoke sweep's Triton impls
# (the smoke baseline). Copies everything to $OUT.
#   SWEEP_TIMEOUT=540 OUT=... bash tools/gpu/headline_run.sh
set -u
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT" results
source tools/gpu/wheels.sh
[ -d .peer ] && source tools/gpu/flashinfer_setup.sh /tmp/site
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
t0=$SECONDS
RESUME=(); [ -f results/headline.jsonl ] && RESUME=(--resume)
IMPL_ARGS=(); for i in ${IMPLS:-}; do IMPL_ARGS+=(--impl "$i"); done  # default: every impl of the spec
timeout -s INT "${SWEEP_TIMEOUT:-540}" python3 -m ssmbench sweep sweeps/nemotron3-super-tp8.yaml "${IMPL_ARGS[@]}" \
  -o results/headline.json "${RESUME[@]}" --markdown "$OUT/headline.md" > "$OUT/headline.log" 2>&1
echo "headline sweep rc=$? $((SECONDS - t0))s :: $(tail -n 1 "$OUT/headline.log")"
if [ -n "${SMOKE:-}" ]; then
  t1=$SECONDS
  timeout -s INT "${SMOKE_TIMEOUT:-240}" python3 -m ssmbench sweep sweeps/smoke.yaml --impl triton.conv1d \
    --impl triton.intermediate --impl triton.checkpoint --impl triton.gdn -o results/smoke.json \
    > "$OUT/smoke.log" 2>&1
  echo "smoke sweep rc=$? $((SECONDS - t1))s :: $(tail -n 1 "$OUT/smoke.log")"
fi
cp results/headline.json* results/smoke.json* "$OUT/" 2>/dev/null
tail -n 45 "$OUT/headline.log"
