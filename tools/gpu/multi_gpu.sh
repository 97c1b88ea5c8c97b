#!/usr/bin/env bash
# Issue 23 (and issue 16's GPU check) on a machine with two or more GPUs, in one resumable script:
# a device call cut off by its 10-minute limit continues on the next call to the same warm machine
# (results live in $RESULTS_DIR, default results/multi/, git-ignored; finished sweeps are skipped, cut
# ones --resume).
#
#   bash tools/gpu/multi_gpu.sh
#
# 1. prewarm: every headline and smoke kernel compiled in parallel (one `check` per batch), so the
#    wall times below compare warm runs;
# 2. smoke sweep on the last GPU (issue 16: same verdicts as baselines/nvidia-h200/smoke.json),
#    alongside the one-GPU headline sweep on GPU 0 (`--gpus 0`);
# 3. the headline sweep over every GPU (`--gpus 0,1,...`);
# 4. the headline sweep as n shards, one separate invocation per GPU at once, merged with
#    `ssmbench merge`;
# 5. compare: all-GPU vs one-GPU, merged shards vs one-GPU, one-GPU vs the stored H200 baseline.
set -u
R=${RESULTS_DIR:-results/multi}  # an absolute path outside the checkout survives a re-sent working tree
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT" "$R"
source tools/gpu/wheels.sh
HEADLINE=sweeps/nemotron3-super-tp8.yaml
SMOKE_IMPLS=(--impl triton.conv1d --impl triton.intermediate --impl triton.checkpoint --impl triton.gdn)
NGPU=$(nvidia-smi -L | wc -l)
LAST=$((NGPU - 1))
ALL=$(seq -s, 0 "$LAST")
source tools/gpu/lib.sh
log "== $(date -u +%FT%TZ) $(hostname) $NGPU GPU(s), $(nproc) CPUs"
nvidia-smi --query-gpu=index,name,uuid,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader | tee -a "$R/summary.txt"

if [ ! -f "$R/prewarm.done" ]; then
  t0=$SECONDS
  for b in 1 2 4 8 16 32 64 128 256 512 1024; do
    python3 -m ssmbench check "$HEADLINE" --device cuda --impl triton.intermediate --impl triton.checkpoint \
      --case "*-b$b-*" > "$R/prewarm-b$b.txt" 2>&1 &
  done
  python3 -m ssmbench check sweeps/smoke.yaml --device cuda "${SMOKE_IMPLS[@]}" > "$R/prewarm-smoke.txt" 2>&1 &
  wait
  log "prewarm $((SECONDS - t0))s: $(grep -h ' passed, ' "$R"/prewarm-*.txt | tr '\n' ';')"
  touch "$R/prewarm.done"
fi

sweep smoke sweeps/smoke.yaml "${SMOKE_IMPLS[@]}" --gpus "$LAST" &
sweep one "$HEADLINE" --gpus 0
wait
sweep all "$HEADLINE" --gpus "$ALL"
for i in $(seq 0 "$LAST"); do
  sweep "shard$i" "$HEADLINE" --shard "$i/$NGPU" --gpus "$i" &
done
wait
shards=$(for i in $(seq 0 "$LAST"); do echo "$R/shard$i.json"; done)
python3 -m ssmbench merge $shards -o "$R/merged.json" > "$R/merge.log" 2>&1
log "merge rc=$? :: $(tail -n 1 "$R/merge.log")"

gate() {  # gate NAME NEW OLD
  python3 -m ssmbench compare "$2" "$3" --fail-on-missing --markdown "$R/compare-$1.md" > "$R/compare-$1.log" 2>&1
  log "compare $1 rc=$? :: $(grep -E 'diagnosis' "$R/compare-$1.log" | head -1) :: $(tail -n 1 "$R/compare-$1.log")"
}
gate smoke-vs-baseline "$R/smoke.json" baselines/nvidia-h200/smoke.json
gate all-vs-one "$R/all.json" "$R/one.json"
gate merged-vs-one "$R/merged.json" "$R/one.json"
gate one-vs-baseline "$R/one.json" baselines/nvidia-h200/nemotron3-super-tp8.json
for f in one all merged; do
  [ -f "$R/$f.json" ] && log "$f: $(python3 -c "
import json; d = json.load(open('$R/$f.json')); e = d['env']
gpus = ', '.join(f\"{x.get('index')} {x.get('uuid', '')[:12]} copy {x['bandwidth']['measured_tbps']:.3f} TB/s max SM {x.get('max_sm_mhz')} MHz\" for x in e['gpus'])
from collections import Counter; per = Counter(c.get('gpu') for c in d['cases'] if c['status'] == 'ok')
print(f\"{e.get('started')} -> {e.get('finished')}; gpus: {gpus}; ok pairs per gpu: {dict(per)}\")")"
done
pack
cat "$R/summary.txt"
