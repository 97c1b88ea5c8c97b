#!/usr/bin/env bash
# Issue 20 on one H200: triton.gdn beside flash-linear-attention's fused_recurrent_gated_delta_rule
# (fla.gdn, docs/gdn.md) on the qwen35-gdn-peers document of sweeps/qwen35-gdn.yaml (Qwen3.5
# H16 HV64 K128 V128, T = 1, 2, 4, 6, batch 1..512, fp32 state, final write; direct and split
# pools): 24 cases x 2 impls, every pair verified against the fp64 reference, then timed (CUPTI).
#
# Carry .whl/ with fla-core (pure Python; its one requirement, einops, is in the GPU image):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl fla-core==0.6.0
# Run (resumable across device calls, as tools/gpu/lib.sh's steps: results in $RESULTS_DIR, default
# results/gdn-peers/, packed into $OUT after every step; carry results/gdn-peers to a fresh machine):
#   bash tools/gpu/gdn_peers_h200.sh
# Steps, each skipped once done (about 4 min warm on an H200: session 6): the real FLA kernel vs
# the reference (pytest-fla.txt), the sweep (gdn-peers.{json,md,log}), a short tune of triton.gdn,
# and gdn-peers-table.md (chain span and state-update kernel alone, FLA / ours).
set -u
R=${RESULTS_DIR:-results/gdn-peers}
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT" "$R"
CALL_LIMIT=${CALL_LIMIT:-540}  # the device stops a command at 600 s; leave room to pack
source tools/gpu/wheels.sh
source tools/gpu/lib.sh
log "== $(date -u +%FT%TZ) $(hostname) $(git rev-parse --short HEAD 2>/dev/null)"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$R/summary.txt"
python3 -c "import fla, triton, torch; print('fla-core', fla.__version__, 'triton', triton.__version__, 'torch', torch.__version__)" \
  2>&1 | grep -v Warning | tee -a "$R/summary.txt"
python3 -m ssmbench list 2>&1 | grep -E "^│ (fla|triton)\.gdn |^  fla\.gdn:" | tee -a "$R/summary.txt"

# The real FLA kernel on the GPU against the reference (tiny shapes; the fake-FLA tests are CPU CI's).
STEP_TIMEOUT=240 once pytest-fla python3 -m pytest -q -p no:cacheprovider tests/test_fla_mapping.py -k real_fla

# The sweep (about 6-8 min cold: compiles, the fp64 gate of every pair, then timing); stopped at
# the call's limit with its log kept: run the script again to finish it.
sweep gdn-peers sweeps/qwen35-gdn.yaml --filter sweep=qwen35-gdn-peers --impl triton.gdn --impl fla.gdn
rc=$?

# The streamed-token form (GDNKnobs.stream_tokens, docs/gdn.md) against the block form: a short
# tune of triton.gdn at two batches (its space moves stream_tokens with num_warps); the table says
# which won where.
STEP_TIMEOUT=300 once tune-gdn python3 -m ssmbench tune sweeps/qwen35-gdn.yaml --impl triton.gdn --batch 64,512 \
  --case '*-T4-*' --budget 4m -o "$R/tune-gdn.json"

# Side-by-side table: chain span and state-update kernel, FLA / ours (ratio > 1: ours faster).
[ -f "$R/gdn-peers.json" ] || [ -f "$R/gdn-peers.jsonl" ] || { pack; exit $rc; }
python3 - "$R/gdn-peers.json" > "$R/gdn-peers-table.md" <<'EOF' || true
import sys
from pathlib import Path
from ssmbench.output.results import load_results

path = Path(sys.argv[1])
if not path.exists():
    path = path.with_suffix(".jsonl")
rows = {}
for r in load_results(path).records.values():
    if r.status != "ok":
        continue
    key = (r.params["pool"], r.params["T"], r.params["batch"])
    kern = next((us for name, us in r.kernels_us.items()
                 if "gdn_decode_kernel" in name or "fused_recurrent_gated_delta_rule" in name), None)
    rows.setdefault(key, {})[r.impl] = (r.median_us, kern, r.sol_pct)
print("| pool | T | batch | chain us, FLA / ours | ratio | kernel us, FLA / ours | ratio | SOL ours |")
print("|---|---:|---:|---|---:|---|---:|---:|")
for (pool, T, b), cell in sorted(rows.items()):
    fla, ours = cell.get("fla.gdn"), cell.get("triton.gdn")
    if not (fla and ours):
        continue
    kr = f"{fla[1] / ours[1]:.2f}" if fla[1] and ours[1] else "-"
    k = f"{fla[1]:.1f} / {ours[1]:.1f}" if fla[1] and ours[1] else "-"
    sol = f"{ours[2]:.0f}%" if ours[2] is not None else "-"
    print(f"| {pool} | {T} | {b} | {fla[0]:.1f} / {ours[0]:.1f} | {fla[0] / ours[0]:.2f} | {k} | {kr} | {sol} |")
EOF
cat "$R/gdn-peers-table.md"
pack
exit $rc
