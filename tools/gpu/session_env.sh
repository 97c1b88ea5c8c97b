#!/usr/bin/env bash
# Sourced by the session scripts (tools/gpu/session8.sh on) after `set -u` and SESSION=sN: the
# results folder R ($RESULTS_DIR, default results/$SESSION), OUT, CALL_LIMIT (the device stops a
# command at 600 s; leave room to pack), the carried wheels and FlashInfer, the shipped specs,
# tools/gpu/lib.sh, and the phase's header line in the summary; FORMS_PATH (the plugin variants' import path)
# and ckpt_case BATCH FORMAT (a W = 16 headline checkpoint case id).
: "${SESSION:?set SESSION (the results folder name, e.g. s9) before sourcing tools/gpu/session_env.sh}"
R=${RESULTS_DIR:-$PWD/results/$SESSION}
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT" "$R/tune"
CALL_LIMIT=${CALL_LIMIT:-540}
source tools/gpu/wheels.sh
source tools/gpu/flashinfer_setup.sh /tmp/site >/dev/null
source tools/gpu/cutedsl_setup.sh /tmp/site  # FlashInfer GDN's CuTe DSL, once its two carried parts are here
HEADLINE=sweeps/nemotron3-super-tp8.yaml
GDN=sweeps/qwen35-gdn.yaml
TRITON=(--impl triton.intermediate --impl triton.checkpoint)
FORMS_PATH="$PYTHONPATH:$PWD/tools/gpu"
ckpt_case() { echo "H16P64N128G1-b$1-T6-$2-pool-w16-hist-pdl-realistic"; }
source tools/gpu/lib.sh
phase_header
