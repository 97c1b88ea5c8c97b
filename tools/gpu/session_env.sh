#!/usr/bin/env bash
# Sourced by the session scripts (tools/gpu/session8.sh on) after `set -u` and SESSION=sN: the
# results folder R ($RESULTS_DIR, default results/$SESSION), OUT, CALL_LIMIT (the device stops a
# command at 600 s; leave room to pack), the carried wheels and FlashInfer, the shipped specs,
# tools/gpu/lib.sh, and the phase's header line in the summary.
: "${SESSION:?set SESSION (the results folder name, e.g. s9) before sourcing tools/gpu/session_env.sh}"
R=${RESULTS_DIR:-$PWD/results/$SESSION}
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT" "$R/tune"
CALL_LIMIT=${CALL_LIMIT:-540}
source tools/gpu/wheels.sh
source tools/gpu/flashinfer_setup.sh /tmp/site >/dev/null
HEADLINE=sweeps/nemotron3-super-tp8.yaml
GDN=sweeps/qwen35-gdn.yaml
TRITON=(--impl triton.intermediate --impl triton.checkpoint)
source tools/gpu/lib.sh
phase_header
