#!/usr/bin/env bash
# GPU evidence for `ssmbench profile` / `ssmbench validate-bytes` (issue 7), one command:
#   bash tools/gpu/profile_evidence.sh            (repo root, wheels in .whl/, on the GPU machine)
# Env: IMPLS (Triton impls to profile; default: every triton.* impl registered),
#      VB_IMPLS (impls for validate-bytes; default: all of tools/gpu/validate-bytes.yaml),
#      PHASES (default "A B": A = sanitizer, determinism, nsys; B = ncu, validate-bytes),
#      OUT (default ./out). Writes $OUT/summary.txt and $OUT/profile-evidence.tar.gz (every log,
#      CSV and table; .ncu-rep reports only with KEEP_REPORTS=1, they are large).
# Phase A (sanitizer, determinism) runs in parallel; phase B (ncu) alone on the GPU, because
# DRAM counters are device-wide and another process's kernels would be counted.
set -uo pipefail
OUT=${OUT:-$PWD/out}; mkdir -p "$OUT"; export OUT
W=$(mktemp -d); E=$W/evidence; mkdir -p "$E"
source tools/gpu/wheels.sh
S="python3 -m ssmbench"
HEAD=sweeps/nemotron3-super-tp8.yaml
GDN=sweeps/qwen35-gdn.yaml
IMPLS=${IMPLS:-$(python3 -c "from ssmbench.impls.registry import registry; print(' '.join(n for n in sorted(registry()) if n.startswith('triton.')))")}
(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; ncu --version | tail -1
 compute-sanitizer --version | tail -1; echo "impls: $IMPLS") > "$E/versions.txt" 2>&1

# case <impl> <batch> <fmt>: the spec and case id of a headline case for that impl
case_of() {
  local impl=$1 b=$2 fmt=$3
  if [ "$impl" = triton.gdn ]; then echo "$GDN H16HV64K128V128-b$b-T4-${fmt%sr}-pool-rate0.7-pdl-realistic-inter-nofinal"
  elif [ "$impl" = triton.checkpoint ]; then echo "$HEAD H16P64N128G1-b$b-T6-$fmt-pool-w16-hist-pdl-realistic"
  else echo "$HEAD H16P64N128G1-b$b-T6-$fmt-pool-w6-hist-pdl-realistic"; fi
}
step() {  # step NAME CMD...: run, keep the log, record exit code and last line
  local name=$1; shift; local t0=$SECONDS
  "$@" > "$E/$name.txt" 2>&1; local rc=$?
  echo "$name rc=$rc $((SECONDS - t0))s :: $(grep -v '^\s*$' "$E/$name.txt" | tail -n 1)" >> "$E/summary.txt"
}

# Phase A: compute-sanitizer on the shipped kernels (small batch: racecheck is slow), the planted
# out-of-bounds kernel (must be caught: exit 1; it faults in the verification run), determinism, and the nsys-missing message.
PHASES=${PHASES:-A B}
if [[ " $PHASES " == *" A "* ]]; then
for impl in $IMPLS; do
  fmt=fp16sr; [ "$impl" = triton.gdn ] && fmt=bf16
  set -- $(case_of "$impl" 8 "$fmt")
  step "sanitizer-$impl" $S profile "$1" --case "$2" --impl "$impl" --tool sanitizer -o "$E/sanitizer" &
  set -- $(case_of "$impl" 64 "$fmt")
  step "determinism-$impl" $S profile "$1" --case "$2" --impl "$impl" --determinism 5 &
done
SSMBENCH_PLUGINS=tools.gpu.fault_impl step sanitizer-test.oob $S profile tools/gpu/fault.yaml \
  --case 'H16P64N128G1-b1-T6-fp32-pool-w6-hist-pdl-realistic' --impl test.oob --tool sanitizer \
  -o "$E/sanitizer-oob" &
wait
step nsys-missing $S profile $HEAD --case H16P64N128G1-b64-T6-fp32-pool-w6-hist-pdl-realistic --tool nsys -o "$E/nsys"
fi

# Phase B: ncu, one process at a time.
if [[ " $PHASES " == *" B "* ]]; then
for impl in $IMPLS; do
  set -- $(case_of "$impl" 64 fp32)
  step "ncu-$impl" $S profile "$1" --case "$2" --impl "$impl" --tool ncu -o "$E/ncu"
done
VB_ARGS=(); for i in ${VB_IMPLS:-}; do VB_ARGS+=(--impl "$i"); done
step validate-bytes $S validate-bytes tools/gpu/validate-bytes.yaml "${VB_ARGS[@]}" -o "$E/validate-bytes"
fi

[ "${KEEP_REPORTS:-0}" = 1 ] || find "$E" -name '*.ncu-rep' -delete
cp "$E/summary.txt" "$OUT/summary.txt"
tar -czf "$OUT/profile-evidence.tar.gz" -C "$W" evidence
cat "$OUT/summary.txt"
