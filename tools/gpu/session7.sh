#!/usr/bin/env bash
# One H200 x2 session for the open issues 18-20 (2026-11-29, session 7), in phases: one device
# call per phase, each ends before the 10-minute limit, every step is skipped once done and a
# tune resumes from its journal (tools/gpu/lib.sh), so a phase cut short is finished by the next
# call. Two lanes at once, one per GPU; results in $RESULTS_DIR (default results/s7/), packed
# into $OUT after every step. On a fresh machine carry results/s7 back (and .whl .peer).
#
#   PHASE=1 bash tools/gpu/session7.sh    (carry .whl .peer [results/s7])
#
# Phase 1  GPU 0: the conv1d forms side by side (19); `ssmbench tune` of triton.checkpoint, W=16,
#                 fp32/bf16/fp16 SR at b8/64/1024, for the rest of the call (18, 19).
#          GPU 1: the GDN peers sweep with the streamed T > 1 default beside fla.gdn (20); a tune
#                 of triton.intermediate, fp32/bf16/fp16 SR at b8/64/1024 (18).
# Phase 2  the tuned tables installed (tools/gpu/install_tables.py); the headline with all four
#          impls on both GPUs, compared with the stored baseline (17-19); then GPU 0: the GDN
#          sweeps, both impls (20's baseline); GPU 1: the smoke sweep (its H200 baseline).
# Phase 3  tunes of triton.gdn at T = 4/6 on both GPUs, then every GDN sweep with both impls (18, 20).
# Phase 4  the committed tables: triton.checkpoint W=16 beside FlashInfer; GDN T = 2 beside FLA.
set -u
PHASE=${PHASE:?PHASE=1, 2 or 3}
R=${RESULTS_DIR:-$PWD/results/s7}
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT" "$R/tune"
CALL_LIMIT=${CALL_LIMIT:-540}  # the device stops a command at 600 s; leave room to pack
source tools/gpu/wheels.sh
source tools/gpu/flashinfer_setup.sh /tmp/site >/dev/null
export PYTHONPATH="$PYTHONPATH:$PWD/tools/gpu"  # the conv1d forms plugin
HEADLINE=sweeps/nemotron3-super-tp8.yaml
MAMBA_FORMATS=(--filter format=fp32,bf16,fp16sr --batch 8,64,1024)
source tools/gpu/lib.sh
log "== phase $PHASE $(date -u +%FT%TZ) $(hostname) $(git rev-parse --short HEAD 2>/dev/null) $(nproc) CPUs"
nvidia-smi --query-gpu=index,name,uuid,clocks.max.sm,clocks.max.mem --format=csv,noheader | tee -a "$R/summary.txt"

lane0_phase1() {
  SWEEP_TIMEOUT=120 sweep conv1d-forms tools/gpu/conv1d-forms.yaml --plugin conv1d_forms_plugin --gpus 0
  tune 0 triton.checkpoint "$HEADLINE" --filter window=16 "${MAMBA_FORMATS[@]}"
}

lane1_phase1() {
  SWEEP_TIMEOUT=240 sweep gdn-peers sweeps/qwen35-gdn.yaml --filter sweep=qwen35-gdn-peers --impl triton.gdn \
    --impl fla.gdn --gpus 1
  tune 1 triton.intermediate "$HEADLINE" "${MAMBA_FORMATS[@]}"
}

phase2() {
  install_tables
  sweep headline "$HEADLINE" --gpus 0,1
  gate headline-vs-stored "$R/headline.json" baselines/nvidia-h200/nemotron3-super-tp8.json
  sweep gdn sweeps/qwen35-gdn.yaml --impl triton.gdn --impl fla.gdn --gpus 0 &
  sweep smoke sweeps/smoke.yaml --gpus 1
  wait
  gate gdn-vs-stored "$R/gdn.json" baselines/nvidia-h200/qwen35-gdn.json
  gate smoke-vs-stored "$R/smoke.json" baselines/nvidia-h200/smoke.json
}

phase3() {  # GDN tunes on both GPUs (T = 4/6 fp32 on GPU 0; T = 4 bf16 on GPU 1), their
  # tables installed, then every GDN sweep with both impls on both GPUs (20's baseline)
  TUNE_BUDGET=${TUNE_BUDGET:-180} TUNE_NAME=gdn-t46 tune 0 triton.gdn sweeps/qwen35-gdn.yaml --filter T=4,6 \
    --filter format=fp32 --batch 8,64,512 &
  TUNE_BUDGET=${TUNE_BUDGET:-180} TUNE_NAME=gdn-t4-bf16 tune 1 triton.gdn sweeps/qwen35-gdn.yaml --filter T=4 \
    --filter format=bf16 --batch 8,64,512 &
  wait
  install_tables
  sweep gdn-all sweeps/qwen35-gdn.yaml --impl triton.gdn --impl fla.gdn --gpus 0,1
  gate gdn-all-vs-stored "$R/gdn-all.json" baselines/nvidia-h200/qwen35-gdn.json
}

phase4() {  # the tables as committed (checkpoint W=16 from the replayed tune), side by side with
  # FlashInfer on GPU 0; the new GDN T > 1 default at T = 2 (no table entry) on GPU 1
  sweep ckpt-tuned "$HEADLINE" --impl triton.checkpoint --impl flashinfer.checkpointing --filter window=16 \
    --filter format=fp32,bf16,fp16sr --filter batch=8,64,256,1024 --gpus 0 &
  sweep gdn-t2 sweeps/qwen35-gdn.yaml --filter sweep=qwen35-gdn-peers --filter T=2 --impl triton.gdn --impl fla.gdn \
    --gpus 1
  wait
  gate ckpt-tuned-vs-headline "$R/ckpt-tuned.json" "$R/headline.json"
  gate gdn-t2-vs-gdn-all "$R/gdn-t2.json" "$R/gdn-all.json"
}

case $PHASE in
  1) lane0_phase1 & lane1_phase1; wait ;;
  2) lane0_phase1 & lane1_phase1; wait  # whatever phase 1 left
     phase2 ;;
  3) phase3 ;;
  4) phase4 ;;
esac
log "phase $PHASE ended at $SECONDS s"
pack
cat "$R/summary.txt"
