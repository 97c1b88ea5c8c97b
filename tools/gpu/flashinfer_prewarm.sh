#!/usr/bin/env bash
# JIT-build every FlashInfer configuration the headline sweep reaches that .peer/'s cache lacks,
# in parallel (one `ssmbench check` process per configuration, batch 8 then 256 so both
# checkpointing modes load), verify them, and bring the whole JIT cache back under $OUT as
# <= 15 MiB parts (copy them over .peer/jit-cache.tar.xz.part*). docs/flashinfer.md.
#   OUT=... bash tools/gpu/flashinfer_prewarm.sh
set -u
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
source tools/gpu/wheels.sh
source tools/gpu/flashinfer_setup.sh /tmp/site
SPEC=sweeps/nemotron3-super-tp8.yaml
archive() {
  rm -f "$OUT"/jit-cache.tar.xz.part*
  (cd "$HOME/.cache" && tar -cf - flashinfer 2>/dev/null | xz -T0 -1 | split -b 15m - "$OUT/jit-cache.tar.xz.part")
}
trap archive EXIT
pids=()
for pair in "flashinfer.ssu fp32-pool-w6" "flashinfer.ssu bf16-pool-w6" "flashinfer.ssu fp16sr-pool-w6" \
            "flashinfer.checkpointing fp32-pool-w6" \
            "flashinfer.checkpointing bf16-pool-w6" "flashinfer.checkpointing fp16sr-pool-w6" \
            "flashinfer.checkpointing fp16sr-pool-w16" "flashinfer.checkpointing fp32-pool-w16" \
            "flashinfer.checkpointing bf16-pool-w16"; do
  set -- $pair
  log="$OUT/prewarm-$1-$2.log"
  (for b in 8 256; do
     timeout "${CHECK_TIMEOUT:-480}" python3 -m ssmbench check "$SPEC" --impl "$1" --case "*-b$b-T6-$2-*" -v
   done) >"$log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
for f in "$OUT"/prewarm-*.log; do echo "== $(basename "$f"): $(grep -E 'passed|failed' "$f" | tr '\n' ' ')"; done
