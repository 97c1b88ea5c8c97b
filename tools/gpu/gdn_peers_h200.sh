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
# Steps, each skipped once done; expect two calls (~9 + ~6 min, a third if cold): the real FLA kernel vs the
# reference (pytest-fla.txt), the WY candidate's tests on the GPU (pytest-v2.txt) and its
# kernel-alone times beside gdn_decode_kernel (v2-bench.txt), then the sweep (gdn-peers.{json,md,
# log}) and gdn-peers-table.md (chain span and state-update kernel alone, FLA / ours).
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

# The WY-form candidate (kernels/ssmbench_kernels/gdn/kernel_v2.py, not an impl yet): its CPU
# tests on the GPU (compiles every variant: ~1-2 min), then kernel-alone times beside
# gdn_decode_kernel at the Qwen3.5 shape (do_bench, L2 flushed; results checked against each other).
STEP_TIMEOUT=240 once pytest-v2 python3 -m pytest -q -p no:cacheprovider tests/test_gdn_kernel_v2.py
cat > "$R/v2_bench.py" <<'EOF2'
import torch
from triton.testing import do_bench
from ssmbench_kernels.gdn.kernel import gdn_decode
from ssmbench_kernels.gdn.kernel_v2 import GDNWYKnobs, gdn_decode_wy

H, HV, K, V, dev = 16, 64, 128, 128, "cuda"
DT = {"fp32": torch.float32, "bf16": torch.bfloat16}


def setup(batch, T, fmt, inter):
    g = torch.Generator(device=dev).manual_seed(batch * 10 + T)
    rows = batch * T
    args = (torch.randn(rows, 2 * H * K + HV * V, device=dev, generator=g).to(torch.bfloat16),
            (0.3 * torch.randn(rows, HV, device=dev, generator=g)).to(torch.bfloat16),
            torch.randn(rows, HV, device=dev, generator=g).to(torch.bfloat16),
            torch.rand(HV, device=dev, generator=g) * 2.7, torch.randn(HV, device=dev, generator=g) * 0.5 - 3.0)
    pool = (0.5 * torch.randn(2 * batch, HV, V, K, device=dev, generator=g)).to(DT[fmt])
    read = torch.randperm(2 * batch, device=dev, generator=g)[:batch]
    buf = torch.empty(batch, T, HV, V, K, dtype=DT[fmt], device=dev) if inter else None
    return args, pool, read, buf


def step(fn, args, pool, read, buf, T, knobs=None):
    return fn(pool, read, None, *args, num_k_heads=H, num_v_heads=HV, head_k_dim=K, head_v_dim=V, T=T,
              intermediate=buf, write_final=buf is None, validate=False, knobs=knobs)


def rel(x, y):
    return ((x.float() - y.float()).abs().max() / y.float().abs().max()).item()


print("| state | stores | T | batch | gdn_decode_kernel us | WY us | old / WY | WY state TB/s | o diff | state diff |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
cfgs = [("fp32", False, T, b) for T in (1, 2, 4, 6) for b in (8, 64, 512)]
cfgs += [("bf16", True, 4, 64), ("bf16", True, 4, 512), ("bf16", False, 4, 512)]
for fmt, inter, T, batch in cfgs:
    try:
        args, pool, read, buf = setup(batch, T, fmt, inter)
        p1, p2 = pool.clone(), pool.clone()
        b1, b2 = (None, None) if buf is None else (buf.clone(), buf.clone())
        o1 = step(gdn_decode, args, p1, read, b1, T)
        o2 = step(gdn_decode_wy, args, p2, read, b2, T)
        s1, s2 = (p1[read], p2[read]) if buf is None else (b1, b2)
        t1 = do_bench(lambda: step(gdn_decode, args, p1, read, b1, T), warmup=10, rep=60)
        t2 = do_bench(lambda: step(gdn_decode_wy, args, p2, read, b2, T), warmup=10, rep=60)
        moved = batch * HV * V * K * pool.element_size() * (1 + (T if inter else 1))
        print(f"| {fmt} | {'inter' if inter else 'final'} | {T} | {batch} | {t1 * 1e3:.1f} | {t2 * 1e3:.1f} | "
              f"{t1 / t2:.2f} | {moved / (t2 * 1e-3) / 1e12:.2f} | {rel(o2, o1):.1e} | {rel(s2, s1):.1e} |",
              flush=True)
    except Exception as exc:  # a compile or launch failure is reported, the rest goes on
        print(f"| {fmt} | {'inter' if inter else 'final'} | {T} | {batch} | error: {type(exc).__name__}: "
              f"{str(exc).splitlines()[0][:160]} |", flush=True)
print("\nWY knobs at fp32, final, T=4, batch 512 (us):")
args, pool, read, _ = setup(512, 4, "fp32", False)
for bv in (16, 32, 64):
    for w in (2, 4, 8):
        try:
            kn = GDNWYKnobs(block_v=bv, num_warps=w)
            t = do_bench(lambda: step(gdn_decode_wy, args, pool, read, None, 4, kn), warmup=5, rep=40)
            print(f"  block_v {bv} warps {w}: {t * 1e3:.1f}", flush=True)
        except Exception as exc:  # noqa: BLE001
            print(f"  block_v {bv} warps {w}: error {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
EOF2
STEP_TIMEOUT=240 once v2-bench python3 "$R/v2_bench.py"
cat "$R/v2-bench.txt" 2>/dev/null

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
