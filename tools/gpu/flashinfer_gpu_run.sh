#!/usr/bin/env bash
# One GPU session for the FlashInfer peers (docs/flashinfer.md): install the trimmed package,
# JIT-build the headline configurations in parallel (one check process per impl x state dtype),
# verify them, and bring the JIT cache back under $OUT (<= 16 MiB parts) for .peer/.
set -u
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
source tools/gpu/flashinfer_setup.sh /tmp/site
python3 -m ssmbench list 2>&1 | grep -i "flashinfer" | tee "$OUT/list.txt"
archive() {
  (cd "$HOME/.cache" && tar -cf - flashinfer 2>/dev/null | xz -T0 -1 | split -b 15m - "$OUT/jit-cache.tar.xz.part")
  ls -la "$OUT" >&2
}
trap archive EXIT
pids=()
for impl in flashinfer.ssu flashinfer.checkpointing; do
  for fmt in fp32 bf16; do
    log="$OUT/check-$impl-$fmt.log"
    timeout "${CHECK_TIMEOUT:-420}" python3 -m ssmbench check tools/gpu/flashinfer.yaml --impl "$impl" \
      --case "*-$fmt-*" -v >"$log" 2>&1 &
    pids+=($!)
  done
done
for p in "${pids[@]}"; do wait "$p"; echo "check pid $p rc=$?"; done
tail -n 12 "$OUT"/check-*.log
