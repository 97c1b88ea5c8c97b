#!/usr/bin/env bash
# Shared by the GPU session scripts (source it after setting R, the results folder):
#   log TEXT...              print and append to $R/summary.txt
#   complete FILE            whether a results JSON says complete: true
#   sweep NAME SPEC ARGS...  one `ssmbench sweep` into $R/NAME.json: skipped when complete,
#                            --resume when its log is there, stopped (SIGINT: results kept) at
#                            $SWEEP_TIMEOUT seconds or, with CALL_LIMIT set, when this device call's
#                            time (CALL_LIMIT - $SECONDS) is up; its wall time and last line logged
#   once NAME CMD...         a step run once (a marker says it ran, also when it timed out: a step
#                            that hung is not retried by the next call), stopped at $STEP_TIMEOUT
#                            (default 300) or the call's end, output in $R/NAME.txt
#   pack                     $R (without the sweeps' JSON-lines logs at its top level; a tune's
#                            journal in a subfolder travels) into $OUT/<folder>.tar.gz and the
#                            summary into $OUT: called after every step, so a call killed at the
#                            device's limit still brings back everything finished before
#   left                     seconds left in this call (CALL_LIMIT - SECONDS; 9999 without CALL_LIMIT)
#   tune GPU IMPL SPEC ARGS  `ssmbench tune` on one GPU until the call's end (TUNE_BUDGET caps it), its
#                            table and journal in $R/tune/${TUNE_NAME:-IMPL}.knobs.json[l], resumed from the
#                            journal; a finished tune is not run again
#   gate NAME NEW OLD ARGS   `ssmbench compare NEW OLD`, its verdict line into the summary
#   kernel_checks NAME CASE IMPL ARGS
#                            compute-sanitizer ($R/sanitizer-NAME; SANITIZER_TIMEOUT, default 90 s) and 5-launch
#                            determinism (40 s) of one case of $HEADLINE, each a `once` step
#   install_tables           the tables in $R/tune into the families' tuned/ folders (this machine's copy)
#   phase_header             the phase, date, host, commit ($SSMBENCH_COMMIT) and GPUs into the summary
#   phase_end                the phase's time into the summary, pack, print the summary
#   run_phase                the script's function phase$PHASE (exit 2 naming the phases when there is none), then phase_end
# Every step is stopped with SIGINT (a sweep keeps its results) and killed 15 s later if it hangs.
: "${R:?set R (the results folder) before sourcing tools/gpu/lib.sh}"
mkdir -p "$R"
: >> "$R/summary.txt"

log() { echo "$*" | tee -a "$R/summary.txt"; }

left() { if [ -n "${CALL_LIMIT:-}" ]; then echo $((CALL_LIMIT - SECONDS)); else echo 9999; fi; }

complete() {
  [ -f "$1" ] && python3 -c "import json,sys; sys.exit(0 if json.load(open('$1'))['env'].get('complete') else 1)"
}

sweep() {
  local name=$1 spec=$2; shift 2
  local t0=$SECONDS resume=() limit
  if complete "$R/$name.json"; then log "sweep $name: already complete"; return 0; fi
  limit=$(left); [ "$limit" -gt "${SWEEP_TIMEOUT:-560}" ] && limit=${SWEEP_TIMEOUT:-560}
  if [ "$limit" -lt 40 ]; then log "sweep $name: no time left in this call"; return 1; fi
  [ -f "$R/$name.jsonl" ] && resume=(--resume)
  timeout -k 15 -s INT "$limit" python3 -m ssmbench sweep "$spec" "$@" -o "$R/$name.json" "${resume[@]}" \
    --markdown "$R/$name.md" > "$R/$name.log" 2>&1
  local rc=$?
  log "sweep $name rc=$rc wall $((SECONDS - t0))s ${resume[*]} :: $(grep -h 'compiled:' "$R/$name.log" | tail -n 1)" \
      ":: $(tail -n 1 "$R/$name.log")"
  pack
  return $rc
}

once() {
  local name=$1; shift
  [ -f "$R/$name.done" ] && return 0
  local t0=$SECONDS limit
  limit=$(left); [ "$limit" -gt "${STEP_TIMEOUT:-300}" ] && limit=${STEP_TIMEOUT:-300}
  if [ "$limit" -lt 30 ]; then log "$name: no time left in this call"; return 1; fi
  timeout -k 15 -s INT "$limit" "$@" > "$R/$name.txt" 2>&1
  local rc=$?
  touch "$R/$name.done"
  log "$name rc=$rc $((SECONDS - t0))s$([ $rc -eq 124 ] && echo " (stopped at its ${limit} s limit)") :: $(tail -n 1 "$R/$name.txt")"
  pack
  return $rc
}

pack() {
  [ -n "${OUT:-}" ] || return 0
  tar -czf "$OUT/$(basename "$R").tar.gz" --no-wildcards-match-slash --exclude="$(basename "$R")/*.jsonl" \
    -C "$(dirname "$R")" "$(basename "$R")" 2>/dev/null
  cp "$R/summary.txt" "$OUT/summary.txt"
}

tune() {  # tune GPU IMPL SPEC ARGS...: `ssmbench tune` on one GPU until this call's end, resumed from its journal
  local gpu=$1 impl=$2 spec=$3; shift 3
  local name=${TUNE_NAME:-$impl} resume=() t0=$SECONDS budget
  local table="$R/tune/$name.knobs.json"
  budget=$(( $(left) - 120 ))  # a duel under way may run past the budget: leave it room
  [ -n "${TUNE_BUDGET:-}" ] && [ "$TUNE_BUDGET" -lt "$budget" ] && budget=$TUNE_BUDGET
  if [ -f "$R/tune/$name.done" ]; then log "tune $name: already done"; return 0; fi
  if [ "$budget" -lt 60 ]; then log "tune $name: no time left in this call"; return 1; fi
  [ -f "$R/tune/$name.knobs.jsonl" ] && resume=(--resume)
  CUDA_VISIBLE_DEVICES=$gpu timeout -k 15 -s INT $((budget + 100)) python3 -m ssmbench tune "$spec" --impl "$impl" \
    --budget "${budget}s" -o "$table" "${resume[@]}" "$@" > "$R/tune-$name.log" 2>&1
  local rc=$?
  [ $rc -eq 0 ] && touch "$R/tune/$name.done"
  log "tune $name rc=$rc wall $((SECONDS - t0))s budget ${budget}s ${resume[*]} :: $(tail -n 1 "$R/tune-$name.log")"
  pack
  return $rc
}

gate() {  # gate NAME NEW OLD [ARGS]: `ssmbench compare`, its verdict line into the summary
  [ -f "$2" ] && [ -f "$3" ] || return 0
  python3 -m ssmbench compare "$2" "$3" "${@:4}" --markdown "$R/compare-$1.md" > "$R/compare-$1.log" 2>&1
  log "compare $1 rc=$? :: $(grep -E '^diagnosis|by GPU' "$R/compare-$1.log" | tr '\n' ' ') :: $(tail -n 1 "$R/compare-$1.log")"
}

kernel_checks() {  # kernel_checks NAME CASE IMPL [ARGS]: the sanitizer and 5-launch determinism on one chain
  local name=$1 cid=$2 impl=$3; shift 3
  STEP_TIMEOUT=${SANITIZER_TIMEOUT:-90} once "sanitizer-$name" python3 -m ssmbench profile "$HEADLINE" --case "$cid" \
    --impl "$impl" "$@" --tool sanitizer -o "$R/sanitizer-$name"
  STEP_TIMEOUT=40 once "determinism-$name" python3 -m ssmbench profile "$HEADLINE" --case "$cid" --impl "$impl" "$@" \
    --determinism 5
}

install_tables() {  # the tables the tunes wrote, into the families' tuned/ folders (this machine's copy)
  local t
  for t in "$R"/tune/*.knobs.json; do
    [ -f "$t" ] && log "install $(python3 tools/gpu/install_tables.py "$t")"
  done
}

# The device's copy of the checkout has a stale .git: results name the commit given (docs/results-format.md).
[ -n "${SSMBENCH_COMMIT:-}" ] && export SSMBENCH_GIT_SHA=$SSMBENCH_COMMIT

phase_header() {  # what ran where: the device's checkout reports a stale git sha, so the commit comes from SSMBENCH_COMMIT
  log "== phase ${PHASE:-?} $(date -u +%FT%TZ) $(hostname) ${SSMBENCH_COMMIT:-?} $(nproc) CPUs"
  nvidia-smi --query-gpu=index,name,uuid,clocks.max.sm,clocks.max.mem --format=csv,noheader | tee -a "$R/summary.txt"
}

phase_end() {
  log "phase ${PHASE:-?} ended at $SECONDS s"
  pack
  cat "$R/summary.txt"
}

run_phase() {  # run_phase: the calling script's phase$PHASE, then phase_end
  if ! declare -F "phase$PHASE" > /dev/null; then
    echo "PHASE=$PHASE: no such phase; phases: $(declare -F | awk '$3 ~ /^phase[0-9]/ {sub("phase", "", $3); printf "%s ", $3}')" >&2
    exit 2
  fi
  "phase$PHASE"
  phase_end
}
